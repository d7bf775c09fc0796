"""The 5-port router in the Amaranth simulator: routing, latency, throughput, wormhole switching,
fairness, drops and random traffic against a scoreboard."""

import random
from collections import defaultdict, deque

import pytest
from amaranth.sim import Simulator

from tilemesh.config import MeshConfig, NocConfig
from tilemesh.layouts import Port
from tilemesh.noc.router import Router
from tilemesh.noc.routing import XYRoute, host_address
from tilemesh_sim.noc_model import PacketFactory, noc_config
from tilemesh_sim.noc_pysim import FlitSink, FlitSource, Harness

SEED = 4242
CFG3 = MeshConfig(rows=3, cols=3, noc=NocConfig(fifo_depth=2, max_packet_flits=16))
CENTRE = (1, 1)
# A destination tile in each direction from the centre of a 3x3 mesh.
TOWARDS = {Port.NORTH: (1, 0), Port.EAST: (2, 1), Port.SOUTH: (1, 2), Port.WEST: (0, 1),
           Port.LOCAL: (1, 1)}
OFF_MESH = (3, 3)


class RouterScoreboard:
    """Expected packets per (input, output) in order; a packet at an output must be the oldest
    outstanding one of some input for that output, whole and unchanged."""

    def __init__(self, cfg, x, y):
        self.cfg, self.x, self.y = cfg, x, y
        self.queues = defaultdict(deque)
        self.expected_drops = 0
        self.order = defaultdict(list)   # output -> inputs of the packets it delivered
        self.errors = []

    def sent(self, inp, packet):
        out = XYRoute.model(self.cfg, self.x, self.y, *packet.dst)
        if out is None:
            self.expected_drops += 1
        else:
            self.queues[inp, out].append(packet.flits())

    def received(self, out, flits):
        for inp in Port:
            queue = self.queues.get((inp, out))
            if queue and queue[0] == flits:
                queue.popleft()
                self.order[out].append(inp)
                return
        self.errors.append(f"{out.name}: {flits} is not the next packet of any input")

    @property
    def outstanding(self):
        return sum(len(q) for q in self.queues.values())


def _harness(dut, rnd, gap=0.0, stall=0.0):
    sources = {p: FlitSource(dut.inp[p.value], rnd=rnd, gap=gap) for p in Port}
    sinks = {p: FlitSink(dut.out[p.value], rnd=rnd, stall=stall) for p in Port}
    return Harness(sources, sinks)


async def _step(ctx, harness, board, log=None):
    sent, received = await harness.step(ctx)
    for node, packet, index in sent:
        if index == 0:
            board.sent(node, packet)
    for node, flits in received:
        board.received(node, flits)
    if log is not None:
        log.append((sent, received))


def _run(dut, bench, position=CENTRE):
    async def placed(ctx):
        # The router's position is an input (one module for every router): set it first.
        ctx.set(dut.x, position[0])
        ctx.set(dut.y, position[1])
        await bench(ctx)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(placed)
    sim.run()


# -- routing function -----------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [
    MeshConfig(rows=2, cols=3),
    MeshConfig(rows=3, cols=3, host_x=2, host_y=1, host_side="east"),
    MeshConfig(rows=3, cols=2, host_x=1, host_y=0, host_side="north"),
    MeshConfig(rows=1, cols=1, host_side="south"),
], ids=["2x3-west", "3x3-east", "3x2-north", "1x1-south"])
def test_routing_hardware_matches_model_for_every_destination(cfg):
    top = 1 << cfg.coord_bits
    for y in range(cfg.rows):
        for x in range(cfg.cols):
            dut = XYRoute(cfg)

            async def bench(ctx, dut=dut, x=x, y=y):
                ctx.set(dut.x, x)
                ctx.set(dut.y, y)
                for dx in range(top):
                    for dy in range(top):
                        ctx.set(dut.dst_x, dx)
                        ctx.set(dut.dst_y, dy)
                        expect = XYRoute.model(cfg, x, y, dx, dy)
                        assert ctx.get(dut.drop) == (expect is None), (x, y, dx, dy)
                        want = 0 if expect is None else 1 << expect.value
                        assert ctx.get(dut.ports) == want, (x, y, dx, dy)

            sim = Simulator(dut)
            sim.add_testbench(bench)
            sim.run()


def test_routing_model_is_xy_and_reaches_the_host():
    cfg = noc_config(3, 4, host_x=3, host_y=2, host_side="south")
    # X first: along the row to the destination column, then along the column.
    path = XYRoute.path(cfg, (0, 0), (3, 2))
    assert [(x, y) for x, y, _ in path] == [(0, 0), (1, 0), (2, 0), (3, 0), (3, 1), (3, 2)]
    assert [p for _, _, p in path] == [Port.EAST] * 3 + [Port.SOUTH] * 2 + [Port.LOCAL]
    host = host_address(cfg)
    assert host == (3, 3)
    path = XYRoute.path(cfg, (0, 1), host)
    assert path[-1] == (3, 2, Port.SOUTH)
    assert XYRoute.path(cfg, (0, 0), (4, 0)) is None  # off the mesh


# -- single packets: direction and zero-load latency ----------------------------------------------

def test_every_input_reaches_every_direction_in_two_cycles():
    dut = Router(CFG3)
    rnd = random.Random(SEED)
    factory = PacketFactory(CFG3, rnd)

    async def bench(ctx):
        harness = _harness(dut, rnd)
        board = RouterScoreboard(CFG3, *CENTRE)
        for inp in Port:
            for out, dst in TOWARDS.items():
                for length in (0, 3):
                    packet = factory.good((0, 0), dst, sizes=length)
                    harness.sources[inp].push(packet)
                    log = []
                    for _ in range(length + 6):
                        await _step(ctx, harness, board, log)
                    sent_at = [c for c, (s, _) in enumerate(log) if s]
                    seen_at = [c for c, (_, r) in enumerate(log) if r]
                    assert sent_at == list(range(length + 1))
                    # Header in the FIFO after cycle 0, in the output register after cycle 1:
                    # the tail leaves two cycles after it entered.
                    assert seen_at == [length + 2], (inp, out, log)
                    assert board.order[out][-1] == inp
        assert not board.errors and board.outstanding == 0

    _run(dut, bench)


def test_host_port_routing_at_the_host_tile():
    cfg = MeshConfig(rows=2, cols=2)  # host west of (0, 0)
    dut = Router(cfg)
    rnd = random.Random(SEED)
    factory = PacketFactory(cfg, rnd)

    async def bench(ctx):
        harness = _harness(dut, rnd)
        board = RouterScoreboard(cfg, 0, 0)
        harness.sources[Port.LOCAL].push(factory.good((0, 0), "host", sizes=2))
        harness.sources[Port.SOUTH].push(factory.good((0, 1), "host", sizes=0))
        harness.sources[Port.WEST].push(factory.good("host", (1, 1), sizes=1))
        for _ in range(12):
            await _step(ctx, harness, board)
        assert not board.errors and board.outstanding == 0
        assert sorted(board.order[Port.WEST], key=lambda p: p.value) == [Port.SOUTH, Port.LOCAL]
        assert board.order[Port.EAST] == [Port.WEST]

    _run(dut, bench, position=(0, 0))


# -- throughput -----------------------------------------------------------------------------------

@pytest.mark.parametrize("length", [0, 16], ids=["1-flit", "17-flit"])
def test_one_flit_per_cycle_on_every_port_at_depth_2(length):
    # A permutation keeps all five outputs busy at once; every output must move a flit in every
    # cycle once the pipeline is full.
    perm = {Port.WEST: Port.EAST, Port.EAST: Port.WEST, Port.NORTH: Port.SOUTH,
            Port.SOUTH: Port.NORTH, Port.LOCAL: Port.LOCAL}
    dut = Router(CFG3)
    rnd = random.Random(SEED)
    factory = PacketFactory(CFG3, rnd)
    cycles = 160

    async def bench(ctx):
        harness = _harness(dut, rnd)
        board = RouterScoreboard(CFG3, *CENTRE)
        for inp, out in perm.items():
            for _ in range(cycles // (length + 1) + 2):
                harness.sources[inp].push(factory.good((0, 0), TOWARDS[out], sizes=length))
        per_cycle = []
        for _ in range(cycles):
            before = {p: s.flits for p, s in harness.sinks.items()}
            await _step(ctx, harness, board)
            per_cycle.append({p: s.flits - before[p] for p, s in harness.sinks.items()})
        assert not board.errors
        for cycle in range(2, cycles):  # after the two-cycle fill
            assert all(per_cycle[cycle][p] == 1 for p in Port), (cycle, per_cycle[cycle])

    _run(dut, bench)


# -- wormhole switching and fairness --------------------------------------------------------------

def test_contending_packets_never_interleave_and_take_turns():
    # Four inputs keep sending multi-flit packets to the Local output: packets must come out
    # whole, in round-robin turns, with no idle cycle between them.
    dut = Router(CFG3)
    rnd = random.Random(SEED)
    factory = PacketFactory(CFG3, rnd)
    contenders = [Port.NORTH, Port.EAST, Port.SOUTH, Port.WEST]

    async def bench(ctx):
        harness = _harness(dut, rnd)
        board = RouterScoreboard(CFG3, *CENTRE)
        for inp in contenders:
            for _ in range(8):
                harness.sources[inp].push(factory.good((0, 0), TOWARDS[Port.LOCAL],
                                                       sizes="multi"))
        busy = 0
        for cycle in range(400):
            await _step(ctx, harness, board)
            if cycle >= 2 and harness.busy:
                busy += 1
        assert not board.errors and board.outstanding == 0
        order = board.order[Port.LOCAL]
        assert len(order) == 32
        for k in range(0, len(order) - 3):
            assert set(order[k:k + 4]) == set(contenders), order
        # The output never idled while packets were waiting (tails and headers back to back).
        assert harness.sinks[Port.LOCAL].flits >= busy

    _run(dut, bench)


def test_output_is_held_while_the_owner_stalls():
    # Input West sends a packet to East with long gaps inside it; input North's packet for East
    # must wait for West's tail, however long the gaps last.
    dut = Router(CFG3)
    rnd = random.Random(SEED)
    factory = PacketFactory(CFG3, rnd)

    async def bench(ctx):
        harness = _harness(dut, rnd)
        board = RouterScoreboard(CFG3, *CENTRE)
        slow = factory.good((0, 0), TOWARDS[Port.EAST], sizes=12)
        fast = factory.good((0, 0), TOWARDS[Port.EAST], sizes=3)
        harness.sources[Port.WEST].push(slow)
        for _ in range(3):  # West's header and first payload flit go in and take East
            await _step(ctx, harness, board)
        harness.sources[Port.WEST].gap = 0.8
        harness.sources[Port.NORTH].push(fast)
        for _ in range(200):
            await _step(ctx, harness, board)
        assert not board.errors and board.outstanding == 0
        assert board.order[Port.EAST] == [Port.WEST, Port.NORTH]

    _run(dut, bench)


# -- drops ----------------------------------------------------------------------------------------

def test_off_mesh_packet_is_dropped_whole_while_traffic_flows():
    dut = Router(CFG3)
    rnd = random.Random(SEED)
    factory = PacketFactory(CFG3, rnd)

    async def bench(ctx):
        harness = _harness(dut, rnd)
        board = RouterScoreboard(CFG3, *CENTRE)
        bad = factory.good((0, 0), (0, 0), sizes=10)
        bad.dst = OFF_MESH
        harness.sources[Port.WEST].push(bad)
        harness.sources[Port.WEST].push(factory.good((0, 0), TOWARDS[Port.EAST], sizes=2))
        for _ in range(3):
            harness.sources[Port.NORTH].push(factory.good((0, 0), TOWARDS[Port.EAST], sizes=4))
        log = []
        for _ in range(40):
            await _step(ctx, harness, board, log)
        assert not board.errors and board.outstanding == 0
        assert board.expected_drops == 1
        assert ctx.get(dut.drops.off_mesh) == 1
        # The dropped packet drained at one flit per cycle, its 11 flits in cycles 0..10.
        west = [c for c, (s, _) in enumerate(log) if any(n is Port.WEST for n, _, _ in s)]
        assert west[:11] == list(range(11))

    _run(dut, bench)


def test_drop_counter_counts_simultaneous_drops_and_saturates():
    dut = Router(CFG3, counter_bits=3)
    rnd = random.Random(SEED)
    factory = PacketFactory(CFG3, rnd)

    async def bench(ctx):
        harness = _harness(dut, rnd)
        board = RouterScoreboard(CFG3, *CENTRE)

        def bad():
            packet = factory.good((0, 0), (0, 0), sizes=0)
            packet.dst = OFF_MESH
            return packet

        for inp in Port:  # five headers dropped in the same cycle
            harness.sources[inp].push(bad())
        for _ in range(5):
            await _step(ctx, harness, board)
        assert ctx.get(dut.drops.off_mesh) == 5
        for inp in Port:
            harness.sources[inp].push(bad())
        for _ in range(5):
            await _step(ctx, harness, board)
        assert ctx.get(dut.drops.off_mesh) == 7  # 3 bits: holds at its maximum

    _run(dut, bench)


# -- random traffic -------------------------------------------------------------------------------

@pytest.mark.parametrize("depth,gap,stall", [(2, 0.3, 0.3), (4, 0.0, 0.5), (3, 0.5, 0.0)])
def test_random_traffic_against_scoreboard(depth, gap, stall):
    cfg = MeshConfig(rows=3, cols=3, noc=NocConfig(fifo_depth=depth, max_packet_flits=6))
    dut = Router(cfg)
    rnd = random.Random(f"{SEED}:{depth}:{gap}:{stall}")
    factory = PacketFactory(cfg, rnd)
    tiles = [(x, y) for y in range(3) for x in range(3)]

    async def bench(ctx):
        harness = _harness(dut, rnd, gap=gap, stall=stall)
        board = RouterScoreboard(cfg, *CENTRE)
        for inp in Port:
            for _ in range(25):
                packet = factory.good((0, 0), rnd.choice(tiles), sizes="mixed")
                if rnd.random() < 0.1:
                    packet.dst = (3, rnd.randint(0, 3))  # off the mesh
                harness.sources[inp].push(packet)
        for _ in range(3000):
            await _step(ctx, harness, board)
            if not harness.busy and board.outstanding == 0:
                break
        assert not board.errors, board.errors[:3]
        assert board.outstanding == 0, "packets lost or stuck"
        assert ctx.get(dut.drops.off_mesh) == board.expected_drops > 0

    _run(dut, bench)


# -- structure ------------------------------------------------------------------------------------

def test_link_wires_do_not_depend_combinationally_on_link_inputs():
    # out.valid/payload and inp.ready must come from flip-flops: changing every input of the
    # router within a cycle must not change them.
    dut = Router(CFG3)
    rnd = random.Random(SEED)
    factory = PacketFactory(CFG3, rnd)
    tiles = [(x, y) for y in range(3) for x in range(3)]

    async def bench(ctx):
        harness = _harness(dut, rnd, gap=0.2, stall=0.4)
        board = RouterScoreboard(CFG3, *CENTRE)
        for inp in Port:
            for _ in range(10):
                harness.sources[inp].push(factory.good((0, 0), rnd.choice(tiles)))

        def wires():
            return ([ctx.get(dut.out[p].valid) for p in range(5)] +
                    [ctx.get(dut.out[p].payload).as_value().value for p in range(5)] +
                    [ctx.get(dut.inp[p].ready) for p in range(5)])

        for _ in range(150):
            before = wires()
            for p in range(5):
                ctx.set(dut.inp[p].valid, rnd.getrandbits(1))
                ctx.set(dut.inp[p].payload.data, rnd.getrandbits(32))
                ctx.set(dut.inp[p].payload.last, rnd.getrandbits(1))
                ctx.set(dut.out[p].ready, rnd.getrandbits(1))
            assert wires() == before
            await _step(ctx, harness, board)  # re-drives the inputs properly before sampling
        assert not board.errors

    _run(dut, bench)
