"""The routing function of the mesh, in one place: XY dimension-order routing.

A packet first travels along its row (X) until it reaches the destination column, then along
the column (Y), then leaves through the Local port. Every router uses the class named by
:data:`DEFAULT_ROUTING`; another function (for example one that steers around disabled tiles) is
another class with the same ports and the same :meth:`~XYRoute.model`, passed as
``Router(..., routing=...)`` or made the default here.

**The host address.** The host port hangs off one edge of tile (``host_x``, ``host_y``). Packets
for the host carry the coordinates of the place just outside that edge (see
:func:`host_address`): west of column 0 is ``x = 2**coord_bits - 1`` (that is, -1), east of the
last column is ``x = cols``, north of row 0 is ``y = 2**coord_bits - 1``, south of the last row is
``y = rows``. Such a packet is routed XY to the host tile, then out of its host-side port. That
last turn may break the X-then-Y order (for example north then west), but it enters a channel
that only the host drains, so it cannot close a cycle of channel dependencies.
"""

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..layouts import Port

__all__ = ["host_address", "host_port", "on_mesh", "destination_ok",
           "XYRoute", "DEFAULT_ROUTING"]

PORTS = len(Port)

_SIDE_PORT = {"north": Port.NORTH, "east": Port.EAST, "south": Port.SOUTH, "west": Port.WEST}


def host_port(cfg):
    """The port of tile (``cfg.host_x``, ``cfg.host_y``) that carries the host port."""
    return _SIDE_PORT[cfg.host_side]


def host_address(cfg):
    """``(x, y)`` a packet carries in ``dst_x``/``dst_y`` to reach the host."""
    minus_one = (1 << cfg.coord_bits) - 1
    return {
        "west": (minus_one, cfg.host_y),
        "east": (cfg.cols, cfg.host_y),
        "north": (cfg.host_x, minus_one),
        "south": (cfg.host_x, cfg.rows),
    }[cfg.host_side]


def on_mesh(cfg, x, y):
    """True when tile (``x``, ``y``) exists."""
    return 0 <= x < cfg.cols and 0 <= y < cfg.rows


def destination_ok(cfg, dst_x, dst_y):
    """Hardware: a 1-bit expression, high when (``dst_x``, ``dst_y``) is a tile or the host.
    Any other destination is off the mesh and its packet must be dropped."""
    hx, hy = host_address(cfg)
    return (((dst_x < cfg.cols) & (dst_y < cfg.rows)) |
            ((dst_x == hx) & (dst_y == hy)))


class XYRoute(wiring.Component):
    """XY routing decision of the router at tile (``x``, ``y``): combinational.

    The position is an input, not a parameter, so one Verilog module serves every router.

    Parameters
    ----------
    cfg : MeshConfig

    Members
    -------
    x, y : ``In(unsigned(cfg.coord_bits))``
        Column and row of the router (must be a tile of the mesh; constant in a mesh).
    dst_x, dst_y : ``In(unsigned(cfg.coord_bits))``
        Destination of the packet whose header is at the head of an input.
    ports : ``Out(5)``
        One-hot output port, bit ``Port.X.value`` for port X; zero when ``drop`` is set.
        (A mask rather than a port number, so a multicast routing function fits the same ports.)
    drop : ``Out(1)``
        The destination is neither a tile nor the host: the packet must be dropped.
    """

    def __init__(self, cfg):
        self._cfg = cfg
        coord = unsigned(cfg.coord_bits)
        super().__init__({"x": In(coord), "y": In(coord), "dst_x": In(coord), "dst_y": In(coord),
                          "ports": Out(PORTS), "drop": Out(1)})

    def elaborate(self, platform):
        m = Module()
        cfg, x, y = self._cfg, self.x, self.y
        hx, hy = host_address(cfg)
        to_host = Signal()
        tx = Signal(unsigned(cfg.coord_bits))
        ty = Signal(unsigned(cfg.coord_bits))
        m.d.comb += [
            to_host.eq((self.dst_x == hx) & (self.dst_y == hy)),
            # A packet for the host heads for the host tile, then leaves by its host side.
            tx.eq(Mux(to_host, cfg.host_x, self.dst_x)),
            ty.eq(Mux(to_host, cfg.host_y, self.dst_y)),
            self.drop.eq(~destination_ok(cfg, self.dst_x, self.dst_y)),
        ]
        # First match wins. "tx + 1 <= x" rather than "tx < x": where a design ties x or y to 0
        # and Amaranth folds it, the latter is an unsigned compare with zero, constant false,
        # which Verilator flags (UNSIGNED).
        with m.If(self.drop):
            pass
        with m.Elif(tx > x):
            m.d.comb += self.ports[Port.EAST.value].eq(1)
        with m.Elif(tx + 1 <= x):
            m.d.comb += self.ports[Port.WEST.value].eq(1)
        with m.Elif(ty > y):
            m.d.comb += self.ports[Port.SOUTH.value].eq(1)
        with m.Elif(ty + 1 <= y):
            m.d.comb += self.ports[Port.NORTH.value].eq(1)
        # A packet for the host that got this far is at the host tile (tx, ty is the host tile).
        with m.Elif(to_host):
            m.d.comb += self.ports[host_port(cfg).value].eq(1)
        with m.Else():
            m.d.comb += self.ports[Port.LOCAL.value].eq(1)
        return m

    @staticmethod
    def model(cfg, x, y, dst_x, dst_y):
        """Python twin of the hardware: the output :class:`Port` at tile (x, y), or None when the
        packet is dropped (destination off the mesh)."""
        hx, hy = host_address(cfg)
        to_host = (dst_x, dst_y) == (hx, hy)
        if not to_host and not on_mesh(cfg, dst_x, dst_y):
            return None
        tx, ty = (cfg.host_x, cfg.host_y) if to_host else (dst_x, dst_y)
        if tx > x:
            return Port.EAST
        if tx < x:
            return Port.WEST
        if ty > y:
            return Port.SOUTH
        if ty < y:
            return Port.NORTH
        return host_port(cfg) if to_host else Port.LOCAL

    @classmethod
    def path(cls, cfg, src, dst):
        """Tiles a packet from tile ``src`` = (x, y) to ``dst`` (a tile or the host address)
        visits, as a list of ``(x, y, out_port)``; None when it would be dropped."""
        step = {Port.EAST: (1, 0), Port.WEST: (-1, 0), Port.SOUTH: (0, 1), Port.NORTH: (0, -1)}
        x, y = src
        hops = []
        while True:
            port = cls.model(cfg, x, y, *dst)
            if port is None:
                return None
            hops.append((x, y, port))
            leaves_to_host = tuple(dst) == host_address(cfg) and (x, y) == (cfg.host_x,
                                                                           cfg.host_y)
            if port is Port.LOCAL or leaves_to_host:
                return hops
            dx, dy = step[port]
            x, y = x + dx, y + dy
            if len(hops) > cfg.rows + cfg.cols:  # pragma: no cover - a routing bug
                raise RuntimeError(f"routing loop from {src} to {dst}")


# The routing function every router uses unless told otherwise: change it here.
DEFAULT_ROUTING = XYRoute
