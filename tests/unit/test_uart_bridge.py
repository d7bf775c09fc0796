# amaranth: UnusedElaboratable=no
"""The UART host protocol (tilemesh.uart.protocol) and the bridge RTL (tilemesh.uart.bridge) in
Amaranth's simulator, against the Python model of the bridge (BridgeModel) with random gaps on the
line, random backpressure on host_in and random idle cycles on host_out."""

import random

import pytest
from amaranth.sim import Simulator

from tilemesh.config import ConfigError, MeshConfig, NocConfig, TileConfig
from tilemesh.uart import UartBridge, UartRx, UartTx
from tilemesh.uart.protocol import (
    SYNC,
    BridgeModel,
    Frame,
    FrameParser,
    FrameType,
    NakReason,
    ProtocolError,
    body_flits,
    crc16,
    encode_frame,
    flit_bytes,
    max_body,
    packet_body,
    packet_frame,
)

# 24-bit flits: 3 bytes per flit, so the body length check is not a power-of-two test.
CFG = MeshConfig(rows=1, cols=1,
                 tile=TileConfig(pe_rows=2, pe_cols=2, acc_bits=24, simd_lanes=2, sram_banks=2,
                                 sram_depth=256, imem_depth=64),
                 noc=NocConfig(flit_bits=24, fifo_depth=2, max_packet_flits=4))
CPB = 4            # clocks per bit
TIMEOUT = 24       # bit periods


# -- protocol ------------------------------------------------------------------------------------

def test_crc16_check_value():
    assert crc16(b"123456789") == 0x29B1       # the catalogued CRC-16/CCITT-FALSE check value
    frame = encode_frame(FrameType.ACK, 7)
    assert crc16(frame[1:]) == 0               # residue over TYPE..CRC_LO
    assert frame == bytes([SYNC, 2, 7, 0, 0]) + crc16(bytes([2, 7, 0, 0])).to_bytes(2, "big")


def test_documented_example_frame():
    # docs/host-protocol.md, "Frame": SIGNAL 3 to tile (1, 0) on the default preset, SEQ 7.
    from tilemesh.config import preset
    from tilemesh.host.driver import Packet
    from tilemesh.layouts import Opcode
    cfg = preset("default")
    flits = Packet(Opcode.SIGNAL, (1, 0), (0, 0), 3, []).flits(cfg)
    assert flits == [0x00030301 | 1 << 32]
    assert packet_frame(cfg, 7, flits) == bytes.fromhex("a5 01 07 04 00 01 03 03 00 13 bf")


def test_packet_body_roundtrip_and_errors():
    w = CFG.noc.flit_bits
    flits = [0x123456, 0xABCDEF, 0x000001 | 1 << w]
    body = packet_body(CFG, flits)
    assert body == bytes([0x56, 0x34, 0x12, 0xEF, 0xCD, 0xAB, 1, 0, 0])
    assert body_flits(CFG, body) == flits
    with pytest.raises(ProtocolError, match=r"flit 0 of 2 has last=1"):
        packet_body(CFG, [1 | 1 << w, 2 | 1 << w])
    with pytest.raises(ProtocolError, match=r"a packet must have 1..5 flits, not 6"):
        packet_body(CFG, [0] * 5 + [1 << w])
    with pytest.raises(ProtocolError, match=r"non-zero multiple of 3 bytes, not 4"):
        body_flits(CFG, b"\0" * 4)
    with pytest.raises(ProtocolError, match=r"SEQ must be in 0..255, not 256"):
        encode_frame(FrameType.PACKET, 256)


def test_parser_resynchronises():
    rnd = random.Random(5)
    frames = [encode_frame(FrameType.PACKET, i, bytes(rnd.getrandbits(8) for _ in range(i)))
              for i in range(6)]
    bad = bytearray(frames[2])
    bad[6] ^= 0x10
    stream = (bytes([0x00, SYNC, 0x13]) + frames[0] + frames[1] + bytes(bad) + b"\xa5\xa5"
              + frames[3] + frames[4][:3] + frames[5])
    p = FrameParser(max_body=64)
    got = []
    for i in range(0, len(stream), 3):          # arbitrary chunking
        got += p.feed(stream[i:i + 3])
    # frames[4] was cut short: its bytes are skipped once frames[5] follows.
    assert [f.seq for f in got] == [0, 1, 3, 5]
    assert got[1] == Frame(FrameType.PACKET, 1, frames[1][5:-2])
    assert p.crc_errors >= 2


def test_bridge_model_rules():
    m = BridgeModel(CFG, TIMEOUT)
    good = packet_frame(CFG, 9, [5, 6 | 1 << 24])
    m.feed_all((b, 0) for b in good)
    m.feed_all((b, 0) for b in good)                     # retransmission: ACK, no injection
    cut = packet_frame(CFG, 10, [7 | 1 << 24])
    m.feed_all((b, 0) for b in cut[:5])
    m.feed(cut[5], TIMEOUT)                               # the line went quiet: truncated
    m.feed_all((b, 0) for b in encode_frame(FrameType.ACK, 3))           # not a host type
    m.feed_all((b, 0) for b in encode_frame(FrameType.PACKET, 4, b"\0" * 4))  # 4 % 3 != 0
    m.feed_all((b, 0) for b in encode_frame(FrameType.PACKET, 4, b"\0" * (max_body(CFG) + 3)))
    assert m.injected == [[5, 6 | 1 << 24]]
    kinds = [(r.type, r.seq, r.reason if r.type == FrameType.NAK else None) for r in m.responses]
    assert kinds == [(FrameType.ACK, 9, None), (FrameType.ACK, 9, None),
                     (FrameType.NAK, 10, NakReason.TIMEOUT), (FrameType.NAK, 0, NakReason.TYPE),
                     (FrameType.NAK, 4, NakReason.LENGTH), (FrameType.NAK, 4, NakReason.LENGTH)]
    assert [r.errors for r in m.responses[2:]] == [1, 2, 3, 4]


def test_parameters_are_checked():
    with pytest.raises(ConfigError, match=r"clocks_per_bit must be an integer in 4..1048576, "
                                          r"not 3"):
        UartBridge(CFG, clocks_per_bit=3)
    with pytest.raises(ConfigError, match=r"timeout_bits must be an integer in 1..65536, not 0"):
        UartBridge(CFG, clocks_per_bit=4, timeout_bits=0)
    with pytest.raises(ConfigError, match=r"clocks_per_bit must be .* not 2.5"):
        UartTx(2.5)
    with pytest.raises(ConfigError, match=r"clocks_per_bit"):
        UartRx(True)


# -- simulation helpers ----------------------------------------------------------------------------

async def line_send(ctx, pin, byte, cpb, *, stop=1):
    """One UART byte on ``pin`` (``stop=0``: a framing error)."""
    for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [stop]:
        ctx.set(pin, bit)
        await ctx.tick().repeat(cpb)
    ctx.set(pin, 1)


async def line_receive(ctx, pin, cpb, out):
    """Decode bytes from ``pin`` for ever, appending them to ``out`` (sampled mid-bit)."""
    t = None                    # cycles since the start bit's falling edge
    value = 0
    async for _, _, level in ctx.tick().sample(pin):
        if t is None:
            if level == 0:
                t, value = 0, 0
            continue
        t += 1
        if t % cpb == cpb // 2:
            bit = t // cpb - 1      # -1: none (start bit), 0..7 data, 8 stop
            if 0 <= bit < 8:
                value |= level << bit
            elif bit == 8:
                assert level == 1, "stop bit low on tx"
                out.append(value)
                t = None


def _random_packet(rnd, cfg):
    n = rnd.randint(1, cfg.noc.max_packet_flits + 1)
    w = cfg.noc.flit_bits
    return [rnd.getrandbits(w) | (int(i == n - 1) << w) for i in range(n)]


def _host_out_packet(rnd, cfg):
    """A packet as the mesh sends them: the header's length field matches the flit count."""
    from amaranth.lib import data

    from tilemesh.layouts import Opcode, header_layout
    n = rnd.randint(0, cfg.noc.max_packet_flits)
    layout = data.Layout.cast(header_layout(cfg))
    hdr = layout.const({"dst_x": 0, "dst_y": 0, "src_x": 0, "src_y": 0, "opcode": Opcode.NOTIFY,
                        "length": n, "addr": rnd.getrandbits(8)}).as_value().value
    w = cfg.noc.flit_bits
    words = [hdr] + [rnd.getrandbits(w) for _ in range(n)]
    return [d | (int(i == n) << w) for i, d in enumerate(words)]


def _items(rnd, cfg, count):
    """Random stimulus: (kind, [(byte or None, gap bits)]). Kinds: good, dup, corrupt,
    truncated, garbage, framing."""
    seq = 0
    last_good = None
    items = []
    for _ in range(count):
        kind = rnd.choices(["good", "dup", "corrupt", "truncated", "garbage", "framing"],
                           [6, 1, 2, 2, 1, 1])[0]
        if kind == "dup" and last_good is None:
            kind = "good"
        if kind == "dup":
            frame = last_good
        else:
            frame = bytearray(packet_frame(cfg, seq, _random_packet(rnd, cfg)))
        if kind == "good":
            last_good = bytes(frame)
            seq = (seq + 1) % 256
        elif kind == "corrupt":
            i = rnd.randrange(1, len(frame))
            frame[i] ^= 1 << rnd.randrange(8)
        elif kind == "truncated":
            frame = frame[:rnd.randrange(1, len(frame))]
        elif kind == "garbage":
            frame = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 12)))
        gaps = [rnd.choice([0, 0, 0, rnd.randint(1, TIMEOUT // 3)]) for _ in frame]
        stim = list(zip(frame, gaps, strict=True))
        if kind == "framing":
            i = rnd.randrange(1, len(stim))
            stim[i] = (None, stim[i][1])
        items.append((kind, stim))
    return items


# -- the bridge against the model ------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2])
def test_bridge_against_model(seed):
    rnd = random.Random(seed)
    print(f"seed {seed}")
    dut = UartBridge(CFG, clocks_per_bit=CPB, timeout_bits=TIMEOUT)
    model = BridgeModel(CFG, TIMEOUT)
    items = _items(rnd, CFG, 40)
    out_packets = [_host_out_packet(rnd, CFG) for _ in range(12)]
    injected, partial, tx_bytes = [], [], []
    parser = FrameParser(max_body=max_body(CFG))
    state = {"done": False}

    async def host(ctx):
        got = []                 # ACK/NAK frames seen so far
        tx_frames = []
        seen = 0
        for kind, stim in items:
            for byte, gap in stim:
                await ctx.tick().repeat(gap * CPB + 1)
                model.feed(byte, gap)
                await line_send(ctx, dut.rx, 0x55 if byte is None else byte, CPB,
                                stop=int(byte is not None))
            if model.in_frame:
                await ctx.tick().repeat(2 * TIMEOUT * CPB)
                model.idle(2 * TIMEOUT)
            # Stop-and-wait: the next frame goes once the answer to this one is in.
            quiet = 0
            for _ in range(20_000):
                new = parser.feed(bytes(tx_bytes[seen:]))
                quiet = 0 if len(tx_bytes) > seen else quiet + 1
                seen = len(tx_bytes)
                got += [f for f in new if f.type != FrameType.PACKET]
                tx_frames += [f for f in new if f.type == FrameType.PACKET]
                if len(got) >= len(model.responses):
                    break
                if quiet > 2000 and sum(r.type == FrameType.ACK for r in got) == sum(
                        r.type == FrameType.ACK for r in model.responses):
                    break       # only NAKs missing: dropped (see below)
                await ctx.tick()
            # A NAK is dropped (counted all the same) when one is still waiting for the line:
            # the answers are the model's, in order, possibly with NAKs missing; ACKs never are.
            it = iter(model.responses)
            assert all(r in it for r in got), f"after a {kind} item: {got} vs {model.responses}"
            acks = [r for r in got if r.type == FrameType.ACK]
            assert acks == [r for r in model.responses if r.type == FrameType.ACK], \
                f"after a {kind} item {stim}: {got[-3:]} vs {model.responses[-3:]}"
            assert ctx.get(dut.frame_errors) == model.errors
        await ctx.tick().repeat(3000)
        tx_frames += [f for f in parser.feed(bytes(tx_bytes[seen:])) if f.type == FrameType.PACKET]
        assert len(got) >= len(model.responses) - 2, "more than a couple of NAKs were dropped"
        assert injected == model.injected
        assert ctx.get(dut.packets_in) == len(model.injected)
        assert [body_flits(CFG, f.body) for f in tx_frames] == out_packets
        assert [f.seq for f in tx_frames] == list(range(len(out_packets)))
        assert ctx.get(dut.packets_out) == len(out_packets)
        assert parser.crc_errors == 0 and parser.skipped == 0
        state["done"] = True

    async def mesh_in(ctx):          # the mesh's host_in, with random backpressure
        while True:
            ready = rnd.random() < 0.6
            ctx.set(dut.host_in.ready, ready)
            _, _, valid, flit = await ctx.tick().sample(dut.host_in.valid,
                                                        dut.host_in.payload.as_value())
            if valid and ready:
                partial.append(flit)
                if flit >> CFG.noc.flit_bits:
                    injected.append(list(partial))
                    partial.clear()

    async def mesh_out(ctx):         # the mesh's host_out, with random idle cycles
        for packet in out_packets:
            for flit in packet:
                await ctx.tick().repeat(rnd.randint(1, 400) if rnd.random() < 0.2 else 1)
                ctx.set(dut.host_out.valid, 1)
                ctx.set(dut.host_out.payload.as_value(), flit)
                await ctx.tick().until(dut.host_out.ready)
                ctx.set(dut.host_out.valid, 0)

    async def monitor(ctx):
        await line_receive(ctx, dut.tx, CPB, tx_bytes)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(host)
    sim.add_testbench(mesh_in, background=True)
    sim.add_testbench(mesh_out, background=True)
    sim.add_testbench(monitor, background=True)
    sim.run()
    assert state["done"]
    assert {k for k, _ in items} >= {"good", "corrupt", "truncated"}


def test_bridge_busy_and_retransmission():
    """A frame that arrives while the previous packet cannot enter the mesh is NAKed BUSY and
    dropped; its retransmission is injected; a retransmission of an injected one is not."""
    dut = UartBridge(CFG, clocks_per_bit=CPB, timeout_bits=TIMEOUT)
    w = CFG.noc.flit_bits
    p0, p1 = [1, 2 | 1 << w], [3 | 1 << w]
    f0, f1 = packet_frame(CFG, 0, p0), packet_frame(CFG, 1, p1)
    tx_bytes, injected = [], []
    parser = FrameParser()
    got = []

    async def host(ctx):
        async def send(frame):
            for b in frame:
                await line_send(ctx, dut.rx, b, CPB)

        async def answers(n):
            for _ in range(5000):
                got.extend(parser.feed(bytes(tx_bytes)))
                tx_bytes.clear()
                if len(got) >= n:
                    return
                await ctx.tick()
            raise AssertionError(f"{len(got)} answers, {n} expected: {got}")

        ctx.set(dut.host_in.ready, 0)       # the mesh does not take anything yet
        await send(f0)
        await send(f1)
        await answers(1)
        assert (got[0].type, got[0].seq, got[0].reason) == (FrameType.NAK, 1, NakReason.BUSY)
        assert ctx.get(dut.frame_errors) == 1
        await ctx.tick().repeat(50)
        assert ctx.get(dut.host_in.valid) and not injected   # f0 waits, whole, in the buffer
        ctx.set(dut.host_in.ready, 1)
        await answers(2)
        assert (got[1].type, got[1].seq) == (FrameType.ACK, 0)
        await send(f0)                      # the ACK was "lost": retransmitted
        await answers(3)
        assert (got[2].type, got[2].seq) == (FrameType.ACK, 0)
        await send(f1)
        await answers(4)
        assert (got[3].type, got[3].seq) == (FrameType.ACK, 1)
        await ctx.tick().repeat(10)
        assert injected == [p0, p1]
        assert ctx.get(dut.packets_in) == 2 and ctx.get(dut.frame_errors) == 1

    async def mesh_in(ctx):
        partial = []
        async for _, _, valid, ready, flit in ctx.tick().sample(
                dut.host_in.valid, dut.host_in.ready, dut.host_in.payload.as_value()):
            if valid and ready:
                partial.append(flit)
                if flit >> w:
                    injected.append(list(partial))
                    partial.clear()

    async def monitor(ctx):
        await line_receive(ctx, dut.tx, CPB, tx_bytes)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(host)
    sim.add_testbench(mesh_in, background=True)
    sim.add_testbench(monitor, background=True)
    sim.run()
    assert len(got) == 4


def test_uart_phy_loopback_with_gaps():
    """UartTx into UartRx: every byte arrives, in order, whatever the idle time between them."""
    from amaranth.hdl import Module
    rnd = random.Random(3)
    data = [rnd.getrandbits(8) for _ in range(40)]
    m = Module()
    m.submodules.tx = tx = UartTx(5)
    m.submodules.rx = rx = UartRx(5)
    m.d.comb += rx.rx.eq(tx.tx)
    got = []

    async def send(ctx):
        for byte in data:
            await ctx.tick().repeat(rnd.choice([1, 1, rnd.randint(1, 60)]))
            ctx.set(tx.data.valid, 1)
            ctx.set(tx.data.payload, byte)
            await ctx.tick().until(tx.data.ready)
            ctx.set(tx.data.valid, 0)
        await ctx.tick().repeat(200)

    async def receive(ctx):
        async for _, _, valid, payload, err in ctx.tick().sample(rx.data.valid, rx.data.payload,
                                                                  rx.framing_error):
            assert not err
            if valid:
                got.append(payload)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(send)
    sim.add_testbench(receive, background=True)
    sim.run()
    assert got == data
    assert flit_bytes(CFG) == 3
