"""What every board top shares: the mesh behind the UART bridge, a reset button, status LEDs.

::

    button ─► FFSynchronizer ─► ResetInserter ─┐
    uart.rx ─► io.Buffer ─► UartMesh(cfg) ─► io.Buffer ─► uart.tx
                               │ status
                               ▼
                             leds: heartbeat, frame error, rx, tx, tile running, tile error, drops
"""

from amaranth.hdl import Elaboratable, Module, ResetInserter, Signal
from amaranth.lib import io
from amaranth.lib.cdc import FFSynchronizer

from tilemesh.config import ConfigError
from tilemesh.layouts import TileState
from tilemesh.uart import UartMesh

__all__ = ["clocks_per_bit", "BoardCore", "LED_MEANINGS"]

# LED i shows LED_MEANINGS[i] (boards with fewer LEDs show the first ones).
LED_MEANINGS = ("heartbeat (~1 Hz: the clock runs, not in reset)",
                "frame error (0.2 s flash per rejected frame; stays on while they keep coming)",
                "UART receive activity",
                "UART transmit activity",
                "a tile is running (RUNNING, WAITING or BLOCKED)",
                "a tile stopped on an error (ERROR state)",
                "the host port dropped a packet (since reset)")


def clocks_per_bit(clock_hz, baud):
    """The UART divisor for ``baud`` at ``clock_hz``; raises ConfigError beyond 2 % error."""
    if not (isinstance(baud, int) and baud > 0):
        raise ConfigError(f"baud must be a positive integer, not {baud!r}")
    cpb = round(clock_hz / baud)
    if cpb < 4:
        raise ConfigError(f"baud {baud} is too fast for a {clock_hz / 1e6:g} MHz clock (at least "
                          f"4 clock cycles per bit are needed)")
    error = abs(clock_hz / cpb - baud) / baud
    if error > 0.02:
        raise ConfigError(f"baud {baud} is {error:.1%} off at {clock_hz / 1e6:g} MHz "
                          f"({cpb} cycles per bit); a UART needs it within 2 %")
    return cpb


def _stretch(m, pulse, cycles, name):
    """An LED-visible version of a short pulse: on for ``cycles`` after each pulse."""
    count = Signal(range(cycles + 1), name=name)
    with m.If(pulse):
        m.d.sync += count.eq(cycles)
    with m.Elif(count != 0):
        m.d.sync += count.eq(count - 1)
    return count != 0


class BoardCore(Elaboratable):
    """Everything of a board top but the clock: :class:`~tilemesh.uart.UartMesh` on the board's
    UART pins, the reset button and the status LEDs (:data:`LED_MEANINGS`).

    Parameters
    ----------
    cfg : MeshConfig
    clock_hz : float
        Frequency of the ``sync`` domain.
    baud : int
    uart : the requested ``uart`` resource (``dir="-"``)
    button : the requested reset button (``dir="-"``) or None
    leds : list of requested ``led`` resources (``dir="-"``)
    timeout_bits : int
        Idle bit periods that end a truncated frame.
    """

    def __init__(self, cfg, *, clock_hz, baud, uart, button, leds, timeout_bits=1000):
        self.cfg = cfg
        self.clock_hz = clock_hz
        self.clocks_per_bit = clocks_per_bit(clock_hz, baud)
        self.baud = baud
        self._uart, self._button, self._leds = uart, button, leds
        self._timeout_bits = timeout_bits

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        core = UartMesh(cfg, clocks_per_bit=self.clocks_per_bit, timeout_bits=self._timeout_bits)
        if self._button is not None:
            m.submodules.button = button = io.Buffer("i", self._button)
            pressed = Signal()
            m.submodules.button_sync = FFSynchronizer(button.i, pressed)
            core = ResetInserter({"sync": pressed})(core)
        m.submodules.core = core

        m.submodules.uart_rx = rx = io.Buffer("i", self._uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", self._uart.tx)
        m.d.comb += [core.uart_rx.eq(rx.i), tx.o.eq(core.uart_tx)]

        # Status.
        hz = int(self.clock_hz)
        beat = Signal(range(hz // 2 + 1))
        heartbeat = Signal()
        m.d.sync += beat.eq(beat - 1)
        with m.If(beat == 0):
            m.d.sync += [beat.eq(hz // 2), heartbeat.eq(~heartbeat)]
        last_errors = Signal.like(core.frame_errors)
        m.d.sync += last_errors.eq(core.frame_errors)
        states = [core.tile_state[y][x] for y in range(cfg.rows) for x in range(cfg.cols)]
        running = Signal()
        failed = Signal()
        for s in states:
            with m.If((s == TileState.RUNNING) | (s == TileState.WAITING)
                      | (s == TileState.BLOCKED)):
                m.d.comb += running.eq(1)
            with m.If(s == TileState.ERROR):
                m.d.comb += failed.eq(1)
        drops = Signal()
        drop_bits = core.host_drops.as_value()
        with m.If(drop_bits != 0):
            m.d.sync += drops.eq(1)
        flash = hz // 5
        status = [heartbeat,
                  _stretch(m, core.frame_errors != last_errors, flash, "error_flash"),
                  _stretch(m, core.rx_busy, flash // 4, "rx_flash"),
                  _stretch(m, core.tx_busy, flash // 4, "tx_flash"),
                  running, failed, drops]
        for i, led in enumerate(self._leds[:len(status)]):
            m.submodules[f"led_{i}"] = buf = io.Buffer("o", led)
            m.d.comb += buf.o.eq(status[i])
        return m
