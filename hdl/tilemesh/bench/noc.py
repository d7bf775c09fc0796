"""NoC benchmark: latency vs offered load, saturation throughput, zero-load latency per hop.

Traffic is made inside the simulated RTL (:class:`~tilemesh.bench.traffic.NocBenchTop`: a
generator and a sink on every tile), so Python only starts each run and reads counters at its
end. One simulator build serves every load point of a mesh: pattern, packet size, offered load,
seed and phase lengths are inputs of the design. Results are printed as tables and written to
``<output>/noc.json`` and ``<output>/noc.png``.

Definitions (Dally and Towles, *Principles and Practices of Interconnection Networks*, ch. 23):
offered load and accepted throughput in flits per node per cycle; latency from the cycle a
packet is created (it then waits in an unbounded source queue) to the cycle its tail flit leaves
the destination's Local port, averaged over packets created in the measurement window; the
bisection limit of uniform traffic on a k x k mesh is 4/k flits/node/cycle; saturation
throughput is the accepted throughput at offered loads beyond saturation (the points the network
no longer keeps up with), averaged over those points.
"""

import argparse
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ..config import ConfigError
from ..generate import StructuralDesign, fabric_parts
from .traffic import NocBenchTop, TrafficPattern, tag_layout

__all__ = ["add_arguments", "run", "bench_config", "zero_load_latency", "bisection_limit",
           "make_points", "run_mesh", "summarize", "fit_per_hop"]

TARGET_SATURATION = 0.70   # of the bisection limit, uniform random 1-flit packets (issue 3)
TARGET_PER_HOP = 2.0       # cycles per hop at zero load (SPEC 2.2)
STABLE_FRACTION = 0.95     # accepted / offered above which a load point counts as sustained
TOP_NAME = "noc_bench_top"
# C++ optimisation of the Verilator model: -O1 compiles about 2.5x faster than Verilator's -Os
# default (an 8x8 mesh is tens of MB of C++) and simulates about as fast.
DEFAULT_OPT = "O1"
DEFAULT_LOADS = (0.02, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.4)


# -- what is measured --------------------------------------------------------------------------

def bench_config(base, rows, cols):
    """The mesh the benchmark simulates: ``base``'s NoC parameters (FIFO depth, packet length
    limit) on a ``rows`` x ``cols`` mesh, with flits of at least 64 bits so a header carries the
    benchmark's timestamp and sequence number (flit width does not change any cycle count)."""
    noc = dataclasses.replace(base.noc, flit_bits=max(base.noc.flit_bits, 64))
    return dataclasses.replace(base, rows=rows, cols=cols, noc=noc, host_x=0, host_y=0,
                               host_side="west")


def zero_load_latency(hops, packet_flits):
    """Cycles from creation to tail delivery of a packet alone in the network: 1 (generator
    output register) + ``packet_flits`` (the ingress checker holds a packet until its tail) +
    2 per router on the path (``hops + 1`` routers: input FIFO, then output/link register) +
    ``packet_flits - 1`` (the tail follows the header). So 2 cycles per hop."""
    return 2 * hops + 2 * packet_flits + 2


def bisection_limit(rows, cols):
    """Uniform-traffic throughput bound of a mesh in flits/node/cycle: half of all traffic
    crosses the narrower bisection, which has min(rows, cols) channels each way, so
    ``N * load / 4 <= min(rows, cols)`` (``4/k`` on a k x k mesh), and at most 1 (one Local
    port per node)."""
    return min(1.0, 4 * min(rows, cols) / (rows * cols))


def make_points(cfg, patterns, packet_flits, loads, *, warmup, measure, drain, seed,
                wait_idle=False, hotspot_fraction=0.2):
    """Load points of one mesh: every (pattern, packet size, load) with load given as a fraction
    of :func:`bisection_limit`; offered loads above 1 flit/node/cycle are left out."""
    limit = bisection_limit(cfg.rows, cfg.cols)
    points = []
    for pattern in patterns:
        for pf in packet_flits:
            for fraction in loads:
                offered = fraction * limit
                if offered > 1.0 + 1e-9:
                    continue
                threshold = min(65536, round(offered / pf * 65536))
                points.append({
                    "pattern": pattern, "packet_flits": pf, "fraction": fraction,
                    "offered": threshold * pf / 65536, "threshold": threshold,
                    "seed": seed + len(points), "warmup": warmup, "measure": measure,
                    "drain": drain, "wait_idle": wait_idle,
                    "hotspot_threshold": min(65535, round(hotspot_fraction * 65536)),
                })
    return points


def fit_per_hop(latency_by_hops):
    """Least-squares line ``latency = intercept + per_hop * hops`` through ``{hops: latency}``;
    returns ``(per_hop, intercept)`` or None with fewer than two distances."""
    if len(latency_by_hops) < 2:
        return None
    xs, ys = list(latency_by_hops), list(latency_by_hops.values())
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    per_hop = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return per_hop, my - per_hop * mx


def summarize(cfg, result):
    """Figures of one run from its per-tile counters (see ``tilemesh_sim.noc_bench``)."""
    point, tiles = result["point"], result["tiles"]
    nodes, measure, pf = cfg.tiles, point["measure"], point["packet_flits"]
    gen = [t["generator"] for t in tiles]
    sink = [t["sink"] for t in tiles]
    tagged_created = sum(g["created_tagged"] for g in gen)
    tagged = sum(s["tagged_packets"] for s in sink)
    lat_sum = sum(s["latency_sum"] for s in sink)
    hops = {}
    for h in range(cfg.rows + cfg.cols - 1):
        n = sum(s["hops"][h]["packets"] for s in sink)
        if n:
            hops[h] = {"packets": n,
                       "mean": sum(s["hops"][h]["latency_sum"] for s in sink) / n,
                       "min": min(s["hops"][h]["latency_min"] for s in sink
                                  if s["hops"][h]["packets"])}
    accepted_per_node = [s["accepted_flits"] / measure for s in sink]
    accepted = sum(accepted_per_node) / nodes
    offered_measured = tagged_created * pf / (nodes * measure)
    drops = sum(v for t in tiles for part in t["network"].values() for v in part.values())
    summary = {
        "pattern": point["pattern"], "packet_flits": pf, "fraction": point.get("fraction"),
        "offered": point["offered"],
        "offered_measured": offered_measured,
        "accepted": accepted,
        "accepted_min_node": min(accepted_per_node),
        "latency": lat_sum / tagged if tagged else None,
        "latency_max": max(s["latency_max"] for s in sink),
        "packets_measured": tagged, "packets_tagged": tagged_created,
        "drained": bool(result["drained"]),
        # Keeping up: every measured packet arrived and nearly all offered flits were accepted.
        "stable": bool(result["drained"]) and accepted >= STABLE_FRACTION * offered_measured,
        "errors": sum(s["errors"] for s in sink),
        "error_flags": sorted({k for s in sink for k, v in s["error_flags"].items() if v}),
        "drops": drops, "host_flits": result["host_flits"],
        "created": sum(g["created"] for g in gen),
        "injected": sum(g["injected_packets"] for g in gen),
        "delivered": sum(s["packets"] for s in sink),
        "idle": bool(result["idle"]), "cycles": result["end_at"],
        "hops": hops, "seed": point["seed"], "wall_s": result["wall_s"],
    }
    return summary


# -- running the simulator ---------------------------------------------------------------------

def _source_hash():
    """Hash of every source file the benchmark's Verilog depends on (the Verilog cache key)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    wanted = ("bench/traffic.py", "model/reference.py", "config.py", "layouts.py", "generate.py")
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("noc/") or rel in wanted:
            h.update(rel.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def bench_verilog(cfg, cache_dir=None, progress=print):
    """Verilog of ``NocBenchTop(cfg)``, cached under ``cache_dir`` by a hash of the sources and
    the configuration (converting an 8x8 mesh takes minutes)."""
    key = hashlib.sha256((_source_hash() + cfg.to_json()).encode()).hexdigest()[:16]
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{TOP_NAME}-{cfg.rows}x{cfg.cols}-{key}.v"
        if path.exists():
            return path.read_text()
    t0 = time.perf_counter()
    progress(f"  converting the {cfg.rows}x{cfg.cols} benchmark top to Verilog ...")
    # Structural: the router and the ingress checker are converted once and instantiated per
    # tile (an 8x8 top converted flat took over 20 minutes, structural well under one).
    modules, parts = fabric_parts(cfg)
    text = StructuralDesign(TOP_NAME, lambda: NocBenchTop(cfg, modules=modules), parts).verilog()
    progress(f"  converted in {time.perf_counter() - t0:.0f} s ({len(text) / 1e6:.1f} MB)")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return text


def _verilator_args(opt):
    """Only the top module's ports public (the testbench uses nothing else), and the C++
    optimisation level named in a define so that it is part of the build's key."""
    from tilemesh_sim.runner import top_ports_public

    return [*top_ports_public(TOP_NAME), "-CFLAGS", f"-DTILEMESH_OPT_FAST_{opt}"]


def run_mesh(cfg, points, *, simulator="verilator", results_path, cache_dir=None,
             on_result=None, progress=print, opt=DEFAULT_OPT):
    """Run ``points`` on one build of ``NocBenchTop(cfg)``; returns the raw results in order.

    ``on_result(index, result)`` is called as each point finishes (from a polling thread).
    """
    from tilemesh_sim.runner import run_cocotb

    text = bench_verilog(cfg, cache_dir, progress)
    results_path = Path(results_path)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text("")
    stop = threading.Event()
    seen = []

    def poll():
        while True:
            finished = stop.wait(0.5)
            with open(results_path) as f:
                lines = f.read().split("\n")[:-1]   # the last piece is not finished yet
            for line in lines[len(seen):]:
                seen.append(json.loads(line))
                if on_result is not None:
                    on_result(len(seen) - 1, seen[-1])
            if finished:
                return

    from tilemesh_sim.runner import ICARUS_VERILOG_2005

    build_args = _verilator_args(opt) if simulator == "verilator" else list(ICARUS_VERILOG_2005)
    progress(f"  simulating on {simulator} (the first run of a design builds it) ...")
    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        run_cocotb(text, name=TOP_NAME, module="tilemesh_sim.noc_bench",
                   simulator=simulator, build_args=build_args,
                   make_flags=[f"OPT_FAST=-{opt}"] if simulator == "verilator" else [],
                   params={"config": cfg.to_dict(), "results": str(results_path.resolve()),
                           "points": points})
    finally:
        stop.set()
        thread.join()
    if len(seen) != len(points):
        raise RuntimeError(f"the simulation returned {len(seen)} of {len(points)} results")
    return seen


# -- command line ------------------------------------------------------------------------------

def _csv(kind, what):
    def parse(text):
        try:
            values = tuple(kind(v.strip()) for v in text.split(",") if v.strip())
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{what} must be a comma-separated list, "
                                             f"not {text!r} ({e})") from None
        if not values:
            raise argparse.ArgumentTypeError(f"{what} must not be empty")
        return values
    return parse


def _mesh(text):
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"a mesh is ROWSxCOLS, not {text!r}") from None
    if not (1 <= rows <= 32 and 1 <= cols <= 32):
        raise ValueError(f"mesh rows and columns must be in 1..32, not {text!r}")
    return rows, cols


def add_arguments(parser):
    """Options of ``tilemesh bench noc`` (``--preset``/``--config`` give the NoC parameters)."""
    parser.add_argument("--meshes", type=_csv(_mesh, "--meshes"), default=((4, 4), (8, 8)),
                        help="meshes to simulate, e.g. 4x4,8x8 (default)")
    parser.add_argument("--patterns", type=_csv(str, "--patterns"),
                        default=("uniform", "transpose"),
                        help="traffic patterns: uniform, transpose, bit_complement, hotspot, "
                             "neighbour (default: uniform,transpose)")
    parser.add_argument("--packet-flits", type=_csv(int, "--packet-flits"), default=(1, 4),
                        help="packet sizes in flits, header included (default: 1,4)")
    parser.add_argument("--loads", type=_csv(float, "--loads"), default=DEFAULT_LOADS,
                        help="offered loads as fractions of the bisection limit 4/k "
                             "(default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=1000, help="warm-up cycles per point")
    parser.add_argument("--measure", type=int, default=4000, help="measured cycles per point")
    parser.add_argument("--drain", type=int, default=4000,
                        help="most cycles to wait for measured packets after the window")
    parser.add_argument("--check-idle", action="store_true",
                        help="after each point also wait until every created packet arrived "
                             "and check delivered == created (longer past saturation)")
    parser.add_argument("--hotspot-fraction", type=float, default=0.2,
                        help="hotspot pattern: share of packets sent to the middle tile "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1,
                        help="run seed; point i uses seed + i (default: %(default)s)")
    parser.add_argument("--sim", default="verilator", choices=["verilator", "icarus"])
    parser.add_argument("--jobs", type=int, default=2,
                        help="meshes built and simulated side by side (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="a short run: 4x4 only, 5 loads, 500 + 1500 cycles per point")
    parser.add_argument("-o", "--output", default="build/bench", help="output directory")


def run(args):
    """``tilemesh bench noc``: run the sweep, print tables, write JSON and PNG. Returns 0 when
    every run was error-free and the targets are met, 1 otherwise."""
    from ..cli import config_from_args

    base = config_from_args(args)
    if args.quick:
        args.meshes, args.loads = ((4, 4),), (0.02, 0.3, 0.6, 0.9, 1.0)
        args.warmup, args.measure, args.drain = 500, 1500, 1500
    for p in args.patterns:
        try:
            TrafficPattern.from_label(p)
        except ValueError as e:
            raise ConfigError(f"--patterns: {e}") from None
    for fraction in args.loads:
        if not 0 < fraction <= 100:
            raise ConfigError(f"--loads must be fractions of the bisection limit above 0, "
                              f"not {fraction!r}")
    for name in ("warmup", "measure", "drain"):
        if getattr(args, name) < (1 if name == "measure" else 0):
            raise ConfigError(f"--{name} must be a positive number of cycles, "
                              f"not {getattr(args, name)!r}")
    if not 0 <= args.hotspot_fraction < 1:
        raise ConfigError(f"--hotspot-fraction must be in [0, 1), not {args.hotspot_fraction!r}")
    for pf in args.packet_flits:
        if not 1 <= pf <= base.noc.max_packet_flits + 1:
            raise ConfigError(f"--packet-flits must be in 1..{base.noc.max_packet_flits + 1} "
                              f"(max_packet_flits + 1), not {pf!r}")
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, not {args.jobs!r}")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    report = {"command": "tilemesh " + " ".join(sys.argv[1:]),
              "noc": dataclasses.asdict(base.noc), "simulator": args.sim,
              "phases": {"warmup": args.warmup, "measure": args.measure, "drain": args.drain},
              "meshes": []}

    jobs = []
    for rows, cols in args.meshes:
        cfg = bench_config(base, rows, cols)
        ts_bits = tag_layout(cfg)["ts"].shape.width
        if args.warmup + args.measure + args.drain >= (1 << ts_bits) - 1:
            raise ConfigError(f"--warmup + --measure + --drain must be below {(1 << ts_bits) - 1} "
                              f"cycles (the {ts_bits}-bit timestamps of a {rows}x{cols} mesh)")
        patterns = [p for p in args.patterns if p != "transpose" or rows == cols]
        points = make_points(cfg, patterns, args.packet_flits, args.loads, warmup=args.warmup,
                             measure=args.measure, drain=args.drain, seed=args.seed,
                             wait_idle=args.check_idle,
                             hotspot_fraction=args.hotspot_fraction)
        path = out / f"noc-{rows}x{cols}.jsonl"
        path.write_text("")
        jobs.append((cfg, points, path))
        print(f"NoC benchmark: {rows}x{cols} mesh, {len(points)} points "
              f"({', '.join(patterns)}; {', '.join(map(str, args.packet_flits))}-flit packets), "
              f"FIFO depth {cfg.noc.fifo_depth}, {args.sim}", flush=True)

    # Each mesh is one simulator build and one simulation process; meshes run side by side
    # (--jobs), and progress is read from the result lines the simulations append.
    watcher = _Progress(jobs, t_start)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(args.jobs, len(jobs)), mp_context=context) as pool:
        futures = [pool.submit(run_mesh, cfg, points, simulator=args.sim, results_path=path,
                               cache_dir=out / "verilog",
                               progress=functools.partial(_say, f"{cfg.rows}x{cfg.cols}"))
                   for cfg, points, path in jobs]
        while not all(f.done() for f in futures):
            watcher.poll()
            time.sleep(1.0)
        watcher.poll()
        raws = [f.result() for f in futures]

    ok = True
    for (cfg, _, _), raw in zip(jobs, raws, strict=True):
        mesh = _mesh_report(cfg, [summarize(cfg, r) for r in raw], args)
        report["meshes"].append(mesh)
        ok &= mesh["ok"]
    report["wall_s"] = time.perf_counter() - t_start
    _print_tables(report)
    (out / "noc.json").write_text(json.dumps(report, indent=1) + "\n")
    _plot(report, out / "noc.png")
    print(f"\nwrote {out / 'noc.json'} and {out / 'noc.png'} "
          f"({report['wall_s']:.0f} s in all)")
    return 0 if ok else 1


def _say(label, text):
    print(f"[{label}] {text.strip()}", flush=True)


class _Progress:
    """Prints one line per finished point from the JSON-lines files the simulations append."""

    def __init__(self, jobs, t_start):
        self._jobs = jobs
        self._seen = [0] * len(jobs)
        self._t_start = t_start

    def poll(self):
        for j, (cfg, points, path) in enumerate(self._jobs):
            try:
                lines = path.read_text().split("\n")[:-1]   # the last piece is unfinished
            except OSError:
                continue
            for line in lines[self._seen[j]:]:
                self._seen[j] += 1
                s = summarize(cfg, json.loads(line))
                lat = f"latency {s['latency']:7.1f}" if s["drained"] else "saturated"
                print(f"[{cfg.rows}x{cfg.cols}] {self._seen[j]:3d}/{len(points)} "
                      f"{s['pattern']:>9} {s['packet_flits']}-flit offered {s['offered']:.3f} "
                      f"accepted {s['accepted']:.3f} {lat} "
                      f"({time.perf_counter() - self._t_start:.0f} s)", flush=True)


def _mesh_report(cfg, summaries, args):
    limit = bisection_limit(cfg.rows, cfg.cols)
    curves = []
    ok = all(s["errors"] == 0 and s["drops"] == 0 and s["host_flits"] == 0 for s in summaries)
    if args.check_idle:
        ok &= all(s["idle"] and s["created"] == s["injected"] == s["delivered"]
                  for s in summaries)
    for pattern in dict.fromkeys(s["pattern"] for s in summaries):
        for pf in dict.fromkeys(s["packet_flits"] for s in summaries):
            pts = sorted((s for s in summaries
                          if s["pattern"] == pattern and s["packet_flits"] == pf),
                         key=lambda s: s["offered"])
            if not pts:
                continue
            low = pts[0]
            zero = {h: v["min"] for h, v in low["hops"].items()}
            fit = fit_per_hop(zero)
            mean_fit = fit_per_hop({h: v["mean"] for h, v in low["hops"].items()})
            stable = [s for s in pts if s["stable"]]
            # Saturation throughput: the accepted throughput at offered loads beyond saturation
            # (every point the network no longer keeps up with), averaged over those points,
            # each already an average over its steady measurement window. Not the highest
            # accepted value of the sweep, which picks the luckiest point. Without a saturated
            # point the network was never saturated: the highest accepted value is a lower bound.
            beyond = [s["accepted"] for s in pts if not s["stable"]]
            peak = max(s["accepted"] for s in pts)
            saturation = sum(beyond) / len(beyond) if beyond else peak
            curve = {
                "pattern": pattern, "packet_flits": pf, "points": pts,
                "zero_load": {
                    "offered": low["offered"], "min_by_hops": zero,
                    "mean_by_hops": {h: v["mean"] for h, v in low["hops"].items()},
                    "per_hop": fit[0] if fit else None,
                    "intercept": fit[1] if fit else None,
                    "mean_per_hop": mean_fit[0] if mean_fit else None,
                    "matches_formula": all(v == zero_load_latency(h, pf)
                                           for h, v in zero.items())},
                # The plateau past saturation (Dally and Towles' saturation throughput).
                "saturation_throughput": saturation,
                "saturation_points": len(beyond),
                "peak_accepted": peak,
                "saturation_fraction_of_bisection": saturation / limit,
                "accepted_at_highest_offered": pts[-1]["accepted"],
                "min_node_at_highest_offered": pts[-1]["accepted_min_node"],
                # The highest offered load the network still keeps up with.
                "highest_stable_offered": stable[-1]["offered"] if stable else None,
            }
            curve["per_hop_target_met"] = fit is not None and fit[0] <= TARGET_PER_HOP + 1e-9
            ok &= curve["per_hop_target_met"] or fit is None
            if pattern == "uniform" and pf == 1:
                curve["saturation_target"] = TARGET_SATURATION * limit
                curve["saturation_target_met"] = saturation >= TARGET_SATURATION * limit
                ok &= curve["saturation_target_met"]
            curves.append(curve)
    return {"rows": cfg.rows, "cols": cfg.cols, "bisection_limit": limit, "curves": curves,
            "ok": ok}


def _print_tables(report):
    for mesh in report["meshes"]:
        k = f"{mesh['rows']}x{mesh['cols']}"
        print(f"\n{k} mesh (bisection limit {mesh['bisection_limit']:.3f} flits/node/cycle)")
        for c in mesh["curves"]:
            print(f"  {c['pattern']}, {c['packet_flits']}-flit packets")
            print("    offered  accepted  min-node  avg-lat  max-lat  state")
            for s in c["points"]:
                lat = f"{s['latency']:7.1f}" if s["latency"] is not None else "      -"
                state = ("stable" if s["stable"] else
                         "saturated" if s["drained"] else "saturated, not drained")
                print(f"    {s['offered']:7.3f}  {s['accepted']:8.3f}  "
                      f"{s['accepted_min_node']:8.3f}  {lat}  {s['latency_max']:7d}  {state}")
    print("\nsummary (throughput in flits/node/cycle; latency in cycles)")
    print("  mesh  pattern     flits  saturation  /bisection  min-node  stable-up-to  "
          "zero-load/hop  zero-load  target")
    for mesh in report["meshes"]:
        k = f"{mesh['rows']}x{mesh['cols']}"
        for c in mesh["curves"]:
            z = c["zero_load"]
            hop = f"{z['per_hop']:13.2f}" if z["per_hop"] is not None else "            -"
            icp = (f"{z['intercept']:5.1f}+{z['per_hop']:.0f}h" if z["per_hop"] is not None
                   else "        -")
            stable = c["highest_stable_offered"]
            target = ""
            if "saturation_target_met" in c:
                target = (f">= {c['saturation_target']:.3f} "
                          f"{'met' if c['saturation_target_met'] else 'MISSED'}")
            print(f"  {k:<5} {c['pattern']:<11} {c['packet_flits']:5d}  "
                  f"{c['saturation_throughput']:10.3f}  "
                  f"{c['saturation_fraction_of_bisection']:10.0%}  "
                  f"{c['min_node_at_highest_offered']:8.3f}  "
                  f"{stable if stable is None else format(stable, '.3f'):>12}  {hop}  "
                  f"{icp:>9}  {target}")
        if any(not c["zero_load"]["matches_formula"] for c in mesh["curves"]):
            print(f"  {k}: zero-load latency differs from 2*hops + 2*flits + 2")


def _plot(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meshes = report["meshes"]
    fig, axes = plt.subplots(2, len(meshes), figsize=(6.5 * len(meshes), 8.5), squeeze=False,
                             sharex="col", gridspec_kw={"height_ratios": [3, 2]})
    for col, mesh in enumerate(meshes):
        lat_ax, thr_ax = axes[0][col], axes[1][col]
        limit = mesh["bisection_limit"]
        x_max = min(1.05, max(s["offered"] for c in mesh["curves"] for s in c["points"]) * 1.05)
        for c in mesh["curves"]:
            pts = c["points"]
            label = f"{c['pattern']}, {c['packet_flits']}-flit"
            ok = [s for s in pts if s["stable"]]
            line, = lat_ax.plot([s["offered"] for s in ok], [s["latency"] for s in ok], "o-",
                                label=label)
            sat = [s for s in pts if not s["stable"] and s["latency"] is not None]
            lat_ax.plot([s["offered"] for s in sat], [s["latency"] for s in sat], "^",
                        mfc="none", color=line.get_color())
            thr_ax.plot([s["offered"] for s in pts], [s["accepted"] for s in pts], "o-",
                        color=line.get_color(), label=label, ms=4)
        for ax in (lat_ax, thr_ax):
            ax.axvline(limit, color="k", ls="--", lw=1)
            ax.grid(True, which="both", alpha=0.3)
        lat_ax.axvline(TARGET_SATURATION * limit, color="0.5", ls=":", lw=1)
        thr_ax.axhline(TARGET_SATURATION * limit, color="0.5", ls=":", lw=1,
                       label=f"target: {TARGET_SATURATION:.0%} of 4/k (uniform, 1-flit)")
        thr_ax.plot([0, x_max], [0, x_max], color="0.8", lw=1, label="accepted = offered")
        lat_ax.plot([], [], "k--", lw=1, label=f"bisection limit 4/k = {limit:.2f}")
        lat_ax.set_yscale("log")
        lat_ax.set_xlim(0, x_max)
        lat_ax.set_ylabel("average packet latency (cycles)")
        lat_ax.set_title(f"{mesh['rows']}x{mesh['cols']} mesh, XY wormhole, FIFO depth "
                         f"{report['noc']['fifo_depth']}")
        lat_ax.legend(fontsize=8, loc="upper left")
        thr_ax.set_xlabel("offered load (flits/node/cycle)")
        thr_ax.set_ylabel("accepted (flits/node/cycle)")
        thr_ax.set_ylim(0, x_max)
        thr_ax.legend(fontsize=7, loc="upper left")
    fig.text(0.01, 0.005, "hollow triangles: past saturation (accepted < 95 % of offered, or "
             "measured packets still queued at the end):\nlatency there grows with the run "
             "length. Dashed: bisection limit 4/k; dotted: 70 % of it.", fontsize=7)
    fig.tight_layout(rect=(0, 0.035, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
