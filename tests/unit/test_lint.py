"""`tilemesh lint`: Verilator --lint-only -Wall with the reviewed waivers. Every generated block
must be clean; the waivers must hide only Amaranth's structural warnings, so real problems
(an unused input port, a blocking assignment in a clocked block) are still reported."""

import gc
import re
import warnings

import pytest
from amaranth.back import verilog
from amaranth.hdl import Module, Signal, UnusedElaboratable
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from conftest import require_tool

from tilemesh.cli import main
from tilemesh.config import preset
from tilemesh.generate import blocks
from tilemesh.lint import LINT_VLT, lint_verilog
from tilemesh.tile.simd import SimdUnit
from tilemesh.tile.sram import SramBank


def _block_names():
    # Only the names are needed; the components are dropped unelaborated on purpose.
    names = list(blocks(preset("default")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        gc.collect()
    return names


BLOCKS = _block_names()


@pytest.fixture(autouse=True)
def _verilator():
    require_tool("verilator", "needed by tilemesh lint")


@pytest.mark.parametrize("block", BLOCKS)
def test_default_preset_block_is_clean(block, tmp_path, capsys):
    assert main(["lint", "--preset", "default", "--block", block, "-o", str(tmp_path)]) == 0, \
        capsys.readouterr().out
    assert (tmp_path / f"{block}.v").exists() and (tmp_path / f"{block}.lint.log").exists()


def test_tiny_mesh_is_clean(tmp_path, capsys):
    # One-entry unit queues and FIFO depth 2: the corners where a width would reach zero.
    assert main(["lint", "--preset", "tiny", "--block", "tilemesh_mesh", "-o",
                 str(tmp_path)]) == 0, capsys.readouterr().out


@pytest.mark.parametrize("design", [
    SimdUnit(1, 32, 8), SimdUnit(8, 19, 7, scale_bits=11), SimdUnit(2, 64, 16, scale_bits=32),
    SramBank(13, 64, tag_bits=3, transparent=False, init=[1, 2, 3]), SramBank(1, 2),
], ids=["simd1x32", "simd8x19", "simd2x64", "sram13x64-tag-read-first", "sram1x2"])
def test_simd_and_sram_variants_are_clean(design, tmp_path):
    text = verilog.convert(design, name="block", emit_src=False, strip_internal_attrs=True)
    result = lint_verilog(text, "block", tmp_path)
    assert result.ok, result.findings


class _UnusedInput(wiring.Component):
    # Ignores the high half of `a`, and all of `b.y`'s alias is unread (structural).
    a: In(8)
    b: In(data.StructLayout({"x": 4, "y": 4}))
    y: Out(8)

    def elaborate(self, platform):
        m = Module()
        r = Signal(8)
        m.d.sync += r.eq(self.a[:4] + self.b.x + self.b.y)
        m.d.comb += self.y.eq(r)
        return m


def test_unused_input_port_is_a_finding_internal_wires_are_not(tmp_path):
    text = verilog.convert(_UnusedInput(), name="unused_input", emit_src=False)
    result = lint_verilog(text, "unused_input", tmp_path)
    assert len(result.findings) == 1, result.findings
    assert re.match(r"UNUSEDSIGNAL unused_input\.v:\d+: Bits of signal are not used: 'a'\[7:4\]",
                    result.findings[0])
    assert result.waived["UNUSEDSIGNAL"] >= 1  # `r`, an alias of the output register


def test_hand_written_problems_are_findings(tmp_path):
    # A blocking assignment in a clocked block and an output nobody drives.
    text = """module bad(input clk, input [3:0] d, output reg [3:0] q, output [3:0] u);
  reg [3:0] t;
  always @(posedge clk) begin
    t = d;
    q <= t;
  end
endmodule
"""
    result = lint_verilog(text, "bad", tmp_path)
    assert sorted(f.split()[0] for f in result.findings) == ["BLKSEQ", "UNDRIVEN"], \
        result.findings


def test_syntax_error_is_a_finding(tmp_path):
    result = lint_verilog("module broken(input a) wire;\nendmodule\n", "broken", tmp_path)
    assert not result.ok and result.findings[0].startswith("ERROR")


def test_every_waiver_has_a_reason():
    lines = LINT_VLT.read_text().splitlines()
    assert lines[0] == "`verilator_config"
    for i, line in enumerate(lines):
        if line.startswith("lint_off"):
            j = i - 1
            while j >= 0 and lines[j].startswith("lint_off"):
                j -= 1
            assert lines[j].startswith("//"), f"lint.vlt line {i + 1} has no reason above it"
    rules = {re.search(r"-rule (\w+)", ln).group(1) for ln in lines if ln.startswith("lint_off")}
    assert rules == {"PROCASSINIT", "WIDTHEXPAND", "WIDTHTRUNC", "CASEINCOMPLETE",
                     "UNUSEDSIGNAL", "DECLFILENAME"}


def test_unknown_block_exits_2(tmp_path, capsys):
    assert main(["lint", "--block", "nope", "-o", str(tmp_path)]) == 2
    assert "unknown block 'nope'" in capsys.readouterr().err
