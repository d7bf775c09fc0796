"""The matrix unit: an R x C output-stationary systolic array of multiply-accumulate PEs.

One *step* (column k of an A block on ``a``, row k of a B block on ``b``) enters per cycle and
adds the outer product A[:, k] B[k, :] into the R x C accumulators, one per PE. Steps are skewed
on entry so that PE (i, j) sees step k exactly ``i + j`` cycles after PE (0, 0): A values and the
step flags travel right along the rows, B values travel down the columns::

                     b[0]    b[1]    b[2]         [r]: a register
                      │      [r]     [r]
                      │       │      [r]            b: column j skewed by j
                      ▼       ▼       ▼
      a[0] ─────────► PE00 ─► PE01 ─► PE02 ─►
                      │       │       │
      a[1] ──[r]────► PE10 ─► PE11 ─► PE12 ─►       a + flags: row i skewed by i
                      │       │       │
      a[2] ──[r]─[r]► PE20 ─► PE21 ─► PE22 ─►       PE: p <= a * b
                      ┆done   ┆done   ┆done             sum = acc + p
                     bus0    bus1    bus2               acc <= last ? 0 : sum   (if valid)
                     [r]     [r]     [r]                done = valid & last
                     [r]     [r]      │             column bus j: the sum of the one PE of
                     [r]      │       │             column j with done; deskew: C - j registers
                      └───────┴───────┴──► output FIFO ──► c (row 0 first, last on row R-1)

The whole pipeline (input register, skew, PEs, column buses, deskew) advances together on one
enable, ``adv``, which is low only when the 2-entry output FIFO is full: so the array keeps
running while the inputs are idle (idle cycles become bubbles and an operation in flight
finishes), and stops only when ``c`` has been backpressured long enough to fill the FIFO.

There are no shadow registers to overwrite: in a step with ``last`` a PE's sum goes onto its
column bus while its accumulator restarts from zero, so the next operation's first step
accumulates into the PE in the very next cycle. Two results would meet on a column bus only if
two ``last`` steps entered less than R cycles apart (the R rows of a tile leave one row per
cycle), so a step with ``last`` is admitted only R cycles or more after the previous one.
Operations of K >= R steps therefore run back to back with every PE doing one MAC per cycle;
shorter ones are paced to R cycles each by the output bandwidth. See docs/matrix.md.
"""

from functools import reduce
from operator import or_

from amaranth.hdl import EnableInserter, Module, Mux, Signal, Value, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..layouts import matrix_a_layout, matrix_b_layout, matrix_c_layout
from ..noc.fifo import Fifo

__all__ = ["IntFormat", "ProcessingElement", "MatrixUnit", "STEP_CTRL_LAYOUT",
           "back_to_back_cycles", "output_latency"]


def _check_int(what, value, lo, hi):
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"Matrix unit {what} must be an integer in {lo}..{hi}, not {value!r}")


#: The flags of a step as it travels through the array with its A values: ``last`` ends the
#: tile (and zeroes the accumulators); ``valid`` = 0 with ``last`` = 1 is a clear, no step.
STEP_CTRL_LAYOUT = data.StructLayout({"valid": 1, "last": 1})


class IntFormat:
    """Element arithmetic of the matrix unit: signed two's-complement integers.

    The processing element asks its format for every shape and operation, so another number
    format (BF16, CFP8; SPEC §6) slots in by providing the same members.

    Parameters
    ----------
    data_bits : int
        Width of the operands (2..32).
    acc_bits : int
        Width of the accumulators (2 x ``data_bits``..64); sums wrap in two's complement.

    Members
    -------
    operand_shape, product_shape, acc_shape : Shape
        Shapes of an A/B element, of a product and of an accumulator.

    Raises
    ------
    ValueError
        If a width is out of range.
    """

    def __init__(self, data_bits, acc_bits):
        _check_int("data_bits", data_bits, 2, 32)
        _check_int("acc_bits", acc_bits, 2 * data_bits, 64)
        self.data_bits = data_bits
        self.acc_bits = acc_bits

    @property
    def operand_shape(self):
        return signed(self.data_bits)

    @property
    def product_shape(self):
        return signed(2 * self.data_bits)

    @property
    def acc_shape(self):
        return signed(self.acc_bits)

    def multiply(self, a, b):
        """The exact product of two operands (fits ``product_shape``)."""
        return a * b

    def accumulate(self, acc, product):
        """``acc + product`` wrapped to ``acc_shape``."""
        return (acc + product).as_unsigned()[:self.acc_bits].as_signed()

    def __eq__(self, other):
        return (type(other) is type(self) and other.data_bits == self.data_bits
                and other.acc_bits == self.acc_bits)

    def __hash__(self):
        return hash((type(self), self.data_bits, self.acc_bits))

    def __repr__(self):
        return f"IntFormat({self.data_bits}, {self.acc_bits})"


class ProcessingElement(wiring.Component):
    """One PE of the output-stationary array: a two-stage multiply-accumulate.

    Cycle t (with ``en``): the step's A and B values and flags arrive on ``*_in``; the product is
    registered and the inputs are passed on through ``*_out`` (to the PE on the right / below).
    Cycle t + 1, the accumulate stage (flags on ``ctrl_out``): ``sum`` is ``acc + product``; a
    valid step stores it in ``acc``, except a step with ``last``: its ``sum`` is the tile result
    (``done``) and ``acc`` restarts from zero. A clear (``valid`` = 0, ``last`` = 1) only zeroes
    ``acc``.

    Zeroing goes through the flip-flops' synchronous reset, so nothing sits between ``acc`` and
    the adder: a ``(first ? 0 : acc)`` multiplexer there would cost one LUT per accumulator bit.

    Parameters
    ----------
    fmt : IntFormat
        Element arithmetic.

    Members
    -------
    a_in, b_in : In(fmt.operand_shape)
    ctrl_in : In(STEP_CTRL_LAYOUT)
    en : In(1)
        The array advances this cycle: every register of the PE holds while it is low.
    a_out, b_out : Out(fmt.operand_shape)
        ``a_in`` / ``b_in`` delayed by one cycle.
    ctrl_out : Out(STEP_CTRL_LAYOUT)
        ``ctrl_in`` delayed by one cycle (also the control of this PE's accumulate stage).
    sum : Out(fmt.acc_shape)
        ``acc + product`` (wrapped), combinationally.
    done : Out(1)
        ``sum`` is a finished tile result this cycle (a valid step with ``last``).
    """

    def __init__(self, fmt):
        self.fmt = fmt
        super().__init__({
            "a_in": In(fmt.operand_shape), "b_in": In(fmt.operand_shape),
            "ctrl_in": In(STEP_CTRL_LAYOUT), "en": In(1),
            "a_out": Out(fmt.operand_shape), "b_out": Out(fmt.operand_shape),
            "ctrl_out": Out(STEP_CTRL_LAYOUT),
            "sum": Out(fmt.acc_shape), "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        fmt = self.fmt
        product = Signal(fmt.product_shape)
        acc = Signal(fmt.acc_shape)
        with m.If(self.en):
            m.d.sync += [
                self.a_out.eq(self.a_in),
                self.b_out.eq(self.b_in),
                self.ctrl_out.eq(self.ctrl_in),
                product.eq(fmt.multiply(self.a_in, self.b_in)),
            ]
        ctrl = self.ctrl_out  # the step whose product is in ``product`` now
        m.d.comb += [
            self.sum.eq(fmt.accumulate(acc, product)),
            self.done.eq(ctrl.valid & ctrl.last),
        ]
        # The zeroing condition includes ``en`` instead of sitting inside it: Yosys maps a reset
        # that overrides the enable onto the ECP5 flip-flops' LSR, but a reset under an enable
        # (an EnableInserter around this) becomes the LUT multiplexer this PE is built to avoid.
        with m.If(self.en & ctrl.last):
            m.d.sync += acc.eq(0)
        with m.Elif(self.en & ctrl.valid):
            m.d.sync += acc.eq(self.sum)
        return m


def output_latency(cols):
    """Cycles from accepting a step with ``last`` to row 0 of its tile on ``c``: input register,
    product, accumulate (into the column bus register), C-1 deskew stages and the output FIFO."""
    return cols + 3


def back_to_back_cycles(rows, cols, op_steps):
    """Cycles from the first accepted step to the last ``c`` beat for back-to-back operations of
    ``op_steps`` steps each (a list), with no idle input and no backpressure: the exact figure
    the RTL achieves (the tests and the benchmark check it).

    Raises
    ------
    ValueError
        If ``op_steps`` is empty or holds a count below 1.
    """
    ops = list(op_steps)
    if not ops or any(not isinstance(k, int) or k < 1 for k in ops):
        raise ValueError(f"op_steps must be a non-empty list of positive step counts, "
                         f"not {op_steps!r}")
    # The step with ``last`` of an operation is taken at its place in the stream, but no
    # earlier than ``rows`` cycles after the previous one (admission rule).
    t = ops[0] - 1
    for k in ops[1:]:
        t += max(k, rows)
    return t + output_latency(cols) + rows


class MatrixUnit(wiring.Component):
    """R x C output-stationary systolic array (see the module docstring for the dataflow).

    Parameters
    ----------
    rows, cols : int
        Array size R x C (1..64 each): the C tile is R x C.
    data_bits : int
        Width of the signed A and B elements (2..32).
    acc_bits : int
        Width of the accumulators and of the C elements (2 x ``data_bits``..64); sums wrap in
        two's complement exactly as :func:`tilemesh.model.reference.matmul_tiles`.

    Members
    -------
    a : In(stream.Signature(matrix_a_layout(rows, data_bits)))
        Column k of the A block for one step; ``first`` clears the accumulators before this
        step, ``last`` ends the output tile after it and zeroes them (a step after ``last``
        starts a new sum, with or without ``first``). One step consumes one ``a`` and one ``b``
        beat together; a ``first`` that ends an open accumulation (steps since the last
        ``last``) takes one extra cycle.
    b : In(stream.Signature(matrix_b_layout(cols, data_bits)))
        Row k of the B block.
    c : Out(stream.Signature(matrix_c_layout(cols, acc_bits)))
        The C tile of each step with ``last``: R beats, row 0 first, ``last`` on row R-1.
    fmt : IntFormat
        The element arithmetic.

    Raises
    ------
    ValueError
        If a parameter is out of range; the message names it, its value and the range.
    """

    def __init__(self, rows, cols, data_bits, acc_bits, *, src_loc_at=0):
        _check_int("rows", rows, 1, 64)
        _check_int("cols", cols, 1, 64)
        self.fmt = IntFormat(data_bits, acc_bits)
        self.rows, self.cols = rows, cols
        self.data_bits, self.acc_bits = data_bits, acc_bits
        super().__init__({
            "a": In(stream.Signature(matrix_a_layout(rows, self.fmt.operand_shape))),
            "b": In(stream.Signature(matrix_b_layout(cols, self.fmt.operand_shape))),
            "c": Out(stream.Signature(matrix_c_layout(cols, self.fmt.acc_shape))),
        }, src_loc_at=1 + src_loc_at)

    @classmethod
    def from_config(cls, tile):
        """The matrix unit of a :class:`tilemesh.config.TileConfig`."""
        return cls(tile.pe_rows, tile.pe_cols, tile.data_bits, tile.acc_bits, src_loc_at=1)

    @property
    def latency(self):
        """Cycles from accepting a step with ``last`` to row 0 of its tile on ``c`` (no stalls);
        row R-1 follows R-1 cycles later."""
        return output_latency(self.cols)

    @property
    def min_op_steps(self):
        """Steps with ``last`` are admitted at most once every ``rows`` cycles (the output
        bandwidth): operations of at least this many steps run back to back without a gap."""
        return self.rows

    def cycles(self, op_steps):
        """See :func:`back_to_back_cycles` (for this array's size)."""
        return back_to_back_cycles(self.rows, self.cols, op_steps)

    def elaborate(self, platform):
        m = Module()
        R, C, fmt = self.rows, self.cols, self.fmt

        # Everything except the output FIFO advances on ``adv``; the FIFO's ready is a flip-flop,
        # so ``adv`` (which fans out to every register of the array) carries no logic from ``c``.
        m.submodules.out_fifo = fifo = Fifo(matrix_c_layout(C, fmt.acc_shape), depth=2)
        wiring.connect(m, wiring.flipped(self.c), fifo.r)
        adv = Signal()
        m.d.comb += adv.eq(fifo.w.ready)

        core = Module()
        m.submodules.core = EnableInserter(adv)(core)

        # -- admission: join a and b; a step with ``last`` waits until R cycles after the last one.
        # A step with ``first`` while an accumulation is open (no ``last`` since its steps) is
        # held for one cycle while a clear goes ahead of it; after ``last`` or reset the
        # accumulators are zero already, so ``first`` costs nothing there.
        since_last = Signal(range(R + 1), init=R)
        is_open = Signal()
        clear = Signal()
        last_ok = Signal()
        gate = Signal()
        take = Signal()
        m.d.comb += [
            clear.eq(self.a.valid & self.a.payload.first & is_open),
            last_ok.eq(~self.a.payload.last | (since_last == R)),
            gate.eq(adv & last_ok & ~clear),
            self.a.ready.eq(gate & self.b.valid),
            self.b.ready.eq(gate & self.a.valid),
            take.eq(gate & self.a.valid & self.b.valid),
        ]
        with core.If(take & self.a.payload.last):
            core.d.sync += since_last.eq(1)
        with core.Elif(since_last != R):
            core.d.sync += since_last.eq(since_last + 1)
        with core.If(take):
            core.d.sync += is_open.eq(~self.a.payload.last)
        with core.Elif(clear):
            core.d.sync += is_open.eq(0)

        # -- input register: a bubble (valid = 0) when no step was taken
        in_ctrl = Signal(STEP_CTRL_LAYOUT)
        in_a = Signal(data.ArrayLayout(fmt.operand_shape, R))
        in_b = Signal(data.ArrayLayout(fmt.operand_shape, C))
        core.d.sync += [
            in_ctrl.valid.eq(take),
            in_ctrl.last.eq((take & self.a.payload.last) | clear),
            in_a.eq(self.a.payload.data),
            in_b.eq(self.b.payload),
        ]

        # -- skew: row i (A values and flags) delayed by i cycles, column j (B values) by j
        def delay(name, value, shape, n):
            for s in range(n):
                reg = Signal(shape, name=f"{name}_d{s}")
                core.d.sync += reg.eq(value)
                value = reg
            return value

        row_a = [delay(f"skew_a{i}", in_a[i], fmt.operand_shape, i) for i in range(R)]
        row_ctrl = [delay(f"skew_ctrl{i}", in_ctrl, STEP_CTRL_LAYOUT, i) for i in range(R)]
        col_b = [delay(f"skew_b{j}", in_b[j], fmt.operand_shape, j) for j in range(C)]

        # -- the PE grid (outside ``core``: each PE takes ``adv`` as its own enable)
        pes = [[ProcessingElement(fmt) for _ in range(C)] for _ in range(R)]
        for i in range(R):
            for j in range(C):
                pe = pes[i][j]
                m.submodules[f"pe_{i}_{j}"] = pe
                core.d.comb += pe.en.eq(adv)
                if j == 0:
                    core.d.comb += [pe.a_in.eq(row_a[i]), pe.ctrl_in.eq(row_ctrl[i])]
                else:
                    left = pes[i][j - 1]
                    core.d.comb += [pe.a_in.eq(left.a_out), pe.ctrl_in.eq(left.ctrl_out)]
                core.d.comb += pe.b_in.eq(col_b[j] if i == 0 else pes[i - 1][j].b_out)

        # -- drain: column bus (at most one PE per column is done: see admission), then deskew
        out_data = []
        for j in range(C):
            bus = Signal(fmt.acc_shape, name=f"bus{j}")
            core.d.comb += bus.eq(reduce(or_, [Mux(pes[i][j].done, Value.cast(pes[i][j].sum), 0)
                                               for i in range(R)]))
            out_data.append(delay(f"deskew{j}", bus, fmt.acc_shape, C - j))
        out_valid = delay("row_valid", reduce(or_, [pes[i][C - 1].done for i in range(R)]), 1, 1)
        out_last = delay("row_last", pes[R - 1][C - 1].done, 1, 1)

        m.d.comb += [
            fifo.w.valid.eq(out_valid),
            fifo.w.payload.last.eq(out_last),
        ]
        m.d.comb += [fifo.w.payload.data[j].eq(out_data[j]) for j in range(C)]
        return m
