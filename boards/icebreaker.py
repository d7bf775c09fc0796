"""iCEBreaker (iCE40UP5K-SG48): the ``tiny`` mesh on the 12 MHz oscillator, no PLL.

Pins: UART on the FTDI's second channel (rx 6, tx 9), reset = user button (pin 10), LEDs: the two
on the board (red = frame error, green = heartbeat) and the five of the break-off PMOD
(boards.common.LED_MEANINGS 2..6).
"""

from amaranth.hdl import Elaboratable, Module
from amaranth_boards.icebreaker import ICEBreakerPlatform

from .common import BoardCore

__all__ = ["ICEBreakerTop", "BOARD"]


class ICEBreakerTop(Elaboratable):
    """The iCEBreaker top: the platform's 12 MHz ``sync`` domain (with its power-on reset)."""

    clock_hz = 12e6

    def __init__(self, cfg, *, baud=115200, timeout_bits=1000):
        self.cfg, self.baud, self.timeout_bits = cfg, baud, timeout_bits

    def elaborate(self, platform):
        m = Module()
        uart = platform.request("uart", 0, dir="-")
        button = platform.request("button", 0, dir="-")
        # Board LEDs: green = heartbeat, red = frame error; then the break-off PMOD's five.
        leds = [platform.request("led_g", 0, dir="-"), platform.request("led_r", 0, dir="-")]
        leds += [platform.request("led", i, dir="-") for i in range(2, 7)]
        m.submodules.board = BoardCore(self.cfg, clock_hz=self.clock_hz, baud=self.baud,
                                       uart=uart, button=button, leds=leds,
                                       timeout_bits=self.timeout_bits)
        return m


def _platform():
    platform = ICEBreakerPlatform()
    platform.add_resources(platform.break_off_pmod)
    return platform


BOARD = {
    "name": "icebreaker",
    "platform": _platform,
    "top": ICEBreakerTop,
    "preset": "tiny",
    "device": "iCE40UP5K-SG48",
    "clock_mhz": 12.0,
    # SB_MAC16 inference is off by default; large memories may go to SPRAM.
    "synth_opts": "-dsp -spram",
    "bitstream": "top.bin",
    "logic": "ICESTORM_LC",
    "program": "iceprog build/board/icebreaker/top.bin",
}
