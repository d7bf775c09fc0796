"""Pure-Python side of the NoC benches: packets, traffic patterns, sources and the scoreboard.

Shared by the Amaranth-simulator unit tests (tests/unit/test_noc_*.py) and the cocotb traffic
bench (:mod:`tilemesh_sim.noc_traffic`). Flits are ``(data, last)`` tuples of integers; headers
are packed and unpacked through :func:`tilemesh.layouts.header_layout`'s own field offsets.
"""

import random
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field

from tilemesh.config import MeshConfig, NocConfig, TileConfig
from tilemesh.layouts import Opcode, header_layout
from tilemesh.model.reference import noc_drop_reason
from tilemesh.noc.routing import XYRoute, host_address, on_mesh

__all__ = ["HOST", "encode_header", "decode_header", "Packet", "PATTERNS", "destination",
           "PacketFactory", "TrafficSource", "ScriptSource", "Scoreboard", "sink_of", "sources",
           "sinks", "hops", "noc_config"]

HOST = "host"  # the host port as a source or sink name; tiles are (x, y) tuples


# Small tiles keep the header's address field short, so 32-bit flits fit meshes up to 7x7.
_NOC_TEST_TILE = TileConfig(sram_banks=1, sram_depth=256, imem_depth=64)


def noc_config(rows, cols, *, fifo_depth=2, max_packet_flits=8, flit_bits=32, **mesh):
    """A mesh configuration for NoC tests: small tiles, the given network parameters."""
    return MeshConfig(rows=rows, cols=cols, tile=_NOC_TEST_TILE,
                      noc=NocConfig(flit_bits=flit_bits, fifo_depth=fifo_depth,
                                    max_packet_flits=max_packet_flits), **mesh)


def _fields(cfg):
    layout = header_layout(cfg)
    return {name: (f.offset, f.width) for name, f in layout}


def encode_header(cfg, **values):
    """Header bits from raw integer fields (unknown opcodes included); missing fields are 0."""
    bits = 0
    fields = _fields(cfg)
    for name, value in values.items():
        offset, width = fields[name]
        value = value.value if isinstance(value, Opcode) else int(value)
        if not 0 <= value < (1 << width):
            raise ValueError(f"header field {name} = {value} does not fit {width} bits")
        bits |= value << offset
    return bits


def decode_header(cfg, bits):
    """Raw integer fields of header ``bits``."""
    return {name: (bits >> off) & ((1 << w) - 1) for name, (off, w) in _fields(cfg).items()}


def sources(cfg):
    """Every entry point: each tile and the host."""
    return [(x, y) for y in range(cfg.rows) for x in range(cfg.cols)] + [HOST]


def sinks(cfg):
    return sources(cfg)


def sink_of(cfg, dst):
    """Where a packet for header destination ``dst`` = (x, y) leaves: a tile or :data:`HOST`."""
    return HOST if tuple(dst) == host_address(cfg) else tuple(dst)


def _address_of(cfg, node):
    return host_address(cfg) if node == HOST else node


def hops(cfg, src, dst):
    """Routers a packet from ``src`` (tile or HOST) to ``dst`` (tile or HOST) passes through."""
    start = (cfg.host_x, cfg.host_y) if src == HOST else src
    return len(XYRoute.path(cfg, start, _address_of(cfg, dst)))


@dataclass
class Packet:
    """One packet as a source sends it. ``last_index`` is where ``last`` is set (the length
    field's value for a well-formed packet); ``flits`` has ``last_index + 1`` flits."""
    src: object
    dst: tuple                   # raw header destination (a tile, the host address, off mesh)
    opcode: int
    length: int
    addr: int
    payload: list                # words after the header (len == last_index)
    last_index: int
    born: int = 0                # cycle the source created it
    sent: int = None             # cycle its header entered the network
    cfg: object = field(default=None, repr=False)

    @property
    def src_xy(self):
        return _address_of(self.cfg, self.src)

    def flits(self):
        hdr = encode_header(self.cfg, dst_x=self.dst[0], dst_y=self.dst[1],
                            src_x=self.src_xy[0], src_y=self.src_xy[1], opcode=self.opcode,
                            length=self.length, addr=self.addr)
        words = [hdr] + list(self.payload)
        return [(w, int(i == len(words) - 1)) for i, w in enumerate(words)]

    @property
    def drop_reason(self):
        return noc_drop_reason(self.cfg, self.dst[0], self.dst[1], self.opcode, self.length,
                               self.last_index)

    @property
    def sink(self):
        return sink_of(self.cfg, self.dst)


# -- traffic patterns: destination node for a source tile --------------------------------------

def _uniform(cfg, src, rnd):
    others = [(x, y) for y in range(cfg.rows) for x in range(cfg.cols) if (x, y) != src]
    return rnd.choice(others) if others else src


def _transpose(cfg, src, rnd):
    # (x, y) -> (y, x), folded into the mesh when it is not square.
    x, y = src
    return (y % cfg.cols, x % cfg.rows)


def _bit_complement(cfg, src, rnd):
    # Mirror through the centre: the bit complement of each coordinate on power-of-two sizes.
    x, y = src
    return (cfg.cols - 1 - x, cfg.rows - 1 - y)


def _hotspot(cfg, src, rnd):
    # Half of the packets go to the centre tile, the rest uniformly.
    if rnd.random() < 0.5:
        return (cfg.cols // 2, cfg.rows // 2)
    return _uniform(cfg, src, rnd)


def _neighbour(cfg, src, rnd):
    x, y = src
    near = [(x + dx, y + dy) for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1))
            if on_mesh(cfg, x + dx, y + dy)]
    return rnd.choice(near) if near else src


PATTERNS = {"uniform": _uniform, "transpose": _transpose, "bit_complement": _bit_complement,
            "hotspot": _hotspot, "neighbour": _neighbour}


def destination(pattern, cfg, src, rnd):
    """Destination tile of a packet from tile ``src`` under ``pattern`` (see :data:`PATTERNS`);
    the host sends uniformly to all tiles."""
    if src == HOST:
        return rnd.choice([(x, y) for y in range(cfg.rows) for x in range(cfg.cols)])
    return PATTERNS[pattern](cfg, src, rnd)


# -- packet factory ------------------------------------------------------------------------------

class PacketFactory:
    """Makes well-formed and malformed packets with random contents for one mesh.

    ``sizes`` is ``"single"`` (header only), ``"multi"`` (1..max payload flits), ``"mixed"``
    (either, half and half) or an int (that many payload flits).
    """

    MALFORMED = ("off_mesh", "bad_opcode", "bad_length", "bad_tail_short", "bad_tail_long")

    def __init__(self, cfg, rnd):
        self.cfg = cfg
        self.rnd = rnd
        self.seq = Counter()
        fields = _fields(cfg)
        self.addr_bits = fields["addr"][1]
        self.length_max_raw = (1 << fields["length"][1]) - 1
        self.coord_max = (1 << cfg.coord_bits) - 1

    def malformed_kinds(self):
        """Kinds that can be made in this configuration (a length field with no spare value
        above ``max_packet_flits`` cannot carry a bad length)."""
        kinds = list(self.MALFORMED)
        if self.length_max_raw <= self.cfg.noc.max_packet_flits:
            kinds.remove("bad_length")
        return kinds

    def _length(self, sizes):
        mx = self.cfg.noc.max_packet_flits
        if isinstance(sizes, int):
            return sizes
        if sizes == "single":
            return 0
        if sizes == "multi":
            return self.rnd.randint(1, mx)
        if sizes == "mixed":
            return 0 if self.rnd.random() < 0.5 else self.rnd.randint(1, mx)
        raise ValueError(f"sizes must be 'single', 'multi', 'mixed' or an int, not {sizes!r}")

    def _make(self, src, dst, opcode, length, last_index, born):
        key = (src, tuple(dst))
        addr = self.seq[key] % (1 << self.addr_bits)
        self.seq[key] += 1
        words = [self.rnd.getrandbits(self.cfg.noc.flit_bits) for _ in range(last_index)]
        return Packet(src=src, dst=tuple(dst), opcode=opcode, length=length, addr=addr,
                      payload=words, last_index=last_index, born=born, cfg=self.cfg)

    def good(self, src, dst, sizes="mixed", born=0, opcode=None):
        """A well-formed packet from ``src`` to node ``dst`` (a tile or :data:`HOST`)."""
        length = self._length(sizes)
        if opcode is None:
            opcode = self.rnd.choice(sorted(Opcode.valid_values()))
        return self._make(src, _address_of(self.cfg, dst), opcode, length, length, born)

    def bad(self, src, kind, born=0):
        """A malformed packet of ``kind`` (one of :meth:`malformed_kinds`)."""
        cfg, rnd = self.cfg, self.rnd
        mx = cfg.noc.max_packet_flits
        dst = rnd.choice([(x, y) for y in range(cfg.rows) for x in range(cfg.cols)])
        opcode = rnd.choice(sorted(Opcode.valid_values()))
        length = rnd.randint(0, mx)
        last_index = length
        if kind == "off_mesh":
            while on_mesh(cfg, *dst) or dst == host_address(cfg):
                dst = (rnd.randint(0, self.coord_max), rnd.randint(0, self.coord_max))
        elif kind == "bad_opcode":
            opcode = rnd.choice([v for v in range(8) if v not in Opcode.valid_values()])
        elif kind == "bad_length":
            length = rnd.randint(mx + 1, self.length_max_raw)
            last_index = rnd.randint(0, 3)
        elif kind == "bad_tail_short":
            length = rnd.randint(1, mx)
            last_index = rnd.randint(0, length - 1)
        elif kind == "bad_tail_long":
            last_index = length + rnd.randint(1, 3)
        else:
            raise ValueError(f"unknown malformed packet kind {kind!r}")
        packet = self._make(src, dst, opcode, length, last_index, born)
        assert packet.drop_reason is not None, packet
        return packet


# -- sources -------------------------------------------------------------------------------------

class TrafficSource:
    """Creates packets for one source node as a Bernoulli process.

    Each cycle, with probability ``rate / mean_flits``, a new packet is appended to the source
    queue, so ``rate`` is the offered load in flits per node per cycle (past saturation the
    queue grows: offered and accepted load part). At most ``count`` packets are created.
    """

    def __init__(self, cfg, node, factory, *, pattern, rate, count, sizes="mixed",
                 malformed=0.0, host_share=0.0):
        self.cfg, self.node, self.factory = cfg, node, factory
        self.pattern, self.rate, self.count, self.sizes = pattern, rate, count, sizes
        self.malformed, self.host_share = malformed, host_share
        mx = cfg.noc.max_packet_flits
        mean_len = {"single": 1, "multi": 1 + (1 + mx) / 2, "mixed": 1 + (1 + mx) / 4}
        self.mean_flits = 1 + sizes if isinstance(sizes, int) else mean_len[sizes]
        self.created = 0

    @property
    def done(self):
        return self.created >= self.count

    def tick(self, cycle):
        """The packet created this cycle, or None."""
        rnd = self.factory.rnd
        if self.done or rnd.random() >= min(1.0, self.rate / self.mean_flits):
            return None
        self.created += 1
        if self.malformed and rnd.random() < self.malformed:
            return self.factory.bad(self.node, rnd.choice(self.factory.malformed_kinds()),
                                    born=cycle)
        if self.node != HOST and self.host_share and rnd.random() < self.host_share:
            dst = HOST
        else:
            dst = destination(self.pattern, self.cfg, self.node, rnd)
        return self.factory.good(self.node, dst, self.sizes, born=cycle)


class ScriptSource:
    """Offers a given list of packets, in order, one packet-time apart on average: each cycle a
    new packet is released with probability ``rate / mean flits`` (same interface as
    :class:`TrafficSource`)."""

    def __init__(self, packets, rnd, *, rate):
        self.packets = deque(packets)
        self.rnd = rnd
        flits = sum(p.last_index + 1 for p in packets)
        self.chance = min(1.0, rate * len(packets) / max(flits, 1))

    @property
    def done(self):
        return not self.packets

    def tick(self, cycle):
        if self.packets and self.rnd.random() < self.chance:
            packet = self.packets.popleft()
            packet.born = cycle
            return packet
        return None


# -- scoreboard ----------------------------------------------------------------------------------

class Scoreboard:
    """Proves that every well-formed packet arrives exactly once, whole, unchanged, at the right
    sink, in order per (source, sink) pair; and that every malformed one is dropped and counted.

    Errors are collected (not raised at once) so a report lists all of them.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        self.pending = defaultdict(deque)   # (src, sink) -> packets in send order
        self.expected_drops = Counter()     # (entry node, reason) -> count
        self.errors = []
        self.delivered = 0
        self.delivered_flits = 0
        self.latencies = []                 # (born -> tail delivered, hops, flits)

    def sent(self, packet):
        """Call when ``packet``'s last flit has entered the network (its order is fixed)."""
        reason = packet.drop_reason
        if reason is None:
            self.pending[packet.src, packet.sink].append(packet)
        else:
            self.expected_drops[packet.src, reason] += 1

    @property
    def outstanding(self):
        return sum(len(q) for q in self.pending.values())

    def received(self, sink, flits, cycle=0):
        """A whole packet ``flits`` (list of ``(data, last)``) left the network at ``sink``."""
        self.delivered += 1
        self.delivered_flits += len(flits)
        hdr = decode_header(self.cfg, flits[0][0])
        src_xy = (hdr["src_x"], hdr["src_y"])
        src = HOST if src_xy == host_address(self.cfg) else src_xy
        if sink_of(self.cfg, (hdr["dst_x"], hdr["dst_y"])) != sink:
            self.errors.append(f"packet {hdr} delivered at {sink}, not at its destination")
            return
        queue = self.pending.get((src, sink))
        if not queue:
            self.errors.append(f"unexpected packet at {sink} (duplicate or invented): {hdr}")
            return
        expect = queue.popleft()
        if flits != expect.flits():
            self.errors.append(
                f"packet from {src} to {sink} differs from the next one sent on that pair "
                f"(corrupted, reordered or interleaved): got {_show(flits)}, "
                f"expected {_show(expect.flits())}")
            return
        self.latencies.append((cycle - expect.born, hops(self.cfg, src, sink), len(flits)))

    def check_drops(self, counted):
        """``counted[(entry node, reason)]`` are the hardware's drop counters."""
        for key in set(counted) | set(self.expected_drops):
            if counted.get(key, 0) != self.expected_drops.get(key, 0):
                self.errors.append(f"drop counter {key}: hardware {counted.get(key, 0)}, "
                                   f"expected {self.expected_drops.get(key, 0)}")

    def check_done(self):
        for (src, sink), queue in self.pending.items():
            for p in queue:
                self.errors.append(f"packet lost: from {src} to {sink} addr {p.addr} "
                                   f"({p.last_index + 1} flits, born {p.born})")
        return self.errors

    def mean_latency(self):
        if not self.latencies:
            return 0.0
        return sum(lat for lat, _, _ in self.latencies) / len(self.latencies)


def _show(flits):
    return "[" + ", ".join(f"{d:#x}{'*' if last else ''}" for d, last in flits) + "]"


def seeded(seed, tag=""):
    """A random generator for ``seed`` and ``tag`` (same idea as ``streams.rng``)."""
    return random.Random(f"{seed}:{tag}")
