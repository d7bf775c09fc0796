"""``tilemesh gemm`` and :mod:`tilemesh.gemm` on the model back end: reports, JSON, the numpy
check (that it can fail), and every bad argument / operand giving one clear line and exit 2."""

import json
import re

import numpy as np
import pytest

import tilemesh.gemm as tg
from tilemesh.cli import main
from tilemesh.config import MeshConfig, NocConfig, TileConfig, preset
from tilemesh.gemm import (
    OperandError,
    check_operands,
    host_port_bound,
    numpy_gemm,
    random_operands,
    run_gemm,
)
from tilemesh.layouts import SimdOp
from tilemesh.model import reference as ref

SMALL = MeshConfig(rows=1, cols=3,
                   tile=TileConfig(pe_rows=2, pe_cols=2, data_bits=8, acc_bits=24, simd_lanes=2,
                                   sram_banks=2, sram_depth=256, imem_depth=64),
                   noc=NocConfig(flit_bits=32, fifo_depth=2, max_packet_flits=8))


def _epilogue(bias=False, requant=None, relu=False):
    from tilemesh.compiler.gemm import Epilogue, Requant

    return Epilogue(bias=bias, requant=None if requant is None else Requant(*requant),
                    relu=relu)


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# -- the library ----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 13, 5), (16, 16, 16), (3, 40, 9)])
def test_run_gemm_model_is_bit_exact(shape):
    cfg = preset("default")
    A, B, _ = random_operands(cfg, *shape, seed=sum(shape))
    rep = run_gemm(cfg, A, B, backend="model")
    assert rep.ok and rep.mismatches == 0 and rep.errors == []
    assert (rep.run.C == ref.gemm(A, B, cfg.tile.acc_bits)).all()
    r = rep.run
    assert r.t_begin <= r.t_start < r.t_done <= r.t_end
    assert 0 < r.end_to_end_utilisation <= r.on_mesh_utilisation <= 1
    # End to end cannot beat what the host port lets through.
    assert r.end_to_end_utilisation <= rep.traffic_bound + 1e-9
    assert rep.traffic_bound <= rep.host_bound + 1e-9
    j = json.loads(json.dumps(rep.to_json()))
    assert (j["M"], j["K"], j["N"], j["useful_macs"]) == (*shape, shape[0] * shape[1] * shape[2])
    assert j["mesh_cycles"] == r.t_done - r.t_start and j["ok"] is True
    assert set(j["tiles"]) >= {"0,0"}
    text = rep.table()
    assert "PASS: bit-exact vs numpy" in text and "(0,0)" in text


def test_random_operands_are_seeded_and_span_the_range():
    cfg = preset("default")
    A1, B1, b1 = random_operands(cfg, 40, 50, 30, seed=3, bias=True)
    A2, B2, b2 = random_operands(cfg, 40, 50, 30, seed=3, bias=True)
    assert (A1 == A2).all() and (B1 == B2).all() and (b1 == b2).all()
    assert A1.min() == -128 and A1.max() == 127
    assert not (A1 == random_operands(cfg, 40, 50, 30, seed=4)[0]).all()


def test_numpy_gemm_epilogue_matches_the_simd_reference():
    # numpy_gemm is written from the documented semantics; the SIMD reference is another
    # implementation of the same: they must agree on every element (wrap, rounding, saturation).
    cfg = preset("default")
    rnd = np.random.default_rng(5)
    A, B, bias = random_operands(cfg, 9, 33, 11, seed=5, bias=True)
    for scale, shift, zp in [(1 << 10, 16, 3), (-777, 9, -5), (1, 0, 0), (32767, 30, 100)]:
        ep = _epilogue(bias=True, requant=(scale, shift, zp), relu=bool(rnd.integers(2)))
        got = numpy_gemm(cfg, A, B, bias, ep)
        acc = ref.wrap(ref.gemm(A, B, 32) + bias[None, :], 32)
        if ep.relu:   # the Epilogue's order: bias, ReLU, REQUANT
            acc, _ = ref.simd(SimdOp.RELU, acc)
        want, _ = ref.simd(SimdOp.REQUANT, acc, shift=shift, scale=scale, zero_point=zp)
        assert (got == want).all(), (scale, shift, zp)
    assert (numpy_gemm(cfg, A, B) == ref.gemm(A, B, 32)).all()


def test_host_port_bound():
    cfg = preset("default")   # 64 PEs, 32-bit words, int8 data, int32 accumulators
    # 64^3: A and B 1024 words each in, C 4096 words out -> 262144 / (64 * 4096)
    assert host_port_bound(cfg, 64, 64, 64) == pytest.approx(1.0)
    assert host_port_bound(cfg, 16, 16, 16) == pytest.approx(4096 / (64 * 256))
    # requantized C is int8: 1024 words out, so the inputs (2048 words) bound it
    ep = _epilogue(requant=(1, 0, 0))
    assert host_port_bound(cfg, 32, 32, 32, ep) == pytest.approx(32 ** 3 / (64 * 512))


def test_a_wrong_result_is_reported(monkeypatch):
    # The check must be able to fail: corrupt what the run returns.
    cfg = preset("default")
    real = tg._run_model

    def corrupt(*args, **kwargs):
        run = real(*args, **kwargs)
        run.C[2, 1] += 1
        return run

    monkeypatch.setattr(tg, "_run_model", corrupt)
    A, B, _ = random_operands(cfg, 5, 6, 7, seed=1)
    rep = run_gemm(cfg, A, B)
    assert not rep.ok and rep.mismatches == 1
    assert rep.errors[0].startswith("C[2,1] = ")
    assert "FAIL: 1 elements differ from numpy" in rep.table()


@pytest.mark.parametrize("A, B, bias, need, match", [
    (np.zeros((2, 3), np.float32), np.zeros((3, 2), int), None, False,
     r"^A must be an integer array, not dtype float32$"),
    (np.zeros((2, 3, 1), int), np.zeros((3, 2), int), None, False,
     r"^A must be a non-empty 2-D matrix, not shape \(2, 3, 1\)$"),
    (np.zeros((2, 0), int), np.zeros((0, 2), int), None, False, r"^A must be a non-empty"),
    (np.zeros((2, 3), int), np.zeros((4, 2), int), None, False,
     r"^A is 2x3 and B is 4x2: A's columns must equal B's rows$"),
    (np.zeros((2, 3), int), np.full((3, 2), 128), None, False,
     r"^B values must lie in -128\.\.127 \(int8\), found 128\.\.128$"),
    (np.zeros((2, 3), int), np.zeros((3, 2), int), None, True,
     r"^the epilogue adds a bias, but no bias was given$"),
    (np.zeros((2, 3), int), np.zeros((3, 2), int), np.zeros(2, int), False,
     r"^a bias was given but the epilogue has no bias add$"),
    (np.zeros((2, 3), int), np.zeros((3, 2), int), np.zeros(3, int), True,
     r"^bias must be a vector of N=2 elements, not shape \(3,\)$"),
    (np.zeros((2, 3), int), np.zeros((3, 2), int), np.array([0, 1 << 31]), True,
     r"^bias values must lie in -2147483648\.\.2147483647 \(int32\)"),
])
def test_check_operands_errors(A, B, bias, need, match):
    with pytest.raises(OperandError, match=match):
        check_operands(preset("default"), A, B, bias, need_bias=need)


def test_run_gemm_rejects_a_bad_backend():
    A, B, _ = random_operands(SMALL, 2, 2, 2, seed=0)
    with pytest.raises(ValueError, match=r"^backend must be one of model, rtl, uart, not 'fpga'$"):
        run_gemm(SMALL, A, B, backend="fpga")


# -- the command line -----------------------------------------------------------------------------

def test_cli_random_gemm_with_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["gemm", "--preset", "default", "-M", "9", "-K", "17", "-N", "6", "--seed", "4",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "GEMM 9x17x6 on a 2x2 mesh of 4x4 PEs" in text and "PASS" in text
    for what in ("start->done", "begin->end", "on-mesh", "end-to-end", "host-port bounds",
                 "host port", "DMA %", "MATMUL %", "SIMD %", "stall %"):
        assert what in text, what
    j = json.loads(out.read_text())
    assert (j["M"], j["K"], j["N"], j["seed"], j["ok"], j["backend"]) == \
        (9, 17, 6, 4, True, "model")
    assert j["total_cycles"] >= j["mesh_cycles"] > 0


def test_cli_timeline(tmp_path, capsys):
    out = tmp_path / "t.csv"
    assert main(["gemm", "--preset", "default", "-M", "9", "-K", "17", "-N", "6",
                 "--timeline", str(out)]) == 0
    assert f"timeline          {out}" in capsys.readouterr().out
    lines = out.read_text().splitlines()
    assert lines[0] == "cycle,x,y,unit"
    rows = [line.split(",") for line in lines[1:]]
    cycles = [int(r[0]) for r in rows]
    assert cycles == sorted(cycles)
    # every tile ran a MATMUL and sent its C block (DMA); no epilogue, so no SIMD command
    assert {(int(r[1]), int(r[2])) for r in rows if r[3] == "matmul"} == \
        {(0, 0), (1, 0), (0, 1), (1, 1)}
    assert {r[3] for r in rows} == {"dma", "matmul"}
    # the RTL only records one on Icarus, whose simulation exposes the tiles' command ports
    assert main(["gemm", "-M", "2", "-K", "2", "-N", "2", "--backend", "rtl",
                 "--timeline", str(out)]) == 2
    assert "--timeline needs" in _one_error_line(capsys)


def test_cli_npy_operands(tmp_path, capsys):
    cfg = SMALL
    A, B, _ = random_operands(cfg, 6, 5, 4, seed=9)
    np.save(tmp_path / "a.npy", A.astype(np.int8))
    np.save(tmp_path / "b.npy", B.astype(np.int16))
    out = tmp_path / "r.json"
    args = ["gemm", "--a", str(tmp_path / "a.npy"), "--b", str(tmp_path / "b.npy"),
            "--json", str(out), "--preset", "tiny"]
    assert main(args) == 0
    assert (json.loads(out.read_text())["M"], json.loads(out.read_text())["N"]) == (6, 4)
    assert main(args + ["-M", "6", "-K", "5", "-N", "4"]) == 0   # consistent sizes are fine
    capsys.readouterr()


def test_cli_mismatch_exits_1(monkeypatch, capsys):
    monkeypatch.setattr(tg, "numpy_gemm", lambda cfg, A, B, *a: np.zeros(
        (A.shape[0], B.shape[1]), np.int64) + 1)
    assert main(["gemm", "-M", "3", "-K", "3", "-N", "3"]) == 1
    assert "FAIL" in capsys.readouterr().out


@pytest.mark.parametrize("files, argv, match", [
    ({"a": np.ones((2, 3)), "b": np.ones((3, 2), int)}, ["--a", "@a", "--b", "@b"],
     r"^tilemesh gemm: error: A must be an integer array, not dtype float64$"),
    ({"a": np.ones((2, 3), int), "b": np.ones((2, 2), int)}, ["--a", "@a", "--b", "@b"],
     r"A is 2x3 and B is 2x2: A's columns must equal B's rows$"),
    ({"a": np.full((2, 3), -129), "b": np.ones((3, 2), int)}, ["--a", "@a", "--b", "@b"],
     r"A values must lie in -128\.\.127 \(int8\), found -129\.\.-129$"),
    ({"a": np.ones(3, int), "b": np.ones((3, 2), int)}, ["--a", "@a", "--b", "@b"],
     r"A must be a non-empty 2-D matrix, not shape \(3,\)$"),
    ({"a": np.ones((2, 3), int), "b": np.ones((3, 2), int)},
     ["--a", "@a", "--b", "@b", "-K", "4"],
     r"-K 4 does not match the \.npy operands \(A \(2, 3\), B \(3, 2\)\)$"),
    ({"a": np.ones((2, 3), int)}, ["--a", "@a"], r"give both --a and --b, or neither"),
    ({}, ["--a", "@missing", "--b", "@missing"], r"cannot read A from .*missing\.npy"),
    ({}, ["-M", "2", "-K", "2"], r"give -N \(or --a and --b\)$"),
    ({}, ["-M", "0", "-K", "2", "-N", "2"], r"-M must be at least 1, not 0$"),
    ({}, ["-M", "2", "-K", "2", "-N", "2", "--requant", "1,2"],
     r"--requant must be SCALE,SHIFT,ZERO_POINT \(three integers\), not '1,2'$"),
    ({}, ["-M", "2", "-K", "2", "-N", "2", "--waves"],
     r"--waves, --host-idle and --host-stall need --backend rtl$"),
    ({}, ["-M", "2", "-K", "2", "-N", "2", "--backend", "rtl", "--host-idle", "1.5"],
     r"--host-idle must be in \[0, 1\), not 1\.5$"),
    ({}, ["-M", "2", "-K", "2", "-N", "2", "--backend", "uart"],
     r"--backend uart needs --port \(and --port needs --backend uart\)$"),
    ({}, ["-M", "2", "-K", "2", "-N", "2", "--port", "/dev/ttyUSB1"],
     r"--backend uart needs --port"),
    ({}, ["-M", "2", "-K", "2", "-N", "2", "--backend", "uart", "--port", "/nonexistent/tty"],
     r"cannot open the serial port /nonexistent/tty: "),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, files, argv, match):
    for name, arr in files.items():
        np.save(tmp_path / f"{name}.npy", arr)
    argv = [str(tmp_path / f"{a[1:]}.npy") if a.startswith("@") else a for a in argv]
    assert main(["gemm", "--preset", "default", *argv]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("tilemesh gemm: error: ")
    assert re.search(match, line), line


def test_cli_bad_config_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("rows = 0\n")
    assert main(["gemm", "--config", str(bad), "-M", "1", "-K", "1", "-N", "1"]) == 2
    assert "MeshConfig.rows" in _one_error_line(capsys)


# -- make sim's demo and tilemesh bench gemm (on the model: the RTL runs are in tests/rtl) ---------

def test_demo_summary_and_exit_status(monkeypatch, tmp_path, capsys):
    shapes = [(3, 4, 5, False), (6, 2, 3, True)]
    out = tmp_path / "demo.json"
    assert tg.run_demo(SMALL, shapes=shapes, backend="model", out=out) == 0
    text = capsys.readouterr().out
    assert "PASS: all 2 GEMMs bit-exact against numpy" in text
    assert "3x4x5" in text and "6x2x3" in text and "bias, relu, requant" in text
    assert [(j["M"], j["ok"]) for j in json.loads(out.read_text())] == [(3, True), (6, True)]
    # One wrong element anywhere fails the demo.
    real = tg._run_model

    def corrupt(*args, **kwargs):
        run = real(*args, **kwargs)
        run.C[0, 0] ^= 1
        return run

    monkeypatch.setattr(tg, "_run_model", corrupt)
    assert tg.run_demo(SMALL, shapes=shapes, backend="model") == 1
    cap = capsys.readouterr()
    assert "FAIL: 2 of 2 GEMMs did not match numpy" in cap.err


def test_bench_gemm_on_the_model(tmp_path, capsys):
    out = tmp_path / "gemm.json"
    assert main(["bench", "gemm", "--presets", "tiny", "--sizes", "2,5", "--rtl-max", "tiny=0",
                 "-o", str(out)]) == 0
    j = json.loads(out.read_text())
    assert [(p["config"], p["size"], p["source"], p["ok"]) for p in j["points"]] == \
        [("tiny", 2, "model", True), ("tiny", 5, "model", True)]
    for p in j["points"]:
        assert 0 < p["end_to_end"] <= p["on_mesh"] <= 1
        assert p["end_to_end"] <= p["traffic_bound"] + 1e-9
    assert out.with_suffix(".png").stat().st_size > 1000
    assert "on-mesh %" in capsys.readouterr().out


def test_bench_gemm_bad_sizes(capsys):
    assert main(["bench", "gemm", "--sizes", "16,x"]) == 2
    assert "--sizes must be comma-separated integers, not '16,x'" in _one_error_line(capsys)
