"""ULX3S 85F (LFE5U-85F-CABGA381): the ``default`` mesh at ``CLOCK_MHZ`` from the 25 MHz
oscillator through an EHXPLLL.

Pins: UART through the FTDI (rx M1, tx L4), reset = FIRE 1 button, the 8 LEDs show
boards.common.LED_MEANINGS 0..6 (LED 7: PLL locked).
"""

from amaranth.hdl import ClockDomain, ClockSignal, Elaboratable, Instance, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from tilemesh.config import ConfigError

from .common import BoardCore

__all__ = ["ULX3STop", "ecp5_pll_params", "BOARD"]

OSC_HZ = 25e6
#: The PLL output a build uses unless ``--clock-mhz`` says otherwise: a 3.125 MHz step with
#: margin under what the routed board build reaches today (41.7 MHz). The SPEC's target is
#: 100 MHz; the SRAM arbiters' combinational grants are what stand in the way (BENCHMARKS.md,
#: "FPGA resources and Fmax").
CLOCK_MHZ = 31.25


def ecp5_pll_params(f_in_hz, f_out_hz):
    """EHXPLLL dividers (CLKI_DIV, CLKFB_DIV, CLKOP_DIV) giving exactly ``f_out_hz`` from
    ``f_in_hz`` with the VCO in 400..800 MHz (nearest 600) and the PFD in 3.125..400 MHz (ECP5
    data sheet)."""
    for clki in range(1, 129):
        pfd = f_in_hz / clki
        if not 3.125e6 <= pfd <= 400e6:
            continue
        for fb in range(1, 81):
            if abs(pfd * fb - f_out_hz) > 1:
                continue
            ops = [op for op in range(1, 129) if 400e6 <= f_out_hz * op <= 800e6]
            if ops:
                # The VCO nearest the middle of its range, as Trellis' ecppll chooses.
                return clki, fb, min(ops, key=lambda op: abs(f_out_hz * op - 600e6))
    raise ConfigError(f"no ECP5 PLL setting gives {f_out_hz / 1e6:g} MHz from "
                      f"{f_in_hz / 1e6:g} MHz exactly; pick a multiple of "
                      f"{f_in_hz / 1e6 / 8:g} MHz")


class ULX3STop(Elaboratable):
    """The ULX3S top: ``sync`` at ``clock_mhz`` from the PLL, held in reset until it locks."""

    def __init__(self, cfg, *, baud=115200, timeout_bits=1000, clock_mhz=CLOCK_MHZ):
        self.cfg, self.baud, self.timeout_bits = cfg, baud, timeout_bits
        self.clock_hz = clock_mhz * 1e6
        self.pll = ecp5_pll_params(OSC_HZ, self.clock_hz)

    def elaborate(self, platform):
        m = Module()
        clki, fb, op = self.pll
        m.submodules.clk25 = clk25 = io.Buffer("i", platform.request("clk25", 0, dir="-"))
        m.domains.sync = ClockDomain("sync")
        clk = Signal(name="pll_clkop")
        locked = Signal(name="pll_lock")
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=str(OSC_HZ / 1e6), a_FREQUENCY_PIN_CLKOP=str(self.clock_hz / 1e6),
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=clki, p_CLKFB_DIV=fb, p_CLKOP_DIV=op, p_CLKOP_ENABLE="ENABLED",
            p_CLKOP_CPHASE=op - 1, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            i_CLKI=clk25.i, i_CLKFB=clk, i_RST=0, i_STDBY=0,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
            i_PLLWAKESYNC=0, i_ENCLKOP=0,
            o_CLKOP=clk, o_LOCK=locked)
        # No constraint on the PLL output: the net is renamed by synthesis (nextpnr would ignore
        # it); nextpnr derives it from the 25 MHz input and the dividers ("Derived frequency
        # constraint of 100.0 MHz"), and boards/build.py checks Fmax against that.
        m.d.comb += ClockSignal("sync").eq(clk)
        m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")

        uart = platform.request("uart", 0, dir="-")
        button = platform.request("button_fire", 1, dir="-")
        leds = [platform.request("led", i, dir="-") for i in range(8)]
        m.submodules.board = BoardCore(self.cfg, clock_hz=self.clock_hz, baud=self.baud,
                                       uart=uart, button=button, leds=leds[:7],
                                       timeout_bits=self.timeout_bits)
        m.submodules.led_locked = led7 = io.Buffer("o", leds[7])
        m.d.comb += led7.o.eq(locked)
        return m


BOARD = {
    "name": "ulx3s-85f",
    "platform": ULX3S_85F_Platform,
    "top": ULX3STop,
    "preset": "default",
    "device": "LFE5U-85F-CABGA381",
    "clock_mhz": CLOCK_MHZ,
    "synth_opts": "-nowidelut",   # as tilemesh synth's ECP5 target: see its comment
    "bitstream": "top.bit",
    "logic": "TRELLIS_COMB",
    "program": "openFPGALoader -b ulx3s build/board/ulx3s-85f/top.bit",
}
