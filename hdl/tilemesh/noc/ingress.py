"""The ingress checker: where packets enter the network, proven well-formed before they go on.

A wormhole router forwards a header before it sees the packet's tail, so a packet whose tail
disagrees with its header's ``length`` cannot be recalled once it is in the network. The
ingress checker therefore holds each packet in a :class:`~tilemesh.noc.fifo.CommitFifo` until
its tail has arrived where the header said it would, then commits it (releases it to the
router). A malformed packet is dropped whole and counted by reason.
"""

import enum as py_enum

from amaranth.hdl import Module, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..layouts import Opcode, flit_layout, header_layout
from .fifo import CommitFifo
from .routing import destination_ok

__all__ = ["COUNTER_BITS", "DropReason", "drop_layout", "saturating_add", "Ingress",
           "ingress_depth"]

COUNTER_BITS = 16


class DropReason(py_enum.Enum):
    """Why a packet was dropped; when several apply the first in this order is counted."""
    OFF_MESH = "off_mesh"      # destination is neither a tile nor the host
    BAD_OPCODE = "bad_opcode"  # opcode 6 or 7
    BAD_LENGTH = "bad_length"  # length field above cfg.noc.max_packet_flits
    BAD_TAIL = "bad_tail"      # the ``last`` flag is not on flit number ``length`` (0 = header)


def drop_layout(counter_bits=COUNTER_BITS):
    """Saturating drop counters, one per :class:`DropReason` (field names are its values)."""
    return data.StructLayout({r.value: unsigned(counter_bits) for r in DropReason})


def saturating_add(m, counter, amount):
    """``counter <= counter + amount``, holding at its maximum instead of wrapping."""
    amount = Value.cast(amount)
    total = Signal(max(len(counter), len(amount)) + 1)
    m.d.comb += total.eq(counter + amount)
    with m.If(total > (1 << len(counter)) - 1):
        m.d.sync += counter.eq((1 << len(counter)) - 1)
    with m.Else():
        m.d.sync += counter.eq(total)


def ingress_depth(cfg):
    """Entries of the ingress buffer: a longest packet (header and ``max_packet_flits``) plus
    one, so back-to-back longest packets still flow at one flit per cycle (the next packet
    fills the buffer while the committed one drains)."""
    return cfg.noc.max_packet_flits + 2


class Ingress(wiring.Component):
    """Checks packets entering the network and drops malformed ones whole.

    A packet is a header flit and ``length`` payload flits; ``last`` is set on its final flit.
    A packet is dropped, and the counter of the first reason that applies incremented, when:
    its destination is off the mesh (:data:`DropReason.OFF_MESH`), its opcode is not an
    :class:`~tilemesh.layouts.Opcode` (``BAD_OPCODE``), its length exceeds
    ``cfg.noc.max_packet_flits`` (``BAD_LENGTH``), or ``last`` comes before or after flit number
    ``length`` (``BAD_TAIL``). A dropped packet is consumed up to its ``last`` flit; a packet
    without a ``last`` flit keeps the checker discarding. Nothing of a dropped packet leaves.

    Well-formed packets leave in order and unchanged, each once its tail has arrived
    (store and forward: a packet of ``n`` flits costs ``n`` cycles of latency here). The buffer
    holds :func:`ingress_depth` flits, so a stream of longest packets flows at one flit per cycle.

    Parameters
    ----------
    cfg : MeshConfig
    counter_bits : int
        Width of each saturating drop counter.

    Members
    -------
    inp : ``In(stream.Signature(flit_layout(cfg)))``
        Packets from a tile's network interface or from the host. ``inp.ready`` does not depend
        on ``inp.valid`` or the payload.
    out : ``Out(stream.Signature(flit_layout(cfg)))``
        Well-formed packets, to a router input.
    drops : ``Out(drop_layout(counter_bits))``
        Packets dropped, per reason; saturating.
    """

    def __init__(self, cfg, *, counter_bits=COUNTER_BITS):
        self._cfg = cfg
        flit = flit_layout(cfg)
        super().__init__({
            "inp": In(stream.Signature(flit)),
            "out": Out(stream.Signature(flit)),
            "drops": Out(drop_layout(counter_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        max_len = cfg.noc.max_packet_flits

        m.submodules.buffer = buf = CommitFifo(flit_layout(cfg), ingress_depth(cfg))
        wiring.connect(m, buf.r, wiring.flipped(self.out))

        flit = self.inp.payload
        hdr = header_layout(cfg)(flit.data)
        opcode_ok = Signal()
        m.d.comb += opcode_ok.eq(0)
        for value in sorted(Opcode.valid_values()):
            with m.If(hdr.opcode.as_value() == value):
                m.d.comb += opcode_ok.eq(1)

        # The checks of a header, in the order their reasons are counted.
        reasons = {
            DropReason.OFF_MESH: ~destination_ok(cfg, hdr.dst_x, hdr.dst_y),
            DropReason.BAD_OPCODE: ~opcode_ok,
            DropReason.BAD_LENGTH: hdr.length > max_len,
            DropReason.BAD_TAIL: flit.last != (hdr.length == 0),
        }
        count = {r: Signal(name=f"count_{r.value}") for r in DropReason}
        for reason in DropReason:
            saturating_add(m, self.drops[reason.value], count[reason])

        header_bad = Signal()
        m.d.comb += header_bad.eq(0)
        for cond in reasons.values():
            with m.If(cond):
                m.d.comb += header_bad.eq(1)

        remaining = Signal(range(max_len + 1))  # payload flits still expected after this one
        fire = Signal()
        m.d.comb += [
            buf.w.payload.eq(flit),
            fire.eq(self.inp.valid & self.inp.ready),
        ]

        with m.FSM(name="ingress"):
            with m.State("HEADER"):
                m.d.comb += [
                    self.inp.ready.eq(buf.w.ready),
                    buf.w.valid.eq(self.inp.valid & ~header_bad),
                ]
                with m.If(fire):
                    with m.If(header_bad):
                        first = True
                        for reason, cond in reasons.items():
                            with (m.If(cond) if first else m.Elif(cond)):
                                m.d.comb += count[reason].eq(1)
                            first = False
                        with m.If(~flit.last):
                            m.next = "DISCARD"
                    with m.Elif(flit.last):
                        m.d.comb += buf.commit.eq(1)
                    with m.Else():
                        m.d.sync += remaining.eq(hdr.length)
                        m.next = "BODY"

            with m.State("BODY"):
                at_tail = Signal()
                m.d.comb += [
                    at_tail.eq(remaining == 1),
                    self.inp.ready.eq(buf.w.ready),
                    # A flit that proves the packet malformed is not written: the packet is
                    # rolled back in the same cycle.
                    buf.w.valid.eq(self.inp.valid & (flit.last == at_tail)),
                ]
                with m.If(fire):
                    m.d.sync += remaining.eq(remaining - 1)
                    with m.If(at_tail & flit.last):
                        m.d.comb += buf.commit.eq(1)
                        m.next = "HEADER"
                    with m.Elif(at_tail | flit.last):
                        m.d.comb += [
                            buf.rollback.eq(1),
                            count[DropReason.BAD_TAIL].eq(1),
                        ]
                        # Too short: the tail is here. Too long: discard up to the real tail.
                        with m.If(flit.last):
                            m.next = "HEADER"
                        with m.Else():
                            m.next = "DISCARD"

            with m.State("DISCARD"):
                m.d.comb += self.inp.ready.eq(1)
                with m.If(fire & flit.last):
                    m.next = "HEADER"
        return m
