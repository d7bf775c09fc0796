"""The UART host bridge: frames on a UART line to host-port packets and back
(docs/host-protocol.md; the format is defined in :mod:`tilemesh.uart.protocol`).

::

    rx ─► UartRx ─► parser ─► frame buffer ─► injector ─► host_in  (whole, checked packets)
                      │ NAK          ACK │
                      ▼                  ▼
                    response slot ──────────┐
    tx ◄─ UartTx ◄─ framer ◄────────────────┴── host_out (a frame per packet)

* A PACKET frame is stored in the frame buffer while it arrives; only when its length and CRC
  check out does the injector send it into the mesh, whole. Anything else (bad CRC or length,
  unknown type, a gap in the line longer than ``timeout_bits``, a byte without a stop bit)
  throws the frame away, counts it in ``frame_errors`` and answers a NAK: nothing of a rejected
  frame ever reaches the mesh, and a half-sent frame cannot hold the mesh's host port.
* Flow control is stop-and-wait: the bridge answers ACK(SEQ) once the packet is in the mesh, and
  the host sends its next frame only then. A frame that arrives while a packet is still
  entering the mesh is rejected with NAK BUSY, so mesh backpressure never loses a byte. A frame
  with the SEQ of the last packet injected is a retransmission: ACKed again, not injected again.
* The framer drains ``host_out`` all the time, at the UART's pace (the host must always drain
  its port), a frame per packet; an ACK/NAK waits for the end of the frame being sent.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..config import ConfigError
from ..layouts import TileState, flit_layout, header_layout
from ..mesh import Mesh
from ..noc.ingress import drop_layout
from .phy import UartRx, UartTx, check_clocks_per_bit
from .protocol import SYNC, FrameType, NakReason, flit_bytes, max_body

__all__ = ["UartBridge", "UartMesh", "crc16_step"]

COUNTER_BITS = 16


def _crc16_taps():
    """For each bit of the next CRC register, the (crc bits, byte bits) it is the XOR of: the
    CRC is linear, so one flat XOR per bit replaces eight chained shift steps."""
    from .protocol import crc16

    def step(crc, byte):
        return crc16([byte], crc)

    taps = []
    for out in range(16):
        taps.append(([i for i in range(16) if step(1 << i, 0) >> out & 1],
                     [i for i in range(8) if step(0, 1 << i) >> out & 1]))
    return taps


_CRC16_TAPS = _crc16_taps()


def crc16_step(crc, byte):
    """The CRC-16/CCITT-FALSE register after one more byte (combinational)."""
    crc, byte = Value.cast(crc), Value.cast(byte)
    bits = []
    for crc_taps, byte_taps in _CRC16_TAPS:
        terms = [crc[i] for i in crc_taps] + [byte[i] for i in byte_taps]
        bits.append(Cat(*terms).xor())
    return Cat(*bits)


def _check_timeout_bits(value):
    if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1 << 16):
        raise ConfigError(f"timeout_bits must be an integer in 1..65536, not {value!r}")
    return value


class UartBridge(wiring.Component):
    """Frames on a UART to packets on a mesh host port and back.

    Parameters
    ----------
    cfg : MeshConfig
    clocks_per_bit : int
        Clock cycles per UART bit (at least 4).
    timeout_bits : int
        Idle line time, in bit periods, after which a frame that has started is dropped as
        truncated (NAK TIMEOUT).

    Members
    -------
    rx : ``In(1)``
        UART line from the host (idle high).
    tx : ``Out(1)``
        UART line to the host.
    host_in : ``Out(stream.Signature(flit_layout(cfg)))``
        Checked packets for the mesh's ``host_in``.
    host_out : ``In(stream.Signature(flit_layout(cfg)))``
        The mesh's ``host_out``.
    frame_errors : ``Out(16)``
        Rejected frames (wraps).
    packets_in, packets_out : ``Out(16)``
        Packets injected into / taken from the mesh (wrap).
    rx_busy, tx_busy : ``Out(1)``
        A frame is being received / sent (activity LEDs).

    Raises
    ------
    ConfigError
        If ``clocks_per_bit`` or ``timeout_bits`` is out of range.
    """

    def __init__(self, cfg, *, clocks_per_bit, timeout_bits=1000):
        self._cfg = cfg
        self._cpb = check_clocks_per_bit(clocks_per_bit)
        self._timeout_bits = _check_timeout_bits(timeout_bits)
        flit = stream.Signature(flit_layout(cfg))
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "host_in": Out(flit),
            "host_out": In(flit),
            "frame_errors": Out(COUNTER_BITS),
            "packets_in": Out(COUNTER_BITS),
            "packets_out": Out(COUNTER_BITS),
            "rx_busy": Out(1),
            "tx_busy": Out(1),
        })

    @property
    def cfg(self):
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        w = cfg.noc.flit_bits
        nb = flit_bytes(cfg)
        max_flits = cfg.noc.max_packet_flits + 1
        body_max = max_body(cfg)

        m.submodules.uart_rx = urx = UartRx(self._cpb)
        m.submodules.uart_tx = utx = UartTx(self._cpb)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]

        # -- the response slot: one ACK/NAK waiting for the framer --------------------------
        slot_valid = Signal()
        slot_type = Signal(8)
        slot_seq = Signal(8)
        slot_reason = Signal(8)
        slot_errors = Signal(COUNTER_BITS)
        parser_claim = Signal()     # the parser writes the slot this cycle

        # -- frame buffer ----------------------------------------------------------------------
        m.submodules.buffer = buf = Memory(shape=w, depth=max_flits, init=[])
        wr = buf.write_port()
        rd = buf.read_port(transparent_for=())

        # -- parser ----------------------------------------------------------------------------
        byte = urx.data.payload
        strobe = urx.data.valid
        crc = Signal(16)
        crc_next = crc16_step(crc, byte)
        seq = Signal(8)
        # Only lengths up to body_max are ever stored: LEN_HI is checked as it arrives.
        len_lo = Signal(8)
        length = Signal(range(body_max + 1))
        count = Signal(range(body_max + 1))     # body bytes received
        in_flit = Signal(range(nb))     # byte index inside the current flit
        flits = Signal(range(max_flits + 1))
        flit_sr = Signal(nb * 8)
        store = Signal()                # the buffer was free when the frame began
        errors = Signal(COUNTER_BITS)
        last_seq = Signal(8)
        last_valid = Signal()
        gap_limit = (10 + self._timeout_bits) * self._cpb
        gap = Signal(range(gap_limit + 1))

        inj_start = Signal()
        inj_count = Signal(range(max_flits + 1))
        inj_idle = Signal()

        m.d.comb += self.frame_errors.eq(errors)

        def respond(ftype, reason=0):
            # A NAK counts even when the slot is still full and the answer itself is lost.
            with m.If(~slot_valid):
                m.d.comb += parser_claim.eq(1)
                m.d.sync += [slot_valid.eq(1), slot_type.eq(ftype), slot_reason.eq(reason),
                             slot_seq.eq(seq), slot_errors.eq(errors + (ftype == FrameType.NAK))]
            if ftype == FrameType.NAK:
                m.d.sync += errors.eq(errors + 1)

        def abort_checks():
            # Inside a frame: a broken byte or a silent line ends it.
            m.d.sync += gap.eq(Mux(strobe, 0, gap + 1))
            with m.If(urx.framing_error):
                respond(FrameType.NAK, NakReason.FRAMING)
                m.next = "HUNT"
            with m.Elif(~strobe & (gap == gap_limit)):
                respond(FrameType.NAK, NakReason.TIMEOUT)
                m.next = "HUNT"

        with m.FSM(name="parser") as parser:
            with m.State("HUNT"):
                with m.If(strobe & (byte == SYNC)):
                    m.d.sync += [crc.eq(0xFFFF), seq.eq(0), count.eq(0), in_flit.eq(0),
                                 flits.eq(0), store.eq(inj_idle), gap.eq(0)]
                    m.next = "TYPE"
            with m.State("TYPE"):
                abort_checks()
                with m.If(strobe):
                    m.d.sync += crc.eq(crc_next)
                    with m.If(byte == FrameType.PACKET):
                        m.next = "SEQ"
                    with m.Else():
                        respond(FrameType.NAK, NakReason.TYPE)
                        m.next = "HUNT"
            with m.State("SEQ"):
                abort_checks()
                with m.If(strobe):
                    m.d.sync += [crc.eq(crc_next), seq.eq(byte)]
                    m.next = "LEN_LO"
            with m.State("LEN_LO"):
                abort_checks()
                with m.If(strobe):
                    m.d.sync += [crc.eq(crc_next), len_lo.eq(byte)]
                    m.next = "LEN_HI"
            with m.State("LEN_HI"):
                abort_checks()
                full = Cat(len_lo, byte)
                with m.If(strobe):
                    m.d.sync += [crc.eq(crc_next), length.eq(full)]
                    with m.If((full == 0) | (full > body_max)):
                        respond(FrameType.NAK, NakReason.LENGTH)
                        m.next = "HUNT"
                    with m.Else():
                        m.next = "BODY"
            with m.State("BODY"):
                abort_checks()
                with m.If(strobe):
                    m.d.sync += [crc.eq(crc_next), count.eq(count + 1)]
                    sr_next = Cat(flit_sr[8:], byte)
                    m.d.sync += flit_sr.eq(sr_next)
                    with m.If(in_flit == nb - 1):
                        m.d.sync += [in_flit.eq(0), flits.eq(flits + 1)]
                        m.d.comb += [wr.addr.eq(flits), wr.data.eq(sr_next[:w]),
                                     wr.en.eq(store)]
                    with m.Else():
                        m.d.sync += in_flit.eq(in_flit + 1)
                    with m.If(count + 1 == length):
                        m.next = "CRC_HI"
            with m.State("CRC_HI"):
                abort_checks()
                with m.If(strobe):
                    m.d.sync += crc.eq(crc_next)
                    m.next = "CRC_LO"
            with m.State("CRC_LO"):
                abort_checks()
                with m.If(strobe):
                    m.next = "HUNT"
                    with m.If(crc_next != 0):
                        respond(FrameType.NAK, NakReason.CRC)
                    with m.Elif(in_flit != 0):
                        respond(FrameType.NAK, NakReason.LENGTH)
                    with m.Elif(last_valid & (seq == last_seq)):
                        # A retransmission of the packet already injected: ACK it again.
                        respond(FrameType.ACK)
                    with m.Elif(~store):
                        respond(FrameType.NAK, NakReason.BUSY)
                    with m.Else():
                        m.d.comb += inj_start.eq(1)
                        m.d.sync += [inj_count.eq(flits), last_seq.eq(seq), last_valid.eq(1)]
        m.d.comb += self.rx_busy.eq(~parser.ongoing("HUNT"))

        # -- injector --------------------------------------------------------------------------
        inj_seq = Signal(8)
        idx = Signal(range(max_flits + 1))
        packets_in = Signal(COUNTER_BITS)
        m.d.comb += self.packets_in.eq(packets_in)
        fire = self.host_in.valid & self.host_in.ready
        m.d.comb += [rd.addr.eq(Mux(fire, idx + 1, idx)), rd.en.eq(1)]
        with m.FSM(name="injector"):
            with m.State("IDLE"):
                m.d.comb += inj_idle.eq(1)
                m.d.sync += idx.eq(0)
                with m.If(inj_start):
                    m.d.sync += inj_seq.eq(seq)
                    m.next = "PRIME"
            with m.State("PRIME"):
                # The buffer's read port is synchronous: flit 0 is out one cycle later.
                m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [self.host_in.valid.eq(1), self.host_in.payload.data.eq(rd.data),
                             self.host_in.payload.last.eq(idx == inj_count - 1)]
                with m.If(fire):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == inj_count - 1):
                        m.next = "ACK"
            with m.State("ACK"):
                with m.If(~slot_valid & ~parser_claim):
                    m.d.sync += [slot_valid.eq(1), slot_type.eq(FrameType.ACK),
                                 slot_seq.eq(inj_seq), slot_reason.eq(0),
                                 packets_in.eq(packets_in + 1)]
                    m.next = "IDLE"

        # -- framer ----------------------------------------------------------------------------
        hdr = data.View(header_layout(cfg), self.host_out.payload.data)
        tx_seq = Signal(8)
        f_type = Signal(8)
        f_seq = Signal(8)
        f_len = Signal(range(max(body_max, 3) + 1))
        left = Signal.like(f_len)
        out_flit = Signal(range(nb))
        sr = Signal(max(nb * 8, 24))
        is_packet = Signal()
        tcrc = Signal(16)
        tx_byte = Signal(8)
        packets_out = Signal(COUNTER_BITS)
        m.d.comb += self.packets_out.eq(packets_out)
        accept = utx.data.ready & utx.data.valid
        m.d.comb += utx.data.payload.eq(tx_byte)
        with m.FSM(name="framer") as framer:
            with m.State("IDLE"):
                with m.If(slot_valid):
                    is_nak = slot_type == FrameType.NAK
                    m.d.sync += [slot_valid.eq(0), f_type.eq(slot_type), f_seq.eq(slot_seq),
                                 f_len.eq(Mux(is_nak, 3, 0)), is_packet.eq(0),
                                 sr.eq(Cat(slot_reason, slot_errors))]
                    m.next = "SYNC"
                with m.Elif(self.host_out.valid):
                    m.d.sync += [f_type.eq(FrameType.PACKET), f_seq.eq(tx_seq),
                                 f_len.eq((hdr.length + 1) * nb), is_packet.eq(1),
                                 tx_seq.eq(tx_seq + 1)]
                    m.next = "SYNC"
            for state, value, nxt in (("SYNC", SYNC, "TYPE"), ("TYPE", f_type, "SEQ"),
                                      ("SEQ", f_seq, "LEN_LO"), ("LEN_LO", f_len[:8], "LEN_HI")):
                with m.State(state):
                    m.d.comb += [utx.data.valid.eq(1), tx_byte.eq(value)]
                    with m.If(accept):
                        if state == "SYNC":
                            m.d.sync += tcrc.eq(0xFFFF)
                        else:
                            m.d.sync += tcrc.eq(crc16_step(tcrc, tx_byte))
                        m.next = nxt
            with m.State("LEN_HI"):
                m.d.comb += [utx.data.valid.eq(1), tx_byte.eq(f_len[8:])]
                with m.If(accept):
                    m.d.sync += [tcrc.eq(crc16_step(tcrc, tx_byte)), left.eq(f_len),
                                 out_flit.eq(0)]
                    with m.If(f_len == 0):
                        m.next = "CRC_HI"
                    with m.Elif(is_packet):
                        m.next = "LOAD"
                    with m.Else():
                        m.next = "BODY"
            with m.State("LOAD"):
                m.d.comb += self.host_out.ready.eq(1)
                with m.If(self.host_out.valid):
                    m.d.sync += sr.eq(self.host_out.payload.data)
                    with m.If(self.host_out.payload.last):
                        m.d.sync += packets_out.eq(packets_out + 1)
                    m.next = "BODY"
            with m.State("BODY"):
                m.d.comb += [utx.data.valid.eq(1), tx_byte.eq(sr[:8])]
                with m.If(accept):
                    m.d.sync += [tcrc.eq(crc16_step(tcrc, tx_byte)), sr.eq(sr >> 8),
                                 left.eq(left - 1),
                                 out_flit.eq(Mux(out_flit == nb - 1, 0, out_flit + 1))]
                    with m.If(left == 1):
                        m.next = "CRC_HI"
                    with m.Elif(is_packet & (out_flit == nb - 1)):
                        m.next = "LOAD"
            with m.State("CRC_HI"):
                m.d.comb += [utx.data.valid.eq(1), tx_byte.eq(tcrc[8:])]
                with m.If(accept):
                    m.next = "CRC_LO"
            with m.State("CRC_LO"):
                m.d.comb += [utx.data.valid.eq(1), tx_byte.eq(tcrc[:8])]
                with m.If(accept):
                    m.next = "IDLE"
        m.d.comb += self.tx_busy.eq(~framer.ongoing("IDLE"))
        return m


class UartMesh(wiring.Component):
    """A :class:`~tilemesh.mesh.Mesh` behind a :class:`UartBridge`: the board-independent part of
    a board top (what the simulated-UART tests run).

    Parameters
    ----------
    cfg : MeshConfig
    clocks_per_bit : int
    timeout_bits : int
        As for :class:`UartBridge`.

    Members
    -------
    uart_rx : ``In(1)``
    uart_tx : ``Out(1)``
    frame_errors, packets_in, packets_out : ``Out(16)``
        The bridge's counters.
    rx_busy, tx_busy : ``Out(1)``
    host_drops : ``Out(drop_layout())``
        Packets the mesh's host port dropped (e.g. addressed off the mesh).
    tile_state : ``Out(TileState).array(cfg.rows, cfg.cols)``
    """

    def __init__(self, cfg, *, clocks_per_bit, timeout_bits=1000):
        self._cfg = cfg
        self._cpb = check_clocks_per_bit(clocks_per_bit)
        self._timeout_bits = _check_timeout_bits(timeout_bits)
        super().__init__({
            "uart_rx": In(1, init=1),
            "uart_tx": Out(1, init=1),
            "frame_errors": Out(COUNTER_BITS),
            "packets_in": Out(COUNTER_BITS),
            "packets_out": Out(COUNTER_BITS),
            "rx_busy": Out(1),
            "tx_busy": Out(1),
            "host_drops": Out(drop_layout()),
            "tile_state": Out(TileState).array(cfg.rows, cfg.cols),
        })

    @property
    def cfg(self):
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        m.submodules.bridge = bridge = UartBridge(cfg, clocks_per_bit=self._cpb,
                                                  timeout_bits=self._timeout_bits)
        m.submodules.mesh = mesh = Mesh(cfg)
        wiring.connect(m, bridge.host_in, mesh.host_in)
        wiring.connect(m, mesh.host_out, bridge.host_out)
        m.d.comb += [bridge.rx.eq(self.uart_rx), self.uart_tx.eq(bridge.tx),
                     self.frame_errors.eq(bridge.frame_errors),
                     self.packets_in.eq(bridge.packets_in),
                     self.packets_out.eq(bridge.packets_out),
                     self.rx_busy.eq(bridge.rx_busy), self.tx_busy.eq(bridge.tx_busy),
                     self.host_drops.eq(mesh.host_drops)]
        for y in range(cfg.rows):
            for x in range(cfg.cols):
                m.d.comb += self.tile_state[y][x].eq(mesh.tile_state[y][x])
        return m
