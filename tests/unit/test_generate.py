"""`tilemesh generate`: deterministic files, no absolute paths, clear errors for bad configs, and
structural mesh / NoC Verilog (each block kind one module, instantiated per position)."""

import json
import os
import re

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from tilemesh.cli import main
from tilemesh.config import MeshConfig, NocConfig, TileConfig
from tilemesh.generate import (
    AtPosition,
    ModuleInstance,
    StructuralDesign,
    mesh_verilog,
    noc_design,
    to_verilog,
)
from tilemesh.noc.fabric import NocFabric
from tilemesh.noc.ingress import Ingress
from tilemesh.noc.router import Router

# The smallest tile: the structure of the text does not depend on the tile's size.
SMALL_TILE = TileConfig(pe_rows=1, pe_cols=1, data_bits=4, acc_bits=8, simd_lanes=1,
                        sram_banks=1, sram_depth=16, imem_depth=16)


def _module_names(text):
    return re.findall(r"^module (\S+?)\s*\(", text, re.M)


def _instances(text, module):
    """Instance names of ``module`` in ``text``."""
    return re.findall(rf"^\s*{module} (\S+) \(", text, re.M)


def _assert_path_free(text, *extra):
    assert "(* src" not in text
    for needle in (os.getcwd(), "/home/", "/root/", "/work/", "/tmp/", *extra):
        assert needle not in text, f"the Verilog contains the path {needle!r}"


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
    assert params["config"]["rows"] == 1 and params["derived"]["pes"] == 4  # 1x1 of 2x2 PEs


def test_noc_only(tmp_path):
    assert main(["generate", "--preset", "tiny", "--noc-only", "-o", str(tmp_path)]) == 0
    assert set(_files(tmp_path)) == {"tilemesh_noc.v", "params.json", "resources.json"}
    text = (tmp_path / "tilemesh_noc.v").read_text()
    names = _module_names(text)
    assert len(names) == len(set(names))
    assert names.count("tilemesh_router") == names.count("tilemesh_ingress") == 1
    # tiny is 1x1: a router and an ingress checker per tile, one more checker for the host.
    assert sorted(_instances(text, "tilemesh_router")) == ["router_0_0"]
    assert len(_instances(text, "tilemesh_ingress")) == 2


def test_mesh_verilog_holds_each_block_kind_once_and_is_deterministic():
    cfg = MeshConfig(rows=2, cols=3, tile=SMALL_TILE,
                     noc=NocConfig(flit_bits=32, fifo_depth=2, max_packet_flits=4))
    text = mesh_verilog(cfg)
    names = _module_names(text)
    assert len(names) == len(set(names)), "a module name occurs twice"
    assert names[0] == "tilemesh_mesh"
    parts = ("tilemesh_noc", "tilemesh_tile", "tilemesh_router", "tilemesh_ingress")
    for module in parts:
        assert names.count(module) == 1, module
    # Every other module belongs to one of the five separately converted texts.
    assert all(n.split(".")[0].lstrip("\\") in ("tilemesh_mesh", *parts) for n in names)
    assert len(_instances(text, "tilemesh_noc")) == 1
    tiles = _instances(text, "tilemesh_tile")
    assert sorted(tiles) == sorted(f"tile_{y}_{x}" for y in range(2) for x in range(3))
    assert len(_instances(text, "tilemesh_router")) == 6
    assert len(_instances(text, "tilemesh_ingress")) == 7
    # Each instance's position inputs are tied to its own coordinates (tile_{y}_{x}).
    for y in range(2):
        for x in range(3):
            for kind in ("tile", "router"):
                inst = re.search(rf"^\s*tilemesh_{kind} {kind}_{y}_{x} \((.*?)\);", text,
                                 re.M | re.S).group(1)
                assert f".x(2'h{x})" in inst and f".y(2'h{y})" in inst, (kind, x, y)
    _assert_path_free(text)
    assert mesh_verilog(cfg) == text


def test_generate_refuses_tiles_that_cannot_send_a_notify(tmp_path, capsys):
    cfg = tmp_path / "m.toml"
    cfg.write_text("rows = 1\ncols = 2\n[noc]\nmax_packet_flits = 1\n")
    out = tmp_path / "out"
    assert main(["generate", "--preset", "tiny", "--config", str(cfg), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert ("NocConfig.max_packet_flits must be in 2..256 for a mesh of tiles" in err
            and "Traceback" not in err)
    assert not out.exists()
    # The same config is a valid network of single-flit packets.
    assert main(["generate", "--preset", "tiny", "--config", str(cfg), "--noc-only",
                 "-o", str(out)]) == 0


def test_structural_design_refuses_name_clashes_and_port_mismatches():
    cfg = MeshConfig(rows=1, cols=1, tile=SMALL_TILE)
    routers = {"router": "tilemesh_router"}
    # The top and a part both called tilemesh_router.
    clash = StructuralDesign("tilemesh_router", lambda: NocFabric(cfg, modules=routers),
                             {"tilemesh_router": lambda: Router(cfg)})
    with pytest.raises(RuntimeError, match=r"module names occur twice: tilemesh_router"):
        clash.verilog()
    # Router instances, but the module of that name is an ingress checker.
    wrong = StructuralDesign("tilemesh_noc", lambda: NocFabric(cfg, modules=routers),
                             {"tilemesh_router": lambda: Ingress(cfg)})
    with pytest.raises(RuntimeError, match=r"an instance of tilemesh_router does not match its "
                                           r"ports: .*inp__0__valid"):
        wrong.verilog()


def test_module_instance_has_the_component_ports():
    cfg = MeshConfig(rows=1, cols=1, tile=SMALL_TILE)
    reference = Router(cfg)
    reference._MustUse__used = True  # only its signature is compared
    inst = ModuleInstance(Router(cfg), "tilemesh_router")
    assert inst.signature == reference.signature
    assert inst.module == "tilemesh_router"
    inst._MustUse__used = True


def test_at_position_ties_the_position_and_checks_it():
    cfg = MeshConfig(rows=2, cols=3, tile=SMALL_TILE)
    text = to_verilog(AtPosition(Router(cfg), cfg, 2, 1), "placed")
    header = re.search(r"^module placed\((.*?)\);", text, re.M | re.S).group(1)
    ports = {p.strip() for p in header.split(",")}
    assert "x" not in ports and "y" not in ports and "inp__0__valid" in ports
    # (0, 0) would be the undriven default: the constants must be there.
    assert re.search(r"(\.x\(|\bx = )2'h2\b", text) and re.search(r"(\.y\(|\by = )2'h1\b", text)
    for pos in [(3, 0), (0, 2), (-1, 0), (True, 0)]:
        with pytest.raises(ValueError, match=re.escape(
                f"position must be a tile of the 2x3 mesh, not {pos!r}")):
            AtPosition(Router(cfg), cfg, *pos)
    with pytest.raises(ValueError, match=r"Ingress has no x and y input ports"):
        AtPosition(Ingress(cfg), cfg, 0, 0)



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


class _Around(wiring.Component):
    """A top with the ports of ``inner``, forwarded to it (as a board top or a bench would)."""

    def __init__(self, inner):
        self._inner = inner
        super().__init__(inner.signature)

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = self._inner
        for path, member, value in inner.signature.flatten(inner):
            outer = self
            for step in path:
                outer = outer[step] if isinstance(step, int) else getattr(outer, step)
            m.d.comb += value.eq(outer) if member.flow == In else outer.eq(value)
        return m


def test_a_structural_design_can_be_a_part_of_another():
    # e.g. a testbench or board top around the fabric: the fabric's parts still occur once.
    cfg = MeshConfig(rows=1, cols=2, tile=SMALL_TILE)
    outer = StructuralDesign("bench_top",
                             lambda: _Around(ModuleInstance(NocFabric(cfg), "tilemesh_noc")),
                             {"tilemesh_noc": noc_design(cfg)})
    text = outer.verilog()
    names = _module_names(text)
    assert names[:2] == ["bench_top", "tilemesh_noc"] and len(names) == len(set(names))
    assert names.count("tilemesh_router") == 1
    assert _instances(text, "tilemesh_noc") and len(_instances(text, "tilemesh_router")) == 2
