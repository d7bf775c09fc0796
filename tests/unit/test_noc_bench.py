"""How ``tilemesh bench noc`` turns load points into its headline figures (no simulation).

Saturation throughput is the accepted throughput at the offered loads the network no longer keeps
up with, averaged over those points: not the best point of the sweep, which a lucky measurement
window (or a point just below saturation) would inflate.
"""

import argparse

import pytest

from tilemesh.bench.noc import _mesh_report, bench_config, zero_load_latency
from tilemesh.config import preset

CFG = bench_config(preset("default"), 4, 4)


def point(offered, accepted, *, stable, pattern="uniform", flits=1, hops=None):
    """A summary as :func:`tilemesh.bench.noc.summarize` makes it (only the fields the report
    reads)."""
    if hops is None:   # the lightest point carries the zero-load latencies
        hops = {h: {"packets": 10, "min": zero_load_latency(h, flits),
                    "mean": zero_load_latency(h, flits) + 0.5} for h in range(7)}
    return {"pattern": pattern, "packet_flits": flits, "offered": offered,
            "accepted": accepted, "accepted_min_node": accepted * 0.9, "stable": stable,
            "drained": stable, "latency": 10.0, "latency_max": 20, "errors": 0, "drops": 0,
            "host_flits": 0, "idle": True, "created": 1, "injected": 1, "delivered": 1,
            "hops": hops}


def report(points):
    return _mesh_report(CFG, points, argparse.Namespace(check_idle=False))


def curve(points):
    (c,) = report(points)["curves"]
    return c


def test_saturation_is_the_mean_accepted_beyond_saturation():
    pts = [point(0.02, 0.02, stable=True), point(0.6, 0.6, stable=True, hops={}),
           # the best single point (0.75) is above the plateau the network sustains
           point(0.8, 0.75, stable=False, hops={}), point(0.9, 0.66, stable=False, hops={}),
           point(1.0, 0.66, stable=False, hops={})]
    c = curve(pts)
    assert c["saturation_throughput"] == pytest.approx((0.75 + 0.66 + 0.66) / 3)
    assert c["saturation_points"] == 3
    assert c["peak_accepted"] == 0.75
    assert c["highest_stable_offered"] == 0.6
    # 0.69 < 0.70 x 4/k: the target is missed, although the best point alone would meet it.
    assert c["saturation_target"] == pytest.approx(0.70)
    assert not c["saturation_target_met"]
    assert not report(pts)["ok"]


def test_target_met_on_the_plateau():
    pts = [point(0.02, 0.02, stable=True), point(0.9, 0.71, stable=False, hops={}),
           point(1.0, 0.72, stable=False, hops={})]
    c = curve(pts)
    assert c["saturation_throughput"] == pytest.approx(0.715)
    assert c["saturation_target_met"] and report(pts)["ok"]
    assert c["zero_load"]["per_hop"] == pytest.approx(2.0)
    assert c["zero_load"]["matches_formula"]


def test_unsaturated_sweep_reports_its_highest_accepted_load():
    # No point past saturation: the sweep did not find the plateau; the highest accepted load
    # is all that is known (a lower bound), and no point is counted as saturated.
    c = curve([point(0.02, 0.02, stable=True), point(0.5, 0.5, stable=True, hops={})])
    assert c["saturation_points"] == 0
    assert c["saturation_throughput"] == 0.5 == c["peak_accepted"]
    assert c["highest_stable_offered"] == 0.5
