"""One SRAM bank: a block RAM with a stream write port and a pipelined stream read port.

::

    write ────────────────────────► ┌────────┐
                                    │ Memory │ (lib.memory, synchronous read: block RAM)
    read_req ──► addr, en ────────► │        │ ── data ─┬──────────────► read_resp
                                    └────────┘          └─► skid ──┘

The memory's own output register is the read pipeline's only stage: while ``read_resp`` is not
taken, the read port is disabled so the word it holds stays put. A one-word skid register catches
that word when a new request is accepted in the same cycle, so ``read_req.ready`` is a register
(no combinational path from ``read_resp.ready``) and a stalled response costs no throughput.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..layouts import sram_read_req_layout, sram_read_resp_layout, sram_write_layout

__all__ = ["SramBank"]


class SramBank(wiring.Component):
    """A bank of ``depth`` words of ``width`` bits, mapped to block RAM.

    One write and one read can be accepted every cycle. Reads return in request order,
    one cycle after the request at the earliest, at full rate while ``read_resp`` is ready.
    Ordering: a write accepted in cycle *t* is seen by every read accepted after cycle *t*. A
    read accepted in the same cycle as a write to its address returns the new word
    (``transparent``, the default) or the old word (``transparent=False``). A response is the
    word at the time its read was accepted, however long it then waits.

    Block RAMs leave a same-cycle read and write of one address undefined (iCE40, ECP5), so
    Yosys adds logic to give either defined rule: a write-data register, an address comparator
    and an output mux for ``transparent`` (32 x 256: +33 FFs on iCE40), and also a one-cycle
    write delay for read-first (+74 FFs). Hence the default.

    Parameters
    ----------
    width : int
        Bits per word (1..1024).
    depth : int
        Words, a power of two (2..2**20): every address is a word.
    tag_bits : int
        Width of a ``tag`` carried from each request to its response (0, the default, for
        none); an arbiter in front of the bank uses it to route responses to clients.
    transparent : bool
        A read in the same cycle as a write to its address returns the new word (default
        True) or, if False, the old word.
    init : sequence of int
        Initial contents (the rest are zero).

    Members
    -------
    write : In(stream.Signature(sram_write_layout(width, depth)))
        ``{addr, data}``; ``ready`` is always 1.
    read_req : In(stream.Signature(sram_read_req_layout(depth, tag_bits)))
        ``{addr[, tag]}``.
    read_resp : Out(stream.Signature(sram_read_resp_layout(width, tag_bits)))
        ``{data[, tag]}``.

    Raises
    ------
    ValueError
        If a parameter is out of range; the message names it, its value and the range.
    """

    def __init__(self, width, depth, *, tag_bits=0, transparent=True, init=()):
        def bad(v):
            return not isinstance(v, int) or isinstance(v, bool)
        if bad(width) or not 1 <= width <= 1024:
            raise ValueError(f"SRAM width must be an integer in 1..1024, not {width!r}")
        if bad(depth) or not 2 <= depth <= 1 << 20 or depth & (depth - 1):
            raise ValueError(f"SRAM depth must be a power of two in 2..{1 << 20}, not {depth!r}")
        if bad(tag_bits) or not 0 <= tag_bits <= 32:
            raise ValueError(f"SRAM tag_bits must be an integer in 0..32, not {tag_bits!r}")
        init = list(init)
        if len(init) > depth:
            raise ValueError(f"SRAM init must have at most {depth} words, not {len(init)}")
        self.width, self.depth, self.tag_bits = width, depth, tag_bits
        self.transparent = bool(transparent)
        self.init = init
        super().__init__({
            "write": In(stream.Signature(sram_write_layout(width, depth))),
            "read_req": In(stream.Signature(sram_read_req_layout(depth, tag_bits))),
            "read_resp": Out(stream.Signature(sram_read_resp_layout(width, tag_bits))),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=self.width, depth=self.depth, init=self.init)
        wp = mem.write_port()
        rp = mem.read_port(transparent_for=(wp,) if self.transparent else ())

        m.d.comb += [
            self.write.ready.eq(1),
            wp.addr.eq(self.write.payload.addr),
            wp.data.eq(self.write.payload.data),
            wp.en.eq(self.write.valid),
        ]

        # Stage A: the read port's output register (valid = a_valid). Skid: an older word.
        a_valid = Signal()
        skid_valid = Signal()
        skid_data = Signal(self.width, reset_less=True)
        resp = self.read_resp
        take = resp.valid & resp.ready
        accept = self.read_req.valid & self.read_req.ready
        m.d.comb += [
            self.read_req.ready.eq(~skid_valid),
            rp.addr.eq(self.read_req.payload.addr),
            # Read only when accepting: otherwise the port holds the word stage A waits with.
            rp.en.eq(accept),
            resp.valid.eq(skid_valid | a_valid),
            resp.payload.data.eq(Mux(skid_valid, skid_data, rp.data)),
        ]

        with m.If(skid_valid):
            # The skid is older than stage A, so it goes first; no request is accepted meanwhile.
            with m.If(resp.ready):
                m.d.sync += skid_valid.eq(0)
        with m.Elif(accept):
            m.d.sync += a_valid.eq(1)
            with m.If(a_valid & ~resp.ready):
                # Stage A's word would be overwritten by the new read: park it in the skid.
                m.d.sync += [skid_valid.eq(1), skid_data.eq(rp.data)]
        with m.Elif(take):
            m.d.sync += a_valid.eq(0)

        if self.tag_bits:
            a_tag = Signal(self.tag_bits, reset_less=True)
            skid_tag = Signal(self.tag_bits, reset_less=True)
            with m.If(accept):
                m.d.sync += a_tag.eq(self.read_req.payload.tag)
                with m.If(a_valid & ~resp.ready):
                    m.d.sync += skid_tag.eq(a_tag)
            m.d.comb += resp.payload.tag.eq(Mux(skid_valid, skid_tag, a_tag))
        return m
