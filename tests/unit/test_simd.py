# amaranth: UnusedElaboratable=no
# (the constructor tests make components that fail before they can be elaborated)
"""SIMD unit: the reference (the spec), the layouts, and the hardware against the reference in
Amaranth's simulator: every op on edge values, random streams with random input gaps and output
backpressure, throughput and latency."""

import itertools
import random
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from tilemesh.config import TileConfig
from tilemesh.layouts import SimdOp, simd_in_layout, simd_out_layout, simd_shift_bits
from tilemesh.model.reference import (
    SIMD_OP_SEMANTICS,
    round_shift,
    saturate,
    simd,
    simd_op_table_markdown,
    wrap,
)
from tilemesh.tile.simd import SimdUnit
from tilemesh_sim.simd_bench import INVALID_OPS, expected_beat, pack_beat, random_beat

# (lanes, acc_bits, out_bits, scale_bits): 1 lane; the default tile; odd widths; the widest;
# lanes narrower than the scale (MUL's y then fits the low partial product alone).
CONFIGS = [(1, 32, 8, 16), (4, 32, 8, 16), (3, 19, 7, 11), (2, 64, 16, 32), (2, 12, 6, 16)]
CONFIG_IDS = ["1x32-8", "4x32-8", "3x19-7-s11", "2x64-16-s32", "2x12-6-s16"]


# -- the reference --------------------------------------------------------------------------------

@pytest.mark.parametrize("x, shift, want", [
    (5, 1, 3), (-5, 1, -3), (3, 1, 2), (-3, 1, -2), (1, 1, 1), (-1, 1, -1),  # ties: away from 0
    (6, 2, 2), (-6, 2, -2), (2, 2, 1), (-2, 2, -1), (10, 2, 3), (-10, 2, -3),  # ties
    (5, 2, 1), (-5, 2, -1), (7, 2, 2), (-7, 2, -2), (4, 2, 1), (-4, 2, -1),    # not ties
    (0, 5, 0), (123, 0, 123), (-123, 0, -123), (-(1 << 31), 31, -1), ((1 << 31) - 1, 31, 1),
    (-(1 << 31), 32, -1), ((1 << 31) - 1, 32, 0), (-(1 << 31), 33, 0),
    ((1 << 100) + (1 << 49), 50, (1 << 50) + 1),                               # exact, no int64
])
def test_round_shift_rounds_half_away_from_zero(x, shift, want):
    assert round_shift(x, shift) == want


def test_reference_ops_by_hand():
    lo, hi = -(1 << 31), (1 << 31) - 1
    x, y = [hi, lo, -7, 100], [1, -1, 3, -100]
    assert simd(SimdOp.ADD, x, y)[0].tolist() == [lo, hi, -4, 0]
    assert simd(SimdOp.SUB, x, y)[0].tolist() == [hi - 1, lo + 1, -10, 200]
    assert simd(SimdOp.MUL, [hi, lo, -7, 1 << 16], [2, -1, 3, 1 << 16])[0].tolist() == \
        [-2, lo, -21, 0]
    assert simd(SimdOp.MIN, x, y)[0].tolist() == [1, lo, -7, -100]
    assert simd(SimdOp.MAX, x, y)[0].tolist() == [hi, -1, 3, 100]
    assert simd(SimdOp.RELU, x, y)[0].tolist() == [hi, 0, 0, 100]
    assert simd(SimdOp.SHR, [5, -5, 6, -6], shift=1)[0].tolist() == [3, -3, 3, -3]
    assert simd(SimdOp.SAT, [300, -300, 127, -128])[0].tolist() == [127, -128, 127, -128]
    assert simd(SimdOp.ADD, [1, 2, 3], [10, 20, 30], broadcast=True)[0].tolist() == [11, 12, 13]
    # The gemmlowp epilogue: 12345 * 21845 / 2**16 = 4114.94 -> 4115, + 10, fits int16.
    assert simd(SimdOp.REQUANT, [12345], scale=21845, shift=16, zero_point=10,
                out_bits=16)[0].tolist() == [4125]
    # 1000 * 3 / 16 = 187.5 -> 188 (+5 = 193) saturates to 127; -187.5 -> -188 (-5) to -128.
    assert simd(SimdOp.REQUANT, [1000, -1000, 40, -40], scale=3, shift=4,
                zero_point=5)[0].tolist() == [127, -128, 13, -3]
    # REQUANT's exact product: lo * -2**15 is 2**46 and is not wrapped to 32 bits.
    assert simd(SimdOp.REQUANT, [lo], scale=-(1 << 15), shift=31, zero_point=-1,
                out_bits=32)[0].tolist() == [(1 << 15) - 1]


def test_reference_sub_wraps():
    lo, hi = -(1 << 31), (1 << 31) - 1
    assert simd(SimdOp.SUB, [lo, hi], [1, -1])[0].tolist() == [hi, lo]


def test_reference_invalid_op_passes_x_and_flags():
    for code in INVALID_OPS:
        data, error = simd(code, [3, -4], [1, 1])
        assert error and data.tolist() == [3, -4]
    assert INVALID_OPS == tuple(range(9, 16))
    assert not simd(SimdOp.ADD, [3], [1])[1]


@pytest.mark.parametrize("kwargs, match", [
    ({"x": [1 << 31]}, r"SIMD x must be signed 32-bit \(-2147483648\.\.2147483647\)"),
    ({"y": [-(1 << 31) - 1]}, r"SIMD y must be signed 32-bit"),
    ({"shift": 64}, r"SIMD shift must be unsigned 6-bit \(0\.\.63\), not 64"),
    ({"shift": -1}, r"SIMD shift must be unsigned 6-bit"),
    ({"scale": 1 << 15}, r"SIMD scale must be signed 16-bit \(-32768\.\.32767\), not 32768"),
    ({"zero_point": 1 << 31}, r"SIMD zero_point must be signed 32-bit"),
    ({"out_bits": 33}, r"SIMD out_bits must be in 2\.\.32, not 33"),
])
def test_reference_rejects_out_of_range(kwargs, match):
    args = {"x": [0], "y": [0], **kwargs}
    with pytest.raises(ValueError, match=match):
        simd(SimdOp.REQUANT, args.pop("x"), args.pop("y"), **args)


# -- layouts and construction ---------------------------------------------------------------------

def test_layouts():
    assert SimdOp.as_shape().width == 4
    assert [op.value for op in SimdOp] == list(range(9))
    assert simd_shift_bits(32, 16) == 6 and simd_shift_bits(64, 32) == 7
    layout = simd_in_layout(4, 32)
    assert {name for name, _ in layout} == {"x", "y", "op", "broadcast", "shift", "scale",
                                             "zero_point"}
    assert layout.size == 2 * 4 * 32 + 4 + 1 + 6 + 16 + 32
    assert simd_in_layout(4, 32, scale_bits=24)["scale"].width == 24
    assert simd_out_layout(4, 32).size == 4 * 32 + 1


def test_ports_and_from_config():
    dut = SimdUnit.from_config(TileConfig(simd_lanes=8, acc_bits=24, data_bits=6))
    assert (dut.lanes, dut.acc_bits, dut.out_bits, dut.scale_bits) == (8, 24, 6, 16)
    assert dut.inp.payload.shape() == simd_in_layout(8, 24)
    assert dut.out.payload.shape() == simd_out_layout(8, 24)
    assert dut.product_bits == 24 + 16
    Fragment.get(dut, None)  # it elaborates


@pytest.mark.parametrize("args, kwargs, match", [
    ((0, 32, 8), {}, r"SIMD lanes must be an integer in 1\.\.64, not 0"),
    ((65, 32, 8), {}, r"SIMD lanes must be an integer in 1\.\.64, not 65"),
    ((4, 3, 2), {}, r"SIMD acc_bits must be an integer in 4\.\.64, not 3"),
    ((4, 65, 8), {}, r"SIMD acc_bits must be an integer in 4\.\.64, not 65"),
    ((4, 16, 17), {}, r"SIMD out_bits must be an integer in 2\.\.16, not 17"),
    ((4, 16, 1), {}, r"SIMD out_bits must be an integer in 2\.\.16, not 1"),
    ((4, 16, 8), {"scale_bits": 33}, r"SIMD scale_bits must be an integer in 2\.\.32, not 33"),
    ((4.0, 32, 8), {}, r"SIMD lanes must be an integer in 1\.\.64, not 4\.0"),
    ((True, 32, 8), {}, r"SIMD lanes must be an integer in 1\.\.64, not True"),
])
def test_constructor_rejects(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        SimdUnit(*args, **kwargs)


# -- the hardware in Amaranth's simulator ---------------------------------------------------------

def run_stream(dut, beats, *, seed=0, idle=0.0, stall=0.0, max_cycles=None):
    """Drive ``beats`` (dicts) into ``dut.inp`` with random idle cycles, take ``dut.out`` with
    random stalls; check the stream rules on ``out``. Returns (outputs, cycle log)."""
    in_layout = dut.inp.payload.shape()
    rnd_in, rnd_out = random.Random(f"{seed}:in"), random.Random(f"{seed}:out")
    got, log = [], {"accepted": [], "delivered": []}
    max_cycles = max_cycles or 20 * len(beats) + 100

    async def producer(ctx):
        cycle = 0
        for b in beats:
            while rnd_in.random() < idle:
                await ctx.tick()
                cycle += 1
            ctx.set(dut.inp.valid, 1)
            ctx.set(dut.inp.payload, in_layout.from_bits(pack_beat(in_layout, b)))
            while True:
                _, _, ready = await ctx.tick().sample(dut.inp.ready)
                cycle += 1
                if ready:
                    break
            log["accepted"].append(cycle)
            ctx.set(dut.inp.valid, 0)

    async def consumer(ctx):
        held = None  # payload offered but not taken: it must stay offered, unchanged
        for cycle in range(1, max_cycles + 1):
            ready = rnd_out.random() >= stall
            ctx.set(dut.out.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.out.valid, dut.out.payload)
            payload = {"data": [int(payload.data[i]) for i in range(dut.lanes)],
                       "error": int(payload.error)}
            if held is not None:
                assert valid and payload == held, f"cycle {cycle}: out changed while stalled"
            held = payload if valid and not ready else None
            if valid and ready:
                got.append(payload)
                log["delivered"].append(cycle)
            if len(got) == len(beats) and cycle >= (log["delivered"] or [0])[-1] + 8:
                return  # 8 quiet cycles after the last beat: nothing duplicated came out
        raise AssertionError(f"{len(got)} of {len(beats)} beats after {max_cycles} cycles")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return got, log


def check(dut, beats, got, seed=None):
    assert len(got) == len(beats), f"seed {seed}: {len(got)} outputs for {len(beats)} inputs"
    for i, (b, g) in enumerate(zip(beats, got, strict=True)):
        want = expected_beat(b, dut.acc_bits, dut.out_bits, dut.scale_bits)
        assert g == want, f"seed {seed}, beat {i}: input {b}: got {g}, expected {want}"


def edge_beats(lanes, acc, out, scale_bits):
    """Directed beats: every op (and an invalid one) over the cross product of edge values."""
    lo, hi = -(1 << (acc - 1)), (1 << (acc - 1)) - 1
    olo, ohi = -(1 << (out - 1)), (1 << (out - 1)) - 1
    vals = sorted({lo, lo + 1, hi, hi - 1, -1, 0, 1, -2, 2, olo, ohi, olo - 1, ohi + 1, 3, -3})
    slo, shi = -(1 << (scale_bits - 1)), (1 << (scale_bits - 1)) - 1
    max_shift = (1 << simd_shift_bits(acc, scale_bits)) - 1
    shifts = sorted({0, 1, 2, acc - 1, acc, acc + 1, acc + scale_bits - 1, acc + scale_bits,
                     max_shift})
    flat = []  # (op, x, y, shift, scale, zero_point) per lane, chunked into beats below

    for op in (SimdOp.ADD, SimdOp.SUB, SimdOp.MUL, SimdOp.MIN, SimdOp.MAX):
        flat += [(op, x, y, 0, 0, 0) for x, y in itertools.product(vals, vals)]
    flat += [(SimdOp.RELU, x, 0, 0, 0, 0) for x in vals]
    flat += [(SimdOp.SAT, x, 0, 0, 0, 0) for x in vals]
    flat += [(SimdOp.SHR, x, 0, s, 0, 0) for x, s in itertools.product(vals, shifts)]
    # SHR ties of both signs for every small shift.
    flat += [(SimdOp.SHR, sign * ((2 * k + 1) << (s - 1)), 0, s, 0, 0)
             for s in range(1, 5) for k in (0, 1, 2) for sign in (1, -1)]
    zero_points = itertools.cycle((0, lo, hi, olo, 1))  # cycled, not crossed: keeps it short
    for x, sc, s in itertools.product(vals, (slo, slo + 1, shi, -1, 0, 1, 3), shifts):
        flat.append((SimdOp.REQUANT, x, 0, s, sc, next(zero_points)))
    flat += [(op, x, y, 1, 1, 1) for op in (9, 15) for x, y in zip(vals, vals[::-1], strict=True)]

    beats = []
    # Beats share op and scalars; group lanes with equal (op, shift, scale, zero_point).
    groups = {}
    for op, x, y, s, sc, zp in flat:
        groups.setdefault((getattr(op, "value", op), s, sc, zp), []).append((x, y))
    for (op, s, sc, zp), xy in groups.items():
        for i in range(0, len(xy), lanes):
            chunk = xy[i:i + lanes]
            chunk += [(0, 0)] * (lanes - len(chunk))
            beats.append({"op": op, "x": [c[0] for c in chunk], "y": [c[1] for c in chunk],
                          "broadcast": 0, "shift": s, "scale": sc, "zero_point": zp})
    return beats


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_every_op_on_edge_values(config):
    lanes, acc, out, scale_bits = config
    dut = SimdUnit(lanes, acc, out, scale_bits=scale_bits)
    beats = edge_beats(lanes, acc, out, scale_bits)
    assert {b["op"] for b in beats} == SimdOp.valid_values() | {9, 15}
    got, _ = run_stream(dut, beats)
    check(dut, beats, got)


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_random_stream_with_gaps_and_backpressure(config, seed):
    lanes, acc, out, scale_bits = config
    dut = SimdUnit(lanes, acc, out, scale_bits=scale_bits)
    rnd = random.Random(seed)
    print(f"seed {seed}")
    beats = [random_beat(rnd, lanes, acc, out, scale_bits) for _ in range(500)]
    got, _ = run_stream(dut, beats, seed=seed, idle=0.3, stall=0.4)
    check(dut, beats, got, seed)
    # The stimulus reaches what matters: every op, ties, REQUANT both saturating and not.
    outs = [expected_beat(b, acc, out, scale_bits) for b in beats]
    assert {b["op"] for b in beats} >= SimdOp.valid_values()
    assert any(o["error"] for o in outs)
    req = [v for b, o in zip(beats, outs, strict=True) if b["op"] == SimdOp.REQUANT.value
           for v in o["data"]]
    olo, ohi = -(1 << (out - 1)), (1 << (out - 1)) - 1
    assert any(olo < v < ohi for v in req) and olo in req and ohi in req
    ties = [x for b in beats if b["op"] == SimdOp.SHR.value and b["shift"]
            for x in b["x"] if x % (1 << b["shift"]) == 1 << (b["shift"] - 1)]
    assert any(t < 0 for t in ties) and any(t > 0 for t in ties)


def test_broadcast_uses_lane_zero_of_y():
    dut = SimdUnit(4, 16, 8)
    beats = [{"op": SimdOp.ADD.value, "x": [1, 2, 3, 4], "y": [100, -7, -7, -7], "broadcast": 1,
              "shift": 0, "scale": 0, "zero_point": 0},
             {"op": SimdOp.MAX.value, "x": [1, 2, 3, 4], "y": [3, 9, 9, 9], "broadcast": 1,
              "shift": 0, "scale": 0, "zero_point": 0}]
    got, _ = run_stream(dut, beats)
    assert [g["data"] for g in got] == [[101, 102, 103, 104], [3, 3, 3, 4]]


def test_one_vector_per_cycle_and_latency():
    dut = SimdUnit(4, 32, 8)
    rnd = random.Random(3)
    beats = [random_beat(rnd, 4, 32, 8, 16) for _ in range(100)]
    got, log = run_stream(dut, beats)
    check(dut, beats, got)
    assert log["accepted"] == list(range(1, 101))  # one beat accepted every cycle
    assert log["delivered"] == [c + SimdUnit.latency for c in log["accepted"]]


def test_stalled_output_fills_the_pipeline_then_resumes():
    dut = SimdUnit(2, 32, 8)
    rnd = random.Random(4)
    beats = [random_beat(rnd, 2, 32, 8, 16) for _ in range(20)]
    in_layout = dut.inp.payload.shape()
    accepted, got = [], []

    async def producer(ctx):
        for b in beats:
            ctx.set(dut.inp.valid, 1)
            ctx.set(dut.inp.payload, in_layout.from_bits(pack_beat(in_layout, b)))
            await ctx.tick().until(dut.inp.ready)
            accepted.append(b)
        ctx.set(dut.inp.valid, 0)

    async def consumer(ctx):
        ctx.set(dut.out.ready, 0)
        await ctx.tick().repeat(30)
        # Out never ready: exactly `capacity` beats fit in the unit, the input is held off.
        assert len(accepted) == SimdUnit.capacity and not ctx.get(dut.inp.ready)
        ctx.set(dut.out.ready, 1)
        while len(got) < len(beats):
            _, _, valid, payload = await ctx.tick().sample(dut.out.valid, dut.out.payload)
            if valid:
                got.append({"data": [int(payload.data[i]) for i in range(2)],
                            "error": int(payload.error)})

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    check(dut, beats, got)


def test_docs_table_is_the_reference():
    # docs/simd.md embeds the rendered table, and each formula in it, evaluated literally,
    # gives what simd() gives.
    docs = (Path(__file__).parents[2] / "docs" / "simd.md").read_text()
    assert simd_op_table_markdown() in docs
    rnd = random.Random(7)
    acc, out, scale_bits = 20, 6, 9
    for op in SimdOp:
        formula = SIMD_OP_SEMANTICS[op.name][0]
        for _ in range(300):
            b = random_beat(rnd, 1, acc, out, scale_bits, op=op)
            env = {"x": b["x"][0], "y": b["y"][0], "shift": b["shift"], "scale": b["scale"],
                   "zero_point": b["zero_point"], "min": min, "max": max,
                   "wrap": lambda v: int(wrap(v, acc)), "sat": lambda v: int(saturate(v, out)),
                   "round_shift": lambda v, s: int(round_shift(v, s))}
            want = simd(op, b["x"], b["y"], shift=b["shift"], scale=b["scale"],
                        zero_point=b["zero_point"], acc_bits=acc, out_bits=out,
                        scale_bits=scale_bits)[0][0]
            assert eval(formula, env) == want, (op, b)


def test_reference_is_vectorised_over_beats():
    x = np.array([[1, -3], [5, -5]])
    assert simd(SimdOp.SHR, x, shift=1)[0].tolist() == [[1, -2], [3, -3]]
