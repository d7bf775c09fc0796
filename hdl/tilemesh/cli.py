"""The ``tilemesh`` command line.

Every subcommand takes a mesh description as ``--preset NAME`` and/or ``--config FILE`` (TOML or
JSON; the file's values override the preset). A bad configuration prints one clear line and exits
with status 2, never a traceback.
"""

import argparse
import importlib
import sys
import time

from .config import PRESETS, ConfigError, MeshConfig, preset

__all__ = ["main", "config_from_args"]

BENCHES = {
    "matrix": "tilemesh.bench.matrix",
    "noc": "tilemesh.bench.noc",
}


def add_config_arguments(parser):
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS),
                        help="named mesh configuration (default: %(default)s)")
    parser.add_argument("--config", metavar="FILE",
                        help="TOML/JSON configuration; its values override the preset")


def config_from_args(args):
    """The MeshConfig that ``--preset`` and ``--config`` describe."""
    base = preset(args.preset)
    return MeshConfig.load(args.config, base=base) if args.config else base


def _cmd_generate(args):
    from .generate import generate

    cfg = config_from_args(args)
    t0 = time.perf_counter()
    paths = generate(cfg, args.output, noc_only=args.noc_only,
                     progress=lambda s: print(s, file=sys.stderr, flush=True))
    dt = time.perf_counter() - t0
    for p in paths:
        print(p)
    print(f"generated {len(paths)} files for a {cfg.rows}x{cfg.cols} mesh in {dt:.1f} s",
          file=sys.stderr)
    return 0


def _cmd_sim(args):
    from .bench.matrix import run_matrix_check

    cfg = config_from_args(args)
    res = run_matrix_check(cfg, simulator=args.sim, seed=args.seed)
    return 0 if res.get("mismatches", 1) == 0 else 1


def _module_command(module_name):
    def run(args):
        return importlib.import_module(module_name).run(args)
    return run


def build_parser():
    parser = argparse.ArgumentParser(prog="tilemesh", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("generate", help="write Verilog, params JSON and a resource estimate")
    add_config_arguments(p)
    p.add_argument("-o", "--output", default="build/rtl", help="output directory")
    p.add_argument("--noc-only", action="store_true", help="only the network fabric")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("sim", help="the main job: simulate the preset on Verilator vs numpy")
    add_config_arguments(p)
    p.add_argument("--sim", default="verilator", choices=["verilator", "icarus"])
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=_cmd_sim)

    p = sub.add_parser("lint", help="verilator --lint-only on the generated Verilog")
    add_config_arguments(p)
    importlib.import_module("tilemesh.lint").add_arguments(p)
    p.set_defaults(func=_module_command("tilemesh.lint"))

    p = sub.add_parser("synth", help="synthesis and place-and-route report (LUT/FF/DSP/BRAM/Fmax)")
    add_config_arguments(p)
    importlib.import_module("tilemesh.synth").add_arguments(p)
    p.set_defaults(func=_module_command("tilemesh.synth"))

    p = sub.add_parser("bench", help="benchmarks: tables, JSON and plots")
    bsub = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    for name, module_name in BENCHES.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        bp = bsub.add_parser(name, help=(module.__doc__ or name).strip().splitlines()[0])
        add_config_arguments(bp)
        module.add_arguments(bp)
        bp.set_defaults(func=_module_command(module_name))
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"tilemesh: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
