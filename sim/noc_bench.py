"""cocotb side of the NoC benchmark: runs a list of load points on one ``NocBenchTop`` build.

Python is not in the per-cycle loop: for each point the test sets the run's inputs, resets the
design (which starts the run), sleeps until ``done`` rises (one edge trigger, not a wait per
clock), optionally until ``idle``, then reads every tile's counters through ``select`` /
``tile_stats`` and appends one JSON line to the results file, so the caller can show progress.

Parameters (``tilemesh_sim.streams.params()``): ``config`` (``MeshConfig.to_dict()``),
``results`` (path of the JSON-lines file), ``points`` (list of dicts: ``pattern`` label,
``packet_flits``, ``threshold``, ``seed``, ``warmup``, ``measure``, ``drain``,
``hotspot_threshold`` optional, ``wait_idle`` optional, plus anything else, copied to the
result), ``period_ns`` (clock period, default 10).
"""

import json
import time

import cocotb
from amaranth.lib import data
from cocotb.triggers import First, RisingEdge, Timer

from tilemesh.bench.traffic import TrafficPattern, tile_stats_layout
from tilemesh.config import MeshConfig
from tilemesh_sim.streams import params, reset, start_clock, unpack

__all__ = ["view_to_dict"]


def view_to_dict(value):
    """Nested dicts / lists of ints from an ``amaranth.lib.data.Const`` (or an int)."""
    if isinstance(value, int):
        return value
    layout = value.shape()
    if isinstance(layout, data.StructLayout):
        return {name: view_to_dict(value[name]) for name, _ in layout}
    if isinstance(layout, data.ArrayLayout):
        return [view_to_dict(value[i]) for i in range(layout.length)]
    return int(value.as_value().value)


async def _wait(dut, signal, cycles, period_ns):
    """Sleep until ``signal`` is high, at most ``cycles`` clock cycles; True if it rose."""
    if int(signal.value):
        return True
    await First(RisingEdge(signal), Timer(cycles * period_ns, unit="ns"))
    await RisingEdge(dut.clk)
    return bool(int(signal.value))


async def run_point(dut, cfg, point, period_ns):
    """One measurement: returns the result dict (point, phases, per-tile counters)."""
    layout = tile_stats_layout(cfg)
    dut.control.value = _control_bits(cfg, point)
    dut.warmup.value = point["warmup"]
    dut.measure.value = point["measure"]
    dut.drain.value = point["drain"]
    dut.select.value = 0
    t0 = time.perf_counter()
    await reset(dut)
    if int(dut.config_error.value):
        raise AssertionError(f"NocBenchTop reports config_error for {point}")
    limit = point["warmup"] + point["measure"] + point["drain"] + 16
    if not await _wait(dut, dut.done, limit, period_ns):
        raise AssertionError(f"done did not rise within {limit} cycles for {point}")
    result = {"point": point, "last_cycle": int(dut.last_cycle.value),
              "drained": int(dut.drained.value)}
    if point.get("wait_idle"):
        idle_limit = point.get("idle_cycles", 100_000)
        if not await _wait(dut, dut.idle, idle_limit, period_ns):
            raise AssertionError(f"idle did not rise within {idle_limit} cycles after done "
                                 f"for {point}: packets lost or stuck")
    result["idle"] = int(dut.idle.value)
    result["end_at"] = int(dut.now.value)
    tiles = []
    for i in range(cfg.tiles):
        dut.select.value = i
        await Timer(period_ns // 2, unit="ns")
        tiles.append(view_to_dict(unpack(layout, dut.tile_stats.value)))
    result["tiles"] = tiles
    result["host_flits"] = int(dut.host_flits.value)
    result["wall_s"] = time.perf_counter() - t0
    return result


def _control_bits(cfg, point):
    from tilemesh.bench.traffic import control_layout

    return control_layout(cfg).const({
        "threshold": point["threshold"],
        "pattern": TrafficPattern.from_label(point["pattern"]),
        "packet_flits": point["packet_flits"],
        "seed": point["seed"],
        "hotspot_threshold": point.get("hotspot_threshold", 0),
    }).as_value().value


@cocotb.test()
async def sweep(dut):
    """Run every point of the parameters and append one JSON line per point."""
    p = params()
    cfg = MeshConfig.from_dict(p["config"])
    period_ns = p.get("period_ns", 10)
    await start_clock(dut, period_ns)
    with open(p["results"], "a") as out:
        for point in p["points"]:
            result = await run_point(dut, cfg, point, period_ns)
            out.write(json.dumps(result) + "\n")
            out.flush()
            cocotb.log.info("point %s: created until cycle %d, drained %d, %.2f s", point,
                            result["last_cycle"], result["drained"], result["wall_s"])
