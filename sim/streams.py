"""cocotb helpers for Amaranth ``lib.stream`` ports: a driver and a monitor with random idle
cycles and random backpressure, payloads packed and unpacked with the same Amaranth layouts the
hardware uses (never with copied bit offsets)."""

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

__all__ = ["params", "rng", "start_clock", "reset", "cycles_until", "pack", "unpack",
           "StreamDriver", "StreamMonitor"]


def params():
    """The JSON parameters the runner passed to this test (``run_cocotb(params=...)``)."""
    return json.loads(os.environ.get("TILEMESH_PARAMS", "{}"))


def rng(tag=""):
    """A random generator seeded from cocotb's printed seed, so a failure reproduces."""
    seed = cocotb.RANDOM_SEED
    cocotb.log.info("random seed %d (rerun with COCOTB_RANDOM_SEED=%d)", seed, seed)
    return random.Random(f"{seed}:{tag}")


async def start_clock(dut, period_ns=10):
    cocotb.start_soon(Clock(dut.clk, period_ns, unit="ns").start())


async def reset(dut, cycles=2):
    dut.rst.value = 1
    for _ in range(cycles):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


async def cycles_until(dut, done):
    """Rising edges of ``dut.clk`` until ``done()`` holds (checked after each edge): a
    throughput measurement started with ``cocotb.start_soon`` beside the traffic."""
    cycles = 0
    while not done():
        await RisingEdge(dut.clk)
        cycles += 1
    return cycles


def pack(layout, value):
    """Integer bits of ``value`` (dict / list / int) in ``layout``."""
    if isinstance(value, int):
        return value
    return layout.const(value).as_value().value


def unpack(layout, bits):
    """A ``data.Const`` view of raw integer ``bits``: index it by field name or element."""
    return layout.from_bits(int(bits))


class StreamDriver:
    """Drives ``<prefix>__valid/__payload`` and honours ``__ready``.

    ``idle`` is the probability of inserting an idle cycle before each beat.
    """

    def __init__(self, dut, prefix, layout, clk=None, rnd=None, idle=0.0):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.clk = dut.clk if clk is None else clk
        self.layout = layout
        self.rnd = rnd or random.Random(0)
        self.idle = idle
        self.valid.value = 0

    async def send(self, value):
        while self.rnd.random() < self.idle:
            await RisingEdge(self.clk)
        self.valid.value = 1
        self.payload.value = pack(self.layout, value)
        while True:
            await ReadOnly()  # sample ready once it has settled, before the edge
            fired = bool(self.ready.value)
            await RisingEdge(self.clk)
            if fired:
                break
        self.valid.value = 0

    async def send_all(self, values):
        for v in values:
            await self.send(v)


class StreamMonitor:
    """Accepts beats from ``<prefix>__valid/__payload``, driving ``__ready`` low with probability
    ``stall`` each cycle; collected raw integers are in ``self.beats``."""

    def __init__(self, dut, prefix, layout=None, clk=None, rnd=None, stall=0.0):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.clk = dut.clk if clk is None else clk
        self.layout = layout
        self.rnd = rnd or random.Random(0)
        self.stall = stall
        self.beats = []
        self.ready.value = 0
        self._task = cocotb.start_soon(self._run())

    async def _run(self):
        while True:
            self.ready.value = int(self.rnd.random() >= self.stall)
            await ReadOnly()
            if self.valid.value and self.ready.value:
                self.beats.append(int(self.payload.value))
            await RisingEdge(self.clk)

    def values(self):
        """Collected beats unpacked with ``layout``."""
        return [unpack(self.layout, b) for b in self.beats]

    async def wait_for(self, n, timeout_cycles=100_000):
        for _ in range(timeout_cycles):
            if len(self.beats) >= n:
                return
            await RisingEdge(self.clk)
        raise TimeoutError(f"stream monitor saw {len(self.beats)} of {n} beats "
                           f"after {timeout_cycles} cycles")
