# amaranth: UnusedElaboratable=no
# (the constructor tests make components that fail before they can be elaborated)
"""The tile controller in Amaranth's simulator.

Random programs (loops, address registers, every unit instruction, WAITs, FENCEs, occasional
errors) run against :func:`tilemesh.model.reference.controller_run`: the commands each unit
queue delivers, the final state, pc, ERROR, the error NOTIFY, ar1..3 and the semaphores must
match, with random backpressure on every command stream, random unit busy times and a random
``sem_dec.ready``. Targeted tests cover each error code, TIMEOUT, SEM_OVERFLOW, START / RESET,
IMEM write protection, FENCE / HALT ordering, DMA-MATMUL overlap, the issue rate and the counters.
"""

import random

import pytest
from amaranth.lib import data
from amaranth.sim import Simulator

from tilemesh.compiler.assembler import AR1, AR2, AR3, Program, assemble, imem_image
from tilemesh.config import MeshConfig, NocConfig, TileConfig, preset
from tilemesh.layouts import (
    SEMAPHORES,
    ControlCommand,
    ErrorCode,
    InstrOp,
    InstrWord,
    NotifyPayload,
    SimdOp,
    TileState,
)
from tilemesh.model.reference import controller_run, layout_get
from tilemesh.tile.controller import Controller

SEED = 4242
ACTIVE = (TileState.RUNNING, TileState.WAITING, TileState.BLOCKED)
UNITS = ("dma", "matmul", "simd")

CONFIGS = {
    "default": preset("default"),
    "tiny": preset("tiny"),
    # 28-bit words: 5 IMEM words per instruction (not a power of two), 3 columns, odd SRAM.
    "w28": MeshConfig(rows=1, cols=3,
                      tile=TileConfig(pe_rows=2, pe_cols=3, data_bits=6, acc_bits=20, simd_lanes=3,
                                      sram_banks=3, sram_depth=64, imem_depth=64),
                      noc=NocConfig(flit_bits=28, max_packet_flits=4)),
}


class Bench:
    """Drives a :class:`Controller`: IMEM loads, CONTROL commands, a semaphore model, three
    unit models (random backpressure and busy times) and the error NOTIFY sink; a monitor counts
    what the counters should show."""

    def __init__(self, cfg, seed, *, stall=0.3, max_busy=6, sem_stall=0.2, note_stall=0.3,
                 queue_depth=None):
        self.cfg = cfg
        self.dut = Controller(cfg, queue_depth=queue_depth)
        self.rnd = random.Random(seed)
        self.stall, self.max_busy = stall, max_busy
        self.sem_stall, self.note_stall = sem_stall, note_stall
        self.sems = [0] * SEMAPHORES
        self.hold = {u: False for u in UNITS}      # a unit that takes nothing
        self.busy_for = {u: None for u in UNITS}   # fixed busy time (None: random)
        self.log = {u: [] for u in UNITS}          # commands taken, as ints
        self.events = []                           # (cycle, unit, "take" | "done")
        self.left = {u: 0 for u in UNITS}
        self.notes = []
        self.cycle = 0
        self.steps_sent = 0
        self.counts = {}
        self.states = []
        self.overflow = []                         # semaphores to report as overflowed
        self.imem = [0] * cfg.tile.imem_depth      # what the IMEM holds (loads overwrite)
        self.reset_counts()

    def reset_counts(self):
        self.counts = {k: 0 for k in ("cycles", "stall_cycles", "dma_busy", "matmul_busy",
                                      "simd_busy", "matmul_steps")}

    def clear_logs(self):
        self.log = {u: [] for u in UNITS}
        self.events = []
        self.notes = []

    # -- background processes -------------------------------------------------------------------

    def add_to(self, sim):
        dut = self.dut
        for unit, port, busy in (("dma", dut.dma_cmd, dut.dma_busy),
                                 ("matmul", dut.matmul_cmd, dut.matmul_busy),
                                 ("simd", dut.simd_cmd, dut.simd_busy)):
            sim.add_testbench(self._unit(unit, port, busy), background=True)
        sim.add_testbench(self._semaphores, background=True)
        sim.add_testbench(self._notify_sink, background=True)
        sim.add_testbench(self._monitor, background=True)

    def _unit(self, unit, port, busy):
        async def run(ctx):
            stable = None  # (payload) offered and not yet taken: must not change
            while True:
                ready = (self.left[unit] == 0 and not self.hold[unit]
                         and self.rnd.random() >= self.stall)
                ctx.set(port.ready, ready)
                ctx.set(busy, self.left[unit] > 0)
                step = unit == "matmul" and self.left[unit] > 0 and self.rnd.random() < 0.5
                ctx.set(self.dut.matmul_step, step) if unit == "matmul" else None
                _, _, valid, payload = await ctx.tick().sample(port.valid,
                                                               port.payload.as_value())
                self.steps_sent += step
                if self.left[unit]:
                    self.left[unit] -= 1
                    if not self.left[unit]:
                        self.events.append((self.cycle, unit, "done"))
                if valid and stable is not None:
                    assert payload == stable, f"{unit} command changed while offered"
                stable = payload if valid and not ready else None
                if valid and ready:
                    self.log[unit].append(payload)
                    self.events.append((self.cycle, unit, "take"))
                    t = self.busy_for[unit]
                    self.left[unit] = self.rnd.randint(0, self.max_busy) if t is None else t
                    if not self.left[unit]:
                        self.events.append((self.cycle, unit, "done"))
        return run

    async def _semaphores(self, ctx):
        dut = self.dut
        while True:
            # the semaphores compare the WAIT's operands (sem_dec.payload) with the counter
            sem, count = ctx.get(dut.sem_dec.payload.sem), ctx.get(dut.sem_dec.payload.count)
            ctx.set(dut.sem_enough, self.sems[sem] >= count)
            ready = self.rnd.random() >= self.sem_stall
            ctx.set(dut.sem_dec.ready, ready)
            ovf = bool(self.overflow)
            ctx.set(dut.sem_overflow.valid, ovf)
            if ovf:
                ctx.set(dut.sem_overflow.payload.sem, self.overflow[0])
            _, _, valid, sem, count, ovf_ready = await ctx.tick().sample(
                dut.sem_dec.valid, dut.sem_dec.payload.sem, dut.sem_dec.payload.count,
                dut.sem_overflow.ready)
            if valid:
                assert self.sems[sem] >= count, "sem_dec requested beyond the value"
            if valid and ready:
                self.sems[sem] -= count
            if ovf and ovf_ready:
                self.overflow.pop(0)

    async def _notify_sink(self, ctx):
        port = self.dut.error_notify
        layout = data.Layout.cast(NotifyPayload)
        while True:
            ready = self.rnd.random() >= self.note_stall
            ctx.set(port.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload.as_value())
            if valid and ready:
                self.notes.append({k: layout_get(layout, payload, k)
                                   for k in ("kind", "code", "pc", "value")})

    async def _monitor(self, ctx):
        st = self.dut.status
        while True:
            _, _, state, dma, mm, simd, step, reset = await ctx.tick().sample(
                st.status.state, st.status.dma_busy, st.status.matmul_busy,
                st.status.simd_busy, self.dut.matmul_step, self.dut.abort)
            self.cycle += 1
            state = TileState(state) if not isinstance(state, TileState) else state
            self.states.append(state)
            if reset:
                self.reset_counts()
                continue
            c = self.counts
            c["cycles"] += state in ACTIVE
            c["stall_cycles"] += state in (TileState.WAITING, TileState.BLOCKED)
            c["dma_busy"] += dma
            c["matmul_busy"] += mm
            c["simd_busy"] += simd
            c["matmul_steps"] += step

    # -- actions for the main testbench ----------------------------------------------------------

    async def control(self, ctx, command, pc=0):
        ctx.set(self.dut.control.valid, 1)
        ctx.set(self.dut.control.payload, {"command": command, "pc": pc})
        _, _, refused = await ctx.tick().sample(self.dut.control_refused)
        ctx.set(self.dut.control.valid, 0)
        return refused

    async def reset(self, ctx):
        await self.control(ctx, ControlCommand.RESET)
        self.sems = [0] * SEMAPHORES  # the semaphores (not modelled here) clear on RESET

    async def load(self, ctx, words, gap=0.3):
        port = self.dut.imem_write
        self.imem[:len(words)] = words
        for addr, word in enumerate(imem_image(words, self.cfg)):
            while self.rnd.random() < gap:
                await ctx.tick()
            ctx.set(port.valid, 1)
            ctx.set(port.payload, {"addr": addr, "data": word})
            await ctx.tick()
            ctx.set(port.valid, 0)

    async def wait_for(self, ctx, cond, limit, what):
        for _ in range(limit):
            if cond():
                return
            await ctx.tick()
        raise AssertionError(f"timed out after {limit} cycles waiting for {what}; "
                             f"state {TileState(ctx.get(self.dut.status.status.state))!r}")

    def idle(self, ctx):
        st = self.dut.status.status
        return not (ctx.get(st.dma_busy) or ctx.get(st.matmul_busy) or ctx.get(st.simd_busy))

    async def run_program(self, ctx, words, *, sems=None, limit=20_000, gap=0.3):
        """RESET, load, preset semaphores, START, run until the model's end state; returns the
        model run after checking the hardware against it."""
        cfg = self.cfg
        await self.reset(ctx)
        await self.load(ctx, words, gap)
        self.sems = list(sems) if sems is not None else [0] * SEMAPHORES
        model = controller_run(self.imem, cfg, sems=self.sems)
        self.clear_logs()
        await self.control(ctx, ControlCommand.START, 0)
        state = self.dut.status.status.state
        end = model.state
        if end == TileState.WAITING:
            await self.wait_for(ctx, lambda: ctx.get(state) == TileState.WAITING and
                                self.idle(ctx) and all(not x for x in self.left.values()),
                                limit, "WAITING")
            for _ in range(20):   # and it stays there
                await ctx.tick()
                assert ctx.get(state) == TileState.WAITING
        else:
            await self.wait_for(ctx, lambda: ctx.get(state) == end and self.idle(ctx)
                                and (end != TileState.ERROR or self.notes), limit, end.name)
        for _ in range(2):  # let the monitor see the final state
            await ctx.tick()
        self.check(ctx, model)
        return model

    def check(self, ctx, model):
        st = self.dut.status
        for u in UNITS:
            assert self.log[u] == model.commands[u], f"{u} commands differ from the model"
        assert TileState(ctx.get(st.status.state)) == model.state
        assert ctx.get(st.pc) == model.pc % 4096
        assert ErrorCode(ctx.get(st.error.code)) == model.error
        if model.error != ErrorCode.NONE:
            assert ctx.get(st.error.pc) == model.error_pc % 4096
            assert self.notes == [model.notify]
        else:
            assert self.notes == []
        assert [ctx.get(st.ar[i]) for i in range(3)] == model.ar
        assert self.sems == model.sems
        for name, value in self.counts.items():
            assert ctx.get(st[name]) == value, f"counter {name}"


def _simulate(bench, main):
    sim = Simulator(bench.dut)
    sim.add_clock(1e-6)
    bench.add_to(sim)
    sim.add_testbench(main)
    sim.run()


# -- random programs ------------------------------------------------------------------------------

class ProgramGen:
    """Random programs: mostly valid instructions, an occasional error, loops up to depth 5."""

    def __init__(self, cfg, rnd, error_rate=0.02):
        self.cfg, self.rnd, self.error_rate = cfg, rnd, error_rate
        self.words = cfg.tile.sram_words
        self.span = max(4, self.words // 16)   # block sizes scale with the SRAM
        self.open = False                      # a MATMUL accumulation is open

    def addr(self):
        rnd = self.rnd
        reg = rnd.choice([None, None, AR1, AR2, AR3])
        off = rnd.randrange(0, self.words // 2)
        if rnd.random() < self.error_rate / 4:
            off = rnd.randrange(self.words - 8, self.words)
        return off if reg is None else reg + off

    def tile(self):
        if self.rnd.random() < self.error_rate / 2:
            return (self.cfg.cols, 0) if self.rnd.random() < 0.5 else (0, self.cfg.rows)
        return (self.rnd.randrange(self.cfg.cols), self.rnd.randrange(self.cfg.rows))

    def instruction(self, p, depth):
        rnd = self.rnd
        kind = rnd.choice(["nop", "ar", "ar", "dma", "dma", "matmul", "simd", "simd.cfg",
                           "signal", "notify", "wait", "fence"])
        if rnd.random() < self.error_rate / 2:
            p.word(rnd.randrange(13, 16) | rnd.getrandbits(124) << 4)   # bad opcode
        elif kind == "nop":
            p.nop()
        elif kind == "ar":
            reg = rnd.randrange(0 if rnd.random() < self.error_rate else 1, 4)
            if rnd.random() < 0.5:
                p.emit("ar.set", reg=reg, value=rnd.randrange(0, self.words // 4))
            else:
                p.emit("ar.add", reg=reg, value=rnd.randrange(-8, 65))
        elif kind == "dma":
            read = rnd.random() < 0.5
            rows = rnd.randrange(0 if rnd.random() < self.error_rate else 1, 4)
            fields = dict(local=self.addr(), remote=self.addr(), rows=rows,
                          cols=rnd.randrange(1, min(40, self.span)),
                          local_stride=rnd.randrange(0, self.span),
                          remote_stride=rnd.randrange(0, self.span))
            if rnd.random() < 0.5:
                fields["signal"] = rnd.randrange(16)
            if not read and rnd.random() < 0.2:
                fields["host"] = True
            elif read and rnd.random() < self.error_rate:
                fields["host"] = True
                fields["tile"] = None
            else:
                fields["tile"] = self.tile()
            p.emit("dma.read" if read else "dma.write", **fields)
        elif kind == "matmul":
            folds = rnd.random() < 0.3 and not self.open
            # Inside a loop an accumulation is closed where it opens (it would be re-opened).
            last = folds or depth > 0 or rnd.random() < 0.7
            first = not self.open
            if rnd.random() < self.error_rate:
                first = not first   # MATMUL_CHAIN
            self.open = not last
            p.matmul(a=self.addr(), b=self.addr(), c=self.addr(),
                     c_stride=rnd.randrange(0, self.span // 2),
                     k=rnd.randrange(1, min(20, self.span)),
                     m_folds=rnd.randrange(1, 3) if folds else 1,
                     n_folds=rnd.randrange(1, 3) if folds else 1, first=first, last=last,
                     acc=rnd.random() < 0.3)
        elif kind == "simd":
            func = rnd.choice(list(SimdOp))
            p.simd(func, x=self.addr(), y=self.addr(), d=self.addr(),
                   ymode=rnd.choice(["vector", "repeat", "scalar", "none"]),
                   count=rnd.randrange(1, 9), xfmt=rnd.choice(["acc", "data"]),
                   yfmt=rnd.choice(["acc", "data"]), dfmt=rnd.choice(["acc", "data"]),
                   shift=rnd.randrange(0, 128))
        elif kind == "simd.cfg":
            p.simd_cfg(scale=rnd.randrange(-32768, 32768), zero_point=rnd.randrange(-100, 100))
        elif kind == "signal":
            if rnd.random() < 0.3:
                p.signal(sem=rnd.randrange(16))
            else:
                p.signal(sem=rnd.randrange(16), tile=self.tile())
        elif kind == "notify":
            p.notify(code=rnd.randrange(1 << 16), value=rnd.getrandbits(32))
        elif kind == "wait":
            # Semaphore 3 is preset short: some programs end WAITING.
            p.wait(sem=3 if rnd.random() < 0.1 else rnd.randrange(3), count=rnd.randrange(0, 4))
        else:
            units = [u for u in UNITS if rnd.random() < 0.5]
            p.fence(*units)

    def body(self, p, n, depth):
        for _ in range(n):
            if depth < 5 and self.rnd.random() < 0.15:
                if self.open:
                    p.matmul(a=0, b=0, c=0, c_stride=0, k=1, first=False)
                    self.open = False
                with p.loop(self.rnd.randrange(1, 4)):
                    self.body(p, self.rnd.randrange(1, 4), depth + 1)
            else:
                self.instruction(p, depth)

    def program(self, n):
        p = Program(None, check=False)
        self.body(p, n, 0)
        p.halt()
        return p.words()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_random_programs_match_model(name):
    cfg = CONFIGS[name]
    seed = f"{SEED}:{name}"
    bench = Bench(cfg, seed)
    gen = ProgramGen(cfg, random.Random(seed))
    ends = []

    async def main(ctx):
        for i in range(6 if name == "default" else 4):
            words = gen.program(gen.rnd.randrange(8, 24))
            # Semaphores preset generously, but sem 3 short: some WAITs never finish.
            sems = [gen.rnd.randrange(0, 40) for _ in range(3)] + [gen.rnd.randrange(0, 3)] \
                + [0] * 12
            try:
                model = await bench.run_program(ctx, words, sems=sems)
            except AssertionError as e:
                raise AssertionError(f"program {i} (seed {seed}):\n{words}") from e
            ends.append((model.state, model.error))

    _simulate(bench, main)
    # The generator must reach every kind of end, or the test proves little.
    states = {s for s, _ in ends}
    assert TileState.HALTED in states and TileState.ERROR in states, ends


# -- errors -------------------------------------------------------------------------------------

def _err_programs(cfg):
    """(name, words, expected ErrorCode, expected error pc) for every issue-time error."""
    sw = cfg.tile.sram_words
    cases = []

    def add(name, text, code, pc, check=False):
        cases.append((name, assemble(text, None, check=check), code, pc))

    add("bad-opcode", "nop\n.word 0xd\nhalt", ErrorCode.BAD_OPCODE, 1)
    add("dma-rows-0", "dma.write tile=(0,0) local=0 remote=0 rows=1 cols=1\n"
        ".word " + hex(_dma_word(cfg, rows=0)), ErrorCode.BAD_OPERAND, 1)
    add("dma-read-host", ".word " + hex(_dma_word(cfg, op=InstrOp.DMA_READ, host=1)),
        ErrorCode.BAD_OPERAND, 0)
    add("matmul-k-0", ".word " + hex(_matmul_word(cfg, k=0)), ErrorCode.BAD_OPERAND, 0)
    add("matmul-folds-open", ".word " + hex(_matmul_word(cfg, m_folds=2, last=0)),
        ErrorCode.BAD_OPERAND, 0)
    add("simd-count-0", ".word " + hex(_simd_word(cfg, count=0)), ErrorCode.BAD_OPERAND, 0)
    add("simd-bad-func", ".word " + hex(_simd_word(cfg, func=12)), ErrorCode.BAD_OPERAND, 0)
    add("loop-count-0", "nop\nnop\n.word " + hex(_word(cfg, InstrOp.LOOP, "loop", count=0,
                                                       len=1)) + "\nnop\nhalt",
        ErrorCode.BAD_OPERAND, 2)
    add("ar0", ".word " + hex(_word(cfg, InstrOp.AR, "ar", reg=0, value=5)),
        ErrorCode.BAD_OPERAND, 0)
    add("dma-off-mesh-x", f"dma.write tile=({cfg.cols},0) local=0 remote=0 rows=1 cols=1",
        ErrorCode.OFF_MESH, 0)
    add("dma-off-mesh-y", f"ar.set reg=1 value=1\ndma.read tile=(0,{cfg.rows}) local=0 "
        f"remote=0 rows=1 cols=1", ErrorCode.OFF_MESH, 1)
    add("signal-off-mesh", "signal tile=(31,31) sem=1", ErrorCode.OFF_MESH, 0)
    add("dma-local-range", f"ar.set reg=2 value={sw - 10}\n"
        f"dma.write tile=(0,0) local=ar2+2 remote=0 rows=2 cols=5 local_stride=4",
        ErrorCode.SRAM_RANGE, 1)
    add("dma-local-edge-ok-then-remote-range",
        f"dma.write tile=(0,0) local={sw - 9} remote=0 rows=2 cols=5 local_stride=4\n"
        f"dma.read tile=(0,0) local=0 remote={sw - 3} rows=1 cols=4",
        ErrorCode.SRAM_RANGE, 1)
    add("matmul-a-range", f"matmul a={sw - 1} b=0 c=0x10 c_stride=4 k=2",
        ErrorCode.SRAM_RANGE, 0)
    add("matmul-c-range", f"ar.set reg=3 value={sw - 8}\n"
        f"matmul a=0 b=0x40 c=ar3 c_stride=3 k=2 m_folds=2", ErrorCode.SRAM_RANGE, 1)
    add("matmul-c-unchecked-without-last", f"matmul a=0 b=0x40 c={sw - 1} c_stride=3 k=2 "
        f"last=0\nmatmul a=0 b=0x40 c=0x80 c_stride={cfg.tile.pe_cols * 8} k=1 first=0\n"
        f"halt", ErrorCode.NONE, 0)
    # The check keeps the end's low bits only (a few above sw's): a product whose true value
    # is past them must not wrap back into range, whether the stride is already too large or
    # only gets there by being doubled.
    wrap = 1 << sw.bit_length()
    add("dma-stride-past-check-bits", f"dma.write tile=(0,0) local=0 remote=0 rows=2 cols=1 "
        f"local_stride={2 * wrap}", ErrorCode.SRAM_RANGE, 0)
    add("dma-doubled-stride-past-check-bits", f"dma.write tile=(0,0) local=0 remote=0 rows=3 "
        f"cols=1 local_stride={wrap}", ErrorCode.SRAM_RANGE, 0)
    add("dma-large-stride-in-range", f"dma.write tile=(0,0) local=0 remote=0 rows=2 cols=1 "
        f"local_stride={sw - 1}\nhalt", ErrorCode.NONE, 0)
    add("simd-y-range", f"simd.add x=0 y={sw - 1} d=0x10 count=2", ErrorCode.SRAM_RANGE, 0)
    add("simd-y-none-unchecked", f"simd.relu x=0 y={sw - 1} d=0x10 count=2 ymode=none\nhalt",
        ErrorCode.NONE, 0)
    add("chain-first-0", "matmul a=0 b=0x40 c=0x80 c_stride=16 k=1 first=0",
        ErrorCode.MATMUL_CHAIN, 0)
    add("chain-open", "matmul a=0 b=0x40 c=0x80 c_stride=16 k=1 last=0\n"
        "matmul a=0 b=0x40 c=0x80 c_stride=16 k=1", ErrorCode.MATMUL_CHAIN, 1)
    add("loop-depth", "loop count=1 len=5\nloop count=1 len=4\nloop count=1 len=3\n"
        "loop count=1 len=2\nloop count=1 len=1\nnop\nhalt", ErrorCode.LOOP_NEST, 4)
    add("loop-past-parent", "loop count=2 len=3\nnop\nloop count=2 len=2\nnop\nnop\nhalt",
        ErrorCode.LOOP_NEST, 2)
    if cfg.tile.imem_depth <= 64:  # (filling a larger IMEM only costs simulation time)
        add("loop-past-imem", "nop\n" * (cfg.tile.imem_depth - 2) + "loop count=1 len=2",
            ErrorCode.LOOP_NEST, cfg.tile.imem_depth - 2)
        add("pc-range", "nop\n" * cfg.tile.imem_depth, ErrorCode.PC_RANGE, cfg.tile.imem_depth)
    # Errors inside a loop stop on the right iteration: ar1 grows until the block leaves SRAM.
    add("range-in-loop", f"ar.set reg=1 value={sw - 40}\nloop count=10 {{\n"
        f"dma.write tile=(0,0) local=ar1 remote=0 rows=1 cols=8\nar.add reg=1 value=12\n}}\n"
        f"halt", ErrorCode.SRAM_RANGE, 2)
    return cases


def _word(cfg, op, member, **fields):
    layout = data.Layout.cast(InstrWord)
    value = op.value
    for name, v in fields.items():
        from tilemesh.model.reference import layout_set
        value = layout_set(layout, value, ("args", member, name), v)
    return value


def _dma_word(cfg, op=InstrOp.DMA_WRITE, **fields):
    base = dict(rows=1, cols=1)
    base.update(fields)
    return _word(cfg, op, "dma", **base)


def _matmul_word(cfg, **fields):
    base = dict(k=1, m_folds=1, n_folds=1, first=1, last=1, c_stride=32, b=0x40, c=0x80)
    base.update(fields)
    return _word(cfg, InstrOp.MATMUL, "matmul", **base)


def _simd_word(cfg, **fields):
    base = dict(count=1, d=0x40)
    base.update(fields)
    return _word(cfg, InstrOp.SIMD, "simd", **base)


@pytest.mark.parametrize("name", ["default", "w28"])
def test_every_error(name):
    cfg = CONFIGS[name]
    bench = Bench(cfg, f"{SEED}:errors:{name}")
    cases = _err_programs(cfg)

    async def main(ctx):
        for case, words, code, pc in cases:
            try:
                model = await bench.run_program(ctx, words, gap=0.0)
                assert model.error == code, f"model: {model.error!r}"
                if code != ErrorCode.NONE:
                    assert model.error_pc == pc
                    # The NOTIFY carries the code, the pc and the instruction's low 32 bits.
                    note = bench.notes[0]
                    assert note["kind"] == 1 and note["code"] == code.value
                    assert note["pc"] == pc % 4096
                    low = 0 if code == ErrorCode.PC_RANGE else words[pc] & 0xFFFF_FFFF
                    assert note["value"] == low
            except AssertionError as e:
                raise AssertionError(f"case {case}: {e}") from e

    _simulate(bench, main)


# -- blocking, timeout, semaphores ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["default", "tiny"])  # unit queues of 4 and of 1 entry
def test_wait_timeout_and_late_signal(name):
    cfg = CONFIGS[name]
    bench = Bench(cfg, f"{SEED}:wait", note_stall=0.0)
    dut = bench.dut
    st = dut.status

    async def main(ctx):
        words = assemble("nop\nwait sem=5 count=3\nnotify code=9\nhalt", cfg)
        # No timeout: WAITING shows what it waits for; the signals arrive late; it goes on.
        await bench.reset(ctx)
        await bench.load(ctx, words)
        bench.clear_logs()
        bench.sems[5] = 2
        await bench.control(ctx, ControlCommand.START, 0)
        await bench.wait_for(ctx, lambda: ctx.get(st.status.state) == TileState.WAITING, 50,
                             "WAITING")
        for _ in range(200):
            await ctx.tick()
        assert TileState(ctx.get(st.status.state)) == TileState.WAITING
        assert (ctx.get(st.wait_sem), ctx.get(st.wait_count), ctx.get(st.pc)) == (5, 3, 1)
        bench.sems[5] += 2
        await bench.wait_for(ctx, lambda: ctx.get(st.status.state) == TileState.HALTED, 100,
                             "HALTED")
        assert bench.sems[5] == 1 and len(bench.log["dma"]) == 1
        assert ctx.get(st.stall_cycles) >= 200

        # TIMEOUT = 40: the same WAIT becomes an error after 40 blocked cycles.
        ctx.set(dut.timeout, 40)
        await bench.reset(ctx)
        await bench.load(ctx, words)
        bench.clear_logs()
        await bench.control(ctx, ControlCommand.START, 0)
        t0 = bench.cycle
        await bench.wait_for(ctx, lambda: bench.notes, 200, "the TIMEOUT notify")
        took = bench.cycle - t0
        assert 40 < took < 50, took
        assert ErrorCode(ctx.get(st.error.code)) == ErrorCode.TIMEOUT
        assert ctx.get(st.error.pc) == 1
        assert bench.notes == [{"kind": 1, "code": ErrorCode.TIMEOUT.value, "pc": 1,
                                "value": words[1] & 0xFFFF_FFFF}]
        # A full queue blocks too, and times out the same way.
        bench.hold["dma"] = True
        await bench.reset(ctx)
        await bench.load(ctx, assemble("loop count=50 {\nsignal sem=1\n}\nhalt", cfg))
        bench.clear_logs()
        await bench.control(ctx, ControlCommand.START, 0)
        await bench.wait_for(ctx, lambda: bench.notes, 200, "the TIMEOUT notify")
        assert ErrorCode(ctx.get(st.error.code)) == ErrorCode.TIMEOUT
        assert bench.log["dma"] == []
        assert ctx.get(st.status.dma_busy)
        bench.hold["dma"] = False
        ctx.set(dut.timeout, 0)
        # ERROR still lets queued work finish: the held queue drains after the error.
        await bench.wait_for(ctx, lambda: bench.idle(ctx), 100, "the queue to drain")
        assert len(bench.log["dma"]) == cfg.tile.unit_queue_depth

    _simulate(bench, main)


def test_sem_overflow_is_an_error_in_any_state():
    cfg = CONFIGS["default"]
    bench = Bench(cfg, f"{SEED}:ovf")
    st = bench.dut.status

    async def main(ctx):
        await bench.reset(ctx)
        bench.clear_logs()
        bench.overflow.append(7)
        await bench.wait_for(ctx, lambda: bench.notes, 20, "the notify")
        assert TileState(ctx.get(st.status.state)) == TileState.ERROR
        assert bench.notes == [{"kind": 1, "code": ErrorCode.SEM_OVERFLOW.value, "pc": 0,
                                "value": 7}]
        # A second error is not reported: the first is kept.
        bench.overflow.append(3)
        for _ in range(10):
            await ctx.tick()
        assert len(bench.notes) == 1 and ctx.get(st.error.code) == ErrorCode.SEM_OVERFLOW
        # While running: issue stops at the current instruction.
        await bench.reset(ctx)
        await bench.load(ctx, assemble("loop count=4000 {\nnop\n}\nhalt", cfg))
        bench.clear_logs()
        await bench.control(ctx, ControlCommand.START, 0)
        for _ in range(30):
            await ctx.tick()
        bench.overflow.append(15)
        await bench.wait_for(ctx, lambda: bench.notes, 20, "the notify")
        assert bench.notes[0]["code"] == ErrorCode.SEM_OVERFLOW.value
        assert bench.notes[0]["value"] == 15 and bench.notes[0]["pc"] == 1
        assert TileState(ctx.get(st.status.state)) == TileState.ERROR

    _simulate(bench, main)


# -- control: START / RESET / IMEM ---------------------------------------------------------------

def test_start_reset_and_imem_protection():
    cfg = CONFIGS["default"]
    bench = Bench(cfg, f"{SEED}:control")
    dut = bench.dut
    st = dut.status

    async def main(ctx):
        prog = assemble("ar.set reg=2 value=0x123\nloop count=30 {\n"
                        "dma.write tile=(1,1) local=ar2 remote=0 rows=1 cols=4\n"
                        "matmul a=0 b=0x40 c=0x80 c_stride=16 k=4\n}\nhalt", cfg)
        await bench.reset(ctx)
        assert ctx.get(dut.imem_writable)
        await bench.load(ctx, prog)
        await bench.control(ctx, ControlCommand.START, 0)
        for _ in range(20):
            await ctx.tick()
        # Running: START is refused, IMEM is not writable (a write would not land).
        assert TileState(ctx.get(st.status.state)) in ACTIVE
        assert not ctx.get(dut.imem_writable)
        assert await bench.control(ctx, ControlCommand.START, 5) == 1
        assert ctx.get(st.pc) in (2, 3)
        # A write of instruction 3 (the matmul) that would turn it into a HALT.
        ctx.set(dut.imem_write.valid, 1)
        ctx.set(dut.imem_write.payload, {"addr": 4 * 3, "data": 0})
        await ctx.tick()
        ctx.set(dut.imem_write.valid, 0)
        # Hold the DMA unit: its queue fills, then RESET flushes it and aborts the units.
        bench.hold["dma"] = True
        for _ in range(40):
            await ctx.tick()
        assert ctx.get(dut.dma_cmd.valid)
        taken = len(bench.log["dma"])
        ctx.set(dut.control.valid, 1)
        ctx.set(dut.control.payload, {"command": ControlCommand.RESET, "pc": 0})
        _, _, abort, dvalid = await ctx.tick().sample(dut.abort, dut.dma_cmd.valid)
        ctx.set(dut.control.valid, 0)
        assert abort and not dvalid
        bench.sems = [0] * SEMAPHORES
        bench.hold["dma"] = False
        for _ in range(20):
            await ctx.tick()
        assert len(bench.log["dma"]) == taken, "a flushed command came out after RESET"
        assert TileState(ctx.get(st.status.state)) == TileState.IDLE
        assert [ctx.get(st.ar[i]) for i in range(3)] == [0, 0, 0]
        assert ctx.get(st.cycles) == bench.counts["cycles"] == 0
        assert not ctx.get(dut.matmul_cmd.valid)
        # The program is intact (the write while running was dropped): it runs to HALT.
        bench.clear_logs()
        model = controller_run(prog, cfg)
        await bench.control(ctx, ControlCommand.START, 0)
        await bench.wait_for(ctx, lambda: ctx.get(st.status.state) == TileState.HALTED, 20000,
                             "HALTED")
        bench.check(ctx, model)
        cycles = ctx.get(st.cycles)
        # START from HALTED keeps the counters; pc and ar restart.
        await bench.control(ctx, ControlCommand.START, 4)   # pc 4 is the halt
        await bench.wait_for(ctx, lambda: ctx.get(st.status.state) == TileState.HALTED, 50,
                             "HALTED")
        assert ctx.get(st.pc) == 4 and ctx.get(st.cycles) > cycles
        assert [ctx.get(st.ar[i]) for i in range(3)] == [0, 0, 0]

    _simulate(bench, main)


# -- ordering and rate ----------------------------------------------------------------------------

def test_fence_halt_and_overlap():
    cfg = CONFIGS["default"]
    bench = Bench(cfg, f"{SEED}:fence", stall=0.0)

    async def main(ctx):
        bench.busy_for.update(dma=30, matmul=60, simd=10)
        words = assemble("""
            dma.write tile=(1,0) local=0 remote=0 rows=1 cols=16
            matmul a=0 b=0x40 c=0x80 c_stride=16 k=16
            fence dma
            simd.relu x=0 d=0x100 count=4
            fence
            notify code=1
            halt""", cfg)
        model = await bench.run_program(ctx, words)
        assert model.state == TileState.HALTED
        ev = {(u, kind): [c for c, uu, k in bench.events if (uu, k) == (u, kind)]
              for u in UNITS for kind in ("take", "done")}
        # DMA and MATMUL overlap (double buffering).
        assert ev["matmul", "take"][0] < ev["dma", "done"][0]
        # fence dma: the SIMD command waits for the DMA, not for the matrix unit.
        assert ev["simd", "take"][0] > ev["dma", "done"][0]
        assert ev["simd", "take"][0] < ev["matmul", "done"][0]
        # bare fence: the NOTIFY waits for everything.
        assert ev["dma", "take"][1] > max(ev["matmul", "done"][0], ev["simd", "done"][0])
        # HALTED only once everything is idle.
        halted = bench.states.index(TileState.HALTED)
        assert halted > ev["dma", "done"][1]

    _simulate(bench, main)


def test_issue_rate_one_per_two_cycles():
    cfg = CONFIGS["default"]
    bench = Bench(cfg, f"{SEED}:rate", stall=0.0, max_busy=0)
    st = bench.dut.status

    async def main(ctx):
        n = 40
        text = "nop\nar.add reg=1 value=1\n" * (n // 2) + "loop count=10 {\nnop\nnop\n}\nhalt"
        await bench.run_program(ctx, assemble(text, cfg))
        # n straight instructions, the LOOP, 20 body instructions, the HALT: each decoded in
        # one cycle, issued in the next (taken loop branches included).
        assert ctx.get(st.cycles) == 2 * (n + 1 + 20 + 1)
        assert ctx.get(st.ar[0]) == n // 2
        # Range-checked instructions: a load cycle, one per bit of the widest row / fold count
        # factor, the decision: 2 cycles for a one-row DMA, 4 for a MATMUL (R - 1 = 3: 2 bits).
        await bench.run_program(ctx, assemble(
            "dma.write tile=(0,0) local=0 remote=0 rows=1 cols=4\n" * 4
            + "matmul a=0 b=0x40 c=0x80 c_stride=16 k=4\n" * 4 + "halt", cfg))
        assert 4 * 2 + 4 * 4 + 1 <= ctx.get(st.cycles) <= 4 * 2 + 4 * 4 + 3

    _simulate(bench, main)


def test_constructor_rejects_bad_queue_depth():
    with pytest.raises(ValueError, match=r"queue depth must be a positive integer, not 0"):
        Controller(CONFIGS["default"], queue_depth=0)
