"""cocotb bench of the matrix unit, in the shape of cocotb's matrix_multiplier example: a driver
(the ``a`` and ``b`` streams, each with its own random idle cycles), a monitor (``c``, random
backpressure, plus a protocol check), the numpy reference as the model and an in-order
scoreboard.

The stimulus generator (:func:`random_program`, :func:`back_to_back_program`) is plain Python:
the Amaranth-simulator unit tests and ``tilemesh bench matrix`` draw from the same distribution.

Parameters (``run_cocotb(params=...)``): ``rows``, ``cols``, ``data_bits``, ``acc_bits``;
test ``random_ops_with_gaps_and_backpressure``: ``ops``, ``idle``, ``stall``;
test ``measured_runs``: ``runs`` (a list of run specs, see :func:`program_from_spec`) and
``out`` (path of the JSON results); test ``free_running_speed``: ``cycles``, ``out``.
"""

import json
import random
import time
from dataclasses import dataclass

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge, Timer

from tilemesh.layouts import matrix_a_layout, matrix_b_layout, matrix_c_layout
from tilemesh.model.reference import matmul_tiles
from tilemesh_sim.streams import StreamDriver, StreamMonitor, pack, params, reset, rng, start_clock

__all__ = ["Program", "random_program", "back_to_back_program", "program_from_spec"]


# -- stimulus (no simulator needed) -------------------------------------------------------------

@dataclass
class Program:
    """A sequence of steps for the matrix unit and the operations it was built from.

    Members
    -------
    a, b : ndarray (S, R), (S, C)
        The ``a`` data and ``b`` beats of each step.
    first, last : ndarray (S,) of bool
    op_steps : list of int
        Steps of each operation (a run of steps; the last one has ``last`` unless the
        operation chains into the next one).
    """

    a: np.ndarray
    b: np.ndarray
    first: np.ndarray
    last: np.ndarray
    op_steps: list

    @property
    def steps(self):
        return len(self.first)

    def tiles(self, acc_bits):
        """The C tiles the reference expects (T, R, C)."""
        return matmul_tiles(self.a, self.b, self.first, self.last, acc_bits)

    def a_beats(self):
        return [{"data": [int(v) for v in self.a[s]], "first": int(self.first[s]),
                 "last": int(self.last[s])} for s in range(self.steps)]

    def b_beats(self):
        return [[int(v) for v in self.b[s]] for s in range(self.steps)]

    def macs(self):
        """Useful multiply-accumulates: every step is R x C of them."""
        return self.steps * self.a.shape[1] * self.b.shape[1]


def _values(rnd, shape, bits, mode):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    size = int(np.prod(shape))
    if mode == "min":      # the largest positive product, every step: accumulators wrap soonest
        vals = [lo] * size
    elif mode == "extreme":
        vals = [rnd.choice((lo, hi, lo + 1, -1, 0, 1)) for _ in range(size)]
    elif mode == "small":
        vals = [rnd.randint(max(lo, -3), min(hi, 3)) for _ in range(size)]
    else:
        vals = [rnd.randint(lo, hi) for _ in range(size)]
    return np.array(vals, dtype=np.int64).reshape(shape)


def random_program(rnd, rows, cols, data_bits, ops, *, k_max=None, chain=0.2):
    """``ops`` random operations: step counts from 1 (and below R: the output-paced case) to
    ``k_max`` (default 3 x max(R, C) + 4); values uniform, small, extreme or all the minimum
    (wrap-around). With probability ``chain`` an operation leaves ``last`` off, so the next one
    continues its sum (and mostly leaves ``first`` off; with ``first`` it restarts an open
    accumulation); after ``last``, ``first`` is set or not at random (the sum restarts either
    way). The last operation ends with ``last``."""
    k_max = k_max or 3 * max(rows, cols) + 4
    a, b, first, last, op_steps = [], [], [], [], []
    open_sum = False
    for n in range(ops):
        k = rnd.choice([1, 2, max(1, rows - 1), rows, rows + 1, rnd.randint(1, k_max),
                        rnd.randint(1, k_max)])
        mode = rnd.choice(["uniform", "uniform", "small", "extreme", "min"])
        a.append(_values(rnd, (k, rows), data_bits, mode))
        b.append(_values(rnd, (k, cols), data_bits, mode))
        f = np.zeros(k, dtype=bool)
        e = np.zeros(k, dtype=bool)
        f[0] = rnd.random() < (0.2 if open_sum else 0.8)
        if k > 2 and rnd.random() < 0.05:   # a ``first`` inside an operation restarts the sum
            f[rnd.randint(1, k - 1)] = True
        e[-1] = n == ops - 1 or rnd.random() >= chain
        open_sum = not e[-1]
        first.append(f)
        last.append(e)
        op_steps.append(k)
    return Program(np.concatenate(a), np.concatenate(b), np.concatenate(first),
                   np.concatenate(last), op_steps)


def back_to_back_program(rnd, rows, cols, data_bits, ops, k):
    """``ops`` operations of ``k`` steps each with uniform random values, each starting with
    ``first`` (the benchmark workload)."""
    steps = ops * k
    first = np.zeros(steps, dtype=bool)
    last = np.zeros(steps, dtype=bool)
    first[::k] = True
    last[k - 1::k] = True
    return Program(_values(rnd, (steps, rows), data_bits, "uniform"),
                   _values(rnd, (steps, cols), data_bits, "uniform"), first, last, [k] * ops)


def program_from_spec(spec, rows, cols, data_bits):
    """A program from a JSON-able spec: ``{"kind": "back_to_back", "k": K, "ops": N, "seed": S}``
    or ``{"kind": "random", "ops": N, "seed": S}`` (optionally ``"k_max"``, ``"chain"``)."""
    rnd = random.Random(spec.get("seed", 1))
    if spec["kind"] == "back_to_back":
        return back_to_back_program(rnd, rows, cols, data_bits, spec["ops"], spec["k"])
    if spec["kind"] == "random":
        return random_program(rnd, rows, cols, data_bits, spec["ops"],
                              k_max=spec.get("k_max"), chain=spec.get("chain", 0.2))
    raise ValueError(f"run kind must be 'back_to_back' or 'random', not {spec['kind']!r}")


# -- cocotb bench -------------------------------------------------------------------------------

class MatrixDriver:
    """Drives the steps of a program: ``a`` and ``b`` beats through two independent stream
    drivers, each inserting random idle cycles (the unit joins them)."""

    def __init__(self, dut, p, rnd, idle):
        self.a = StreamDriver(dut, "a", matrix_a_layout(p["rows"], p["data_bits"]),
                              rnd=random.Random(rnd.random()), idle=idle)
        self.b = StreamDriver(dut, "b", matrix_b_layout(p["cols"], p["data_bits"]),
                              rnd=random.Random(rnd.random()), idle=idle)

    def pack(self, program):
        """The raw ``a`` and ``b`` beats of ``program`` (packed ahead, out of the timed loop)."""
        return ([pack(self.a.layout, v) for v in program.a_beats()],
                [pack(self.b.layout, v) for v in program.b_beats()])

    async def send(self, beats):
        a_bits, b_bits = beats
        task_b = cocotb.start_soon(self.b.send_all(b_bits))
        await self.a.send_all(a_bits)
        await task_b


class RowMonitor:
    """Collects ``c`` rows under random backpressure, and checks the stream protocol every
    cycle: once ``valid`` is high it stays high with the same payload until ``ready``. Also
    records the cycles of the first accepted step and of the last row (for utilisation)."""

    def __init__(self, dut, p, rnd, stall):
        self.dut = dut
        self.layout = matrix_c_layout(p["cols"], p["acc_bits"])
        self.stream = StreamMonitor(dut, "c", self.layout, rnd=random.Random(rnd.random()),
                                    stall=stall)
        self.protocol_errors = []
        self.cycle = 0
        self.first_accept = None
        self.last_row = None
        self._task = cocotb.start_soon(self._watch())

    async def _watch(self):
        dut = self.dut
        held = None  # payload of a beat offered but not taken in the previous cycle
        while True:
            await ReadOnly()
            valid, ready = int(dut.c__valid.value), int(dut.c__ready.value)
            payload = int(dut.c__payload.value) if valid else None
            if held is not None and payload != held:
                self.protocol_errors.append(f"cycle {self.cycle}: c dropped or changed a beat "
                                            f"that was not accepted")
            held = payload if valid and not ready else None
            if self.first_accept is None and int(dut.a__valid.value) and int(dut.a__ready.value):
                self.first_accept = self.cycle
            if valid and ready:
                self.last_row = self.cycle
            await RisingEdge(dut.clk)
            self.cycle += 1

    def rows(self):
        """The received rows as ``(data list, last)``."""
        return [([int(v.data[j]) for j in range(len(v.data))], int(v.last))
                for v in self.stream.values()]

    async def wait_for(self, n, timeout_cycles):
        await self.stream.wait_for(n, timeout_cycles=timeout_cycles)


class MatrixModel:
    """The expected ``c`` rows of a program: the reference's tiles, row 0 first, ``last`` on
    the last row of each tile."""

    def __init__(self, p):
        self.p = p

    def rows(self, program):
        rows = []
        for tile in program.tiles(self.p["acc_bits"]):
            for i, row in enumerate(tile):
                rows.append(([int(v) for v in row], int(i == len(tile) - 1)))
        return rows


class Scoreboard:
    """Compares received rows with the model's, in order, and names each mismatch by tile,
    row and column."""

    def __init__(self, rows_per_tile):
        self.rows_per_tile = rows_per_tile
        self.mismatches = []

    def compare(self, got, want):
        if len(got) != len(want):
            self.mismatches.append(f"{len(got)} rows received, {len(want)} expected")
        for n, (g, w) in enumerate(zip(got, want, strict=False)):
            if g != w:
                tile, row = divmod(n, self.rows_per_tile)
                cols = [j for j, (x, y) in enumerate(zip(g[0], w[0], strict=True)) if x != y]
                self.mismatches.append(
                    f"tile {tile} row {row}: got {g[0]} last={g[1]}, expected {w[0]} "
                    f"last={w[1]} (columns {cols} differ)")
        return len(self.mismatches)


def _params():
    return {"ops": 30, "idle": 0.3, "stall": 0.3, **params()}


async def _setup(dut, p, tag, idle, stall):
    rnd = rng(tag)
    driver = MatrixDriver(dut, p, rnd, idle)
    monitor = RowMonitor(dut, p, rnd, stall)
    await start_clock(dut)
    await reset(dut)
    return rnd, driver, monitor


async def run_program(dut, p, program, driver, monitor, *, quiet_cycles=20):
    """Send ``program``, wait for all its rows (and ``quiet_cycles`` more, in which nothing may
    arrive), score them. Returns a dict of results."""
    model = MatrixModel(p)
    want = model.rows(program)
    start_rows = len(monitor.stream.beats)
    beats = driver.pack(program)
    t0 = time.perf_counter()
    cycle0 = monitor.cycle
    monitor.first_accept = None
    await driver.send(beats)
    budget = 50 * (program.steps + len(want)) + 1000
    await monitor.wait_for(start_rows + len(want), timeout_cycles=budget)
    wall = time.perf_counter() - t0
    sim_cycles = monitor.cycle - cycle0
    for _ in range(quiet_cycles):  # nothing more may come out: no duplicated rows
        await RisingEdge(dut.clk)
    got = monitor.rows()[start_rows:]
    scoreboard = Scoreboard(p["rows"])
    scoreboard.compare(got, want)
    cycles = monitor.last_row - monitor.first_accept + 1
    pes = p["rows"] * p["cols"]
    return {
        "steps": program.steps, "ops": len(program.op_steps), "tiles": len(want) // p["rows"],
        "macs": program.macs(), "cycles": cycles, "utilisation": program.macs() / (pes * cycles),
        "mismatches": len(scoreboard.mismatches), "errors": scoreboard.mismatches[:5],
        "protocol_errors": list(monitor.protocol_errors[:5]),
        "sim_cycles": sim_cycles, "wall_s": wall, "cycles_per_s": sim_cycles / max(wall, 1e-9),
    }


def _write(path, result):
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=2, sort_keys=True)


@cocotb.test()
async def random_ops_with_gaps_and_backpressure(dut):
    """Random operations (every K from 1 up, chained accumulation, wrap-around values) with
    random idle cycles on ``a`` and ``b`` and random stalls on ``c``; every row checked."""
    p = _params()
    rnd, driver, monitor = await _setup(dut, p, "random", p["idle"], p["stall"])
    program = random_program(rnd, p["rows"], p["cols"], p["data_bits"], p["ops"])
    res = await run_program(dut, p, program, driver, monitor)
    dut._log.info("random: %d ops, %d steps, %d tiles, %d cycles", res["ops"], res["steps"],
                  res["tiles"], res["cycles"])
    assert not res["protocol_errors"], res["protocol_errors"]
    assert res["mismatches"] == 0, "\n".join(res["errors"])


@cocotb.test()
async def measured_runs(dut):
    """The runs of ``params()["runs"]`` one after another (no idle, no backpressure unless a run
    says so), scored and measured; results written as JSON to ``params()["out"]``."""
    p = _params()
    rnd, driver, monitor = await _setup(dut, p, "runs", 0.0, 0.0)
    results = []
    for spec in p["runs"]:
        driver.a.idle = driver.b.idle = spec.get("idle", 0.0)
        monitor.stream.stall = spec.get("stall", 0.0)
        program = program_from_spec(spec, p["rows"], p["cols"], p["data_bits"])
        res = await run_program(dut, p, program, driver, monitor)
        res["spec"] = spec
        res["op_steps"] = program.op_steps
        results.append(res)
        dut._log.info("run %s: %d cycles, utilisation %.4f, %d mismatches", spec,
                      res["cycles"], res["utilisation"], res["mismatches"])
        _write(p.get("out"), {"runs": results})
    assert all(r["mismatches"] == 0 and not r["protocol_errors"] for r in results), \
        [r["errors"] + r["protocol_errors"] for r in results if r["mismatches"]]


@cocotb.test()
async def free_running_speed(dut):
    """Simulator speed with every PE busy and no Python in the per-cycle loop: ``a`` and ``b``
    held valid (one endless accumulation), ``c`` ready, the clock run for ``cycles`` cycles."""
    p = _params()
    n = p.get("cycles", 100_000)
    rnd = np.random.default_rng(1)
    dut.a__payload.value = pack(matrix_a_layout(p["rows"], p["data_bits"]), {
        "data": [int(v) for v in rnd.integers(-8, 8, p["rows"])], "first": 0, "last": 0})
    dut.b__payload.value = pack(matrix_b_layout(p["cols"], p["data_bits"]),
                                [int(v) for v in rnd.integers(-8, 8, p["cols"])])
    dut.a__valid.value = 1
    dut.b__valid.value = 1
    dut.c__ready.value = 1
    await start_clock(dut)
    await reset(dut)
    t0 = time.perf_counter()
    await Timer(10 * n, unit="ns")
    wall = time.perf_counter() - t0
    assert int(dut.a__ready.value) == 1, "the array stalled with no output pending"
    result = {"cycles": n, "wall_s": wall, "cycles_per_s": n / max(wall, 1e-9)}
    dut._log.info("free running: %d cycles in %.3f s (%.0f cycles/s)", n, wall,
                  result["cycles_per_s"])
    _write(p.get("out"), result)
