"""Formal proofs of the wormhole router (:class:`tilemesh.noc.router.Router`).

All five inputs, all five output ``ready`` lines and the reset are free: the solver sends any
flits, in any cycle, on any port, and applies any backpressure. Three property families, each
proven by induction (base case + induction step: for every reachable state, not a bounded run):

``tag``
    The tagged flit is the one flit that carries a tag bit (one of the top data bits, which the
    router never looks at); the solver decides which flit that is, on which port and when.
    Proven: a flit with the tag leaves only if the tagged flit entered, leaves intact (no bit
    changed), at most once (never duplicated), only by the port XY routing gives its packet
    (never, when the packet is addressed off the mesh), and while it has entered but not left
    it is inside the router exactly once (never lost). A second tagged flit (second tag bit)
    from the same input to the same output never leaves before the first (order is kept). No
    well-formedness is assumed: the router only looks at ``last`` and the header's destination,
    and malformed packets must not break these properties either.
``atomic``
    Wormhole switching: once an output sends a packet's header it sends only that packet's
    flits until its tail. Packets are told apart by a label the harness assumes every input
    puts in the top data bits (its port number and a header bit); the router never looks at
    those bits (they are address / payload bits), so this only names flits.
``fair``
    Round-robin fairness, stated where the router arbitrates: while a header waits at the head
    of input ``i`` for output ``o``, at most 4 packets from other inputs are granted ``o``
    before it (and a cover shows 4 happens: the bound is tight). No cycle is wasted: a free
    output that can take a flit takes a waiting header at once, and a locked one forwards its
    packet's next flit as soon as it is there. A packet holds an output for at most
    ``max_packet_flits + 1`` flits (it is forwarded whole: ``tag`` and ``atomic``), so a waiting
    header is served after at most ``5 (max_packet_flits + 1) - 1`` flit transfers of its
    output: the rest of the packet holding it, then 4 whole packets. In cycles, that is as many
    cycles as the output is ready and those packets' flits take to arrive: both up to the
    neighbours, so a cycle bound needs assumptions about them and is not stated here.

Induction needs invariants about the router's inside (FIFO contents, the per-input packet
registers ``in_body_*``/``dropping_*``, the per-output ``locked_*``/``owner_*`` and each
arbiter's ``last``): they are asserted too, prefixed "white box", and proven with the rest.
The harness reads them by name (see ``formal_support``); if the router is restructured the
test fails loudly asking for the invariants to be updated, never silently weaker.

Each family has broken variants (a Y-first routing function, an output that duplicates or
corrupts, an input that ignores backpressure, an output lock that never locks, a fixed-priority
arbiter) that the prover must reject by BMC from reset, naming the broken property.
"""

import pytest
from amaranth.asserts import AnySeq
from amaranth.hdl import (
    Array,
    Assert,
    Assume,
    Cat,
    Const,
    Cover,
    Fragment,
    Module,
    Mux,
    Signal,
    Value,
    unsigned,
)
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from formal_support import (
    internal_signals,
    mutant_class,
    open_fifo,
    require_formal_tools,
    smallest_config,
)

import tilemesh.noc.router as router_module
from tilemesh.formal import named, prove, run_formal
from tilemesh.layouts import Port, flit_layout, header_layout
from tilemesh.noc.arbiter import DEFAULT_ARBITER
from tilemesh.noc.router import Router
from tilemesh.noc.routing import DEFAULT_ROUTING, destination_ok, host_address, host_port

pytestmark = pytest.mark.formal

P = len(Port)
NAMES = [p.name.lower() for p in Port]

# A 3x3 mesh so the centre router (1, 1) uses all four directions, and the corner router (0, 0)
# that carries the host port (its XY exception: packets for the host leave west). Depth-2
# FIFOs are the router's smallest; packets of up to 3 flits exercise wormhole locking.
CFG = smallest_config(3, 3, max_packet_flits=2, fifo_depth=2)

# The tagged flits are the only ones with these data bits set (the top two: address bits of a
# header, data bits of a payload flit; the router never looks at them).
TAG_BITS = (CFG.noc.flit_bits - 1, CFG.noc.flit_bits - 2)

# SymbiYosys depth 2: a 2-cycle base case and a 1-step induction. The white-box invariants make
# every family 1-inductive, which keeps the solver's work small (deeper steps cost minutes).
PROVE_DEPTH = {"tag": 2, "atomic": 2, "fair": 2}
# BMC depth for broken variants: each bug below shows within 7 cycles of reset (the
# fixed-priority arbiter needs five packets to overtake one waiting header).
MUTANT_DEPTH = 8
# Enough cycles for a tagged pair through the router, a 3-flit packet through each output, and
# a header overtaken 4 times.
COVER_DEPTH = 10


def popcount(value):
    value = Value.cast(value)
    return sum(value[k] for k in range(len(value)))


def onehot(i):
    return 1 << i


class YXRoute(wiring.Component):
    """A broken routing function (Y first): the tag proof must reject it."""

    def __init__(self, cfg):
        self._cfg = cfg
        coord = unsigned(cfg.coord_bits)
        super().__init__({"x": In(coord), "y": In(coord), "dst_x": In(coord), "dst_y": In(coord),
                          "ports": Out(P), "drop": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.drop.eq(~destination_ok(self._cfg, self.dst_x, self.dst_y))
        with m.If(self.drop):
            pass
        with m.Elif(self.dst_y > self.y):
            m.d.comb += self.ports[Port.SOUTH.value].eq(1)
        with m.Elif(self.dst_y < self.y):
            m.d.comb += self.ports[Port.NORTH.value].eq(1)
        with m.Elif(self.dst_x > self.x):
            m.d.comb += self.ports[Port.EAST.value].eq(1)
        with m.Elif(self.dst_x < self.x):
            m.d.comb += self.ports[Port.WEST.value].eq(1)
        with m.Else():
            m.d.comb += self.ports[Port.LOCAL.value].eq(1)
        return m


class FixedPriorityArbiter(wiring.Component):
    """A broken arbiter (lowest index always wins): the fairness proof must reject it."""

    def __init__(self, n):
        super().__init__({"requests": In(n), "grant": Out(n), "advance": In(1)})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.grant.eq(self.requests & -self.requests)  # lowest set bit
        return m


def _header_bubble_router():
    # A free output takes a header only when its register is empty: one lost cycle per packet.
    return mutant_class(router_module, "Router",
                        [("Mux(locked, owner_ready, header_waiting)",
                          "Mux(locked, owner_ready, header_waiting & ~out_valid)")])


def _no_lock_router():
    # The output lock is never taken: a second header can win the output mid-packet.
    return mutant_class(router_module, "Router",
                        [("locked.eq(~crossed.last)", "locked.eq(0)")])


# family -> mutant -> (harness keyword arguments, the property the prover must report failing)
MUTANTS = {
    "tag": {
        "yx_routing": (dict(routing=YXRoute), "assert 'a flit leaves only by its XY port'"),
        "duplicating_output": (dict(mutant="duplicate"), "assert 'a flit leaves at most once'"),
        "corrupting_output": (dict(mutant="corrupt"), "assert 'a flit leaves intact'"),
        "ignores_backpressure": (dict(mutant="lose"),
                                 "assert 'a flit that entered and has not left is inside once'"),
    },
    "atomic": {
        "no_output_lock": (dict(router=_no_lock_router),
                           "assert 'a packet holds its output until its tail'"),
    },
    "fair": {
        "fixed_priority": (dict(arbiter=FixedPriorityArbiter),
                           "assert 'a waiting header is overtaken by at most 4 packets'"),
        "header_bubble": (dict(router=_header_bubble_router),
                          "assert 'a free output takes a waiting header at once'"),
    },
}


class RouterHarness(wiring.Component):
    """Proof harness around one :class:`Router`.

    Parameters
    ----------
    cfg : MeshConfig
    x, y : int
        Router position.
    check : str
        Property family: ``"tag"``, ``"atomic"`` or ``"fair"``.
    invariants : bool
        Assert the white-box invariants (needed for induction; off for broken variants, whose
        contract violation should be what the prover reports).
    router : callable
        Returns the router class (for mutants made from the router's source).
    routing, arbiter : class
        Passed to the router.
    mutant : str or None
        A bug inserted between the router and the harness: ``"duplicate"`` (an output that
        does not always pop), ``"corrupt"`` (an output that flips bits), ``"lose"`` (the local
        input ignores backpressure).

    Members
    -------
    inp : ``In(stream.Signature(flit_layout(cfg))).array(5)``
        Free input traffic.
    out : ``Out(stream.Signature(flit_layout(cfg))).array(5)``
        Router outputs; their ``ready`` lines are free.
    """

    def __init__(self, cfg, x, y, *, check, invariants=True, router=lambda: Router,
                 routing=DEFAULT_ROUTING, arbiter=DEFAULT_ARBITER, mutant=None):
        if check not in PROVE_DEPTH:
            raise ValueError(f"unknown router property family {check!r}")
        # Tag bits and labels live in the top 4 data bits: they must be address bits of a
        # header, which the router does not interpret.
        if header_layout(cfg)["addr"].offset > cfg.noc.flit_bits - 4:
            raise ValueError("the header address field must cover the top 4 data bits")
        self._cfg, self._x, self._y, self._check = cfg, x, y, check
        self._invariants, self._router, self._mutant = invariants, router, mutant
        self._routing, self._arbiter = routing, arbiter
        flit = flit_layout(cfg)
        super().__init__({"inp": In(stream.Signature(flit)).array(P),
                          "out": Out(stream.Signature(flit)).array(P)})

    # The harness's own XY routing, written from the specification (not the router's routing
    # module): a one-hot output port, or 0 when the packet must be dropped (off the mesh).
    def _xy(self, m, data):
        cfg, x, y = self._cfg, self._x, self._y
        hdr = header_layout(cfg)(data)
        hx, hy = host_address(cfg)
        to_host = (hdr.dst_x == hx) & (hdr.dst_y == hy)
        on_mesh = (hdr.dst_x < cfg.cols) & (hdr.dst_y < cfg.rows)
        tx = Mux(to_host, cfg.host_x, hdr.dst_x)
        ty = Mux(to_host, cfg.host_y, hdr.dst_y)
        port = Signal(P)
        with m.If(~on_mesh & ~to_host):
            pass
        with m.Elif(tx > x):
            m.d.comb += port.eq(onehot(Port.EAST.value))
        with m.Elif(tx < x):
            m.d.comb += port.eq(onehot(Port.WEST.value))
        with m.Elif(ty > y):
            m.d.comb += port.eq(onehot(Port.SOUTH.value))
        with m.Elif(ty < y):
            m.d.comb += port.eq(onehot(Port.NORTH.value))
        with m.Elif(to_host):
            m.d.comb += port.eq(onehot(host_port(cfg).value))
        with m.Else():
            m.d.comb += port.eq(onehot(Port.LOCAL.value))
        return port

    def elaborate(self, platform):
        m = Module()
        cfg, check, inv = self._cfg, self._check, self._invariants
        flit = flit_layout(cfg)
        label_at = cfg.noc.flit_bits - 4  # label: data[-4:] = (input port, header bit)

        # -- the router, elaborated here so the harness can see inside (white box) --
        router = self._router()(cfg, routing=self._routing, arbiter=self._arbiter)
        m.d.comb += [router.x.eq(self._x), router.y.eq(self._y)]  # position: constant inputs
        body = router.elaborate(platform)
        router._MustUse__used = True  # elaborated by hand: silence "created but never used"
        fifos = [body.submodules[f"fifo_{n}"] for n in NAMES]
        arbiters = [body.submodules[f"arbiter_{n}"] for n in NAMES]
        inside = [open_fifo(f, platform) for f in fifos]
        fragment = Fragment.get(body, platform)
        m.submodules.router = fragment
        reg = internal_signals(fragment, [
            f"{r}_{n}" for n in NAMES
            for r in ("in_body", "dropping", "locked", "owner", "request", "xfer")])
        in_body = [reg[f"in_body_{n}"] for n in NAMES]
        dropping = [reg[f"dropping_{n}"] for n in NAMES]
        locked = [reg[f"locked_{n}"] for n in NAMES]
        owner = [reg[f"owner_{n}"] for n in NAMES]
        request = [reg[f"request_{n}"] for n in NAMES]
        xfer = [reg[f"xfer_{n}"] for n in NAMES]  # output register loads a flit

        # -- wiring, with an optional bug between router and harness --
        glitch = AnySeq(P)
        for i in range(P):
            m.d.comb += [router.inp[i].valid.eq(self.inp[i].valid),
                         router.inp[i].payload.eq(self.inp[i].payload),
                         self.inp[i].ready.eq(router.inp[i].ready)]
            if self._mutant == "lose" and i == Port.LOCAL.value:
                m.d.comb += self.inp[i].ready.eq(1)
        for o in range(P):
            m.d.comb += [self.out[o].valid.eq(router.out[o].valid),
                         self.out[o].payload.eq(router.out[o].payload),
                         router.out[o].ready.eq(self.out[o].ready)]
            if self._mutant == "duplicate":
                m.d.comb += router.out[o].ready.eq(self.out[o].ready & ~glitch[o])
            elif self._mutant == "corrupt":  # flips data bit 0 when the glitch says so
                m.d.comb += self.out[o].payload.eq(Value.cast(router.out[o].payload) ^ glitch[o])

        # -- input side: accepted flits and the packet each belongs to --
        acc, bits, route_now, in_pkt, pkt_route = [], [], [], [], []
        for i in range(P):
            a = Signal(name=f"accepted_{NAMES[i]}")
            m.d.comb += a.eq(self.inp[i].valid & self.inp[i].ready)
            payload = self.inp[i].payload
            ip = Signal(name=f"in_packet_{NAMES[i]}")      # next flit is a payload flit
            pr = Signal(P, name=f"packet_route_{NAMES[i]}")  # route of the packet in progress
            hdr_route = self._xy(m, payload.data)
            now = Signal(P, name=f"route_now_{NAMES[i]}")
            m.d.comb += now.eq(Mux(ip, pr, hdr_route))
            with m.If(a):
                m.d.sync += ip.eq(~payload.last)
                with m.If(~ip):
                    m.d.sync += pr.eq(hdr_route)
            if check == "atomic":
                label = payload.data[label_at:]
                m.d.comb += Assume(~self.inp[i].valid | (label == Cat(Const(i, 3), ~ip)))
            acc.append(a)
            bits.append(Value.cast(payload))
            route_now.append(now)
            in_pkt.append(ip)
            pkt_route.append(pr)

        fire = [Signal(name=f"sent_{n}") for n in NAMES]
        for o in range(P):
            m.d.comb += fire[o].eq(self.out[o].valid & self.out[o].ready)
        out_bits = [Value.cast(self.out[o].payload) for o in range(P)]

        # -- the router's inside, as the invariants describe it --
        # FIFO entries: the flit, and the routing decision stored with it on entry (if any).
        held_flit, stored = [], []
        for i in range(P):
            views = [fifos[i].shape(raw) for raw in inside[i].entries]
            if fifos[i].shape == flit:
                held_flit.append(views)
                stored.append(None)
            else:
                held_flit.append([v.flit for v in views])
                stored.append(views)
        lockout = [Cat(locked[o] & owner[o][i] for o in range(P)) for i in range(P)]
        is_hdr, route = [], []  # per input, per FIFO entry (oldest first)
        for i in range(P):
            hdrs, routes = [], []
            body_route = Mux(dropping[i], 0, lockout[i])
            for k, e in enumerate(held_flit[i]):
                h = Signal(name=f"entry_is_header_{NAMES[i]}_{k}")
                r = Signal(P, name=f"entry_route_{NAMES[i]}_{k}")
                prev_last = held_flit[i][k - 1].last if k else ~in_body[i]
                prev_route = routes[k - 1] if k else body_route
                m.d.comb += [h.eq(prev_last), r.eq(Mux(h, self._xy(m, e.data), prev_route))]
                hdrs.append(h)
                routes.append(r)
            is_hdr.append(hdrs)
            route.append(routes)
        level = [f.level for f in fifos]

        def held(i, k):
            return k < level[i]

        if inv:
            for i in range(P):
                n = level[i]
                depth = len(inside[i].entries)
                tail_in_pkt = Array([in_body[i]] + [~e.last for e in held_flit[i]])
                tail_route = Array([Mux(dropping[i], 0, lockout[i])] + route[i])
                head, tail = inside[i].head, inside[i].tail
                wrapped = head + n
                m.d.comb += [
                    Assert(popcount(pkt_route[i]) <= 1, "white box: a packet has one route"),
                    Assert(n <= depth, "white box: FIFO level in range"),
                    Assert(fifos[i].w.ready == (n != depth),
                           "white box: FIFO accepts exactly when not full"),
                    Assert(fifos[i].r.valid == (n != 0),
                           "white box: FIFO offers exactly when not empty"),
                    Assert((head < depth) & (tail == Mux(wrapped >= depth, wrapped - depth,
                                                         wrapped)),
                           "white box: FIFO pointers agree with its level"),
                    Assert(in_pkt[i] == tail_in_pkt[n],
                           "white box: input packet state matches the FIFO"),
                    Assert(~in_pkt[i] | (pkt_route[i] == tail_route[n]),
                           "white box: the packet in progress keeps its route"),
                    Assert(~dropping[i] | in_body[i],
                           "white box: only a packet in progress is dropped"),
                    Assert(Mux(in_body[i] & ~dropping[i], popcount(lockout[i]) == 1,
                               lockout[i] == 0),
                           "white box: a forwarded packet in progress holds its output"),
                ]
                if stored[i] is not None:
                    for k, view in enumerate(stored[i]):
                        xy = route[i][k]
                        m.d.comb += Assert(
                            ~(held(i, k) & is_hdr[i][k]) |
                            ((view.ports == xy) & (view.drop == (xy == 0))),
                            "white box: a waiting header carries its XY route")
            for o in range(P):
                m.d.comb += Assert(~locked[o] | (popcount(owner[o]) == 1),
                                   "white box: a locked output has one owner")

        if check == "tag":
            self._tag_properties(m, acc, bits, route_now, fire, out_bits, held_flit, route,
                                 held, inv)
        elif check == "atomic":
            self._atomic_properties(m, fire, held_flit, is_hdr, held, locked, owner, label_at,
                                    inv)
        else:
            self._fair_properties(m, fragment, arbiters, request, inv)
            self._progress_properties(m, fifos, request, locked, owner, xfer)
        return m

    def _tag_properties(self, m, acc, bits, route_now, fire, out_bits, held_flit, route, held,
                        inv):
        tags = []
        for t in range(2):
            bit = TAG_BITS[t]
            value = Signal(len(bits[0]), name=f"tag{t}_value")  # the whole tagged flit
            entered = Signal(name=f"tag{t}_entered")
            left = Signal(name=f"tag{t}_left")
            port = Signal(P, name=f"tag{t}_input")
            expect = Signal(P, name=f"tag{t}_route")
            arrive = Cat(acc[i] & bits[i][bit] for i in range(P))
            leave = Cat(fire[o] & out_bits[o][bit] for o in range(P))
            # The one assumption: one flit ever carries the tag bit.
            m.d.comb += Assume(popcount(arrive) <= 1)
            m.d.comb += Assume(~(entered & arrive.any()))
            for i in range(P):
                with m.If(arrive[i]):
                    m.d.sync += [entered.eq(1), port.eq(onehot(i)), expect.eq(route_now[i]),
                                 value.eq(bits[i])]
            with m.If(leave.any()):
                m.d.sync += left.eq(1)

            # Where the tagged flit is: FIFO entries and output registers with the tag bit.
            at_fifo = [[Signal(name=f"tag{t}_at_{NAMES[i]}_{k}")
                        for k in range(len(held_flit[i]))] for i in range(P)]
            for i in range(P):
                for k, entry in enumerate(held_flit[i]):
                    m.d.comb += at_fifo[i][k].eq(held(i, k) & Value.cast(entry)[bit])
            at_out = Cat(self.out[o].valid & out_bits[o][bit] for o in range(P))
            places = sum(popcount(Cat(*row)) for row in at_fifo) + popcount(at_out)

            for o in range(P):
                m.d.comb += Assert(~leave[o] | (out_bits[o] == value),
                                   "a flit leaves intact")
            m.d.comb += [
                Assert(~leave.any() | entered, "a flit leaves only if it entered"),
                Assert((leave & ~expect) == 0, "a flit leaves only by its XY port"),
                Assert((popcount(leave) <= 1) & ~(left & leave.any()),
                       "a flit leaves at most once"),
                Assert(~(entered & ~left & (expect != 0)) | (places == 1),
                       "a flit that entered and has not left is inside once"),
            ]
            if inv:
                m.d.comb += [
                    Assert(~left | (entered & (expect != 0)),
                           "white box: only a tag that entered for an output has left"),
                    Assert(~entered | (popcount(port) == 1), "white box: the tag has one input"),
                    Assert(popcount(expect) <= 1, "white box: the tag has one route"),
                    Assert(entered | (places == 0), "white box: the tag is nowhere before it "
                                                    "enters"),
                    Assert(~left | (places == 0), "white box: the tag is nowhere after it "
                                                  "leaves"),
                    Assert(~entered | (expect != 0) | ((places <= 1) & (at_out == 0)),
                           "white box: a dropped tag never reaches an output"),
                    Assert((at_out & ~expect) == 0,
                           "white box: the tag waits only in its XY output register"),
                ]
                for o in range(P):
                    m.d.comb += Assert(~at_out[o] | (out_bits[o] == value),
                                       "white box: the tag waits intact at its output")
                for i in range(P):
                    for k, entry in enumerate(held_flit[i]):
                        m.d.comb += Assert(
                            ~at_fifo[i][k] | (port[i] & (route[i][k] == expect) &
                                              (Value.cast(entry) == value)),
                            "white box: the tag waits intact in its input FIFO, with its route")
            tags.append((value, entered, left, port, expect, arrive, leave, at_fifo, at_out))

        (_, entered1, left1, port1, expect1, _, _, at_fifo1, at_out1) = tags[0]
        (_, entered2, left2, port2, expect2, arrive2, leave2, at_fifo2, at_out2) = tags[1]
        # Tag 1 entered before tag 2, on the same input, for the same output.
        ordered = Signal(name="tags_ordered")
        same_stream = Cat(arrive2[i] & port1[i] for i in range(P)).any()
        route2 = 0
        for i in range(P):
            route2 = route2 | Mux(arrive2[i], route_now[i], 0)
        with m.If(arrive2.any()):
            m.d.sync += ordered.eq(entered1 & same_stream & (expect1 == route2) & (expect1 != 0))
        m.d.comb += Assert(~(ordered & leave2.any() & ~left1),
                           "flits from one input to one output keep their order")
        if inv:
            m.d.comb += Assert(~ordered | (entered1 & entered2 & (port1 == port2) &
                                           (expect1 == expect2) & (expect1 != 0)),
                               "white box: ordered tags share their input and route")
            # While both wait, tag 1 is ahead: in the output register, or earlier in the FIFO.
            for i in range(P):
                for k2 in range(len(at_fifo2[i])):
                    ahead = at_out1.any() | Cat(at_fifo1[i][k1] for k1 in range(k2)).any() \
                        if k2 else at_out1.any()
                    m.d.comb += Assert(~(ordered & ~left1 & at_fifo2[i][k2]) | ahead,
                                       "white box: an earlier tag waits ahead of a later one")
            m.d.comb += Assert(~(ordered & ~left1 & at_out2.any()),
                               "white box: a later tag is not sent before an earlier one")
        m.d.comb += [
            Cover(named(m, "cover__tag_through_router", left1 & (expect1 != 0))),
            Cover(named(m, "cover__tags_in_order", ordered & left2)),
            Cover(named(m, "cover__tag_dropped", entered1 & (expect1 == 0) & (
                sum(popcount(Cat(*row)) for row in at_fifo1) == 0))),
        ]

    def _atomic_properties(self, m, fire, held_flit, is_hdr, held, locked, owner, label_at,
                           inv):
        for o in range(P):
            open_ = Signal(name=f"open_{NAMES[o]}")  # output o is inside a packet
            src = Signal(3, name=f"open_from_{NAMES[o]}")
            g = self.out[o].payload
            g_src, g_hdr = g.data[label_at:label_at + 3], g.data[label_at + 3]
            with m.If(fire[o]):
                m.d.sync += [open_.eq(~g.last), src.eq(g_src)]
            with m.If(fire[o] & open_):
                m.d.comb += Assert((g_src == src) & ~g_hdr,
                                   "a packet holds its output until its tail")
            with m.If(fire[o] & ~open_):
                m.d.comb += Assert(g_hdr, "an output starts every packet with its header")
            if inv:
                pending = self.out[o].valid
                m.d.comb += [
                    Assert(~(pending & open_) | ((g_src == src) & ~g_hdr),
                           "white box: the waiting output flit continues the open packet"),
                    Assert(~(pending & ~open_) | g_hdr,
                           "white box: the waiting output flit after a tail is a header"),
                    Assert(locked[o] == Mux(pending, ~g.last, open_),
                           "white box: an output is locked until its tail is sent"),
                    Assert(~locked[o] | (owner[o] == (1 << Mux(pending, g_src, src))),
                           "white box: the lock belongs to the packet's input"),
                    Assert(~pending | (g_src < P), "white box: output flits carry a port"),
                ]
            m.d.comb += Cover(named(m, f"cover__packet_through_{NAMES[o]}",
                                    fire[o] & g.last & open_))
        if inv:
            for i in range(P):
                for k, e in enumerate(held_flit[i]):
                    label = e.data[label_at:]
                    m.d.comb += Assert(~held(i, k) | (label == Cat(Const(i, 3), is_hdr[i][k])),
                                       "white box: FIFO entries carry their input's label")

    def _fair_properties(self, m, fragment, arbiters, request, inv):
        limit = P - 1
        for o in range(P):
            arb = arbiters[o]
            if inv:
                last = internal_signals(fragment.find_subfragment(f"arbiter_{NAMES[o]}"),
                                        ["last"])["last"]
                m.d.comb += Assert(last < P, "white box: arbiter pointer in range")
            for i in range(P):
                waiting = request[i][o]
                overtaken = Signal(range(P + 2), name=f"overtaken_{NAMES[i]}_{NAMES[o]}")
                # Restart when i is served (its next header may ask for the same output at once).
                with m.If(~waiting | (arb.advance & arb.grant[i])):
                    m.d.sync += overtaken.eq(0)
                with m.Elif(arb.advance & ~arb.grant[i] & (overtaken <= limit)):
                    m.d.sync += overtaken.eq(overtaken + 1)
                m.d.comb += Assert(overtaken <= limit,
                                   "a waiting header is overtaken by at most 4 packets")
                if inv:
                    # Round robin: every overtaking winner comes before i after the pointer,
                    # and becomes the pointer, so i moves up at least one place each time.
                    place = Signal(range(P), name=f"rr_place_{NAMES[i]}_{NAMES[o]}")
                    m.d.comb += place.eq(Array([(i - p - 1) % P for p in range(P)] + [0] * 3)
                                         [last])
                    m.d.comb += Assert(~waiting | (overtaken + place <= limit),
                                       "white box: overtakes plus round-robin place bounded")
                if (i, o) in ((Port.LOCAL.value, Port.EAST.value),
                              (Port.NORTH.value, Port.SOUTH.value)):
                    # The bound is tight: a header can really be overtaken 4 times.
                    m.d.comb += Cover(named(m, f"cover__overtaken_4_{NAMES[i]}_{NAMES[o]}",
                                            waiting & (overtaken == limit)))


    def _progress_properties(self, m, fifos, request, locked, owner, xfer):
        # No cycle is wasted: with the overtake bound this makes a waiting header's wait a
        # bound in output transfers, not only in grants.
        for o in range(P):
            can_take = ~self.out[o].valid | self.out[o].ready
            header_waits = Cat(request[i][o] for i in range(P)).any()
            next_flit_there = Cat(owner[o][i] & fifos[i].r.valid for i in range(P)).any()
            m.d.comb += [
                Assert(~(~locked[o] & can_take & header_waits) | xfer[o],
                       "a free output takes a waiting header at once"),
                Assert(~(locked[o] & can_take & next_flit_there) | xfer[o],
                       "a locked output forwards its packet's next flit at once"),
            ]


@pytest.fixture(scope="module", autouse=True)
def _tools():
    require_formal_tools()


# Every family at the centre router; the tag family (the one that depends on routing) also at
# the host corner, whose XY function has the host exception.
PROOFS = [pytest.param(check, (1, 1), id=f"{check}-centre") for check in PROVE_DEPTH]
PROOFS.append(pytest.param("tag", (0, 0), id="tag-host-corner"))


@pytest.mark.parametrize("check, position", PROOFS)
def test_router_proof(check, position):
    x, y = position
    result = prove(RouterHarness(CFG, x, y, check=check), name=f"router_{check}_{x}{y}",
                   mode="prove", depth=PROVE_DEPTH[check])
    print(result.summary())


@pytest.mark.parametrize("check", list(PROVE_DEPTH))
def test_router_cover(check):
    # Every cover reachable: the assumptions leave the interesting behaviour possible.
    result = prove(RouterHarness(CFG, 1, 1, check=check), name=f"router_cover_{check}",
                   mode="cover", depth=COVER_DEPTH)
    print(result.summary(), result.reached)
    assert result.reached, result.tail()


@pytest.mark.parametrize("check, mutant", [(c, k) for c, ms in MUTANTS.items() for k in ms])
def test_router_broken_variant_rejected(check, mutant):
    kwargs, expected = MUTANTS[check][mutant]
    harness = RouterHarness(CFG, 1, 1, check=check, invariants=False, **kwargs)
    result = run_formal(harness, name=f"router_{mutant}", mode="bmc", depth=MUTANT_DEPTH)
    print(result.summary(), result.failed, "step", result.step)
    assert result.status == "FAIL", result.tail()
    assert result.step is not None, result.tail()
    assert expected in result.failed, result.failed
