"""The mesh: ``rows`` x ``cols`` compute tiles on the network fabric, and the host port.

::

     host_in ─► ┌────────────── NocFabric ──────────────┐
     host_out ◄─┤ router (0,0) ── router (1,0) ── ...   │
                │    │ Local        │ Local              │
                └────┼──────────────┼────────────────────┘
                  Tile (0,0)     Tile (1,0)    ...     (net_in / net_out, noc_status)

Everything the host does is a packet on ``host_in`` (writes to SRAM, IMEM and CSRs, READ_REQs,
SIGNAL, CONTROL); everything for the host (READ_RESP, NOTIFY, DMA writes and signals to the
host) leaves on ``host_out``. The host port is on side ``cfg.host_side`` of tile
(``cfg.host_x``, ``cfg.host_y``). The host must always drain ``host_out``
(docs/tile-design.md §3, "Protocol deadlock").

Every tile is the same :class:`~tilemesh.tile.tile.Tile` with its position tied to constants on
its ``x``/``y`` inputs, so the generated Verilog (:func:`tilemesh.generate.mesh_verilog`) holds
one tile module, one router module and a structural top that instantiates them.
"""

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .config import ConfigError
from .layouts import TileState, flit_layout
from .noc.fabric import NocFabric
from .noc.ingress import drop_layout
from .tile.tile import Tile

__all__ = ["Mesh"]


class Mesh(wiring.Component):
    """A mesh of :class:`~tilemesh.tile.tile.Tile` on a :class:`~tilemesh.noc.fabric.NocFabric`.

    Parameters
    ----------
    cfg : MeshConfig
    modules : dict, optional
        ``{"tile": name, "noc": name, "router": name, "ingress": name}`` (any subset):
        instantiate every tile / the network fabric / every router / ingress checker as the
        Verilog module ``name``, converted separately, instead of elaborating it (structural
        Verilog, :func:`tilemesh.generate.mesh_verilog`; ``router`` and ``ingress`` only matter
        without ``noc``). Such a mesh cannot be simulated by Amaranth. By default everything is
        elaborated.

    Members
    -------
    host_in : ``In(stream.Signature(flit_layout(cfg)))``
        Packets from the host.
    host_out : ``Out(stream.Signature(flit_layout(cfg)))``
        Packets for the host.
    host_drops : ``Out(drop_layout())``
        Packets from the host dropped by the host port's ingress checker, per reason.
    tile_state : ``Out(TileState).array(cfg.rows, cfg.cols)``
        Controller state of tile (x, y) as ``tile_state[y][x]`` (LEDs, debugging).

    Raises
    ------
    ConfigError
        If ``cfg`` cannot build tiles (:meth:`~tilemesh.config.MeshConfig.check_tiles`).
    ValueError
        If ``modules`` names an unknown block kind.
    """

    def __init__(self, cfg, *, modules=None):
        modules = dict(modules or {})
        unknown = sorted(set(modules) - {"tile", "noc", "router", "ingress"})
        if unknown:
            self._MustUse__used = True
            raise ValueError(f"mesh modules must be a subset of 'tile', 'noc', 'router', "
                             f"'ingress', not {unknown!r}")
        try:
            cfg.check_tiles()
        except ConfigError:
            self._MustUse__used = True
            raise
        self._cfg = cfg
        self._modules = modules
        flit = stream.Signature(flit_layout(cfg))
        super().__init__({
            "host_in": In(flit),
            "host_out": Out(flit),
            "host_drops": Out(drop_layout()),
            "tile_state": Out(TileState).array(cfg.rows, cfg.cols),
        })

    @property
    def cfg(self):
        return self._cfg

    def elaborate(self, platform):
        from .generate import block_factory, instance_of

        m = Module()
        cfg = self._cfg
        fabric_modules = {k: v for k, v in self._modules.items() if k in ("router", "ingress")}
        m.submodules.fabric = fabric = instance_of(NocFabric(cfg, modules=fabric_modules),
                                                   self._modules.get("noc"))
        wiring.connect(m, wiring.flipped(self.host_in), fabric.host_in)
        wiring.connect(m, fabric.host_out, wiring.flipped(self.host_out))
        m.d.comb += self.host_drops.eq(fabric.host_drops)
        tile_block = block_factory(lambda: Tile(cfg), self._modules.get("tile"))
        for y in range(cfg.rows):
            for x in range(cfg.cols):
                tile = tile_block()
                m.submodules[f"tile_{y}_{x}"] = tile
                m.d.comb += [tile.x.eq(x), tile.y.eq(y)]
                wiring.connect(m, fabric.local_out[y][x], tile.net_in)
                wiring.connect(m, tile.net_out, fabric.local_in[y][x])
                m.d.comb += [tile.noc_status.eq(fabric.status[y][x]),
                             self.tile_state[y][x].eq(tile.state)]
        return m
