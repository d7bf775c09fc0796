"""Matrix-unit utilisation and simulator speed on Verilator (``tilemesh bench matrix``).

For each array size and K, several back-to-back operations of K steps (no idle input, no
backpressure) run through the generated Verilog, every result row is checked against numpy, and
the cycles from the first accepted step to the last result row are measured. Utilisation is
useful MACs / (PEs x cycles). It is compared with the textbook output-stationary count of
R + C + K - 2 cycles per output fold (SCALE-Sim: fill, K steps and drain, folds not overlapped)
and with :meth:`tilemesh.tile.matrix.MatrixUnit.cycles`, the exact figure the design promises.
Simulator speed is measured twice: with the cocotb driver/monitor in the loop (Python every
cycle) and free-running (inputs held valid, no Python per cycle).
"""

import json
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["add_arguments", "run", "run_matrix_check", "matrix_design", "DESIGN_NAME"]

#: Top-level Verilog name of the matrix unit in every simulation (builds are shared by hash).
DESIGN_NAME = "matrix_unit"
BENCH_MODULE = "tilemesh_sim.matrix_bench"


def matrix_design(rows, cols, data_bits, acc_bits):
    """The matrix unit the benches simulate (the same object the tests build)."""
    from ..tile.matrix import MatrixUnit

    return MatrixUnit(rows, cols, data_bits, acc_bits)


def _params(rows, cols, data_bits, acc_bits, **extra):
    return {"rows": rows, "cols": cols, "data_bits": data_bits, "acc_bits": acc_bits, **extra}


def _run_runs(rows, cols, data_bits, acc_bits, runs, *, simulator, seed):
    """Run the cocotb ``measured_runs`` test; returns (per-run results, test directory).
    Raises SimulationFailed only when no results were written (a crash, not a mismatch)."""
    from tilemesh_sim.runner import SimulationFailed, run_cocotb

    with tempfile.TemporaryDirectory(prefix="tilemesh-matrix-") as tmp:
        out = Path(tmp) / "runs.json"
        failure = None
        try:
            test_dir = run_cocotb(
                matrix_design(rows, cols, data_bits, acc_bits), name=DESIGN_NAME,
                module=BENCH_MODULE, simulator=simulator, seed=seed, testcase="measured_runs",
                params=_params(rows, cols, data_bits, acc_bits, runs=runs, out=str(out)))
        except SimulationFailed as e:
            failure, test_dir = e, None
        if not out.exists():
            raise failure or RuntimeError("the matrix bench wrote no results")
        results = json.loads(out.read_text())["runs"]
    if failure is not None and len(results) == len(runs) and all(
            r["mismatches"] == 0 and not r["protocol_errors"] for r in results):
        raise failure  # failed for another reason than a scored mismatch
    return results, test_dir


def run_matrix_check(cfg, simulator="verilator", ops=64, seed=1, *, k_max=64, idle=0.0,
                     stall=0.0, verbose=True):
    """Random operations on the matrix unit of ``cfg.tile`` in RTL simulation vs numpy.

    Operations have random K in 1..``k_max``, random chaining (no ``last``: the next operation
    accumulates onto this one's sum; or a ``first`` restarts it) and values that include the
    wrap-around extremes; every result row is compared with
    :func:`tilemesh.model.reference.matmul_tiles`.

    Returns
    -------
    dict
        ``ops``, ``steps``, ``tiles``, ``macs``, ``cycles`` (first accepted step to last result
        row), ``utilisation`` (MACs / (PEs x cycles)), ``mismatches`` (rows that differ),
        ``errors`` (the first few, described), ``protocol_errors``, and the configuration.
    """
    t = cfg.tile
    spec = {"kind": "random", "ops": ops, "seed": seed, "k_max": k_max, "idle": idle,
            "stall": stall}
    if verbose:
        print(f"matrix unit {t.pe_rows}x{t.pe_cols}, int{t.data_bits} operands, "
              f"{t.acc_bits}-bit accumulators: {ops} random operations on {simulator} "
              f"(seed {seed}) ...", flush=True)
    t0 = time.perf_counter()
    (res,), test_dir = _run_runs(t.pe_rows, t.pe_cols, t.data_bits, t.acc_bits, [spec],
                                 simulator=simulator, seed=seed)
    res = {"rows": t.pe_rows, "cols": t.pe_cols, "data_bits": t.data_bits,
           "acc_bits": t.acc_bits, "simulator": simulator, "seed": seed, **res,
           "passed": res["mismatches"] == 0 and not res["protocol_errors"],
           "elapsed_s": time.perf_counter() - t0}
    if verbose:
        ks = res["op_steps"]
        print(f"  {res['ops']} operations (K {min(ks)}..{max(ks)}), {res['steps']} steps, "
              f"{res['tiles']} C tiles checked against numpy: {res['mismatches']} mismatching "
              f"rows")
        for err in res["errors"] + res["protocol_errors"]:
            print(f"    {err}")
        print(f"  {res['cycles']} cycles, utilisation {100 * res['utilisation']:.1f} % "
              f"(useful MACs / (PEs x cycles); random K, so below the back-to-back figure)")
        print(f"  {'PASS' if res['passed'] else 'FAIL'} ({res['elapsed_s']:.1f} s)")
    return res


# -- tilemesh bench matrix ----------------------------------------------------------------------

def _size(text):
    try:
        r, c = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"array size must look like 4x4, not {text!r}") from None
    return r, c


def add_arguments(parser):
    parser.add_argument("-o", "--output", default="build/bench/matrix.json",
                        help="JSON results (a PNG plot is written beside it)")
    parser.add_argument("--sim", default="verilator", choices=["verilator", "icarus"],
                        help="simulator (default: %(default)s)")
    parser.add_argument("--arrays", default="4x4,8x8",
                        help="array sizes RxC, comma separated (default: %(default)s)")
    parser.add_argument("--k", default="8,64,256",
                        help="steps per operation, comma separated (default: %(default)s)")
    parser.add_argument("--ops", type=int, default=8,
                        help="back-to-back operations per measurement (default: %(default)s)")
    parser.add_argument("--speed-cycles", type=int, default=200_000,
                        help="cycles of the free-running speed run (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-plot", action="store_true", help="do not write the PNG plot")


def run(args):
    from tilemesh.cli import config_from_args
    from tilemesh_sim.runner import run_cocotb

    from ..tile.matrix import back_to_back_cycles

    cfg = config_from_args(args)
    data_bits, acc_bits = cfg.tile.data_bits, cfg.tile.acc_bits
    try:
        arrays = [_size(s) for s in args.arrays.split(",")]
        ks = [int(k) for k in args.k.split(",")]
    except ValueError as e:
        print(f"tilemesh bench matrix: error: {e}", file=sys.stderr)
        return 2
    if args.ops < 1 or any(k < 1 for k in ks):
        print("tilemesh bench matrix: error: --ops and every K must be at least 1",
              file=sys.stderr)
        return 2

    results, speeds, failed = [], [], False
    for rows, cols in arrays:
        print(f"{rows}x{cols} array, int{data_bits} -> int{acc_bits}: K = "
              f"{', '.join(map(str, ks))} on {args.sim} ...", file=sys.stderr, flush=True)
        runs = [{"kind": "back_to_back", "k": k, "ops": args.ops, "seed": args.seed + k}
                for k in ks]
        promised = {k: back_to_back_cycles(rows, cols, [k] * args.ops) for k in ks}
        measured, _ = _run_runs(rows, cols, data_bits, acc_bits, runs, simulator=args.sim,
                                seed=args.seed)
        for k, res in zip(ks, measured, strict=True):
            fold = rows + cols + k - 2
            results.append({
                "rows": rows, "cols": cols, "k": k, "ops": args.ops, "cycles": res["cycles"],
                "macs": res["macs"], "utilisation": res["utilisation"],
                "expected_cycles": promised[k],
                "textbook_cycles": args.ops * fold, "textbook_utilisation": k / fold,
                "mismatches": res["mismatches"], "driven_cycles_per_s": res["cycles_per_s"],
            })
            failed |= res["mismatches"] > 0 or res["cycles"] != promised[k]
        with tempfile.TemporaryDirectory(prefix="tilemesh-matrix-") as tmp:
            out = Path(tmp) / "speed.json"
            run_cocotb(matrix_design(rows, cols, data_bits, acc_bits), name=DESIGN_NAME,
                       module=BENCH_MODULE, simulator=args.sim, seed=args.seed,
                       testcase="free_running_speed",
                       params=_params(rows, cols, data_bits, acc_bits,
                                      cycles=args.speed_cycles, out=str(out)))
            speed = json.loads(out.read_text())
        speeds.append({"rows": rows, "cols": cols, **speed})

    _print_table(results, speeds, args.sim)
    report = {"command": "tilemesh " + " ".join(sys.argv[1:]),
              "simulator": args.sim, "data_bits": data_bits, "acc_bits": acc_bits,
              "utilisation": results, "speed": speeds}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    if not args.no_plot:
        print(f"wrote {_plot(results, out.with_suffix('.png'))}")
    if failed:
        print("FAIL: a result mismatched numpy or a cycle count differs from "
              "MatrixUnit.cycles()", file=sys.stderr)
    return 1 if failed else 0


def _print_table(results, speeds, simulator):
    head = (f"{'array':>5} {'K':>4} {'ops':>4} {'cycles':>7} {'util %':>7} {'textbook':>9} "
            f"{'tb util %':>9} {'speedup':>7} {'ok':>3}")
    print(head)
    print("-" * len(head))
    for r in results:
        ok = "yes" if r["mismatches"] == 0 and r["cycles"] == r["expected_cycles"] else "NO"
        print(f"{r['rows']}x{r['cols']:<3} {r['k']:>4} {r['ops']:>4} {r['cycles']:>7} "
              f"{100 * r['utilisation']:>7.1f} {r['textbook_cycles']:>9} "
              f"{100 * r['textbook_utilisation']:>9.1f} "
              f"{r['textbook_cycles'] / r['cycles']:>7.2f} {ok:>3}")
    print()
    print(f"{simulator} simulated cycles per second")
    for s in speeds:
        driven = [r["driven_cycles_per_s"] for r in results
                  if (r["rows"], r["cols"]) == (s["rows"], s["cols"])]
        print(f"  {s['rows']}x{s['cols']}: free-running {s['cycles_per_s']:,.0f}, "
              f"cocotb-driven {max(driven):,.0f}")


def _plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for size in sorted({(r["rows"], r["cols"]) for r in results}):
        rs = [r for r in results if (r["rows"], r["cols"]) == size]
        ks = [r["k"] for r in rs]
        line, = ax.plot(ks, [100 * r["utilisation"] for r in rs], "o-",
                        label=f"{size[0]}x{size[1]} measured")
        ax.plot(ks, [100 * r["textbook_utilisation"] for r in rs], "x--",
                color=line.get_color(), label=f"{size[0]}x{size[1]} R+C+K-2 per fold")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("K (steps per operation)")
    ax.set_ylabel("utilisation (%)")
    ax.set_ylim(0, 105)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"matrix unit, {results[0]['ops']} back-to-back operations")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
