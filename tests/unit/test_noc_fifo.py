"""Fifo and CommitFifo against Python models, cycle by cycle, with random valid and ready."""

import random
from collections import deque

import pytest
from amaranth.sim import Simulator

from tilemesh.noc.fifo import CommitFifo, Fifo

SEED = 20261103


def _run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("depth, block_ram", [(1, False), (2, False), (3, False), (5, False),
                                              (2, True), (4, True), (5, True)])
def test_fifo_matches_model(depth, block_ram):
    dut = Fifo(8, depth, block_ram=block_ram)
    delay = 2 if block_ram else 1  # cycles from a write to the entry's first read
    rnd = random.Random(f"{SEED}:{depth}:{block_ram}")
    stats = {"writes": 0, "reads": 0, "full_read": 0}

    async def bench(ctx):
        model = deque()
        full_seen = False
        for cycle in range(1500):
            # Phases of mostly-writing and mostly-reading so the FIFO is often full and empty.
            phase = (cycle // 60) % 3
            w_valid = rnd.random() < (0.9, 0.3, 0.6)[phase]
            r_ready = rnd.random() < (0.3, 0.9, 0.6)[phase]
            value = rnd.getrandbits(8)
            ctx.set(dut.w.valid, w_valid)
            ctx.set(dut.w.payload, value)
            ctx.set(dut.r.ready, r_ready)
            assert ctx.get(dut.level) == len(model), cycle
            # w.ready is registered: it reflects last cycle's state, never this cycle's read.
            assert ctx.get(dut.w.ready) == (len(model) < depth), cycle
            visible = bool(model) and model[0][1] <= cycle - delay
            assert ctx.get(dut.r.valid) == visible, cycle
            if visible:
                assert ctx.get(dut.r.payload) == model[0][0], cycle
            read = visible and r_ready
            write = w_valid and len(model) < depth
            if read and len(model) == depth:
                full_seen = True
            if read:
                model.popleft()
                stats["reads"] += 1
            if write:
                model.append((value, cycle))
                stats["writes"] += 1
            await ctx.tick()
        stats["full_read"] = full_seen

    _run(dut, bench)
    assert stats["reads"] > 300 and stats["full_read"]


@pytest.mark.parametrize("depth, block_ram", [(2, False), (3, True)])
def test_fifo_passes_one_word_per_cycle(depth, block_ram):
    # Full throughput needs as many entries as cycles from a write to the read that frees its
    # place, plus one (w.ready is a register): 2, and 3 with block RAM.
    dut = Fifo(16, depth, block_ram=block_ram)
    delay = 2 if block_ram else 1

    async def bench(ctx):
        ctx.set(dut.r.ready, 1)
        ctx.set(dut.w.valid, 1)
        got = []
        for cycle in range(100):
            ctx.set(dut.w.payload, cycle)
            assert ctx.get(dut.w.ready), f"write stalled in cycle {cycle}"
            if ctx.get(dut.r.valid):
                got.append(ctx.get(dut.r.payload))
            await ctx.tick()
        # delay cycles of latency, then a word every cycle
        assert got == list(range(100 - delay))

    _run(dut, bench)


@pytest.mark.parametrize("depth", [0, -1, 2.0, True, "4"])
def test_fifo_rejects_bad_depth(depth):
    with pytest.raises(ValueError, match=r"FIFO depth must be an integer of at least 1, not "):
        Fifo(8, depth)


def test_block_ram_fifo_rejects_depth_1():
    with pytest.raises(ValueError, match=r"FIFO depth must be an integer of at least 2, not 1"):
        Fifo(8, 1, block_ram=True)


def test_commit_fifo_rejects_bad_depth():
    with pytest.raises(ValueError,
                       match=r"commit FIFO depth must be an integer of at least 2, not 1"):
        CommitFifo(8, 1)


@pytest.mark.parametrize("depth", [2, 5, 8])
def test_commit_fifo_matches_model(depth):
    dut = CommitFifo(8, depth)
    rnd = random.Random(f"{SEED}:commit:{depth}")
    seen = {"commits": 0, "rollbacks": 0, "reads": 0}

    async def bench(ctx):
        committed = deque()   # readable
        spec = []             # written, not yet committed
        for cycle in range(2000):
            w_valid = rnd.random() < 0.7
            r_ready = rnd.random() < 0.6
            commit = rnd.random() < 0.2
            rollback = rnd.random() < 0.1
            value = rnd.getrandbits(8)
            for port, v in ((dut.w.valid, w_valid), (dut.w.payload, value),
                            (dut.r.ready, r_ready), (dut.commit, commit),
                            (dut.rollback, rollback)):
                ctx.set(port, v)
            used = len(committed) + len(spec)
            assert ctx.get(dut.level) == used, cycle
            assert ctx.get(dut.w.ready) == (used < depth), cycle
            assert ctx.get(dut.r.valid) == bool(committed), cycle
            if committed:
                assert ctx.get(dut.r.payload) == committed[0], cycle
            write = w_valid and used < depth
            if committed and r_ready:
                committed.popleft()
                seen["reads"] += 1
            if write:
                spec.append(value)
            if commit:
                committed.extend(spec)
                spec = []
                seen["commits"] += 1
            elif rollback:
                spec = []
                seen["rollbacks"] += 1
            await ctx.tick()

    _run(dut, bench)
    assert seen["reads"] > 300 and seen["rollbacks"] > 50


def test_commit_fifo_entry_committed_as_written_is_read_next_cycle():
    # The transparent read path: a one-entry packet written and committed in one cycle is the
    # head in the next cycle, even when the FIFO was empty (the read port looked at it already).
    dut = CommitFifo(8, 4)

    async def bench(ctx):
        ctx.set(dut.r.ready, 1)
        for value in (0x11, 0x22, 0x33):
            ctx.set(dut.w.valid, 1)
            ctx.set(dut.w.payload, value)
            ctx.set(dut.commit, 1)
            await ctx.tick()
            ctx.set(dut.w.valid, 0)
            ctx.set(dut.commit, 0)
            assert ctx.get(dut.r.valid)
            assert ctx.get(dut.r.payload) == value
        await ctx.tick()
        assert not ctx.get(dut.r.valid)

    _run(dut, bench)
