"""Board tops (boards/): divisors, PLL settings, pins and clock constraints of the build plans,
and the build cache key. The bitstream builds themselves are boards/ci_bitstreams.sh (not in CI
yet)."""

import pytest

import tilemesh_boards
import tilemesh_boards.build
import tilemesh_boards.common
import tilemesh_boards.ulx3s
from tilemesh.config import ConfigError, preset


def test_uart_divisor():
    common = tilemesh_boards.common
    assert common.clocks_per_bit(12e6, 115200) == 104
    assert common.clocks_per_bit(100e6, 115200) == 868
    with pytest.raises(ConfigError, match=r"baud 4000000 is too fast for a 12 MHz clock"):
        common.clocks_per_bit(12e6, 4_000_000)
    with pytest.raises(ConfigError, match=r"baud 1300000 is 2.6% off at 12 MHz"):
        common.clocks_per_bit(12e6, 1_300_000)
    with pytest.raises(ConfigError, match=r"baud must be a positive integer, not 0"):
        common.clocks_per_bit(12e6, 0)


def test_ecp5_pll():
    ulx3s = tilemesh_boards.ulx3s
    assert ulx3s.ecp5_pll_params(25e6, 100e6) == (1, 4, 6)
    for f in (50e6, 75e6, 125e6):
        clki, fb, op = ulx3s.ecp5_pll_params(25e6, f)
        assert 25e6 / clki * fb == f and 400e6 <= f * op <= 800e6
    with pytest.raises(ConfigError, match=r"no ECP5 PLL setting gives 99.9 MHz"):
        ulx3s.ecp5_pll_params(25e6, 99.9e6)


@pytest.mark.parametrize("board", ["icebreaker", "ulx3s-85f"])
def test_build_plan(board, tmp_path):
    boards = tilemesh_boards
    spec = boards.BOARDS[board]
    top = spec["top"](preset("tiny"))
    plan = spec["platform"]().prepare(top, name="top", synth_opts=spec["synth_opts"],
                                      nextpnr_opts="--timing-allow-fail")
    plan.extract(tmp_path)
    cmds = boards.build._script_commands(tmp_path / "build_top.sh")
    assert [var for var, _ in cmds][:2] == ["YOSYS", "NEXTPNR_ICE40" if board == "icebreaker"
                                             else "NEXTPNR_ECP5"]
    if board == "icebreaker":
        pcf = (tmp_path / "top.pcf").read_text()
        for pin in ("uart_0__rx__io 6", "uart_0__tx__io 9", "button_0__io 10", "clk12_0__io 35"):
            assert f"set_io {pin}" in pcf.replace("-nowarn ", "")
        assert "-dsp" in (tmp_path / "top.ys").read_text()
    else:
        lpf = (tmp_path / "top.lpf").read_text()
        for comp, site in (("uart_0__rx__io", "M1"), ("uart_0__tx__io", "L4"),
                           ("clk25_0__io", "G2"), ("button_fire_1__io", "T1")):
            assert f'LOCATE COMP "{comp}" SITE "{site}"' in lpf
        # The PLL's output frequency is derived by nextpnr from this and the dividers.
        assert 'FREQUENCY PORT "clk25_0__io" 25000000.0 HZ' in lpf
        assert "FREQUENCY NET" not in lpf
    key = boards.build._input_hash(tmp_path, spec)
    assert key == boards.build._input_hash(tmp_path, spec)
    (tmp_path / "top.ys").write_text((tmp_path / "top.ys").read_text() + "\n# changed\n")
    assert boards.build._input_hash(tmp_path, spec) != key


def test_build_cache(tmp_path):
    """A report is reused only for the same input hash, and an ok one only with its bitstream."""
    import json
    build = tilemesh_boards.build
    spec = tilemesh_boards.BOARDS["icebreaker"]
    assert build._cached(tmp_path, spec, "k1") is None               # no report yet
    (tmp_path / "build_report.json").write_text(json.dumps({"input_hash": "k1",
                                                            "status": "ok"}))
    assert build._cached(tmp_path, spec, "k1") is None               # bitstream missing
    (tmp_path / "top.bin").write_bytes(b"\0")
    assert build._cached(tmp_path, spec, "k1")["status"] == "ok"
    assert build._cached(tmp_path, spec, "k2") is None               # inputs changed
    (tmp_path / "build_report.json").write_text(json.dumps({"input_hash": "k1",
                                                            "status": "FAIL"}))
    assert build._cached(tmp_path, spec, "k1")["status"] == "FAIL"   # a FAIL is not retried
