"""The UART back end of the host driver: packets as frames on a serial line to a board's
:class:`~tilemesh.uart.bridge.UartBridge` (docs/host-protocol.md).

::

    link = SerialLink("/dev/ttyUSB0", baud=115200)           # a real board (pyserial)
    drv = HostDriver(cfg, UartTransport(cfg, link), timeout=link.seconds(5))

The same :class:`UartTransport` runs over any :class:`UartLink`: the cocotb bench
(``tilemesh_sim.board_bench.CocotbUartLink``) drives the board top's ``uart_rx`` pin and decodes
its ``uart_tx`` pin. Flow control is stop-and-wait: :meth:`UartTransport.send` returns once the
bridge has ACKed the frame (the packet is in the mesh); a NAK (nothing was injected) or no answer
sends the frame again with the same SEQ, which the bridge never injects twice.
"""

import time

from ..uart.protocol import FrameParser, FrameType, NakReason, body_flits, max_body, packet_frame
from .driver import HostError, HostTransport

__all__ = ["UartLink", "SerialLink", "UartTransport"]


class UartLink:
    """A byte pipe to a board. Time (``now``, timeouts) is counted in UART bit periods."""

    async def write(self, data):
        """Send ``data`` (bytes) on the line."""
        raise NotImplementedError

    async def read(self, timeout):
        """Bytes received so far, waiting up to ``timeout`` bit periods for at least one;
        ``b""`` if none came."""
        raise NotImplementedError

    def now(self):
        raise NotImplementedError


class SerialLink(UartLink):
    """A serial port (pyserial), 8N1.

    Parameters
    ----------
    port : str
        e.g. ``/dev/ttyUSB0`` (iCEBreaker: the FTDI's second interface, often ``/dev/ttyUSB1``).
    baud : int
        Must match the bitstream (``tilemesh build --baud``, default 115200).
    """

    def __init__(self, port, baud=115200):
        import serial  # only needed for real boards

        self.baud = baud
        self.serial = serial.Serial(port, baud, timeout=0)
        self.serial.reset_input_buffer()

    def seconds(self, s):
        """``s`` seconds in this link's time unit (bit periods)."""
        return int(s * self.baud)

    def now(self):
        return time.monotonic() * self.baud

    async def write(self, data):
        self.serial.write(data)
        self.serial.flush()

    async def read(self, timeout):
        self.serial.timeout = max(0.0, timeout / self.baud) if timeout is not None else None
        first = self.serial.read(1)
        if not first:
            return b""
        self.serial.timeout = 0
        return first + self.serial.read(self.serial.in_waiting or 0)

    def close(self):
        self.serial.close()


class UartTransport(HostTransport):
    """:class:`~tilemesh.host.driver.HostTransport` over a :class:`UartLink`.

    Parameters
    ----------
    cfg : MeshConfig
    link : UartLink
    ack_timeout : int
        Bit periods to wait for the ACK/NAK of a frame before sending it again.
    retries : int
        Sends of one frame before giving up with :class:`~tilemesh.host.driver.HostError`.

    Members
    -------
    naks : dict NakReason -> int
        NAKs received, per reason.
    retransmits : int
        Frames sent again (after a NAK or no answer).
    bridge_errors : int
        The bridge's rejected-frame count, from the last NAK.
    """

    def __init__(self, cfg, link, *, ack_timeout=None, retries=8):
        self.cfg = cfg
        self.link = link
        # The longest frame each way, plus slack for the mesh taking its time.
        self.ack_timeout = ack_timeout if ack_timeout is not None else \
            40 * (max_body(cfg) + 8) + 2000
        self.retries = retries
        self.naks = {}
        self.retransmits = 0
        self.bridge_errors = 0
        self._seq = 0
        self._parser = FrameParser(max_body=max(max_body(cfg), 3))
        self._packets = []
        self._answers = []

    def now(self):
        return self.link.now()

    async def _pump(self, timeout):
        """Read what arrives within ``timeout`` and sort the frames; False if nothing came."""
        data = await self.link.read(timeout)
        if not data:
            return False
        for frame in self._parser.feed(data):
            if frame.type == FrameType.PACKET:
                self._packets.append(body_flits(self.cfg, frame.body))
            elif frame.type in (FrameType.ACK, FrameType.NAK):
                self._answers.append(frame)
        return True

    def _count_nak(self, frame):
        try:
            reason = NakReason(frame.body[0])
        except (IndexError, ValueError):
            reason = None
        self.naks[reason] = self.naks.get(reason, 0) + 1
        if len(frame.body) >= 3:
            self.bridge_errors = frame.errors
        return reason

    async def send_raw(self, data):
        """Put arbitrary bytes on the line (tests and diagnostics: broken frames)."""
        await self.link.write(bytes(data))

    async def next_answer(self, timeout):
        """The next ACK/NAK frame from the bridge (NAKs are counted), or None after
        ``timeout``; packets arriving meanwhile are kept for :meth:`receive`."""
        end = self.link.now() + timeout
        while not self._answers:
            if self.link.now() >= end:
                return None
            await self._pump(end - self.link.now())
        frame = self._answers.pop(0)
        if frame.type == FrameType.NAK:
            self._count_nak(frame)
        return frame

    async def send(self, flits):
        seq = self._seq
        frame = packet_frame(self.cfg, seq, flits)
        for attempt in range(self.retries):
            if attempt:
                self.retransmits += 1
            self._answers.clear()
            await self.link.write(frame)
            end = self.link.now() + self.ack_timeout
            answer = None
            while answer is None and self.link.now() < end:
                await self._pump(end - self.link.now())
                while self._answers and answer is None:
                    a = self._answers.pop(0)
                    if a.type == FrameType.ACK and a.seq == seq:
                        answer = a
                    elif a.type == FrameType.NAK:
                        reason = self._count_nak(a)
                        if reason == NakReason.BUSY:
                            # An earlier copy of this frame is entering the mesh: its ACK
                            # (same SEQ) follows.
                            end = self.link.now() + self.ack_timeout
                        else:
                            answer = a
                    # an ACK of another SEQ is a late answer to an earlier retransmission
            if answer is not None and answer.type == FrameType.ACK:
                self._seq = (seq + 1) % 256
                return
        raise HostError(f"the bridge did not accept frame SEQ {seq} after {self.retries} sends "
                        f"(NAKs: { {str(k): v for k, v in self.naks.items()} })")

    async def receive(self, timeout=None):
        end = None if timeout is None else self.link.now() + timeout
        while not self._packets:
            left = None if end is None else end - self.link.now()
            if left is not None and left <= 0:
                return None
            await self._pump(left)
        return self._packets.pop(0)
