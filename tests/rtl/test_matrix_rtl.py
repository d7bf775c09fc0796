"""cocotb tests of the matrix unit's generated Verilog on Verilator and Icarus.

Four designs cover the array sizes 1x1, 2x3, 4x4, 8x8 and the operand widths 16, 4, 8 (each
distinct design is one Verilator build, shared with ``tilemesh sim`` / ``tilemesh bench matrix``
for the 4x4 and 8x8 int8 ones). Random operations, random idle cycles on ``a`` and ``b`` and
random stalls on ``c``; seeds are fixed and printed.
"""

import json

import pytest
from conftest import require_tool

from tilemesh.bench import matrix as bench_matrix
from tilemesh.bench.matrix import BENCH_MODULE, DESIGN_NAME, matrix_design, run_matrix_check
from tilemesh.config import preset
from tilemesh.tile.matrix import IntFormat, MatrixUnit, back_to_back_cycles
from tilemesh_sim.matrix_bench import program_from_spec
from tilemesh_sim.runner import run_cocotb

pytestmark = pytest.mark.rtl

CONFIGS = [
    # rows, cols, data_bits, acc_bits, ops, seed
    pytest.param(1, 1, 16, 32, 100, 101, id="1x1-int16-acc32"),   # 4 extreme products wrap
    pytest.param(2, 3, 4, 8, 100, 102, id="2x3-int4-acc8"),       # wraps all the time
    pytest.param(4, 4, 8, 32, 60, 103, id="4x4-int8-acc32"),     # the default preset's unit
    pytest.param(8, 8, 8, 32, 30, 104, id="8x8-int8-acc32"),     # the large preset's unit
]


@pytest.mark.parametrize("rows,cols,data_bits,acc_bits,ops,seed", CONFIGS)
def test_random_ops_with_gaps_and_backpressure(simulator, rows, cols, data_bits, acc_bits, ops,
                                               seed):
    print(f"seed {seed} (COCOTB_RANDOM_SEED={seed})")
    run_cocotb(matrix_design(rows, cols, data_bits, acc_bits), name=DESIGN_NAME,
               module=BENCH_MODULE, simulator=simulator, seed=seed,
               testcase="random_ops_with_gaps_and_backpressure",
               params={"rows": rows, "cols": cols, "data_bits": data_bits, "acc_bits": acc_bits,
                       "ops": ops, "idle": 0.3, "stall": 0.3})


def test_back_to_back_utilisation(simulator, tmp_path):
    """The default preset's unit, 3 runs in one simulation: operations of K = 2 (< R: paced by
    the output), K = 64 back to back, and random operations under heavy stalls. Each is scored
    against numpy; the back-to-back cycle counts are exactly ``back_to_back_cycles``."""
    seed = 105
    print(f"seed {seed}")
    t = preset("default").tile
    R, C = t.pe_rows, t.pe_cols
    out = tmp_path / "runs.json"
    runs = [{"kind": "back_to_back", "k": 2, "ops": 6, "seed": 1},
            {"kind": "back_to_back", "k": 64, "ops": 4, "seed": 2},
            {"kind": "random", "ops": 12, "seed": 3, "idle": 0.5, "stall": 0.6}]
    run_cocotb(matrix_design(R, C, t.data_bits, t.acc_bits), name=DESIGN_NAME,
               module=BENCH_MODULE, simulator=simulator, seed=seed, testcase="measured_runs",
               params={"rows": R, "cols": C, "data_bits": t.data_bits, "acc_bits": t.acc_bits,
                       "runs": runs, "out": str(out)})
    paced, full, stalled = json.loads(out.read_text())["runs"]
    assert paced["cycles"] == back_to_back_cycles(R, C, [2] * 6)
    assert full["cycles"] == back_to_back_cycles(R, C, [64] * 4) == 4 * 64 - 1 + C + 3 + R
    assert full["utilisation"] > 0.95
    assert stalled["mismatches"] == 0
    assert stalled["tiles"] == program_from_spec(runs[2], R, C, t.data_bits).last.sum()


def test_run_matrix_check_default_preset(simulator):
    """What ``make sim`` runs: random operations on the default preset's unit vs numpy."""
    res = run_matrix_check(preset("default"), simulator=simulator, ops=12, seed=106,
                           verbose=False)
    assert res["passed"] and res["mismatches"] == 0 and not res["protocol_errors"]
    program = program_from_spec(res["spec"], res["rows"], res["cols"], res["data_bits"])
    assert res["tiles"] == program.last.sum() > 6
    assert 0 < res["utilisation"] <= 1
    assert res["macs"] == res["steps"] * 16


class _OffByOne(IntFormat):
    """A faulty datapath: every product is one too large."""

    def multiply(self, a, b):
        return a * b + 1


def test_run_matrix_check_reports_a_faulty_unit(monkeypatch, capsys):
    """The scoreboard is not vacuous: a unit whose products are off by one is reported as
    mismatching rows (with the tile, row and columns), not as a pass and not as a crash."""
    require_tool("iverilog", "needed for the icarus RTL tests")

    def faulty(rows, cols, data_bits, acc_bits):
        dut = MatrixUnit(rows, cols, data_bits, acc_bits)
        dut.fmt = _OffByOne(data_bits, acc_bits)
        return dut

    monkeypatch.setattr(bench_matrix, "matrix_design", faulty)
    res = run_matrix_check(preset("default"), simulator="icarus", ops=6, seed=107)
    assert not res["passed"]
    assert res["mismatches"] == res["tiles"] * 4 > 0   # every row of every tile differs
    assert "tile 0 row 0: got" in res["errors"][0]
    assert "FAIL" in capsys.readouterr().out
