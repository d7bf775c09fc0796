"""The UART host protocol, in Python: frame format, CRC, encoder, parser and a behavioural model
of the bridge's receive side. The RTL (:mod:`tilemesh.uart.bridge`), the host driver's UART back
end (:mod:`tilemesh.host.uart`) and the tests all take the format from here
(docs/host-protocol.md describes it byte by byte).

::

    SYNC  TYPE  SEQ  LEN_LO  LEN_HI  BODY[LEN]  CRC_HI  CRC_LO
    0xA5                                        CRC-16/CCITT-FALSE of TYPE .. BODY

A PACKET body is one host-port packet: its flits, ``flit_bytes(cfg)`` bytes each, little endian,
without the ``last`` bit (the last flit of the body is the tail). ACK has an empty body; NAK's
body is ``reason, errors_lo, errors_hi`` (a :class:`NakReason` and the bridge's count of
rejected frames).
"""

import dataclasses
import enum

__all__ = ["SYNC", "FrameType", "NakReason", "crc16", "flit_bytes", "max_body", "encode_frame",
           "packet_frame", "packet_body", "body_flits", "Frame", "FrameParser", "BridgeModel",
           "ProtocolError"]

SYNC = 0xA5
HEADER_BYTES = 5   # SYNC TYPE SEQ LEN_LO LEN_HI
CRC_BYTES = 2


class FrameType(enum.IntEnum):
    PACKET = 0x01   # host -> board: a packet for host_in; board -> host: a packet from host_out
    ACK = 0x02      # board -> host: the PACKET frame SEQ is in the mesh (or was already)
    NAK = 0x03      # board -> host: a frame was rejected, nothing of it reached the mesh


class NakReason(enum.IntEnum):
    CRC = 1         # CRC mismatch
    LENGTH = 2      # LEN is 0, above the largest packet, or not a whole number of flits
    TIMEOUT = 3     # the line went quiet inside a frame (truncated frame)
    TYPE = 4        # TYPE is not PACKET
    BUSY = 5        # a frame arrived while the previous packet was still entering the mesh
    FRAMING = 6     # a UART byte without its stop bit inside a frame


class ProtocolError(ValueError):
    """A frame or packet that cannot be encoded in this format."""


def crc16(data, crc=0xFFFF):
    """CRC-16/CCITT-FALSE (polynomial 0x1021, initial 0xFFFF, no reflection, no final XOR).
    Over a frame's TYPE..CRC_LO bytes it is 0 when the frame is intact."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def flit_bytes(cfg):
    """Bytes per flit in a PACKET body: ``ceil(flit_bits / 8)``."""
    return -(-cfg.noc.flit_bits // 8)


def max_body(cfg):
    """Largest PACKET body: a header and ``max_packet_flits`` payload flits."""
    return (cfg.noc.max_packet_flits + 1) * flit_bytes(cfg)


def encode_frame(ftype, seq, body=b""):
    """The bytes of one frame."""
    body = bytes(body)
    if not 0 <= seq <= 255:
        raise ProtocolError(f"frame SEQ must be in 0..255, not {seq!r}")
    if len(body) > 0xFFFF:
        raise ProtocolError(f"frame body must be at most 65535 bytes, not {len(body)}")
    covered = bytes([int(ftype), seq, len(body) & 0xFF, len(body) >> 8]) + body
    crc = crc16(covered)
    return bytes([SYNC]) + covered + bytes([crc >> 8, crc & 0xFF])


def packet_body(cfg, flits):
    """The PACKET body of one packet given as flit integers (``data | last << flit_bits``);
    only the final flit may (and must) have ``last`` set."""
    w, nb = cfg.noc.flit_bits, flit_bytes(cfg)
    if not 1 <= len(flits) <= cfg.noc.max_packet_flits + 1:
        raise ProtocolError(f"a packet must have 1..{cfg.noc.max_packet_flits + 1} flits, "
                            f"not {len(flits)}")
    body = bytearray()
    for i, flit in enumerate(flits):
        if (flit >> w) != int(i == len(flits) - 1):
            raise ProtocolError(f"flit {i} of {len(flits)} has last={flit >> w}")
        body += (flit & ((1 << w) - 1)).to_bytes(nb, "little")
    return bytes(body)


def body_flits(cfg, body):
    """The flit integers of a PACKET body (``last`` set on the final one)."""
    w, nb = cfg.noc.flit_bits, flit_bytes(cfg)
    if not body or len(body) % nb:
        raise ProtocolError(f"a PACKET body must be a non-zero multiple of {nb} bytes, "
                            f"not {len(body)}")
    n = len(body) // nb
    return [int.from_bytes(body[i * nb:(i + 1) * nb], "little") & ((1 << w) - 1)
            | (int(i == n - 1) << w) for i in range(n)]


def packet_frame(cfg, seq, flits):
    """The PACKET frame of one packet (flit integers)."""
    return encode_frame(FrameType.PACKET, seq, packet_body(cfg, flits))


@dataclasses.dataclass(frozen=True)
class Frame:
    """A frame that passed its CRC: ``type`` (a :class:`FrameType` or an unknown int), ``seq``,
    ``body``."""
    type: int
    seq: int
    body: bytes = b""

    @property
    def reason(self):
        """A NAK's :class:`NakReason`."""
        return NakReason(self.body[0])

    @property
    def errors(self):
        """A NAK's count of rejected frames (16 bits, wrapping)."""
        return self.body[1] | self.body[2] << 8


class FrameParser:
    """Byte-stream to frames, for the host side (frames from the board): resynchronises on SYNC
    after garbage; a frame whose CRC fails is counted and its bytes after SYNC are searched for
    the next SYNC again.

    Members
    -------
    crc_errors : int
    skipped : int
        Bytes discarded while hunting for SYNC.
    """

    def __init__(self, max_body=0xFFFF):
        self.max_body = max_body
        self.crc_errors = self.skipped = 0
        self._buf = bytearray()

    def feed(self, data):
        """Add bytes; returns the complete, intact frames they finish."""
        self._buf += data
        out = []
        while True:
            i = self._buf.find(SYNC)
            if i < 0:
                self.skipped += len(self._buf)
                self._buf.clear()
                return out
            self.skipped += i
            del self._buf[:i]
            if len(self._buf) < HEADER_BYTES:
                return out
            n = self._buf[3] | self._buf[4] << 8
            if n > self.max_body:
                self.crc_errors += 1
                self.skipped += 1
                del self._buf[:1]
                continue
            end = HEADER_BYTES + n + CRC_BYTES
            if len(self._buf) < end:
                return out
            if crc16(self._buf[1:end]) != 0:
                self.crc_errors += 1
                self.skipped += 1
                del self._buf[:1]
                continue
            out.append(Frame(self._buf[1], self._buf[2], bytes(self._buf[HEADER_BYTES:end - 2])))
            del self._buf[:end]


class BridgeModel:
    """What the bridge's receive side does with a byte stream (the reference the RTL tests
    compare with). Feed ``(byte, gap)`` pairs: ``gap`` is the idle line time before the byte,
    in bit periods; a gap of ``timeout_bits`` or more inside a frame truncates it. ``byte`` may
    be None for a byte with a broken stop bit.

    Members
    -------
    injected : list of list of int
        Packets (flit integers, ``last`` on the tail) that reach the mesh, in order.
    responses : list of Frame
        ACK / NAK frames the bridge answers with, in order (NAK bodies as the bridge sends them).
    errors : int
        Rejected frames.
    """

    def __init__(self, cfg, timeout_bits):
        self.cfg = cfg
        self.timeout_bits = timeout_bits
        self.injected, self.responses = [], []
        self.errors = 0
        self.last_seq = None
        self._frame = None     # bytes after SYNC of the frame being received

    def _nak(self, reason, seq=0):
        self.errors += 1
        body = bytes([reason, self.errors & 0xFF, (self.errors >> 8) & 0xFF])
        self.responses.append(Frame(FrameType.NAK, seq, body))
        self._frame = None

    def feed(self, byte, gap=0):
        f = self._frame
        if f is not None and gap >= self.timeout_bits:
            self._nak(NakReason.TIMEOUT, f[1] if len(f) > 1 else 0)
            f = None
        if f is None:
            if byte == SYNC:
                self._frame = bytearray()
            return
        if byte is None:
            self._nak(NakReason.FRAMING, f[1] if len(f) > 1 else 0)
            return
        f.append(byte)
        if len(f) == 1 and byte != FrameType.PACKET:
            self._nak(NakReason.TYPE)
            return
        nb = flit_bytes(self.cfg)
        if len(f) == 4:
            n = f[2] | f[3] << 8
            if not 0 < n <= max_body(self.cfg):
                self._nak(NakReason.LENGTH, f[1])
            return
        if len(f) < 4:
            return
        n = f[2] | f[3] << 8
        if len(f) < 4 + n + CRC_BYTES:
            return
        self._frame = None
        seq = f[1]
        if crc16(f) != 0:
            self._nak(NakReason.CRC, seq)
        elif n % nb:
            self._nak(NakReason.LENGTH, seq)
        else:
            if seq != self.last_seq:
                self.injected.append(body_flits(self.cfg, bytes(f[4:4 + n])))
                self.last_seq = seq
            self.responses.append(Frame(FrameType.ACK, seq))

    def feed_all(self, items):
        for byte, gap in items:
            self.feed(byte, gap)

    @property
    def in_frame(self):
        """A frame has started and not ended."""
        return self._frame is not None

    def idle(self, bits):
        """The line stays idle for ``bits`` bit periods (ends a started frame as truncated if
        that reaches the timeout)."""
        f = self._frame
        if f is not None and bits >= self.timeout_bits:
            self._nak(NakReason.TIMEOUT, f[1] if len(f) > 1 else 0)
