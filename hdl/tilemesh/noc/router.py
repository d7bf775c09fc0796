"""The 5-port wormhole router of one tile.

::

    inp[p] ─┬─────────────────────► Fifo ──► head ─► request ─► arbiter[o] ─┐
            └─► route (XY) ─ports─►  (flit + route,                         ▼
     (ready = FF)                      depth d)    └──► crossbar mux[o] ──► out register ──► out[o]
                                                                              (link register)

The routing decision is made as a flit enters its input FIFO and is stored beside it, so the
cycle in which a header at the head of a FIFO is arbitrated and crossed does not also compute
its route (the route depends only on the header and this router's position, which arrives on
the ``x``/``y`` inputs so that one Verilog module serves every router of a mesh). A flit written
into an input FIFO in cycle ``t`` is arbitrated and crossed in cycle ``t + 1`` and sits in the
output register (driving the link) from ``t + 2``: two cycles per hop. Everything that leaves
the router comes straight from a flip-flop (``out.valid``/``payload`` from the output register,
``inp.ready`` from the FIFO's registered "not full"), so no combinational path runs through two
tiles.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..layouts import Port, flit_layout, header_layout
from .arbiter import DEFAULT_ARBITER
from .fifo import Fifo
from .ingress import COUNTER_BITS, saturating_add
from .routing import DEFAULT_ROUTING

__all__ = ["PORTS", "router_drop_layout", "router_entry_layout", "Router"]

PORTS = len(Port)


def router_drop_layout(counter_bits=COUNTER_BITS):
    """Saturating drop counters of a router: packets whose destination is off the mesh."""
    return data.StructLayout({"off_mesh": unsigned(counter_bits)})


def router_entry_layout(cfg):
    """One entry of a router input FIFO: the flit (low bits) and the routing decision made for
    it on entry, as if it were a header (``ports``: one-hot output, ``drop``: off the mesh);
    the decision is only used when the flit turns out to be a header."""
    return data.StructLayout({"flit": flit_layout(cfg), "ports": PORTS, "drop": 1})


class Router(wiring.Component):
    """Five-port wormhole router with XY routing, input FIFOs and round-robin output arbitration.

    A packet is a header flit (:func:`~tilemesh.layouts.header_layout` in ``data``) followed by
    payload flits; ``last`` marks its final flit. The routing function picks the output of
    every flit as it enters an input FIFO (:func:`router_entry_layout`); when a header reaches
    the head of its FIFO and that output is free, the output's arbiter may grant it, and the
    output then belongs to that input until the packet's ``last`` flit has crossed (wormhole
    switching: packets never interleave on an output). Among inputs whose headers wait for the
    same free output, the arbiter chooses round-robin.

    One flit per cycle can pass through every input and every output at once, with any FIFO
    depth of at least 2. A header whose destination is off the mesh (neither a tile nor the host
    address) is dropped with the rest of its packet at the rate of one flit per cycle and counted
    in ``drops.off_mesh``; other inputs are unaffected.

    Parameters
    ----------
    cfg : MeshConfig
        Gives the flit format, ``cfg.noc.fifo_depth`` and the mesh size.
    routing : class
        Routing function (default :data:`~tilemesh.noc.routing.DEFAULT_ROUTING`), instantiated
        as ``routing(cfg)`` once per input, its ``x``/``y`` inputs driven by the router's.
    arbiter : class
        Output arbiter (default :data:`~tilemesh.noc.arbiter.DEFAULT_ARBITER`), instantiated as
        ``arbiter(5)`` once per output.
    counter_bits : int
        Width of the status counters.

    Members
    -------
    x, y : ``In(unsigned(cfg.coord_bits))``
        Column and row of this router's tile (must be a tile of the mesh; the fabric ties them
        to constants).
    inp : ``In(stream.Signature(flit_layout(cfg))).array(5)``
        Input links, indexed by ``Port.X.value``.
    out : ``Out(stream.Signature(flit_layout(cfg))).array(5)``
        Output links, indexed by ``Port.X.value``; driven by registers.
    drops : ``Out(router_drop_layout(counter_bits))``
        Packets dropped here (destination off the mesh), saturating.
    """

    def __init__(self, cfg, *, routing=DEFAULT_ROUTING, arbiter=DEFAULT_ARBITER,
                 counter_bits=COUNTER_BITS):
        self._cfg = cfg
        self._routing, self._arbiter = routing, arbiter
        flit = flit_layout(cfg)
        super().__init__({
            "x": In(unsigned(cfg.coord_bits)),
            "y": In(unsigned(cfg.coord_bits)),
            "inp": In(stream.Signature(flit)).array(PORTS),
            "out": Out(stream.Signature(flit)).array(PORTS),
            "drops": Out(router_drop_layout(counter_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        flit_shape = flit_layout(cfg)
        names = [p.name.lower() for p in Port]

        # -- inputs: route on entry, FIFO, packet state of the head flit -------------------
        fifos, heads, head_valid, in_body, dropping = [], [], [], [], []
        requests, drop_header = [], []
        for i in range(PORTS):
            link = self.inp[i]
            fifo = Fifo(router_entry_layout(cfg), cfg.noc.fifo_depth)
            m.submodules[f"fifo_{names[i]}"] = fifo
            route = self._routing(cfg)
            m.submodules[f"route_{names[i]}"] = route
            incoming = header_layout(cfg)(link.payload.data)
            m.d.comb += [
                route.x.eq(self.x),
                route.y.eq(self.y),
                route.dst_x.eq(incoming.dst_x),
                route.dst_y.eq(incoming.dst_y),
                fifo.w.valid.eq(link.valid),
                fifo.w.payload.flit.eq(link.payload),
                fifo.w.payload.ports.eq(route.ports),
                fifo.w.payload.drop.eq(route.drop),
                link.ready.eq(fifo.w.ready),
            ]

            entry = fifo.r.payload
            body = Signal(name=f"in_body_{names[i]}")     # head is a payload flit, not a header
            drop = Signal(name=f"dropping_{names[i]}")    # the packet in progress is dropped
            is_header = Signal(name=f"is_header_{names[i]}")
            request = Signal(PORTS, name=f"request_{names[i]}")
            drop_hdr = Signal(name=f"drop_header_{names[i]}")
            m.d.comb += [
                is_header.eq(fifo.r.valid & ~body),
                request.eq(entry.ports & is_header.replicate(PORTS)),
                drop_hdr.eq(is_header & entry.drop),
            ]
            heads.append(entry.flit)
            head_valid.append(fifo.r.valid)
            in_body.append(body)
            dropping.append(drop)
            requests.append(request)
            drop_header.append(drop_hdr)
            fifos.append(fifo)

        # -- outputs: arbiter, wormhole lock, crossbar, output register -----------------------
        taken = []  # taken[o]: one-hot input whose head flit output o takes this cycle
        for o in range(PORTS):
            arb = self._arbiter(PORTS)
            m.submodules[f"arbiter_{names[o]}"] = arb
            locked = Signal(name=f"locked_{names[o]}")         # a packet holds this output
            owner = Signal(PORTS, name=f"owner_{names[o]}")    # ...coming from this input
            select = Signal(PORTS, name=f"select_{names[o]}")
            xfer = Signal(name=f"xfer_{names[o]}")
            crossed = Signal(flit_shape, name=f"crossed_{names[o]}")
            out_valid = Signal(name=f"out_valid_{names[o]}")
            out_flit = Signal(flit_shape, name=f"out_flit_{names[o]}")
            link = self.out[o]

            m.d.comb += arb.requests.eq(Cat(requests[i][o] & ~locked for i in range(PORTS)))
            m.d.comb += select.eq(Mux(locked, owner, arb.grant))
            # A flit crosses when the output register is empty or its flit leaves this cycle,
            # and the owner has its next flit or (output free) some header asks for the output.
            # Written without the grant, so the arbiter is not on this path.
            owner_ready = (owner & Cat(head_valid)).any()
            header_waiting = Cat(requests[i][o] for i in range(PORTS)).any()
            m.d.comb += xfer.eq((~out_valid | link.ready) &
                                Mux(locked, owner_ready, header_waiting))
            m.d.comb += arb.advance.eq(xfer & ~locked)
            # select is one-hot: an OR of the gated heads is the multiplexer.
            crossed_bits = 0
            for i in range(PORTS):
                crossed_bits = crossed_bits | (heads[i].as_value() & select[i].replicate(
                    flit_shape.size))
            m.d.comb += crossed.eq(crossed_bits)

            with m.If(xfer):
                m.d.sync += [
                    out_valid.eq(1),
                    out_flit.eq(crossed),
                    locked.eq(~crossed.last),
                    owner.eq(select),
                ]
            with m.Elif(link.ready):
                m.d.sync += out_valid.eq(0)
            m.d.comb += [
                link.valid.eq(out_valid),
                link.payload.eq(out_flit),
            ]
            # The input whose head crosses: the owner, or the granted header (a grant implies a
            # waiting header, so only room in the output register is needed). Spelled out so
            # the pop of a FIFO does not wait for `xfer` on top of the grant.
            can_take = ~out_valid | link.ready
            t = Signal(PORTS, name=f"taken_{names[o]}")
            m.d.comb += t.eq(Mux(locked, owner & Cat(head_valid), arb.grant) &
                             can_take.replicate(PORTS))
            taken.append(t)

        # -- inputs again: pop the head when an output took it or it is being dropped ----------
        for i, fifo in enumerate(fifos):
            discard = Signal(name=f"discard_{names[i]}")
            pop = Signal(name=f"pop_{names[i]}")
            m.d.comb += [
                discard.eq(head_valid[i] & (dropping[i] | drop_header[i])),
                pop.eq(Cat(taken[o][i] for o in range(PORTS)).any() | discard),
                fifo.r.ready.eq(pop),
            ]
            with m.If(pop):
                m.d.sync += in_body[i].eq(~heads[i].last)
            with m.If(discard):
                m.d.sync += dropping[i].eq(~heads[i].last)
        # Several inputs may drop a header in the same cycle: count them all.
        saturating_add(m, self.drops.off_mesh, sum(drop_header))
        return m
