"""Traffic made inside the simulated RTL for the NoC benchmark (simulation only).

Python stays out of the per-cycle loop: every tile of :class:`NocBenchTop` has a
:class:`TrafficGenerator` on its Local input and a :class:`TrafficSink` on its Local output, and
the testbench only sets the run's parameters, waits for ``done`` and reads counters.

::

    control ──► TrafficGenerator(x, y) ──► local_in[y][x]  ┌───────────┐
               (Bernoulli injection,                       │ NocFabric │
                infinite source queue)                     │           │
    counters ◄─ TrafficSink(x, y)      ◄── local_out[y][x] └───────────┘
               (always ready: latency, order, payload checks)

**Offered load and the source queue.** Each generator flips a biased coin every cycle (a packet
with probability ``threshold / 65536``, so the offered load is ``threshold / 65536 x
packet_flits`` flits/node/cycle) and chooses a destination by the traffic pattern, both from its
own xorshift64 state (:func:`~tilemesh.model.reference.traffic_schedule` is the model). Offered
load must be honoured past saturation, so packets that the network cannot take yet wait in a
*source queue* of unbounded length, and a packet's latency counts from the cycle it was created.
No memory holds that queue: the sequence of packets is a deterministic function of the seed, so
a second copy of the generator (the *replay*) walks the same sequence behind real time and
hands the injector the oldest packet not yet sent, with its creation cycle. The replay examines
``lookahead`` cycles of the sequence per clock cycle, so after a stall it catches up with real
time faster than real time moves, and it never runs ahead of it.

**Measurement** (Dally and Towles, ch. 23): from reset the generators run for ``warmup`` cycles,
then for ``measure`` cycles in which created packets are *tagged*; generation goes on (so tagged
packets see a loaded network) until every tagged packet has arrived or ``drain`` more cycles have
passed, and then stops (``done``). Latency is the cycle the tail flit leaves the destination's
Local output minus the cycle the packet was created; accepted throughput counts flits leaving
Local outputs during the measurement window.
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import bits_for
from ..layouts import Opcode, flit_layout, header_layout
from ..model.reference import TRAFFIC_PATTERNS, splitmix64

__all__ = ["TrafficPattern", "tag_layout", "control_layout", "generator_stats_layout",
           "sink_error_layout", "sink_stats_layout", "tile_stats_layout", "patterns_for",
           "TrafficGenerator", "TrafficSink", "NocBenchTop"]

COUNT_BITS = 32   # packet and flit counters
SUM_BITS = 64     # latency sums
MIN_TAG_BITS = 16  # narrowest timestamp / sequence number the benchmark accepts
_FILL = int("a5" * 32, 16)  # see reference.traffic_payload_word


class TrafficPattern(enum.Enum, shape=3):
    """Destination patterns (model: :func:`~tilemesh.model.reference.traffic_destination`)."""
    UNIFORM = 0          # every tile equally likely, the source included
    TRANSPOSE = 1        # (x, y) -> (y, x); square meshes only
    BIT_COMPLEMENT = 2   # (x, y) -> (cols-1-x, rows-1-y)
    HOTSPOT = 3          # a fraction of the packets to one tile, the rest uniform
    NEIGHBOUR = 4        # a random one of the four neighbours

    @property
    def label(self):
        """The name the command line and the model use (``"bit_complement"``...)."""
        return TRAFFIC_PATTERNS[self.value]

    @classmethod
    def from_label(cls, label):
        if label not in TRAFFIC_PATTERNS:
            raise ValueError(f"traffic pattern must be one of {', '.join(TRAFFIC_PATTERNS)}, "
                             f"not {label!r}")
        return cls(TRAFFIC_PATTERNS.index(label))


def patterns_for(cfg):
    """The patterns a ``cfg.rows`` x ``cfg.cols`` mesh supports (transpose needs a square)."""
    return tuple(p for p in TrafficPattern
                 if p is not TrafficPattern.TRANSPOSE or cfg.rows == cfg.cols)


def tag_layout(cfg):
    """What the benchmark puts in a header's ``addr`` field: the creation cycle ``ts`` and the
    source's sequence number ``seq`` (up to 32 bits each, from the field's width).

    Raises
    ------
    ValueError
        If ``addr`` has fewer than 32 bits (``cfg.noc.flit_bits`` too small).
    """
    addr_bits = cfg.noc.flit_bits - cfg.header_fixed_bits
    ts_bits = min(32, addr_bits // 2)
    seq_bits = min(32, addr_bits - ts_bits)
    if ts_bits < MIN_TAG_BITS:
        need = cfg.header_fixed_bits + 2 * MIN_TAG_BITS
        raise ValueError(f"the NoC benchmark needs flit_bits of at least {need} on a "
                         f"{cfg.rows}x{cfg.cols} mesh ({MIN_TAG_BITS}-bit timestamp and sequence "
                         f"number in the header's addr field), not {cfg.noc.flit_bits!r}")
    return data.StructLayout({"ts": unsigned(ts_bits), "seq": unsigned(seq_bits)})


def _ts_bits(cfg):
    return tag_layout(cfg)["ts"].shape.width


def _sink_stats_init(cfg):
    """Reset value of the sink counters: the per-distance minimum latencies start at all ones."""
    return {"hops": [{"latency_min": (1 << _ts_bits(cfg)) - 1}] * (cfg.rows + cfg.cols - 1)}


def control_layout(cfg):
    """Run-time parameters shared by every generator and sink.

    ``threshold``: a packet is created in a cycle with probability ``threshold / 65536``
    (0..65536). ``pattern``: a :class:`TrafficPattern`. ``packet_flits``: flits per packet,
    header included (1 .. ``max_packet_flits + 1``). ``seed``: 32-bit run seed.
    ``hotspot_threshold``: fraction ``/ 65536`` of hotspot traffic sent to the hotspot tile.
    """
    return data.StructLayout({
        "threshold": unsigned(17),
        "pattern": TrafficPattern,
        "packet_flits": unsigned(bits_for(cfg.noc.max_packet_flits + 1)),
        "seed": unsigned(32),
        "hotspot_threshold": unsigned(16),
    })


def generator_stats_layout():
    """Counters of one generator: packets ``created`` (all, and ``created_tagged`` in the
    measurement window) and packets / flits ``injected`` into the network."""
    c = unsigned(COUNT_BITS)
    return data.StructLayout({"created": c, "created_tagged": c, "injected_packets": c,
                              "injected_flits": c})


def sink_error_layout():
    """Sticky error flags of a sink, one per check."""
    return data.StructLayout({
        "wrong_dst": 1,     # header for another tile
        "bad_header": 1,    # source off the mesh, opcode not WRITE, length not packet_flits - 1
        "order": 1,         # sequence number not above the last one from the same source
        "timestamp": 1,     # creation cycle in the future
        "payload": 1,       # payload word differs from reference.traffic_payload_word
        "tail": 1,          # ``last`` not on flit number ``length``
    })


def _bucket_layout(ts_bits):
    return data.StructLayout({"packets": unsigned(COUNT_BITS),
                              "latency_sum": unsigned(SUM_BITS),
                              "latency_min": unsigned(ts_bits)})


def sink_stats_layout(cfg):
    """Counters of one sink.

    ``packets``/``flits``: everything received. ``accepted_flits``: flits received in the
    measurement window. ``tagged_packets``, ``latency_sum``, ``latency_max``: tagged packets
    received before ``done``. ``hops[h]``: the same per distance ``h`` (0 .. rows+cols-2) in
    hops, with the smallest latency seen (all ones when none). ``errors``: flits that failed a
    check; ``error_flags``: :func:`sink_error_layout`, sticky.
    """
    ts_bits = _ts_bits(cfg)
    c = unsigned(COUNT_BITS)
    return data.StructLayout({
        "packets": c, "flits": c, "accepted_flits": c, "tagged_packets": c,
        "latency_sum": unsigned(SUM_BITS), "latency_max": unsigned(ts_bits),
        "errors": c, "error_flags": sink_error_layout(),
        "hops": data.ArrayLayout(_bucket_layout(ts_bits), cfg.rows + cfg.cols - 1),
    })


def tile_stats_layout(cfg):
    """Everything :class:`NocBenchTop` reports about one tile: its generator, its sink and the
    fabric's drop counters (``status_layout``) of its network node."""
    from ..noc.fabric import status_layout
    return data.StructLayout({"generator": generator_stats_layout(),
                              "sink": sink_stats_layout(cfg),
                              "network": status_layout()})


def _xorshift64(m, state, name):
    """Hardware twin of reference.xorshift64 (one step, combinational)."""
    a, b, c = (Signal(64, name=f"{name}_{i}") for i in range(3))
    m.d.comb += [
        a.eq(state ^ (state << 13)[:64]),
        b.eq(a ^ (a >> 7)),
        c.eq(b ^ (b << 17)[:64]),
    ]
    return c


def _registers(m, port, name, init=None):
    """One register per leaf field of the struct-typed output ``port`` (which shows them), as
    nested namespaces / lists. A wide register updated field by field compiles into large, slow
    Verilator code; narrow registers do not."""
    shape = port.shape()
    if isinstance(shape, data.StructLayout):
        init = init or {}
        return SimpleNamespace(**{f: _registers(m, port[f], f"{name}_{f}", init.get(f))
                                  for f, _ in shape})
    if isinstance(shape, data.ArrayLayout):
        init = init or [None] * shape.length
        return [_registers(m, port[i], f"{name}_{i}", init[i]) for i in range(shape.length)]
    reg = Signal(shape, name=name, init=init or 0)
    m.d.comb += port.eq(reg)
    return reg


def _payload_word(cfg, index, src_id, seq):
    """Hardware twin of reference.traffic_payload_word (fill cut to the flit width first, so no
    operand is wider than a flit)."""
    def field(value, width):  # exactly `width` bits, zero-extended or cut
        value = Value.cast(value)
        return Cat(value, Const(0, max(0, width - len(value))))[:width]

    bits = cfg.noc.flit_bits
    packed = Cat(field(index, 9), field(Const(src_id, 10) if isinstance(src_id, int) else src_id,
                                        10), seq)
    return packed[:bits] ^ Const(_FILL & ((1 << bits) - 1), bits)


def _count(m, counter, inc=1):
    """``counter += inc``. No counter can wrap: a run lasts under ``2**ts_bits <= 2**32``
    cycles (``NocBenchTop`` flags longer ones), at most one flit per cycle passes a port, and
    latency sums stay under ``2**(2 * ts_bits) <= 2**SUM_BITS``."""
    m.d.sync += counter.eq(counter + inc)


def _check_position(cfg, x, y):
    if not (isinstance(x, int) and isinstance(y, int) and 0 <= x < cfg.cols and
            0 <= y < cfg.rows):
        raise ValueError(f"tile position must be a tile of the {cfg.rows}x{cfg.cols} mesh, "
                         f"not ({x!r}, {y!r})")


def _check_patterns(cfg, patterns):
    patterns = tuple(patterns_for(cfg) if patterns is None else patterns)
    for p in patterns:
        if not isinstance(p, TrafficPattern):
            raise ValueError(f"patterns must be TrafficPattern members, not {p!r}")
        if p is TrafficPattern.TRANSPOSE and cfg.rows != cfg.cols:
            raise ValueError(f"transpose traffic needs a square mesh, not {cfg.rows}x{cfg.cols}")
    if not patterns:
        raise ValueError("patterns must name at least one TrafficPattern")
    return patterns


class TrafficGenerator(wiring.Component):
    """Creates packets for the tile at column ``x``, row ``y`` and injects them.

    Every cycle from reset, the generator's xorshift64 state (``reference.traffic_seed`` in cycle
    0) decides whether a packet is created (``created`` pulses while ``running``) and where it
    goes. A replay of the same sequence (``lookahead`` cycles of it per clock cycle, never past
    ``horizon``) finds the created packets in order and injects each as a header flit (opcode
    WRITE, ``length = packet_flits - 1``, ``addr`` = :func:`tag_layout` with the creation cycle
    and a sequence number counting from 0) and ``packet_flits - 1`` payload flits
    (``reference.traffic_payload_word``). The replay plays the role of an unbounded source queue.

    Parameters
    ----------
    cfg : MeshConfig
    x, y : int
        Column and row of the tile.
    patterns : iterable of TrafficPattern, optional
        Patterns built into the hardware (default: all the mesh supports); ``control.pattern``
        chooses one at run time. A pattern not built sends every packet to the tile itself.
    hotspot : (int, int), optional
        The hotspot tile (default: the middle of the mesh).
    lookahead : int
        Cycles of the packet sequence the replay examines per clock cycle (1..16).

    Members
    -------
    control : ``In(control_layout(cfg))``
        Must stay constant from reset to the end of the run.
    running : ``In(1)``
        Packets are created only while high (high from reset until the run stops).
    measuring : ``In(1)``
        High in the measurement window: packets created then are tagged.
    horizon : ``In(ts_bits)``
        The last cycle in which packets were created: the current cycle while running.
    out : ``Out(stream.Signature(flit_layout(cfg)))``
        Flits into the network (the tile's Local input).
    created, created_tagged : ``Out(1)``
        Pulse in each cycle a packet (a tagged packet) is created.
    stats : ``Out(generator_stats_layout())``

    Raises
    ------
    ValueError
        On a position off the mesh, a pattern the mesh does not support, a ``lookahead`` out of
        range, or ``flit_bits`` too small for :func:`tag_layout`.
    """

    def __init__(self, cfg, x, y, *, patterns=None, hotspot=None, lookahead=4):
        _check_position(cfg, x, y)
        self._patterns = _check_patterns(cfg, patterns)
        if not (isinstance(lookahead, int) and 1 <= lookahead <= 16):
            raise ValueError(f"lookahead must be an integer in 1..16, not {lookahead!r}")
        hotspot = (cfg.cols // 2, cfg.rows // 2) if hotspot is None else tuple(hotspot)
        _check_position(cfg, *hotspot)
        self._cfg, self._x, self._y = cfg, x, y
        self._hotspot, self._lookahead = hotspot, lookahead
        self._tag = tag_layout(cfg)
        ts_bits = _ts_bits(cfg)
        super().__init__({
            "control": In(control_layout(cfg)),
            "running": In(1),
            "measuring": In(1),
            "horizon": In(ts_bits),
            "out": Out(stream.Signature(flit_layout(cfg))),
            "created": Out(1),
            "created_tagged": Out(1),
            "stats": Out(generator_stats_layout()),
        })

    def _destination(self, m, state, name):
        """(dst_x, dst_y) signals of the pattern ``control.pattern`` for draw ``state``."""
        cfg, x, y = self._cfg, self._x, self._y
        ctl = self.control
        coord = unsigned(cfg.coord_bits)
        ux, uy = Signal(coord, name=f"{name}_ux"), Signal(coord, name=f"{name}_uy")
        dx, dy = Signal(coord, name=f"{name}_dx"), Signal(coord, name=f"{name}_dy")
        aux = state[0:16]
        m.d.comb += [
            ux.eq((state[32:48] * cfg.cols) >> 16),
            uy.eq((state[16:32] * cfg.rows) >> 16),
            dx.eq(x), dy.eq(y),
        ]
        steps = ((0, -1), (1, 0), (0, 1), (-1, 0))  # layouts.Port order N, E, S, W
        with m.Switch(ctl.pattern):
            for p in self._patterns:
                with m.Case(p):
                    if p is TrafficPattern.UNIFORM:
                        m.d.comb += [dx.eq(ux), dy.eq(uy)]
                    elif p is TrafficPattern.TRANSPOSE:
                        m.d.comb += [dx.eq(y), dy.eq(x)]
                    elif p is TrafficPattern.BIT_COMPLEMENT:
                        m.d.comb += [dx.eq(cfg.cols - 1 - x), dy.eq(cfg.rows - 1 - y)]
                    elif p is TrafficPattern.HOTSPOT:
                        hot = aux < ctl.hotspot_threshold
                        m.d.comb += [dx.eq(Mux(hot, self._hotspot[0], ux)),
                                     dy.eq(Mux(hot, self._hotspot[1], uy))]
                    elif p is TrafficPattern.NEIGHBOUR:
                        with m.Switch(aux[0:2]):
                            for d in range(4):
                                nx, ny = x, y
                                for sx, sy in (steps[d], steps[d ^ 2]):
                                    if 0 <= x + sx < cfg.cols and 0 <= y + sy < cfg.rows:
                                        nx, ny = x + sx, y + sy
                                        break
                                with m.Case(d):
                                    m.d.comb += [dx.eq(nx), dy.eq(ny)]
        return dx, dy

    def elaborate(self, platform):
        m = Module()
        cfg, x, y, w = self._cfg, self._x, self._y, self._lookahead
        ctl = self.control
        tag = self._tag
        ts_bits = tag["ts"].shape.width
        seq_bits = tag["seq"].shape.width
        src_id = y * cfg.cols + x
        seed_const = splitmix64(src_id)

        # Cycle 0 runs on the seed itself: the state registers hold it from cycle 1 on.
        started = Signal()
        m.d.sync += started.eq(1)
        seed_state = Signal(64)
        m.d.comb += seed_state.eq(Cat(ctl.seed, ctl.seed) ^ seed_const)

        # -- creation, in real time: only counts (the replay below makes the packets) ----------
        live = Signal(64)
        live_state = Signal(64)
        m.d.comb += live.eq(Mux(started, live_state, seed_state))
        m.d.sync += live_state.eq(_xorshift64(m, live, "live_next"))
        m.d.comb += [
            self.created.eq(self.running & (live[48:64] < ctl.threshold)),
            self.created_tagged.eq(self.created & self.measuring),
        ]
        stats = _registers(m, self.stats, "count")
        with m.If(self.created):
            _count(m, stats.created)
        with m.If(self.created_tagged):
            _count(m, stats.created_tagged)

        # -- replay: the source queue ---------------------------------------------------------
        replay_state = Signal(64)
        replay_t = Signal(ts_bits + 1)  # next cycle of the sequence to examine
        states = [Signal(64, name="replay_0")]
        m.d.comb += states[0].eq(Mux(started, replay_state, seed_state))
        for i in range(1, w + 1):
            s = Signal(64, name=f"replay_{i}")
            m.d.comb += s.eq(_xorshift64(m, states[-1], f"replay_step_{i}"))
            states.append(s)
        valid, hit = [], []
        for i in range(w):
            v = Signal(name=f"replay_valid_{i}")
            h = Signal(name=f"replay_hit_{i}")
            m.d.comb += [
                v.eq(replay_t + i <= self.horizon),
                h.eq(v & (states[i][48:64] < ctl.threshold)),
            ]
            valid.append(v)
            hit.append(h)
        # Only the first hit's destination is needed: one destination circuit, not `lookahead`.
        first_hit = Signal(64)
        for i in range(w):
            with (m.If(hit[0]) if i == 0 else m.Elif(hit[i])):
                m.d.comb += first_hit.eq(states[i])
        dst_x, dst_y = self._destination(m, first_hit, "replay_dst")

        pend_valid = Signal()
        pend_ts = Signal(ts_bits)
        pend_dst_x = Signal(cfg.coord_bits)
        pend_dst_y = Signal(cfg.coord_bits)
        pend_seq = Signal(seq_bits)
        next_seq = Signal(seq_bits)

        # -- injector: header from the pending packet, then its payload flits -------------------
        sending = Signal()                                    # payload flits are going out
        index = Signal(range(cfg.noc.max_packet_flits + 2))   # flit number within the packet
        cur_seq = Signal(seq_bits)
        consume = Signal()
        hdr = Signal(header_layout(cfg))
        htag = Signal(tag)
        m.d.comb += [
            htag.ts.eq(pend_ts), htag.seq.eq(pend_seq),
            hdr.dst_x.eq(pend_dst_x), hdr.dst_y.eq(pend_dst_y),
            hdr.src_x.eq(x), hdr.src_y.eq(y),
            hdr.opcode.eq(Opcode.WRITE),
            hdr.length.eq(ctl.packet_flits - 1),
            hdr.addr.eq(htag),
        ]
        word = _payload_word(cfg, index, src_id, cur_seq)
        out = self.out
        with m.If(sending):
            m.d.comb += [
                out.valid.eq(1),
                out.payload.data.eq(word),
                out.payload.last.eq(index == ctl.packet_flits - 1),
            ]
        with m.Else():
            m.d.comb += [
                out.valid.eq(pend_valid),
                out.payload.data.eq(hdr),
                out.payload.last.eq(ctl.packet_flits == 1),
            ]
        fire = out.valid & out.ready
        m.d.comb += consume.eq(fire & ~sending)
        with m.If(fire):
            _count(m, stats.injected_flits)
            with m.If(sending):
                m.d.sync += index.eq(index + 1)
                with m.If(out.payload.last):
                    m.d.sync += sending.eq(0)
            with m.Else():
                _count(m, stats.injected_packets)
                with m.If(~out.payload.last):
                    m.d.sync += [sending.eq(1), index.eq(1), cur_seq.eq(pend_seq)]

        # -- replay advance: the oldest packet not yet handed over, or skip empty cycles --------
        can_load = Signal()
        m.d.comb += can_load.eq(~pend_valid | consume)
        with m.If(consume):
            m.d.sync += pend_valid.eq(0)
        m.d.sync += replay_state.eq(states[0])
        for i in range(w):
            with (m.If(hit[0]) if i == 0 else m.Elif(hit[i])):
                with m.If(can_load):
                    m.d.sync += [
                        pend_valid.eq(1),
                        pend_ts.eq(replay_t + i),
                        pend_dst_x.eq(dst_x), pend_dst_y.eq(dst_y),
                        pend_seq.eq(next_seq),
                        next_seq.eq(next_seq + 1),
                        replay_state.eq(states[i + 1]),
                        replay_t.eq(replay_t + i + 1),
                    ]
                with m.Else():  # the queue head waits; still skip the empty cycles before it
                    m.d.sync += [replay_state.eq(states[i]), replay_t.eq(replay_t + i)]
        # No packet among the examined cycles: skip all the cycles that have happened.
        for n in range(w, 0, -1):
            with m.Elif(valid[n - 1]):
                m.d.sync += [replay_state.eq(states[n]), replay_t.eq(replay_t + n)]
        return m


class TrafficSink(wiring.Component):
    """Receives the packets delivered to the tile at column ``x``, row ``y`` and checks them.

    Always ready. Every packet's header must name this tile, a source on the mesh, opcode WRITE
    and ``length = packet_flits - 1``, carry a creation cycle not in the future and a sequence
    number above the last one seen from that source (per-source order; with the generators'
    counts this proves nothing lost or duplicated), and every payload flit must be
    ``reference.traffic_payload_word``; each flit that fails counts once in ``errors`` and sets
    the flags of the checks it failed.

    Parameters
    ----------
    cfg : MeshConfig
    x, y : int
        Column and row of the tile.

    Members
    -------
    inp : ``In(stream.Signature(flit_layout(cfg)))``
        The tile's Local output.
    control : ``In(control_layout(cfg))``
        Only ``packet_flits`` is used.
    now : ``In(ts_bits)``
        The current cycle (0 in the first cycle after reset).
    warm_end, meas_end : ``In(ts_bits + 1)``
        The measurement window: packets created in cycles ``warm_end .. meas_end - 1`` are
        tagged; flits arriving in those cycles are accepted throughput.
    running : ``In(1)``
        Tagged-packet statistics are only updated while high (frozen at ``done``).
    delivered, delivered_tagged : ``Out(1)``
        Pulse when the tail of a packet (a tagged packet) arrives.
    stats : ``Out(sink_stats_layout(cfg))``

    Raises
    ------
    ValueError
        On a position off the mesh or ``flit_bits`` too small for :func:`tag_layout`.
    """

    def __init__(self, cfg, x, y):
        _check_position(cfg, x, y)
        self._cfg, self._x, self._y = cfg, x, y
        self._tag = tag_layout(cfg)
        ts_bits = _ts_bits(cfg)
        super().__init__({
            "inp": In(stream.Signature(flit_layout(cfg))),
            "control": In(control_layout(cfg)),
            "now": In(ts_bits),
            "warm_end": In(ts_bits + 1),
            "meas_end": In(ts_bits + 1),
            "running": In(1),
            "delivered": Out(1),
            "delivered_tagged": Out(1),
            "stats": Out(sink_stats_layout(cfg)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, x, y = self._cfg, self._x, self._y
        tag = self._tag
        ts_bits = tag["ts"].shape.width
        seq_bits = tag["seq"].shape.width
        stats = _registers(m, self.stats, "count", _sink_stats_init(cfg))
        ctl = self.control
        flit = self.inp.payload
        fire = Signal()
        m.d.comb += [self.inp.ready.eq(1), fire.eq(self.inp.valid)]
        hdr = header_layout(cfg)(flit.data)
        htag = tag(hdr.addr[:tag.size])

        # Highest sequence number + 1 seen from each source (0 before the first).
        m.submodules.next_seq = seq_mem = memory.Memory(
            shape=unsigned(seq_bits + 1), depth=cfg.tiles, init=[])
        seq_rd = seq_mem.read_port(domain="comb")
        seq_wr = seq_mem.write_port()
        # Reset does not clear a memory, and every run restarts the sequence numbers: an entry
        # counts only once its source's bit here (cleared by reset) is set.
        seen = Signal(cfg.tiles)
        last_seq_next = Signal(seq_bits + 1)

        in_packet = Signal()
        cur_src_x = Signal(cfg.coord_bits)
        cur_src_y = Signal(cfg.coord_bits)
        cur_src_id = Signal(range(cfg.tiles))
        cur_seq = Signal(seq_bits)
        cur_ts = Signal(ts_bits)
        cur_len = Signal.like(hdr.length)
        index = Signal(range(cfg.noc.max_packet_flits + 2))

        # Header checks.
        src_ok = Signal()
        src_id = Signal(range(cfg.tiles))
        m.d.comb += [
            src_ok.eq((hdr.src_x < cfg.cols) & (hdr.src_y < cfg.rows)),
            src_id.eq(Mux(src_ok, hdr.src_y * cfg.cols + hdr.src_x, 0)),
            seq_rd.addr.eq(src_id),
            seq_wr.addr.eq(src_id),
            seq_wr.data.eq(htag.seq + 1),
            last_seq_next.eq(Mux(seen.bit_select(src_id, 1), seq_rd.data, 0)),
        ]
        err = Signal(sink_error_layout())
        word = _payload_word(cfg, index, cur_src_id, cur_seq)

        # Packet completion: (source, creation cycle) of the packet whose tail is here.
        complete = Signal()
        done_src_x = Signal(cfg.coord_bits)
        done_src_y = Signal(cfg.coord_bits)
        done_ts = Signal(ts_bits)

        with m.If(fire & ~in_packet):
            m.d.comb += [
                err.wrong_dst.eq((hdr.dst_x != x) | (hdr.dst_y != y)),
                err.bad_header.eq(~src_ok | (hdr.opcode != Opcode.WRITE) |
                                  (hdr.length != ctl.packet_flits - 1)),
                err.order.eq(src_ok & (htag.seq < last_seq_next)),
                err.timestamp.eq(htag.ts > self.now),
                err.tail.eq(flit.last != (hdr.length == 0)),
                seq_wr.en.eq(src_ok & ~err.order),
            ]
            with m.If(src_ok):   # a shifted one, not a write to a bit selected by src_id
                m.d.sync += seen.eq(seen | (Const(1, 1) << src_id)[:cfg.tiles])
            with m.If(flit.last):
                m.d.comb += [complete.eq(1), done_src_x.eq(hdr.src_x),
                             done_src_y.eq(hdr.src_y), done_ts.eq(htag.ts)]
            with m.Else():
                m.d.sync += [
                    in_packet.eq(1), index.eq(1),
                    cur_src_x.eq(hdr.src_x), cur_src_y.eq(hdr.src_y), cur_src_id.eq(src_id),
                    cur_seq.eq(htag.seq), cur_ts.eq(htag.ts), cur_len.eq(hdr.length),
                ]
        with m.If(fire & in_packet):
            m.d.comb += [
                err.payload.eq(flit.data != word),
                err.tail.eq(flit.last != (index == cur_len)),
            ]
            m.d.sync += index.eq(index + 1)
            with m.If(flit.last):
                m.d.sync += in_packet.eq(0)
                m.d.comb += [complete.eq(1), done_src_x.eq(cur_src_x),
                             done_src_y.eq(cur_src_y), done_ts.eq(cur_ts)]

        with m.If(err.as_value().any()):
            _count(m, stats.errors)
        for flag, _ in sink_error_layout():
            with m.If(err[flag]):
                m.d.sync += getattr(stats.error_flags, flag).eq(1)

        # Counters.
        in_window = Signal()
        m.d.comb += in_window.eq((self.now >= self.warm_end) & (self.now < self.meas_end))
        with m.If(fire):
            _count(m, stats.flits)
            with m.If(in_window):
                _count(m, stats.accepted_flits)

        latency = Signal(ts_bits)
        hops = Signal(cfg.coord_bits + 1)
        tagged = Signal()
        m.d.comb += [
            latency.eq(self.now - done_ts),
            hops.eq(Mux(done_src_x > x, done_src_x - x, x - done_src_x) +
                    Mux(done_src_y > y, done_src_y - y, y - done_src_y)),
            tagged.eq((done_ts >= self.warm_end) & (done_ts < self.meas_end)),
            self.delivered.eq(complete),
            self.delivered_tagged.eq(complete & tagged),
        ]
        with m.If(complete):
            _count(m, stats.packets)
        with m.If(complete & tagged & self.running):
            _count(m, stats.tagged_packets)
            _count(m, stats.latency_sum, latency)
            with m.If(latency > stats.latency_max):
                m.d.sync += stats.latency_max.eq(latency)
            # One adder and one comparator shared by all distances: read, update, write back.
            buckets = stats.hops
            old_packets = Signal(COUNT_BITS)
            old_sum = Signal(SUM_BITS)
            old_min = Signal(ts_bits)
            with m.Switch(hops):
                for h, bucket in enumerate(buckets):
                    with m.Case(h):
                        m.d.comb += [old_packets.eq(bucket.packets),
                                     old_sum.eq(bucket.latency_sum),
                                     old_min.eq(bucket.latency_min)]
            new_packets = Signal(COUNT_BITS)
            new_sum = Signal(SUM_BITS)
            new_min = Signal(ts_bits)
            m.d.comb += [
                new_packets.eq(old_packets + 1),
                new_sum.eq(old_sum + latency),
                new_min.eq(Mux(latency < old_min, latency, old_min)),
            ]
            for h, bucket in enumerate(buckets):
                # An If per register: a Switch here would repeat all the cases for each one.
                with m.If(hops == h):
                    m.d.sync += [bucket.packets.eq(new_packets),
                                 bucket.latency_sum.eq(new_sum),
                                 bucket.latency_min.eq(new_min)]
        return m


class NocBenchTop(wiring.Component):
    """A :class:`~tilemesh.noc.fabric.NocFabric` with a :class:`TrafficGenerator` and a
    :class:`TrafficSink` on every tile's Local port, and the run's phases.

    Reset starts a run; the run's parameters are inputs (one build serves a whole sweep) and must
    be stable from reset to ``done``. Cycle 0 is the first cycle after reset. Packets are created
    from cycle 0; those created in ``warmup .. warmup + measure - 1`` are tagged. Creation stops
    (``done`` rises) in the first cycle at or after ``warmup + measure`` in which every tagged
    packet has arrived (``drained`` is then high), or at cycle ``warmup + measure + drain``
    (``drained`` low: the network is saturated). After ``done`` the network keeps delivering the
    packets still queued; ``idle`` rises once every created packet has arrived.

    The host port is unused: ``host_in`` is idle, and flits leaving by ``host_out`` are counted
    in ``host_flits`` (none should).

    Parameters
    ----------
    cfg : MeshConfig
    patterns : iterable of TrafficPattern, optional
        Patterns built in (default: all the mesh supports, :func:`patterns_for`).
    hotspot : (int, int), optional
        Hotspot tile (default: the middle of the mesh).
    lookahead : int
        Replay speed of the source queues (see :class:`TrafficGenerator`).
    modules : dict, optional
        Passed to :class:`~tilemesh.noc.fabric.NocFabric`: routers and ingress checkers as
        instances of separately converted modules (:func:`tilemesh.generate.fabric_parts`).

    Members
    -------
    control : ``In(control_layout(cfg))``
    warmup, measure, drain : ``In(ts_bits)``
        Phase lengths in cycles.
    done, drained, idle : ``Out(1)``
    config_error : ``Out(1)``
        The run cannot be done: pattern not built, ``packet_flits`` outside
        1 .. ``max_packet_flits + 1``, or ``warmup + measure + drain`` does not fit the
        timestamps. No packet is created.
    now : ``Out(ts_bits)``
        The current cycle.
    last_cycle : ``Out(ts_bits)``
        The last cycle in which packets were created (final once ``done`` is high).
    select : ``In(range(cfg.tiles))``
        Tile number ``y * cols + x`` whose counters ``tile_stats`` shows.
    tile_stats : ``Out(tile_stats_layout(cfg))``
    host_flits : ``Out(32)``
        Flits that left by the host port.

    Raises
    ------
    ValueError
        As :class:`TrafficGenerator`.
    """

    def __init__(self, cfg, *, patterns=None, hotspot=None, lookahead=4, modules=None):
        self._patterns = _check_patterns(cfg, patterns)
        self._cfg, self._hotspot, self._lookahead = cfg, hotspot, lookahead
        self._modules = modules
        tag = tag_layout(cfg)
        ts_bits = tag["ts"].shape.width
        super().__init__({
            "control": In(control_layout(cfg)),
            "warmup": In(ts_bits),
            "measure": In(ts_bits),
            "drain": In(ts_bits),
            "done": Out(1),
            "drained": Out(1),
            "idle": Out(1),
            "config_error": Out(1),
            "now": Out(ts_bits),
            "last_cycle": Out(ts_bits),
            "select": In(range(cfg.tiles)),
            "tile_stats": Out(tile_stats_layout(cfg)),
            "host_flits": Out(COUNT_BITS),
        })

    @property
    def patterns(self):
        return self._patterns

    def elaborate(self, platform):
        from ..noc.fabric import NocFabric

        m = Module()
        cfg = self._cfg
        ts_bits = len(self.now)
        ctl = self.control

        m.submodules.fabric = fabric = NocFabric(cfg, modules=self._modules)
        m.d.comb += fabric.host_out.ready.eq(1)
        with m.If(fabric.host_out.valid):
            _count(m, self.host_flits)

        # -- run-time parameter checks ------------------------------------------------------
        pattern_ok = Signal()
        with m.Switch(ctl.pattern):
            for p in self._patterns:
                with m.Case(p):
                    m.d.comb += pattern_ok.eq(1)
        total = Signal(ts_bits + 2)
        m.d.comb += [
            total.eq(self.warmup + self.measure + self.drain),
            self.config_error.eq(~pattern_ok | (ctl.packet_flits == 0) |
                                 (ctl.packet_flits > cfg.noc.max_packet_flits + 1) |
                                 (total >= (1 << ts_bits) - 1)),
        ]
        gen_control = Signal(control_layout(cfg))
        m.d.comb += gen_control.eq(ctl)
        with m.If(self.config_error):
            m.d.comb += gen_control.threshold.eq(0)

        # -- phases ---------------------------------------------------------------------------
        now = Signal(ts_bits)
        running = Signal(init=1)
        last_running = Signal(ts_bits)
        horizon = Signal(ts_bits)
        warm_end = Signal(ts_bits + 1)
        meas_end = Signal(ts_bits + 1)
        measuring = Signal()
        m.d.sync += now.eq(now + (now != (1 << ts_bits) - 1))
        m.d.comb += [
            self.now.eq(now),
            self.last_cycle.eq(horizon),
            warm_end.eq(self.warmup),
            meas_end.eq(self.warmup + self.measure),
            measuring.eq(running & (now >= warm_end) & (now < meas_end)),
            horizon.eq(Mux(running, now, last_running)),
        ]
        with m.If(running):
            m.d.sync += last_running.eq(now)

        gens, sinks = [], []
        for y in range(cfg.rows):
            for x in range(cfg.cols):
                gen = TrafficGenerator(cfg, x, y, patterns=self._patterns,
                                       hotspot=self._hotspot, lookahead=self._lookahead)
                sink = TrafficSink(cfg, x, y)
                m.submodules[f"generator_{y}_{x}"] = gen
                m.submodules[f"sink_{y}_{x}"] = sink
                wiring.connect(m, gen.out, fabric.local_in[y][x])
                wiring.connect(m, fabric.local_out[y][x], sink.inp)
                m.d.comb += [
                    gen.control.eq(gen_control), gen.running.eq(running),
                    gen.measuring.eq(measuring), gen.horizon.eq(horizon),
                    sink.control.eq(ctl), sink.now.eq(now), sink.warm_end.eq(warm_end),
                    sink.meas_end.eq(meas_end), sink.running.eq(running),
                ]
                gens.append(gen)
                sinks.append(sink)

        # Packets created and not yet delivered (all, and tagged ones): popcounts of pulses.
        count_bits = COUNT_BITS + bits_for(cfg.tiles)
        outstanding = Signal(count_bits)
        outstanding_tagged = Signal(count_bits)
        m.d.sync += [
            outstanding.eq(outstanding + _popcount([g.created for g in gens])
                           - _popcount([s.delivered for s in sinks])),
            outstanding_tagged.eq(outstanding_tagged
                                  + _popcount([g.created_tagged for g in gens])
                                  - _popcount([s.delivered_tagged for s in sinks])),
        ]
        drained = Signal()
        with m.If(running & (now >= meas_end)):
            with m.If(outstanding_tagged == 0):
                m.d.sync += [running.eq(0), drained.eq(1)]
            with m.Elif(now >= meas_end + self.drain):
                m.d.sync += running.eq(0)
        m.d.comb += [
            self.done.eq(~running),
            self.drained.eq(drained),
            self.idle.eq(~running & (outstanding == 0)),
        ]

        # -- counter read-out ---------------------------------------------------------------
        with m.Switch(self.select):
            for i, (gen, sink) in enumerate(zip(gens, sinks, strict=True)):
                y, x = divmod(i, cfg.cols)
                with m.Case(i):
                    m.d.comb += [
                        self.tile_stats.generator.eq(gen.stats),
                        self.tile_stats.sink.eq(sink.stats),
                        self.tile_stats.network.eq(fabric.status[y][x]),
                    ]
        return m


def _popcount(bits):
    """Sum of 1-bit values as a balanced adder tree."""
    level = list(bits)
    if not level:
        return Const(0, 1)
    while len(level) > 1:
        level = [level[i] + level[i + 1] if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
    return level[0]
