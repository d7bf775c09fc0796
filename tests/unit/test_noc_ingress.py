"""The ingress checker: malformed packets dropped whole and counted by reason, well-formed ones
passed unchanged and in order, at one flit per cycle."""

import random

import pytest
from amaranth.sim import Simulator

from tilemesh.noc.ingress import DropReason, Ingress, ingress_depth
from tilemesh_sim.noc_model import HOST, PacketFactory, noc_config
from tilemesh_sim.noc_pysim import FlitSink, FlitSource, Harness

SEED = 99173
CFG = noc_config(2, 3, max_packet_flits=8)   # 4-bit length field: lengths 9..15 are invalid
TILES = [(x, y) for y in range(2) for x in range(3)]


def _run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def _counters(ctx, dut):
    return {r.value: ctx.get(dut.drops[r.value]) for r in DropReason}


class Bench:
    def __init__(self, dut, rnd, gap=0.0, stall=0.0):
        self.src = FlitSource(dut.inp, rnd=rnd, gap=gap)
        self.sink = FlitSink(dut.out, rnd=rnd, stall=stall)
        self.harness = Harness({"in": self.src}, {"out": self.sink})
        self.out = []
        self.log = []

    async def run(self, ctx, cycles):
        for _ in range(cycles):
            sent, received = await self.harness.step(ctx)
            self.out += [flits for _, flits in received]
            self.log.append((sent, received))


@pytest.mark.parametrize("kind", PacketFactory.MALFORMED)
def test_each_malformed_kind_is_dropped_whole_and_counted(kind):
    dut = Ingress(CFG)
    rnd = random.Random(f"{SEED}:{kind}")
    factory = PacketFactory(CFG, rnd)

    async def bench(ctx):
        b = Bench(dut, rnd)
        good = [factory.good((1, 0), rnd.choice(TILES), sizes="mixed") for _ in range(3)]
        bad = [factory.bad((1, 0), kind) for _ in range(3)]
        for g, x in zip(good, bad, strict=True):
            b.src.push(x)
            b.src.push(g)
        await b.run(ctx, 80)
        assert b.out == [g.flits() for g in good]
        reason = bad[0].drop_reason
        expect = {r.value: 3 if r.value == reason else 0 for r in DropReason}
        assert _counters(ctx, dut) == expect
        assert reason == kind.removesuffix("_short").removesuffix("_long")

    _run(dut, bench)


@pytest.mark.parametrize("gap,stall", [(0.0, 0.0), (0.4, 0.4), (0.1, 0.7)])
def test_random_mix_matches_reference(gap, stall):
    dut = Ingress(CFG)
    rnd = random.Random(f"{SEED}:{gap}:{stall}")
    factory = PacketFactory(CFG, rnd)

    async def bench(ctx):
        b = Bench(dut, rnd, gap=gap, stall=stall)
        packets = []
        for _ in range(60):
            if rnd.random() < 0.35:
                p = factory.bad(HOST, rnd.choice(factory.malformed_kinds()))
            else:
                p = factory.good(HOST, rnd.choice(TILES + [HOST]), sizes="mixed")
            packets.append(p)
            b.src.push(p)
        await b.run(ctx, 1500)
        assert not b.src.busy
        assert b.out == [p.flits() for p in packets if p.drop_reason is None]
        expect = {r.value: sum(p.drop_reason == r.value for p in packets) for r in DropReason}
        assert _counters(ctx, dut) == expect
        assert sum(expect.values()) > 10

    _run(dut, bench)


def test_longest_packets_flow_at_one_flit_per_cycle():
    dut = Ingress(CFG)
    rnd = random.Random(SEED)
    factory = PacketFactory(CFG, rnd)
    longest = CFG.noc.max_packet_flits

    async def bench(ctx):
        b = Bench(dut, rnd)
        for _ in range(12):
            b.src.push(factory.good((0, 0), (2, 1), sizes=longest))
        await b.run(ctx, 12 * (longest + 1) + longest + 4)
        taken = [c for c, (s, _) in enumerate(b.log) if s]
        assert taken == list(range(12 * (longest + 1))), "input stalled"
        given = [c for c, (_, r) in enumerate(b.log) if r]
        # Store and forward: each packet leaves one packet-time after it came, back to back.
        assert len(b.out) == 12
        assert given == [(k + 2) * (longest + 1) - 1 for k in range(12)]

    _run(dut, bench)


def test_one_flit_packet_leaves_in_the_next_cycle():
    dut = Ingress(CFG)
    rnd = random.Random(SEED)
    factory = PacketFactory(CFG, rnd)

    async def bench(ctx):
        b = Bench(dut, rnd)
        b.src.push(factory.good((0, 0), (2, 1), sizes=0))
        await b.run(ctx, 4)
        assert [c for c, (s, _) in enumerate(b.log) if s] == [0]
        assert [c for c, (_, r) in enumerate(b.log) if r] == [1]

    _run(dut, bench)


def test_packet_without_tail_is_discarded_until_a_last_flit():
    # A header of length 2 followed by 40 flits without `last`: nothing leaves, input never
    # stalls; the flit with `last` ends the bad packet and the next packet passes.
    dut = Ingress(CFG)
    rnd = random.Random(SEED)
    factory = PacketFactory(CFG, rnd)

    async def bench(ctx):
        b = Bench(dut, rnd)
        runaway = factory.good((0, 0), (1, 1), sizes=2)
        flits = runaway.flits()[:1] + [(rnd.getrandbits(32), 0) for _ in range(40)] + [(5, 1)]
        b.src.push(runaway, flits)
        good = factory.good((0, 0), (1, 1), sizes=3)
        b.src.push(good)
        await b.run(ctx, 60)
        taken = [c for c, (s, _) in enumerate(b.log) if s]
        assert taken == list(range(len(flits) + 4))
        assert b.out == [good.flits()]
        assert _counters(ctx, dut)["bad_tail"] == 1

    _run(dut, bench)


def test_drop_counters_saturate():
    dut = Ingress(CFG, counter_bits=2)
    rnd = random.Random(SEED)
    factory = PacketFactory(CFG, rnd)

    async def bench(ctx):
        b = Bench(dut, rnd)
        for _ in range(6):
            b.src.push(factory.bad((0, 0), "bad_opcode"))
        await b.run(ctx, 60)
        assert _counters(ctx, dut)["bad_opcode"] == 3

    _run(dut, bench)


def test_buffer_depth_and_no_bad_length_when_the_field_has_no_spare_value():
    assert ingress_depth(CFG) == CFG.noc.max_packet_flits + 2
    cfg = noc_config(2, 2, max_packet_flits=15)   # 4-bit length field, all values legal
    kinds = PacketFactory(cfg, random.Random(0)).malformed_kinds()
    assert "bad_length" not in kinds and "bad_tail_long" in kinds
