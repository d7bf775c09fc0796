"""The mesh fabric: one router per tile, registered links between neighbours, an ingress checker
on every entry point, and the host port on the configured edge.

::

     host_in ──► Ingress ──┐
     host_out ◄────────────┤ (host side of tile host_x, host_y; default west of (0, 0))
                           ▼
                    ┌──────────┐  E ► W  ┌──────────┐
                    │ router   │◄───────►│ router   │ ...
                    │ (0, 0)   │  W ◄ E  │ (1, 0)   │
                    └──────────┘         └──────────┘
                     ▲ Local │   S ▼ N ▲    ▲ Local │
     local_in[0][0] ─┘ (via  ▼           local_in[0][1] ...
          Ingress)   local_out[0][0]

Links are plain wires between routers: each router drives its outputs from registers, and each
input's ready comes from a flip-flop, so every wire between two tiles starts at a flip-flop.

Every router is the same :class:`~tilemesh.noc.router.Router`; its position arrives on its
``x``/``y`` inputs, tied to constants here. For Verilog generation the fabric can instantiate the
router and ingress checker as separately converted modules (``modules``, see
:func:`tilemesh.generate.noc_verilog`), so the text holds each of them once.
"""

from amaranth.hdl import Module
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..layouts import Port, flit_layout
from .arbiter import DEFAULT_ARBITER
from .ingress import COUNTER_BITS, Ingress, drop_layout
from .router import Router, router_drop_layout
from .routing import DEFAULT_ROUTING, host_port

__all__ = ["status_layout", "NocFabric"]


def status_layout(counter_bits=COUNTER_BITS):
    """Status counters of one tile's network node: drops at the ingress checker of its Local
    input (by reason) and drops in its router."""
    return data.StructLayout({"ingress": drop_layout(counter_bits),
                              "router": router_drop_layout(counter_bits)})


# Neighbour links: (port out of a router, offset of the neighbour, port into the neighbour).
_LINKS = ((Port.EAST, (1, 0), Port.WEST), (Port.WEST, (-1, 0), Port.EAST),
          (Port.SOUTH, (0, 1), Port.NORTH), (Port.NORTH, (0, -1), Port.SOUTH))


class NocFabric(wiring.Component):
    """An ``cfg.rows`` x ``cfg.cols`` mesh of :class:`~tilemesh.noc.router.Router`.

    Each tile's Local router port is exposed (``local_in``/``local_out``), each behind an
    :class:`~tilemesh.noc.ingress.Ingress` checker on the way in; the host port is the router
    port on side ``cfg.host_side`` of tile (``cfg.host_x``, ``cfg.host_y``), also behind a checker.
    Packets for the host carry :func:`~tilemesh.noc.routing.host_address` as destination.
    Router ports on the mesh edge other than the host port are left unconnected (no routing
    decision ever selects them).

    Parameters
    ----------
    cfg : MeshConfig
    routing, arbiter : class, optional
        Passed to every :class:`~tilemesh.noc.router.Router`.
    counter_bits : int
        Width of every status counter.
    modules : dict, optional
        ``{"router": name, "ingress": name}``: instantiate each router / ingress checker as the
        Verilog module ``name`` (converted separately from the same ``Router`` / ``Ingress``
        parameters) instead of elaborating it. Such a fabric converts to structural Verilog but
        cannot be simulated by Amaranth. Missing keys are elaborated as usual.

    Members
    -------
    local_in : ``In(stream.Signature(flit_layout(cfg))).array(cfg.rows, cfg.cols)``
        Packets from the tile at column ``x``, row ``y`` into the network: ``local_in[y][x]``
        (Verilog ``local_in__{y}__{x}__valid`` ...).
    local_out : ``Out(stream.Signature(flit_layout(cfg))).array(cfg.rows, cfg.cols)``
        Packets delivered to tile (x, y): ``local_out[y][x]``.
    host_in : ``In(stream.Signature(flit_layout(cfg)))``
        Packets from the host.
    host_out : ``Out(stream.Signature(flit_layout(cfg)))``
        Packets for the host.
    status : ``Out(status_layout(counter_bits)).array(cfg.rows, cfg.cols)``
        Drop counters of tile (x, y)'s ingress checker and router: ``status[y][x]``.
    host_drops : ``Out(drop_layout(counter_bits))``
        Drop counters of the host port's ingress checker.
    """

    def __init__(self, cfg, *, routing=DEFAULT_ROUTING, arbiter=DEFAULT_ARBITER,
                 counter_bits=COUNTER_BITS, modules=None):
        modules = dict(modules or {})
        unknown = sorted(set(modules) - {"router", "ingress"})
        if unknown:
            self._MustUse__used = True
            raise ValueError(f"fabric modules must be a subset of 'router', 'ingress', "
                             f"not {unknown!r}")
        self._cfg = cfg
        self._routing = routing
        self._arbiter = arbiter
        self._counter_bits = counter_bits
        self._modules = modules
        flit = stream.Signature(flit_layout(cfg))
        super().__init__({
            "local_in": In(flit).array(cfg.rows, cfg.cols),
            "local_out": Out(flit).array(cfg.rows, cfg.cols),
            "host_in": In(flit),
            "host_out": Out(flit),
            "status": Out(status_layout(counter_bits)).array(cfg.rows, cfg.cols),
            "host_drops": Out(drop_layout(counter_bits)),
        })

    @property
    def cfg(self):
        return self._cfg

    def elaborate(self, platform):
        from ..generate import block_factory

        m = Module()
        cfg = self._cfg
        extra = {"routing": self._routing, "arbiter": self._arbiter}
        router_block = block_factory(
            lambda: Router(cfg, counter_bits=self._counter_bits, **extra),
            self._modules.get("router"))
        ingress_block = block_factory(lambda: Ingress(cfg, counter_bits=self._counter_bits),
                                      self._modules.get("ingress"))

        routers = {}
        for y in range(cfg.rows):
            for x in range(cfg.cols):
                router = router_block()
                ingress = ingress_block()
                m.submodules[f"router_{y}_{x}"] = routers[x, y] = router
                m.submodules[f"ingress_{y}_{x}"] = ingress
                m.d.comb += [router.x.eq(x), router.y.eq(y)]
                wiring.connect(m, wiring.flipped(self.local_in[y][x]), ingress.inp)
                wiring.connect(m, ingress.out, router.inp[Port.LOCAL.value])
                wiring.connect(m, router.out[Port.LOCAL.value],
                               wiring.flipped(self.local_out[y][x]))
                m.d.comb += [
                    self.status[y][x].ingress.eq(ingress.drops),
                    self.status[y][x].router.eq(router.drops),
                ]

        for (x, y), router in routers.items():
            for out_port, (dx, dy), in_port in _LINKS:
                neighbour = routers.get((x + dx, y + dy))
                if neighbour is not None:
                    wiring.connect(m, router.out[out_port.value], neighbour.inp[in_port.value])

        side = host_port(cfg).value
        host_router = routers[cfg.host_x, cfg.host_y]
        m.submodules.host_ingress = host_ingress = ingress_block()
        wiring.connect(m, wiring.flipped(self.host_in), host_ingress.inp)
        wiring.connect(m, host_ingress.out, host_router.inp[side])
        wiring.connect(m, host_router.out[side], wiring.flipped(self.host_out))
        m.d.comb += self.host_drops.eq(host_ingress.drops)
        return m
