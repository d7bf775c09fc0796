"""`tilemesh generate`: deterministic files, no absolute paths, clear errors for bad configs."""

import json
import os

import pytest

from tilemesh.cli import main


def _files(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_generate_is_deterministic_and_path_free(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["generate", "--preset", "tiny", "-o", str(a)]) == 0
    assert main(["generate", "--preset", "tiny", "-o", str(b)]) == 0
    fa, fb = _files(a), _files(b)
    assert fa == fb
    assert {"tilemesh_matrix.v", "tilemesh_noc.v", "params.json", "resources.json"} <= set(fa)
    for name, text in fa.items():
        for needle in (str(tmp_path).encode(), os.getcwd().encode(), b"/home/", b"/root/"):
            assert needle not in text, f"{name} contains the path {needle!r}"
    params = json.loads(fa["params.json"])
    assert params["config"]["rows"] == 1 and params["derived"]["pes"] == 8


def test_noc_only(tmp_path):
    assert main(["generate", "--preset", "tiny", "--noc-only", "-o", str(tmp_path)]) == 0
    assert set(_files(tmp_path)) == {"tilemesh_noc.v", "params.json", "resources.json"}


def test_config_file_overrides_preset(tmp_path):
    cfg = tmp_path / "m.toml"
    cfg.write_text('rows = 1\ncols = 3\n[tile]\npe_rows = 2\npe_cols = 2\n')
    out = tmp_path / "out"
    assert main(["generate", "--preset", "tiny", "--config", str(cfg), "--noc-only",
                 "-o", str(out)]) == 0
    params = json.loads((out / "params.json").read_text())["config"]
    assert (params["rows"], params["cols"], params["tile"]["sram_depth"]) == (1, 3, 256)


@pytest.mark.parametrize("text,suffix,message", [
    ("rows = 0\n", ".toml", "MeshConfig.rows must be an integer in 1..32, not 0"),
    ("[tile]\ndata_bits = 40\n", ".toml", "TileConfig.data_bits must be an integer in 4..16"),
    ("rows = \n", ".toml", "invalid TOML configuration"),
    ('{"noc": {"flit": 3}}', ".json", "NocConfig has no field 'flit'"),
])
def test_bad_config_file_exits_2_with_one_line(tmp_path, capsys, text, suffix, message):
    cfg = tmp_path / f"bad{suffix}"
    cfg.write_text(text)
    assert main(["generate", "--config", str(cfg), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
