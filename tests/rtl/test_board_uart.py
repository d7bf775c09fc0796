"""cocotb tests of the board tops' core (tilemesh.uart.UartMesh: the ``tiny`` mesh of the
iCEBreaker behind the UART bridge) on Verilator and Icarus, driven through the UART pins by the
host driver's UART back end (sim/board_bench.py): a GEMM end to end vs numpy, and corrupted,
truncated and broken frames rejected, counted and never injected.

A few clocks per bit keep the simulation cheap; the bridge logic is the same at any divisor.
"""

import functools

import pytest
from conftest import require_tool  # noqa: F401  (the simulator fixture skips / fails visibly)

from tilemesh.config import preset
from tilemesh.uart import UartMesh
from tilemesh_sim.runner import ICARUS_VERILOG_2005, run_cocotb, to_verilog, top_ports_public

pytestmark = pytest.mark.rtl

CFG = preset("tiny")
CLOCKS_PER_BIT = 4
TIMEOUT_BITS = 64
SEED = 21


@functools.cache
def board_verilog():
    return to_verilog(UartMesh(CFG, clocks_per_bit=CLOCKS_PER_BIT, timeout_bits=TIMEOUT_BITS),
                      "tilemesh_board")


def test_board_uart(simulator):
    print(f"board over UART: seed {SEED} (COCOTB_RANDOM_SEED={SEED})")
    build = (list(ICARUS_VERILOG_2005) if simulator == "icarus"
             else [*top_ports_public("tilemesh_board"), "-CFLAGS", "-O0"])
    run_cocotb(board_verilog(), name="tilemesh_board", module="tilemesh_sim.board_bench",
               simulator=simulator, seed=SEED, testcase=["gemm", "rejects"],
               params={"cfg": CFG.to_dict(), "clocks_per_bit": CLOCKS_PER_BIT,
                       "timeout_bits": TIMEOUT_BITS, "max_gap": 8, "timeout": 200_000,
                       "gemm": {"m_folds": 2, "n_folds": 2, "k": 5}},
               build_args=build)
