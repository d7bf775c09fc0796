"""cocotb traffic bench of the NoC fabric (``tilemesh.noc.fabric.NocFabric``).

Shape of cocotb's matrix_multiplier example: :class:`LinkDriver` (one per entry point: every
tile's ``local_in`` and ``host_in``, random idle cycles inside and between packets),
:class:`LinkMonitor` (one per exit: every ``local_out`` and ``host_out``, random backpressure),
the packet model and :class:`~tilemesh_sim.noc_model.Scoreboard` from :mod:`noc_model`.
One clocked loop steps every driver and monitor, so the cost per cycle is a handful of signal
accesses per port and no coroutine switches.

Parameters come from ``run_cocotb(params=...)``: ``cfg`` (a MeshConfig dict) and per-test
settings (see each test). Every test prints its seed and a line per phase with the offered and
accepted load and the mean packet latency.
"""

from collections import deque

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge

from tilemesh.config import MeshConfig
from tilemesh.layouts import flit_layout
from tilemesh.noc.fabric import status_layout
from tilemesh.noc.ingress import DropReason, drop_layout

from .noc_model import (
    HOST,
    PacketFactory,
    Scoreboard,
    ScriptSource,
    TrafficSource,
    destination,
    hops,
)
from .streams import params, reset, rng, start_clock

__all__ = ["LinkDriver", "LinkMonitor", "NocEnv"]


class LinkDriver:
    """Sends packets into stream port ``prefix`` (``local_in__Y__X`` or ``host_in``).

    ``gap`` is the probability of an idle cycle before each flit. ``valid`` stays up with the
    same flit until it is taken.
    """

    def __init__(self, dut, prefix, rnd, gap=0.0):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.rnd = rnd
        self.gap = gap
        self.queue = deque()    # (packet, flits)
        self.index = 0
        self.showing = False
        self._shown = None
        self.valid.value = 0

    def push(self, packet):
        self.queue.append((packet, packet.flits()))

    @property
    def busy(self):
        return bool(self.queue)

    def drive(self):
        if not self.showing and self.queue and self.rnd.random() >= self.gap:
            data, last = self.queue[0][1][self.index]
            self.payload.value = (data << self.data_offset) | (last << self.last_offset)
            self.showing = True
        if self.showing != self._shown:
            self.valid.value = int(self.showing)
            self._shown = self.showing

    def sample(self):
        """``(packet, index)`` of the flit taken in this cycle, or None (call in ReadOnly)."""
        if not (self.showing and int(self.ready.value)):
            return None
        packet, flits = self.queue[0]
        taken = (packet, self.index)
        self.index += 1
        if self.index == len(flits):
            self.queue.popleft()
            self.index = 0
        self.showing = False
        return taken


class LinkMonitor:
    """Takes flits from stream port ``prefix`` with ``ready`` low with probability ``stall``,
    and cuts them into packets at ``last``."""

    def __init__(self, dut, prefix, rnd, stall=0.0):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.rnd = rnd
        self.stall = stall
        self.partial = []
        self.flits = 0
        self.ready_now = None
        self.ready.value = 0

    def drive(self):
        ready = self.rnd.random() >= self.stall
        if ready != self.ready_now:
            self.ready.value = int(ready)
            self.ready_now = ready

    def sample(self):
        """The packet completed in this cycle as ``[(data, last), ...]``, or None."""
        if not (self.ready_now and int(self.valid.value)):
            return None
        bits = self.payload.value.to_unsigned()
        data = (bits >> self.data_offset) & self.data_mask
        last = (bits >> self.last_offset) & 1
        self.partial.append((data, last))
        self.flits += 1
        if last:
            packet, self.partial = self.partial, []
            return packet
        return None


class NocEnv:
    """Drivers and monitors on every port of a fabric, a scoreboard, and the clocked loop."""

    def __init__(self, dut, cfg, rnd, *, gap=0.0, stall=0.0):
        self.dut, self.cfg, self.rnd = dut, cfg, rnd
        self.tiles = [(x, y) for y in range(cfg.rows) for x in range(cfg.cols)]
        self.drivers = {t: LinkDriver(dut, f"local_in__{t[1]}__{t[0]}", rnd, gap)
                        for t in self.tiles}
        self.drivers[HOST] = LinkDriver(dut, "host_in", rnd, gap)
        self.monitors = {t: LinkMonitor(dut, f"local_out__{t[1]}__{t[0]}", rnd, stall)
                         for t in self.tiles}
        self.monitors[HOST] = LinkMonitor(dut, "host_out", rnd, stall)
        # Field positions read from the hardware's own layout (never copied offsets).
        flit = flit_layout(cfg)
        for port in list(self.drivers.values()) + list(self.monitors.values()):
            port.data_offset, port.last_offset = flit["data"].offset, flit["last"].offset
            port.data_mask = (1 << flit["data"].width) - 1
        self.factory = PacketFactory(cfg, rnd)
        self.board = Scoreboard(cfg)
        self.cycle = 0

    def set_noise(self, gap, stall):
        for d in self.drivers.values():
            d.gap = gap
        for mon in self.monitors.values():
            mon.stall = stall

    async def step(self):
        """One cycle: drive, sample the settled handshakes, then move to the next edge."""
        for d in self.drivers.values():
            d.drive()
        for mon in self.monitors.values():
            mon.drive()
        await ReadOnly()
        sent, received = [], []
        for d in self.drivers.values():
            taken = d.sample()
            if taken is not None:
                sent.append(taken)
        for node, mon in self.monitors.items():
            packet = mon.sample()
            if packet is not None:
                received.append((node, packet))
        await RisingEdge(self.dut.clk)
        self.cycle += 1
        return sent, received

    async def run(self, traffic, *, max_cycles, settle=8):
        """Run ``traffic`` (node -> TrafficSource) until every packet is delivered; returns
        ``(cycles, flits delivered)``. Fails naming what is stuck after ``max_cycles``."""
        board = self.board
        start, flits0, quiet = self.cycle, board.delivered_flits, 0
        for _ in range(max_cycles):
            for node, source in traffic.items():
                packet = source.tick(self.cycle)
                if packet is not None:
                    self.drivers[node].push(packet)
            sent, received = await self.step()
            for packet, index in sent:
                if index == 0:
                    packet.sent = self.cycle
                    board.sent(packet)
            for node, flits in received:
                board.received(node, flits, self.cycle)
            idle = (all(s.done for s in traffic.values()) and board.outstanding == 0
                    and not any(d.busy for d in self.drivers.values()))
            quiet = quiet + 1 if idle else 0
            if quiet > settle:
                return self.cycle - start - settle, board.delivered_flits - flits0
        stuck = {str(n): len(d.queue) for n, d in self.drivers.items() if d.busy}
        raise AssertionError(f"network did not drain in {max_cycles} cycles: "
                             f"{board.outstanding} packets outstanding; queued at {stuck}")

    def drop_counters(self):
        """Hardware drop counters as ``{(entry node, reason): count}`` and the routers' total."""
        counted, routers = {}, 0
        status = status_layout()
        for x, y in self.tiles:
            view = status.from_bits(getattr(self.dut, f"status__{y}__{x}").value.to_unsigned())
            for r in DropReason:
                counted[(x, y), r.value] = int(view.ingress[r.value])
            routers += int(view.router.off_mesh)
        host = drop_layout().from_bits(self.dut.host_drops.value.to_unsigned())
        for r in DropReason:
            counted[HOST, r.value] = int(host[r.value])
        return {k: v for k, v in counted.items() if v}, routers

    def check(self):
        counted, routers = self.drop_counters()
        self.board.check_drops(counted)
        if routers:
            self.board.errors.append(f"routers dropped {routers} packets the ingress passed")
        errors = self.board.check_done()
        assert not errors, f"{len(errors)} scoreboard errors:\n" + "\n".join(errors[:20])


async def _setup(dut, tag):
    p = params()
    cfg = MeshConfig.from_dict(p["cfg"])
    rnd = rng(tag)
    await start_clock(dut)
    await reset(dut)
    return cfg, p, rnd


def _sources(env, *, pattern, rate, count, sizes, malformed=0.0, host_share=0.1):
    return {node: TrafficSource(env.cfg, node, env.factory, pattern=pattern, rate=rate,
                                count=count, sizes=sizes, malformed=malformed,
                                host_share=host_share)
            for node in env.drivers}


@cocotb.test()
async def traffic_patterns(dut):
    """Every pattern at every injection rate (light load to past saturation), for each packet
    size; random idle cycles at the inputs and random backpressure at the outputs.

    params: ``patterns``, ``rates`` (offered flits/node/cycle), ``sizes``, ``packets`` (per
    source per phase), ``noise`` (list of ``[gap, stall]`` pairs, used in turn).
    """
    cfg, p, rnd = await _setup(dut, "traffic_patterns")
    env = NocEnv(dut, cfg, rnd)
    nodes = len(env.drivers)
    phase = 0
    for sizes in p["sizes"]:
        for pattern in p["patterns"]:
            for rate in p["rates"]:
                gap, stall = p["noise"][phase % len(p["noise"])]
                phase += 1
                env.set_noise(gap, stall)
                lat0 = len(env.board.latencies)
                traffic = _sources(env, pattern=pattern, rate=rate, count=p["packets"],
                                   sizes=sizes)
                cycles, flits = await env.run(traffic, max_cycles=p.get("max_cycles", 20000))
                lats = [lat for lat, _, _ in env.board.latencies[lat0:]]
                dut._log.info(
                    "%-14s sizes=%-6s offered=%.2f gap=%.1f stall=%.1f: %d cycles, accepted "
                    "%.3f flits/node/cycle, mean latency %.1f cycles", pattern, sizes, rate, gap,
                    stall, cycles, flits / nodes / max(cycles, 1), sum(lats) / max(len(lats), 1))
    env.check()
    assert env.board.delivered > 0


@cocotb.test()
async def malformed_packets(dut):
    """Every entry point sends each kind of malformed packet among well-formed ones to random
    tiles and to the host: the malformed ones are dropped whole and counted per entry point and
    reason; everything else arrives intact and in order.

    params: ``packets``, the well-formed packets per source.
    """
    cfg, p, rnd = await _setup(dut, "malformed_packets")
    env = NocEnv(dut, cfg, rnd, gap=0.2, stall=0.3)
    factory = env.factory
    traffic = {}
    for node in env.drivers:
        script = [factory.bad(node, kind) for kind in factory.malformed_kinds()]
        script += [factory.good(node, destination("uniform", cfg, node, rnd), "mixed")
                   for _ in range(p["packets"])]
        script += [factory.good(node, HOST, "mixed")]
        rnd.shuffle(script)
        traffic[node] = ScriptSource(script, rnd, rate=0.5)
    await env.run(traffic, max_cycles=20000)
    env.check()
    kinds = len(factory.malformed_kinds())
    assert sum(env.board.expected_drops.values()) == kinds * len(env.drivers)


@cocotb.test()
async def zero_load_latency(dut):
    """One packet at a time in an idle network: its tail leaves ``n + 2 x routers`` cycles
    after its tail was taken (``n`` flits: the ingress check holds a packet until its tail;
    two cycles per router: input FIFO, output register)."""
    cfg, p, rnd = await _setup(dut, "zero_load_latency")
    env = NocEnv(dut, cfg, rnd)
    nodes = [(0, 0), (cfg.cols - 1, cfg.rows - 1), HOST]
    worst = 0
    for src in nodes:
        for dst in env.tiles + [HOST]:
            for length in (0, 3):
                packet = env.factory.good(src, dst, sizes=length)
                env.drivers[src].push(packet)
                tail_in = None
                for _ in range(200):
                    sent, received = await env.step()
                    for pk, index in sent:
                        if index == 0:
                            env.board.sent(pk)
                        if index == length:
                            tail_in = env.cycle
                    if received:
                        node, flits = received[0]
                        env.board.received(node, flits, env.cycle)
                        routers = hops(cfg, src, dst)
                        expect = length + 1 + 2 * routers
                        got = env.cycle - tail_in
                        assert got == expect, f"{src} -> {dst}, {length + 1} flits: {got} " \
                                              f"cycles, expected {expect}"
                        worst = max(worst, routers)
                        break
                else:
                    raise AssertionError(f"packet {src} -> {dst} not delivered")
    dut._log.info("zero-load latency: 1 + 2 x routers for 1-flit packets, up to %d routers",
                  worst)
    env.check()
