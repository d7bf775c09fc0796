"""The compute tile: network interface, SRAM, controller, DMA engine, matrix and SIMD engines.

::

                 net_in (router Local out)         net_out (router Local in)
                        │                                 ▲
                 ┌──────▼─────────────────────────────────┴───────┐
                 │ NetworkInterface: receive, READ_REQ responder, │◄── noc_status
                 │ transmit arbiter, semaphores, CSRs             │
                 └─┬ni_rx──┬ni_read─────▲dma.tx───┬control/imem──┘
                   │       │            │         │  ▲status, sem_*, error_notify
                   ▼       ▼            │         ▼  │
                 ┌───────────────┐  ┌───┴──────┐ ┌───┴────────┐
                 │ SramArray     │◄─┤DmaEngine │◄┤ Controller │ (IMEM, issue, queues)
                 │ (banks, RR    │  └──────────┘ │            │
                 │  arbiters)    │◄─ MatmulEngine (a, b, c) ◄─┤
                 │               │◄─ SimdEngine (x, y, d) ◄───┘
                 └───────────────┘

SRAM clients, in arbiter order: ``ni_rx`` (network writes), ``ni_read`` (READ_REQ answers),
``dma`` (words of ``dma.write``), ``mm_a``, ``mm_b``, ``mm_c`` (matrix engine), ``simd_x``,
``simd_y``, ``simd_d`` (SIMD engine). The arbiters are round-robin per bank, so the receive path
always makes progress (docs/tile-design.md §1).
"""

from amaranth.hdl import Module, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import ConfigError
from ..layouts import TileState, flit_layout
from ..noc.fabric import status_layout
from .controller import Controller
from .dma import DmaEngine
from .matmul_engine import MatmulEngine
from .netif import NetworkInterface
from .simd_engine import SimdEngine
from .sram_array import SramArray

__all__ = ["SRAM_CLIENTS", "Tile"]

#: SRAM clients of a tile: (name, reads, writes), in arbiter order.
SRAM_CLIENTS = (
    ("ni_rx", False, True),
    ("ni_read", True, False),
    ("dma", True, False),
    ("mm_a", True, False),
    ("mm_b", True, False),
    ("mm_c", True, True),
    ("simd_x", True, False),
    ("simd_y", True, False),
    ("simd_d", False, True),
)


class Tile(wiring.Component):
    """A compute tile of a mesh of ``cfg``.

    The tile's position is an input (``x``, ``y``), not a parameter: one Verilog module serves
    every tile of a mesh, which ties the inputs to constants (synthesis folds them).

    Parameters
    ----------
    cfg : MeshConfig

    Members
    -------
    x, y : ``In(unsigned(cfg.coord_bits))``
        Column and row of the tile; must be a tile of the mesh and constant (TILE_ID, the
        ``src`` of every packet the tile sends, the target of its local SIGNALs).
    net_in : ``In(stream.Signature(flit_layout(cfg)))``
        Packets for this tile, from the router's Local output.
    net_out : ``Out(stream.Signature(flit_layout(cfg)))``
        Packets from this tile, into the router's Local input.
    noc_status : ``In(status_layout())``
        The fabric's drop counters for this tile (DROP_* CSRs).
    state : ``Out(TileState)``
        The controller's state (LEDs, debugging).

    Raises
    ------
    ConfigError
        If ``cfg`` cannot build tiles (:meth:`~tilemesh.config.MeshConfig.check_tiles`).
    """

    def __init__(self, cfg):
        try:
            cfg.check_tiles()
        except ConfigError:
            self._MustUse__used = True
            raise
        self._cfg = cfg
        flit = stream.Signature(flit_layout(cfg))
        super().__init__({
            "x": In(unsigned(cfg.coord_bits)),
            "y": In(unsigned(cfg.coord_bits)),
            "net_in": In(flit),
            "net_out": Out(flit),
            "noc_status": In(status_layout()),
            "state": Out(TileState),
        })

    @property
    def cfg(self):
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg

        names = [name for name, _, _ in SRAM_CLIENTS]
        m.submodules.sram = sram = SramArray(
            cfg, names, readers=[n for n, r, _ in SRAM_CLIENTS if r],
            writers=[n for n, _, w in SRAM_CLIENTS if w])
        client = {name: sram.clients[i] for i, name in enumerate(names)}
        m.submodules.ni = ni = NetworkInterface(cfg)
        m.submodules.controller = ctl = Controller(cfg)
        m.submodules.dma = dma = DmaEngine(cfg)
        m.submodules.matmul = mm = MatmulEngine(cfg)
        m.submodules.simd = simd = SimdEngine(cfg)
        for block in (ni, dma):
            m.d.comb += [block.x.eq(self.x), block.y.eq(self.y)]

        # Network.
        wiring.connect(m, wiring.flipped(self.net_in), ni.net_in)
        wiring.connect(m, ni.net_out, wiring.flipped(self.net_out))
        m.d.comb += ni.noc_status.eq(self.noc_status)

        # SRAM clients.
        for port, name in ((ni.sram_rx, "ni_rx"), (ni.sram_read, "ni_read"), (dma.sram, "dma"),
                           (mm.a, "mm_a"), (mm.b, "mm_b"), (mm.c, "mm_c"),
                           (simd.x, "simd_x"), (simd.y, "simd_y"), (simd.d, "simd_d")):
            wiring.connect(m, port, client[name])

        # NI <-> controller and DMA engine.
        wiring.connect(m, dma.ni, ni.dma)
        wiring.connect(m, ni.control, ctl.control)
        wiring.connect(m, ni.imem_write, ctl.imem_write)
        wiring.connect(m, ctl.sem_dec, ni.sem_dec)
        wiring.connect(m, ni.sem_overflow, ctl.sem_overflow)
        wiring.connect(m, ctl.error_notify, ni.error_notify)
        m.d.comb += [
            ni.control_refused.eq(ctl.control_refused),
            ni.imem_writable.eq(ctl.imem_writable),
            ctl.sem_enough.eq(ni.sem_enough),
            ni.status.eq(ctl.status),
            ctl.timeout.eq(ni.timeout),
            self.state.eq(ctl.status.status.state),
        ]

        # Controller -> units.
        wiring.connect(m, ctl.dma_cmd, dma.cmd)
        wiring.connect(m, ctl.matmul_cmd, mm.cmd)
        wiring.connect(m, ctl.simd_cmd, simd.cmd)
        for unit in (dma, mm, simd):
            m.d.comb += [unit.abort.eq(ctl.abort), unit.start.eq(ctl.start)]
        m.d.comb += [
            ctl.dma_busy.eq(dma.busy),
            ctl.matmul_busy.eq(mm.busy),
            ctl.simd_busy.eq(simd.busy),
            ctl.matmul_step.eq(mm.steps),
        ]
        return m
