"""Compiled GEMMs on whole meshes in RTL simulation (Verilator and Icarus), checked bit-exactly
against numpy by :func:`tilemesh.gemm.run_gemms` - random int8 operands over the full range,
random idle cycles into the host port and random backpressure out of it.

Meshes 1x1, 1x3, 3x2 (small 2x2-PE tiles with 512-word SRAMs, so modest shapes already exceed a
tile's SRAM and need chunking) and 2x2 (``default``). Shapes include 1x1x1, primes, ragged
edges, shapes larger than a tile's SRAM, with and without the SIMD epilogue (bias, requantize,
ReLU). Every mesh is built once per simulator (the mesh tests use the same configurations and
build arguments, so those builds are shared) and all of its GEMMs run in one simulation.
Icarus gets the smaller shapes. The compiler's two schemes are both covered: operands streamed
whole along K, and K split in chunks when a tile's SRAM cannot hold them (every Verilator mesh;
1x1 on Icarus), with and without the epilogue.
"""

import pytest
from conftest import require_tool  # noqa: F401  (the simulator fixture skips / fails visibly)

from tilemesh.config import MeshConfig, NocConfig, TileConfig, preset
from tilemesh.gemm import random_operands, run_gemms

pytestmark = pytest.mark.rtl

SMALL_TILE = TileConfig(pe_rows=2, pe_cols=2, data_bits=8, acc_bits=24, simd_lanes=2,
                        sram_banks=2, sram_depth=256, imem_depth=64)
SMALL_NOC = NocConfig(flit_bits=32, fifo_depth=2, max_packet_flits=8)


def small(rows, cols):
    return MeshConfig(rows=rows, cols=cols, tile=SMALL_TILE, noc=SMALL_NOC)


# Epilogues: (bias, requant (scale, shift, zero_point) or None, relu).
QUANT = (True, (1 << 9, 14, -3), True)        # a quantized layer: bias, requantize, ReLU
REQUANT_ONLY = (False, (-300, 11, 5), False)  # negative scale: rounding of negatives
BIAS_ONLY = (True, None, False)

# name: (config, {simulator: [(M, K, N, epilogue or None), ...]})
CASES = {
    "1x1": (small(1, 1), {
        "verilator": [(1, 1, 1, None), (7, 13, 5, None), (24, 40, 20, None),   # > 512 words
                      (5, 9, 6, QUANT), (3, 17, 4, REQUANT_ONLY)],
        "icarus": [(1, 1, 1, None), (5, 26, 2, None), (4, 5, 3, QUANT)]}),   # K chunked
    "1x3": (small(1, 3), {
        "verilator": [(1, 1, 1, None), (11, 23, 13, None), (9, 60, 17, BIAS_ONLY),
                      (13, 7, 19, QUANT)],
        "icarus": [(3, 5, 7, None), (2, 3, 5, QUANT)]}),
    "3x2": (small(3, 2), {
        "verilator": [(1, 1, 1, None), (17, 19, 11, None), (30, 50, 30, None),  # > SRAM
                      (17, 30, 9, QUANT)],                                      # K chunked
        "icarus": [(7, 3, 5, None), (5, 4, 3, REQUANT_ONLY)]}),
    "2x2": (preset("default"), {
        "verilator": [(1, 1, 1, None), (37, 53, 29, None), (13, 8, 31, QUANT),
                      (8, 4099, 8, None)],                  # A and B 64.06 KiB > a tile's 64
        "icarus": [(1, 1, 1, None), (9, 11, 7, QUANT)]}),
}
SEEDS = {"1x1": 21, "1x3": 22, "3x2": 23, "2x2": 24}


def _cases(cfg, shapes, seed):
    from tilemesh.compiler.gemm import Epilogue, Requant

    cases = []
    for i, (M, K, N, ep) in enumerate(shapes):
        epilogue = None if ep is None else Epilogue(
            bias=ep[0], requant=None if ep[1] is None else Requant(*ep[1]), relu=ep[2])
        A, B, bias = random_operands(cfg, M, K, N, seed * 100 + i,
                                     bias=epilogue is not None and epilogue.bias)
        cases.append(dict(A=A, B=B, bias=bias, epilogue=epilogue))
    return cases


@pytest.mark.parametrize("name", list(CASES))
def test_gemms_on_mesh(simulator, name):
    cfg, shapes = CASES[name]
    seed = SEEDS[name]
    print(f"mesh {name}: seed {seed} (operands seeded from it; COCOTB_RANDOM_SEED={seed})")
    reports = run_gemms(cfg, _cases(cfg, shapes[simulator], seed), backend="rtl",
                        simulator=simulator, seed=seed, host_idle=0.2, host_stall=0.3)
    words = cfg.tile.sram_words
    for rep in reports:
        print(rep.table())
        assert rep.ok, f"{rep.M}x{rep.K}x{rep.N}: {rep.errors}"
        r = rep.run
        assert r.t_begin <= r.t_start < r.t_done <= r.t_end
        assert 0 < r.end_to_end_utilisation <= r.on_mesh_utilisation <= 1
        assert set(r.tiles) <= {(x, y) for x in range(cfg.cols) for y in range(cfg.rows)}
    # The case list really exercises what it claims to (not a test of the design: of the list).
    big = [rep for rep in reports
           if rep.M * rep.K + rep.K * rep.N + 4 * rep.M * rep.N > 4 * words]
    assert simulator == "icarus" or big, "no GEMM larger than a tile's SRAM"
