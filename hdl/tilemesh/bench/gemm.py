"""GEMM utilisation versus size on whole meshes (``tilemesh bench gemm``).

For each preset and each M = K = N, one random int8 GEMM is compiled, run and checked bit-exactly
against numpy - on the RTL (Verilator, through the host port) up to ``--rtl-max``, and on the
Python cycle model at every size (the model is checked against the RTL by the test suite; where
both ran, both are listed). Reported per point: cycles start->done (operands resident, on-mesh)
and begin->end (host transfers included), on-mesh and end-to-end MAC utilisation (useful MACs /
(PEs x cycles)), and the host-port bound on the end-to-end figure
(:func:`tilemesh.gemm.host_port_bound`: A and B in, C out, one word per cycle each way).
"""

import json
import sys
import time
from pathlib import Path

__all__ = ["add_arguments", "run", "measure"]


def _ints(text, what):
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers, not {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{what} must all be at least 1, not {text!r}")
    return values


def add_arguments(parser):
    parser.add_argument("-o", "--output", default="build/bench/gemm.json",
                        help="JSON results (a PNG plot is written beside it)")
    parser.add_argument("--presets", default="default,large",
                        help="presets to measure, comma separated (default: %(default)s; "
                             "--config FILE measures that configuration instead)")
    parser.add_argument("--sizes", default="16,32,64,128,256,512",
                        help="M = K = N values, comma separated (default: %(default)s)")
    parser.add_argument("--rtl-max", default="default=64,large=32",
                        help="largest size run on the RTL per preset, NAME=SIZE,... "
                             "(0: model only; default: %(default)s)")
    parser.add_argument("--sim", default="verilator", choices=["verilator", "icarus"],
                        help="RTL simulator (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-plot", action="store_true", help="do not write the PNG plot")


def measure(cfg, name, size, backend, *, simulator="verilator", seed=1, progress=None):
    """One point: a random size^3 GEMM on ``backend``; a dict of its figures."""
    from ..gemm import random_operands, run_gemm

    A, B, _ = random_operands(cfg, size, size, size, seed)
    t0 = time.perf_counter()
    rep = run_gemm(cfg, A, B, backend=backend, simulator=simulator, seed=seed,
                   progress=progress)
    j = rep.to_json()
    return {"config": name, "size": size, "backend": backend,
            "source": backend if backend == "model" else f"rtl/{simulator}",
            "ok": rep.ok, "mesh_cycles": j["mesh_cycles"], "total_cycles": j["total_cycles"],
            "on_mesh": j["on_mesh_utilisation"], "end_to_end": j["end_to_end_utilisation"],
            "host_bound": j["host_port_bound"], "traffic_bound": j["traffic_bound"],
            "host_words_in": j["host_words_in"],
            "host_words_out": j["host_words_out"],
            "network_words": j["stats"].get("network_words"), "pes": cfg.pes,
            "wall_s": round(time.perf_counter() - t0, 2)}


def run(args):
    from tilemesh.cli import config_from_args

    from ..config import ConfigError, preset
    from ..gemm import _Progress

    try:
        sizes = _ints(args.sizes, "--sizes")
        rtl_max = {}
        for item in filter(None, args.rtl_max.split(",")):
            key, _, value = item.partition("=")
            rtl_max[key] = _ints(value, f"--rtl-max {key}")[0] if value != "0" else 0
    except ValueError as e:
        print(f"tilemesh bench gemm: error: {e}", file=sys.stderr)
        return 2
    if args.config:
        configs = [(Path(args.config).stem, config_from_args(args))]
    else:
        try:
            configs = [(n, preset(n)) for n in args.presets.split(",")]
        except ConfigError as e:
            print(f"tilemesh bench gemm: error: {e}", file=sys.stderr)
            return 2

    points, failed = [], False
    plan = [(n, c, s, b) for n, c in configs for s in sizes
            for b in (["rtl"] if s <= rtl_max.get(n, 0) else []) + ["model"]]
    t0 = time.perf_counter()
    for i, (name, cfg, size, backend) in enumerate(plan):
        where = "model" if backend == "model" else f"RTL ({args.sim})"
        print(f"[{i + 1}/{len(plan)} {time.perf_counter() - t0:6.0f} s] {name} "
              f"{size}x{size}x{size} on the {where} ...", file=sys.stderr, flush=True)
        try:
            p = measure(cfg, name, size, backend, simulator=args.sim, seed=args.seed + size,
                        progress=_Progress(every=10.0))
        except ConfigError as e:
            print(f"  skipped: {e}", file=sys.stderr)
            continue
        points.append(p)
        failed |= not p["ok"]
        if not p["ok"]:
            print(f"  FAIL: {name} {size}^3 on {p['source']} differs from numpy",
                  file=sys.stderr)
        _write(args, points)   # after every point: a long sweep keeps what it measured

    _print_table(points)
    out = _write(args, points)
    print(f"wrote {out}" + ("" if args.no_plot or not points
                            else f" and {out.with_suffix('.png')}"))
    return 1 if failed else 0


def _write(args, points):
    report = {"command": "tilemesh " + " ".join(sys.argv[1:]), "points": points}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    if not args.no_plot and points:
        _plot(points, out.with_suffix(".png"))
    return out


def _print_table(points):
    head = (f"{'config':<8} {'M=K=N':>5} {'source':<15} {'start->done':>11} {'begin->end':>11} "
            f"{'on-mesh %':>9} {'end-to-end %':>12} {'host bound %':>12} {'traffic %':>9} "
            f"{'ok':>3}")
    print(head)
    print("-" * len(head))
    for p in points:
        print(f"{p['config']:<8} {p['size']:>5} {p['source']:<15} {p['mesh_cycles']:>11,} "
              f"{p['total_cycles']:>11,} {100 * p['on_mesh']:>9.1f} {100 * p['end_to_end']:>12.1f} "
              f"{100 * p['host_bound']:>12.1f} {100 * p['traffic_bound']:>9.1f} "
              f"{'yes' if p['ok'] else 'NO':>3}")


def _plot(points, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.axhline(100, color="black", lw=1, label="100 % (every PE, every cycle)")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(dict.fromkeys(p["config"] for p in points)):
        col = colours[i % len(colours)]
        model = sorted((p for p in points if p["config"] == name and p["backend"] == "model"),
                       key=lambda p: p["size"])
        rtl = sorted((p for p in points if p["config"] == name and p["backend"] == "rtl"),
                     key=lambda p: p["size"])
        ref = model or rtl
        ax.plot([p["size"] for p in ref], [100 * p["host_bound"] for p in ref], ":",
                color=col, label=f"{name}: host-port bound")
        if model:
            ax.plot([p["size"] for p in model], [100 * p["on_mesh"] for p in model], "o-",
                    color=col, mfc="none", label=f"{name}: on-mesh (model)")
            ax.plot([p["size"] for p in model], [100 * p["end_to_end"] for p in model], "s--",
                    color=col, mfc="none", label=f"{name}: end-to-end (model)")
        if rtl:
            ax.plot([p["size"] for p in rtl], [100 * p["on_mesh"] for p in rtl], "o",
                    color=col, ms=7, label=f"{name}: on-mesh (RTL)")
            ax.plot([p["size"] for p in rtl], [100 * p["end_to_end"] for p in rtl], "s",
                    color=col, ms=7, label=f"{name}: end-to-end (RTL)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("M = K = N")
    ax.set_ylabel("MAC utilisation (%)")
    ax.set_ylim(0, 105)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title("GEMM utilisation vs size (useful MACs / (PEs x cycles))")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
