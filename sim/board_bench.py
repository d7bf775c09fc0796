"""cocotb bench of a board top's core (:class:`tilemesh.uart.bridge.UartMesh`: the mesh behind the
UART bridge), driven by the host driver's UART back end (:class:`tilemesh.host.uart.UartTransport`)
over :class:`CocotbUartLink`, a UART model on the ``uart_rx`` / ``uart_tx`` pins: the same
framing code a real board is driven with.

* ``gemm``: the mesh GEMM of :func:`tilemesh_sim.mesh_bench.run_gemm` (programs, A and B
  written, C read back and compared with numpy), every packet through the UART, with random
  idle time between the bytes the host sends.
* ``rejects``: a WRITE frame with a flipped bit (NAK CRC), the same frame cut short (NAK TIMEOUT),
  a byte without its stop bit (NAK FRAMING) and garbage between frames: each is rejected whole
  and counted in ``frame_errors``; the SRAM words they would have written are unchanged, nothing
  reached the mesh (``packets_in``), and a retransmitted frame is not injected twice.

Parameters (``run_cocotb(params=...)``): ``cfg``, ``clocks_per_bit``, ``timeout_bits`` (as built),
``max_gap`` (largest idle gap between host bytes, bit periods), ``timeout`` (driver timeout, bit
periods), ``gemm`` (keyword arguments of :func:`tilemesh_sim.mesh_bench.gemm_plan`).
"""

import random

import cocotb
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, Event, FallingEdge, First, Lock, ReadOnly

from tilemesh.config import MeshConfig
from tilemesh.host.driver import HostDriver, Packet
from tilemesh.host.uart import UartLink, UartTransport
from tilemesh.layouts import Opcode, Space
from tilemesh.uart.protocol import FrameType, NakReason, packet_frame
from tilemesh_sim.mesh_bench import run_gemm
from tilemesh_sim.streams import params, reset, rng, start_clock

__all__ = ["CocotbUartLink"]

CLOCK_NS = 10


class CocotbUartLink(UartLink):
    """A UART on two pins of ``dut``: bytes written go out on ``rx`` (8N1, ``clocks_per_bit``
    cycles per bit, a random idle time of 0..``max_gap`` bit periods before each byte with
    probability ``gap_rate``); bytes on ``tx`` are decoded (sampled mid-bit) all the time.

    Members
    -------
    sent, received : int
        Bytes sent / received.
    """

    def __init__(self, dut, clocks_per_bit, *, rx="uart_rx", tx="uart_tx", rnd=None,
                 max_gap=0, gap_rate=0.1):
        self.clk = dut.clk
        self.rx, self.tx = getattr(dut, rx), getattr(dut, tx)
        self.cpb = clocks_per_bit
        self.rnd = rnd or random.Random(0)
        self.max_gap, self.gap_rate = max_gap, gap_rate
        self.sent = self.received = 0
        self._rx_bytes = bytearray()
        self._event = Event()
        self._lock = Lock()
        self.rx.value = 1
        self._task = cocotb.start_soon(self._decoder())

    def now(self):
        return get_sim_time("ns") / (CLOCK_NS * self.cpb)

    async def _decoder(self):
        while True:
            await FallingEdge(self.tx)
            await ClockCycles(self.clk, self.cpb // 2)
            await ReadOnly()
            if int(self.tx.value):
                continue            # a glitch, not a start bit
            value = 0
            for i in range(9):
                await ClockCycles(self.clk, self.cpb)
                await ReadOnly()
                bit = int(self.tx.value)
                if i < 8:
                    value |= bit << i
                elif not bit:
                    raise AssertionError(f"uart_tx: stop bit low after byte {value:#04x}")
            # Out of the read-only phase first: whoever the event wakes may drive pins.
            await ClockCycles(self.clk, 1)
            self._rx_bytes.append(value)
            self.received += 1
            self._event.set()

    async def send_byte(self, byte, *, stop=1):
        """One byte on the line (``stop=0``: a framing error)."""
        for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [stop]:
            self.rx.value = bit
            await ClockCycles(self.clk, self.cpb)
        self.rx.value = 1

    async def idle(self, bits):
        await ClockCycles(self.clk, max(1, int(bits * self.cpb)))

    async def write(self, data):
        async with self._lock:
            for byte in data:
                if self.max_gap and self.rnd.random() < self.gap_rate:
                    await self.idle(self.rnd.randint(1, self.max_gap))
                await self.send_byte(byte)
                self.sent += 1

    async def read(self, timeout):
        if not self._rx_bytes:
            self._event.clear()
            if timeout is None:
                await self._event.wait()
            else:
                await First(self._event.wait(),
                            ClockCycles(self.clk, max(1, int(timeout * self.cpb))))
        data = bytes(self._rx_bytes)
        self._rx_bytes.clear()
        return data


async def _setup(dut, tag):
    p = params()
    cfg = MeshConfig.from_dict(p["cfg"])
    await start_clock(dut, CLOCK_NS)
    dut.uart_rx.value = 1
    await reset(dut)
    rnd = rng(tag)
    link = CocotbUartLink(dut, p["clocks_per_bit"], rnd=rnd, max_gap=p.get("max_gap", 0))
    transport = UartTransport(cfg, link)
    drv = HostDriver(cfg, transport, timeout=p.get("timeout", 200_000))
    for y in range(cfg.rows):
        for x in range(cfg.cols):
            await drv.reset(x, y)
    return cfg, drv, transport, link, rnd


@cocotb.test()
async def gemm(dut):
    cfg, drv, transport, link, rnd = await _setup(dut, "gemm")
    await run_gemm(cfg, drv, rnd, **params().get("gemm", {}))
    assert int(dut.frame_errors.value) == 0
    assert transport.naks == {} and transport.retransmits == 0, transport.naks
    dut._log.info(f"GEMM over the UART: {link.sent} bytes sent, {link.received} received, "
                  f"{int(dut.packets_in.value)} packets in, {int(dut.packets_out.value)} out")


@cocotb.test()
async def rejects(dut):
    cfg, drv, transport, link, rnd = await _setup(dut, "rejects")
    p = params()
    tile = (cfg.cols - 1, cfg.rows - 1)
    addr = 0x20
    before = [rnd.getrandbits(cfg.word_bits) for _ in range(4)]
    await drv.write_sram(*tile, addr, before)
    evil = [w ^ 0xFFFF for w in before]
    packet = Packet(Opcode.WRITE, tile, drv.host,
                    drv._addr(Space.SRAM, addr), evil)
    frame = bytearray(packet_frame(cfg, 200, packet.flits(cfg)))
    packets_in = int(dut.packets_in.value)
    wait = 40 * len(frame) + 4 * p["timeout_bits"]

    async def expect_nak(reason, errors):
        answer = await transport.next_answer(wait)
        assert answer is not None, f"no answer, NAK {reason.name} expected"
        assert (answer.type, answer.reason, answer.errors) == (FrameType.NAK, reason, errors), \
            answer
        assert int(dut.frame_errors.value) == errors

    # A flipped bit in the payload: CRC.
    bad = bytearray(frame)
    bad[-5] ^= 0x08
    await transport.send_raw(bad)
    await expect_nak(NakReason.CRC, 1)
    # The frame cut short, then silence: TIMEOUT.
    await transport.send_raw(frame[:len(frame) // 2])
    await expect_nak(NakReason.TIMEOUT, 2)
    # A byte without its stop bit inside a frame: FRAMING.
    await transport.send_raw(frame[:6])
    await link.send_byte(0x3C, stop=0)
    await expect_nak(NakReason.FRAMING, 3)
    await link.idle(2 * p["timeout_bits"])
    # Garbage without SYNC is skipped silently; the driver still works afterwards.
    await transport.send_raw(bytes([0x00, 0xFF, 0x13, 0x37]))
    assert await transport.next_answer(p["timeout_bits"] * 2) is None
    assert int(dut.packets_in.value) == packets_in, "a rejected frame reached the mesh"
    assert await drv.read_sram(*tile, addr, 4) == before, "a rejected frame wrote the SRAM"
    # The intact frame is injected once, even when it is sent twice (lost ACK).
    seq = transport._seq
    good = packet_frame(cfg, seq, packet.flits(cfg))
    n = int(dut.packets_in.value)
    for _ in range(2):
        await transport.send_raw(good)
        answer = await transport.next_answer(wait)
        assert (answer.type, answer.seq) == (FrameType.ACK, seq), answer
    assert int(dut.packets_in.value) == n + 1
    transport._seq = (seq + 1) % 256
    assert await drv.read_sram(*tile, addr, 4) == evil
    assert int(dut.frame_errors.value) == 3
    assert transport.naks == {NakReason.CRC: 1, NakReason.TIMEOUT: 1, NakReason.FRAMING: 1}
    st = await drv.read_status(*tile)
    dut._log.info(f"rejects: {st}")
