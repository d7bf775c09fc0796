"""Round-robin arbiter against a Python model, and its fairness bound."""

import random

import pytest
from amaranth.sim import Simulator

from tilemesh.noc.arbiter import RoundRobinArbiter

SEED = 7031


class RoundRobinModel:
    def __init__(self, n):
        self.n = n
        self.last = n - 1

    def grant(self, requests):
        for k in range(1, self.n + 1):
            i = (self.last + k) % self.n
            if requests >> i & 1:
                return i
        return None


def _run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("n", [1, 2, 5])
def test_round_robin_matches_model(n):
    dut = RoundRobinArbiter(n)
    rnd = random.Random(f"{SEED}:{n}")

    async def bench(ctx):
        model = RoundRobinModel(n)
        for cycle in range(600):
            requests = rnd.getrandbits(n)
            advance = rnd.random() < 0.7
            ctx.set(dut.requests, requests)
            ctx.set(dut.advance, advance)
            expect = model.grant(requests)
            got = ctx.get(dut.grant)
            assert got == (0 if expect is None else 1 << expect), (cycle, requests)
            if advance and expect is not None:
                model.last = expect
            await ctx.tick()

    _run(dut, bench)


def test_every_waiting_requester_is_served_within_n_grants():
    # Five requesters, random others coming and going; requester 3 keeps requesting: it must be
    # granted before any other requester is granted twice (at most n - 1 grants to others).
    n = 5
    dut = RoundRobinArbiter(n)
    rnd = random.Random(SEED)

    async def bench(ctx):
        waited = 0
        worst = 0
        for _ in range(500):
            requests = rnd.getrandbits(n) | (1 << 3)
            ctx.set(dut.requests, requests)
            ctx.set(dut.advance, 1)
            grant = ctx.get(dut.grant)
            assert grant and grant & (grant - 1) == 0, "grant must be one-hot"
            if grant == 1 << 3:
                waited = 0
            else:
                waited += 1
                worst = max(worst, waited)
            await ctx.tick()
        assert worst <= n - 1

    _run(dut, bench)


def test_priority_holds_until_advance():
    dut = RoundRobinArbiter(3)

    async def bench(ctx):
        ctx.set(dut.requests, 0b111)
        for _ in range(3):  # not advanced: requester 0 keeps winning
            assert ctx.get(dut.grant) == 0b001
            await ctx.tick()
        ctx.set(dut.advance, 1)
        order = []
        for _ in range(6):
            order.append(ctx.get(dut.grant))
            await ctx.tick()
        assert order == [0b001, 0b010, 0b100] * 2

    _run(dut, bench)


@pytest.mark.parametrize("n", [0, -3, 1.5, None])
def test_rejects_bad_size(n):
    with pytest.raises(ValueError, match=r"arbiter requester count must be an integer of at "
                                         r"least 1, not "):
        RoundRobinArbiter(n)
