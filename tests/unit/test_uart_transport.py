"""The host driver's UART back end (tilemesh.host.uart.UartTransport) against the Python model of
the bridge (tilemesh.uart.protocol.BridgeModel), over a fake line that can corrupt and lose
bytes: every packet reaches the "mesh" exactly once, in order, whatever the line does."""

import asyncio
import random

import pytest

from tilemesh.config import MeshConfig, NocConfig, TileConfig
from tilemesh.host.driver import HostError
from tilemesh.host.uart import UartLink, UartTransport
from tilemesh.uart.protocol import BridgeModel, NakReason, encode_frame, packet_frame

CFG = MeshConfig(rows=1, cols=1,
                 tile=TileConfig(pe_rows=2, pe_cols=2, acc_bits=24, simd_lanes=2, sram_banks=2,
                                 sram_depth=256, imem_depth=64),
                 noc=NocConfig(flit_bits=32, fifo_depth=2, max_packet_flits=4))
TIMEOUT = 50


class ModelLink(UartLink):
    """Bytes written go to a BridgeModel (after the line's damage); its answers and the
    "mesh's" packets come back. Time: 10 bit periods per byte."""

    def __init__(self, rnd, *, corrupt=0.0, lose_answer=0.0):
        self.model = BridgeModel(CFG, TIMEOUT)
        self.rnd, self.corrupt, self.lose_answer = rnd, corrupt, lose_answer
        self.t = 0
        self.pending = bytearray()
        self.seen = 0
        self.damaged = self.lost = 0

    def now(self):
        return self.t

    async def write(self, data):
        for byte in data:
            if self.rnd.random() < self.corrupt:
                byte ^= 1 << self.rnd.randrange(8)
                self.damaged += 1
            self.model.feed(byte, 0)
            self.t += 10
        self.model.idle(TIMEOUT)      # the host waits after a frame: truncation shows
        for r in self.model.responses[self.seen:]:
            if self.rnd.random() < self.lose_answer:
                self.lost += 1
                continue
            body = r.body
            self.pending += encode_frame(r.type, r.seq, body)
        self.seen = len(self.model.responses)

    async def read(self, timeout):
        if not self.pending:
            self.t += timeout if timeout is not None else 0
            return b""
        data, self.pending = bytes(self.pending), bytearray()
        self.t += 10 * len(data)
        return data


def _packets(rnd, n):
    w = CFG.noc.flit_bits
    out = []
    for _ in range(n):
        k = rnd.randint(1, CFG.noc.max_packet_flits + 1)
        out.append([rnd.getrandbits(w) | (int(i == k - 1) << w) for i in range(k)])
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_packet_once_despite_a_bad_line(seed):
    rnd = random.Random(seed)
    print(f"seed {seed}")
    link = ModelLink(rnd, corrupt=0.004, lose_answer=0.1)
    transport = UartTransport(CFG, link, ack_timeout=2000, retries=20)
    packets = _packets(rnd, 40)

    async def run():
        for p in packets:
            await transport.send(p)

    asyncio.run(run())
    assert link.model.injected == packets
    assert link.damaged and link.lost, "the line did no damage: the test proves nothing"
    assert transport.retransmits >= link.lost
    assert sum(transport.naks.values()) >= 1
    assert set(transport.naks) <= {NakReason.CRC, NakReason.LENGTH, NakReason.TIMEOUT,
                                   NakReason.TYPE}


def test_board_packets_are_received_and_gives_up_on_a_dead_line():
    rnd = random.Random(4)
    link = ModelLink(rnd)
    transport = UartTransport(CFG, link, ack_timeout=100, retries=3)
    board = _packets(rnd, 3)
    # Frames from the board, with garbage and a corrupted frame between them.
    bad = bytearray(packet_frame(CFG, 1, board[1]))
    bad[6] ^= 4
    link.pending += (b"\x00\x13" + packet_frame(CFG, 0, board[0]) + bytes(bad)
                     + packet_frame(CFG, 2, board[2]))

    async def run():
        got = [await transport.receive(1000), await transport.receive(1000)]
        assert await transport.receive(1000) is None
        return got

    assert asyncio.run(run()) == [board[0], board[2]]
    assert transport._parser.crc_errors == 1

    class DeadLink(ModelLink):
        async def write(self, data):
            self.t += 10 * len(data)

    transport = UartTransport(CFG, DeadLink(rnd), ack_timeout=100, retries=3)
    with pytest.raises(HostError, match=r"did not accept frame SEQ 0 after 3 sends"):
        asyncio.run(transport.send(board[0]))
    assert transport.retransmits == 2
