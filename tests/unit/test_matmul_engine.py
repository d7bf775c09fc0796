# amaranth: UnusedElaboratable=no
# (the constructor tests make components that fail before they can be elaborated)
"""Matrix engine (MATMUL on SRAM operands) in Amaranth's simulator against
``model.reference.matmul_instr``: random SRAM images, shapes, folds, acc, chaining, and
instruction sequences that reuse each other's blocks (read-after-write through C and through
the operands), with a behavioural SRAM that stalls requests and writes and answers reads after
a random latency; gaps on the command stream; abort in mid-flight; and the array's utilisation
with the real SramArray (MATMUL_STEPS / busy cycles).

``ClientSram`` (the behavioural SRAM) and ``run_engine`` are shared with test_simd_engine.py.
"""

import random
from collections import deque

import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import data, wiring
from amaranth.sim import Simulator

from tilemesh.config import MeshConfig, NocConfig, TileConfig, preset
from tilemesh.layouts import MatmulInstr, matmul_operand_words
from tilemesh.model.reference import matmul_instr
from tilemesh.tile.matmul_engine import MatmulEngine, SramClientGuard
from tilemesh.tile.sram_array import SramArray

DEFAULT = preset("default")          # 4x4 int8, acc 32, 32-bit words: c_words = 4
TINY = preset("tiny")                # 2x2, acc 24: a C row is 48 bits, elements straddle words
LARGE = preset("large")              # 8x8, 64-bit words
# A and B of two words, C rows of four, odd element widths straddling 24-bit words.
ODD = MeshConfig(rows=1, cols=1,
                 tile=TileConfig(pe_rows=5, pe_cols=4, data_bits=7, acc_bits=20, simd_lanes=3,
                                 sram_banks=2, sram_depth=512, imem_depth=16),
                 noc=NocConfig(flit_bits=24, max_packet_flits=4))


# -- behavioural SRAM and the cycle loop (shared with test_simd_engine.py) ------------------------

class _Stream:
    """Protocol check of one stream the DUT drives: once valid, it holds valid and payload
    until taken."""

    def __init__(self, name):
        self.name, self.pending = name, None

    def check(self, cycle, valid, payload, taken, exempt):
        if self.pending is not None and not exempt:
            assert valid and payload == self.pending, \
                f"cycle {cycle}: {self.name} dropped or changed a beat before it was taken"
        self.pending = payload if valid and not taken else None


class ClientSram:
    """SRAM words shared by several client ports (``sram_client_signature``) of a DUT.

    Each cycle every port's ``read_req`` and ``write`` are ready with probability ``ready`` (a
    number, or a dict by port name);
    a read is answered ``latency`` cycles later (random in the range, answers in order per
    port) with the word as it was before any write accepted in the same cycle (so the DUT
    cannot rely on same-cycle forwarding); answers wait while ``read_resp`` is not ready.
    ``readers`` / ``writers`` name the ports allowed to read / write.
    """

    def __init__(self, mem, ports, rnd, *, ready=0.75, latency=(1, 4), readers=(), writers=()):
        self.mem, self.ports, self.rnd = mem, ports, rnd
        self.ready, self.latency = ready, latency
        self.readers, self.writers = set(readers), set(writers)
        self.queue = {n: deque() for n in ports}
        self.req_ready = dict.fromkeys(ports, False)
        self.w_ready = dict.fromkeys(ports, False)
        self.resp_valid = dict.fromkeys(ports, False)
        self.checks = {n: (_Stream(f"{n}.read_req"), _Stream(f"{n}.write")) for n in ports}
        self.reads = self.writes = 0

    def drive(self, ctx, cycle):
        for n, port in self.ports.items():
            p = self.ready[n] if isinstance(self.ready, dict) else self.ready
            self.req_ready[n] = self.rnd.random() < p
            self.w_ready[n] = self.rnd.random() < p
            ctx.set(port.read_req.ready, self.req_ready[n])
            ctx.set(port.write.ready, self.w_ready[n])
            q = self.queue[n]
            self.resp_valid[n] = bool(q) and q[0][0] <= cycle
            ctx.set(port.read_resp.valid, self.resp_valid[n])
            if self.resp_valid[n]:
                ctx.set(port.read_resp.payload.data, q[0][1])

    def observe(self, ctx, cycle, exempt=False):
        reads, writes = [], []
        for n, port in self.ports.items():
            req_check, w_check = self.checks[n]
            valid = ctx.get(port.read_req.valid)
            addr = ctx.get(port.read_req.payload.addr) if valid else None
            req_check.check(cycle, valid, addr, valid and self.req_ready[n], exempt)
            if valid and self.req_ready[n]:
                assert n in self.readers, f"cycle {cycle}: {n} must not read"
                reads.append((n, addr))
            valid = ctx.get(port.write.valid)
            beat = (ctx.get(port.write.payload.addr), ctx.get(port.write.payload.data)) \
                if valid else None
            w_check.check(cycle, valid, beat, valid and self.w_ready[n], exempt)
            if valid and self.w_ready[n]:
                assert n in self.writers, f"cycle {cycle}: {n} must not write"
                writes.append(beat)
            if self.resp_valid[n] and ctx.get(port.read_resp.ready):
                self.queue[n].popleft()
        for n, addr in reads:   # reads see the words of before this cycle's writes
            assert addr < len(self.mem), f"cycle {cycle}: {n} reads {addr:#x}, beyond the image"
            q = self.queue[n]
            due = cycle + self.rnd.randint(*self.latency)
            q.append((max(due, q[-1][0] if q else 0), self.mem[addr]))
            self.reads += 1
        for addr, value in writes:
            assert addr < len(self.mem), f"cycle {cycle}: write to {addr:#x}, beyond the image"
            self.mem[addr] = value
            self.writes += 1

    @property
    def outstanding(self):
        return sum(len(q) for q in self.queue.values())


def run_engine(dut, sram, cmds, *, seed, idle=0.0, abort_at=None, then=(), max_cycles=20000,
               on_cycle=None):
    """Feed ``cmds`` (payload constants, or "start" for a START pulse once ``busy`` is low) to
    ``dut.cmd`` with random gaps (probability ``idle`` per cycle between commands) while
    ``sram`` serves the DUT's clients; run until every command is taken and ``busy`` is low.
    With ``abort_at``, pulse ``abort`` in that cycle,
    drop the commands not yet taken, keep a copy of the SRAM words as they are then
    (``snapshot``) and go on with the commands ``then`` (in the same simulation, so answers to
    reads of before the abort are still arriving). Returns a dict: ``cycles`` (of the run),
    ``busy`` (cycles with busy high), ``steps`` (pulses of ``dut.steps`` if it has one),
    ``accepted`` (cycle of each command), ``idle_at`` (first cycle with busy low after the
    abort), ``snapshot``."""
    rnd = random.Random(seed)
    res = {"cycles": 0, "busy": 0, "steps": 0, "accepted": [], "idle_at": None,
           "snapshot": None}
    has_steps = hasattr(dut, "steps")

    async def bench(ctx):
        queue = list(cmds)
        k = 0
        offering = False
        for cycle in range(max_cycles):
            sram.drive(ctx, cycle)
            aborting = abort_at is not None and cycle == abort_at
            ctx.set(dut.abort, aborting)
            busy = ctx.get(dut.busy)
            starting = False
            if aborting:
                offering = False
            elif not offering and k < len(queue) and isinstance(queue[k], str):
                # "start": a START pulse once the engine is idle (as the controller sends it)
                assert queue[k] == "start"
                starting = not busy
                k += starting
            elif not offering and k < len(queue) and rnd.random() >= idle:
                offering = True
                ctx.set(dut.cmd.payload, queue[k])
            ctx.set(dut.start, starting)
            ctx.set(dut.cmd.valid, offering)
            took = offering and ctx.get(dut.cmd.ready)
            if on_cycle is not None:
                on_cycle(ctx, cycle)
            if has_steps:
                res["steps"] += ctx.get(dut.steps)
            res["busy"] += busy
            sram.observe(ctx, cycle, exempt=aborting)
            if aborting:
                res["snapshot"] = list(sram.mem)
                queue, k = list(then), 0
            if took:
                res["accepted"].append(cycle)
                k, offering = k + 1, False
            if (abort_at is not None and cycle > abort_at and not busy
                    and res["idle_at"] is None):
                res["idle_at"] = cycle
            past_abort = abort_at is None or cycle > abort_at
            if past_abort and k == len(queue) and not offering and not busy and not took:
                res["cycles"] = cycle
                break
            await ctx.tick()
        else:
            raise AssertionError(f"timeout after {max_cycles} cycles: {k} of {len(queue)} "
                                 f"commands taken, busy={busy}")
        # Idle means idle: no request, write or step for a while, and no stray answer left.
        ctx.set(dut.cmd.valid, 0)
        for cycle in range(res["cycles"] + 1, res["cycles"] + 12):
            await ctx.tick()
            sram.drive(ctx, cycle)
            for n, port in sram.ports.items():
                assert not ctx.get(port.read_req.valid), f"{n}: read while idle"
                assert not ctx.get(port.write.valid), f"{n}: write while idle"
            assert not ctx.get(dut.busy)
            if has_steps:
                assert not ctx.get(dut.steps)
            sram.observe(ctx, cycle)
        assert sram.outstanding == 0, "the engine left read answers untaken"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return res


# -- MATMUL programs --------------------------------------------------------------------------

MATMUL = data.Layout.cast(MatmulInstr)


def matmul_cmd(ins):
    return MATMUL.const({k: int(v) for k, v in ins.items()})


def c_extent(cfg, ins):
    """Words from ``c`` to one past the last word of the instruction's C block."""
    R = cfg.tile.pe_rows
    cw = matmul_operand_words(cfg)["c"]
    return (ins["m_folds"] * R - 1) * ins["c_stride"] + ins["n_folds"] * cw


def random_matmul_program(rnd, cfg, n_instr, space, *, max_k=10):
    """Random MATMULs in the first ``space`` words: chains (last=0 ... first=0), several folds,
    acc, overlapping C rows (small c_stride), and blocks reused by the next instruction (C
    accumulated again, an earlier C read as A or B). Within one instruction A and B never
    overlap its C (the ISA leaves that unspecified)."""
    R = cfg.tile.pe_rows
    w = matmul_operand_words(cfg)
    prog, open_chain, prev = [], False, None
    for n in range(n_instr):
        closing = n == n_instr - 1
        if open_chain:
            m_f = n_f = 1
            first, last = False, closing or rnd.random() < 0.6
            c_stride, c = prev["c_stride"], prev["c"]
        else:
            m_f, n_f = rnd.randint(1, 3), rnd.randint(1, 3)
            first = True
            last = True if m_f * n_f > 1 or closing else rnd.random() < 0.75
            r = rnd.random()
            if r < 0.15:
                c_stride = rnd.randint(0, w["c"])          # rows overlap (or coincide)
            elif r < 0.6:
                c_stride = n_f * w["c"]                   # row-major C block
            else:
                c_stride = n_f * w["c"] + rnd.randint(1, 9)
            c = None
        k = rnd.choice([1, 2, R - 1 or 1, R, R + 1, rnd.randint(1, max_k)])
        ins = {"k": k, "m_folds": m_f, "n_folds": n_f, "first": first, "last": last,
               "acc": rnd.random() < 0.45, "c_stride": c_stride}
        c_len = c_extent(cfg, ins)
        a_len, b_len = m_f * k * w["a"], n_f * k * w["b"]
        for _ in range(1000):
            if c is None:
                if prev is not None and prev["last"] and rnd.random() < 0.3:
                    c = prev["c"]                    # accumulate into the last C block again
                else:
                    c = rnd.randrange(space - c_len)
            if c + c_len > space:
                c = None
                continue

            def place(length, prev=prev):
                # sometimes inside the previous C block (read after its writes)
                if prev is not None and prev["last"] and rnd.random() < 0.25:
                    lo = max(0, prev["c"] - length + 1)
                    hi = min(space - length, prev["c"] + c_extent(cfg, prev) - 1)
                    if lo <= hi:
                        return rnd.randint(lo, hi)
                return rnd.randrange(space - length)
            a, b = place(a_len), place(b_len)
            if not (a < c + c_len and c < a + a_len) and not (b < c + c_len and c < b + b_len):
                break
            if not open_chain:
                c = None
        else:
            raise AssertionError("could not place the operands")
        ins.update(a=a, b=b, c=c)
        prog.append(ins)
        open_chain = not last
        prev = ins
    return prog


def reference_run(cfg, mem, prog):
    state = None
    for ins in prog:
        state = matmul_instr(mem, cfg, state=state, **ins)


def random_image(rnd, cfg, words):
    return [rnd.getrandbits(cfg.word_bits) for _ in range(words)]


def run_matmul(cfg, prog, mem, *, seed, ready=0.75, latency=(1, 4), idle=0.0, **kwargs):
    dut = MatmulEngine(cfg)
    sram = ClientSram(mem, {"a": dut.a, "b": dut.b, "c": dut.c}, random.Random(seed + 1),
                      ready=ready, latency=latency, readers="abc", writers="c")
    return run_engine(dut, sram, [matmul_cmd(i) for i in prog], seed=seed, idle=idle,
                      **kwargs)


@pytest.mark.parametrize("cfg, seed, n_instr",
                         [(DEFAULT, 1, 9), (DEFAULT, 2, 9), (TINY, 3, 9), (ODD, 4, 9),
                          (LARGE, 21, 4)],
                         ids=["default-1", "default-2", "tiny", "odd", "large"])
def test_random_programs(cfg, seed, n_instr):
    print(f"seed={seed}")
    rnd = random.Random(seed)
    space = 640
    prog = random_matmul_program(rnd, cfg, n_instr, space)
    mem = random_image(rnd, cfg, space)
    want = list(mem)
    reference_run(cfg, want, prog)
    res = run_matmul(cfg, prog, mem, seed=seed, ready=0.7, latency=(1, 5), idle=0.2)
    assert mem == want
    assert res["steps"] == sum(i["k"] * i["m_folds"] * i["n_folds"] for i in prog)


def test_hazards_through_c():
    """Read-after-write through C, each case alone: an acc into the C block just written, an
    A and a B block inside it, acc rows overlapping each other (c_stride 1 < c_words),
    c_stride 0 (every row onto the same words), A inside a C block still being written while a
    later C block joined the pending hull, and A running into such a block."""
    cfg = DEFAULT
    rnd = random.Random(5)
    base = {"k": 5, "m_folds": 2, "n_folds": 2, "first": True, "last": True}
    prog = [
        # A starting just below a C block still being written and running into the words of
        # its last tile (fold (0, 2) row 0 at c + 8): the first steps may go, later ones wait
        # (first in the program: the hull holds nothing else)
        dict(base, a=0, b=64, c=760, c_stride=100, acc=False, k=1, m_folds=1, n_folds=3),
        dict(base, a=0, b=64, c=1080, c_stride=4, acc=False, k=1, m_folds=1, n_folds=1),
        dict(base, a=758, b=64, c=1100, c_stride=4, acc=False, k=12, m_folds=1, n_folds=1),
        dict(base, a=0, b=64, c=200, c_stride=8, acc=False),
        dict(base, a=0, b=64, c=200, c_stride=8, acc=True),       # acc on the C just written
        dict(base, a=200, b=230, c=300, c_stride=8, acc=False),   # A and B inside it
        dict(base, a=300, b=10, c=400, c_stride=1, acc=True),     # overlapping acc rows
        dict(base, a=400, b=20, c=450, c_stride=0, acc=True),     # all rows on one C row
        dict(base, a=450, b=0, c=500, c_stride=8, acc=True),
        # a long C drain (9 tiles of k=1), a short instruction whose C block is merged into
        # the pending hull meanwhile, then A inside the first C block's late tiles
        dict(base, a=0, b=64, c=520, c_stride=12, acc=False, k=1, m_folds=3, n_folds=3),
        dict(base, a=0, b=64, c=680, c_stride=4, acc=False, k=1, m_folds=1, n_folds=1),
        dict(base, a=620, b=64, c=700, c_stride=4, acc=False, k=2, m_folds=1, n_folds=1),
    ]
    mem = random_image(rnd, cfg, 1120)
    want = list(mem)
    reference_run(cfg, want, prog)
    run_matmul(cfg, prog, mem, seed=5, ready=0.9, latency=(1, 3))
    assert mem == want


def test_chaining():
    """K split over three instructions (first=1 last=0, first=0 last=0, first=0 last=1) then
    accumulated into C: equals one long instruction."""
    cfg = DEFAULT
    rnd = random.Random(6)
    prog = [
        {"a": 0, "b": 100, "c": 300, "c_stride": 4, "k": 7, "first": True, "last": False},
        {"a": 20, "b": 140, "c": 300, "c_stride": 4, "k": 1, "first": False, "last": False},
        {"a": 40, "b": 160, "c": 300, "c_stride": 4, "k": 9, "first": False, "last": True,
         "acc": True},
    ]
    for ins in prog:
        ins.setdefault("m_folds", 1)
        ins.setdefault("n_folds", 1)
        ins.setdefault("acc", False)
    mem = random_image(rnd, cfg, 400)
    want = list(mem)
    reference_run(cfg, want, prog)
    res = run_matmul(cfg, prog, mem, seed=6)
    assert mem == want
    assert res["steps"] == 17


def test_abort_then_clean_run():
    """Abort while reads, steps and writes are in flight, then at once a new program in the
    same simulation: the engine is idle a few cycles after the abort, no stale answer reaches
    the new program, whose result is exact."""
    cfg = DEFAULT
    for seed in (7, 8, 9):
        print(f"seed={seed}")
        rnd = random.Random(seed)
        space = 512
        prog = random_matmul_program(rnd, cfg, 4, space)
        prog2 = random_matmul_program(rnd, cfg, 3, space)
        mem = random_image(rnd, cfg, space)
        abort_at = rnd.randint(15, 60)
        res = run_matmul(cfg, prog, mem, seed=seed, latency=(2, 6), abort_at=abort_at,
                         then=[matmul_cmd(i) for i in prog2])
        assert res["accepted"][0] < abort_at, "the abort should hit a busy engine"
        # idle once the outstanding answers (latency <= 6, queued per port) are discarded
        assert res["idle_at"] - abort_at <= 12
        want = res["snapshot"]
        reference_run(cfg, want, prog2)
        assert mem == want


def test_zero_sized_instructions_are_ignored():
    cfg = DEFAULT
    mem = random_image(random.Random(9), cfg, 64)
    want = list(mem)
    prog = [{"a": 0, "b": 0, "c": 8, "c_stride": 4, "k": 0, "m_folds": 1, "n_folds": 1,
             "first": True, "last": True, "acc": False},
            {"a": 0, "b": 0, "c": 8, "c_stride": 4, "k": 3, "m_folds": 0, "n_folds": 1,
             "first": True, "last": True, "acc": False}]
    res = run_matmul(cfg, prog, mem, seed=9)
    assert mem == want and res["steps"] == 0


# -- utilisation with the real SRAM array ----------------------------------------------------------

class _EngineOnArray(Elaboratable):
    """A MatmulEngine on an SramArray, with a ``load`` client the testbench writes through."""

    def __init__(self, cfg):
        self.engine = MatmulEngine(cfg)
        self.array = SramArray(cfg, ["a", "b", "c", "load"], readers=["a", "b", "c", "load"])

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = self.engine
        m.submodules.array = self.array
        for i, name in enumerate(("a", "b", "c")):
            wiring.connect(m, getattr(self.engine, name), self.array.clients[i])
        return m


def test_utilisation_on_sram_array():
    """k = 64, 2 x 2 folds on the default tile, operands in different banks of the real
    SramArray: MATMUL_STEPS / busy cycles for one instruction and for four back to back
    (C accumulated in place), against the SCALE-Sim count R + C + K - 2 per output fold.
    The results are checked too."""
    cfg = DEFAULT
    R, C, k = cfg.tile.pe_rows, cfg.tile.pe_cols, 64
    depth = cfg.tile.sram_depth
    w = matmul_operand_words(cfg)
    rnd = random.Random(10)
    a_addr, b_addr, c_addr = 0, depth, 2 * depth          # banks 0, 1, 2
    a_len, b_len = 2 * k * w["a"], 2 * k * w["b"]
    c_len = 2 * R * 2 * w["c"]
    image = {a_addr + i: rnd.getrandbits(32) for i in range(a_len)}
    image.update({b_addr + i: rnd.getrandbits(32) for i in range(b_len)})
    image.update({c_addr + i: rnd.getrandbits(32) for i in range(c_len)})
    one = {"a": a_addr, "b": b_addr, "c": c_addr, "c_stride": 2 * w["c"], "k": k,
           "m_folds": 2, "n_folds": 2, "first": True, "last": True, "acc": True}
    figures = {}
    for label, prog in (("one", [one]), ("four", [one] * 4)):
        top = _EngineOnArray(cfg)
        dut, load = top.engine, top.array.clients[3]
        res = {}

        async def bench(ctx, prog=prog, res=res, dut=dut, load=load):
            for addr, value in image.items():
                ctx.set(load.write.valid, 1)
                ctx.set(load.write.payload.addr, addr)
                ctx.set(load.write.payload.data, value)
                await ctx.tick()
            ctx.set(load.write.valid, 0)
            steps = busy = 0
            cmds = list(prog)
            cycle = 0
            while cmds or ctx.get(dut.busy) or cycle == 0:
                ctx.set(dut.cmd.valid, bool(cmds))
                if cmds:
                    ctx.set(dut.cmd.payload, matmul_cmd(cmds[0]))
                took = cmds and ctx.get(dut.cmd.ready)
                busy += ctx.get(dut.busy) or took
                steps += ctx.get(dut.steps)
                if took:
                    cmds.pop(0)
                await ctx.tick()
                cycle += 1
                assert cycle < 5000
            ctx.set(dut.cmd.valid, 0)
            # read C back through the load client
            ctx.set(load.read_resp.ready, 1)
            for i in range(c_len):
                ctx.set(load.read_req.valid, 1)
                ctx.set(load.read_req.payload.addr, c_addr + i)
                await ctx.tick().until(load.read_req.ready)
            ctx.set(load.read_req.valid, 0)
            while "c" not in res:
                await ctx.tick()
            res.update(steps=steps, busy=busy)

        async def collect(ctx, res=res, load=load):
            out = []
            async for _, _, valid, value, ready in ctx.tick().sample(
                    load.read_resp.valid, load.read_resp.payload.data, load.read_resp.ready):
                if valid and ready:
                    out.append(value)
                    if len(out) == c_len:
                        res["c"] = out
                        return

        sim = Simulator(top)
        sim.add_clock(1e-6)
        sim.add_testbench(bench)
        sim.add_process(collect)
        sim.run()
        mem = [0] * (3 * depth)
        for addr, value in image.items():
            mem[addr] = value
        reference_run(cfg, mem, prog)
        assert res["c"] == mem[c_addr:c_addr + c_len]
        assert res["steps"] == k * 4 * len(prog)
        figures[label] = (res["steps"], res["busy"])
    ideal = 4 * (R + C + k - 2)
    steps, busy = figures["one"]
    print(f"one MATMUL k={k} 2x2 folds: {steps} steps in {busy} busy cycles = "
          f"{steps / busy:.1%} (SCALE-Sim per-fold model: {ideal} cycles = {steps / ideal:.1%})")
    steps4, busy4 = figures["four"]
    print(f"four back to back: {steps4} steps in {busy4} cycles = {steps4 / busy4:.1%}")
    # Within 5 cycles of SCALE-Sim's 280: the array's fill and the C rows' block-RAM FIFO
    # (one cycle) before the last row's writes.
    assert busy <= ideal + 5
    assert steps4 / busy4 >= 0.96


# -- parameters and the guard ----------------------------------------------------------------------

def test_parameter_errors():
    with pytest.raises(ValueError, match=r"Matrix engine step_queue must be an integer in "
                                         r"2\.\.64, not 1"):
        MatmulEngine(DEFAULT, step_queue=1)
    with pytest.raises(ValueError, match=r"Matrix engine c_job_queue must be an integer in "
                                         r"1\.\.16, not True"):
        MatmulEngine(DEFAULT, c_job_queue=True)
    with pytest.raises(ValueError, match=r"SRAM client guard max_outstanding must be an "
                                         r"integer in 1\.\.255, not 0"):
        SramClientGuard(DEFAULT, max_outstanding=0)
