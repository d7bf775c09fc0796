"""cocotb tests of whole meshes (generated Verilog) on Verilator and Icarus, driven through the
host port by the host driver with random idle cycles and backpressure (sim/mesh_bench.py):

* 1x1 (``tiny`` preset: small tiles, one-entry unit queues): MATMUL + SIMD requantize in one
  tile; the GEMM on one tile.
* 1x2 (small tiles): the ring; the GEMM fed by tile (0, 0).
* 2x2 (``default`` preset): the ring, MATMUL + requantize, the GEMM, every error case.
* 3x2 (small tiles): the ring through six tiles; the GEMM with two folds per tile.

Each mesh is converted once per session - structurally, one tile / router / ingress module
instantiated per position (tilemesh.generate.mesh_verilog) - and built once per simulator
(run_cocotb shares builds by Verilog hash); all of a mesh's scenarios run in one simulation.
"""

import functools

import pytest
from conftest import require_tool  # noqa: F401  (the simulator fixture skips / fails visibly)

from tilemesh.config import MeshConfig, NocConfig, TileConfig, preset
from tilemesh.generate import mesh_verilog
from tilemesh_sim.runner import run_cocotb, top_ports_public

pytestmark = pytest.mark.rtl

SMALL_TILE = TileConfig(pe_rows=2, pe_cols=2, data_bits=8, acc_bits=24, simd_lanes=2,
                        sram_banks=2, sram_depth=256, imem_depth=64)
SMALL_NOC = NocConfig(flit_bits=32, fifo_depth=2, max_packet_flits=8)

MESHES = {
    # name: (config, scenarios, extra params)
    "1x1": (preset("tiny"), ["matmul_requant", "gemm"],
            {"gemm": {"m_folds": 2, "n_folds": 2, "k": 5}}),
    "1x2": (MeshConfig(rows=1, cols=2, tile=SMALL_TILE, noc=SMALL_NOC), ["ring", "gemm"], {}),
    "2x2": (preset("default"), ["ring", "matmul_requant", "gemm", "errors"], {}),
    "3x2": (MeshConfig(rows=3, cols=2, tile=SMALL_TILE, noc=SMALL_NOC),
            ["ring", "gemm"], {"gemm": {"m_folds": 2, "n_folds": 1, "k": 9}}),
}
SEEDS = {"1x1": 11, "1x2": 12, "2x2": 13, "3x2": 14}


@functools.cache
def verilog_of(name):
    """The mesh's Verilog, converted once per session."""
    return mesh_verilog(MESHES[name][0], "tilemesh_mesh")


def _build_args(simulator, name):
    if simulator == "icarus":
        return []  # run_cocotb's Icarus defaults (-g2005) are what the mesh needs
    # Unoptimised C++: Python, not the simulation, is the bottleneck (as in test_noc_rtl.py).
    return [*top_ports_public(name), "-CFLAGS", "-O0"]


@pytest.mark.parametrize("name", list(MESHES))
def test_mesh_scenarios(simulator, name):
    cfg, scenarios, extra = MESHES[name]
    seed = SEEDS[name]
    print(f"mesh {name}: seed {seed} (COCOTB_RANDOM_SEED={seed})")
    run_cocotb(verilog_of(name), name="tilemesh_mesh", module="tilemesh_sim.mesh_bench",
               simulator=simulator, seed=seed, testcase=scenarios,
               params={"cfg": cfg.to_dict(), "idle": 0.2, "stall": 0.3, "timeout": 20_000, **extra},
               build_args=_build_args(simulator, "tilemesh_mesh"))
