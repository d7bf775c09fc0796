# amaranth: UnusedElaboratable=no
"""Amaranth-simulator tests of the matrix unit against the numpy reference.

One testbench drives all three streams cycle by cycle, so random idle cycles on ``a`` and ``b``
(independently) and random backpressure on ``c`` are exact and reproducible from the printed
seed, and cycle counts can be asserted exactly.
"""

import random

import numpy as np
import pytest
from amaranth.hdl import signed
from amaranth.lib import data
from amaranth.sim import Simulator

from tilemesh.config import TileConfig, preset
from tilemesh.layouts import matrix_a_layout, matrix_b_layout, matrix_c_layout
from tilemesh.model.reference import gemm, matmul_tiles, tile_steps, wrap
from tilemesh.tile.matrix import IntFormat, MatrixUnit, back_to_back_cycles
from tilemesh_sim.matrix_bench import Program, back_to_back_program, random_program


def simulate(dut, program, *, idle=0.0, stall=0.0, seed=0, max_cycles=None, hold_c=0):
    """Run ``program`` through ``dut``; return (rows, trace).

    ``rows`` are the received ``c`` beats as (data, last); ``trace`` has the cycle numbers of
    accepted steps and of received rows. ``hold_c`` keeps ``c.ready`` low for that many cycles
    first (a long backpressure). Checks the stream protocol on ``c`` every cycle.
    """
    rnd = random.Random(seed)
    rnd_a, rnd_b, rnd_c = (random.Random(rnd.random()) for _ in range(3))
    a_beats, b_beats = program.a_beats(), program.b_beats()
    n_rows = len(program.tiles(dut.acc_bits)) * dut.rows
    max_cycles = max_cycles or 40 * (program.steps + n_rows) + 200
    rows, trace = [], {"a": [], "c": [], "cycles": 0}

    async def bench(ctx):
        sa = sb = 0          # next step to offer on a / b
        offer_a = offer_b = False
        held = None
        for cycle in range(max_cycles):
            # A driver decides to idle only between beats: once valid, it holds until taken.
            if not offer_a and sa < len(a_beats) and rnd_a.random() >= idle:
                offer_a = True
                ctx.set(dut.a.payload, a_beats[sa])
            if not offer_b and sb < len(b_beats) and rnd_b.random() >= idle:
                offer_b = True
                ctx.set(dut.b.payload, b_beats[sb])
            ctx.set(dut.a.valid, offer_a)
            ctx.set(dut.b.valid, offer_b)
            ready = cycle >= hold_c and rnd_c.random() >= stall
            ctx.set(dut.c.ready, ready)
            took_a = offer_a and ctx.get(dut.a.ready)
            took_b = offer_b and ctx.get(dut.b.ready)
            assert took_a == took_b, f"cycle {cycle}: a and b taken apart"
            c_valid = ctx.get(dut.c.valid)
            payload = ctx.get(dut.c.payload) if c_valid else None
            value = (([int(v) for v in payload.data], int(payload.last))
                     if payload is not None else None)
            assert held is None or value == held, f"cycle {cycle}: c changed a waiting beat"
            held = value if c_valid and not ready else None
            if took_a:
                trace["a"].append(cycle)
                sa, offer_a = sa + 1, False
            if took_b:
                sb, offer_b = sb + 1, False
            if c_valid and ready:
                rows.append(value)
                trace["c"].append(cycle)
            await ctx.tick()
            if len(rows) == n_rows and sa == len(a_beats):
                trace["cycles"] = cycle
                break
        else:
            raise AssertionError(f"timeout: {len(rows)} of {n_rows} rows, {sa} of "
                                 f"{len(a_beats)} steps after {max_cycles} cycles")
        # Nothing more may come out.
        ctx.set(dut.c.ready, 1)
        for _ in range(dut.cols + dut.rows + 8):
            assert not ctx.get(dut.c.valid), "an extra row came out"
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return rows, trace


def expected_rows(program, acc_bits):
    return [([int(v) for v in row], int(i == len(tile) - 1))
            for tile in program.tiles(acc_bits) for i, row in enumerate(tile)]


def check(dut, program, **kw):
    rows, trace = simulate(dut, program, **kw)
    want = expected_rows(program, dut.acc_bits)
    assert len(rows) == len(want)
    for n, (g, w) in enumerate(zip(rows, want, strict=True)):
        assert g == w, f"tile {n // dut.rows} row {n % dut.rows}: got {g}, expected {w}"
    return trace


# -- random operations, gaps and backpressure ---------------------------------------------------

@pytest.mark.parametrize("rows,cols,data_bits,acc_bits,seed", [
    (1, 1, 8, 16, 11),
    (2, 3, 4, 8, 12),     # accumulators of 2 x data_bits wrap all the time
    (3, 2, 16, 32, 13),
    (4, 4, 8, 32, 14),
])
def test_random_ops_with_gaps_and_backpressure(rows, cols, data_bits, acc_bits, seed):
    print(f"seed {seed}")
    rnd = random.Random(seed)
    dut = MatrixUnit(rows, cols, data_bits, acc_bits)
    program = random_program(rnd, rows, cols, data_bits, 14)
    check(dut, program, idle=0.3, stall=0.3, seed=seed)


@pytest.mark.parametrize("idle,stall", [(0.0, 0.7), (0.7, 0.0), (0.0, 0.0)])
def test_extreme_gaps_or_backpressure(idle, stall):
    seed = 21
    print(f"seed {seed}")
    rnd = random.Random(seed)
    dut = MatrixUnit(3, 3, 6, 12)
    check(dut, random_program(rnd, 3, 3, 6, 10), idle=idle, stall=stall, seed=seed)


def test_wrap_at_the_extremes():
    """Every product is (-2**(d-1))**2 = 2**(2d-2): with acc_bits = 2d the sum wraps every
    other step; mixed with max values, and a second sum started by ``last`` alone (no ``first``)."""
    d, acc = 5, 10
    lo, hi = -(1 << (d - 1)), (1 << (d - 1)) - 1
    R, C, K = 2, 2, 7
    a = np.full((K, R), lo)
    b = np.full((K, C), lo)
    b[:, 1] = hi
    first = np.zeros(K, bool)
    last = np.zeros(K, bool)
    first[0], last[2], last[6] = True, True, True   # after last, the sum restarts
    program = Program(a, b, first, last, [3, 4])
    dut = MatrixUnit(R, C, d, acc)
    rows, _ = simulate(dut, program)
    # Independent of numpy: Python integers wrapped by hand.
    def w(x):
        return ((x + (1 << (acc - 1))) % (1 << acc)) - (1 << (acc - 1))
    want = []
    for k in (3, 4):
        for i in range(R):
            want.append(([w(k * lo * lo), w(k * lo * hi)], int(i == R - 1)))
    assert rows == want
    assert rows == expected_rows(program, acc)


# -- dataflow and timing ------------------------------------------------------------------------

@pytest.mark.parametrize("rows,cols,k", [(4, 4, 4), (4, 4, 9), (2, 3, 16), (4, 2, 3)])
def test_back_to_back_cycle_count(rows, cols, k):
    """No idle and no backpressure: operations of K >= R steps are taken one step per cycle
    with no gap between operations; shorter ones are paced to one per R cycles. The total is
    exactly :meth:`MatrixUnit.cycles` (the figure the benchmark reports)."""
    ops = 5
    dut = MatrixUnit(rows, cols, 8, 32)
    program = back_to_back_program(random.Random(k), rows, cols, 8, ops, k)
    trace = check(dut, program)
    accepted = trace["a"]
    total = trace["c"][-1] - accepted[0] + 1
    assert total == dut.cycles([k] * ops)
    if k >= rows:
        assert accepted == list(range(accepted[0], accepted[0] + ops * k)), "a gap in the input"
        assert total == ops * k - 1 + dut.latency + rows
    else:
        lasts = [accepted[n * k + k - 1] for n in range(ops)]
        assert np.diff(lasts).tolist() == [rows] * (ops - 1)
    # Rows of one tile leave on consecutive cycles, row 0 first.
    firsts = trace["c"][::rows]
    for n, c0 in enumerate(firsts):
        assert trace["c"][n * rows:(n + 1) * rows] == list(range(c0, c0 + rows))


def test_latency_and_idle_drain():
    """One operation, then idle inputs: the op finishes from bubbles alone; row 0 appears
    ``latency`` cycles after its last step is taken."""
    dut = MatrixUnit(3, 5, 8, 32)
    rnd = np.random.default_rng(3)
    A, B = rnd.integers(-128, 128, (3, 6)), rnd.integers(-128, 128, (6, 5))
    program = Program(*tile_steps(A, B), [6])
    rows, trace = simulate(dut, program)
    assert [r for r, _ in rows] == gemm(A, B, 32).tolist()
    assert trace["c"][0] - trace["a"][-1] == dut.latency
    assert trace["c"] == list(range(trace["c"][0], trace["c"][0] + 3))


def test_long_backpressure_stalls_without_loss():
    """``c`` held not ready for 200 cycles while 6 tiles are sent: the output FIFO fills, the
    array stops (inputs are refused), and every row arrives afterwards, in order."""
    rnd = random.Random(5)
    dut = MatrixUnit(2, 2, 8, 20)
    program = back_to_back_program(rnd, 2, 2, 8, 6, 3)
    trace = check(dut, program, hold_c=200)
    assert trace["c"][0] == 200
    # The array stalled: not all 18 steps can be taken while 2 rows fill the FIFO ...
    assert sum(1 for t in trace["a"] if t < 200) < program.steps
    # ... and the stall releases as soon as c drains.
    assert trace["a"][-1] < 200 + 20


def test_first_without_previous_tile_starts_from_zero():
    """Accumulators reset to zero: an operation without ``first`` right after reset adds to 0;
    a ``first`` in the middle restarts the sum."""
    a = np.array([[1], [2], [3], [4]])
    b = np.array([[10], [100], [1000], [7]])
    first = np.array([False, False, True, False])
    last = np.array([False, True, False, True])
    program = Program(a, b, first, last, [2, 2])
    rows, _ = simulate(MatrixUnit(1, 1, 12, 32), program)
    assert rows == [([210], 1), ([3028], 1)]


@pytest.mark.parametrize("restart", [False, True])
def test_first_in_an_open_accumulation_costs_one_cycle(restart):
    """Back-to-back steps: a sum chained over three operations (``last`` only at the end), or
    the same steps with ``first`` on the second operation while the sum is open: the restart
    clears the accumulators one cycle ahead of its step, so the input pauses exactly once."""
    rnd = np.random.default_rng(8)
    R, C, K = 2, 3, 4
    a, b = rnd.integers(-100, 100, (3 * K, R)), rnd.integers(-100, 100, (3 * K, C))
    first = np.zeros(3 * K, bool)
    last = np.zeros(3 * K, bool)
    first[0], first[K], last[-1] = True, restart, True
    program = Program(a, b, first, last, [K] * 3)
    dut = MatrixUnit(R, C, 8, 32)
    rows, trace = simulate(dut, program)
    lo = K if restart else 0
    want = gemm(a[lo:].T, b[lo:], 32)
    assert [r for r, _ in rows] == want.tolist()
    gaps = np.diff(trace["a"]).tolist()
    assert gaps == [1] * (K - 1) + [1 + restart] + [1] * (2 * K - 1)


# -- interface and parameters -------------------------------------------------------------------

def test_ports_use_the_shared_layouts():
    dut = MatrixUnit(3, 5, 6, 20)
    assert dut.a.payload.shape() == matrix_a_layout(3, 6)
    assert dut.b.payload.shape() == matrix_b_layout(5, 6)
    assert dut.c.payload.shape() == matrix_c_layout(5, 20)
    assert matrix_b_layout(5, 6) == data.ArrayLayout(signed(6), 5)
    assert matrix_c_layout(5, 20).size == 5 * 20 + 1


def test_from_config():
    dut = MatrixUnit.from_config(preset("large").tile)
    assert (dut.rows, dut.cols, dut.data_bits, dut.acc_bits) == (8, 8, 8, 32)
    dut = MatrixUnit.from_config(TileConfig(pe_rows=2, pe_cols=5, data_bits=4, acc_bits=9))
    assert dut.fmt == IntFormat(4, 9)
    assert (dut.rows, dut.cols) == (2, 5)


@pytest.mark.parametrize("args,match", [
    ((0, 4, 8, 32), r"^Matrix unit rows must be an integer in 1\.\.64, not 0$"),
    ((4, 65, 8, 32), r"^Matrix unit cols must be an integer in 1\.\.64, not 65$"),
    ((4, 4.0, 8, 32), r"^Matrix unit cols must be an integer in 1\.\.64, not 4\.0$"),
    ((4, 4, 1, 32), r"^Matrix unit data_bits must be an integer in 2\.\.32, not 1$"),
    ((4, 4, True, 32), r"^Matrix unit data_bits must be an integer in 2\.\.32, not True$"),
    ((4, 4, 8, 15), r"^Matrix unit acc_bits must be an integer in 16\.\.64, not 15$"),
    ((4, 4, 8, 65), r"^Matrix unit acc_bits must be an integer in 16\.\.64, not 65$"),
])
def test_bad_parameters(args, match):
    with pytest.raises(ValueError, match=match):
        MatrixUnit(*args)


def test_cycles_rejects_bad_op_lists():
    with pytest.raises(ValueError, match=r"op_steps must be a non-empty list"):
        back_to_back_cycles(2, 2, [])
    with pytest.raises(ValueError, match=r"op_steps must be a non-empty list"):
        back_to_back_cycles(2, 2, [4, 0])


# -- the reference itself -----------------------------------------------------------------------

def test_reference_matches_python_integers():
    """matmul_tiles and gemm against an independent big-integer computation."""
    rnd = random.Random(7)
    for acc_bits in (8, 16, 33, 64):
        a = [[rnd.randint(-2**15, 2**15 - 1) for _ in range(5)] for _ in range(3)]
        b = [[rnd.randint(-2**15, 2**15 - 1) for _ in range(4)] for _ in range(5)]
        exact = [[sum(a[i][k] * b[k][j] for k in range(5)) for j in range(4)] for i in range(3)]
        half = 1 << (acc_bits - 1)
        want = [[(x + half) % (2 * half) - half for x in row] for row in exact]
        assert gemm(a, b, acc_bits).tolist() == want
        assert matmul_tiles(*tile_steps(a, b), acc_bits)[0].tolist() == want


def test_reference_64_bit_accumulators_wrap():
    big = -(1 << 31)
    a = np.full((1, 4), big)
    b = np.full((4, 1), big)          # 4 * 2**62 = 2**64: wraps to 0 in 64 bits
    assert gemm(a, b, 64).tolist() == [[0]]
    assert matmul_tiles(*tile_steps(a, b), 64).tolist() == [[[0]]]
    assert wrap(2**62 * 3, 64) == -(2**62)


def test_reference_chaining_and_errors():
    a = np.array([[1, 2], [3, 4], [5, 6]])   # 3 steps of a 1x2... R = 2
    b = np.array([[1], [1], [1]])
    tiles = matmul_tiles(a, b, [True, False, False], [False, True, True], 32)
    assert tiles.tolist() == [[[4], [6]], [[5], [6]]]      # last zeroes the accumulators
    tiles = matmul_tiles(a, b, [True, True, False], [False, False, True], 32)
    assert tiles.tolist() == [[[8], [10]]]                  # first restarts an open sum
    assert matmul_tiles(a, b, [False] * 3, [False] * 3, 32).shape == (0, 2, 1)
    with pytest.raises(ValueError, match=r"matmul_tiles needs"):
        matmul_tiles(a, b[:2], [True] * 3, [True] * 3, 32)
    with pytest.raises(ValueError, match=r"gemm needs an M x K and a K x N matrix"):
        gemm(a, a, 32)
    with pytest.raises(ValueError, match=r"a tile operation needs"):
        tile_steps(np.zeros((2, 0)), np.zeros((0, 2)))
