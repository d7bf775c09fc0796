# amaranth: UnusedElaboratable=no
# (the constructor tests make components that fail before they can be elaborated)
"""NoC benchmark traffic: the reference (random numbers, patterns, schedules), the generator and
the sink against it in Amaranth's simulator (random backpressure, stalls, every error the sink
checks), and a short run of the whole benchmark top on a 2x2 mesh."""

import random
import re
from collections import Counter

import pytest
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

from tilemesh.bench.traffic import (
    NocBenchTop,
    TrafficGenerator,
    TrafficPattern,
    TrafficSink,
    patterns_for,
    tag_layout,
)
from tilemesh.config import MeshConfig, NocConfig, TileConfig
from tilemesh.layouts import Opcode, header_layout
from tilemesh.model.reference import (
    TRAFFIC_PATTERNS,
    splitmix64,
    traffic_destination,
    traffic_payload_word,
    traffic_schedule,
    traffic_seed,
    xorshift64,
)

WIDE = NocConfig(flit_bits=64)
SQUARE = MeshConfig(rows=3, cols=3, noc=WIDE)
OBLONG = MeshConfig(rows=2, cols=3, noc=WIDE)   # not square, not a power of two


# -- the reference -------------------------------------------------------------------------------

def test_seed_constants_give_distinct_non_zero_states():
    for tile in range(32 * 32):
        c = splitmix64(tile)
        assert c >> 32 != c & 0xFFFFFFFF, tile   # so (seed, seed) ^ c is never zero
    states = {traffic_seed(s, t) for s in (0, 1, 0xFFFFFFFF) for t in range(1024)}
    assert 0 not in states and len(states) == 3 * 1024


def test_xorshift64_known_values():
    # Marsaglia's recurrence written out: x ^= x << 13; x ^= x >> 7; x ^= x << 17 (mod 2**64).
    assert xorshift64(1) == 0x40822041
    x = 88172645463325252
    for _ in range(3):
        x = xorshift64(x)
    assert x != 88172645463325252 and x < 1 << 64


def _states(n, seed=5):
    s = traffic_seed(seed, 0)
    for _ in range(n):
        yield s
        s = xorshift64(s)


def test_uniform_destinations_cover_every_tile_evenly():
    counts = Counter(traffic_destination("uniform", s, 1, 0, 2, 3) for s in _states(30000))
    assert set(counts) == {(x, y) for x in range(3) for y in range(2)}
    mean = 30000 / 6
    assert all(abs(c - mean) < 0.05 * mean for c in counts.values()), counts


def test_fixed_patterns_and_hotspot_fraction():
    s = traffic_seed(1, 0)
    assert traffic_destination("transpose", s, 2, 0, 3, 3) == (0, 2)
    assert traffic_destination("bit_complement", s, 0, 1, 2, 3) == (2, 0)
    with pytest.raises(ValueError, match=r"transpose traffic needs a square mesh, not 2x3"):
        traffic_destination("transpose", s, 0, 0, 2, 3)
    with pytest.raises(ValueError, match=r"traffic pattern must be one of uniform, .*not 'x'"):
        traffic_destination("x", s, 0, 0, 2, 3)
    hot = sum(traffic_destination("hotspot", s, 0, 0, 3, 3, hotspot=(1, 1),
                                  hotspot_threshold=16384) == (1, 1) for s in _states(20000))
    # A quarter by the threshold plus a ninth of the rest by uniform choice.
    assert abs(hot / 20000 - (0.25 + 0.75 / 9)) < 0.02


@pytest.mark.parametrize("aux, x, y, want", [
    (0, 1, 1, (1, 0)), (1, 1, 1, (2, 1)), (2, 1, 1, (1, 2)), (3, 1, 1, (0, 1)),  # inside
    (0, 0, 0, (0, 1)), (3, 0, 0, (1, 0)),                                        # reflected
    (2, 2, 2, (2, 1)), (1, 2, 2, (1, 2)),
])
def test_neighbour_pattern_reflects_at_the_edges(aux, x, y, want):
    state = (0x1234 << 48) | aux
    assert traffic_destination("neighbour", state, x, y, 3, 3) == want


def test_neighbour_on_a_single_tile_is_itself():
    assert traffic_destination("neighbour", 2, 0, 0, 1, 1) == (0, 0)


def test_payload_word_layout():
    word = traffic_payload_word(5, 3, 2, 64)
    fill = int("a5" * 8, 16)
    assert word ^ fill == 2 | (5 << 9) | (3 << 19)
    assert traffic_payload_word(5, 3, 2, 16) == (2 | (5 << 9)) ^ 0xA5A5


# -- generator ----------------------------------------------------------------------------------

def _sim(dut, testbench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()


def run_generator(cfg, x, y, *, pattern, packet_flits, threshold, seed, cycles,
                  ready=lambda t, rnd: True, window=(0, 0), lookahead=4, hotspot_threshold=0,
                  extra=2000):
    """Run a generator for ``cycles`` creation cycles then ``extra`` more; return the flits that
    left (cycle, data, last), the final counters and the cycles ``created`` pulsed."""
    dut = TrafficGenerator(cfg, x, y, lookahead=lookahead)
    flits, created = [], []
    result = {}

    async def testbench(ctx):
        ctx.set(dut.control.threshold, threshold)
        ctx.set(dut.control.pattern, pattern)
        ctx.set(dut.control.packet_flits, packet_flits)
        ctx.set(dut.control.seed, seed)
        ctx.set(dut.control.hotspot_threshold, hotspot_threshold)
        rnd = random.Random(seed)
        for t in range(cycles + extra):
            running = t < cycles
            ctx.set(dut.running, running)
            ctx.set(dut.measuring, running and window[0] <= t < window[1])
            ctx.set(dut.horizon, min(t, cycles - 1))
            r = ready(t, rnd)
            ctx.set(dut.out.ready, r)
            if ctx.get(dut.created):
                created.append(t)
            if ctx.get(dut.out.valid) and r:
                p = ctx.get(dut.out.payload)
                flits.append((t, p.data, p.last))
            await ctx.tick()
        result["stats"] = ctx.get(dut.stats)

    _sim(dut, testbench)
    return flits, result["stats"], created


def parse_packets(cfg, flits, packet_flits, src):
    """Split flits into packets, checking everything but the schedule."""
    hdr_l, tag_l = header_layout(cfg), tag_layout(cfg)
    assert len(flits) % packet_flits == 0
    packets = []
    for i in range(0, len(flits), packet_flits):
        cycle, bits, last = flits[i]
        hdr = hdr_l.from_bits(bits)
        tag = tag_l.from_bits(hdr.addr & ((1 << tag_l.size) - 1))
        assert (hdr.src_x, hdr.src_y) == src
        assert hdr.opcode == Opcode.WRITE and hdr.length == packet_flits - 1
        assert tag.seq == len(packets), "sequence numbers count from 0 without gaps"
        src_id = src[1] * cfg.cols + src[0]
        for k in range(1, packet_flits):
            _, word, tail = flits[i + k]
            assert word == traffic_payload_word(src_id, tag.seq, k, cfg.noc.flit_bits)
            assert tail == (k == packet_flits - 1)
        assert last == (packet_flits == 1)
        packets.append({"ts": tag.ts, "dst": (hdr.dst_x, hdr.dst_y), "header_cycle": cycle,
                        "tail_cycle": flits[i + packet_flits - 1][0]})
    return packets


@pytest.mark.parametrize("cfg, pattern, packet_flits, threshold", [
    (SQUARE, TrafficPattern.UNIFORM, 1, 30000),
    (SQUARE, TrafficPattern.TRANSPOSE, 3, 12000),
    (SQUARE, TrafficPattern.BIT_COMPLEMENT, 1, 52000),
    (SQUARE, TrafficPattern.HOTSPOT, 3, 20000),
    (SQUARE, TrafficPattern.NEIGHBOUR, 2, 30000),
    (OBLONG, TrafficPattern.UNIFORM, 4, 16000),
], ids=lambda v: getattr(v, "label", None))
def test_generator_matches_the_model_under_backpressure(cfg, pattern, packet_flits, threshold):
    x, y, seed, cycles = 2, 1, 11, 300

    def ready(t, rnd):   # random backpressure with a long stall in the middle
        return not 100 <= t < 180 and rnd.random() < 0.6

    flits, stats, created = run_generator(
        cfg, x, y, pattern=pattern, packet_flits=packet_flits, threshold=threshold, seed=seed,
        cycles=cycles, ready=ready, window=(50, 250), hotspot_threshold=24000)
    want = traffic_schedule(pattern.label, seed, x, y, cfg.rows, cfg.cols, threshold, cycles,
                            hotspot=(cfg.cols // 2, cfg.rows // 2), hotspot_threshold=24000)
    packets = parse_packets(cfg, flits, packet_flits, (x, y))
    assert [(p["ts"], *p["dst"]) for p in packets] == want
    assert created == [t for t, _, _ in want]
    assert all(p["header_cycle"] > p["ts"] for p in packets)
    assert stats.created == stats.injected_packets == len(want)
    assert stats.created_tagged == sum(50 <= t < 250 for t, _, _ in want)
    assert stats.injected_flits == len(want) * packet_flits


@pytest.mark.parametrize("threshold", [65536, 40000, 3000])
def test_generator_adds_no_delay_when_the_network_takes_every_flit(threshold):
    # An ideal source queue with an always-ready network: each packet leaves the cycle after it
    # is created (the generator's output register), one packet per cycle at full load.
    flits, stats, _ = run_generator(SQUARE, 0, 0, pattern=TrafficPattern.UNIFORM, packet_flits=1,
                                    threshold=threshold, seed=3, cycles=400, extra=5)
    packets = parse_packets(SQUARE, flits, 1, (0, 0))
    assert packets and all(p["header_cycle"] == p["ts"] + 1 for p in packets)
    if threshold == 65536:
        assert len(packets) == 400


def test_multi_flit_packets_leave_as_from_an_unbounded_fifo_queue():
    # Headers leave as soon as the packet exists and the previous packet's tail has left.
    flits, _, _ = run_generator(SQUARE, 1, 2, pattern=TrafficPattern.UNIFORM, packet_flits=4,
                                threshold=14000, seed=9, cycles=600, extra=200)
    packets = parse_packets(SQUARE, flits, 4, (1, 2))
    prev_tail = -1
    for p in packets:
        assert p["header_cycle"] == max(p["ts"] + 1, prev_tail + 1), p
        assert p["tail_cycle"] == p["header_cycle"] + 3
        prev_tail = p["tail_cycle"]


@pytest.mark.parametrize("lookahead", [1, 4])
def test_source_queue_catches_up_after_a_stall(lookahead):
    # 200 stalled cycles build a backlog of about 90 packets. Afterwards the replay examines
    # `lookahead` cycles of the sequence per cycle: with 4 it catches up with real time and
    # packets leave the cycle after they are created again; with 1 it never can.
    flits, stats, _ = run_generator(SQUARE, 1, 1, pattern=TrafficPattern.UNIFORM, packet_flits=1,
                                    threshold=30000, seed=4, cycles=1200, lookahead=lookahead,
                                    ready=lambda t, rnd: not 20 <= t < 220, extra=400)
    packets = parse_packets(SQUARE, flits, 1, (1, 1))
    assert stats.injected_packets == stats.created
    late = [p for p in packets[-100:] if p["header_cycle"] != p["ts"] + 1]
    if lookahead == 4:
        assert not late
    else:
        assert len(late) == 100


# -- sink ----------------------------------------------------------------------------------------

def make_packet(cfg, src, dst, ts, seq, packet_flits, *, opcode=Opcode.WRITE, length=None):
    """Flits (data, last) of a well-formed benchmark packet (or one spoiled by the caller)."""
    hdr_l, tag_l = header_layout(cfg), tag_layout(cfg)
    length = packet_flits - 1 if length is None else length
    tag = tag_l.const({"ts": ts, "seq": seq}).as_value().value
    hdr = hdr_l.const({"dst_x": dst[0], "dst_y": dst[1], "src_x": src[0], "src_y": src[1],
                       "opcode": opcode, "length": length, "addr": tag}).as_value().value
    src_id = src[1] * cfg.cols + src[0]
    flits = [[hdr, packet_flits == 1]]
    for k in range(1, packet_flits):
        flits.append([traffic_payload_word(src_id, seq, k, cfg.noc.flit_bits),
                      k == packet_flits - 1])
    return flits


def run_sink(cfg, x, y, packet_flits, schedule, *, window=(0, 1 << 20), stop=1 << 20):
    """Drive ``schedule``: a list of (cycle, flits) with each flit on the input for one cycle
    from ``cycle`` on (the sink is always ready); ``running`` falls at cycle ``stop``."""
    dut = TrafficSink(cfg, x, y)
    beats = {}
    for cycle, flits in schedule:
        for k, (data, last) in enumerate(flits):
            assert cycle + k not in beats
            beats[cycle + k] = (data, last)
    result = {"delivered": 0, "tagged": 0}

    async def testbench(ctx):
        ctx.set(dut.control.packet_flits, packet_flits)
        ctx.set(dut.warm_end, window[0])
        ctx.set(dut.meas_end, window[1])
        for t in range(max(beats) + 3):
            ctx.set(dut.now, t)
            ctx.set(dut.running, t < stop)
            assert ctx.get(dut.inp.ready)
            data, last = beats.get(t, (0, 0))
            ctx.set(dut.inp.valid, t in beats)
            ctx.set(dut.inp.payload, {"data": data, "last": last})
            result["delivered"] += ctx.get(dut.delivered)
            result["tagged"] += ctx.get(dut.delivered_tagged)
            await ctx.tick()
        result["stats"] = ctx.get(dut.stats)

    _sim(dut, testbench)
    return result


def test_sink_counts_latency_throughput_and_distance():
    cfg = SQUARE
    at = (1, 1)
    # (arrival cycle, source, created, seq); 3-flit packets: latency = tail cycle - created.
    arrivals = [(10, (0, 0), 2, 0), (14, (2, 2), 5, 0), (20, (0, 0), 15, 4), (30, (1, 1), 1, 9),
                (40, (1, 0), 38, 1), (50, (0, 0), 44, 5)]
    schedule = [(c, make_packet(cfg, src, at, ts, seq, 3)) for c, src, ts, seq in arrivals]
    res = run_sink(cfg, *at, 3, schedule, window=(2, 40), stop=42)
    s = res["stats"]
    lat = {c: c + 2 - ts for c, _, ts, _ in arrivals}     # tail two cycles after the header
    tagged = [c for c, _, ts, _ in arrivals if 2 <= ts < 40 and c + 2 < 42]
    assert res["delivered"] == s.packets == 6 and s.flits == 18
    assert res["tagged"] == 4     # created in the window (the pulse ignores `running`)
    assert s.tagged_packets == len(tagged) == 3   # the 4th arrives after `running` fell
    assert s.latency_sum == sum(lat[c] for c in tagged)
    assert s.latency_max == max(lat[c] for c in tagged)
    assert s.accepted_flits == sum(2 <= c + k < 40 for c, *_ in arrivals for k in range(3))
    assert s.errors == 0 and s.error_flags.as_value().value == 0
    by_hops = {}
    for c in tagged:
        src = next(a[1] for a in arrivals if a[0] == c)
        by_hops.setdefault(abs(src[0] - 1) + abs(src[1] - 1), []).append(lat[c])
    for h in range(cfg.rows + cfg.cols - 1):
        b = s.hops[h]
        got = by_hops.get(h, [])
        assert b.packets == len(got) and b.latency_sum == sum(got)
        assert b.latency_min == (min(got) if got else (1 << tag_layout(cfg)["ts"].shape.width) - 1)


def _spoil(kind, cfg, at):
    good = make_packet(cfg, (0, 2), at, 3, 8, 3)
    if kind == "wrong_dst":
        return make_packet(cfg, (0, 2), (2, 2), 3, 8, 3)
    if kind == "bad_header":
        return make_packet(cfg, (0, 2), at, 3, 8, 3, opcode=Opcode.SIGNAL)
    if kind == "order":
        return make_packet(cfg, (0, 2), at, 3, 6, 3)  # after seq 7 from the same source
    if kind == "timestamp":
        return make_packet(cfg, (0, 2), at, 900, 8, 3)
    if kind == "payload":
        good[1][0] ^= 1 << 40
        return good
    if kind == "tail":
        good[1][1] = 1   # tail one flit early: the next flit then looks like a header
        return good
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["wrong_dst", "bad_header", "order", "timestamp", "payload",
                                  "tail"])
def test_sink_flags_each_error(kind):
    cfg, at = SQUARE, (1, 0)
    first = make_packet(cfg, (0, 2), at, 3, 7, 3)
    schedule = [(10, first), (20, _spoil(kind, cfg, at))]
    s = run_sink(cfg, *at, 3, schedule)["stats"]
    flags = s.error_flags
    assert getattr(flags, kind) == 1, flags
    assert s.errors >= 1
    others = [f for f in ("wrong_dst", "bad_header", "order", "timestamp", "payload")
              if f != kind and kind != "tail"]
    assert all(getattr(flags, f) == 0 for f in others), flags


def test_sink_flags_a_bad_length_and_an_unknown_source():
    cfg, at = SQUARE, (1, 0)
    schedule = [(10, make_packet(cfg, (0, 2), at, 3, 7, 3, length=1)[:2])]
    s = run_sink(cfg, *at, 3, schedule)["stats"]
    assert s.error_flags.bad_header and not s.error_flags.order
    schedule = [(10, make_packet(cfg, (3, 0), at, 3, 7, 3))]
    s = run_sink(cfg, *at, 3, schedule)["stats"]
    assert s.error_flags.bad_header


def test_sink_forgets_sequence_numbers_on_reset():
    # Every run of the benchmark resets the design and restarts the sequence numbers from 0;
    # the per-source memory is not cleared by reset, so the sink must not compare against it.
    cfg, at = SQUARE, (1, 0)
    m = Module()
    m.domains.sync = cd = ClockDomain()
    m.submodules.sink = dut = TrafficSink(cfg, *at)
    runs = []

    async def testbench(ctx):
        ctx.set(dut.control.packet_flits, 1)
        ctx.set(dut.meas_end, 1 << 20)
        for seqs in ([0, 3, 9], [0, 1, 2]):
            ctx.set(cd.rst, 1)
            await ctx.tick()
            ctx.set(cd.rst, 0)
            for t, seq in enumerate(seqs):
                ctx.set(dut.now, t)
                ctx.set(dut.inp.valid, 1)
                ctx.set(dut.inp.payload, {"data": make_packet(cfg, (2, 2), at, 0, seq, 1)[0][0],
                                          "last": 1})
                await ctx.tick()
            ctx.set(dut.inp.valid, 0)
            await ctx.tick()
            runs.append((ctx.get(dut.stats.packets), ctx.get(dut.stats.errors)))

    _sim(m, testbench)
    assert runs == [(3, 0), (3, 0)]


# -- construction errors -------------------------------------------------------------------------

def test_flits_too_narrow_for_the_benchmark_tag():
    small_tile = TileConfig(sram_banks=1, sram_depth=256, imem_depth=256)
    cfg = MeshConfig(rows=4, cols=4, tile=small_tile, noc=NocConfig(flit_bits=40))
    with pytest.raises(ValueError, match=r"the NoC benchmark needs flit_bits of at least 52 on a "
                                         r"4x4 mesh .* not 40"):
        tag_layout(cfg)
    with pytest.raises(ValueError, match=r"needs flit_bits of at least 52"):
        NocBenchTop(cfg)


def test_construction_errors():
    with pytest.raises(ValueError, match=r"tile position must be a tile of the 2x3 mesh, "
                                         r"not \(3, 0\)"):
        TrafficGenerator(OBLONG, 3, 0)
    with pytest.raises(ValueError, match=r"tile position must be a tile of the 2x3 mesh"):
        TrafficSink(OBLONG, 0, 2)
    with pytest.raises(ValueError, match=r"transpose traffic needs a square mesh, not 2x3"):
        TrafficGenerator(OBLONG, 0, 0, patterns=[TrafficPattern.TRANSPOSE])
    with pytest.raises(ValueError, match=r"lookahead must be an integer in 1\.\.16, not 0"):
        TrafficGenerator(OBLONG, 0, 0, lookahead=0)
    with pytest.raises(ValueError, match=r"patterns must be TrafficPattern members, not 'x'"):
        NocBenchTop(SQUARE, patterns=["x"])
    with pytest.raises(ValueError, match=r"patterns must name at least one TrafficPattern"):
        NocBenchTop(SQUARE, patterns=[])
    with pytest.raises(ValueError, match=r"tile position must be a tile of the 3x3 mesh, "
                                         r"not \(3, 3\)"):
        TrafficGenerator(SQUARE, 0, 0, hotspot=(3, 3))
    with pytest.raises(ValueError, match=r"traffic pattern must be one of uniform, transpose"):
        TrafficPattern.from_label("tornado")
    assert [p.label for p in TrafficPattern] == list(TRAFFIC_PATTERNS)
    assert TrafficPattern.TRANSPOSE not in patterns_for(OBLONG)
    assert patterns_for(SQUARE) == tuple(TrafficPattern)


# -- the whole benchmark top on a small mesh -----------------------------------------------------

MESH = MeshConfig(rows=2, cols=2, noc=WIDE)


def run_top(cfg, *, pattern, packet_flits, threshold, seed, warmup, measure, drain,
            max_cycles=5000):
    dut = NocBenchTop(cfg)
    res = {}

    async def testbench(ctx):
        ctx.set(dut.control.threshold, threshold)
        ctx.set(dut.control.pattern, pattern)
        ctx.set(dut.control.packet_flits, packet_flits)
        ctx.set(dut.control.seed, seed)
        ctx.set(dut.warmup, warmup)
        ctx.set(dut.measure, measure)
        ctx.set(dut.drain, drain)
        res["config_error"] = ctx.get(dut.config_error)
        for _ in range(max_cycles):
            if ctx.get(dut.done):
                break
            await ctx.tick()
        res["done_at"], res["drained"] = ctx.get(dut.now), ctx.get(dut.drained)
        res["last_cycle"] = ctx.get(dut.last_cycle)
        for _ in range(max_cycles):
            if ctx.get(dut.idle):
                break
            await ctx.tick()
        res["idle"] = ctx.get(dut.idle)
        res["host_flits"] = ctx.get(dut.host_flits)
        res["tiles"] = []
        for i in range(cfg.tiles):
            ctx.set(dut.select, i)
            res["tiles"].append(ctx.get(dut.tile_stats))

    _sim(dut, testbench)
    return res


def test_bench_top_delivers_everything_it_creates():
    cfg, pf, thr, seed, warmup, measure = MESH, 2, 9000, 21, 40, 160
    res = run_top(cfg, pattern=TrafficPattern.UNIFORM, packet_flits=pf, threshold=thr,
                  seed=seed, warmup=warmup, measure=measure, drain=300)
    assert not res["config_error"] and res["drained"] and res["idle"]
    assert res["done_at"] >= warmup + measure
    last_running = res["last_cycle"]
    assert last_running == res["done_at"] - 1  # done rises after the last creation cycle
    tiles = res["tiles"]
    created = injected = delivered = tagged = tagged_in = 0
    for i, t in enumerate(tiles):
        y, x = divmod(i, cfg.cols)
        want = traffic_schedule("uniform", seed, x, y, cfg.rows, cfg.cols, thr, last_running + 1)
        g, s = t.generator, t.sink
        assert g.created == g.injected_packets == len(want)
        assert g.created_tagged == sum(warmup <= c < warmup + measure for c, _, _ in want)
        assert g.injected_flits == pf * g.injected_packets
        assert s.errors == 0 and s.error_flags.as_value().value == 0
        assert sum(s.hops[h].packets for h in range(3)) == s.tagged_packets
        for h in range(3):
            if s.hops[h].packets:   # nothing beats the zero-load latency: 2h + 2n + 2
                assert s.hops[h].latency_min >= 2 * h + 2 * pf + 2
        assert t.network.as_value().value == 0     # no drops anywhere
        created += g.created
        injected += g.injected_packets
        delivered += s.packets
        tagged += g.created_tagged
        tagged_in += s.tagged_packets
    assert created == injected == delivered > 0
    assert tagged == tagged_in > 0
    assert res["host_flits"] == 0


def test_bench_top_flags_impossible_runs():
    for kwargs in ({"packet_flits": 0}, {"packet_flits": WIDE.max_packet_flits + 2},
                   {"packet_flits": 1, "warmup": (1 << 24) - 10}):
        args = {"pattern": TrafficPattern.UNIFORM, "threshold": 60000, "seed": 1,
                "warmup": 10, "measure": 20, "drain": 10} | kwargs
        dut = NocBenchTop(MESH)
        seen = {}

        async def testbench(ctx, args=args, dut=dut, seen=seen):
            ctx.set(dut.control.threshold, args["threshold"])
            ctx.set(dut.control.pattern, args["pattern"])
            ctx.set(dut.control.packet_flits, args["packet_flits"])
            ctx.set(dut.warmup, args["warmup"])
            ctx.set(dut.measure, args["measure"])
            ctx.set(dut.drain, args["drain"])
            seen["error"] = ctx.get(dut.config_error)
            await ctx.tick().repeat(20)
            ctx.set(dut.select, 0)
            seen["created"] = ctx.get(dut.tile_stats.generator.created)

        _sim(dut, testbench)
        assert seen == {"error": 1, "created": 0}, kwargs


def test_bench_top_flags_a_pattern_it_was_built_without():
    dut = NocBenchTop(MESH, patterns=[TrafficPattern.UNIFORM])
    seen = {}

    async def testbench(ctx):
        ctx.set(dut.control.packet_flits, 1)
        ctx.set(dut.measure, 10)
        ctx.set(dut.control.pattern, TrafficPattern.UNIFORM)
        seen["uniform"] = ctx.get(dut.config_error)
        ctx.set(dut.control.pattern, TrafficPattern.HOTSPOT)
        seen["hotspot"] = ctx.get(dut.config_error)

    _sim(dut, testbench)
    assert seen == {"uniform": 0, "hotspot": 1}


# -- the benchmark's arithmetic and command line (no simulation) ---------------------------------

def test_bench_limits_and_points():
    from tilemesh.bench.noc import bench_config, bisection_limit, fit_per_hop, make_points
    from tilemesh.config import preset

    assert bisection_limit(4, 4) == 1.0 and bisection_limit(8, 8) == 0.5
    assert bisection_limit(2, 8) == 0.5 and bisection_limit(16, 16) == 0.25
    cfg = bench_config(preset("default"), 8, 8)
    assert (cfg.rows, cfg.cols, cfg.noc.flit_bits) == (8, 8, 64)
    assert cfg.noc.fifo_depth == preset("default").noc.fifo_depth
    pts = make_points(cfg, ["uniform"], [1, 4], [0.5, 2.0, 3.0], warmup=1, measure=2, drain=3,
                      seed=10)
    # 3.0 x 0.5 = 1.5 flits/node/cycle is more than a Local port can take: left out.
    assert [(p["packet_flits"], p["threshold"]) for p in pts] == \
        [(1, 16384), (1, 65536), (4, 4096), (4, 16384)]
    assert [p["seed"] for p in pts] == [10, 11, 12, 13]
    assert pts[1]["offered"] == 1.0 and pts[2]["offered"] == 0.25
    per_hop, intercept = fit_per_hop({0: 4, 1: 6, 2: 8, 5: 14})
    assert per_hop == pytest.approx(2.0) and intercept == pytest.approx(4.0)
    assert fit_per_hop({3: 10}) is None


@pytest.mark.parametrize("argv, match", [
    (["--loads", "0,1"], r"--loads must be fractions of the bisection limit above 0, not 0\.0"),
    (["--patterns", "tornado"], r"--patterns: traffic pattern must be one of uniform"),
    (["--packet-flits", "18"], r"--packet-flits must be in 1\.\.17 \(max_packet_flits \+ 1\)"),
    (["--measure", "0"], r"--measure must be a positive number of cycles, not 0"),
    (["--jobs", "0"], r"--jobs must be at least 1, not 0"),
    (["--meshes", "8x8", "--measure", "2000000"],
     r"--warmup \+ --measure \+ --drain must be below 1048575 cycles"),
])
def test_bench_command_rejects_bad_arguments(argv, match, capsys, tmp_path):
    from tilemesh.cli import main

    assert main(["bench", "noc", "-o", str(tmp_path)] + argv) == 2
    assert re.search(match, capsys.readouterr().err)
