"""A short run of the NoC benchmark (``tilemesh bench noc``) on a 3x3 mesh, on Verilator and
Icarus: the same code path as the full sweep, with results checked rather than just printed.

Three load points on one build: near-zero load (zero-load latency must follow the per-hop
formula exactly), a moderate 4-flit load (accepted must equal offered) and transpose traffic
past saturation (the source queues must keep the offered load and the network must still deliver
everything). After each point the bench waits until every created packet has arrived, then the
counters must show nothing lost, duplicated, reordered, corrupted or dropped, and each tile's
generator must have created exactly the packets the reference model predicts.
"""

import pytest

from tilemesh.bench.noc import bench_config, make_points, run_mesh, summarize, zero_load_latency
from tilemesh.config import preset
from tilemesh.model.reference import traffic_schedule
from tilemesh_sim.runner import BUILD_ROOT

pytestmark = pytest.mark.rtl

CFG = bench_config(preset("default"), 3, 3)


def points():
    common = {"seed": 17, "wait_idle": True}
    low = make_points(CFG, ["uniform"], [1], [0.03], warmup=100, measure=1500, drain=400,
                      **common)
    mid = make_points(CFG, ["uniform"], [4], [0.4], warmup=200, measure=600, drain=600,
                      **common)
    sat = make_points(CFG, ["transpose"], [1], [1.0], warmup=200, measure=600,
                      drain=200, **common)
    pts = low + mid + sat
    for i, p in enumerate(pts):
        p["seed"] += 100 * i
    return pts


def test_noc_bench_smoke(simulator, tmp_path):
    pts = points()
    raw = run_mesh(CFG, pts, simulator=simulator, results_path=tmp_path / "results.jsonl",
                   cache_dir=BUILD_ROOT / "bench-verilog", progress=lambda s: None)
    summaries = [summarize(CFG, r) for r in raw]
    for point, result, s in zip(pts, raw, summaries, strict=True):
        print(f"{point['pattern']} {point['packet_flits']}-flit offered {s['offered']:.3f}: "
              f"accepted {s['accepted']:.3f}, latency {s['latency']}, drained {s['drained']}")
        assert s["errors"] == 0 and not s["error_flags"], s["error_flags"]
        assert s["drops"] == 0 and s["host_flits"] == 0
        assert s["idle"] and s["created"] == s["injected"] == s["delivered"] > 0
        assert s["packets_measured"] <= s["packets_tagged"]
        # Each generator made exactly the model's packets, up to the cycle creation stopped.
        for i, tile in enumerate(result["tiles"]):
            y, x = divmod(i, CFG.cols)
            want = traffic_schedule(point["pattern"], point["seed"], x, y, CFG.rows, CFG.cols,
                                    point["threshold"], result["last_cycle"] + 1)
            g = tile["generator"]
            assert g["created"] == g["injected_packets"] == len(want), (i, g)
            warm, end = point["warmup"], point["warmup"] + point["measure"]
            assert g["created_tagged"] == sum(warm <= t < end for t, _, _ in want)
            assert g["injected_flits"] == point["packet_flits"] * len(want)

    low, mid, sat = summaries
    # Near zero load some packet at every distance met no contention: the fastest one per
    # distance is exactly the zero-load latency, 2 cycles per hop.
    assert set(low["hops"]) == set(range(CFG.rows + CFG.cols - 1))
    for h, v in low["hops"].items():
        assert v["min"] == zero_load_latency(h, 1), (h, v)
        assert v["mean"] < zero_load_latency(h, 1) + 1.0
    assert low["drained"] and abs(low["accepted"] - low["offered_measured"]) < 0.005

    # Below saturation everything offered is accepted (the window's edges differ by a packet).
    assert mid["drained"]
    assert abs(mid["accepted"] - mid["offered_measured"]) < 0.05 * mid["offered_measured"]
    assert mid["latency"] >= zero_load_latency(1, 4)

    # Transpose at 1 flit/node/cycle: two flows share the links next to the corners, so the
    # network saturates; the source queues keep the offered load (so it is measured as
    # offered) and latency grows past the drain limit.
    assert abs(sat["offered_measured"] - sat["offered"]) < 0.05
    assert not sat["drained"]
    assert sat["accepted"] < 0.9 * sat["offered_measured"]
    assert sat["latency"] > 5 * low["latency"]
