"""The SRAM bank's Verilog on Verilator and Icarus (cocotb bench sim/sram_bench.py): random reads
and writes, same-address collisions, response backpressure, back-to-back reads."""

import pytest

from tilemesh.config import preset
from tilemesh.tile.sram import SramBank
from tilemesh_sim.runner import run_cocotb

_default = preset("default")

# (width, depth, keyword arguments, seed): the default preset's bank (the Verilog `tilemesh
# generate` writes); an odd width with tags, read-first same-cycle reads and initial contents.
CONFIGS = [
    (_default.word_bits, _default.tile.sram_depth, {}, 21),
    (13, 64, {"tag_bits": 3, "transparent": False, "init": [(i * 37) % 8192 for i in range(64)]},
     22),
]


@pytest.mark.rtl
@pytest.mark.xdist_group("sram_rtl")
@pytest.mark.parametrize("config", CONFIGS, ids=["default-seed21", "13x64-tag3-read-first-seed22"])
def test_sram_rtl(simulator, config):
    width, depth, kwargs, seed = config
    dut = SramBank(width, depth, **kwargs)
    print(f"seed {seed}")
    run_cocotb(dut, name="tilemesh_sram_bank", module="tilemesh_sim.sram_bench",
               simulator=simulator, seed=seed,
               params={"width": width, "depth": depth, "tag_bits": kwargs.get("tag_bits", 0),
                       "transparent": kwargs.get("transparent", True),
                       "init": kwargs.get("init", []), "ops": 400, "idle": 0.3, "stall": 0.3})
