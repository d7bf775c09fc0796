"""The tile's SRAM: ``sram_banks`` banks shared by every client through a round-robin arbiter per
bank and per port (read, write).

::

    client i ── write ────► bank = addr // depth ─► [RR write arbiter b] ─► bank b write
             ── read_req ─► (place free in FIFO i?) ─► [RR read arbiter b] ─► bank b read_req
             ◄─ read_resp ── FIFO i ◄── word of bank b, one cycle after the grant ◄─┘

A read is granted only when its client's response FIFO has a place for the word (counting the
word still in flight), so no bank ever waits to hand over a word: every bank answers exactly one
cycle after a grant, the words of each client arrive in grant order whatever banks they come
from, and a client that holds ``read_resp`` back stops only its own reads.
"""

from types import SimpleNamespace

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from ..layouts import ADDR_BITS
from ..noc.arbiter import DEFAULT_ARBITER
from ..noc.fifo import Fifo
from .ports import sram_client_read_resp_layout, sram_client_signature
from .sram import SramBank

__all__ = ["SramArray"]


class SramArray(wiring.Component):
    """``cfg.tile.sram_banks`` banks of ``cfg.tile.sram_depth`` words, shared by named clients.

    Global word address ``a`` is row ``a % sram_depth`` of bank ``a // sram_depth``. Each bank
    accepts one read and one write per cycle; clients that want the same bank port in the same
    cycle are served round-robin (:data:`~tilemesh.noc.arbiter.DEFAULT_ARBITER`): a client that
    keeps requesting is granted before any other client is granted twice, so a bank conflict
    stalls, never corrupts, and every client makes progress.

    Ordering: a write accepted in cycle *t* is seen by reads accepted after *t* and, for the
    same word, by a read accepted in the same cycle (the banks are transparent). Responses
    return in request order per client, at the earliest two cycles after the request. A client
    may have ``read_slots`` reads outstanding (requested, response not yet taken); with 3 or more
    (default 4) an uncontended client streaming reads gets one word per cycle, and it may hold
    ``read_resp`` back for as long as it likes without stopping anyone else.

    Addresses at or beyond ``cfg.tile.sram_words`` (clients check them first) do not hang:
    such a write is accepted and dropped, such a read answers 0.

    Parameters
    ----------
    cfg : MeshConfig
    client_names : sequence of str
        One name per client; client ``i`` is ``clients[i]`` (the names label the response
        FIFOs in waveforms).
    read_slots : int
        Outstanding reads per client: the depth of its response FIFO (1..64).
    readers, writers : collection of str, optional
        Clients that issue reads / writes (default: all). The others' read (write) logic is not
        built: their ``read_req.ready`` (``write.ready``) stays 0.

    Members
    -------
    clients : ``In(sram_client_signature(cfg)).array(len(client_names))``
        ``read_req`` ``{addr}``, ``read_resp`` ``{data}``, ``write`` ``{addr, data}`` of each
        client; ``addr`` is a global word address (``ADDR_BITS`` wide).

    Raises
    ------
    ValueError
        If ``client_names`` is empty or has duplicates, ``read_slots`` is out of range, or
        ``readers`` / ``writers`` name an unknown client.
    """

    def __init__(self, cfg, client_names, *, read_slots=4, readers=None, writers=None):
        names = list(client_names)
        if not names or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
            raise ValueError(f"SRAM client names must be a non-empty sequence of distinct "
                             f"strings, not {client_names!r}")
        ok = isinstance(read_slots, int) and not isinstance(read_slots, bool)
        if not ok or not 1 <= read_slots <= 64:
            raise ValueError(f"SRAM read_slots must be an integer in 1..64, not {read_slots!r}")
        for what, chosen in (("readers", readers), ("writers", writers)):
            unknown = sorted(set(chosen or ()) - set(names))
            if unknown:
                raise ValueError(f"SRAM {what} must name clients from {names!r}, "
                                 f"not {unknown!r}")
        self._cfg = cfg
        self._names = names
        self._slots = read_slots
        self._readers = set(names if readers is None else readers)
        self._writers = set(names if writers is None else writers)
        super().__init__({
            "clients": In(sram_client_signature(cfg)).array(len(names)),
        })

    @property
    def client_names(self):
        return tuple(self._names)

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        n_banks, depth = cfg.tile.sram_banks, cfg.tile.sram_depth
        width = cfg.word_bits
        names, slots = self._names, self._slots
        row_bits = (depth - 1).bit_length()
        words = cfg.tile.sram_words

        banks = []
        for b in range(n_banks):
            bank = SramBank(width, depth)
            m.submodules[f"bank{b}"] = bank
            banks.append(bank)
            # Every read has a reserved place in its client's FIFO: banks never wait, so each
            # answers exactly one cycle after a grant.
            m.d.comb += bank.read_resp.ready.eq(1)

        def bank_of(addr):
            return addr[row_bits:ADDR_BITS]

        # -- writes: per bank, round-robin over the clients addressing it -----------------------
        writers = [i for i, name in enumerate(names) if name in self._writers]
        if writers:
            w_ready = {i: [] for i in writers}
            for b, bank in enumerate(banks):
                arb = DEFAULT_ARBITER(len(writers))
                m.submodules[f"write_arbiter{b}"] = arb
                for j, i in enumerate(writers):
                    w = self.clients[i].write
                    m.d.comb += arb.requests[j].eq(
                        w.valid & (w.payload.addr < words) & (bank_of(w.payload.addr) == b))
                    w_ready[i].append(arb.grant[j])
                addr = Const(0, row_bits)
                wdata = Const(0, width)
                for j, i in enumerate(writers):
                    w = self.clients[i].write
                    addr = addr | (w.payload.addr[:row_bits] & arb.grant[j].replicate(row_bits))
                    wdata = wdata | (w.payload.data & arb.grant[j].replicate(width))
                m.d.comb += [
                    bank.write.valid.eq(arb.grant.any()),
                    bank.write.payload.addr.eq(addr),
                    bank.write.payload.data.eq(wdata),
                    arb.advance.eq(1),  # a bank write port is always ready
                ]
            for i in writers:
                w = self.clients[i].write
                # Out of range: accepted and dropped (clients check first; this only avoids a hang).
                m.d.comb += w.ready.eq((w.payload.addr >= words) | _any(w_ready[i]))

        # -- reads: per bank round-robin, then a response FIFO per client ----------------------
        readers = [i for i, name in enumerate(names) if name in self._readers]
        if not readers:
            return m

        clients = {}
        for i in readers:
            c = clients[i] = SimpleNamespace()
            name = names[i]
            # A read is accepted only with a place reserved for its word: the word in flight
            # (accepted in the last cycle) and the words in the FIFO count.
            c.fifo = Fifo(sram_client_read_resp_layout(cfg), slots)
            m.submodules[f"resp_{name}"] = c.fifo
            c.in_flight = Signal(name=f"read_{name}_in_flight")
            c.from_bank = Signal(range(n_banks), name=f"read_{name}_bank")
            c.out_of_range = Signal(name=f"read_{name}_oob")
            c.space = Signal(name=f"read_{name}_space")
            c.grants = []
            m.d.comb += c.space.eq(c.fifo.level + c.in_flight < slots)

        for b, bank in enumerate(banks):
            arb = DEFAULT_ARBITER(len(readers))
            m.submodules[f"read_arbiter{b}"] = arb
            addr = Const(0, row_bits)
            for j, i in enumerate(readers):
                q = self.clients[i].read_req
                m.d.comb += arb.requests[j].eq(
                    q.valid & clients[i].space & (q.payload.addr < words)
                    & (bank_of(q.payload.addr) == b))
                clients[i].grants.append(arb.grant[j])
                addr = addr | (q.payload.addr[:row_bits] & arb.grant[j].replicate(row_bits))
            m.d.comb += [
                bank.read_req.valid.eq(arb.grant.any()),
                bank.read_req.payload.addr.eq(addr),
                arb.advance.eq(1),  # read_req.ready is always 1 (read_resp is never held)
            ]

        for i in readers:
            q = self.clients[i].read_req
            c = clients[i]
            oob = q.valid & c.space & (q.payload.addr >= words)
            accept = _any(c.grants) | oob
            m.d.comb += q.ready.eq(accept)
            m.d.sync += [c.in_flight.eq(accept), c.out_of_range.eq(oob),
                         c.from_bank.eq(bank_of(q.payload.addr))]
            # A bank answers one cycle after its grant: the word in flight arrives now.
            word = Signal(width, name=f"read_{names[i]}_word")
            with m.Switch(c.from_bank):
                for b, bank in enumerate(banks):
                    with m.Case(b):
                        m.d.comb += word.eq(bank.read_resp.payload.data)
            m.d.comb += [
                c.fifo.w.valid.eq(c.in_flight),
                c.fifo.w.payload.data.eq(Mux(c.out_of_range, 0, word)),
            ]
            wiring.connect(m, c.fifo.r, wiring.flipped(self.clients[i].read_resp))
        return m


def _any(signals):
    out = Const(0, 1)
    for s in signals:
        out = out | s
    return out
