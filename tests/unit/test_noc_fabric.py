"""The mesh fabric in the Amaranth simulator: random traffic with the host on every side,
zero-load latency per hop, status counters, and the generated Verilog's port names."""

import random

import pytest
from amaranth.sim import Simulator

from tilemesh.noc.fabric import NocFabric
from tilemesh.noc.ingress import DropReason
from tilemesh_sim.noc_model import (
    HOST,
    PacketFactory,
    Scoreboard,
    TrafficSource,
    hops,
    noc_config,
)
from tilemesh_sim.noc_pysim import FlitSink, FlitSource, Harness, run_traffic
from tilemesh_sim.runner import to_verilog

SEED = 31337


def _tiles(cfg):
    return [(x, y) for y in range(cfg.rows) for x in range(cfg.cols)]


def _harness(dut, cfg, rnd, gap=0.0, stall=0.0):
    sources = {t: FlitSource(dut.local_in[t[1]][t[0]], rnd=rnd, gap=gap) for t in _tiles(cfg)}
    sources[HOST] = FlitSource(dut.host_in, rnd=rnd, gap=gap)
    sinks = {t: FlitSink(dut.local_out[t[1]][t[0]], rnd=rnd, stall=stall) for t in _tiles(cfg)}
    sinks[HOST] = FlitSink(dut.host_out, rnd=rnd, stall=stall)
    return Harness(sources, sinks)


def _hardware_drops(ctx, dut, cfg):
    counted, router = {}, 0
    for x, y in _tiles(cfg):
        status = dut.status[y][x]
        for r in DropReason:
            counted[(x, y), r.value] = ctx.get(status.ingress[r.value])
        router += ctx.get(status.router.off_mesh)
    for r in DropReason:
        counted[HOST, r.value] = ctx.get(dut.host_drops[r.value])
    return {k: v for k, v in counted.items() if v}, router


def _run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("rows,cols,host", [
    (1, 1, dict()),
    (1, 3, dict(host_x=2, host_side="east")),
    (3, 1, dict(host_y=2, host_side="south")),
    (2, 2, dict(host_x=1, host_side="north")),
], ids=["1x1-west", "1x3-east", "3x1-south", "2x2-north"])
def test_random_traffic_with_malformed_packets(rows, cols, host):
    cfg = noc_config(rows, cols, max_packet_flits=4, **host)
    dut = NocFabric(cfg)
    rnd = random.Random(f"{SEED}:{rows}x{cols}")
    factory = PacketFactory(cfg, rnd)

    async def bench(ctx):
        harness = _harness(dut, cfg, rnd, gap=0.2, stall=0.3)
        board = Scoreboard(cfg)
        traffic = {node: TrafficSource(cfg, node, factory, pattern="uniform", rate=0.3,
                                       count=12, malformed=0.2, host_share=0.2)
                   for node in harness.sources}
        await run_traffic(ctx, harness, traffic, board, max_cycles=3000)
        counted, router = _hardware_drops(ctx, dut, cfg)
        board.check_drops(counted)
        assert not board.check_done(), board.errors[:5]
        assert router == 0  # the ingress checkers caught every off-mesh packet
        assert board.delivered > 0 and sum(board.expected_drops.values()) > 0
        assert any(sink == HOST for _, sink in board.pending)

    _run(dut, bench)


def test_zero_load_latency_is_two_cycles_per_hop():
    # One 1-flit packet at a time from a corner tile and from the host to every node: it
    # leaves the Local port 1 + 2 x routers cycles after it was taken (1 for the ingress check,
    # 2 per router: input FIFO, output register).
    cfg = noc_config(3, 3)
    dut = NocFabric(cfg)
    rnd = random.Random(SEED)
    factory = PacketFactory(cfg, rnd)

    async def bench(ctx):
        harness = _harness(dut, cfg, rnd)
        board = Scoreboard(cfg)
        for src in [(2, 2), HOST]:
            for dst in _tiles(cfg) + [HOST]:
                packet = factory.good(src, dst, sizes=0)
                harness.sources[src].push(packet)
                sent_at = None
                for cycle in range(40):
                    sent, received = await harness.step(ctx)
                    if sent:
                        sent_at = cycle
                        board.sent(packet)
                    if received:
                        node, flits = received[0]
                        board.received(node, flits)
                        assert cycle - sent_at == 1 + 2 * hops(cfg, src, dst), (src, dst)
                        break
                else:
                    raise AssertionError(f"packet {src} -> {dst} not delivered")
        assert not board.check_done()

    _run(dut, bench)


def test_verilog_ports_are_named_by_row_and_column_and_generation_is_deterministic():
    cfg = noc_config(2, 1)  # two rows, one column: [y][x] and [x][y] name different ports
    text = to_verilog(NocFabric(cfg), "noc_fabric")
    for port in ("local_in__1__0__valid", "local_out__1__0__payload", "host_in__ready",
                 "host_out__valid", "status__1__0", "host_drops"):
        assert f" {port}" in text, port
    assert "local_in__0__1__valid" not in text  # there is no column 1
    assert to_verilog(NocFabric(cfg), "noc_fabric") == text
