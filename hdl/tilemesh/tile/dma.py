"""The DMA engine: moves blocks between this tile's SRAM and other tiles (or the host) as packets.

::

    cmd (from the controller's DMA queue)
      │   dma.write: read walker ── read_req ──► SRAM ── read_resp ──┐
      ▼                                                              ▼
    ┌──────────┐  header ┌──────────────────────────────────────────────┐
    │ sequencer├────────►│ tx: WRITE packets (<= max_packet_flits words │──► NI transmit
    └──────────┘         │ each, rows never merged), READ_REQ, SIGNAL,  │
      ▲ resp_word/done   │ NOTIFY                                       │
      └──── NI ◄─────────┴──────────────────────────────────────────────┘

* ``dma.write``: every row of the ``rows`` x ``cols`` block is cut into WRITE packets of at most
  ``max_packet_flits`` words; a read walker streams the words from SRAM ahead of the packet it
  belongs to (up to ``read_ahead`` outstanding). After the last packet, the SIGNAL packet (if
  ``signal``) goes to the same destination: XY routes keep order, so it lands after the data.
* ``dma.read``: per row and per chunk of at most ``max_packet_flits`` words a READ_REQ goes to the
  remote tile; its READ_RESP is written into SRAM by the NI, which pulses ``resp_word`` per word
  and ``resp_done`` with the tail. Only one READ_REQ is outstanding at a time. The local
  semaphore is bumped by **sending a SIGNAL packet to this tile itself** through the network
  (XY routing turns it straight back at the local router): no extra port into the semaphores,
  and the NI applies it after the READ_RESP words it has already written.
* ``signal`` and ``notify``: one packet each (NOTIFY of kind PROGRAM, with the instruction's pc).

Packets for the host carry :func:`~tilemesh.noc.routing.host_address` as destination.

**Abort** (RESET): a packet whose header has been offered is always finished (a half packet
would hold the NI's transmit arbiter and poison the ingress checker), with the words it was
meant to carry; then the engine stops, drains SRAM reads it had issued ahead, forgets an awaited
READ_RESP (``resp_awaited`` drops, so the NI drops and counts it) and is idle: within
``max_packet_flits + read_ahead`` cycles or so when the network accepts.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import ConfigError, bits_for
from ..layouts import (
    ADDR_BITS,
    PC_BITS,
    InstrArgs,
    InstrOp,
    NotifyKind,
    NotifyPayload,
    Opcode,
    Space,
    header_layout,
    payload_flits,
    read_req_layout,
    tile_addr_layout,
)
from ..noc.routing import host_address
from .ports import dma_ni_signature, sram_client_signature

__all__ = ["dma_command_layout", "DmaEngine"]


def dma_command_layout():
    """A command of the DMA queue: the :func:`~tilemesh.tile.ports.unit_command_layout` fields
    (``op``: DMA_WRITE, DMA_READ, SIGNAL or NOTIFY; ``args`` with address registers resolved)
    and the instruction's ``pc`` (a NOTIFY's payload carries it)."""
    return data.StructLayout({"op": InstrOp, "args": InstrArgs, "pc": unsigned(PC_BITS)})


def _pack(layout, **fields):
    """The bits of ``layout`` with every field given (a value, an int or an enum member) as
    one expression, fields in offset order (no gaps in these layouts)."""
    layout = data.Layout.cast(layout)
    parts, offset = [], 0
    for name, field in sorted(layout, key=lambda item: item[1].offset):
        assert field.offset == offset, "a layout with gaps"
        width = Shape.cast(field.shape).width
        value = fields[name]
        if isinstance(value, enum.Enum):
            value = value.value
        if isinstance(value, int):
            parts.append(Const(value, width))
        else:
            value = Value.cast(value).as_unsigned()
            parts.append(value[:width] if len(value) >= width
                         else Cat(value, Const(0, width - len(value))))
        offset += width
    assert offset == layout.size
    return Cat(*parts)


class _State(enum.Enum, shape=4):
    IDLE = 0
    WRITE_HDR = 1     # header of a WRITE packet offered
    WRITE_DATA = 2    # its payload, straight from SRAM read responses
    READ_HDR = 3      # header of a READ_REQ
    READ_PAY = 4      # its payload (read_req_layout)
    READ_WAIT = 5     # awaiting the READ_RESP (resp_done)
    SIGNAL = 6        # a SIGNAL packet (header only)
    NOTIFY_HDR = 7
    NOTIFY_PAY = 8
    DRAIN = 9         # abort: dropping SRAM words read ahead


class DmaEngine(wiring.Component):
    """DMA engine of tile (``x``, ``y``): executes DMA_WRITE, DMA_READ, SIGNAL and NOTIFY commands
    one after the other (docs/tile-design.md §6).

    Parameters
    ----------
    cfg : MeshConfig
    read_ahead : int
        SRAM words a ``dma.write`` may have requested ahead of the packet being sent (>= 1; 4
        hides the SRAM array's latency at one word per cycle).

    Members
    -------
    x, y : ``In(unsigned(cfg.coord_bits))``
        This tile's column and row (the ``src`` of every packet, the target of a read's SIGNAL).
    cmd : ``In(stream.Signature(dma_command_layout()))``
        Commands; taken only when idle. Operands are trusted: the controller checked ranges and
        resolved address registers.
    sram : ``Out(sram_client_signature(cfg))``
        SRAM client (reads only; ``write`` is idle).
    ni : ``Out(dma_ni_signature(cfg))``
        Packets to the NI (``tx``), READ_RESP progress from it (``resp_word``, ``resp_done``),
        and ``resp_awaited`` while a READ_REQ of this engine is outstanding.
    busy : ``Out(1)``
        A command is being executed (registered; high from the cycle after ``cmd`` is taken until
        its last packet has left and, for a read, its last word has landed).
    abort : ``In(1)``
        Pulse: stop (see the module docstring). A command offered in the same cycle is not taken.
    start : ``In(1)``
        START pulse (no effect on the DMA engine).

    Raises
    ------
    ValueError
        If ``read_ahead`` is not a positive integer.
    ConfigError
        If ``cfg`` cannot build tiles (:meth:`~tilemesh.config.MeshConfig.check_tiles`).
    """

    def __init__(self, cfg, *, read_ahead=4):
        if not isinstance(read_ahead, int) or isinstance(read_ahead, bool) or read_ahead < 1:
            self._MustUse__used = True
            raise ValueError(f"DMA read_ahead must be a positive integer, not {read_ahead!r}")
        try:
            cfg.check_tiles()  # the NOTIFY packet must fit max_packet_flits
        except ConfigError:
            self._MustUse__used = True
            raise
        self._cfg, self._read_ahead = cfg, read_ahead
        super().__init__({
            "x": In(unsigned(cfg.coord_bits)),
            "y": In(unsigned(cfg.coord_bits)),
            "cmd": In(stream.Signature(dma_command_layout())),
            "sram": Out(sram_client_signature(cfg)),
            "ni": Out(dma_ni_signature(cfg)),
            "busy": Out(1),
            "abort": In(1),
            "start": In(1),
        })

    @property
    def cfg(self):
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        w = cfg.word_bits
        max_pkt = cfg.noc.max_packet_flits
        notify_flits = payload_flits(NotifyPayload, cfg)
        hx, hy = host_address(cfg)
        coord = unsigned(cfg.coord_bits)
        tx = self.ni.tx

        state = Signal(_State)
        cmd = Signal(dma_command_layout())
        aborting = Signal()
        m.d.comb += self.busy.eq(state != _State.IDLE)

        # -- block geometry, shared by write and read ----------------------------------------
        # (row, column of the next packet) walk; the read walker has its own (row, column).
        rows_left = Signal(unsigned(12))         # rows not finished, the current one included
        col = Signal(unsigned(12))               # first column of the current packet
        local_row = Signal(unsigned(ADDR_BITS))  # first word of the current row, local
        remote_row = Signal(unsigned(ADDR_BITS))
        pkt_len = Signal(range(max_pkt + 1))     # words in the current packet
        sent = Signal(range(max_pkt + 1))        # payload words of it sent so far
        dst_x = Signal(coord)
        dst_y = Signal(coord)

        dma = cmd.args.dma
        cols_left = Signal(unsigned(12))
        m.d.comb += cols_left.eq(dma.cols - col)
        chunk = Signal(range(max_pkt + 1))       # length of the packet starting at ``col``
        m.d.comb += chunk.eq(Mux(cols_left > max_pkt, max_pkt, cols_left))
        row_done = Signal()                      # the current packet ends its row
        m.d.comb += row_done.eq(col + pkt_len == dma.cols)
        block_done = Signal()                    # ... and the row is the last one
        m.d.comb += block_done.eq(row_done & (rows_left == 1))

        def next_packet():
            """Move (row, col) past the current packet; returns nothing (sync statements)."""
            with m.If(row_done):
                m.d.sync += [
                    col.eq(0),
                    rows_left.eq(rows_left - 1),
                    local_row.eq(local_row + dma.local_stride),
                    remote_row.eq(remote_row + dma.remote_stride),
                ]
            with m.Else():
                m.d.sync += col.eq(col + pkt_len)

        # -- the header of whatever is being sent ----------------------------------------------
        # Headers are built as whole expressions: a signal whose constant fields were driven
        # alone would become an ``always @*`` without inputs, which Icarus never runs (X).
        def header(opcode, length, addr):
            return _pack(header_layout(cfg), dst_x=dst_x, dst_y=dst_y, src_x=self.x,
                         src_y=self.y, opcode=opcode, length=length, addr=addr)

        def sram_addr(word):
            return _pack(tile_addr_layout(cfg), word=word, space=Space.SRAM)

        req = _pack(read_req_layout(cfg), reply_addr=sram_addr(local_row + col),
                    count=pkt_len)
        note = Signal(NotifyPayload)
        m.d.comb += [note.value.eq(cmd.args.notify.value), note.code.eq(cmd.args.notify.code),
                     note.pc.eq(cmd.pc), note.kind.eq(NotifyKind.PROGRAM)]
        note_part = Signal(range(max(notify_flits, 2)))

        # -- SRAM read walker (dma.write) ------------------------------------------------------
        # Streams the block's words in packet order; ``outstanding`` counts words requested and
        # not yet sent, so an abort knows how many to drop and never waits for a word that was
        # never requested.
        rd_on = Signal()
        rd_rows = Signal(unsigned(12))
        rd_col = Signal(unsigned(12))
        rd_row = Signal(unsigned(ADDR_BITS))
        outstanding = Signal(range(self._read_ahead + 1))
        words_left = Signal(range(max_pkt + 1))  # words the packet being sent still needs
        m.d.comb += words_left.eq(Mux(state == _State.WRITE_DATA, pkt_len - sent,
                                      Mux(state == _State.WRITE_HDR, chunk, 0)))
        # After an abort, only the words of the packet being sent may still be requested:
        # ``room`` of them, set from words_left - outstanding when the abort comes (the one
        # subtraction stays off the request path) and counted down per request. A word sent
        # lowers both terms, so only requests change it.
        room = Signal(range(max_pkt + 1))
        room_now = Signal(signed(bits_for(max_pkt) + 2))
        m.d.comb += room_now.eq(words_left - outstanding)
        may_read = Signal()
        m.d.comb += may_read.eq(rd_on & (outstanding < self._read_ahead)
                                & (~aborting | (room != 0)))
        m.d.comb += [
            self.sram.read_req.valid.eq(may_read),
            self.sram.read_req.payload.addr.eq(rd_row + rd_col),
            self.sram.write.valid.eq(0),
        ]
        req_fire = Signal()
        resp_fire = Signal()
        m.d.comb += req_fire.eq(self.sram.read_req.valid & self.sram.read_req.ready)
        with m.If(req_fire):
            with m.If(rd_col + 1 == dma.cols):
                m.d.sync += [rd_col.eq(0), rd_rows.eq(rd_rows - 1),
                             rd_row.eq(rd_row + dma.local_stride)]
                with m.If(rd_rows == 1):
                    m.d.sync += rd_on.eq(0)
            with m.Else():
                m.d.sync += rd_col.eq(rd_col + 1)
        m.d.sync += outstanding.eq(outstanding + req_fire - resp_fire)
        with m.If(self.abort & ~aborting):
            left = Mux(req_fire, room_now - 1, room_now)
            m.d.sync += room.eq(Mux(left < 0, 0, left))
        with m.Elif(req_fire & (room != 0)):
            m.d.sync += room.eq(room - 1)

        # -- sequencer --------------------------------------------------------------------------
        with m.If(self.abort & (state != _State.IDLE)):
            m.d.sync += aborting.eq(1)

        m.d.comb += self.cmd.ready.eq((state == _State.IDLE) & ~self.abort)
        c = self.cmd.payload
        with m.Switch(state):
            with m.Case(_State.IDLE):
                m.d.sync += aborting.eq(0)
                with m.If(self.cmd.valid & self.cmd.ready):
                    cd = c.args.dma
                    m.d.sync += [
                        cmd.eq(c),
                        col.eq(0), rows_left.eq(cd.rows),
                        local_row.eq(cd.local), remote_row.eq(cd.remote),
                        dst_x.eq(cd.x), dst_y.eq(cd.y),
                    ]
                    with m.Switch(c.op):
                        with m.Case(InstrOp.DMA_WRITE):
                            m.d.sync += [state.eq(_State.WRITE_HDR), rd_on.eq(1),
                                         rd_rows.eq(cd.rows), rd_col.eq(0),
                                         rd_row.eq(cd.local)]
                            with m.If(cd.host):
                                m.d.sync += [dst_x.eq(hx), dst_y.eq(hy)]
                        with m.Case(InstrOp.DMA_READ):
                            m.d.sync += state.eq(_State.READ_HDR)
                        with m.Case(InstrOp.SIGNAL):
                            s = c.args.signal
                            m.d.sync += [state.eq(_State.SIGNAL), dst_x.eq(s.x), dst_y.eq(s.y)]
                            with m.If(s.local):
                                m.d.sync += [dst_x.eq(self.x), dst_y.eq(self.y)]
                        with m.Case(InstrOp.NOTIFY):
                            m.d.sync += [state.eq(_State.NOTIFY_HDR), dst_x.eq(hx),
                                         dst_y.eq(hy)]
                        # Anything else is not a DMA command: dropped (the controller never
                        # queues one).

            with m.Case(_State.WRITE_HDR):
                m.d.comb += [
                    tx.valid.eq(1), tx.payload.last.eq(0),
                    tx.payload.data.eq(header(Opcode.WRITE, chunk, sram_addr(remote_row + col))),
                ]
                with m.If(tx.ready):
                    m.d.sync += [state.eq(_State.WRITE_DATA), pkt_len.eq(chunk), sent.eq(0)]

            with m.Case(_State.WRITE_DATA):
                resp = self.sram.read_resp
                last = Signal()
                m.d.comb += [
                    last.eq(sent + 1 == pkt_len),
                    tx.valid.eq(resp.valid), tx.payload.data.eq(resp.payload.data),
                    tx.payload.last.eq(last),
                    resp.ready.eq(tx.ready),
                    resp_fire.eq(resp.valid & tx.ready),
                ]
                with m.If(resp_fire):
                    m.d.sync += sent.eq(sent + 1)
                    with m.If(last):
                        next_packet()
                        with m.If(aborting | self.abort):
                            m.d.sync += [state.eq(_State.DRAIN), rd_on.eq(0)]
                        with m.Elif(block_done):
                            m.d.sync += state.eq(Mux(dma.signal, _State.SIGNAL, _State.IDLE))
                        with m.Else():
                            m.d.sync += state.eq(_State.WRITE_HDR)

            with m.Case(_State.READ_HDR):
                m.d.comb += [
                    tx.valid.eq(1), tx.payload.last.eq(0),
                    tx.payload.data.eq(header(Opcode.READ_REQ, 1, sram_addr(remote_row + col))),
                ]
                with m.If(tx.ready):
                    m.d.sync += [state.eq(_State.READ_PAY), pkt_len.eq(chunk)]

            with m.Case(_State.READ_PAY):
                m.d.comb += [tx.valid.eq(1), tx.payload.data.eq(req),
                             tx.payload.last.eq(1)]
                with m.If(tx.ready):
                    m.d.sync += state.eq(_State.READ_WAIT)

            with m.Case(_State.READ_WAIT):
                m.d.comb += self.ni.resp_awaited.eq(~aborting)
                with m.If(aborting | self.abort):
                    m.d.sync += state.eq(_State.IDLE)
                with m.Elif(self.ni.resp_done):
                    next_packet()
                    with m.If(block_done):
                        # The local semaphore: a SIGNAL to this tile itself (module docstring).
                        m.d.sync += [state.eq(Mux(dma.signal, _State.SIGNAL, _State.IDLE)),
                                     dst_x.eq(self.x), dst_y.eq(self.y)]
                    with m.Else():
                        m.d.sync += state.eq(_State.READ_HDR)

            with m.Case(_State.SIGNAL):
                sem = Mux(cmd.op == InstrOp.SIGNAL, cmd.args.signal.sem, dma.sem)
                m.d.comb += [
                    tx.valid.eq(1), tx.payload.last.eq(1),
                    tx.payload.data.eq(header(Opcode.SIGNAL, 0, sem)),
                ]
                with m.If(tx.ready):
                    m.d.sync += state.eq(_State.IDLE)

            with m.Case(_State.NOTIFY_HDR):
                m.d.comb += [
                    tx.valid.eq(1), tx.payload.last.eq(0),
                    tx.payload.data.eq(header(Opcode.NOTIFY, notify_flits, 0)),
                ]
                with m.If(tx.ready):
                    m.d.sync += [state.eq(_State.NOTIFY_PAY), note_part.eq(0)]

            with m.Case(_State.NOTIFY_PAY):
                bits = Cat(note.as_value(), Const(0, notify_flits * w - len(note.as_value())))
                parts = [bits[i * w:(i + 1) * w] for i in range(notify_flits)]
                part = Signal(w)
                with m.Switch(note_part):
                    for i, p in enumerate(parts):
                        with m.Case(i):
                            m.d.comb += part.eq(p)
                m.d.comb += [tx.valid.eq(1), tx.payload.data.eq(part),
                             tx.payload.last.eq(note_part == notify_flits - 1)]
                with m.If(tx.ready):
                    m.d.sync += note_part.eq(note_part + 1)
                    with m.If(note_part == notify_flits - 1):
                        m.d.sync += state.eq(_State.IDLE)

            with m.Case(_State.DRAIN):
                resp = self.sram.read_resp
                m.d.comb += [resp.ready.eq(1), resp_fire.eq(resp.valid)]
                with m.If((outstanding == 0) | ((outstanding == 1) & resp.valid)):
                    m.d.sync += state.eq(_State.IDLE)

        # A header-only / request packet already offered is finished, then the engine stops.
        with m.If(aborting | self.abort):
            with m.If((state == _State.WRITE_HDR) & tx.ready):
                pass  # its payload follows (WRITE_DATA finishes it, then DRAIN)
            with m.If((state == _State.READ_PAY) & tx.ready):
                m.d.sync += state.eq(_State.IDLE)
        # Never request more after an abort once the current packet's words are on their way.
        with m.If(self.abort & ~(state == _State.WRITE_HDR) & ~(state == _State.WRITE_DATA)):
            m.d.sync += rd_on.eq(0)
        return m

