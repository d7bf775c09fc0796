"""UART receiver and transmitter: 8 data bits, no parity, 1 stop bit, LSB first, line idle high.

The bit period is a whole number of clock cycles (``clocks_per_bit``, e.g. 12 MHz / 115200
rounds to 104: 0.16 % off, well inside the +/-2 % a UART tolerates). Simulations use a few
cycles per bit.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from ..config import ConfigError

__all__ = ["UartRx", "UartTx", "check_clocks_per_bit"]


def check_clocks_per_bit(value):
    if not (isinstance(value, int) and not isinstance(value, bool) and 4 <= value <= 1 << 20):
        raise ConfigError(f"clocks_per_bit must be an integer in 4..1048576, not {value!r}")
    return value


class UartRx(wiring.Component):
    """UART receiver: samples the middle of each bit (after a 2-FF synchroniser).

    Parameters
    ----------
    clocks_per_bit : int
        Clock cycles per bit, at least 4.

    Members
    -------
    rx : ``In(1)``
        The line (asynchronous; idle high).
    data : ``Out(stream.Signature(8, always_ready=True))``
        One beat per received byte (the consumer cannot stall a UART).
    framing_error : ``Out(1)``
        A one-cycle pulse instead of a beat when a byte's stop bit was low.
    idle : ``Out(1)``
        No byte is being received.

    Raises
    ------
    ConfigError
        If ``clocks_per_bit`` is out of range.
    """

    def __init__(self, clocks_per_bit):
        self._cpb = check_clocks_per_bit(clocks_per_bit)
        super().__init__({
            "rx": In(1, init=1),
            "data": Out(stream.Signature(8, always_ready=True)),
            "framing_error": Out(1),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cpb = self._cpb
        line = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, line, init=1)
        timer = Signal(range(cpb + cpb // 2 + 1))
        bit = Signal(range(9))
        shreg = Signal(8)
        m.d.sync += self.data.valid.eq(0)
        m.d.sync += self.framing_error.eq(0)
        with m.If(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.idle.eq(1)
                with m.If(~line):
                    # The middle of data bit 0 is 1.5 bit periods after the falling edge.
                    m.d.sync += [timer.eq(cpb + cpb // 2 - 1), bit.eq(0)]
                    m.next = "START"
            with m.State("START"):
                # A glitch shorter than half a bit is not a start bit.
                with m.If((timer == cpb) & line):
                    m.next = "IDLE"
                with m.Elif(timer == 0):
                    m.d.sync += [shreg.eq(line << 7 | shreg >> 1), timer.eq(cpb - 1),
                                 bit.eq(1)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(cpb - 1), bit.eq(bit + 1)]
                    with m.If(bit == 8):
                        # The stop bit.
                        m.d.sync += [self.data.valid.eq(line), self.data.payload.eq(shreg),
                                     self.framing_error.eq(~line)]
                        m.next = "STOP" if cpb > 2 else "IDLE"
                    with m.Else():
                        m.d.sync += shreg.eq(line << 7 | shreg >> 1)
            with m.State("STOP"):
                # Back to IDLE only once the line is high again (a break stays here).
                with m.If(line):
                    m.next = "IDLE"
        return m


class UartTx(wiring.Component):
    """UART transmitter.

    Parameters
    ----------
    clocks_per_bit : int
        Clock cycles per bit, at least 4.

    Members
    -------
    data : ``In(stream.Signature(8))``
        Bytes to send; ``ready`` while the transmitter is idle.
    tx : ``Out(1)``
        The line (idle high).
    """

    def __init__(self, clocks_per_bit):
        self._cpb = check_clocks_per_bit(clocks_per_bit)
        super().__init__({
            "data": In(stream.Signature(8)),
            "tx": Out(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        cpb = self._cpb
        timer = Signal(range(cpb))
        bits = Signal(range(11))
        shreg = Signal(10, init=0x3FF)
        m.d.comb += [self.tx.eq(shreg[0]), self.data.ready.eq(bits == 0)]
        with m.If(bits == 0):
            with m.If(self.data.valid):
                # stop bit, data LSB first, start bit
                m.d.sync += [shreg.eq(1 << 9 | self.data.payload << 1), bits.eq(10),
                             timer.eq(cpb - 1)]
        with m.Elif(timer == 0):
            m.d.sync += [shreg.eq(1 << 9 | shreg >> 1), bits.eq(bits - 1), timer.eq(cpb - 1)]
        with m.Else():
            m.d.sync += timer.eq(timer - 1)
        return m
