"""The SIMD engine: executes SIMD and SIMD_CFG instructions on SRAM vectors with the SIMD unit.

::

    cmd ─► slot ─► sequencer ─┬─ x addr, tag ─► queue ─► x.read_req ─► (tag FIFO)
                              ├─ y addr, tag ─► queue ─► y.read_req ─► (tag FIFO)
                              │   tag: vector end, format
                              │         x.read_resp ─► assemble, unpack ─► x FIFO ─┐
                              │         y.read_resp ─► assemble, unpack ─► y FIFO ─┤
                              │                                                    ▼
                              ├─ beat job (func, shift, scale, zero point, ymode) ─► beat former
                              │                                                    │
                              └─ write job (d, dfmt, count) ─┐      SimdUnit (L lanes)
                                                             ▼                     │
                                  d.write ◄── pack (dfmt), d_words per vector ◄── its out FIFO

Per instruction the sequencer reads the ``count`` x vectors (``x_words`` words each, format
``xfmt``) and, by ``ymode``, ``count`` y vectors (vector), one y vector (repeat), the words of
y element 0 (scalar: the unit broadcasts it) or nothing (none: zeros). Loads sign-extend data
elements to ``acc_bits``; stores keep the low ``data_bits`` (dfmt data) or all ``acc_bits``.
With one-word vectors, one vector per cycle flows through in steady state. A command waits in a
one-entry slot (so that ``cmd.ready`` is a register) while the instruction before it issues its
reads. ``simd.cfg`` sets REQUANT's scale and zero point (wrapped to ``acc_bits``) for the
instructions after it; every instruction takes the values current when it is accepted, so a
``simd.cfg`` does not wait for earlier instructions to finish. ``start`` resets them to 1 and 0.

Ordering: the effect is that of :func:`tilemesh.model.reference.simd_instr` applied to the
instructions one after the other. Vectors are read and written in order, so ``d`` may equal
``x`` (or ``y`` with ymode vector) with the same vector size (in place; other overlaps within
one instruction are unspecified, as in the ISA). The x and y words of an instruction are read
only outside the ``d`` blocks that earlier instructions have still to write (a conservative
hull, cleared when they are written), so a chain of instructions through one buffer needs no
fence. SIMD instructions with ``count = 0`` (BAD_OPERAND at the controller) and commands other
than SIMD / SIMD_CFG are accepted and ignored.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..layouts import (
    ADDR_BITS,
    COUNT_BITS,
    SIMD_SCALE_BITS,
    ElemFormat,
    InstrOp,
    SimdOp,
    YMode,
    packed_words,
    simd_shift_bits,
)
from ..noc.fifo import Fifo
from .matmul_engine import WriteHull, abortable_core
from .ports import sram_client_signature, unit_command_layout
from .simd import SimdUnit

__all__ = ["SimdEngine", "SIMD_JOBS"]

#: Instructions the engine holds between taking them and writing their last result (the beat
#: former's and the writer's job FIFOs): it takes a command only when fewer are pending.
SIMD_JOBS = 2

_WORD_TAG = data.StructLayout({"vec_last": 1, "fmt": ElemFormat})


class SimdEngine(wiring.Component):
    """Executes SIMD / SIMD_CFG instructions: SRAM vectors through a :class:`SimdUnit`.

    See the module docstring for the datapath and ordering. Vector packing is
    :func:`tilemesh.model.reference.pack_vector` (``simd_vector_words(cfg, fmt)`` words).

    Parameters
    ----------
    cfg : MeshConfig
        The tile parameters (``simd_lanes``, ``acc_bits``, ``data_bits``) and the word width.
    read_tags : int
        SRAM reads each of ``x`` and ``y`` may have outstanding (2..64, default 8: enough for
        full rate at the SRAM's latency).

    Members
    -------
    cmd : ``In(stream.Signature(unit_command_layout()))``
        ``{op, args}`` from the controller: ``op`` SIMD (``args.simd``, address registers
        resolved: ``*_ar`` are ignored) or SIMD_CFG (``args.simd_cfg``).
    x, y, d : ``Out(sram_client_signature(cfg))``
        SRAM clients: ``x`` and ``y`` read operands, ``d`` writes results (``x``, ``y`` never
        write; ``d`` never reads).
    busy : ``Out(1)``
        A SIMD instruction is being executed: from its acceptance until its last result word
        has been accepted by the SRAM.
    abort : ``In(1)``
        RESET: drops every instruction in the engine and the unit (a result vector being
        written may be left half written) and resets scale and zero point to 1 and 0; the
        engine is idle once the answers of its outstanding reads have been discarded.
    start : ``In(1)``
        START pulse: scale = 1, zero point = 0 (sent while the engine is idle).

    Raises
    ------
    ValueError
        If ``read_tags`` is out of range.
    """

    def __init__(self, cfg, *, read_tags=8):
        if not isinstance(read_tags, int) or isinstance(read_tags, bool) \
                or not 2 <= read_tags <= 64:
            raise ValueError(f"SIMD engine read_tags must be an integer in 2..64, "
                             f"not {read_tags!r}")
        self._cfg = cfg
        self._tags = read_tags
        super().__init__({
            "cmd": In(stream.Signature(unit_command_layout())),
            "x": Out(sram_client_signature(cfg)),
            "y": Out(sram_client_signature(cfg)),
            "d": Out(sram_client_signature(cfg)),
            "busy": Out(1),
            "abort": In(1),
            "start": In(1),
        })

    def vector_words(self, fmt):
        """SRAM words of one vector in :class:`ElemFormat` ``fmt``."""
        t = self._cfg.tile
        bits = t.acc_bits if ElemFormat(fmt) == ElemFormat.ACC else t.data_bits
        return packed_words(t.simd_lanes, bits, self._cfg.word_bits)

    def elaborate(self, platform):
        m = Module()
        cfg, t = self._cfg, self._cfg.tile
        L, W, db, accb = t.simd_lanes, cfg.word_bits, t.data_bits, t.acc_bits
        vw = {f: self.vector_words(f) for f in ElemFormat}
        bits = {ElemFormat.ACC: accb, ElemFormat.DATA: db}
        sw = {f: packed_words(1, bits[f], W) for f in ElemFormat}   # y element 0 (scalar)
        max_vw = max(vw.values())
        max_shift = (1 << simd_shift_bits(accb, SIMD_SCALE_BITS)) - 1
        jobs = SIMD_JOBS

        # -- abort: the guards drain late read answers while the core is held in reset ---------
        core, ports, cmd_ready, core_busy, cmd_take = abortable_core(
            m, self, cfg, dict.fromkeys(("x", "y", "d"), self._tags))
        x_port, y_port, d_port = ports["x"], ports["y"], ports["d"]

        # Counts are kept as count - 1 so that end tests compare without a subtractor.
        wpv_shape = range(max_vw)
        beat_job = data.StructLayout({
            "func": SimdOp, "shift": unsigned(simd_shift_bits(accb, SIMD_SCALE_BITS)),
            "scale": signed(SIMD_SCALE_BITS), "zero_point": signed(accb), "ymode": YMode,
            "count_m1": unsigned(COUNT_BITS),
        })
        write_job = data.StructLayout({"d": unsigned(ADDR_BITS), "dfmt": ElemFormat,
                                       "wpv_m1": wpv_shape, "count_m1": unsigned(COUNT_BITS)})
        issue_job = data.StructLayout({
            "x": unsigned(ADDR_BITS), "y": unsigned(ADDR_BITS), "d": unsigned(ADDR_BITS),
            "count_m1": unsigned(COUNT_BITS), "xfmt": ElemFormat, "yfmt": ElemFormat,
            "x_wpv_m1": wpv_shape, "y_wpv_m1": wpv_shape, "d_wpv": range(max_vw + 1),
            "y_none": 1, "y_vecs_m1": unsigned(COUNT_BITS)})
        vec = unsigned(L * accb)
        core.submodules.beat_jobs = beat_jobs = Fifo(beat_job, jobs)
        core.submodules.write_jobs = write_jobs = Fifo(write_job, jobs)
        req = data.StructLayout({"addr": unsigned(ADDR_BITS), "tag": _WORD_TAG})
        core.submodules.x_reqs = x_reqs = Fifo(req, 2)
        core.submodules.y_reqs = y_reqs = Fifo(req, 2)
        core.submodules.x_tags = x_tags = Fifo(_WORD_TAG, self._tags)
        core.submodules.y_tags = y_tags = Fifo(_WORD_TAG, self._tags)
        core.submodules.x_vec = x_vec = Fifo(vec, 2)
        core.submodules.y_vec = y_vec = Fifo(vec, 2)
        core.submodules.unit = su = SimdUnit.from_config(t)

        hull = WriteHull(core, jobs + 1, "hull")
        job_done = Signal()

        # -- REQUANT parameters ------------------------------------------------------------------
        scale = Signal(signed(SIMD_SCALE_BITS), init=1)
        zero_point = Signal(signed(accb))
        op = self.cmd.payload.op
        args = self.cmd.payload.args
        with core.If(self.start):
            core.d.sync += [scale.eq(1), zero_point.eq(0)]
        with core.Elif(cmd_take & (op == InstrOp.SIMD_CFG)):
            # zero_point wraps to acc_bits (or sign-extends into a wider one)
            core.d.sync += [scale.eq(args.simd_cfg.scale),
                            zero_point.eq(args.simd_cfg.zero_point)]

        # -- command slot: the next instruction waits here, so that cmd.ready is a register -----
        simd = args.simd
        nxt = Signal(issue_job)
        nxt_valid = Signal()
        dec = Signal(issue_job)          # the command, decoded for the sequencer
        src = Signal(issue_job)          # what the sequencer loads
        active = Signal()
        issued = Signal()
        load_nxt = Signal()
        load = Signal()
        work = Signal()

        def fmt_words(fmt, table):
            return Mux(fmt == ElemFormat.DATA, table[ElemFormat.DATA], table[ElemFormat.ACC])

        core.d.comb += [
            cmd_ready.eq(~nxt_valid & beat_jobs.w.ready & write_jobs.w.ready),
            work.eq(cmd_take & (op == InstrOp.SIMD) & (simd.count != 0)),
            dec.x.eq(simd.x), dec.y.eq(simd.y), dec.d.eq(simd.d),
            dec.count_m1.eq(simd.count - 1),
            dec.xfmt.eq(simd.xfmt), dec.yfmt.eq(simd.yfmt),
            dec.x_wpv_m1.eq(fmt_words(simd.xfmt, vw) - 1),
            dec.d_wpv.eq(fmt_words(simd.dfmt, vw)),
            dec.y_none.eq(simd.ymode == YMode.NONE),
            # vector: a y per x; repeat: one y vector; scalar: the words of y element 0
            dec.y_vecs_m1.eq(Mux(simd.ymode == YMode.VECTOR, simd.count - 1, 0)),
            dec.y_wpv_m1.eq(Mux(simd.ymode == YMode.SCALAR, fmt_words(simd.yfmt, sw),
                                fmt_words(simd.yfmt, vw)) - 1),
            # Instructions are queued to the beat former and the writer as they are accepted,
            # with the REQUANT parameters current then.
            beat_jobs.w.valid.eq(work),
            beat_jobs.w.payload.func.eq(simd.func),
            beat_jobs.w.payload.shift.eq(Mux(simd.shift > max_shift, max_shift, simd.shift)),
            beat_jobs.w.payload.scale.eq(scale),
            beat_jobs.w.payload.zero_point.eq(zero_point),
            beat_jobs.w.payload.ymode.eq(simd.ymode),
            beat_jobs.w.payload.count_m1.eq(simd.count - 1),
            write_jobs.w.valid.eq(work),
            write_jobs.w.payload.d.eq(simd.d),
            write_jobs.w.payload.dfmt.eq(simd.dfmt),
            write_jobs.w.payload.wpv_m1.eq(fmt_words(simd.dfmt, vw) - 1),
            write_jobs.w.payload.count_m1.eq(simd.count - 1),
            # from the slot when the current instruction has issued its reads; an instruction
            # arriving at an idle sequencer goes straight in
            load_nxt.eq(nxt_valid & (~active | issued)),
            load.eq(load_nxt | (work & ~active)),
            # (the slot is full only when no command can be taken)
            src.eq(Mux(nxt_valid, nxt.as_value(), dec.as_value())),
        ]
        with core.If(load_nxt):
            core.d.sync += nxt_valid.eq(0)
        with core.If(work & active):
            core.d.sync += [nxt.eq(dec), nxt_valid.eq(1)]

        # -- sequencer: x and y words, each side on its own --------------------------------------
        ins = Signal(issue_job)
        x_ptr, y_ptr = Signal(ADDR_BITS), Signal(ADDR_BITS)
        x_v, y_v = Signal(COUNT_BITS), Signal(COUNT_BITS)
        x_w, y_w = Signal(wpv_shape), Signal(wpv_shape)
        x_done, y_done = Signal(), Signal()
        d_end = Signal(ADDR_BITS + 1)        # one past the last result word of the vectors read
        d_end_next = Signal(ADDR_BITS + 1)

        # The sequencer queues word addresses; the read ports issue from the queues, so neither
        # the SRAM's ready nor the hull test is on the other's path.
        x_gen, y_gen = Signal(), Signal()
        # Is the next word in a d block still to be written? (decided a cycle early)
        x_blocked = hull.blocked_ahead(core, "x", 1, hold=x_ptr, advance=x_gen,
                                       following=x_ptr + 1, load=load, loaded=src.x)
        y_blocked = hull.blocked_ahead(core, "y", 1, hold=y_ptr, advance=y_gen,
                                       following=y_ptr + 1, load=load, loaded=src.y)
        x_vlast, y_vlast = Signal(), Signal()
        x_fin, y_fin = Signal(), Signal()
        core.d.comb += [
            x_gen.eq(active & ~x_done & x_reqs.w.ready & ~x_blocked),
            x_vlast.eq(x_w == ins.x_wpv_m1),
            x_reqs.w.valid.eq(x_gen),
            x_reqs.w.payload.addr.eq(x_ptr),
            x_reqs.w.payload.tag.vec_last.eq(x_vlast),
            x_reqs.w.payload.tag.fmt.eq(ins.xfmt),
            x_fin.eq(x_done | (x_gen & x_vlast & (x_v == ins.count_m1))),
            y_gen.eq(active & ~y_done & y_reqs.w.ready & ~y_blocked),
            y_vlast.eq(y_w == ins.y_wpv_m1),
            y_reqs.w.valid.eq(y_gen),
            y_reqs.w.payload.addr.eq(y_ptr),
            y_reqs.w.payload.tag.vec_last.eq(y_vlast),
            y_reqs.w.payload.tag.fmt.eq(ins.yfmt),
            y_fin.eq(y_done | (y_gen & y_vlast & (y_v == ins.y_vecs_m1))),
            issued.eq(active & x_fin & y_fin),
            d_end_next.eq(d_end + Mux(x_gen & x_vlast, ins.d_wpv, 0)),
            # This instruction's results may be read by the next ones only once written.
            hull.merge.eq(issued),
            hull.merge_lo.eq(ins.d),
            hull.merge_hi.eq(d_end_next),
        ]
        for port, reqs, tags in ((x_port, x_reqs, x_tags), (y_port, y_reqs, y_tags)):
            core.d.comb += [
                port.read_req.valid.eq(reqs.r.valid & tags.w.ready),
                port.read_req.payload.addr.eq(reqs.r.payload.addr),
                reqs.r.ready.eq(port.read_req.ready & tags.w.ready),
                tags.w.valid.eq(port.read_req.valid & port.read_req.ready),
                tags.w.payload.eq(reqs.r.payload.tag),
            ]
        core.d.sync += d_end.eq(d_end_next)
        with core.If(x_gen):
            core.d.sync += [x_ptr.eq(x_ptr + 1), x_w.eq(Mux(x_vlast, 0, x_w + 1))]
            with core.If(x_vlast):
                core.d.sync += x_v.eq(x_v + 1)
        with core.If(y_gen):
            core.d.sync += [y_ptr.eq(y_ptr + 1), y_w.eq(Mux(y_vlast, 0, y_w + 1))]
            with core.If(y_vlast):
                core.d.sync += y_v.eq(y_v + 1)
        with core.If(x_fin):
            core.d.sync += x_done.eq(1)
        with core.If(y_fin):
            core.d.sync += y_done.eq(1)
        with core.If(issued):
            core.d.sync += active.eq(0)
        with core.If(load):
            core.d.sync += [
                active.eq(1),
                ins.eq(src),
                x_ptr.eq(src.x), y_ptr.eq(src.y),
                x_v.eq(0), y_v.eq(0), x_w.eq(0), y_w.eq(0),
                x_done.eq(0), y_done.eq(src.y_none),
                d_end.eq(src.d),
            ]

        # -- read answers -> vectors of acc_bits lanes --------------------------------------------
        def unpack(raw, fmt):
            acc_lanes = raw[:L * accb]
            data_lanes = Cat(*(Cat(raw[i * db:(i + 1) * db], raw[(i + 1) * db - 1]
                                   .replicate(accb - db)) for i in range(L)))
            return Mux(fmt == ElemFormat.DATA, data_lanes, acc_lanes)

        def assemble(port, tags, out, name):
            resp = port.read_resp
            held = [Signal(W, name=f"{name}_word{k}") for k in range(max_vw - 1)]
            pos = Signal(range(max_vw), name=f"{name}_pos")
            tag = tags.r.payload
            raw = Cat(*(Mux(pos == k, resp.payload.data, held[k]) if k < max_vw - 1
                        else resp.payload.data for k in range(max_vw)))
            take = Signal(name=f"{name}_take")
            core.d.comb += [
                out.valid.eq(resp.valid & tags.r.valid & tag.vec_last),
                out.payload.eq(unpack(raw, tag.fmt)),
                resp.ready.eq(tags.r.valid & (~tag.vec_last | out.ready)),
                take.eq(resp.valid & resp.ready),
                tags.r.ready.eq(take),
            ]
            with core.If(take):
                core.d.sync += pos.eq(Mux(tag.vec_last, 0, pos + 1))
                with core.Switch(pos):
                    for k in range(max_vw - 1):
                        with core.Case(k):
                            core.d.sync += held[k].eq(resp.payload.data)

        assemble(x_port, x_tags, x_vec.w, "x_asm")
        assemble(y_port, y_tags, y_vec.w, "y_asm")

        # -- beats into the SIMD unit -------------------------------------------------------------
        bj = beat_jobs.r.payload
        bv = Signal(COUNT_BITS)
        need_y = Signal()
        b_last = Signal()
        b_take = Signal()
        core.d.comb += [
            need_y.eq(bj.ymode != YMode.NONE),
            b_last.eq(bv == bj.count_m1),
            su.inp.valid.eq(beat_jobs.r.valid & x_vec.r.valid & (~need_y | y_vec.r.valid)),
            su.inp.payload.x.eq(x_vec.r.payload),
            su.inp.payload.y.eq(Mux(need_y, y_vec.r.payload, 0)),
            su.inp.payload.op.eq(bj.func),
            su.inp.payload.broadcast.eq(bj.ymode == YMode.SCALAR),
            su.inp.payload.shift.eq(bj.shift),
            su.inp.payload.scale.eq(bj.scale),
            su.inp.payload.zero_point.eq(bj.zero_point),
            b_take.eq(su.inp.valid & su.inp.ready),
            x_vec.r.ready.eq(b_take),
            # vector: a y per x; repeat / scalar: one y for the whole instruction
            y_vec.r.ready.eq(b_take & need_y & ((bj.ymode == YMode.VECTOR) | b_last)),
            beat_jobs.r.ready.eq(b_take & b_last),
        ]
        with core.If(b_take):
            core.d.sync += bv.eq(Mux(b_last, 0, bv + 1))

        # -- results -> SRAM ---------------------------------------------------------------------
        wj = write_jobs.r.payload
        results = su.out          # the unit ends in a 2-entry FIFO: it is the result queue
        res = results.payload.data.as_value()
        packed_data = Cat(*(res[i * accb:i * accb + db] for i in range(L)))
        row_bits = Signal(max_vw * W)
        wv = Signal(COUNT_BITS)
        ww = Signal(range(max_vw))
        w_off = Signal(ADDR_BITS)
        w_take, w_vlast = Signal(), Signal()
        core.d.comb += [
            row_bits.eq(Mux(wj.dfmt == ElemFormat.DATA, packed_data, res)),
            d_port.write.valid.eq(write_jobs.r.valid & results.valid),
            d_port.write.payload.addr.eq(wj.d + w_off),
            d_port.write.payload.data.eq(row_bits.word_select(ww, W)),
            w_take.eq(d_port.write.valid & d_port.write.ready),
            w_vlast.eq(ww == wj.wpv_m1),
            results.ready.eq(w_take & w_vlast),
            job_done.eq(w_take & w_vlast & (wv == wj.count_m1)),
            write_jobs.r.ready.eq(job_done),
            hull.done.eq(job_done),
            core_busy.eq(nxt_valid | active | write_jobs.r.valid),
        ]
        with core.If(w_take):
            core.d.sync += [ww.eq(Mux(w_vlast, 0, ww + 1)), w_off.eq(w_off + 1)]
            with core.If(w_vlast):
                core.d.sync += wv.eq(wv + 1)
        with core.If(job_done):
            core.d.sync += [wv.eq(0), w_off.eq(0)]
        return m
