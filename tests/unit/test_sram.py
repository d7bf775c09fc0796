# amaranth: UnusedElaboratable=no
# (the constructor tests make components that fail before they can be elaborated)
"""SRAM bank in Amaranth's simulator against the cycle model: random reads and writes with random
gaps and response backpressure, the same-address rules, throughput, and the stream rules."""

import random

import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from tilemesh.layouts import (
    sram_addr_bits,
    sram_read_req_layout,
    sram_read_resp_layout,
    sram_write_layout,
)
from tilemesh.model.reference import SramModel
from tilemesh.tile.sram import SramBank
from tilemesh_sim.sram_bench import random_requests

# (width, depth, keyword arguments)
CONFIGS = [
    (32, 256, {}),
    (13, 64, {"tag_bits": 3, "transparent": False}),
    (8, 16, {"init": list(range(100, 116))}),
    (1, 2, {"tag_bits": 1}),
]
CONFIG_IDS = ["32x256", "13x64-tag3-read-first", "8x16-init", "1x2-tag1"]


def run_bank(dut, writes, reads, *, seed=0, idle=0.0, stall=0.0, max_cycles=None):
    """Drive ``writes`` and ``reads`` (dicts) with random idle cycles, take responses with random
    stalls, run :class:`SramModel` on what was accepted each cycle. Checks the stream rules and
    that ``read_req.ready`` never depends combinationally on ``read_resp.ready``.

    Returns (responses, expected responses, log of cycles and same-cycle collisions)."""
    model = SramModel(dut.width, dut.depth, transparent=dut.transparent, init=dut.init)
    rnd = {k: random.Random(f"{seed}:{k}") for k in ("w", "r", "out")}
    got, want = [], []
    log = {"accepted": [], "delivered": [], "collisions": 0, "valid_gaps": 0}
    max_cycles = max_cycles or 20 * max(len(reads), len(writes)) + 100
    tagged = dut.tag_bits > 0
    done = {"w": False, "r": False}

    def driver(stream, items, key):
        async def run(ctx):
            for item in items:
                while rnd[key].random() < idle:
                    await ctx.tick()
                ctx.set(stream.valid, 1)
                ctx.set(stream.payload, item)
                await ctx.tick().until(stream.ready)
                ctx.set(stream.valid, 0)
            done[key] = True
        return run

    async def monitor(ctx):
        # Passive: what the bank accepted in each cycle, in the order the edge applies it.
        cycle = 0
        async for _, _, wv, wr, wp, qv, qr, qp in ctx.tick().sample(
                dut.write.valid, dut.write.ready, dut.write.payload,
                dut.read_req.valid, dut.read_req.ready, dut.read_req.payload):
            cycle += 1
            write = (int(wp.addr), int(wp.data)) if wv and wr else None
            read = int(qp.addr) if qv and qr else None
            if write and read is not None and write[0] == read:
                log["collisions"] += 1
            data = model.cycle(write=write, read=read)
            if read is not None:
                want.append({"data": data, **({"tag": int(qp.tag)} if tagged else {})})
                log["accepted"].append(cycle)

    async def consumer(ctx):
        held = None
        for cycle in range(1, max_cycles + 1):
            # read_req.ready must be a register: flipping read_resp.ready cannot change it.
            ctx.set(dut.read_resp.ready, 0)
            r0 = ctx.get(dut.read_req.ready)
            ctx.set(dut.read_resp.ready, 1)
            assert ctx.get(dut.read_req.ready) == r0, f"cycle {cycle}: ready path is combinational"
            ready = rnd["out"].random() >= stall
            ctx.set(dut.read_resp.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.read_resp.valid,
                                                           dut.read_resp.payload)
            payload = {"data": int(payload.data), **({"tag": int(payload.tag)} if tagged else {})}
            if held is not None:
                assert valid and payload == held, f"cycle {cycle}: response changed while stalled"
            held = payload if valid and not ready else None
            if valid and ready:
                got.append(payload)
                log["delivered"].append(cycle)
            elif not valid and sum(a < cycle for a in log["accepted"]) > len(got):
                log["valid_gaps"] += 1  # a read was pending yet nothing was offered
            if done["w"] and done["r"] and len(got) == len(reads) \
                    and cycle >= (log["delivered"] or [0])[-1] + 8:
                return
        raise AssertionError(f"{len(got)} of {len(reads)} responses after {max_cycles} cycles")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(driver(dut.write, writes, "w"))
    sim.add_testbench(driver(dut.read_req, reads, "r"))
    sim.add_process(monitor)
    sim.add_testbench(consumer)
    sim.run()
    return got, want, log


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_random_reads_and_writes(config, seed):
    width, depth, kwargs = config
    dut = SramBank(width, depth, **kwargs)
    print(f"seed {seed}")
    writes, reads = random_requests(random.Random(seed), width, depth, 400, dut.tag_bits)
    got, want, log = run_bank(dut, writes, reads, seed=seed, idle=0.3, stall=0.4)
    assert len(want) == len(reads)
    assert got == want, f"seed {seed}"
    assert log["collisions"] > 0  # the same-cycle rule was exercised


@pytest.mark.parametrize("transparent", [False, True])
def test_same_cycle_and_next_cycle_rules(transparent):
    dut = SramBank(16, 16, transparent=transparent, init=[7] * 16)
    result = {}

    async def testbench(ctx):
        ctx.set(dut.read_resp.ready, 1)
        # Cycle 1: write 5 <- 0x1234 and read 5 together; cycle 2: read 5 again.
        ctx.set(dut.write.valid, 1)
        ctx.set(dut.write.payload, {"addr": 5, "data": 0x1234})
        ctx.set(dut.read_req.valid, 1)
        ctx.set(dut.read_req.payload, {"addr": 5})
        await ctx.tick()
        ctx.set(dut.write.valid, 0)
        result["same"] = ctx.get(dut.read_resp.payload.data)
        assert ctx.get(dut.read_resp.valid)
        await ctx.tick()
        ctx.set(dut.read_req.valid, 0)
        result["next"] = ctx.get(dut.read_resp.payload.data)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    assert result == {"same": 0x1234 if transparent else 7, "next": 0x1234}


def test_held_response_is_the_word_at_read_time():
    # A response waiting under backpressure is not changed by a later write to its address.
    dut = SramBank(8, 4, init=[1, 2, 3, 4])
    seen = []

    async def testbench(ctx):
        ctx.set(dut.read_resp.ready, 0)
        ctx.set(dut.read_req.valid, 1)
        ctx.set(dut.read_req.payload, {"addr": 2})
        await ctx.tick()
        ctx.set(dut.read_req.payload, {"addr": 3})
        await ctx.tick()                      # second read accepted: the first goes to the skid
        ctx.set(dut.read_req.valid, 0)
        ctx.set(dut.write.valid, 1)
        ctx.set(dut.write.payload, {"addr": 2, "data": 99})
        await ctx.tick()
        ctx.set(dut.write.payload, {"addr": 3, "data": 98})
        await ctx.tick()
        ctx.set(dut.write.valid, 0)
        await ctx.tick().repeat(3)
        ctx.set(dut.read_resp.ready, 1)
        for _ in range(2):
            _, _, v, d = await ctx.tick().sample(dut.read_resp.valid, dut.read_resp.payload.data)
            assert v
            seen.append(d)
        assert not ctx.get(dut.read_resp.valid)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    assert seen == [3, 4]


def test_back_to_back_reads_one_per_cycle():
    dut = SramBank(32, 64, init=[i * 3 for i in range(64)])
    reads = [{"addr": a} for a in range(64)]
    got, want, log = run_bank(dut, [], reads)
    assert got == want == [{"data": a * 3} for a in range(64)]
    assert log["accepted"] == list(range(1, 65))
    assert log["delivered"] == [c + 1 for c in log["accepted"]]


@pytest.mark.parametrize("stall", [0.3, 0.7])
def test_no_bubbles_under_backpressure(stall):
    # With requests always offered, a response is offered in every cycle once the first is:
    # stalls cost the consumer nothing but its own stall cycles.
    dut = SramBank(16, 32)
    rnd = random.Random(5)
    reads = [{"addr": rnd.randrange(32)} for _ in range(300)]
    got, want, log = run_bank(dut, [], reads, seed=5, stall=stall)
    assert got == want
    assert log["valid_gaps"] == 0


def test_layouts_and_ports():
    assert sram_addr_bits(1024) == 10 and sram_addr_bits(2) == 1
    dut = SramBank(32, 1024, tag_bits=4)
    assert dut.write.payload.shape() == sram_write_layout(32, 1024)
    assert dut.read_req.payload.shape() == sram_read_req_layout(1024, 4)
    assert dut.read_resp.payload.shape() == sram_read_resp_layout(32, 4)
    assert sram_read_req_layout(1024).size == 10 and sram_read_resp_layout(32).size == 32
    Fragment.get(dut, None)  # it elaborates


@pytest.mark.parametrize("args, kwargs, match", [
    ((0, 16), {}, r"SRAM width must be an integer in 1\.\.1024, not 0"),
    ((1025, 16), {}, r"SRAM width must be an integer in 1\.\.1024, not 1025"),
    ((8, 24), {}, r"SRAM depth must be a power of two in 2\.\.1048576, not 24"),
    ((8, 1), {}, r"SRAM depth must be a power of two in 2\.\.1048576, not 1"),
    ((8, 16.0), {}, r"SRAM depth must be a power of two in 2\.\.1048576, not 16\.0"),
    ((8, 16), {"tag_bits": -1}, r"SRAM tag_bits must be an integer in 0\.\.32, not -1"),
    ((8, 4), {"init": [0] * 5}, r"SRAM init must have at most 4 words, not 5"),
])
def test_constructor_rejects(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        SramBank(*args, **kwargs)
