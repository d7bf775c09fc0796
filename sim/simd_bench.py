"""cocotb bench of the SIMD unit, in the shape of cocotb's matrix_multiplier example: a driver
(random idle cycles), a monitor (random backpressure), the numpy reference as the model and an
in-order scoreboard.

The Amaranth-simulator unit tests import the stimulus and model (:func:`random_beat`,
:func:`expected_beat`), so both benches draw from the same distribution of edge values.

Parameters (``run_cocotb(params=...)``): ``lanes``, ``acc_bits``, ``out_bits``, ``scale_bits``,
``latency``, ``beats``, ``idle``, ``stall``.
"""

import random

import cocotb
from cocotb.triggers import RisingEdge

from tilemesh.layouts import SimdOp, simd_in_layout, simd_out_layout, simd_shift_bits
from tilemesh.model.reference import simd
from tilemesh_sim.streams import (
    StreamDriver,
    StreamMonitor,
    cycles_until,
    params,
    reset,
    rng,
    start_clock,
)

__all__ = ["random_beat", "expected_beat", "pack_beat", "INVALID_OPS"]

INVALID_OPS = tuple(sorted(set(range(16)) - SimdOp.valid_values()))


def _edge_values(bits):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return [lo, lo + 1, hi, hi - 1, -1, 0, 1, -2, 2]


def _random_value(rnd, bits, edge_bits=None):
    """A signed ``bits`` value: often an edge value (of ``bits`` or of the smaller
    ``edge_bits``, e.g. the output range), often small, else uniform."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    r = rnd.random()
    if r < 0.2:
        return rnd.choice(_edge_values(bits))
    if r < 0.3 and edge_bits:
        return rnd.choice(_edge_values(edge_bits)) + rnd.choice([-1, 0, 0, 1])
    if r < 0.55:
        return rnd.randint(max(lo, -300), min(hi, 300))
    return rnd.randint(lo, hi)


def random_beat(rnd, lanes, acc_bits, out_bits, scale_bits, *, op=None):
    """One random input beat (a dict for ``simd_in_layout``) that exercises the edges of
    ``op`` (random, including invalid encodings, when None)."""
    if op is None:
        op = rnd.choice(list(SimdOp)) if rnd.random() < 0.95 else rnd.choice(INVALID_OPS)
    code = op.value if isinstance(op, SimdOp) else op
    max_shift = (1 << simd_shift_bits(acc_bits, scale_bits)) - 1
    x = [_random_value(rnd, acc_bits, out_bits) for _ in range(lanes)]
    y = [_random_value(rnd, acc_bits, out_bits) for _ in range(lanes)]
    shift = rnd.choice([0, 1, 2, rnd.randint(0, acc_bits + 2), rnd.randint(0, max_shift),
                        max_shift])
    scale = _random_value(rnd, scale_bits)
    if code == SimdOp.SHR.value and shift and rnd.random() < 0.5:
        # Exact ties (k + 1/2) * 2**shift of both signs: the rounding rule shows here.
        for i in range(lanes):
            k = rnd.randint(-(1 << max(0, acc_bits - shift - 2)), 1 << max(0, acc_bits - shift - 2))
            tie = k * (1 << shift) + (1 << (shift - 1))
            if -(1 << (acc_bits - 1)) <= tie < 1 << (acc_bits - 1):
                x[i] = tie
    if code == SimdOp.REQUANT.value and rnd.random() < 0.7:
        # A realistic epilogue: the shift brings x * scale near the output range.
        shift = min(max_shift, max(0, scale_bits + rnd.randint(-4, acc_bits - out_bits)))
    if code == SimdOp.REQUANT.value and rnd.random() < 0.2:
        # Ties of the REQUANT rounding: x * scale an odd multiple of 2**(shift - 1).
        scale, shift = rnd.choice([1, -1, 3, -3]), rnd.randint(1, 4)
        x = [(2 * rnd.randint(-50, 50) + 1) << (shift - 1) for _ in range(lanes)]
    zero_point = _random_value(rnd, acc_bits, out_bits)
    return {"x": x, "y": y, "op": code, "broadcast": int(rnd.random() < 0.25),
            "shift": shift, "scale": scale, "zero_point": zero_point}


def expected_beat(beat, acc_bits, out_bits, scale_bits):
    """The reference result of ``beat``: a dict for ``simd_out_layout`` with Python ints."""
    data, error = simd(beat["op"], beat["x"], beat["y"], broadcast=bool(beat["broadcast"]),
                       shift=beat["shift"], scale=beat["scale"],
                       zero_point=beat["zero_point"], acc_bits=acc_bits, out_bits=out_bits,
                       scale_bits=scale_bits)
    return {"data": [int(v) for v in data], "error": int(error)}


def pack_beat(layout, beat):
    """Integer bits of an input ``beat``; ``op`` may be an invalid encoding, which an Amaranth
    enum field refuses, so it is placed at the layout's own offset of the ``op`` field."""
    bits = layout.const({**beat, "op": 0}).as_value().value
    field = layout["op"]
    mask = ((1 << field.width) - 1) << field.offset
    return (bits & ~mask) | ((beat["op"] << field.offset) & mask)


def _layout_fields(view, lanes):
    return {"data": [int(view.data[i]) for i in range(lanes)], "error": int(view.error)}


class SimdModel:
    """Expected output beats, in order, for the beats the driver sends."""

    def __init__(self, p):
        self.p = p
        self.expected = []

    def push(self, beat):
        self.expected.append(expected_beat(beat, self.p["acc_bits"], self.p["out_bits"],
                                           self.p["scale_bits"]))


class Scoreboard:
    """Compares the monitor's beats with the model's, in order; names the first mismatch."""

    def __init__(self, model, monitor, sent, lanes):
        self.model, self.monitor, self.sent, self.lanes = model, monitor, sent, lanes

    def check(self):
        got = [_layout_fields(v, self.lanes) for v in self.monitor.values()]
        want = self.model.expected
        assert len(got) == len(want), f"{len(got)} output beats for {len(want)} inputs"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert g == w, f"beat {i}: input {self.sent[i]}: got {g}, expected {w}"


async def _start(dut, tag, idle, stall, n):
    """Clock, reset, driver, monitor, model and ``n`` random beats already pushed to it."""
    p = {"scale_bits": 16, "beats": 400, "idle": 0.3, "stall": 0.3, **params()}
    rnd = rng(tag)
    in_layout = simd_in_layout(p["lanes"], p["acc_bits"], scale_bits=p["scale_bits"])
    out_layout = simd_out_layout(p["lanes"], p["acc_bits"])
    driver = StreamDriver(dut, "inp", in_layout, rnd=random.Random(rnd.random()),
                          idle=p["idle"] if idle is None else idle)
    monitor = StreamMonitor(dut, "out", out_layout, rnd=random.Random(rnd.random()),
                            stall=p["stall"] if stall is None else stall)
    await start_clock(dut)
    await reset(dut)
    model = SimdModel(p)
    beats = [random_beat(rnd, p["lanes"], p["acc_bits"], p["out_bits"], p["scale_bits"])
             for _ in range(p["beats"] if n is None else n)]
    for b in beats:
        model.push(b)
    scoreboard = Scoreboard(model, monitor, beats, p["lanes"])
    return p, driver, monitor, scoreboard, [pack_beat(in_layout, b) for b in beats]


@cocotb.test()
async def random_ops_with_gaps_and_backpressure(dut):
    """Random ops and edge values; random idle input cycles and random output stalls."""
    p, driver, monitor, scoreboard, beats = await _start(dut, "random", None, None, None)
    await driver.send_all(beats)
    await monitor.wait_for(len(beats), timeout_cycles=20 * len(beats) + 100)
    for _ in range(10):  # nothing more may come out: no duplicated beats
        await RisingEdge(dut.clk)
    scoreboard.check()


@cocotb.test()
async def full_throughput(dut):
    """No idle and no stalls: N beats take N + latency cycles (one vector per cycle)."""
    n = 64
    p, driver, monitor, scoreboard, beats = await _start(dut, "throughput", 0.0, 0.0, n)
    counter = cocotb.start_soon(cycles_until(dut, lambda: len(monitor.beats) >= n))
    await driver.send_all(beats)
    cycles = await counter
    scoreboard.check()
    assert cycles == n + p["latency"], f"{n} beats took {cycles} cycles, not {n} + latency"
