"""The SIMD unit: element-wise vector operations, one vector per cycle.

Every op goes through one datapath per lane, so the multiplier and the rounding shifter are shared
between the ops that need them::

    inp ─► S1 ──────────► S2 ────────────► S3 ──────────────► S4 ─────────► S5 ──────────► out
           operands:      p = x * b,       t = p + half        r = t >> s    sat(r + zp) or
           broadcast,     or the ALU         - neg                           low acc_bits of r
           b, s, zp       result             (rounding nudge)

* MUL:      b = y,     s = 0         -> low ``acc_bits`` of p
* SHR:      b = 1,     s = shift     -> r (always fits ``acc_bits``)
* SAT:      b = 1,     s = 0, zp = 0 -> sat(r)
* REQUANT:  b = scale, s = shift     -> sat(r + zero_point)
* ADD, SUB, MIN, MAX, RELU, invalid: the ALU result goes through with s = 0, zp = 0.

Each stage has a valid bit and advances when the stage after it is empty or advancing, so the unit
takes one beat per cycle while ``out`` is ready and stalls without losing or duplicating beats
when it is not. The exact semantics are those of :func:`tilemesh.model.reference.simd`.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..layouts import SIMD_SCALE_BITS, SimdOp, simd_in_layout, simd_out_layout

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
    latency = 5

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
        bw = max(acc, self.scale_bits)
        n_stages = self.latency

        # Handshake: stage k loads when it is empty or stage k+1 is loading (or out is taking).
        valid = [Signal(name=f"s{k + 1}_valid") for k in range(n_stages)]
        load = [Signal(name=f"s{k + 1}_load") for k in range(n_stages)]
        m.d.comb += load[-1].eq(~valid[-1] | self.out.ready)
        for k in reversed(range(n_stages - 1)):
            m.d.comb += load[k].eq(~valid[k] | load[k + 1])
        m.d.comb += self.inp.ready.eq(load[0])
        prev = [self.inp.valid] + valid[:-1]
        for k in range(n_stages):
            with m.If(load[k]):
                m.d.sync += valid[k].eq(prev[k])

        def regs(name, shape, count=None):
            # Data registers need no reset: only the valid bits say what they hold.
            if count is None:
                return Signal(shape, name=name, reset_less=True)
            return [Signal(shape, name=f"{name}_{i}", reset_less=True) for i in range(count)]

        inp = self.inp.payload
        op = inp.op
        is_valid_op = Signal()
        m.d.comb += is_valid_op.eq(Cat(*(op == o for o in SimdOp)).any())

        # -- S1: operands. b is the multiplier operand, s the (clamped) rounding shift. -------
        s1_x = regs("s1_x", signed(acc), lanes)
        s1_y = regs("s1_y", signed(acc), lanes)
        s1_b = regs("s1_b", signed(bw), lanes)
        s1_op = regs("s1_op", SimdOp)
        s1_err, s1_sat = regs("s1_err", 1), regs("s1_sat", 1)
        s1_shift = regs("s1_shift", range(P + 1))
        s1_zp = regs("s1_zp", signed(acc))
        uses_shift = (op == SimdOp.SHR) | (op == SimdOp.REQUANT)
        # Shifts >= P leave nothing of any product, so clamping them to P changes no result and
        # bounds the rounding adder to P + 1 bits.
        shift = Mux(inp.shift > P, P, inp.shift)
        with m.If(load[0]):
            m.d.sync += [
                s1_op.eq(op),
                s1_err.eq(~is_valid_op),
                s1_sat.eq((op == SimdOp.SAT) | (op == SimdOp.REQUANT)),
                s1_shift.eq(Mux(uses_shift, shift, 0)),
                s1_zp.eq(Mux(op == SimdOp.REQUANT, inp.zero_point, 0)),
            ]
            for i in range(lanes):
                y = inp.y[0] if i == 0 else Mux(inp.broadcast, inp.y[0], inp.y[i])
                m.d.sync += [
                    s1_x[i].eq(inp.x[i]),
                    s1_y[i].eq(y),
                    s1_b[i].eq(Mux(op == SimdOp.MUL, y,
                                   Mux(op == SimdOp.REQUANT, inp.scale, 1))),
                ]

        # -- S2: the product, or the ALU result. -----------------------------------------------
        s2_p = regs("s2_p", signed(P), lanes)
        s2_err, s2_sat = regs("s2_err", 1), regs("s2_sat", 1)
        s2_shift, s2_zp = regs("s2_shift", range(P + 1)), regs("s2_zp", signed(acc))
        with m.If(load[1]):
            m.d.sync += [s2_err.eq(s1_err), s2_sat.eq(s1_sat), s2_shift.eq(s1_shift),
                         s2_zp.eq(s1_zp)]
            for i in range(lanes):
                x, y = s1_x[i], s1_y[i]
                with m.Switch(s1_op):
                    with m.Case(SimdOp.ADD):
                        m.d.sync += s2_p[i].eq((x + y)[:acc].as_signed())
                    with m.Case(SimdOp.SUB):
                        m.d.sync += s2_p[i].eq((x - y)[:acc].as_signed())
                    with m.Case(SimdOp.MIN):
                        m.d.sync += s2_p[i].eq(Mux(x < y, x, y))
                    with m.Case(SimdOp.MAX):
                        m.d.sync += s2_p[i].eq(Mux(x < y, y, x))
                    with m.Case(SimdOp.RELU):
                        m.d.sync += s2_p[i].eq(Mux(x < 0, 0, x))
                    with m.Case(SimdOp.MUL, SimdOp.SHR, SimdOp.SAT, SimdOp.REQUANT):
                        # Truncated to P bits: exact for REQUANT, SHR, SAT; MUL keeps acc_bits.
                        m.d.sync += s2_p[i].eq(x * s1_b[i])
                    with m.Default():  # invalid op: x passes through, error is flagged
                        m.d.sync += s2_p[i].eq(x)

        # -- S3: add the rounding nudge, half an output LSB minus one for negative values, so
        # the floor of S4's arithmetic shift rounds ties away from zero. ---------------------
        s3_t = regs("s3_t", signed(P + 1), lanes)
        s3_err, s3_sat = regs("s3_err", 1), regs("s3_sat", 1)
        s3_shift, s3_zp = regs("s3_shift", range(P + 1)), regs("s3_zp", signed(acc))
        half = Signal(unsigned(P), name="s2_half")
        m.d.comb += half.eq(Cat(*(s2_shift == j + 1 for j in range(P))))
        with m.If(load[2]):
            m.d.sync += [s3_err.eq(s2_err), s3_sat.eq(s2_sat), s3_shift.eq(s2_shift),
                         s3_zp.eq(s2_zp)]
            for i in range(lanes):
                neg = (s2_p[i] < 0) & (s2_shift != 0)
                m.d.sync += s3_t[i].eq(s2_p[i] + half - neg)

        # -- S4: arithmetic shift right. -------------------------------------------------------
        s4_r = regs("s4_r", signed(P + 1), lanes)
        s4_err, s4_sat, s4_zp = regs("s4_err", 1), regs("s4_sat", 1), regs("s4_zp", signed(acc))
        with m.If(load[3]):
            m.d.sync += [s4_err.eq(s3_err), s4_sat.eq(s3_sat), s4_zp.eq(s3_zp)]
            for i in range(lanes):
                m.d.sync += s4_r[i].eq(s3_t[i] >> s3_shift)

        # -- S5: zero point, then saturate (SAT, REQUANT) or keep the low acc_bits. ------------
        out = self.out.payload
        lo = Const(-(1 << (self.out_bits - 1)), signed(self.out_bits))
        hi = Const((1 << (self.out_bits - 1)) - 1, signed(self.out_bits))
        s5_data = regs("s5_data", signed(acc), lanes)
        s5_err = regs("s5_err", 1)
        with m.If(load[4]):
            m.d.sync += s5_err.eq(s4_err)
            for i in range(lanes):
                v = Signal(signed(P + 2), name=f"s4_v_{i}")
                m.d.comb += v.eq(s4_r[i] + s4_zp)
                clamped = Mux(v < lo, lo, Mux(v > hi, hi, v[:self.out_bits].as_signed()))
                m.d.sync += s5_data[i].eq(Mux(s4_sat, clamped, v[:acc].as_signed()))
        m.d.comb += [
            self.out.valid.eq(valid[-1]),
            out.error.eq(s5_err),
        ]
        for i in range(lanes):
            m.d.comb += out.data[i].eq(s5_data[i])
        return m
