"""Verilog generation: which blocks a configuration produces, and writing them out.

Files are only ever written here (and by the CLI that calls it), never while elaborating.
Output is deterministic: the same config gives byte-identical files, with no source paths.
"""

import json
from pathlib import Path

from amaranth.back import verilog

from .config import MeshConfig

__all__ = ["blocks", "generate", "resource_estimate"]


def blocks(cfg: MeshConfig, *, noc_only=False):
    """Top-level blocks of ``cfg`` as ``{verilog module name: component}``."""
    from .noc.fabric import NocFabric

    if noc_only:
        return {"tilemesh_noc": NocFabric(cfg)}
    from .mesh import Mesh
    from .noc.router import Router
    from .tile.matrix import MatrixUnit
    from .tile.simd import SimdUnit
    from .tile.sram import SramBank

    t = cfg.tile
    return {
        "tilemesh_matrix": MatrixUnit.from_config(t),
        "tilemesh_simd": SimdUnit.from_config(t),
        "tilemesh_sram_bank": SramBank(width=cfg.word_bits, depth=t.sram_depth),
        "tilemesh_router": Router(cfg, 0, 0),
        "tilemesh_noc": NocFabric(cfg),
        "tilemesh_mesh": Mesh(cfg),
    }


def resource_estimate(cfg: MeshConfig):
    """First-order resource figures from the parameters alone (synthesis gives the real ones)."""
    t = cfg.tile
    return {
        "tiles": cfg.tiles,
        "multipliers": cfg.pes,
        "multiplier_bits": f"{t.data_bits}x{t.data_bits}",
        "accumulator_bits": cfg.pes * t.acc_bits,
        "sram_bits_per_tile": t.sram_words * cfg.word_bits,
        "sram_bits_total": cfg.tiles * t.sram_words * cfg.word_bits,
        "router_fifo_bits_total": cfg.tiles * 5 * cfg.noc.fifo_depth * (cfg.noc.flit_bits + 1),
        "peak_macs_per_cycle": cfg.pes,
        "peak_link_flits_per_cycle": 2 * (cfg.rows * (cfg.cols - 1) + cfg.cols * (cfg.rows - 1)),
    }


def generate(cfg: MeshConfig, out_dir, *, noc_only=False, progress=None):
    """Write ``<name>.v`` per block, ``params.json`` and ``resources.json`` into ``out_dir``.

    Returns the list of written paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, component in blocks(cfg, noc_only=noc_only).items():
        if progress:
            progress(f"generating {name}")
        path = out / f"{name}.v"
        path.write_text(verilog.convert(component, name=name, emit_src=False,
                                        strip_internal_attrs=True))
        written.append(path)
    params = {"config": cfg.to_dict(), "derived": {
        "tiles": cfg.tiles, "pes": cfg.pes, "word_bits": cfg.word_bits,
        "coord_bits": cfg.coord_bits, "tile_addr_bits": cfg.tile_addr_bits,
        "header_fixed_bits": cfg.header_fixed_bits}}
    for fname, content in (("params.json", params), ("resources.json", resource_estimate(cfg))):
        path = out / fname
        path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
