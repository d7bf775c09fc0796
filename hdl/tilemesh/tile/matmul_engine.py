"""The matrix engine: executes MATMUL instructions on SRAM operands with the matrix unit.

::

    cmd ─► slot ─► sequencer ─┬─ A addr ─► queue ─► a.read_req   a.read_resp ─► assemble ─┐
    (MatmulInstr)             ├─ B addr ─► queue ─► b.read_req   b.read_resp ─► assemble ─┤
                              ├─ step flags (first, last) ────────────────► flags FIFO ───┤
                              │                                                           ▼
                              └─ C job ─► C job FIFO ─► tickets ─► window ─┐  MatrixUnit (R x C)
                                                      (addr, acc)          │          │ c rows
                                   c.read_req ◄── old row reads (acc) ◄────┤          ▼
                                   c.read_resp ─► assemble ─► old FIFO ────┴─► (+) ◄── C row FIFO
                                                                                │
                                   c.write ◄── c_words words per row ◄──────────┘

The **sequencer** walks the folds of an instruction in the order of docs/tile-design.md §4
(fold ``i`` along M outer, fold ``j`` along N inner, ``k`` steps each), one step per cycle: it
queues the step's A column and B row addresses and its ``first``/``last`` flags. The read ports
issue the ``a_words`` / ``b_words`` words of each queued step, one word per cycle on each
client; words come back in request order, are assembled into operand vectors and go straight
into the array with the step's flags, so the array does one step per cycle while the SRAM keeps
up. Folds and instructions follow each other without a gap: the next fold's reads overlap the
previous fold's drain, and the next instruction, waiting in a one-entry slot (so that
``cmd.ready`` is a register), is sequenced from the cycle after the current one's last step
(chaining with ``first=0`` / ``last=0`` simply continues the step stream). The queues keep the
SRAM's ``ready`` off the sequencer's registers, and the loop counters count down, so the end
tests need no subtractor.

The **C path** is decoupled from the array by a C row FIFO of R rows (the array never waits for
a tile's ``R * c_words`` writes while the next tile computes). A ticket generator walks the C
rows of each instruction with ``last`` (row ``r`` of fold ``(i, j)`` at
``c + (i*R + r) * c_stride + j * c_words``) into a window of pending rows; with ``acc`` the old
row is read ahead of time, then added to the array's row (wrapping at ``acc_bits``) and the sum
written back, one word per cycle.

Ordering (the effect is exactly that of running the instructions one after the other,
:func:`tilemesh.model.reference.matmul_instr`):

* An ``acc`` row's old words are read only after every earlier pending row write that overlaps
  them has been accepted (the window compares each new ``acc`` ticket with every pending row),
  so read-modify-write chains on one C block, across instructions or with overlapping rows,
  see every earlier sum.
* A and B words of an instruction are read only outside the C blocks that earlier instructions
  have still to write (a conservative hull ``[lo, hi)`` of them, cleared when all are written).
* Within one instruction, A and B must not overlap its own C block (as DMA blocks must not
  overlap): the result is then unspecified.

Instructions with ``k``, ``m_folds`` or ``n_folds`` of 0 (rejected by the controller as
BAD_OPERAND) are accepted and ignored.
"""

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..layouts import ADDR_BITS, COUNT_BITS, FOLD_BITS, MatmulInstr, matmul_operand_words
from ..noc.fifo import Fifo
from .matrix import MatrixUnit
from .ports import sram_client_signature

__all__ = ["MatmulEngine", "SramClientGuard", "abortable_core", "WriteHull",
           "assemble_words"]

# Width of address arithmetic that must not wrap (hull bounds): an SRAM word address plus the
# largest C block extent (255 folds x 32 rows x a 20-bit stride needs 13 more bits).
_EXTENT_BITS = ADDR_BITS + 14


def _mul_const(value, factor):
    """``value * factor`` for a constant ``factor`` as a sum of shifts (no multiplier inferred:
    the iCE40 preset has no DSP to spare)."""
    terms = [value << b for b in range(factor.bit_length()) if factor >> b & 1]
    out = Const(0, 1)
    for t in terms:
        out = out + t
    return out


def _succ(ptr, depth):
    """``ptr + 1`` modulo ``depth`` (any depth)."""
    return Mux(ptr == depth - 1, 0, ptr + 1)


class SramClientGuard(wiring.Component):
    """Passes an engine's SRAM client port through and makes ``abort`` safe for it.

    SRAM reads are pipelined: when an engine is aborted, answers to reads it issued are still
    on their way. The guard counts reads outstanding (issued, answer not yet taken); on ``kill``
    it blocks the client's requests and writes and discards answers (``draining``) until none is
    outstanding, so a fresh engine never receives a stale word. It also caps the reads
    outstanding at ``max_outstanding``.

    Parameters
    ----------
    cfg : MeshConfig
    max_outstanding : int
        Reads that may be outstanding at once (1..255).

    Members
    -------
    inner : ``In(sram_client_signature(cfg))``
        The engine's side (the engine is the client).
    outer : ``Out(sram_client_signature(cfg))``
        The SRAM array's side.
    kill : ``In(1)``
        Abort: block the port this cycle and drain the reads outstanding.
    draining : ``Out(1)``
        Answers to reads of before the abort are still being discarded; the port is blocked.

    Raises
    ------
    ValueError
        If ``max_outstanding`` is out of range.
    """

    def __init__(self, cfg, max_outstanding=8):
        if (not isinstance(max_outstanding, int) or isinstance(max_outstanding, bool)
                or not 1 <= max_outstanding <= 255):
            raise ValueError(f"SRAM client guard max_outstanding must be an integer in 1..255, "
                             f"not {max_outstanding!r}")
        self._max = max_outstanding
        super().__init__({
            "inner": In(sram_client_signature(cfg)),
            "outer": Out(sram_client_signature(cfg)),
            "kill": In(1),
            "draining": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        inner, outer = self.inner, self.outer
        outstanding = Signal(range(self._max + 1))
        draining = Signal()
        blocked = Signal()
        req_take = Signal()
        resp_take = Signal()
        m.d.comb += [
            blocked.eq(self.kill | draining),
            self.draining.eq(draining),
            outer.read_req.valid.eq(inner.read_req.valid & ~blocked & (outstanding != self._max)),
            outer.read_req.payload.eq(inner.read_req.payload),
            inner.read_req.ready.eq(outer.read_req.ready & ~blocked
                                    & (outstanding != self._max)),
            inner.read_resp.valid.eq(outer.read_resp.valid & ~blocked),
            inner.read_resp.payload.eq(outer.read_resp.payload),
            outer.read_resp.ready.eq(inner.read_resp.ready | blocked),
            outer.write.valid.eq(inner.write.valid & ~blocked),
            outer.write.payload.eq(inner.write.payload),
            inner.write.ready.eq(outer.write.ready & ~blocked),
            req_take.eq(outer.read_req.valid & outer.read_req.ready),
            resp_take.eq(outer.read_resp.valid & outer.read_resp.ready),
        ]
        left = Signal(range(self._max + 1))
        m.d.comb += left.eq(outstanding + req_take - resp_take)
        m.d.sync += [
            outstanding.eq(left),
            draining.eq((self.kill | draining) & (left != 0)),
        ]
        return m



def abortable_core(m, engine, cfg, max_outstanding):
    """The shell both engines share: put each SRAM client port of ``engine`` (names are the keys
    of ``max_outstanding``) behind a :class:`SramClientGuard`, and return a ``core`` module that
    is held in reset while ``engine.abort`` is high or late read answers are being drained.
    ``engine.cmd`` is refused and ``engine.busy`` held high meanwhile.

    Returns ``(core, ports, cmd_ready, core_busy, cmd_take)``: the guarded ports (by name), the
    core's "can take a command" and "is busy" signals to drive, and the command handshake.
    """
    guards = {}
    for name, bound in max_outstanding.items():
        g = guards[name] = SramClientGuard(cfg, max_outstanding=bound)
        m.submodules[f"{name}_guard"] = g
        wiring.connect(m, wiring.flipped(getattr(engine, name)), g.outer)
        m.d.comb += g.kill.eq(engine.abort)
    # A write-only port never has reads outstanding, so its guard never drains.
    draining = Signal()
    m.d.comb += draining.eq(Cat(g.draining for g in guards.values()).any())
    core = Module()
    m.submodules.core = ResetInserter(engine.abort | draining)(core)
    core_busy, cmd_ready, cmd_take = Signal(), Signal(), Signal()
    m.d.comb += [
        engine.cmd.ready.eq(cmd_ready & ~engine.abort & ~draining),
        engine.busy.eq(core_busy | draining),
        cmd_take.eq(engine.cmd.valid & engine.cmd.ready),
    ]
    return core, {name: g.inner for name, g in guards.items()}, cmd_ready, core_busy, cmd_take

def assemble_words(m, resp, n_words, out, name):
    """Collect ``n_words`` consecutive words of the read response stream ``resp`` into one beat
    of the stream ``out`` (word 0 in the low bits). The last word goes straight through, so a
    one-word vector costs no cycle."""
    if n_words == 1:
        m.d.comb += [
            out.valid.eq(resp.valid),
            out.payload.eq(resp.payload.data),
            resp.ready.eq(out.ready),
        ]
        return
    width = len(resp.payload.data)
    held = [Signal(width, name=f"{name}_word{k}") for k in range(n_words - 1)]
    pos = Signal(range(n_words), name=f"{name}_pos")
    at_last = Signal(name=f"{name}_at_last")
    m.d.comb += [
        at_last.eq(pos == n_words - 1),
        out.valid.eq(resp.valid & at_last),
        out.payload.eq(Cat(*held, resp.payload.data)),
        resp.ready.eq(~at_last | out.ready),
    ]
    with m.If(resp.valid & resp.ready):
        m.d.sync += pos.eq(Mux(at_last, 0, pos + 1))
        with m.Switch(pos):
            for k in range(n_words - 1):
                with m.Case(k):
                    m.d.sync += held[k].eq(resp.payload.data)


class WriteHull:
    """A conservative region ``[lo, hi)`` covering every SRAM word that instructions merged into
    it have still to write; empty once all of them completed.

    Drive ``merge`` (with ``merge_lo`` / ``merge_hi``) when an instruction has issued all its
    reads (its own reads are never checked against its own writes) and ``done`` when an
    instruction merged earlier has written its last word; instructions complete in merge order.
    ``covers(addr)`` says a read of ``addr`` must wait. The bounds are kept ``ADDR_BITS + 1``
    wide (``hi`` clamped to ``2**ADDR_BITS``), so the test is two short comparisons.
    """

    def __init__(self, m, max_pending, name):
        limit = 1 << ADDR_BITS
        self.lo = Signal(ADDR_BITS + 1, name=f"{name}_lo")
        self.hi = Signal(ADDR_BITS + 1, name=f"{name}_hi")
        self.pending = Signal(range(max_pending + 1), name=f"{name}_pending")
        self.merge = Signal(name=f"{name}_merge")
        self.merge_lo = Signal(ADDR_BITS, name=f"{name}_merge_lo")
        self.merge_hi = Signal(_EXTENT_BITS, name=f"{name}_merge_hi")
        self.done = Signal(name=f"{name}_done")
        hi = Signal(ADDR_BITS + 1, name=f"{name}_merge_hi_clamped")
        m.d.comb += hi.eq(Mux(self.merge_hi > limit, limit, self.merge_hi))
        m.d.sync += self.pending.eq(self.pending + self.merge - self.done)
        # After this cycle's completion, does anything merged earlier remain?
        empty = (self.pending == 0) | ((self.pending == 1) & self.done)
        with m.If(self.merge):
            with m.If(empty):
                m.d.sync += [self.lo.eq(self.merge_lo), self.hi.eq(hi)]
            with m.Else():
                m.d.sync += [
                    self.lo.eq(Mux(self.merge_lo < self.lo, self.merge_lo, self.lo)),
                    self.hi.eq(Mux(hi > self.hi, hi, self.hi)),
                ]

    def covers(self, addr):
        return (self.pending != 0) & (addr >= self.lo) & (addr < self.hi)

    def covers_range(self, addr, n):
        """Some word of ``addr .. addr + n - 1`` is covered (``n`` a constant)."""
        return (self.pending != 0) & (addr + (n - 1) >= self.lo) & (addr < self.hi)

    def blocked_ahead(self, m, name, n_words, *, hold, advance, following, load, loaded):
        """A register that says whether a read side must not issue its ``n_words`` words next
        cycle, so that the comparisons stay off the side's issue path.

        ``hold`` is the side's address now; with ``advance`` it moves to ``following``; with
        ``load`` the side starts an instruction whose first address is ``loaded`` (checked also
        against a region merged in the same cycle). The hull only grows by a merge, which comes
        with a load or leaves the side idle, so a check made a cycle early is never too
        permissive (at worst the side waits a cycle longer when the hull has just emptied).
        """
        blocked = Signal(name=f"{name}_blocked")
        # The address of next cycle first, then one set of comparators (not one per case).
        ahead = Signal(ADDR_BITS, name=f"{name}_ahead")
        m.d.comb += ahead.eq(Mux(load, loaded, Mux(advance, following, hold)))
        merged = (load & self.merge & (ahead + (n_words - 1) >= self.merge_lo)
                  & (ahead < self.merge_hi))
        m.d.sync += blocked.eq(self.covers_range(ahead, n_words) | merged)
        return blocked


def _c_job_layout():
    return data.StructLayout({
        "c": unsigned(ADDR_BITS), "c_stride": unsigned(ADDR_BITS),
        "m_folds": unsigned(FOLD_BITS), "n_folds": unsigned(FOLD_BITS), "acc": 1,
    })


_STEP_FLAGS = data.StructLayout({"first": 1, "last": 1})


class MatmulEngine(wiring.Component):
    """Executes MATMUL instructions: SRAM operands through a :class:`MatrixUnit`, C back to SRAM.

    See the module docstring for the datapath and the ordering guarantees. Operand vectors are
    packed as :func:`tilemesh.model.reference.pack_vector` (``matmul_operand_words(cfg)``
    words each). With ``k >= R`` and the SRAM answering every read in time, the array does one
    step per cycle across folds and across instructions; the C writes (``R * c_words`` words
    per output tile, one per cycle) overlap the next tile's steps.

    Parameters
    ----------
    cfg : MeshConfig
        The tile parameters (``pe_rows``, ``pe_cols``, ``data_bits``, ``acc_bits``) and the word
        width.
    step_queue : int
        Steps that may be issued to the SRAM before the array takes them (2..64, default 8:
        enough to cover the SRAM latency at full rate).
    c_job_queue : int
        Instructions whose C rows wait for the ticket generator (1..16, default 4).

    Members
    -------
    cmd : ``In(stream.Signature(MatmulInstr))``
        Instructions from the controller, address registers resolved (``*_ar`` are ignored).
        ``first``/``last`` chain accumulations across instructions; ``acc`` adds to C.
    a, b, c : ``Out(sram_client_signature(cfg))``
        SRAM clients: ``a`` reads A columns, ``b`` reads B rows, ``c`` reads old C rows (with
        ``acc``) and writes C rows. ``a`` and ``b`` never write.
    busy : ``Out(1)``
        An instruction is being executed: from its acceptance until its last C word has been
        accepted by the SRAM (with ``last=0``: until its last step has entered the array).
    steps : ``Out(1)``
        Pulses once per step (an A column and a B row) entering the array: the MATMUL_STEPS
        counter (useful MACs / PEs).
    abort : ``In(1)``
        RESET: drops every instruction and partial result in the engine and the array (a C row
        being written may be left half written); the engine is idle again once the answers of
        the reads it had outstanding have been discarded (a few cycles).
    start : ``In(1)``
        START pulse. The engine keeps no state across programs (an accumulation left open is
        cleared by the next ``first`` step), so it has no effect; it is here so that every unit
        has the same control ports.

    Raises
    ------
    ValueError
        If ``step_queue`` or ``c_job_queue`` is out of range.
    """

    def __init__(self, cfg, *, step_queue=8, c_job_queue=4):
        for name, value, lo, hi in (("step_queue", step_queue, 2, 64),
                                    ("c_job_queue", c_job_queue, 1, 16)):
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise ValueError(f"Matrix engine {name} must be an integer in {lo}..{hi}, "
                                 f"not {value!r}")
        self._cfg = cfg
        self._step_queue = step_queue
        self._c_job_queue = c_job_queue
        words = matmul_operand_words(cfg)
        self.a_words, self.b_words, self.c_words = words["a"], words["b"], words["c"]
        super().__init__({
            "cmd": In(stream.Signature(MatmulInstr)),
            "a": Out(sram_client_signature(cfg)),
            "b": Out(sram_client_signature(cfg)),
            "c": Out(sram_client_signature(cfg)),
            "busy": Out(1),
            "steps": Out(1),
            "abort": In(1),
            "start": In(1),
        })

    @property
    def window(self):
        """C rows that may be pending (ticket issued, not yet written): the old-row prefetch
        distance with ``acc``."""
        return max(2, self._cfg.tile.pe_rows)

    def elaborate(self, platform):
        m = Module()
        cfg, t = self._cfg, self._cfg.tile
        R, C, W = t.pe_rows, t.pe_cols, cfg.word_bits
        db, accb = t.data_bits, t.acc_bits
        aw, bw, cw = self.a_words, self.b_words, self.c_words
        P = self.window
        max_jobs = self._c_job_queue + P + 2

        # -- abort: the guards drain late read answers while the core is held in reset ---------
        core, ports, cmd_ready, core_busy, cmd_take = abortable_core(
            m, self, cfg, {"a": 8, "b": 8, "c": max(8, min(255, P * cw))})
        a_port, b_port, c_port = ports["a"], ports["b"], ports["c"]

        core.submodules.flags = flags = Fifo(_STEP_FLAGS, self._step_queue)
        core.submodules.a_steps = a_steps = Fifo(unsigned(ADDR_BITS), 2)
        core.submodules.b_steps = b_steps = Fifo(unsigned(ADDR_BITS), 2)
        core.submodules.c_jobs = c_jobs = Fifo(_c_job_layout(), self._c_job_queue)
        # A C row is C x acc_bits wide (128 bits on `default`): in LUT RAM or flip-flops these
        # two cost ~600 logic sites per tile on an ECP5; block RAM has room. The writer spends
        # c_words cycles per row, so a row's extra cycle of latency costs no throughput.
        core.submodules.c_rows = c_rows = Fifo(unsigned(C * accb), max(2, R), block_ram=True)
        core.submodules.old_rows = old_rows = Fifo(unsigned(cw * W), P, block_ram=True)
        core.submodules.matrix = mu = MatrixUnit.from_config(t)

        hull = WriteHull(core, max_jobs, "hull")
        jobs_pending = Signal(range(max_jobs + 1))
        job_done = Signal()   # the last word of an instruction's C block was accepted

        # -- command slot: the next instruction waits here, so that cmd.ready is a register -----
        cmd = self.cmd.payload
        nxt = Signal(MatmulInstr)
        nxt_valid = Signal()
        load = Signal()                  # an instruction becomes the one being issued
        load_nxt = Signal()              # ... from the slot
        src = Signal(MatmulInstr)        # ... this one
        cmd_work = Signal()
        core.d.comb += [
            cmd_ready.eq(~nxt_valid & c_jobs.w.ready & (jobs_pending < max_jobs - 1)),
            cmd_work.eq((cmd.k != 0) & (cmd.m_folds != 0) & (cmd.n_folds != 0)),
            # C jobs are queued in instruction order as the instructions are accepted.
            c_jobs.w.valid.eq(cmd_take & cmd_work & cmd.last),
            c_jobs.w.payload.c.eq(cmd.c),
            c_jobs.w.payload.c_stride.eq(cmd.c_stride),
            c_jobs.w.payload.m_folds.eq(cmd.m_folds),
            c_jobs.w.payload.n_folds.eq(cmd.n_folds),
            c_jobs.w.payload.acc.eq(cmd.acc),
        ]
        core.d.sync += jobs_pending.eq(jobs_pending + c_jobs.w.valid - job_done)

        # -- sequencer: folds x steps ----------------------------------------------------------
        # It writes each step's A and B addresses and flags into small queues; the read ports
        # issue from those. Neither the SRAM's ready nor a subtractor sits on the path to the
        # sequencer's registers (the loop counters count down to zero).
        active = Signal()
        ins = Signal(MatmulInstr)
        s_left = Signal(COUNT_BITS)      # steps after this one in the fold
        k_m1 = Signal(COUNT_BITS)
        j_left, i_left = Signal(FOLD_BITS), Signal(FOLD_BITS)
        step0 = Signal()                 # this is step 0 of its fold
        a_ptr, a_base, b_ptr = (Signal(ADDR_BITS, name=n) for n in ("a_ptr", "a_base", "b_ptr"))
        # One past the last C word of fold row i / of fold (i, j): the fold's C rows reach
        # (R - 1) * c_stride + c_words words past its row 0.
        ci_hi = Signal(_EXTENT_BITS)
        cf_hi = Signal(_EXTENT_BITS)
        rs = Signal(_EXTENT_BITS)        # R * c_stride

        gen = Signal()
        fold_end, ins_end = Signal(), Signal()
        a_next, b_next = Signal(ADDR_BITS), Signal(ADDR_BITS)
        core.d.comb += [
            fold_end.eq(s_left == 0),
            ins_end.eq(fold_end & (j_left == 0) & (i_left == 0)),
            # the step after this one, if the instruction goes on
            a_next.eq(Mux(fold_end & (j_left != 0), a_base, a_ptr + aw)),
            b_next.eq(Mux(fold_end & (j_left == 0), ins.b, b_ptr + bw)),
        ]
        # Are this step's words in the C blocks still to be written? (decided a cycle early)
        advance = gen & ~ins_end
        a_blocked = hull.blocked_ahead(core, "a", aw, hold=a_ptr, advance=advance,
                                       following=a_next, load=load, loaded=src.a)
        b_blocked = hull.blocked_ahead(core, "b", bw, hold=b_ptr, advance=advance,
                                       following=b_next, load=load, loaded=src.b)
        core.d.comb += [
            gen.eq(active & a_steps.w.ready & b_steps.w.ready & flags.w.ready
                   & ~a_blocked & ~b_blocked),
            a_steps.w.valid.eq(gen),
            a_steps.w.payload.eq(a_ptr),
            b_steps.w.valid.eq(gen),
            b_steps.w.payload.eq(b_ptr),
            flags.w.valid.eq(gen),
            flags.w.payload.first.eq(ins.first & step0),
            flags.w.payload.last.eq(ins.last & fold_end),
            # from the slot when the current instruction ends; an instruction arriving at an
            # idle sequencer goes straight in
            load_nxt.eq(nxt_valid & (~active | (gen & ins_end))),
            load.eq(load_nxt | (cmd_take & ~active & cmd_work)),
            # (the slot is full only when no command can be taken)
            src.eq(Mux(nxt_valid, nxt.as_value(), cmd.as_value())),
            # The C block of this instruction, once its last fold is the current one: the
            # next instruction's steps are checked against it from the next cycle on.
            hull.merge.eq(gen & ins_end & ins.last),
            hull.merge_lo.eq(ins.c),
            hull.merge_hi.eq(cf_hi),
        ]
        with core.If(gen):
            with core.If(~fold_end):
                core.d.sync += [s_left.eq(s_left - 1), step0.eq(0),
                                a_ptr.eq(a_ptr + aw), b_ptr.eq(b_ptr + bw)]
            with core.Else():
                core.d.sync += [s_left.eq(k_m1), step0.eq(1)]
                with core.If(j_left != 0):
                    # Next fold along N: the same A block again, the next B block.
                    core.d.sync += [j_left.eq(j_left - 1), a_ptr.eq(a_base),
                                    b_ptr.eq(b_ptr + bw), cf_hi.eq(cf_hi + cw)]
                with core.Else():
                    # Next fold row: the next A block, B from the start.
                    core.d.sync += [j_left.eq(ins.n_folds - 1), i_left.eq(i_left - 1),
                                    a_ptr.eq(a_ptr + aw), a_base.eq(a_ptr + aw),
                                    b_ptr.eq(ins.b), ci_hi.eq(ci_hi + rs),
                                    cf_hi.eq(ci_hi + rs)]
                with core.If(ins_end):
                    core.d.sync += active.eq(0)
        with core.If(load_nxt):
            core.d.sync += nxt_valid.eq(0)
        with core.If(cmd_take & active):
            core.d.sync += [nxt.eq(cmd), nxt_valid.eq(cmd_work)]
        c_hi_first = src.c + _mul_const(src.c_stride, R - 1) + cw
        with core.If(load):
            core.d.sync += [
                ins.eq(src),
                active.eq(1),
                s_left.eq(src.k - 1), k_m1.eq(src.k - 1), step0.eq(1),
                j_left.eq(src.n_folds - 1), i_left.eq(src.m_folds - 1),
                a_ptr.eq(src.a), a_base.eq(src.a), b_ptr.eq(src.b),
                ci_hi.eq(c_hi_first), cf_hi.eq(c_hi_first),
                rs.eq(_mul_const(src.c_stride, R)),
            ]
        core.d.comb += [
            core_busy.eq(nxt_valid | active | flags.r.valid | (jobs_pending != 0)),
            hull.done.eq(job_done),
        ]

        # -- read ports: the words of each queued step -------------------------------------------
        for port, steps, n_words, name in ((a_port, a_steps, aw, "a"), (b_port, b_steps, bw, "b")):
            # (at least 1 bit: a zero-width counter becomes an ill-formed [-1:0] vector in Verilog)
            word = Signal(range(max(n_words, 2)), name=f"{name}_word")
            take = Signal(name=f"{name}_req_take")
            core.d.comb += [
                port.read_req.valid.eq(steps.r.valid),
                port.read_req.payload.addr.eq(steps.r.payload + word),
                take.eq(port.read_req.valid & port.read_req.ready),
                steps.r.ready.eq(take & (word == n_words - 1)),
            ]
            with core.If(take):
                core.d.sync += word.eq(Mux(word == n_words - 1, 0, word + 1))

        # -- operands into the array: the words of a step, assembled, meet its flags -------------
        a_in = stream.Signature(unsigned(aw * W)).create(path=("a_in",))
        b_in = stream.Signature(unsigned(bw * W)).create(path=("b_in",))
        # (an answer goes straight into the array: a register stage here would cost a cycle)
        assemble_words(core, a_port.read_resp, aw, a_in, "a_asm")
        assemble_words(core, b_port.read_resp, bw, b_in, "b_asm")
        core.d.comb += [
            mu.a.valid.eq(a_in.valid & flags.r.valid),
            mu.a.payload.data.eq(a_in.payload[:R * db]),
            mu.a.payload.first.eq(flags.r.payload.first),
            mu.a.payload.last.eq(flags.r.payload.last),
            a_in.ready.eq(mu.a.ready & flags.r.valid),
            flags.r.ready.eq(mu.a.ready & a_in.valid),
            mu.b.valid.eq(b_in.valid),
            mu.b.payload.eq(b_in.payload[:C * db]),
            b_in.ready.eq(mu.b.ready),
            self.steps.eq(mu.a.valid & mu.a.ready),
            # Results: the packed C row is the row's bits as they are.
            c_rows.w.valid.eq(mu.c.valid),
            c_rows.w.payload.eq(mu.c.payload.data.as_value()),
            mu.c.ready.eq(c_rows.w.ready),
        ]

        # -- C row tickets -----------------------------------------------------------------------
        g_active = Signal()
        job = Signal(_c_job_layout())
        gi_left, gj_left = Signal(FOLD_BITS), Signal(FOLD_BITS)
        gr_left = Signal(range(max(R, 2)))
        gj0 = Signal()                 # fold (gi, 0)
        g_row = Signal(ADDR_BITS)      # address of the row to ticket
        g_row_end = Signal(ADDR_BITS + 1)   # g_row + c_words
        g_cf = Signal(ADDR_BITS)       # row 0 of fold (gi, gj)
        g_ci_next = Signal(ADDR_BITS)  # row 0 of fold row gi + 1 (known after fold (gi, 0))

        win_addr = Signal(data.ArrayLayout(unsigned(ADDR_BITS), P))
        win_end = Signal(data.ArrayLayout(unsigned(ADDR_BITS + 1), P))
        win_acc = Signal(P)
        win_last = Signal(P)
        win_valid = Signal(P)
        head = Signal(range(P))
        tail = Signal(range(P))
        rd = Signal(range(P))                 # next ticket whose old row to read
        n_total = Signal(range(P + 1))        # tickets in the window
        n_read = Signal(range(P + 1))         # of which the old-row reader has passed

        t_last = Signal()
        overlap = Signal()
        overlap_q = Signal()     # overlap, a cycle ago
        checked = Signal()       # ... for this ticket and every row still pending
        emit = Signal()
        job_take = Signal()
        # An acc ticket waits while an earlier pending row overlaps it (read after write). The
        # comparison is registered; it holds for the next cycle unless a ticket was emitted or
        # a job started (rows leaving the window only remove overlaps). So an acc ticket takes
        # at least two cycles, never more than the c_words cycles of a row write once c_words
        # >= 2.
        overlaps = [win_valid[e] & (g_row < win_end[e]) & (win_addr[e] < g_row_end)
                    for e in range(P)]
        core.d.comb += [
            t_last.eq((gi_left == 0) & (gj_left == 0) & (gr_left == 0)),
            overlap.eq(Cat(*overlaps).any()),
            emit.eq(g_active & (n_total != P) & (~job.acc | (checked & ~overlap_q))),
            c_jobs.r.ready.eq(~g_active | (emit & t_last)),
            job_take.eq(c_jobs.r.valid & c_jobs.r.ready),
        ]
        core.d.sync += [overlap_q.eq(overlap), checked.eq(~emit & ~job_take)]

        def goto_row(addr):
            return [g_row.eq(addr), g_row_end.eq(addr + cw)]

        with core.If(emit):
            core.d.sync += [
                win_addr[tail].eq(g_row),
                win_end[tail].eq(g_row_end),
                win_acc.bit_select(tail, 1).eq(job.acc),
                win_last.bit_select(tail, 1).eq(t_last),
                win_valid.bit_select(tail, 1).eq(1),
                tail.eq(_succ(tail, P)),
            ]
            with core.If(gr_left != 0):
                core.d.sync += [gr_left.eq(gr_left - 1), *goto_row(g_row + job.c_stride)]
            with core.Else():
                core.d.sync += gr_left.eq(R - 1)
                with core.If(gj0):
                    core.d.sync += g_ci_next.eq(g_row + job.c_stride)
                with core.If(gj_left != 0):
                    core.d.sync += [gj_left.eq(gj_left - 1), gj0.eq(0), g_cf.eq(g_cf + cw),
                                    *goto_row(g_cf + cw)]
                with core.Else():
                    next_base = Mux(gj0, g_row + job.c_stride, g_ci_next)
                    core.d.sync += [gj_left.eq(job.n_folds - 1), gj0.eq(1),
                                    gi_left.eq(gi_left - 1), g_cf.eq(next_base),
                                    *goto_row(next_base)]
                    with core.If(gi_left == 0):
                        core.d.sync += g_active.eq(0)
        with core.If(job_take):
            new_job = c_jobs.r.payload
            core.d.sync += [
                job.eq(new_job), g_active.eq(1),
                gi_left.eq(new_job.m_folds - 1), gj_left.eq(new_job.n_folds - 1),
                gr_left.eq(R - 1), gj0.eq(1), g_cf.eq(new_job.c), *goto_row(new_job.c),
            ]

        # -- old rows (acc): read ahead, in ticket order ----------------------------------------
        wc = Signal(range(max(cw, 2)))
        rd_has = Signal()
        rd_acc = Signal()
        rd_adv = Signal()
        c_req_take = Signal()
        core.d.comb += [
            rd_has.eq(n_read != n_total),
            rd_acc.eq(win_acc.bit_select(rd, 1)),
            c_port.read_req.valid.eq(rd_has & rd_acc),
            c_port.read_req.payload.addr.eq(win_addr[rd] + wc),
            c_req_take.eq(c_port.read_req.valid & c_port.read_req.ready),
            rd_adv.eq(rd_has & (~rd_acc | (c_req_take & (wc == cw - 1)))),
        ]
        with core.If(c_req_take):
            core.d.sync += wc.eq(Mux(wc == cw - 1, 0, wc + 1))
        with core.If(rd_adv):
            core.d.sync += rd.eq(_succ(rd, P))
        assemble_words(core, c_port.read_resp, cw, old_rows.w, "old_asm")

        # -- C writes: row (+ old row) -> c_words words ------------------------------------------
        ww = Signal(range(max(cw, 2)))
        h_acc = Signal()
        h_ok = Signal()
        w_take = Signal()
        w_fin = Signal()
        new_row = c_rows.r.payload
        old_row = old_rows.r.payload
        sums = [(new_row[e * accb:(e + 1) * accb] + old_row[e * accb:(e + 1) * accb])[:accb]
                for e in range(C)]
        row_bits = Signal(cw * W)
        core.d.comb += [
            h_acc.eq(win_acc.bit_select(head, 1)),
            h_ok.eq((n_read != 0) & c_rows.r.valid & (~h_acc | old_rows.r.valid)),
            row_bits.eq(Mux(h_acc, Cat(*sums), new_row)),
            c_port.write.valid.eq(h_ok),
            c_port.write.payload.addr.eq(win_addr[head] + ww),
            c_port.write.payload.data.eq(row_bits.word_select(ww, W)),
            w_take.eq(c_port.write.valid & c_port.write.ready),
            w_fin.eq(w_take & (ww == cw - 1)),
            c_rows.r.ready.eq(w_fin),
            old_rows.r.ready.eq(w_fin & h_acc),
            job_done.eq(w_fin & win_last.bit_select(head, 1)),
        ]
        with core.If(w_take):
            core.d.sync += ww.eq(Mux(ww == cw - 1, 0, ww + 1))
        with core.If(w_fin):
            core.d.sync += [
                win_valid.bit_select(head, 1).eq(0),
                head.eq(_succ(head, P)),
            ]
            # An emit to the same slot in this cycle is impossible: the window is not full.
        core.d.sync += [
            n_total.eq(n_total + emit - w_fin),
            n_read.eq(n_read + rd_adv - w_fin),
        ]
        return m
