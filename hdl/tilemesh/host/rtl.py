"""The cocotb back end of the host driver: drives a mesh's ``host_in`` / ``host_out`` ports in an
RTL simulation, with random idle cycles on the way in and random backpressure on the way out.

::

    drv = HostDriver(cfg, CocotbTransport(dut, cfg, rnd=random.Random(seed), idle=0.2,
                                          stall=0.3))

The receiver starts with the transport and runs until the simulation ends, so the host always
drains its port (docs/tile-design.md §3), whatever the test is doing.
"""

import random

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge

from .driver import HostTransport

__all__ = ["CocotbTransport"]


class CocotbTransport(HostTransport):
    """Drives ``<inp>__valid/__payload/__ready`` and takes ``<out>__...`` of ``dut``.

    Parameters
    ----------
    dut : cocotb handle of the mesh top
    cfg : MeshConfig
    inp, out : str
        Port name prefixes (default ``host_in`` / ``host_out``).
    rnd : random.Random
    idle : float
        Probability of an idle cycle before each flit sent.
    stall : float
        Probability of ``ready`` low in each cycle on the receive side.

    Members
    -------
    cycles : int
        Clock cycles since the transport started (its time unit).
    sent_flits, received_flits : int
    """

    def __init__(self, dut, cfg, *, inp="host_in", out="host_out", rnd=None, idle=0.0,
                 stall=0.0):
        self.cfg = cfg
        self.clk = dut.clk
        self._in = {k: getattr(dut, f"{inp}__{k}") for k in ("valid", "payload", "ready")}
        self._out = {k: getattr(dut, f"{out}__{k}") for k in ("valid", "payload", "ready")}
        self.rnd = rnd or random.Random(0)
        self.idle, self.stall = idle, stall
        self.cycles = 0
        self.sent_flits = self.received_flits = 0
        self._packets = []
        self._partial = []
        self._in["valid"].value = 0
        self._out["ready"].value = 0
        self._sending = False
        self._task = cocotb.start_soon(self._receiver())

    def now(self):
        return self.cycles

    async def _receiver(self):
        w = self.cfg.word_bits
        while True:
            self._out["ready"].value = int(self.rnd.random() >= self.stall)
            await ReadOnly()
            valid = self._out["valid"].value
            if not valid.is_resolvable:
                raise RuntimeError(f"host_out valid is {valid} at cycle {self.cycles}")
            if valid and self._out["ready"].value:
                payload = self._out["payload"].value
                if not payload.is_resolvable:
                    raise RuntimeError(f"host_out payload {payload} has X/Z bits at cycle "
                                       f"{self.cycles}")
                flit = int(payload)
                self._partial.append(flit)
                self.received_flits += 1
                if flit >> w & 1:
                    self._packets.append(self._partial)
                    self._partial = []
            await RisingEdge(self.clk)
            self.cycles += 1

    async def send(self, flits):
        # One packet at a time: a second sender waits (packets must not interleave).
        while self._sending:
            await RisingEdge(self.clk)
        self._sending = True
        try:
            for flit in flits:
                while self.rnd.random() < self.idle:
                    await RisingEdge(self.clk)
                self._in["valid"].value = 1
                self._in["payload"].value = flit
                while True:
                    await ReadOnly()
                    fired = bool(self._in["ready"].value)
                    await RisingEdge(self.clk)
                    if fired:
                        break
                self._in["valid"].value = 0
                self.sent_flits += 1
        finally:
            self._sending = False

    async def receive(self, timeout=None):
        waited = 0
        while not self._packets:
            if timeout is not None and waited >= timeout:
                return None
            await RisingEdge(self.clk)
            waited += 1
        return self._packets.pop(0)
