"""Cycle-level stream drivers for the Amaranth simulator (the unit tests' side of the NoC benches).

A :class:`Harness` steps a design one clock cycle at a time: every :class:`FlitSource` drives
its stream (with random idle cycles), every :class:`FlitSink` drives ready (with random stalls),
then the settled handshakes are sampled and the clock ticks. The packet model, patterns and
scoreboard are shared with the cocotb bench (:mod:`tilemesh_sim.noc_model`).
"""

import random
from collections import deque

__all__ = ["FlitSource", "FlitSink", "Harness"]


class FlitSource:
    """Sends queued packets into an ``In(stream.Signature(flit_layout))`` port.

    ``gap`` is the probability of an idle cycle before each flit (also inside packets). Once
    ``valid`` is raised it stays up, with the same flit, until the flit is taken.
    """

    def __init__(self, stream, *, rnd=None, gap=0.0):
        self.stream = stream
        self.rnd = rnd or random.Random(0)
        self.gap = gap
        self.queue = deque()     # (packet, flits)
        self.index = 0           # next flit of queue[0]
        self.showing = False

    def push(self, packet, flits=None):
        self.queue.append((packet, packet.flits() if flits is None else flits))

    @property
    def busy(self):
        return bool(self.queue)

    def drive(self, ctx):
        if not self.showing and self.queue and self.rnd.random() >= self.gap:
            self.showing = True
        if self.showing:
            data, last = self.queue[0][1][self.index]
            ctx.set(self.stream.payload.data, data)
            ctx.set(self.stream.payload.last, last)
        ctx.set(self.stream.valid, self.showing)

    def sample(self, ctx):
        """``(packet, index)`` of the flit taken in this cycle, or None."""
        if not (self.showing and ctx.get(self.stream.ready)):
            return None
        packet, flits = self.queue[0]
        taken = (packet, self.index)
        self.index += 1
        if self.index == len(flits):
            self.queue.popleft()
            self.index = 0
        self.showing = False
        return taken


class FlitSink:
    """Takes flits from an ``Out(stream.Signature(flit_layout))`` port, with ``ready`` low with
    probability ``stall`` each cycle, and cuts them into packets at ``last``."""

    def __init__(self, stream, *, rnd=None, stall=0.0):
        self.stream = stream
        self.rnd = rnd or random.Random(0)
        self.stall = stall
        self.partial = []
        self.ready = False
        self.flits = 0

    def drive(self, ctx):
        self.ready = self.rnd.random() >= self.stall
        ctx.set(self.stream.ready, self.ready)

    def sample(self, ctx):
        """The packet whose last flit was taken in this cycle (list of ``(data, last)``)."""
        if not (self.ready and ctx.get(self.stream.valid)):
            return None
        flit = ctx.get(self.stream.payload)
        self.partial.append((int(flit.data), int(flit.last)))
        self.flits += 1
        if flit.last:
            packet, self.partial = self.partial, []
            return packet
        return None


class Harness:
    """Steps ``sources`` and ``sinks`` (dicts: node name -> FlitSource / FlitSink) together."""

    def __init__(self, sources, sinks):
        self.sources = sources
        self.sinks = sinks
        self.cycle = 0

    async def step(self, ctx):
        """One clock cycle. Returns ``(sent, received)``: lists of ``(node, packet, index)`` for
        flits taken from sources and ``(node, flits)`` for packets completed at sinks."""
        for src in self.sources.values():
            src.drive(ctx)
        for sink in self.sinks.values():
            sink.drive(ctx)
        sent, received = [], []
        for node, src in self.sources.items():
            taken = src.sample(ctx)
            if taken is not None:
                sent.append((node, *taken))
        for node, sink in self.sinks.items():
            packet = sink.sample(ctx)
            if packet is not None:
                received.append((node, packet))
        await ctx.tick()
        self.cycle += 1
        return sent, received

    @property
    def busy(self):
        return any(src.busy for src in self.sources.values())


async def run_traffic(ctx, harness, traffic, board, *, max_cycles, settle=8):
    """Run ``traffic`` (dict: node -> :class:`~tilemesh_sim.noc_model.TrafficSource`) through
    ``harness`` until every packet was created, sent and delivered (plus ``settle`` quiet
    cycles, so late duplicates would be seen), feeding ``board`` (a Scoreboard). Returns the
    cycle count; raises AssertionError naming what is stuck after ``max_cycles``."""
    quiet = 0
    for cycle in range(max_cycles):
        for node, source in traffic.items():
            packet = source.tick(cycle)
            if packet is not None:
                harness.sources[node].push(packet)
        sent, received = await harness.step(ctx)
        for _node, packet, index in sent:
            if index == 0:
                packet.sent = cycle
                board.sent(packet)
        for node, flits in received:
            board.received(node, flits, cycle)
        idle = (all(s.done for s in traffic.values()) and not harness.busy
                and board.outstanding == 0)
        quiet = quiet + 1 if idle else 0
        if quiet > settle:
            return cycle
    stuck = {n: len(s.queue) for n, s in harness.sources.items() if s.busy}
    raise AssertionError(f"traffic did not drain in {max_cycles} cycles: {board.outstanding} "
                         f"packets outstanding, sources still holding packets: {stuck}")
