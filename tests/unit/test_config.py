"""MeshConfig: every field validated, messages naming field / value / range, presets, TOML/JSON."""

import dataclasses
import json

import pytest

from tilemesh import PRESETS, ConfigError, MeshConfig, NocConfig, TileConfig, preset

# (class, field, bad value, message that must appear)
INVALID = [
    (TileConfig, "pe_rows", 0, r"TileConfig\.pe_rows must be an integer in 1\.\.32, not 0"),
    (TileConfig, "pe_rows", 33, r"TileConfig\.pe_rows must be an integer in 1\.\.32, not 33"),
    (TileConfig, "pe_rows", 2.0, r"TileConfig\.pe_rows must be an integer in 1\.\.32, not 2\.0"),
    (TileConfig, "pe_cols", -1, r"TileConfig\.pe_cols must be an integer in 1\.\.32, not -1"),
    (TileConfig, "pe_cols", True, r"TileConfig\.pe_cols must be an integer in 1\.\.32, not True"),
    (TileConfig, "data_bits", 3, r"TileConfig\.data_bits must be an integer in 4\.\.16, not 3"),
    (TileConfig, "data_bits", 17, r"TileConfig\.data_bits must be an integer in 4\.\.16, not 17"),
    (TileConfig, "acc_bits", 15,
     r"TileConfig\.acc_bits must be an integer in 16\.\.64 \(at least 2 x data_bits.*\), not 15"),
    (TileConfig, "acc_bits", 65, r"TileConfig\.acc_bits must be an integer in 16\.\.64.*not 65"),
    (TileConfig, "simd_lanes", 0, r"TileConfig\.simd_lanes must be an integer in 1\.\.64, not 0"),
    (TileConfig, "simd_lanes", "4",
     r"TileConfig\.simd_lanes must be an integer in 1\.\.64, not '4'"),
    (TileConfig, "sram_banks", 17, r"TileConfig\.sram_banks must be an integer in 1\.\.16, not 17"),
    (TileConfig, "sram_depth", 1000,
     r"TileConfig\.sram_depth must be a power of two in 16\.\.65536, not 1000"),
    (TileConfig, "sram_depth", 8,
     r"TileConfig\.sram_depth must be a power of two in 16\.\.65536, not 8"),
    (TileConfig, "imem_depth", 8192,
     r"TileConfig\.imem_depth must be a power of two in 16\.\.4096, not 8192"),
    (TileConfig, "imem_depth", 100,
     r"TileConfig\.imem_depth must be a power of two in 16\.\.4096, not 100"),
    (TileConfig, "unit_queue_depth", 0,
     r"TileConfig\.unit_queue_depth must be an integer in 1\.\.16, not 0"),
    (TileConfig, "unit_queue_depth", 17,
     r"TileConfig\.unit_queue_depth must be an integer in 1\.\.16, not 17"),
    (NocConfig, "flit_bits", 8, r"NocConfig\.flit_bits must be an integer in 16\.\.256, not 8"),
    (NocConfig, "flit_bits", 512, r"NocConfig\.flit_bits must be an integer in 16\.\.256, not 512"),
    (NocConfig, "fifo_depth", 1, r"NocConfig\.fifo_depth must be an integer in 2\.\.64, not 1"),
    (NocConfig, "fifo_depth", 65, r"NocConfig\.fifo_depth must be an integer in 2\.\.64, not 65"),
    (NocConfig, "max_packet_flits", 0,
     r"NocConfig\.max_packet_flits must be an integer in 1\.\.256, not 0"),
    (NocConfig, "max_packet_flits", 257,
     r"NocConfig\.max_packet_flits must be an integer in 1\.\.256, not 257"),
    (MeshConfig, "rows", 0, r"MeshConfig\.rows must be an integer in 1\.\.32, not 0"),
    (MeshConfig, "rows", None, r"MeshConfig\.rows must be an integer in 1\.\.32, not None"),
    (MeshConfig, "cols", 33, r"MeshConfig\.cols must be an integer in 1\.\.32, not 33"),
    (MeshConfig, "host_x", 2,
     r"MeshConfig\.host_x must be an integer in 0\.\.1 \(a column of the mesh\), not 2"),
    (MeshConfig, "host_y", -1,
     r"MeshConfig\.host_y must be an integer in 0\.\.1 \(a row of the mesh\), not -1"),
    (MeshConfig, "host_side", "up",
     r"MeshConfig\.host_side must be one of 'north', 'east', 'south', 'west', not 'up'"),
    (MeshConfig, "host_side", "east",
     r"MeshConfig\.host_side must name a mesh edge of tile \(0, 0\), not 'east'"),
    (MeshConfig, "tile", {"pe_rows": 4}, r"MeshConfig\.tile must be a TileConfig, not \{"),
    (MeshConfig, "noc", 3, r"MeshConfig\.noc must be a NocConfig, not 3"),
]


@pytest.mark.parametrize("klass,name,value,message", INVALID,
                         ids=[f"{k.__name__}.{n}={v!r}" for k, n, v, _ in INVALID])
def test_invalid_field_names_field_value_and_range(klass, name, value, message):
    with pytest.raises(ConfigError, match=message):
        klass(**{name: value})


def test_every_field_has_an_invalid_case():
    covered = {(k, n) for k, n, _, _ in INVALID}
    for klass in (TileConfig, NocConfig, MeshConfig):
        for f in dataclasses.fields(klass):
            assert (klass, f.name) in covered, f"no invalid test for {klass.__name__}.{f.name}"


def test_header_must_fit_the_flit():
    # A 16x16 mesh needs 5-bit coordinates: the header no longer fits 32-bit flits.
    with pytest.raises(ConfigError, match=r"NocConfig\.flit_bits must be at least 44 for a "
                                          r"16x16 mesh .* not 32"):
        MeshConfig(rows=16, cols=16)
    assert MeshConfig(rows=16, cols=16, noc=NocConfig(flit_bits=64)).coord_bits == 5


def test_keyword_only_and_frozen():
    with pytest.raises(TypeError):
        MeshConfig(2, 2)
    cfg = MeshConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.rows = 3


def test_presets_and_derived_values():
    assert set(PRESETS) >= {"tiny", "default", "large"}
    d = preset("default")
    assert (d.rows, d.cols, d.tile.pe_rows, d.tile.pe_cols) == (2, 2, 4, 4)
    assert d.pes == 64 and d.tiles == 4 and d.word_bits == d.noc.flit_bits
    big = preset("large")
    assert (big.rows, big.cols, big.tile.pe_rows, big.tile.pe_cols) == (4, 4, 8, 8)
    with pytest.raises(ConfigError, match=r"preset must be one of tiny, default, large, not 'x'"):
        preset("x")


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_round_trip(tmp_path, name, suffix):
    cfg = preset(name)
    path = tmp_path / f"mesh{suffix}"
    cfg.save(path)
    assert MeshConfig.load(path) == cfg


def test_partial_file_starts_from_preset(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('preset = "large"\nrows = 2\n[tile]\npe_rows = 2\n')
    cfg = MeshConfig.load(path)
    assert cfg.rows == 2 and cfg.cols == 4 and cfg.tile.pe_rows == 2 and cfg.tile.pe_cols == 8


@pytest.mark.parametrize("text,suffix,message", [
    ("rows = 2\nbogus = 1\n", ".toml", r"MeshConfig has no field 'bogus'"),
    ("[tile]\npe_row = 2\n", ".toml", r"TileConfig has no field 'pe_row'"),
    ("[noc]\nfifo_depth = 0\n", ".toml", r"NocConfig\.fifo_depth must be an integer in 2\.\.64"),
    ("rows = [\n", ".toml", r"invalid TOML configuration"),
    ('{"rows": 2,', ".json", r"invalid JSON configuration"),
    ('[1, 2]', ".json", r"a mesh configuration must be a table/object"),
    ('{"tile": 3}', ".json", r"MeshConfig\.tile must be a table/object, not 3"),
    ('{"preset": "huge"}', ".json", r"preset must be one of"),
    ("rows: 2", ".yaml", r"configuration file must end in \.toml or \.json, not 'm\.yaml'"),
])
def test_bad_files(tmp_path, text, suffix, message):
    path = tmp_path / f"m{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        MeshConfig.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read configuration file .*nope\.toml"):
        MeshConfig.load(tmp_path / "nope.toml")


def test_json_is_plain_data():
    data = json.loads(preset("tiny").to_json())
    assert data["tile"]["pe_rows"] == 2 and data["noc"]["fifo_depth"] == 2


@pytest.mark.parametrize("flit_bits,need", [(24, 3), (32, 2), (64, 1)])
def test_tiles_need_the_notify_packet_to_fit_max_packet_flits(flit_bits, need):
    from tilemesh.layouts import NotifyPayload, payload_flits
    from tilemesh.mesh import Mesh
    from tilemesh.model.machine import MeshModel
    from tilemesh.noc.fabric import NocFabric
    from tilemesh.tile.tile import Tile

    tile = TileConfig(sram_banks=1, sram_depth=64, imem_depth=16)
    ok = MeshConfig(rows=1, cols=1, tile=tile, noc=NocConfig(flit_bits=flit_bits,
                                                              max_packet_flits=need))
    assert ok.notify_flits == payload_flits(NotifyPayload, ok) == need
    ok.check_tiles()
    if need == 1:
        return  # max_packet_flits cannot be smaller
    # Constructing the config is fine (a NoC alone carries single-flit packets)...
    small = MeshConfig(rows=1, cols=1, tile=tile, noc=NocConfig(flit_bits=flit_bits,
                                                                 max_packet_flits=need - 1))
    message = (rf"NocConfig\.max_packet_flits must be in {need}\.\.256 for a mesh of tiles "
               rf"\(a NOTIFY packet carries {need} payload flits of {flit_bits} bits\), "
               rf"not {need - 1}")
    with pytest.raises(ConfigError, match=message):
        small.check_tiles()
    # ...the NoC builds; tiles, meshes and the mesh generator refuse, naming the field.
    fabric = NocFabric(small)
    fabric._MustUse__used = True
    for build in (Tile, Mesh, MeshModel):
        with pytest.raises(ConfigError, match=message):
            build(small)
