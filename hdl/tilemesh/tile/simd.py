"""The SIMD unit: element-wise vector operations, one vector per cycle.

Every op goes through one datapath per lane, so the multiplier, the adders and the shifter are
shared between the ops that need them::

    inp ─► S1 ────────► S2 ─────────────► S3 ────────► S4 ──────────► S5 ─────────► S6 ────► out
           operands:    m = xu * bl       p = m + f    q = 2p >> s    v = r + zp + c sat(v)
           broadcast,   (DSP, registered) (P bits)     (r = q >> 1,   (c = bit 0     or low
           bl, s, zp,   f = rest of x*b,               c = bit 0:     of q, as a     acc_bits
           sign of x*b  y, ~y or the ALU               the rounding   carry)         of v
                        result                         bit)

The multiplier operand ``b`` is split as ``bh * 2**k + bl`` (``k = scale_bits``, ``bl``
unsigned): S2 forms ``xu * bl`` (``xu`` = x as unsigned) alone in the DSP blocks, with registers
on both sides, and ``f`` beside it: the product's other terms (at weight ``2**k``: MUL's
``x * bh``, of which only the low ``acc_bits - k`` bits reach the result; the sign corrections of
``x`` and of REQUANT's scale), y or ~y (ADD, SUB with ``bl = 1``), or the ALU result with
``bl = 0``. That is an ``acc_bits`` x ``k`` and an ``(acc_bits - k)`` x ``(acc_bits - k)``
multiplier per lane instead of an ``acc_bits`` x ``acc_bits`` one.

Rounding (ties away from zero) needs no adder of its own: a negative product is made one
smaller in S2, then the shift yields the rounding bit, which S5 adds as a carry (see S4).

* MUL:      b = y,     s = 0         -> low ``acc_bits`` of p
* ADD, SUB: b = 1,     f = y or ~y   -> low ``acc_bits`` of p (SUB: + 1 as S5's carry)
* SHR:      b = 1,     s = shift     -> r (always fits ``acc_bits``)
* SAT:      b = 1,     s = 0, zp = 0 -> sat(r)
* REQUANT:  b = scale, s = shift     -> sat(r + zero_point)
* MIN, MAX, RELU, invalid: the ALU result goes through with b = 0, s = 0, zp = 0.

The six stages advance together, on one enable: the ``w.ready`` of a two-entry output FIFO, a
flip-flop. So neither that enable (which fans out to every register of the lanes) nor ``inp.ready``
carries logic from ``out.ready``; the unit takes one beat per cycle while ``out`` is taken, and a
stalled ``out`` fills the FIFO and then freezes the stages, losing and duplicating nothing.
The exact semantics are those of :func:`tilemesh.model.reference.simd`.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..layouts import SIMD_SCALE_BITS, SimdOp, simd_in_layout, simd_out_layout
from ..noc.fifo import Fifo

__all__ = ["SimdUnit"]


def _check_int(name, value, lo, hi):
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"SIMD {name} must be an integer in {lo}..{hi}, not {value!r}")


class SimdUnit(wiring.Component):
    """``lanes`` lanes of signed ``acc_bits`` integers; one vector per cycle, fully pipelined.

    Parameters
    ----------
    lanes : int
        Number of lanes (1..64).
    acc_bits : int
        Width of the lanes and of ``x``, ``y``, ``zero_point`` (4..64).
    out_bits : int
        Width SAT and REQUANT saturate to (2..``acc_bits``); their results are sign-extended
        into the ``acc_bits`` output lanes.
    scale_bits : int
        Width of the signed REQUANT ``scale`` (2..32, default 16). The lane multiplier is
        ``acc_bits`` x max(``acc_bits``, ``scale_bits``), shared by MUL and REQUANT.

    Members
    -------
    inp : In(stream.Signature(simd_in_layout(lanes, acc_bits, scale_bits=scale_bits)))
        Operation, operands and parameters of one beat (see ``layouts.simd_in_layout``).
    out : Out(stream.Signature(simd_out_layout(lanes, acc_bits)))
        The result lanes, in input order; ``error`` is set on the beat of an invalid op
        (encodings 9..15), whose result is ``x`` unchanged.

    Raises
    ------
    ValueError
        If a parameter is out of range; the message names it, its value and the range.
    """

    #: Cycles from an accepted input beat to its output beat (with ``out`` ready).
    latency = 7
    #: Beats the unit holds while ``out`` is stalled: six stages and the output FIFO's two.
    capacity = 8

    def __init__(self, lanes, acc_bits, out_bits, *, scale_bits=SIMD_SCALE_BITS):
        _check_int("lanes", lanes, 1, 64)
        _check_int("acc_bits", acc_bits, 4, 64)
        _check_int("out_bits", out_bits, 2, acc_bits)
        _check_int("scale_bits", scale_bits, 2, 32)
        self.lanes, self.acc_bits, self.out_bits = lanes, acc_bits, out_bits
        self.scale_bits = scale_bits
        super().__init__({
            "inp": In(stream.Signature(simd_in_layout(lanes, acc_bits, scale_bits=scale_bits))),
            "out": Out(stream.Signature(simd_out_layout(lanes, acc_bits))),
        })

    @classmethod
    def from_config(cls, tile_cfg):
        """The SIMD unit of a tile: ``simd_lanes`` lanes of ``acc_bits``, saturating to
        ``data_bits`` (the element width the matrix unit consumes)."""
        return cls(tile_cfg.simd_lanes, tile_cfg.acc_bits, tile_cfg.data_bits)

    @property
    def product_bits(self):
        """Width of the lane datapath after the multiplier: every REQUANT product
        ``x * scale`` exactly, and the low ``acc_bits`` of every MUL product (all MUL keeps).
        The rounding shifter works at this width, not at the full ``x * y`` width."""
        return self.acc_bits + self.scale_bits

    def elaborate(self, platform):
        m = Module()
        lanes, acc, P = self.lanes, self.acc_bits, self.product_bits
        k = self.scale_bits
        n_stages = 6

        # Handshake: every stage advances on ``adv``, the output FIFO's registered w.ready. The
        # last stage's beat goes into the FIFO whenever the stages advance.
        m.submodules.out_fifo = out_fifo = Fifo(simd_out_layout(lanes, acc), 2)
        wiring.connect(m, wiring.flipped(self.out), out_fifo.r)
        adv = Signal()
        valid = [Signal(name=f"s{j + 1}_valid") for j in range(n_stages)]
        load = [adv] * n_stages
        m.d.comb += [adv.eq(out_fifo.w.ready), self.inp.ready.eq(adv)]
        prev = [self.inp.valid] + valid[:-1]
        for j in range(n_stages):
            with m.If(adv):
                m.d.sync += valid[j].eq(prev[j])

        def regs(name, shape, count=None):
            # Data registers need no reset: only the valid bits say what they hold.
            if count is None:
                return Signal(shape, name=name, reset_less=True)
            return [Signal(shape, name=f"{name}_{i}", reset_less=True) for i in range(count)]

        inp = self.inp.payload
        op = inp.op
        is_valid_op = Signal()
        m.d.comb += is_valid_op.eq(Cat(*(op == o for o in SimdOp)).any())

        # -- S1: operands. The multiplier operand b = y (MUL), scale (REQUANT) or 1 (SHR, SAT,
        # ADD, SUB) is split as b = bh * 2**k + bl with bl its low k = scale_bits bits
        # (unsigned), so the lane needs an acc_bits x k product and, for MUL only, the low
        # acc_bits - k bits of a (acc_bits - k) x (acc_bits - k) one, instead of a full
        # acc_bits x acc_bits product: 3 MULT18X18D / SB_MAC16 per lane at 32 bits, 2 (and an
        # 8 x 8 in logic) at 24. ADD and SUB multiply x by 1 too and add y (or ~y and 1) in
        # S3's adder: no adder of their own. -----------------------------------------------
        s1_x = regs("s1_x", signed(acc), lanes)
        s1_y = regs("s1_y", signed(acc), lanes)
        s1_bl = regs("s1_bl", unsigned(k), lanes)
        s1_op = regs("s1_op", SimdOp)
        s1_err, s1_sat, s1_sub = regs("s1_err", 1), regs("s1_sat", 1), regs("s1_sub", 1)
        # The sign of the product x * b for a rounding shift (0 when nothing is shifted): S4
        # rounds p - neg. A zero product may be guessed negative; it still rounds to 0.
        s1_neg = regs("s1_neg", 1, lanes)
        # -x - neg for a REQUANT with a negative scale, else -neg: formed here (-x - neg =
        # ~x + ~neg, one carry chain) so that S2 has one carry chain on that path, not two.
        s1_neg_x = regs("s1_neg_x", signed(acc + 1), lanes)
        s1_shift = regs("s1_shift", range(P + 1))
        s1_zp = regs("s1_zp", signed(acc))
        uses_shift = (op == SimdOp.SHR) | (op == SimdOp.REQUANT)
        # Shifts >= P leave nothing of any product, so clamping them to P changes no result and
        # bounds the shifter to P + 1 bits.
        shift = Mux(inp.shift > P, P, inp.shift)
        scale_neg = (op == SimdOp.REQUANT) & inp.scale[-1]
        times_one = Cat(op == o for o in (SimdOp.SHR, SimdOp.SAT, SimdOp.ADD, SimdOp.SUB)).any()
        with m.If(load[0]):
            m.d.sync += [
                s1_op.eq(op),
                s1_err.eq(~is_valid_op),
                s1_sat.eq((op == SimdOp.SAT) | (op == SimdOp.REQUANT)),
                s1_sub.eq(op == SimdOp.SUB),
                s1_shift.eq(Mux(uses_shift, shift, 0)),
                s1_zp.eq(Mux(op == SimdOp.REQUANT, inp.zero_point, 0)),
            ]
            for i in range(lanes):
                neg = Signal(name=f"neg_{i}")
                m.d.comb += neg.eq(uses_shift & (shift != 0) & (inp.x[i][-1] ^ scale_neg))
                y = inp.y[0] if i == 0 else Mux(inp.broadcast, inp.y[0], inp.y[i])
                y_ext = Signal(signed(max(acc, k)), name=f"y_ext_{i}")
                m.d.comb += y_ext.eq(y)
                m.d.sync += [
                    s1_x[i].eq(inp.x[i]),
                    s1_y[i].eq(y),
                    s1_neg[i].eq(neg),
                    s1_neg_x[i].eq(Mux(scale_neg, ~inp.x[i] + ~neg,
                                               neg.replicate(acc + 1).as_signed())),
                    # MIN, MAX, RELU and invalid ops multiply by 0: their result comes as ``f``.
                    s1_bl[i].eq(Mux(op == SimdOp.MUL, y_ext[:k],
                                    Mux(op == SimdOp.REQUANT, inp.scale[:k],
                                        Mux(times_one, 1, 0)))),
                ]

        # -- S2: the registered partial products: m = x mod 2**acc * bl (the DSP blocks, with
        # nothing after them) and f, the rest of the product at weight 2**k, y for ADD, ~y for
        # SUB (S5 adds the 1) or the result of MIN, MAX, RELU. With x = xu - xs * 2**acc (xs its
        # sign) and b = bl - bs * 2**k (REQUANT's scale sign):
        #   x * b = xu * bl + (-bs * x) * 2**k - (xs * bl) * 2**acc            (mod 2**P)
        # and for MUL only the low acc bits count, so f = (x * bh mod 2**(acc-k)) * 2**k. A
        # rounding shift of a negative product also subtracts 1 (S4): -neg's low k bits are
        # neg itself, the rest came with s1_neg_x. -----------------------------------------
        s2_m = regs("s2_m", unsigned(P), lanes)
        s2_f = regs("s2_f", unsigned(P), lanes)
        s2_err, s2_sat, s2_sub = regs("s2_err", 1), regs("s2_sat", 1), regs("s2_sub", 1)
        s2_shift, s2_zp = regs("s2_shift", range(P + 1)), regs("s2_zp", signed(acc))
        with m.If(load[1]):
            m.d.sync += [s2_err.eq(s1_err), s2_sat.eq(s1_sat), s2_sub.eq(s1_sub),
                         s2_shift.eq(s1_shift), s2_zp.eq(s1_zp)]
            for i in range(lanes):
                x, y, bl = s1_x[i], s1_y[i], s1_bl[i]
                m.d.sync += s2_m[i].eq(x.as_unsigned() * bl)
                with m.Switch(s1_op):
                    with m.Case(SimdOp.ADD):
                        m.d.sync += s2_f[i].eq(y)
                    with m.Case(SimdOp.SUB):
                        m.d.sync += s2_f[i].eq(~y)
                    with m.Case(SimdOp.MIN):
                        m.d.sync += s2_f[i].eq(Mux(x < y, x, y))
                    with m.Case(SimdOp.MAX):
                        m.d.sync += s2_f[i].eq(Mux(x < y, y, x))
                    with m.Case(SimdOp.RELU):
                        m.d.sync += s2_f[i].eq(Mux(x < 0, 0, x))
                    with m.Case(SimdOp.MUL):
                        if acc > k:
                            high = (x[:acc - k] * y[k:])[:acc - k]
                            m.d.sync += s2_f[i].eq(Cat(Const(0, k), high))
                        else:  # y fits bl: nothing of x * bh reaches the low acc bits
                            m.d.sync += s2_f[i].eq(0)
                    with m.Case(SimdOp.SHR, SimdOp.SAT, SimdOp.REQUANT):
                        m.d.sync += s2_f[i].eq(
                            Cat(s1_neg[i].replicate(k), s1_neg_x[i])
                            - (Mux(x[-1], bl, 0) << acc))
                    with m.Default():  # invalid op: x passes through, error is flagged
                        m.d.sync += s2_f[i].eq(x)

        # -- S3: the product (or the ALU result, m being 0 then), wrapped to P bits. ----------
        s3_p = regs("s3_p", signed(P), lanes)
        s3_err, s3_sat, s3_sub = regs("s3_err", 1), regs("s3_sat", 1), regs("s3_sub", 1)
        s3_shift, s3_zp = regs("s3_shift", range(P + 1)), regs("s3_zp", signed(acc))
        with m.If(load[2]):
            m.d.sync += [s3_err.eq(s2_err), s3_sat.eq(s2_sat), s3_sub.eq(s2_sub),
                         s3_shift.eq(s2_shift), s3_zp.eq(s2_zp)]
            for i in range(lanes):
                m.d.sync += s3_p[i].eq((s2_m[i] + s2_f[i])[:P])

        # -- S4: the rounding shift without a rounding adder. For any integer q and s >= 1,
        # floor((q + 2**(s-1)) / 2**s) = floor(q / 2**s) + bit s-1 of q; ties away from zero
        # are that rule applied to q = p for p >= 0 and to q = p - 1 for p < 0 (S2 subtracted
        # the 1). So one shift of 2q by s gives the rounding bit (its bit 0) and floor(q / 2**s)
        # (the rest); S5 adds the bit as a carry. With s = 0 the bit is 0 and the rest is q;
        # SUB sets it (its 1). ----------------------------------------------------------------
        s4_q = regs("s4_q", signed(P + 1), lanes)
        s4_err, s4_sat = regs("s4_err", 1), regs("s4_sat", 1)
        s4_zp = regs("s4_zp", signed(acc))
        with m.If(load[3]):
            m.d.sync += [s4_err.eq(s3_err), s4_sat.eq(s3_sat), s4_zp.eq(s3_zp)]
            for i in range(lanes):
                shifted = Cat(Const(0, 1), s3_p[i]).as_signed() >> s3_shift
                m.d.sync += s4_q[i].eq(Cat(shifted[0] | s3_sub, shifted[1:]))

        # -- S5: the rounded result plus the zero point. With c = q's bit 0 (q = 2 r + c),
        # q + (2 zp + c) = 2 (r + zp + c): halved, it adds the carry without a third adder
        # operand (Yosys would build a three-input sum in LUTs). ------------------------------
        s5_v = regs("s5_v", signed(P + 2), lanes)
        s5_err, s5_sat = regs("s5_err", 1), regs("s5_sat", 1)
        with m.If(load[4]):
            m.d.sync += [s5_err.eq(s4_err), s5_sat.eq(s4_sat)]
            for i in range(lanes):
                q = s4_q[i]
                m.d.sync += s5_v[i].eq((q + Cat(q[0], s4_zp).as_signed())[1:].as_signed())

        # -- S6: saturate (SAT, REQUANT) or keep the low acc_bits. -------------------------------
        out = out_fifo.w.payload
        lo = Const(-(1 << (self.out_bits - 1)), signed(self.out_bits))
        hi = Const((1 << (self.out_bits - 1)) - 1, signed(self.out_bits))
        s6_data = regs("s6_data", signed(acc), lanes)
        s6_err = regs("s6_err", 1)
        with m.If(load[5]):
            m.d.sync += s6_err.eq(s5_err)
            for i in range(lanes):
                v = s5_v[i]
                # v fits out_bits when its bits from out_bits - 1 up are all equal (all sign):
                # two AND/OR trees instead of two full-width comparators.
                top = v[self.out_bits - 1:]
                fits = (top == 0) | (top == (1 << len(top)) - 1)
                clamped = Mux(fits, v[:self.out_bits].as_signed(), Mux(v[-1], lo, hi))
                m.d.sync += s6_data[i].eq(Mux(s5_sat, clamped, v[:acc].as_signed()))
        m.d.comb += [
            out_fifo.w.valid.eq(valid[-1]),
            out.error.eq(s6_err),
        ]
        for i in range(lanes):
            m.d.comb += out.data[i].eq(s6_data[i])
        return m
