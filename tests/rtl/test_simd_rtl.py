"""The SIMD unit's Verilog on Verilator and Icarus (cocotb bench sim/simd_bench.py): random ops
and edge values under random input gaps and output backpressure, and full throughput."""

import pytest

from tilemesh.config import preset
from tilemesh.tile.simd import SimdUnit
from tilemesh_sim.runner import run_cocotb

# (lanes, acc_bits, out_bits, scale_bits, seed): 1 lane; the default preset's unit (4 x 32 -> 8,
# the Verilog `tilemesh generate` writes); 8 lanes of odd widths.
CONFIGS = [(1, 32, 8, 16, 11), (4, 32, 8, 16, 12), (8, 19, 7, 11, 13)]


@pytest.mark.rtl
@pytest.mark.xdist_group("simd_rtl")
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "lanes{}-acc{}-out{}-scale{}-seed{}"
                         .format(*c))
def test_simd_rtl(simulator, config):
    lanes, acc_bits, out_bits, scale_bits, seed = config
    if (lanes, acc_bits, out_bits) == (4, 32, 8):
        dut = SimdUnit.from_config(preset("default").tile)
    else:
        dut = SimdUnit(lanes, acc_bits, out_bits, scale_bits=scale_bits)
    print(f"seed {seed}")
    run_cocotb(dut, name="tilemesh_simd", module="tilemesh_sim.simd_bench",
               simulator=simulator, seed=seed,
               params={"lanes": lanes, "acc_bits": acc_bits, "out_bits": out_bits,
                       "scale_bits": scale_bits, "latency": SimdUnit.latency, "beats": 400,
                       "idle": 0.3, "stall": 0.3})
