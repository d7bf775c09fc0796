# amaranth: UnusedElaboratable=no
# (the constructor tests make components that fail before they can be elaborated)
"""The DMA engine in Amaranth's simulator against :func:`tilemesh.model.reference.dma_packets`.

Random command sequences (2-D strided writes to tiles and to the host, reads, signals, notifies)
with random gaps on ``cmd``, a random-latency SRAM with random ``read_req`` backpressure and
``read_resp`` gaps, random backpressure on ``tx`` and an NI model that answers each READ_REQ
after a random delay: the flit stream must equal the model's packets exactly, only one READ_REQ
may be outstanding, ``resp_awaited`` must cover it, and ``busy`` must cover each command. Abort
(RESET) at random moments must leave only whole packets, with the right words, and an idle
engine that then works normally.
"""

import random
from collections import deque

import pytest
from amaranth.lib import data
from amaranth.sim import Simulator

from tilemesh.compiler.assembler import assemble
from tilemesh.config import ConfigError, MeshConfig, NocConfig, TileConfig, preset
from tilemesh.layouts import InstrOp, InstrWord, Opcode, header_layout, read_req_layout
from tilemesh.model.reference import dma_packets, layout_get, layout_set
from tilemesh.noc.routing import host_address
from tilemesh.tile.dma import DmaEngine, dma_command_layout

SEED = 777

CONFIGS = {
    "default": (preset("default"), (1, 0)),
    # 3-flit NOTIFY payloads, 1x3 mesh with the host on the east, short packets.
    "w24-east": (MeshConfig(rows=1, cols=3, host_x=2, host_side="east",
                            tile=TileConfig(pe_rows=2, pe_cols=2, acc_bits=16, simd_lanes=2,
                                            sram_banks=2, sram_depth=128, imem_depth=16),
                            noc=NocConfig(flit_bits=24, max_packet_flits=3)),
                 (2, 0)),
}


def command(cfg, text, pc=0):
    """The DMA queue entry for one instruction of assembly ``text`` (a dma_command_layout int)."""
    word = assemble(text, cfg)[0]
    il = data.Layout.cast(InstrWord)
    cl = data.Layout.cast(dma_command_layout())
    c = layout_set(cl, 0, ("op",), layout_get(il, word, "op"))
    c = layout_set(cl, c, ("args",), layout_get(il, word, "args"))
    return layout_set(cl, c, ("pc",), pc)


def random_command(cfg, rnd, here):
    sw = cfg.tile.sram_words
    kind = rnd.choice(["write", "write", "write", "read", "read", "signal", "notify"])
    tiles = [(x, y) for y in range(cfg.rows) for x in range(cfg.cols)]
    if kind in ("write", "read"):
        rows, cols = rnd.randrange(1, 4), rnd.randrange(1, 3 * cfg.noc.max_packet_flits + 2)
        ls, rs = rnd.randrange(cols, cols + 8), rnd.randrange(0, cols + 8)
        local = rnd.randrange(0, sw - (rows - 1) * ls - cols)
        remote = rnd.randrange(0, sw - (rows - 1) * rs - cols)
        dst = "host" if kind == "write" and rnd.random() < 0.3 else \
            "tile=({},{})".format(*rnd.choice(tiles))
        sig = f" signal={rnd.randrange(16)}" if rnd.random() < 0.5 else ""
        text = (f"dma.{kind} {dst} local={local} remote={remote} rows={rows} cols={cols} "
                f"local_stride={ls} remote_stride={rs}{sig}")
    elif kind == "signal":
        tile = "" if rnd.random() < 0.3 else " tile=({},{})".format(*rnd.choice(tiles))
        text = f"signal sem={rnd.randrange(16)}{tile}"
    else:
        text = f"notify code={rnd.randrange(1 << 16)} value={rnd.getrandbits(32)}"
    return command(cfg, text, pc=rnd.randrange(cfg.tile.imem_depth))


class Bench:
    """Drives a :class:`DmaEngine` with random timing on every interface (see module doc)."""

    def __init__(self, cfg, here, seed, *, gap=0.3, stall=0.3, sram_stall=0.2, sram_gap=0.2,
                 latency=(1, 4)):
        self.cfg, self.here = cfg, here
        self.dut = DmaEngine(cfg)
        self.rnd = random.Random(seed)
        self.sram = [self.rnd.getrandbits(cfg.word_bits) for _ in range(cfg.tile.sram_words)]
        self.gap, self.stall = gap, stall
        self.sram_stall, self.sram_gap = sram_stall, sram_gap
        self.latency = latency      # SRAM response latency range (cycles)
        self.flits = []             # (data, last) sent on tx
        self.reads_issued = 0       # SRAM reads requested
        self.reads_taken = 0        # responses taken
        self.awaiting = None        # words of the outstanding READ_REQ
        self.answer = deque()       # pending (delay, words) answers
        self.cycle = 0
        self.busy_log = []
        self.respond = True         # the NI model answers READ_REQs

    def add_to(self, sim):
        sim.add_testbench(self._place)
        sim.add_testbench(self._sram, background=True)
        sim.add_testbench(self._tx, background=True)
        sim.add_testbench(self._ni, background=True)

    async def _place(self, ctx):
        # The position is an input (one module for every tile): constant, set before the clock.
        ctx.set(self.dut.x, self.here[0])
        ctx.set(self.dut.y, self.here[1])

    async def _sram(self, ctx):
        port = self.dut.sram
        pipe = deque()  # words requested, in order, with the cycle they may come back
        while True:
            ctx.set(port.read_req.ready, self.rnd.random() >= self.sram_stall)
            show = bool(pipe) and pipe[0][0] <= self.cycle and self.rnd.random() >= self.sram_gap
            ctx.set(port.read_resp.valid, show)
            if show:
                ctx.set(port.read_resp.payload.data, pipe[0][1])
            _, _, rv, rr, addr, pv, pr, wv = await ctx.tick().sample(
                port.read_req.valid, port.read_req.ready, port.read_req.payload.addr,
                port.read_resp.valid, port.read_resp.ready, port.write.valid)
            assert not wv, "the DMA engine never writes SRAM"
            if pv and pr:
                pipe.popleft()
                self.reads_taken += 1
            if rv and rr:
                assert addr < len(self.sram), f"read of word {addr:#x} beyond the SRAM"
                pipe.append((self.cycle + self.rnd.randrange(*self.latency), self.sram[addr]))
                self.reads_issued += 1

    async def _tx(self, ctx):
        tx = self.dut.ni.tx
        while True:
            ready = self.rnd.random() >= self.stall
            ctx.set(tx.ready, ready)
            _, _, valid, payload, last, busy = await ctx.tick().sample(
                tx.valid, tx.payload.data, tx.payload.last, self.dut.busy)
            self.cycle += 1
            self.busy_log.append(busy)
            if valid and ready:
                self.flits.append((payload, last))

    async def _ni(self, ctx):
        """Answers each READ_REQ (once its payload flit has left) after a random delay with
        resp_word pulses, the last with resp_done, only while resp_awaited."""
        ni = self.dut.ni
        hl = data.Layout.cast(header_layout(self.cfg))
        seen = 0
        words = None
        while True:
            pulse = done = False
            if self.answer and self.answer[0][0] <= self.cycle and not ctx.get(ni.resp_awaited):
                self.answer.popleft()   # a READ_RESP nobody awaits: the NI drops it whole
            if self.answer and self.answer[0][0] <= self.cycle and self.rnd.random() < 0.7:
                left = self.answer[0][1]
                pulse = True
                done = left == 1
            ctx.set(ni.resp_word, pulse)
            ctx.set(ni.resp_done, done)
            _, _, awaited = await ctx.tick().sample(ni.resp_awaited)
            if pulse:
                assert awaited, "READ_RESP words while none is awaited"
                t, left = self.answer[0]
                if left == 1:
                    self.answer.popleft()
                    self.awaiting = None
                else:
                    self.answer[0] = (t, left - 1)
            # Look at newly sent flits for READ_REQs.
            while seen < len(self.flits):
                flit, last = self.flits[seen]
                if words is None:
                    hdr = hl.from_bits(flit)
                    words = (hdr.opcode, hdr.length)
                    if words[0] == Opcode.READ_REQ:
                        assert self.awaiting is None, "a second READ_REQ while one is outstanding"
                        self.awaiting = "header"
                elif words[0] == Opcode.READ_REQ:
                    count = data.Layout.cast(read_req_layout(self.cfg)).from_bits(flit).count
                    self.awaiting = count
                    if self.respond:
                        self.answer.append((self.cycle + self.rnd.randrange(2, 12), count))
                if last:
                    words = None
                seen += 1

    async def send(self, ctx, cmd):
        while self.rnd.random() < self.gap:
            await ctx.tick()
        ctx.set(self.dut.cmd.valid, 1)
        ctx.set(self.dut.cmd.payload.as_value(), cmd)
        await ctx.tick().until(self.dut.cmd.ready)
        ctx.set(self.dut.cmd.valid, 0)

    async def idle(self, ctx, limit=5000):
        for _ in range(limit):
            if not ctx.get(self.dut.busy) and not self.answer:
                return
            await ctx.tick()
        raise AssertionError(f"DMA engine still busy after {limit} cycles")


def _flat(packets):
    return [f for p in packets for f in p]


def _packets(flits):
    out, cur = [], []
    for f in flits:
        cur.append(f)
        if f[1]:
            out.append(cur)
            cur = []
    assert not cur, "a packet without a tail"
    return out


def _simulate(bench, main):
    sim = Simulator(bench.dut)
    sim.add_clock(1e-6)
    bench.add_to(sim)
    sim.add_testbench(main)
    sim.run()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_random_commands_match_model(name):
    cfg, here = CONFIGS[name]
    seed = f"{SEED}:{name}"
    bench = Bench(cfg, here, seed)
    cmds = [random_command(cfg, bench.rnd, here) for _ in range(30)]
    expected = [dma_packets(cfg, *here, c, bench.sram) for c in cmds]

    async def main(ctx):
        for c in cmds:
            await bench.send(ctx, c)
            # busy from the cycle after the command is taken
            assert ctx.get(bench.dut.busy)
        await bench.idle(ctx)
        for _ in range(3):
            await ctx.tick()

    _simulate(bench, main)
    assert _packets(bench.flits) == [p for e in expected for p in e]
    assert bench.reads_issued == bench.reads_taken
    # The variety the test relies on: host writes, multi-packet rows, reads with a signal.
    ops = [layout_get(data.Layout.cast(dma_command_layout()), c, "op") for c in cmds]
    assert {InstrOp.DMA_WRITE.value, InstrOp.DMA_READ.value, InstrOp.SIGNAL.value,
            InstrOp.NOTIFY.value} <= set(ops)
    hl = data.Layout.cast(header_layout(cfg))
    dsts = {(hl.from_bits(p[0][0]).dst_x, hl.from_bits(p[0][0]).dst_y) for p in
            _packets(bench.flits)}
    assert host_address(cfg) in dsts


def test_write_streams_one_word_per_cycle():
    """Without stalls, and the SRAM array's 2-cycle read latency, a write sends header + 16
    words in 17 cycles per packet."""
    cfg, here = CONFIGS["default"]
    bench = Bench(cfg, here, f"{SEED}:rate", gap=0, stall=0, sram_stall=0, sram_gap=0,
                  latency=(2, 3))
    c = command(cfg, "dma.write tile=(1,1) local=0x10 remote=0x20 rows=4 cols=32")

    async def main(ctx):
        await bench.send(ctx, c)
        t0 = bench.cycle
        await bench.idle(ctx)
        # 8 packets of 17 flits, plus the first word's latency.
        assert bench.cycle - t0 <= 8 * 17 + 3

    _simulate(bench, main)
    assert _packets(bench.flits) == dma_packets(cfg, *here, c, bench.sram)


@pytest.mark.parametrize("trial", range(6))
def test_abort_leaves_whole_packets(trial):
    cfg, here = CONFIGS["default"]
    bench = Bench(cfg, here, f"{SEED}:abort:{trial}")
    rnd = bench.rnd
    big = command(cfg, "dma.write tile=(0,1) local=0x100 remote=0x40 rows=3 cols=40 "
                       "local_stride=50 remote_stride=41 signal=4")
    read = command(cfg, "dma.read tile=(1,1) local=0x300 remote=0x200 rows=2 cols=20 signal=2")
    after = command(cfg, "signal sem=9 tile=(1,0)")
    first = big if trial % 2 == 0 else read
    if trial % 2:
        bench.respond = trial % 4 == 1   # sometimes the responder never answers

    async def main(ctx):
        await bench.send(ctx, first)
        for _ in range(rnd.randrange(1, 120)):
            await ctx.tick()
        ctx.set(bench.dut.abort, 1)
        await ctx.tick()
        ctx.set(bench.dut.abort, 0)
        bench.answer.clear()   # a late READ_RESP is the NI's to drop (resp_awaited is 0)
        # Idle soon: at most a packet's worth of words, drained reads, no hang.
        waited = 0
        while ctx.get(bench.dut.busy):
            assert waited < 60, "still busy 60 cycles after abort"
            waited += 1
            await ctx.tick()
        assert not ctx.get(bench.dut.ni.resp_awaited)
        bench.answer.clear()
        bench.awaiting = None
        await bench.send(ctx, after)
        await bench.idle(ctx)
        for _ in range(3):
            await ctx.tick()

    _simulate(bench, main)
    packets = _packets(bench.flits)
    want = dma_packets(cfg, *here, first, bench.sram)
    tail = dma_packets(cfg, *here, after, bench.sram)
    assert packets[-1:] == tail
    done = packets[:-1]
    # What left before the abort is a prefix of the command's packets, each whole and exact.
    assert done == want[:len(done)]
    if first is big:
        assert len(done) < len(want), "abort came too late to test anything"
    assert bench.reads_issued == bench.reads_taken


def test_constructor_checks():
    cfg = preset("default")
    with pytest.raises(ValueError, match=r"read_ahead must be a positive integer, not 0"):
        DmaEngine(cfg, read_ahead=0)
    small = MeshConfig(rows=1, cols=1, noc=NocConfig(flit_bits=32, max_packet_flits=1))
    with pytest.raises(ConfigError, match=r"NocConfig\.max_packet_flits must be in 2\.\.256 "
                                          r"for a mesh of tiles \(a NOTIFY packet carries 2 "
                                          r"payload flits of 32 bits\), not 1"):
        DmaEngine(small)
