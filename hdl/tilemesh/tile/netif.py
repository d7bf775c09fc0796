"""The network interface (NI) of a tile: where packets leave and enter the tile.

::

    net_in ─► Fifo(2) ─► Receiver ─┬─► SRAM writes (client "ni_rx")          ┌─ CsrFile ─► control
                                   ├─► IMEM writes ─► controller             │   (TIMEOUT, counters,
                                   ├─► CSR writes / CONTROL ─────────────────┤    SEMn, CONTROL)
                                   ├─► SIGNAL ─► Semaphores ◄─ sem_dec (WAIT) │
                                   └─► READ_REQ queue ─► ReadResponder ◄──────┘ CSR reads
                                                          │   ▲ SRAM reads (client "ni_read")
    net_out ◄── PacketArbiter (round robin, one packet at a time) ◄──┤
                   ▲ dma.tx (DMA engine)   ▲ READ_RESP   ▲ NotifySender ◄─ error_notify

The receive path never waits on the transmit path (docs/tile-design.md §3, "Protocol deadlock"):
every packet is consumed into SRAM, IMEM, CSRs or semaphores, whose writers always make progress,
or, for READ_REQ, into a queue of ``read_queue_depth(cfg)`` entries (a READ_REQ finding it full
broke the one-outstanding-read rule: it is dropped and counted rather than stall the input).

Ordering: packets are applied in arrival order, and a READ_REQ reads the words when the
responder gets to it. A READ_REQ therefore sees every earlier WRITE to its words, and may also
see WRITEs that arrived after it while it waited in the queue (holding those back would make the
receive path wait for the transmit path): a requester that needs the old words waits for the
READ_RESP before overwriting them.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..layouts import (
    SEMAPHORES,
    ControlPayload,
    NotifyPayload,
    Opcode,
    Space,
    csr_map,
    flit_layout,
    header_layout,
    payload_flits,
    read_queue_depth,
    read_req_layout,
    tile_addr_layout,
)
from ..noc.arbiter import DEFAULT_ARBITER
from ..noc.fabric import status_layout
from ..noc.fifo import Fifo
from ..noc.routing import host_address
from .csr import CsrFile, csr_word_bits, csr_words, csr_write_layout
from .ports import (
    controller_status_layout,
    dma_ni_signature,
    imem_write_layout,
    sem_dec_layout,
    sem_overflow_layout,
    sem_value_layout,
    sram_client_signature,
    sram_client_write_layout,
)
from .semaphores import Semaphores, sem_inc_layout

__all__ = ["read_entry_layout", "PacketArbiter", "Receiver", "ReadResponder", "NotifySender",
           "NetworkInterface"]


def read_entry_layout(cfg):
    """A queued READ_REQ: the requester (``x``, ``y``), the first word to read (``space``,
    ``word``), where the answer goes (``reply_addr``) and how many words (``count``)."""
    ta = tile_addr_layout(cfg)
    return data.StructLayout({
        "x": unsigned(cfg.coord_bits), "y": unsigned(cfg.coord_bits),
        "space": Space, "word": ta["word"].shape,
        "reply_addr": unsigned(cfg.tile_addr_bits),
        "count": unsigned(cfg.noc.length_bits),
    })


def _space_words(cfg):
    """Mapped words of each space (the unmapped space 3 has none)."""
    return {Space.SRAM: cfg.tile.sram_words, Space.IMEM: cfg.imem_words,
            Space.CSR: csr_words(cfg)}


def _in_space(cfg, space, word):
    """``word`` addresses a mapped word of ``space``."""
    ok = Const(0, 1)
    for sp, words in _space_words(cfg).items():
        ok = ok | ((space == sp) & (word < words))
    return ok


def _word_counter(cfg):
    """A word address that can run past the end of its field without wrapping (a packet walks
    at most ``max_packet_flits`` words past its start)."""
    field = tile_addr_layout(cfg)["word"].shape.width
    return Signal(range((1 << field) + cfg.noc.max_packet_flits + 1))


class PacketArbiter(wiring.Component):
    """Round-robin between ``n`` packet streams, one whole packet at a time (wormhole).

    A source granted on its header keeps the output until its ``last`` flit has gone; then the
    next source with a packet is chosen (:data:`~tilemesh.noc.arbiter.DEFAULT_ARBITER`), so
    every source is served before any is served twice.

    Parameters
    ----------
    cfg : MeshConfig
    n : int
        Number of sources.

    Members
    -------
    inp : ``In(stream.Signature(flit_layout(cfg))).array(n)``
    out : ``Out(stream.Signature(flit_layout(cfg)))``
    """

    def __init__(self, cfg, n):
        self._n = n
        super().__init__({
            "inp": In(stream.Signature(flit_layout(cfg))).array(n),
            "out": Out(stream.Signature(flit_layout(cfg))),
        })

    def elaborate(self, platform):
        m = Module()
        n = self._n
        m.submodules.arbiter = arb = DEFAULT_ARBITER(n)
        busy = Signal()      # inside a packet: the output belongs to ``owner``
        owner = Signal(n)
        select = Signal(n)
        m.d.comb += [
            arb.requests.eq(Cat(*(s.valid for s in self.inp))),
            select.eq(Mux(busy, owner, arb.grant)),
        ]
        payload = Const(0, len(self.out.payload.as_value()))
        valid = Const(0, 1)
        for i, s in enumerate(self.inp):
            valid = valid | (select[i] & s.valid)
            payload = payload | (s.payload.as_value() & select[i].replicate(len(payload)))
            m.d.comb += s.ready.eq(select[i] & self.out.ready)
        m.d.comb += [self.out.valid.eq(valid), self.out.payload.eq(payload)]

        moved = self.out.valid & self.out.ready
        m.d.comb += arb.advance.eq(moved & ~busy)
        with m.If(moved):
            with m.If(self.out.payload.last):
                m.d.sync += busy.eq(0)
            with m.Elif(~busy):
                m.d.sync += [busy.eq(1), owner.eq(arb.grant)]
        return m


class Receiver(wiring.Component):
    """The NI's receive path: applies each packet from ``inp`` in arrival order.

    Checks (docs/tile-design.md §2-3): header ``addr`` bits above ``cfg.tile_addr_bits`` must be
    0; the length must fit the opcode (READ_REQ and CONTROL 1, SIGNAL 0 with a semaphore number
    below ``SEMAPHORES``, WRITE and READ_RESP at least 1); a READ_REQ's ``count`` must be in
    1..``max_packet_flits`` and find room in the queue; a READ_RESP must be awaited by the DMA
    engine (``resp_awaited``); NOTIFY packets are for the host. A packet failing a check is
    consumed up to its ``last`` flit and dropped. WRITE / READ_RESP words are checked one by
    one: a word beyond its space (or in space 3), an IMEM word while ``imem_writable`` is 0, or
    a CSR word the CSR file refuses, is dropped and the rest are written. Every packet with a
    rejection pulses ``rx_error`` once, on its last flit. The path never waits for the network
    output; it waits only for SRAM (round-robin: it gets through), the controller's IMEM and
    CONTROL ports, and the CSR file.

    Members
    -------
    inp : ``In(stream.Signature(flit_layout(cfg)))``
    sram : ``Out(stream.Signature(sram_client_write_layout(cfg)))``
    imem : ``Out(stream.Signature(imem_write_layout(cfg)))``
    imem_writable : ``In(1)``
    csr : ``Out(stream.Signature(csr_write_layout(cfg)))``
    csr_error : ``In(1)``
        The CSR file refuses the write it is offered.
    sem_inc : ``Out(stream.Signature(sem_inc_layout()))``
        SIGNAL packets (the semaphores are always ready).
    read_req : ``Out(stream.Signature(read_entry_layout(cfg)))``
        The READ_REQ queue's output.
    resp_awaited : ``In(1)``
    resp_word, resp_done : ``Out(1)``
        A READ_RESP word was consumed (written or, out of range, dropped) / its last one was.
    rx_error : ``Out(1)``
        A rejected packet ends in this cycle.
    rx_word : ``Out(1)``
        A WRITE / READ_RESP word was written in this cycle.
    """

    def __init__(self, cfg):
        self._cfg = cfg
        super().__init__({
            "inp": In(stream.Signature(flit_layout(cfg))),
            "sram": Out(stream.Signature(sram_client_write_layout(cfg))),
            "imem": Out(stream.Signature(imem_write_layout(cfg))),
            "imem_writable": In(1),
            "csr": Out(stream.Signature(csr_write_layout(cfg))),
            "csr_error": In(1),
            "sem_inc": Out(stream.Signature(sem_inc_layout())),
            "read_req": Out(stream.Signature(read_entry_layout(cfg))),
            "resp_awaited": In(1),
            "resp_word": Out(1),
            "resp_done": Out(1),
            "rx_error": Out(1),
            "rx_word": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        inp = self.inp
        flit = inp.payload
        head = header_layout(cfg)(flit.data)
        addr_layout = tile_addr_layout(cfg)
        taddr = addr_layout(head.addr[:cfg.tile_addr_bits])
        max_len = cfg.noc.max_packet_flits

        m.submodules.queue = queue = Fifo(read_entry_layout(cfg), read_queue_depth(cfg))
        wiring.connect(m, queue.r, wiring.flipped(self.read_req))

        # -- header checks -----------------------------------------------------------------------
        high_ok = (head.addr[cfg.tile_addr_bits:] == 0) if len(head.addr) > cfg.tile_addr_bits \
            else Const(1, 1)
        op = head.opcode
        is_signal = op == Opcode.SIGNAL
        fits = Signal()
        with m.Switch(op):
            with m.Case(Opcode.WRITE, Opcode.READ_RESP):
                m.d.comb += fits.eq(head.length >= 1)
            with m.Case(Opcode.READ_REQ, Opcode.CONTROL):
                m.d.comb += fits.eq(head.length == 1)
            with m.Case(Opcode.SIGNAL):
                m.d.comb += fits.eq((head.length == 0) & (head.addr < SEMAPHORES))
            # NOTIFY (host only) and invalid opcodes never fit
        header_ok = Signal()
        m.d.comb += header_ok.eq(high_ok & fits
                                 & ((op != Opcode.READ_RESP) | self.resp_awaited))

        # -- packet state ----------------------------------------------------------------------
        space = Signal(Space)
        word = _word_counter(cfg)
        is_resp = Signal()
        failed = Signal()                   # some rejection seen in this packet so far
        src_x = Signal(cfg.coord_bits)
        src_y = Signal(cfg.coord_bits)
        req_space = Signal(Space)
        req_word = Signal(addr_layout["word"].shape)
        moved = inp.valid & inp.ready
        bad_now = Signal()                  # a rejection in this flit
        with m.If(moved & flit.last):
            m.d.comb += self.rx_error.eq(failed | bad_now)
            m.d.sync += failed.eq(0)
        with m.Elif(moved & bad_now):
            m.d.sync += failed.eq(1)

        csr_map_ = csr_map(cfg)
        with m.FSM(name="rx"):
            with m.State("HEADER"):
                m.d.comb += inp.ready.eq(1)
                m.d.sync += [space.eq(taddr.space), word.eq(taddr.word),
                             is_resp.eq(op == Opcode.READ_RESP),
                             src_x.eq(head.src_x), src_y.eq(head.src_y),
                             req_space.eq(taddr.space), req_word.eq(taddr.word)]
                with m.If(flit.last):
                    # a packet of its header only: a good one is a SIGNAL
                    m.d.comb += [
                        self.sem_inc.valid.eq(inp.valid & is_signal & header_ok),
                        bad_now.eq(~(is_signal & header_ok)),
                    ]
                with m.Elif(moved):
                    m.d.comb += bad_now.eq(~header_ok | is_signal)
                    with m.If(~header_ok | is_signal):
                        m.next = "SKIP"
                    with m.Elif((op == Opcode.WRITE) | (op == Opcode.READ_RESP)):
                        m.next = "WORDS"
                    with m.Elif(op == Opcode.READ_REQ):
                        m.next = "READ_REQ"
                    with m.Else():
                        m.next = "CONTROL"

            with m.State("WORDS"):
                in_range = _in_space(cfg, space, word)
                with m.If(in_range & (space == Space.SRAM)):
                    m.d.comb += [self.sram.valid.eq(inp.valid), inp.ready.eq(self.sram.ready),
                                 self.rx_word.eq(moved)]
                with m.Elif(in_range & (space == Space.IMEM) & self.imem_writable):
                    m.d.comb += [self.imem.valid.eq(inp.valid), inp.ready.eq(self.imem.ready),
                                 self.rx_word.eq(moved)]
                with m.Elif(in_range & (space == Space.CSR)):
                    m.d.comb += [self.csr.valid.eq(inp.valid), inp.ready.eq(self.csr.ready),
                                 self.csr.payload.word.eq(word),
                                 bad_now.eq(self.csr_error),
                                 self.rx_word.eq(moved & ~self.csr_error)]
                with m.Else():
                    m.d.comb += [inp.ready.eq(1), bad_now.eq(1)]
                m.d.comb += [
                    self.resp_word.eq(moved & is_resp),
                    self.resp_done.eq(moved & is_resp & flit.last),
                ]
                with m.If(moved):
                    m.d.sync += word.eq(word + 1)
                    with m.If(flit.last):
                        m.next = "HEADER"

            with m.State("READ_REQ"):
                req = read_req_layout(cfg)(flit.data[:read_req_layout(cfg).size])
                count_ok = (req.count >= 1) & (req.count <= max_len)
                m.d.comb += [
                    inp.ready.eq(1),
                    queue.w.valid.eq(inp.valid & count_ok & flit.last & queue.w.ready),
                    queue.w.payload.x.eq(src_x),
                    queue.w.payload.y.eq(src_y),
                    queue.w.payload.space.eq(req_space),
                    queue.w.payload.word.eq(req_word),
                    queue.w.payload.reply_addr.eq(req.reply_addr),
                    queue.w.payload.count.eq(req.count),
                    bad_now.eq(~count_ok | ~queue.w.ready | ~flit.last),
                ]
                with m.If(moved):
                    m.next = "HEADER"
                    with m.If(~flit.last):
                        m.next = "SKIP"

            with m.State("CONTROL"):
                m.d.comb += [
                    self.csr.valid.eq(inp.valid),
                    self.csr.payload.word.eq(csr_map_["CONTROL"].word),
                    inp.ready.eq(self.csr.ready),
                    bad_now.eq(self.csr_error | ~flit.last),
                ]
                with m.If(moved):
                    m.next = "HEADER"
                    with m.If(~flit.last):
                        m.next = "SKIP"

            with m.State("SKIP"):
                # failed is set: the packet is counted on its last flit
                m.d.comb += inp.ready.eq(1)
                with m.If(moved & flit.last):
                    m.next = "HEADER"

        m.d.comb += [
            self.sram.payload.addr.eq(word),
            self.sram.payload.data.eq(flit.data),
            self.imem.payload.addr.eq(word),
            self.imem.payload.data.eq(flit.data),
            self.csr.payload.data.eq(flit.data),
            self.sem_inc.payload.sem.eq(head.addr),
        ]
        return m


class ReadResponder(wiring.Component):
    """Answers queued READ_REQs of tile (``x``, ``y``) with READ_RESP packets.

    For each entry: a header to the requester with ``length = count`` and ``addr =
    reply_addr``, then ``count`` words read from ``space``/``word`` onwards: SRAM words through
    an SRAM client (pipelined: uncontended, the header and the words leave at one flit per
    cycle), CSR words from the CSR file
    (snapshot rule there). IMEM words (the controller owns the instruction memory and its only
    read port), words beyond their space and space 3 read as 0, and the request pulses
    ``rx_error`` once.

    Members
    -------
    x, y : ``In(unsigned(cfg.coord_bits))``
        This tile's coordinates (``src`` of the READ_RESP packets).
    req : ``In(stream.Signature(read_entry_layout(cfg)))``
    out : ``Out(stream.Signature(flit_layout(cfg)))``
    sram : ``Out(sram_client_signature(cfg))``
        Reads only (``write`` stays idle).
    csr_word : ``Out(csr_word_bits(cfg))``
    csr_en : ``Out(1)``
    csr_data : ``In(cfg.word_bits)``
    rx_error : ``Out(1)``
    """

    ORDER_DEPTH = 4  # words in flight: covers the SRAM array's 2-cycle latency at full rate

    def __init__(self, cfg):
        self._cfg = cfg
        super().__init__({
            "x": In(unsigned(cfg.coord_bits)),
            "y": In(unsigned(cfg.coord_bits)),
            "req": In(stream.Signature(read_entry_layout(cfg))),
            "out": Out(stream.Signature(flit_layout(cfg))),
            "sram": Out(sram_client_signature(cfg)),
            "csr_word": Out(csr_word_bits(cfg)),
            "csr_en": Out(1),
            "csr_data": In(cfg.word_bits),
            "rx_error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        w = cfg.word_bits
        # Flits in request order: words from SRAM (the data comes from the SRAM client) or given
        # here (header, CSR words, zeros). An SRAM word may carry its packet's header in
        # ``data`` (``head``): the header then goes out while the word is still being read, so
        # a READ_RESP of SRAM words leaves without a bubble after its header.
        order_layout = data.StructLayout({"sram": 1, "head": 1, "data": unsigned(w), "last": 1})
        m.submodules.order = order = Fifo(order_layout, self.ORDER_DEPTH)

        entry = self.req.payload
        space = Signal(Space)
        word = _word_counter(cfg)
        left = Signal(range(cfg.noc.max_packet_flits + 1))
        failed = Signal()
        first = Signal()            # the next word is the first of its packet
        header = Signal(header_layout(cfg))
        m.d.comb += [
            header.dst_x.eq(entry.x), header.dst_y.eq(entry.y),
            header.src_x.eq(self.x), header.src_y.eq(self.y),
            header.opcode.eq(Opcode.READ_RESP),
            header.length.eq(entry.count),
            header.addr.eq(entry.reply_addr),
        ]
        saved_header = Signal(w)
        last = left == 1
        m.d.comb += [self.csr_word.eq(word), self.sram.read_req.payload.addr.eq(word)]

        with m.FSM(name="responder"):
            with m.State("IDLE"):
                sram_first = _in_space(cfg, entry.space, entry.word) & (entry.space == Space.SRAM)
                with m.If(sram_first):
                    m.d.comb += self.req.ready.eq(1)
                with m.Else():
                    m.d.comb += [
                        order.w.valid.eq(self.req.valid),
                        order.w.payload.data.eq(header.as_value()),
                        self.req.ready.eq(order.w.ready),
                    ]
                with m.If(self.req.valid & self.req.ready):
                    m.d.sync += [space.eq(entry.space), word.eq(entry.word),
                                 left.eq(entry.count), failed.eq(0), first.eq(sram_first),
                                 saved_header.eq(header.as_value())]
                    m.next = "WORDS"
            with m.State("WORDS"):
                in_range = _in_space(cfg, space, word)
                pushed = order.w.valid & order.w.ready
                bad = Signal()
                m.d.comb += order.w.payload.last.eq(last)
                with m.If(in_range & (space == Space.SRAM)):
                    m.d.comb += [
                        self.sram.read_req.valid.eq(order.w.ready),
                        order.w.valid.eq(self.sram.read_req.ready),
                        order.w.payload.sram.eq(1),
                        order.w.payload.head.eq(first),
                        order.w.payload.data.eq(saved_header),
                    ]
                with m.Elif(in_range & (space == Space.CSR)):
                    m.d.comb += [
                        order.w.valid.eq(1),
                        order.w.payload.data.eq(self.csr_data),
                        self.csr_en.eq(pushed),
                    ]
                with m.Else():
                    m.d.comb += [order.w.valid.eq(1), bad.eq(1)]
                with m.If(pushed):
                    m.d.sync += [word.eq(word + 1), left.eq(left - 1), failed.eq(failed | bad),
                                 first.eq(0)]
                    with m.If(last):
                        m.d.comb += self.rx_error.eq(failed | bad)
                        m.next = "IDLE"

        head = order.r.payload
        resp = self.sram.read_resp
        header_sent = Signal()      # the header carried by the head entry has gone
        header_now = Signal()
        m.d.comb += [
            header_now.eq(head.head & ~header_sent),
            self.out.valid.eq(order.r.valid & (header_now | ~head.sram | resp.valid)),
            self.out.payload.data.eq(Mux(head.sram & ~header_now, resp.payload.data, head.data)),
            self.out.payload.last.eq(head.last & ~header_now),
            order.r.ready.eq(self.out.valid & self.out.ready & ~header_now),
            resp.ready.eq(order.r.ready & head.sram),
        ]
        with m.If(self.out.valid & self.out.ready):
            m.d.sync += header_sent.eq(header_now)
        return m


class NotifySender(wiring.Component):
    """Turns the controller's error notifications into NOTIFY packets for the host, from tile
    (``x``, ``y``): a header (``addr`` 0, ``length = payload_flits(NotifyPayload, cfg)``), then
    the 64-bit :class:`~tilemesh.layouts.NotifyPayload`, low bits first. The notification is
    taken when the packet's last flit has gone.

    Members
    -------
    x, y : ``In(unsigned(cfg.coord_bits))``
        This tile's coordinates (``src`` of the NOTIFY packets).
    notify : ``In(stream.Signature(NotifyPayload))``
    out : ``Out(stream.Signature(flit_layout(cfg)))``
    """

    def __init__(self, cfg):
        self._cfg = cfg
        super().__init__({
            "x": In(unsigned(cfg.coord_bits)),
            "y": In(unsigned(cfg.coord_bits)),
            "notify": In(stream.Signature(NotifyPayload)),
            "out": Out(stream.Signature(flit_layout(cfg))),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        w = cfg.word_bits
        n = payload_flits(NotifyPayload, cfg)
        hx, hy = host_address(cfg)
        header = Signal(header_layout(cfg))
        m.d.comb += [
            header.eq(header_layout(cfg).const({
                "dst_x": hx, "dst_y": hy, "src_x": 0, "src_y": 0,
                "opcode": Opcode.NOTIFY, "length": n, "addr": 0})),
            header.src_x.eq(self.x),
            header.src_y.eq(self.y),
        ]
        bits = self.notify.payload.as_value()
        k = Signal(range(n + 1))    # 0: header, i: payload flit i - 1
        with m.Switch(k):
            with m.Case(0):
                m.d.comb += self.out.payload.data.eq(header.as_value())
            for i in range(n):
                with m.Case(i + 1):
                    m.d.comb += self.out.payload.data.eq(bits[i * w:(i + 1) * w])
        moved = self.out.valid & self.out.ready
        m.d.comb += [
            self.out.valid.eq(self.notify.valid),
            self.out.payload.last.eq(k == n),
            self.notify.ready.eq(moved & (k == n)),
        ]
        with m.If(moved):
            m.d.sync += k.eq(Mux(k == n, 0, k + 1))
        return m


class NetworkInterface(wiring.Component):
    """The network interface of tile (``x``, ``y``): receive path, READ_REQ queue and
    responder, transmit arbiter, semaphores and CSRs (module docstring for the picture).

    Transmit: the DMA engine's packets, READ_RESP packets and error NOTIFY packets share
    ``net_out`` round-robin, a whole packet at a time. TX_WORDS counts the payload flits of
    WRITE and READ_RESP packets sent; RX_WORDS the words written by WRITE / READ_RESP packets.
    A RESET (CONTROL packet or CONTROL write) clears the semaphores and the NI's counters; the
    READ_REQ queue is kept (its requesters wait for the answers). A SIGNAL or a ``SEMn`` write
    shows in ``sem_value`` two cycles after its flit left ``net_in``'s buffer, a ``sem_dec`` in
    the next cycle.

    Parameters
    ----------
    cfg : MeshConfig

    Members
    -------
    x, y : ``In(unsigned(cfg.coord_bits))``
        This tile's coordinates (source of the packets it sends, TILE_ID); inputs rather than
        parameters, so one Verilog module serves every tile of a mesh.
    net_in : ``In(stream.Signature(flit_layout(cfg)))``
        From the router's Local output.
    net_out : ``Out(stream.Signature(flit_layout(cfg)))``
        Into the router's Local input.
    sram_rx : ``Out(sram_client_signature(cfg))``
        SRAM client of the receive path (writes only).
    sram_read : ``Out(sram_client_signature(cfg))``
        SRAM client of the READ_REQ responder (reads only).
    dma : ``In(dma_ni_signature(cfg))``
        ``tx`` packets from the DMA engine, ``resp_word`` / ``resp_done`` to it,
        ``resp_awaited`` from it.
    control : ``Out(stream.Signature(ControlPayload))``
        START / RESET commands to the controller.
    control_refused : ``In(1)``
        Pulse: the controller ignored a START (counted in RX_ERRORS).
    imem_write : ``Out(stream.Signature(imem_write_layout(cfg)))``
        Instruction memory writes; offered only while ``imem_writable``.
    imem_writable : ``In(1)``
    sem_value : ``Out(sem_value_layout())``
    sem_dec : ``In(stream.Signature(sem_dec_layout()))``
        Always ready.
    sem_enough : ``Out(1)``
        Semaphore ``sem_dec.payload.sem`` holds at least ``sem_dec.payload.count``
        (combinational, whatever ``sem_dec.valid``): WAIT's test.
    sem_overflow : ``Out(stream.Signature(sem_overflow_layout()))``
    status : ``In(controller_status_layout(cfg))``
    timeout : ``Out(32)``
        The TIMEOUT register.
    error_notify : ``In(stream.Signature(NotifyPayload))``
        ERROR notifications from the controller, sent to the host.
    noc_status : ``In(status_layout())``
        This tile's NoC drop counters (shown in the DROP_* registers).
    """

    def __init__(self, cfg):
        self._cfg = cfg
        super().__init__({
            "x": In(unsigned(cfg.coord_bits)),
            "y": In(unsigned(cfg.coord_bits)),
            "net_in": In(stream.Signature(flit_layout(cfg))),
            "net_out": Out(stream.Signature(flit_layout(cfg))),
            "sram_rx": Out(sram_client_signature(cfg)),
            "sram_read": Out(sram_client_signature(cfg)),
            "dma": In(dma_ni_signature(cfg)),
            "control": Out(stream.Signature(ControlPayload)),
            "control_refused": In(1),
            "imem_write": Out(stream.Signature(imem_write_layout(cfg))),
            "imem_writable": In(1),
            "sem_value": Out(sem_value_layout()),
            "sem_dec": In(stream.Signature(sem_dec_layout())),
            "sem_enough": Out(1),
            "sem_overflow": Out(stream.Signature(sem_overflow_layout())),
            "status": In(controller_status_layout(cfg)),
            "timeout": Out(32),
            "error_notify": In(stream.Signature(NotifyPayload)),
            "noc_status": In(status_layout()),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg

        # A register stage on the way in: net_in.ready is a flip-flop, not the SRAM arbiter.
        m.submodules.inbuf = inbuf = Fifo(flit_layout(cfg), 2)
        m.submodules.rx = rx = Receiver(cfg)
        m.submodules.responder = resp = ReadResponder(cfg)
        m.submodules.notifier = notifier = NotifySender(cfg)
        m.submodules.tx = tx = PacketArbiter(cfg, 3)
        m.submodules.csr = csr = CsrFile(cfg)
        m.submodules.sems = sems = Semaphores()
        for block in (resp, notifier, csr):
            m.d.comb += [block.x.eq(self.x), block.y.eq(self.y)]

        wiring.connect(m, wiring.flipped(self.net_in), inbuf.w)
        wiring.connect(m, inbuf.r, rx.inp)
        wiring.connect(m, rx.sram, wiring.flipped(self.sram_rx.write))
        wiring.connect(m, rx.imem, wiring.flipped(self.imem_write))
        wiring.connect(m, rx.csr, csr.write)
        wiring.connect(m, rx.sem_inc, sems.inc)
        wiring.connect(m, rx.read_req, resp.req)
        m.d.comb += [
            rx.imem_writable.eq(self.imem_writable),
            rx.csr_error.eq(csr.write_error),
            rx.resp_awaited.eq(self.dma.resp_awaited),
            self.dma.resp_word.eq(rx.resp_word),
            self.dma.resp_done.eq(rx.resp_done),
            # the receive path never reads SRAM
            self.sram_rx.read_req.valid.eq(0),
            self.sram_rx.read_resp.ready.eq(0),
        ]

        wiring.connect(m, resp.sram.read_req, wiring.flipped(self.sram_read.read_req))
        wiring.connect(m, wiring.flipped(self.sram_read.read_resp), resp.sram.read_resp)
        m.d.comb += [
            self.sram_read.write.valid.eq(0),
            csr.read_word.eq(resp.csr_word),
            csr.read_en.eq(resp.csr_en),
            resp.csr_data.eq(csr.read_data),
        ]

        wiring.connect(m, wiring.flipped(self.error_notify), notifier.notify)
        wiring.connect(m, wiring.flipped(self.dma.tx), tx.inp[0])
        wiring.connect(m, resp.out, tx.inp[1])
        wiring.connect(m, notifier.out, tx.inp[2])
        wiring.connect(m, tx.out, wiring.flipped(self.net_out))

        wiring.connect(m, csr.control, wiring.flipped(self.control))
        wiring.connect(m, csr.sem_set, sems.set)
        wiring.connect(m, wiring.flipped(self.sem_dec), sems.dec)
        wiring.connect(m, sems.overflow, wiring.flipped(self.sem_overflow))
        m.d.comb += [
            sems.clear.eq(csr.reset),
            self.sem_value.eq(sems.value),
            self.sem_enough.eq(sems.enough),
            csr.sem_value.eq(sems.value),
            csr.control_refused.eq(self.control_refused),
            csr.status.eq(self.status),
            csr.noc_status.eq(self.noc_status),
            self.timeout.eq(csr.timeout),
            csr.rx_errors.eq(rx.rx_error + resp.rx_error),
            csr.rx_word.eq(rx.rx_word),
        ]

        # TX_WORDS: payload flits of WRITE and READ_RESP packets leaving the tile.
        out = self.net_out
        in_packet = Signal()
        counting = Signal()
        head = header_layout(cfg)(out.payload.data)
        with m.If(out.valid & out.ready):
            m.d.sync += in_packet.eq(~out.payload.last)
            with m.If(~in_packet):
                m.d.sync += counting.eq((head.opcode == Opcode.WRITE)
                                        | (head.opcode == Opcode.READ_RESP))
        m.d.comb += csr.tx_word.eq(out.valid & out.ready & in_packet & counting)
        return m
