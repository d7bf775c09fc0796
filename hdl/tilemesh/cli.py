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
    "gemm": "tilemesh.bench.gemm",
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
    from .gemm import run_demo

    return run_demo(config_from_args(args), simulator=args.sim, seed=args.seed)


def _cmd_build(argv):
    return _boards_module("build").main(argv, prog="tilemesh build")


def _boards_module(name):
    """A module of the board tops (``boards/``, installed as ``tilemesh_boards``), imported only
    when building: they pull in amaranth-boards."""
    return importlib.import_module(f"tilemesh_boards.{name}")


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

    p = sub.add_parser("sim", help="the main job: random GEMMs on the preset's RTL vs numpy")
    add_config_arguments(p)
    p.add_argument("--sim", default="verilator", choices=["verilator", "icarus"])
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=_cmd_sim)

    p = sub.add_parser("gemm", help="one GEMM on the model or the RTL, checked against numpy")
    add_config_arguments(p)
    importlib.import_module("tilemesh.gemm").add_arguments(p)
    p.set_defaults(func=_module_command("tilemesh.gemm"))

    p = sub.add_parser("lint", help="verilator --lint-only on the generated Verilog")
    add_config_arguments(p)
    importlib.import_module("tilemesh.lint").add_arguments(p)
    p.set_defaults(func=_module_command("tilemesh.lint"))

    p = sub.add_parser("synth", help="synthesis and place-and-route report (LUT/FF/DSP/BRAM/Fmax)")
    add_config_arguments(p)
    importlib.import_module("tilemesh.synth").add_arguments(p)
    p.set_defaults(func=_module_command("tilemesh.synth"))

    # Listed for --help; main() hands its arguments to boards/build.py, which parses them
    # (the board list and defaults live with the boards, imported only when building).
    sub.add_parser("build", help="bitstream of a board top: --board icebreaker|ulx3s-85f")

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
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["build"]:
        return _cmd_build(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"tilemesh: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
