"""The tile controller: instruction memory, in-order issue, checks, unit queues, status.

::

    imem_write ──► IMEM (imem_depth x instr_words(cfg) words, lib.memory, sync read)
                     │ instruction at pc
                     ▼
                 ┌────────────────────────────┐    ┌─ DMA queue ───► dma_cmd
     ar1..ar3 ──►│ issue: resolve arN+offset, │───►├─ matrix queue ► matmul_cmd
  loop stack ───►│ check (ErrorCode), execute │    └─ SIMD queue ──► simd_cmd
  sem_enough ──►│ control instructions       │───► sem_dec (WAIT)
                 └────────────────────────────┘───► error_notify (NOTIFY kind ERROR)

**Issue.** Two stages. The IMEM's synchronous read port is addressed from registers only: in the
cycle an instruction issues it reads the one that follows (``pc + 1``, or the start of a loop whose
end is ``pc``). In the next cycle that instruction is decoded into the instruction register: its
static checks (opcode, operands, mesh bounds, MATMUL chain, loop nest) and the range check's
operands are registered with it. The issue decision works on those registers, so neither the IMEM
output nor its address is on the decision's path; an instruction takes at least two cycles. Control
instructions (NOP, WAIT, FENCE, LOOP, AR, HALT) and SIGNAL / NOTIFY / SIMD_CFG are decided in the
cycle after they are decoded: one instruction every two cycles. DMA_WRITE, DMA_READ, MATMUL and
SIMD first have their SRAM blocks range-checked (from the decode cycle on): the extents
``(rows - 1) * stride + cols`` and friends are products, computed by a shift-and-add loop over
the smaller factor (a load cycle, one cycle per bit of that factor, the decision: 2 cycles for a
one-row DMA, 4 for a default-preset MATMUL, whose C block has ``R - 1 = 3``), so the check costs
adders, not multipliers (a UP5K's DSPs all go to the matrix units), and overlaps the units' work
on earlier commands.

**Checks, in priority order** (the first that applies is the error): PC_RANGE (pc ran past the
IMEM), TIMEOUT (issue already blocked for ``timeout`` cycles), BAD_OPCODE, BAD_OPERAND, OFF_MESH,
SRAM_RANGE, MATMUL_CHAIN, LOOP_NEST. An error stops issue (state ERROR, the ERROR register keeps
the first error and its pc) and sends one NOTIFY of kind ERROR on ``error_notify``; queued work
finishes. A SEM_OVERFLOW event from the semaphores is an error too, in any state (first error
kept). Only RESET leaves ERROR.

**Blocking.** WAIT (WAITING state) until the semaphore reaches the count, then ``sem_dec``;
FENCE until the selected units are idle, HALT until all are, and a full unit queue (all BLOCKED).
A unit counts as busy while its queue holds a command, while it reports ``busy``, and in the
cycle after it took a command (so a unit whose ``busy`` is a register set on taking the command
is never seen idle in between).

**PC.** ``status.pc`` is the instruction being issued: after HALT it points at the HALT, in ERROR
at the failing instruction; for PC_RANGE it is ``imem_depth`` (modulo 2**PC_BITS).
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, ResetInserter, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..config import bits_for
from ..layouts import (
    ADDR_BITS,
    ADDR_REGS,
    INSTR_BITS,
    LOOP_DEPTH,
    ArMode,
    ControlCommand,
    ControlPayload,
    ElemFormat,
    ErrorCode,
    ErrorReg,
    InstrArgs,
    InstrOp,
    InstrWord,
    MatmulInstr,
    NotifyKind,
    NotifyPayload,
    SimdOp,
    TileState,
    YMode,
    instr_words,
    matmul_operand_words,
    packed_words,
    simd_vector_words,
)
from ..noc.fifo import Fifo, unchecked_sync_read
from .dma import dma_command_layout
from .ports import (
    COUNTER_NAMES,
    controller_status_layout,
    imem_write_layout,
    sem_dec_layout,
    sem_overflow_layout,
    unit_command_layout,
)

__all__ = ["Controller"]

_MUL_BITS = 13   # widest multiplier of an extent: m_folds * R - 1 <= 255 * 32 - 1
_LANES = 3       # SRAM blocks per instruction: DMA local/remote, MATMUL a/b/c, SIMD x/y/d


def _mul_const(value, constant):
    """``value * constant`` for a Python int ``constant`` as shifts and adds (a constant product
    must not take a DSP block)."""
    terms = [value.as_unsigned() << i for i in range(constant.bit_length()) if constant >> i & 1]
    if not terms:
        return Const(0, 1)
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


class Controller(wiring.Component):
    """Fetches, checks and issues a tile's program (docs/tile-design.md §5-7).

    Parameters
    ----------
    cfg : MeshConfig
    queue_depth : int or None
        Entries of each unit queue (DMA, matrix, SIMD); at least 1. None (the default) takes
        ``cfg.tile.unit_queue_depth``. Results never depend on it.

    Members
    -------
    control : ``In(stream.Signature(ControlPayload))``
        START / RESET from a CONTROL packet or a CONTROL CSR write; always ready. START is taken
        in IDLE and HALTED only, otherwise refused.
    control_refused : ``Out(1)``
        Pulse: a START was refused (the NI counts it in RX_ERRORS).
    imem_write : ``In(stream.Signature(imem_write_layout(cfg)))``
        IMEM-space word writes; always ready, written only while ``imem_writable``.
    imem_writable : ``Out(1)``
        The controller is IDLE, HALTED or in ERROR (the NI drops and counts other writes).
    status : ``Out(controller_status_layout(cfg))``
        State, busy flags, pc, ERROR, WAIT_SEM / WAIT_COUNT, AR1..3 and the cycle counters.
    timeout : ``In(32)``
        The TIMEOUT CSR: blocked cycles before ErrorCode.TIMEOUT; 0 = never.
    error_notify : ``Out(stream.Signature(NotifyPayload))``
        One NOTIFY of kind ERROR per error, for the NI to send to the host.
    sem_enough : ``In(1)``
        The semaphore of ``sem_dec.payload`` holds at least its ``count`` (the semaphores
        compare, combinationally: ``sem_dec.payload`` is the WAIT in the instruction register
        whether or not ``sem_dec.valid``).
    sem_dec : ``Out(stream.Signature(sem_dec_layout()))``
        WAIT's decrement, requested only when the value suffices.
    sem_overflow : ``In(stream.Signature(sem_overflow_layout()))``
        A saturated semaphore increment: ErrorCode.SEM_OVERFLOW.
    dma_cmd : ``Out(stream.Signature(dma_command_layout()))``
        DMA_WRITE, DMA_READ, SIGNAL, NOTIFY, address registers resolved, with their pc.
    matmul_cmd : ``Out(stream.Signature(MatmulInstr))``
        MATMUL operands, address registers resolved.
    simd_cmd : ``Out(stream.Signature(unit_command_layout()))``
        SIMD and SIMD_CFG, address registers resolved.
    dma_busy, matmul_busy, simd_busy : ``In(1)``
        The units are executing a command.
    matmul_step : ``In(1)``
        Pulse per k step done by the matrix engine (MATMUL_STEPS).
    start : ``Out(1)``
        Pulse: a START was taken (units reset their per-run state: SIMD scale / zero point).
    abort : ``Out(1)``
        Pulse: RESET; the queues are flushed in the same cycle and offer nothing.
    """

    def __init__(self, cfg, *, queue_depth=None):
        if queue_depth is None:
            queue_depth = cfg.tile.unit_queue_depth
        if not isinstance(queue_depth, int) or isinstance(queue_depth, bool) or queue_depth < 1:
            self._MustUse__used = True
            raise ValueError(f"controller queue depth must be a positive integer, "
                             f"not {queue_depth!r}")
        self._cfg = cfg
        self._queue_depth = queue_depth
        super().__init__({
            "control": In(stream.Signature(ControlPayload)),
            "control_refused": Out(1),
            "imem_write": In(stream.Signature(imem_write_layout(cfg))),
            "imem_writable": Out(1),
            "status": Out(controller_status_layout(cfg)),
            "timeout": In(32),
            "error_notify": Out(stream.Signature(NotifyPayload)),
            "sem_enough": In(1),
            "sem_dec": Out(stream.Signature(sem_dec_layout())),
            "sem_overflow": In(stream.Signature(sem_overflow_layout())),
            "dma_cmd": Out(stream.Signature(dma_command_layout())),
            "matmul_cmd": Out(stream.Signature(MatmulInstr)),
            "simd_cmd": Out(stream.Signature(unit_command_layout())),
            "dma_busy": In(1),
            "matmul_busy": In(1),
            "simd_busy": In(1),
            "matmul_step": In(1),
            "start": Out(1),
            "abort": Out(1),
        })

    @property
    def cfg(self):
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        t = cfg.tile
        w = cfg.word_bits
        n = instr_words(cfg)
        depth = t.imem_depth
        pc_bits = bits_for(depth)  # holds imem_depth itself: the PC_RANGE error
        iaddr_bits = (depth - 1).bit_length()

        # -- control commands -------------------------------------------------------------------
        state = Signal(TileState)
        active = Signal()
        m.d.comb += active.eq((state == TileState.RUNNING) | (state == TileState.WAITING)
                              | (state == TileState.BLOCKED))
        ctl = self.control.payload
        reset_cmd = Signal()
        start_cmd = Signal()
        m.d.comb += [
            self.control.ready.eq(1),
            reset_cmd.eq(self.control.valid & (ctl.command == ControlCommand.RESET)),
            start_cmd.eq(self.control.valid & (ctl.command == ControlCommand.START)
                         & ((state == TileState.IDLE) | (state == TileState.HALTED))),
            self.control_refused.eq(self.control.valid & (ctl.command == ControlCommand.START)
                                    & ~start_cmd),
            self.start.eq(start_cmd),
            self.abort.eq(reset_cmd),
        ]

        # -- instruction memory -----------------------------------------------------------------
        # Written only while no program runs, never in the cycle of a START (one NI packet at a
        # time), so a read never meets a write of its address (``no_rw_check``: synthesis adds
        # no collision logic on the read path).
        m.submodules.imem = imem = Memory(shape=unsigned(n * w), depth=depth, init=[],
                                          attrs={"no_rw_check": 1})
        wport = imem.write_port(granularity=w)
        writable = Signal()
        m.d.comb += writable.eq((state == TileState.IDLE) | (state == TileState.HALTED)
                                | (state == TileState.ERROR))
        iw = self.imem_write.payload
        if n & (n - 1) == 0:
            index, part = iw.addr >> (n.bit_length() - 1), iw.addr & (n - 1)
        else:
            index, part = iw.addr // n, iw.addr % n
        m.d.comb += [
            self.imem_write.ready.eq(1),
            self.imem_writable.eq(writable),
            wport.addr.eq(index),
            wport.data.eq(Cat(*[iw.data] * n)),
            wport.en.eq(Mux(self.imem_write.valid & writable, Const(1, n) << part, 0)),
        ]

        pc = Signal(pc_bits)
        pc_next = Signal(pc_bits)
        pc_seq = Signal(pc_bits)   # where pc goes if its instruction issues (set with the loops)
        decoding = Signal()        # the IMEM output is the instruction at pc
        ir_valid = Signal()        # the instruction register holds the instruction at pc
        m.d.comb += pc_next.eq(pc)
        m.d.sync += pc.eq(pc_next)
        # Decode stage: the IMEM output (``f_``: fetched). Issue stage: the instruction register.
        imem_out = unchecked_sync_read(m, imem, Mux(start_cmd, ctl.pc, pc_seq)[:iaddr_bits],
                                       name="imem_out")
        fetched = InstrWord(imem_out[:INSTR_BITS])
        f_op, f_args = fetched.op, fetched.args
        ir = Signal(InstrWord)
        with m.If(decoding):
            m.d.sync += ir.eq(fetched)
        op = ir.op
        args = ir.args

        # -- registers ------------------------------------------------------------------------
        ar = [Const(0, ADDR_BITS)] + [Signal(ADDR_BITS, name=f"ar{i}")
                                      for i in range(1, ADDR_REGS)]
        ar_at = Array(ar)
        loop_start = [Signal(pc_bits, name=f"loop{i}_start") for i in range(LOOP_DEPTH)]
        loop_end = [Signal(pc_bits, name=f"loop{i}_end") for i in range(LOOP_DEPTH)]
        loop_left = [Signal(16, name=f"loop{i}_left") for i in range(LOOP_DEPTH)]
        loop_depth = Signal(range(LOOP_DEPTH + 1))
        mm_open = Signal()          # a MATMUL with last=0 left an accumulation open
        error = Signal(ErrorReg)
        wait_sem = Signal.like(self.status.wait_sem)
        wait_count = Signal.like(self.status.wait_count)
        blocked_for = Signal(32)    # consecutive cycles issue has been blocked

        # -- unit queues ------------------------------------------------------------------------
        queues = {}
        busy = {}
        for name, shape, port, unit_busy in (
                ("dma", dma_command_layout(), self.dma_cmd, self.dma_busy),
                ("matmul", MatmulInstr, self.matmul_cmd, self.matmul_busy),
                ("simd", unit_command_layout(), self.simd_cmd, self.simd_busy)):
            q = ResetInserter(reset_cmd)(Fifo(shape, self._queue_depth))
            m.submodules[f"{name}_queue"] = q
            took = Signal(name=f"{name}_took")
            m.d.sync += took.eq(port.valid & port.ready)
            m.d.comb += [
                port.valid.eq(q.r.valid & ~reset_cmd),
                port.payload.eq(q.r.payload),
                q.r.ready.eq(port.ready & ~reset_cmd),
            ]
            busy[name] = Signal(name=f"{name}_busy_any")
            m.d.comb += busy[name].eq((q.level != 0) | unit_busy | took)
            queues[name] = q
        all_idle = Signal()
        m.d.comb += all_idle.eq(~busy["dma"] & ~busy["matmul"] & ~busy["simd"])

        # -- operand decode ---------------------------------------------------------------------
        dma, mm, simd = f_args.dma, f_args.matmul, f_args.simd
        f_needs_range = Signal()  # instructions whose SRAM blocks are range-checked
        m.d.comb += f_needs_range.eq((f_op == InstrOp.DMA_WRITE) | (f_op == InstrOp.DMA_READ)
                                     | (f_op == InstrOp.MATMUL) | (f_op == InstrOp.SIMD))
        needs_range = Signal()    # ... the one in the instruction register
        with m.If(decoding):
            m.d.sync += needs_range.eq(f_needs_range)

        # Per lane: block start (address register added), the product's factors and the addend:
        # the block covers [start, start + mul_a * mul_b + add); it must end at sram_words.
        mw = matmul_operand_words(cfg)
        vw = {f: simd_vector_words(cfg, f) for f in ElemFormat}
        ext_bits = ADDR_BITS + 1
        # The block's offset and address register are chosen per lane first, then added: one
        # adder and one register multiplexer per lane, not one per operand of every opcode.
        lane_off = [Signal(ADDR_BITS, name=f"lane{i}_off") for i in range(_LANES)]
        lane_reg = [Signal(range(ADDR_REGS), name=f"lane{i}_reg") for i in range(_LANES)]
        lane_start = [Signal(ADDR_BITS + 1, name=f"lane{i}_start") for i in range(_LANES)]
        lane_a = [Signal(_MUL_BITS, name=f"lane{i}_a") for i in range(_LANES)]
        lane_b = [Signal(ADDR_BITS, name=f"lane{i}_b") for i in range(_LANES)]
        lane_add = [Signal(ext_bits, name=f"lane{i}_add") for i in range(_LANES)]
        lane_on = [Signal(name=f"lane{i}_on") for i in range(_LANES)]

        def fmt_words(fmt, count=None):
            word_counts = {f: (_mul_const(count, vw[f]) if count is not None else vw[f])
                           for f in ElemFormat}
            return Mux(fmt == ElemFormat.DATA, word_counts[ElemFormat.DATA],
                       word_counts[ElemFormat.ACC])

        with m.Switch(f_op):
            with m.Case(InstrOp.DMA_WRITE, InstrOp.DMA_READ):
                for i, side in enumerate(("local", "remote")):
                    m.d.comb += [
                        lane_off[i].eq(dma[side]), lane_reg[i].eq(dma[f"{side}_ar"]),
                        lane_a[i].eq(dma.rows - 1),
                        lane_b[i].eq(dma[f"{side}_stride"]),
                        lane_add[i].eq(dma.cols),
                        lane_on[i].eq(1),
                    ]
            with m.Case(InstrOp.MATMUL):
                m.d.comb += [
                    lane_off[0].eq(mm.a), lane_reg[0].eq(mm.a_ar),
                    lane_a[0].eq(mm.m_folds),
                    lane_b[0].eq(_mul_const(mm.k, mw["a"])),
                    lane_on[0].eq(1),
                    lane_off[1].eq(mm.b), lane_reg[1].eq(mm.b_ar),
                    lane_a[1].eq(mm.n_folds),
                    lane_b[1].eq(_mul_const(mm.k, mw["b"])),
                    lane_on[1].eq(1),
                    lane_off[2].eq(mm.c), lane_reg[2].eq(mm.c_ar),
                    lane_a[2].eq(_mul_const(mm.m_folds, t.pe_rows) - 1),
                    lane_b[2].eq(mm.c_stride),
                    lane_add[2].eq(_mul_const(mm.n_folds, mw["c"])),
                    lane_on[2].eq(mm.last),  # C is only written with last
                ]
            with m.Case(InstrOp.SIMD):
                scalar_words = Mux(simd.yfmt == ElemFormat.DATA,
                                   packed_words(1, t.data_bits, w), packed_words(1, t.acc_bits, w))
                y_words = Signal(ext_bits)
                with m.Switch(simd.ymode):
                    with m.Case(YMode.VECTOR):
                        m.d.comb += y_words.eq(fmt_words(simd.yfmt, simd.count))
                    with m.Case(YMode.REPEAT):
                        m.d.comb += y_words.eq(fmt_words(simd.yfmt))
                    with m.Case(YMode.SCALAR):
                        m.d.comb += y_words.eq(scalar_words)
                m.d.comb += [
                    lane_off[0].eq(simd.x), lane_reg[0].eq(simd.x_ar),
                    lane_add[0].eq(fmt_words(simd.xfmt, simd.count)),
                    lane_on[0].eq(1),
                    lane_off[1].eq(simd.y), lane_reg[1].eq(simd.y_ar),
                    lane_add[1].eq(y_words),
                    lane_on[1].eq(simd.ymode != YMode.NONE),
                    lane_off[2].eq(simd.d), lane_reg[2].eq(simd.d_ar),
                    lane_add[2].eq(fmt_words(simd.dfmt, simd.count)),
                    lane_on[2].eq(1),
                ]

        for i in range(_LANES):
            m.d.comb += lane_start[i].eq(lane_off[i] + ar_at[lane_reg[i]])

        # The shift-and-add range check: load, then one factor bit per cycle. The end and the
        # shifted factor keep only the bits that can still be in range (``end_bits``, more than
        # sram_words needs); anything above sets a sticky ``big`` flag, which is out of range.
        end_bits = bits_for(t.sram_words) + 1
        chk_loaded = Signal()
        chk_end = [Signal(end_bits, name=f"chk{i}_end") for i in range(_LANES)]
        chk_big = [Signal(name=f"chk{i}_big") for i in range(_LANES)]
        chk_a = [Signal(_MUL_BITS, name=f"chk{i}_a") for i in range(_LANES)]
        chk_b = [Signal(end_bits, name=f"chk{i}_b") for i in range(_LANES)]
        chk_b_big = [Signal(name=f"chk{i}_b_big") for i in range(_LANES)]
        chk_on = [Signal(name=f"chk{i}_on") for i in range(_LANES)]
        chk_start = [Signal(ADDR_BITS, name=f"chk{i}_start") for i in range(_LANES)]
        chk_done = Signal()
        m.d.comb += chk_done.eq(chk_loaded & (Cat(*chk_a) == 0))
        range_bad = Signal()
        m.d.comb += range_bad.eq(Cat(*[chk_on[i] & (chk_big[i] | (chk_end[i] > t.sram_words))
                                       for i in range(_LANES)]).any())
        with m.If(decoding & f_needs_range):
            m.d.sync += chk_loaded.eq(1)
            for i in range(_LANES):
                first_end = Signal(ext_bits + 1, name=f"lane{i}_end")
                m.d.comb += first_end.eq(lane_start[i] + lane_add[i])
                m.d.sync += [
                    chk_end[i].eq(first_end[:end_bits]),
                    chk_big[i].eq(first_end[end_bits:].any()),
                    chk_a[i].eq(lane_a[i]),
                    chk_b[i].eq(lane_b[i][:end_bits]),
                    chk_b_big[i].eq(lane_b[i][end_bits:].any()),
                    chk_on[i].eq(lane_on[i]),
                    chk_start[i].eq(lane_start[i]),
                ]
        with m.Elif(chk_loaded):
            for i in range(_LANES):
                with m.If(chk_a[i][0]):
                    total = Signal(end_bits + 1, name=f"chk{i}_sum")
                    m.d.comb += total.eq(chk_end[i] + chk_b[i])
                    m.d.sync += [chk_end[i].eq(total[:end_bits]),
                                 chk_big[i].eq(chk_big[i] | chk_b_big[i] | total[end_bits])]
                m.d.sync += [chk_a[i].eq(chk_a[i] >> 1), chk_b[i].eq(chk_b[i] << 1),
                             chk_b_big[i].eq(chk_b_big[i] | chk_b[i][-1])]

        # -- issue decision ---------------------------------------------------------------------
        decide = Signal()     # the instruction at pc is judged this cycle
        m.d.comb += decide.eq(active & ir_valid & (~needs_range | chk_done))
        err = Signal(ErrorCode)
        advance = Signal()    # it issued: pc moves on
        waiting = Signal()    # WAIT not satisfied
        blocked = Signal()    # FENCE / HALT drain / full queue
        halt_done = Signal()
        loop_push = Signal()
        push = {name: Signal(name=f"push_{name}") for name in queues}

        timeout_hit = Signal()
        m.d.comb += timeout_hit.eq((self.timeout != 0) & (blocked_for >= self.timeout))
        # Static checks, decided on the fetched instruction and registered with it: nothing
        # they read (mm_open, the loop stack, pc) changes before that instruction issues.
        bad_operand = Signal()
        off_mesh = Signal()
        loop_nest = Signal()
        chain_bad = Signal()

        def off(x, y):
            return (x >= cfg.cols) | (y >= cfg.rows)

        loop_body_end = Signal(pc_bits + 12)
        m.d.comb += loop_body_end.eq(pc + f_args.loop.len)
        top_end = Array(loop_end)[loop_depth - 1]
        with m.Switch(f_op):
            with m.Case(InstrOp.DMA_WRITE, InstrOp.DMA_READ):
                m.d.comb += [
                    bad_operand.eq((dma.rows == 0) | (dma.cols == 0)
                                   | ((f_op == InstrOp.DMA_READ) & dma.host)),
                    off_mesh.eq(~dma.host & off(dma.x, dma.y)),
                ]
            with m.Case(InstrOp.MATMUL):
                m.d.comb += [
                    bad_operand.eq((mm.k == 0) | (mm.m_folds == 0) | (mm.n_folds == 0)
                                   | (((mm.m_folds > 1) | (mm.n_folds > 1))
                                      & ~(mm.first & mm.last))),
                    chain_bad.eq(mm.first == mm_open),
                ]
            with m.Case(InstrOp.SIMD):
                m.d.comb += bad_operand.eq((simd.count == 0)
                                           | (simd.func.as_value() > max(SimdOp.valid_values())))
            with m.Case(InstrOp.SIGNAL):
                m.d.comb += off_mesh.eq(~f_args.signal.local
                                        & off(f_args.signal.x, f_args.signal.y))
            with m.Case(InstrOp.LOOP):
                m.d.comb += [
                    bad_operand.eq((f_args.loop.count == 0) | (f_args.loop.len == 0)),
                    loop_nest.eq((loop_depth == LOOP_DEPTH) | (loop_body_end >= depth)
                                 | ((loop_depth != 0) & (loop_body_end > top_end))),
                ]
            with m.Case(InstrOp.AR):
                m.d.comb += bad_operand.eq(f_args.ar.reg == 0)
        bad_opcode_r, bad_operand_r, off_mesh_r = Signal(), Signal(), Signal()
        chain_bad_r, loop_nest_r = Signal(), Signal()
        loop_body_end_r = Signal(pc_bits)
        with m.If(decoding):
            m.d.sync += [
                bad_opcode_r.eq(fetched.as_value()[:4] > max(InstrOp.valid_values())),
                bad_operand_r.eq(bad_operand),
                off_mesh_r.eq(off_mesh),
                chain_bad_r.eq((f_op == InstrOp.MATMUL) & chain_bad),
                loop_nest_r.eq((f_op == InstrOp.LOOP) & loop_nest),
                loop_body_end_r.eq(loop_body_end),
            ]

        with m.If(decide):
            with m.If(pc == depth):
                m.d.comb += err.eq(ErrorCode.PC_RANGE)
            with m.Elif(timeout_hit):
                m.d.comb += err.eq(ErrorCode.TIMEOUT)
            with m.Elif(bad_opcode_r):
                m.d.comb += err.eq(ErrorCode.BAD_OPCODE)
            with m.Elif(bad_operand_r):
                m.d.comb += err.eq(ErrorCode.BAD_OPERAND)
            with m.Elif(off_mesh_r):
                m.d.comb += err.eq(ErrorCode.OFF_MESH)
            with m.Elif(needs_range & range_bad):
                m.d.comb += err.eq(ErrorCode.SRAM_RANGE)
            with m.Elif(chain_bad_r):
                m.d.comb += err.eq(ErrorCode.MATMUL_CHAIN)
            with m.Elif(loop_nest_r):
                m.d.comb += err.eq(ErrorCode.LOOP_NEST)
            with m.Else():
                with m.Switch(op):
                    with m.Case(InstrOp.HALT):
                        m.d.comb += [halt_done.eq(all_idle), blocked.eq(~all_idle)]
                    with m.Case(InstrOp.NOP, InstrOp.AR):
                        m.d.comb += advance.eq(1)
                    with m.Case(InstrOp.LOOP):
                        m.d.comb += [advance.eq(1), loop_push.eq(1)]
                    with m.Case(InstrOp.WAIT):
                        ok = Signal()
                        m.d.comb += [
                            ok.eq(self.sem_enough),
                            self.sem_dec.valid.eq(ok),
                            advance.eq(ok & self.sem_dec.ready),
                            waiting.eq(~ok),
                            blocked.eq(ok & ~self.sem_dec.ready),
                        ]
                    with m.Case(InstrOp.FENCE):
                        f = args.fence
                        ok = Signal()
                        m.d.comb += [
                            ok.eq(~(f.dma & busy["dma"]) & ~(f.matmul & busy["matmul"])
                                  & ~(f.simd & busy["simd"])),
                            advance.eq(ok),
                            blocked.eq(~ok),
                        ]
                    for ops, name in (((InstrOp.DMA_WRITE, InstrOp.DMA_READ, InstrOp.SIGNAL,
                                        InstrOp.NOTIFY), "dma"),
                                      ((InstrOp.MATMUL,), "matmul"),
                                      ((InstrOp.SIMD, InstrOp.SIMD_CFG), "simd")):
                        with m.Case(*ops):
                            ready = queues[name].w.ready
                            m.d.comb += [push[name].eq(1), advance.eq(ready),
                                         blocked.eq(~ready)]
        m.d.comb += [
            self.sem_dec.payload.sem.eq(args.wait.sem),
            self.sem_dec.payload.count.eq(args.wait.count),
        ]

        # -- commands into the queues: operands with address registers resolved ------------------
        cmd_args = Signal(InstrArgs)
        m.d.comb += cmd_args.eq(args)
        with m.Switch(op):
            with m.Case(InstrOp.DMA_WRITE, InstrOp.DMA_READ):
                m.d.comb += [cmd_args.dma.local.eq(chk_start[0]), cmd_args.dma.local_ar.eq(0),
                             cmd_args.dma.remote.eq(chk_start[1]), cmd_args.dma.remote_ar.eq(0)]
            with m.Case(InstrOp.MATMUL):
                m.d.comb += [cmd_args.matmul.a.eq(chk_start[0]), cmd_args.matmul.a_ar.eq(0),
                             cmd_args.matmul.b.eq(chk_start[1]), cmd_args.matmul.b_ar.eq(0),
                             cmd_args.matmul.c.eq(chk_start[2]), cmd_args.matmul.c_ar.eq(0)]
            with m.Case(InstrOp.SIMD):
                m.d.comb += [cmd_args.simd.x.eq(chk_start[0]), cmd_args.simd.x_ar.eq(0),
                             cmd_args.simd.y.eq(chk_start[1]), cmd_args.simd.y_ar.eq(0),
                             cmd_args.simd.d.eq(chk_start[2]), cmd_args.simd.d_ar.eq(0)]
        for name, q in queues.items():
            m.d.comb += q.w.valid.eq(push[name])
        m.d.comb += [
            queues["dma"].w.payload.op.eq(op),
            queues["dma"].w.payload.args.eq(cmd_args),
            queues["dma"].w.payload.pc.eq(pc),
            queues["matmul"].w.payload.eq(cmd_args.matmul),
            queues["simd"].w.payload.op.eq(op),
            queues["simd"].w.payload.args.eq(cmd_args),
        ]

        # -- pc, loops, address registers -------------------------------------------------------
        jump = Signal()
        target = Signal(pc_bits)
        new_depth = Signal.like(loop_depth)
        m.d.comb += new_depth.eq(loop_depth)
        going = Const(1)
        for lvl in reversed(range(LOOP_DEPTH)):
            at_end = Signal(name=f"loop{lvl}_at_end")
            here = Signal(name=f"loop{lvl}_here")
            m.d.comb += [at_end.eq((loop_depth > lvl) & (loop_end[lvl] == pc)),
                         here.eq(going & at_end)]
            with m.If(here):
                with m.If(loop_left[lvl] != 0):
                    m.d.comb += [jump.eq(1), target.eq(loop_start[lvl]),
                                 new_depth.eq(lvl + 1)]
                    with m.If(advance & ~loop_push):
                        m.d.sync += loop_left[lvl].eq(loop_left[lvl] - 1)
                with m.Else():
                    m.d.comb += new_depth.eq(lvl)
            # An enclosing loop is looked at only if every loop inside it ended here.
            nxt = Signal(name=f"loop{lvl}_pass")
            m.d.comb += nxt.eq(going & ((loop_depth <= lvl) | (at_end & (loop_left[lvl] == 0))))
            going = nxt

        m.d.comb += pc_seq.eq(Mux(jump, target, pc + 1))
        # The instruction after one that issues (or at a START's pc) is decoded next cycle.
        m.d.sync += decoding.eq((advance | start_cmd) & ~reset_cmd)
        with m.If(advance | start_cmd | reset_cmd):
            m.d.sync += ir_valid.eq(0)
        with m.Elif(decoding):
            m.d.sync += ir_valid.eq(1)

        with m.If(advance):
            # (after a LOOP, pc_seq is pc + 1: a LOOP at the end of its enclosing loop is
            # LOOP_NEST)
            m.d.comb += pc_next.eq(pc_seq)
            with m.If(loop_push):
                m.d.sync += loop_depth.eq(loop_depth + 1)
                for lvl in range(LOOP_DEPTH):
                    with m.If(loop_depth == lvl):
                        m.d.sync += [loop_start[lvl].eq(pc + 1),
                                     loop_end[lvl].eq(loop_body_end_r),
                                     loop_left[lvl].eq(args.loop.count - 1)]
            with m.Else():
                m.d.sync += loop_depth.eq(new_depth)
            with m.If(op == InstrOp.AR):
                for i in range(1, ADDR_REGS):
                    with m.If(args.ar.reg == i):
                        m.d.sync += ar[i].eq(Mux(args.ar.mode == ArMode.ADD,
                                                 ar[i] + args.ar.value, args.ar.value))
            with m.If(op == InstrOp.MATMUL):
                m.d.sync += mm_open.eq(~args.matmul.last)

        with m.If(advance | ~active):
            m.d.sync += chk_loaded.eq(0)
        with m.If(advance | ~active):
            m.d.sync += blocked_for.eq(0)
        with m.Elif((waiting | blocked) & (blocked_for != 0xFFFF_FFFF)):
            m.d.sync += blocked_for.eq(blocked_for + 1)
        with m.If(decide & (op == InstrOp.WAIT)):
            m.d.sync += [wait_sem.eq(args.wait.sem), wait_count.eq(args.wait.count)]

        # -- errors ------------------------------------------------------------------------------
        note_valid = Signal()
        note = Signal(NotifyPayload)
        m.d.comb += [self.error_notify.valid.eq(note_valid), self.error_notify.payload.eq(note)]
        with m.If(self.error_notify.ready):
            m.d.sync += note_valid.eq(0)

        # A semaphore overflow waits one cycle if a control command is being taken.
        m.d.comb += self.sem_overflow.ready.eq(~self.control.valid)
        overflow = Signal()
        m.d.comb += overflow.eq(self.sem_overflow.valid & self.sem_overflow.ready)
        raise_err = Signal()
        err_code = Signal(ErrorCode)
        err_value = Signal(32)
        with m.If(err != ErrorCode.NONE):
            m.d.comb += [raise_err.eq(1), err_code.eq(err),
                         err_value.eq(Mux(err == ErrorCode.PC_RANGE, 0,
                                          ir.as_value()[:32]))]
        with m.Elif(overflow & (error.code == ErrorCode.NONE)):
            m.d.comb += [raise_err.eq(1), err_code.eq(ErrorCode.SEM_OVERFLOW),
                         err_value.eq(self.sem_overflow.payload.sem)]

        # -- state ---------------------------------------------------------------------------
        with m.If(reset_cmd):
            m.d.comb += pc_next.eq(0)
            m.d.sync += [
                state.eq(TileState.IDLE),
                *[r.eq(0) for r in ar[1:]],
                loop_depth.eq(0), mm_open.eq(0), error.eq(0), wait_sem.eq(0), wait_count.eq(0),
                chk_loaded.eq(0), blocked_for.eq(0),
            ]
        with m.Elif(start_cmd):
            m.d.comb += pc_next.eq(ctl.pc)
            m.d.sync += [
                state.eq(TileState.RUNNING),
                *[r.eq(0) for r in ar[1:]],
                loop_depth.eq(0), mm_open.eq(0), chk_loaded.eq(0), blocked_for.eq(0),
            ]
        with m.Elif(raise_err):
            m.d.sync += [state.eq(TileState.ERROR), error.code.eq(err_code), error.pc.eq(pc)]
            with m.If(~note_valid):
                m.d.sync += [
                    note_valid.eq(1),
                    note.kind.eq(NotifyKind.ERROR), note.code.eq(err_code), note.pc.eq(pc),
                    note.value.eq(err_value),
                ]
        with m.Elif(active):
            with m.If(halt_done):
                m.d.sync += state.eq(TileState.HALTED)
            with m.Elif(waiting):
                m.d.sync += state.eq(TileState.WAITING)
            with m.Elif(blocked):
                m.d.sync += state.eq(TileState.BLOCKED)
            with m.Else():
                m.d.sync += state.eq(TileState.RUNNING)
        # No issue side effect survives an error: the instruction did not issue.
        with m.If(raise_err):
            m.d.comb += [advance.eq(0), self.sem_dec.valid.eq(0), loop_push.eq(0),
                         *[p.eq(0) for p in push.values()]]

        # -- status and counters ---------------------------------------------------------------
        st = self.status
        m.d.comb += [
            st.status.state.eq(state),
            st.status.dma_busy.eq(busy["dma"]),
            st.status.matmul_busy.eq(busy["matmul"]),
            st.status.simd_busy.eq(busy["simd"]),
            st.pc.eq(pc),
            st.error.eq(error),
            st.wait_sem.eq(wait_sem),
            st.wait_count.eq(wait_count),
            *[st.ar[i - 1].eq(ar[i]) for i in range(1, ADDR_REGS)],
        ]
        counting = {
            "cycles": active,
            "stall_cycles": (state == TileState.WAITING) | (state == TileState.BLOCKED),
            "dma_busy": busy["dma"],
            "matmul_busy": busy["matmul"],
            "simd_busy": busy["simd"],
            "matmul_steps": self.matmul_step,
        }
        for name in COUNTER_NAMES:
            counter = Signal(32, name=f"count_{name}")
            m.d.comb += st[name].eq(counter)
            with m.If(reset_cmd):
                m.d.sync += counter.eq(0)
            with m.Elif(counting[name]):
                m.d.sync += counter.eq(counter + 1)
        return m
