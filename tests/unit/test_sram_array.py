# amaranth: UnusedElaboratable=no
# (the constructor tests make components that fail before they can be elaborated)
"""SRAM array (banks + round-robin arbiters + per-client response FIFOs) in Amaranth's simulator:
several clients hammering the same bank with random gaps and response backpressure, checked
against a memory model fed with what the array accepted each cycle (no lost, duplicated or
corrupted word, per-client order); fairness; full rate for an uncontended client; out-of-range
addresses never hang."""

import random

import pytest
from amaranth.sim import Simulator

from tilemesh.config import MeshConfig, TileConfig
from tilemesh.tile.sram_array import SramArray

# 3 banks (not a power of two: bank index 3 exists in the address bits but not in the array)
SMALL = MeshConfig(rows=1, cols=1, tile=TileConfig(sram_banks=3, sram_depth=16, imem_depth=16))
ONE_BANK = MeshConfig(rows=1, cols=1, tile=TileConfig(sram_banks=1, sram_depth=16, imem_depth=16))


def random_ops(rnd, cfg, n, *, hot_bank=0, oob=0.03):
    """``n`` reads and ``n`` writes (dicts) for one client. Most addresses are a few hot words of
    ``hot_bank`` (shared by every client, so writes and reads of the same word meet), some
    anywhere, a few beyond the last word."""
    depth, words = cfg.tile.sram_depth, cfg.tile.sram_words
    hot = [hot_bank * depth + a for a in (0, 1, 5, depth - 1)]

    def addr():
        r = rnd.random()
        if r < oob:
            return rnd.randrange(words, 1 << 20)
        if r < 0.6:
            return rnd.choice(hot)
        return rnd.randrange(words)

    word_mask = (1 << cfg.word_bits) - 1
    writes = [{"addr": addr(), "data": rnd.getrandbits(cfg.word_bits) & word_mask}
              for _ in range(n)]
    reads = [{"addr": addr()} for _ in range(n)]
    return writes, reads


def run_array(cfg, ops, *, seed=0, idle=0.0, stall=0.0, read_slots=4, max_cycles=None):
    """Drive each client's ``(writes, reads)`` in ``ops`` with random idle cycles and take its
    responses with random stalls. A passive monitor records what the array accepted each cycle
    and runs a memory model on it (transparent banks: a read sees a write to its word accepted
    in the same cycle). Returns (got, want, log) with per-client response lists."""
    n = len(ops)
    names = [f"c{i}" for i in range(n)]
    dut = SramArray(cfg, names, read_slots=read_slots)
    words, depth = cfg.tile.sram_words, cfg.tile.sram_depth
    rnd = random.Random(seed)
    mem = {}
    got = [[] for _ in range(n)]
    want = [[] for _ in range(n)]
    log = {"read_accepts": [[] for _ in range(n)], "write_accepts": [[] for _ in range(n)],
           "collisions": 0, "cycles": 0}
    done = set()
    max_cycles = max_cycles or 40 * max(len(r) + len(w) for w, r in ops) + 200

    def driver(stream, items, key, r):
        async def run(ctx):
            for item in items:
                while r.random() < idle:
                    await ctx.tick()
                ctx.set(stream.valid, 1)
                ctx.set(stream.payload, item)
                await ctx.tick().until(stream.ready)
                ctx.set(stream.valid, 0)
            done.add(key)
        return run

    async def monitor(ctx):
        ports = []
        for c in dut.clients:
            ports += [c.write.valid, c.write.ready, c.write.payload,
                      c.read_req.valid, c.read_req.ready, c.read_req.payload]
        async for _, _, *values in ctx.tick().sample(*ports):
            log["cycles"] += 1
            writes, reads = [], []
            for i in range(n):
                wv, wr, wp, qv, qr, qp = values[6 * i:6 * i + 6]
                if wv and wr:
                    writes.append((i, int(wp.addr), int(wp.data)))
                    log["write_accepts"][i].append(log["cycles"])
                if qv and qr:
                    reads.append((i, int(qp.addr)))
                    log["read_accepts"][i].append(log["cycles"])
            in_range = [w for w in writes if w[1] < words]
            banks = [a // depth for _, a, _ in in_range]
            assert len(banks) == len(set(banks)), f"two writes to one bank: {in_range}"
            read_banks = [a // depth for _, a in reads if a < words]
            assert len(read_banks) == len(set(read_banks)), f"two reads of one bank: {reads}"
            for _, a, d in in_range:
                mem[a] = d
            for i, a in reads:
                log["collisions"] += any(a == wa for _, wa, _ in in_range)
                want[i].append(mem.get(a, 0) if a < words else 0)

    def consumer(i, r):
        async def run(ctx):
            resp = dut.clients[i].read_resp
            held = None
            for cycle in range(max_cycles):
                ready = r.random() >= stall
                ctx.set(resp.ready, ready)
                _, _, valid, payload = await ctx.tick().sample(resp.valid, resp.payload)
                if held is not None:
                    assert valid and int(payload.data) == held, \
                        f"client {i} cycle {cycle}: response changed while stalled"
                held = int(payload.data) if valid and not ready else None
                if valid and ready:
                    got[i].append(int(payload.data))
                if len(done) == 2 * n and len(got[i]) >= len(ops[i][1]):
                    # a few more cycles to catch a duplicated response
                    for _ in range(6):
                        ctx.set(resp.ready, 1)
                        _, _, valid = await ctx.tick().sample(resp.valid)
                        assert not valid, f"client {i}: more responses than reads"
                    return
            raise AssertionError(f"client {i}: {len(got[i])} of {len(ops[i][1])} responses "
                                 f"after {max_cycles} cycles")
        return run

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for i, (writes, reads) in enumerate(ops):
        c = dut.clients[i]
        sim.add_testbench(driver(c.write, writes, ("w", i), random.Random(rnd.random())))
        sim.add_testbench(driver(c.read_req, reads, ("r", i), random.Random(rnd.random())))
        sim.add_testbench(consumer(i, random.Random(rnd.random())))
    sim.add_process(monitor)
    sim.run()
    return got, want, log


@pytest.mark.parametrize("seed", [1, 2])
def test_clients_hammering_one_bank(seed):
    """Four clients, mostly on bank 0, random gaps and stalls: every response is the model's."""
    print(f"seed {seed}")
    rnd = random.Random(seed)
    ops = [random_ops(rnd, SMALL, 150) for _ in range(4)]
    got, want, log = run_array(SMALL, ops, seed=seed, idle=0.3, stall=0.4)
    for i in range(4):
        assert len(want[i]) == len(ops[i][1])
        assert got[i] == want[i], f"client {i}, seed {seed}"
    assert log["collisions"] > 0  # a read met a same-cycle write of its word


def test_without_gaps_or_stalls():
    """Back-to-back requests from three clients, responses always taken."""
    rnd = random.Random(7)
    ops = [random_ops(rnd, SMALL, 120, hot_bank=1) for _ in range(3)]
    got, want, _ = run_array(SMALL, ops, seed=7)
    assert got == want


def test_heavy_backpressure_one_bank():
    """A single bank, responses rarely taken: response FIFOs fill up, nothing is lost or
    reordered."""
    rnd = random.Random(3)
    ops = [random_ops(rnd, ONE_BANK, 80, oob=0.1) for _ in range(3)]
    got, want, _ = run_array(ONE_BANK, ops, seed=3, idle=0.1, stall=0.85, read_slots=1)
    assert got == want


def test_opposite_bank_orders_do_not_block():
    """Client 0 reads bank 0 then 1, client 1 reads bank 1 then 0, over and over, with stalls:
    a shared in-order response path would deadlock here."""
    depth = SMALL.tile.sram_depth
    a = [{"addr": (k % 2) * depth + k % depth} for k in range(100)]
    b = [{"addr": ((k + 1) % 2) * depth + k % depth} for k in range(100)]
    writes = [{"addr": k, "data": 1000 + k} for k in range(2 * depth)]
    ops = [(writes, a), ([], b)]
    got, want, _ = run_array(SMALL, ops, seed=5, stall=0.5)
    assert got == want


def _always(cfg, n_clients, cycles, *, kind):
    """Every client requests bank 0 every cycle (reads or writes), responses always taken.
    Returns the accept cycles of each client."""
    names = [f"c{i}" for i in range(n_clients)]
    dut = SramArray(cfg, names)
    accepts = [[] for _ in range(n_clients)]

    async def bench(ctx):
        for i, c in enumerate(dut.clients):
            stream = c.read_req if kind == "read" else c.write
            ctx.set(stream.valid, 1)
            ctx.set(stream.payload, {"addr": i, **({"data": i} if kind == "write" else {})})
            ctx.set(c.read_resp.ready, 1)
        for cycle in range(cycles):
            await ctx.delay(1e-9)  # let the grants settle
            for i, c in enumerate(dut.clients):
                stream = c.read_req if kind == "read" else c.write
                if ctx.get(stream.ready):
                    accepts[i].append(cycle)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return accepts


@pytest.mark.parametrize("kind", ["read", "write"])
def test_round_robin_fairness(kind):
    """Three clients always requesting one bank: the bank serves one per cycle, in turn."""
    accepts = _always(SMALL, 3, 90, kind=kind)
    per_cycle = sorted(c for a in accepts for c in a)
    assert len(per_cycle) == len(set(per_cycle)), "two grants in one cycle"
    assert per_cycle == list(range(90)), "the bank idled while clients were waiting"
    counts = [len(a) for a in accepts]
    assert max(counts) - min(counts) <= 1, counts
    # strict rotation: between two grants of one client, each other client is granted once
    order = [i for c in per_cycle for i in range(3) if c in accepts[i]]
    for k in range(len(order) - 3):
        assert sorted(order[k:k + 3]) == [0, 1, 2], order[k:k + 6]


def test_uncontended_full_rate():
    """One client streams 64 reads from one bank while another hammers a different bank: one
    request accepted and one word returned per cycle, two cycles of latency."""
    cfg = SMALL
    depth = cfg.tile.sram_depth
    dut = SramArray(cfg, ["stream", "other"])
    n = 64
    got, accepted = [], []

    async def bench(ctx):
        s, o = dut.clients
        ctx.set(o.read_req.valid, 1)
        ctx.set(o.read_req.payload.addr, 2 * depth + 3)  # bank 2
        ctx.set(o.write.valid, 1)
        ctx.set(o.write.payload, {"addr": 2 * depth + 4, "data": 9})
        ctx.set(o.read_resp.ready, 1)
        ctx.set(s.read_resp.ready, 1)
        ctx.set(s.read_req.valid, 1)
        k = 0
        for cycle in range(n + 10):
            ctx.set(s.read_req.valid, k < n)
            ctx.set(s.read_req.payload.addr, depth + k % depth)  # bank 1
            await ctx.delay(1e-9)
            if ctx.get(s.read_req.valid) and ctx.get(s.read_req.ready):
                accepted.append(cycle)
                k += 1
            if ctx.get(s.read_resp.valid):
                got.append((cycle, ctx.get(s.read_resp.payload.data)))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert accepted == list(range(n))
    assert [c for c, _ in got] == list(range(2, n + 2))
    assert all(d == 0 for _, d in got)


def test_write_then_read_same_cycle_other_client():
    """A write of client 0 and a read of client 1 to the same word accepted in one cycle: the
    read returns the new word (transparent banks), deterministic whoever wins arbitration."""
    dut = SramArray(ONE_BANK, ["w", "r"])
    seen = []

    async def bench(ctx):
        w, r = dut.clients
        ctx.set(r.read_resp.ready, 1)
        ctx.set(w.write.valid, 1)
        ctx.set(w.write.payload, {"addr": 7, "data": 0xCAFE})
        ctx.set(r.read_req.valid, 1)
        ctx.set(r.read_req.payload.addr, 7)
        await ctx.delay(1e-9)
        assert ctx.get(w.write.ready) and ctx.get(r.read_req.ready)
        await ctx.tick()
        ctx.set(w.write.valid, 0)
        ctx.set(r.read_req.valid, 0)
        for _ in range(3):
            await ctx.delay(1e-9)
            if ctx.get(r.read_resp.valid):
                seen.append(ctx.get(r.read_resp.payload.data))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [0xCAFE]


def test_readers_writers_subsets():
    """A write-only client and a read-only client: only the streams they use are built."""
    dut = SramArray(ONE_BANK, ["rx", "tx"], readers=["tx"], writers=["rx"])
    rnd = random.Random(11)
    writes = [{"addr": rnd.randrange(16), "data": rnd.getrandbits(32)} for _ in range(40)]
    reads = [{"addr": rnd.randrange(16)} for _ in range(40)]
    mem = {}
    for w in writes:
        mem[w["addr"]] = w["data"]
    seen = []

    async def bench(ctx):
        rx, tx = dut.clients
        for w in writes:
            ctx.set(rx.write.valid, 1)
            ctx.set(rx.write.payload, w)
            await ctx.tick().until(rx.write.ready)
        ctx.set(rx.write.valid, 0)
        ctx.set(rx.read_req.valid, 1)
        ctx.set(tx.write.valid, 1)
        for q in reads:
            ctx.set(tx.read_req.valid, 1)
            ctx.set(tx.read_req.payload, q)
            await ctx.tick().until(tx.read_req.ready)
            assert not ctx.get(rx.read_req.ready) and not ctx.get(tx.write.ready)
        ctx.set(tx.read_req.valid, 0)

    async def consumer(ctx):
        tx = dut.clients[1]
        ctx.set(tx.read_resp.ready, 1)
        for _ in range(150):
            _, _, valid, payload = await ctx.tick().sample(tx.read_resp.valid,
                                                           tx.read_resp.payload)
            if valid:
                seen.append(int(payload.data))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.add_testbench(consumer)
    sim.run()
    assert seen == [mem.get(q["addr"], 0) for q in reads]


@pytest.mark.parametrize("kwargs, match", [
    ({"client_names": []}, r"SRAM client names must be a non-empty sequence of distinct strings"),
    ({"client_names": ["a", "a"]}, r"distinct strings, not \['a', 'a'\]"),
    ({"client_names": ["a"], "read_slots": 0}, r"read_slots must be an integer in 1..64, "
                                               r"not 0"),
    ({"client_names": ["a"], "read_slots": True}, r"not True"),
    ({"client_names": ["a"], "readers": ["b"]}, r"SRAM readers must name clients from \['a'\], "
                                                r"not \['b'\]"),
    ({"client_names": ["a"], "writers": ["z"]}, r"SRAM writers must name clients"),
])
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SramArray(SMALL, **kwargs)
