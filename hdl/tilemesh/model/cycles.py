"""Timing of the mesh model: named cycle parameters, the network's link model, unit durations.

Everything :class:`~tilemesh.model.machine.MeshModel` knows about time is here, so calibrating
the model against the RTL (issue 5: within 5 %) changes this file only. The model is
discrete-event: a unit's work on one instruction is a closed-form duration, and the network
moves packets buffer by buffer (wormhole, 1 flit per cycle per link, ``router_cycles`` per hop,
a round-robin arbiter per link), so a 256x256x256 GEMM models in seconds instead of stepping
every cycle in Python.

::

    host ──host_in──► router(hx,hy) ──► ... ──► router(x,y) ──eject──► NI rx (SRAM, semaphores)
                                                     ▲
                               NI tx (DMA engine, READ_RESP) ──inject──┘

SRAM banks read one word per cycle and serve the units' read ports round-robin. A unit's own
operands sharing a bank slow it in closed form (:func:`bank_reads`); between units, both sides of
a conflict lose the cycles :func:`bank_share` gives: a command starting on a bank another unit is
reading starts that much later, and the command under way is stretched (``MeshModel._contend``).
DMA packets leave one event at a time, so each packet meets the reads under way when it is sent,
and the READ_REQ responder's reads compete like the DMA engine's. The network (:class:`Network`)
is the routers' own rules at packet granularity: first-in-first-out buffers (send queue, ingress
checker, router input FIFOs) whose front packet asks for its next link, a round-robin choice
among the packets asking when a link is free, and a worm's tail that passes a link only once its
flits fit in the buffer behind it (back-pressure up to the DMA engine and the host).

Approximations, so calibration knows where to look: reads are spread evenly over a command's
duration; a packet's reads are charged to the bank of its first word; the NI's write port is
never a bottleneck (banks have separate read and write ports); the ingress checker and the
router FIFO behind it are one buffer of their summed depth; a buffer's fill level counts a
packet ahead that waits downstream as all there until it is known when its tail leaves; a
packet's SRAM reads are charged from the cycle it is offered, also when it then waits for its
inject link.
"""

import dataclasses
from collections import deque
from dataclasses import dataclass

from ..noc.ingress import ingress_depth
from ..noc.routing import host_address
from ..tile.matrix import output_latency

__all__ = ["Timing", "Network", "BusyCounter", "check_cycles", "bank_reads", "bank_share",
           "matmul_timing", "simd_cycles", "HOST"]

#: The network node of the host (``Network`` accepts it wherever it takes a tile ``(x, y)``).
HOST = "host"


@dataclass(frozen=True, kw_only=True)
class Timing:
    """Cycle parameters of the mesh model; every figure the model uses is one of these.

    Parameters
    ----------
    issue_cycles : int
        Cycles the controller spends on a control instruction or on queueing SIGNAL / NOTIFY /
        SIMD_CFG: the decode cycle (into the instruction register) and the decision. (An
        instruction that blocked was decoded while it waited: it takes one cycle once it may
        go; the first instruction is decoded in the cycle after START.)
    check_base_cycles : int
        Fixed part of issuing DMA / MATMUL / SIMD (load and decision of the range check); the
        shift-and-add adds one cycle per bit of the smaller factor (:func:`check_cycles`).
    wake_cycles : int
        Cycles from the event that unblocks issue (semaphore bump, unit idle) to the next issue.
    router_cycles : int
        Zero-load cycles per router a packet's head crosses.
    ni_tx_cycles : int
        Cycles from the DMA engine's first packet request to its head on the inject link.
    ni_rx_cycles : int
        Cycles from a packet's tail on the eject link to its words / increment being applied.
    dma_start_cycles : int
        Cycles from the DMA engine taking a ``dma.*`` command to its first packet (SRAM
        read-ahead); ``signal`` and ``notify`` packets leave after ``ni_tx_cycles`` only.
    dma_packet_gap : int
        Idle cycles between two packets the DMA engine sends back to back.
    read_resp_cycles : int
        Cycles from a READ_REQ arriving to its READ_RESP head being offered (queue, SRAM read).
    matmul_start_cycles : int
        Cycles from the matrix engine taking a command to its first step entering the array.
    matmul_write_cycles : int
        Cycles from the last C word leaving the array to it being in SRAM (the C-row FIFO is
        block RAM: its read is registered).
    simd_start_cycles : int
        Cycles from the SIMD engine taking a command to its first operand read.
    simd_next_cycles : int
        Cycles from a SIMD command's last operand read to the first of the command queued
        behind it (the engine's slot holds the next command while one issues its reads).
    simd_latency : int
        Pipeline cycles from a vector's last operand word to its first result word in SRAM
        (its ``write_words`` follow one per cycle); the engine takes its next command
        meanwhile.
    simd_hazard_cycles : int
        Extra cycles before a SIMD command that reads results the previous one is still
        writing may start, after those are written.
    host_cycles : int
        Cycles the host needs between two packets it sends (0: line rate).
    ingress_cycles : int
        Cycles from a packet's tail entering an ingress checker (a tile's inject link or the
        host port) to its header leaving towards the router: the checker stores the whole
        packet before it commits it (tilemesh.noc.ingress).
    """
    issue_cycles: int = 2
    check_base_cycles: int = 2
    wake_cycles: int = 1
    router_cycles: int = 2
    ni_tx_cycles: int = 1
    ni_rx_cycles: int = 1
    dma_start_cycles: int = 1
    dma_packet_gap: int = 0
    read_resp_cycles: int = 3
    matmul_start_cycles: int = 3
    matmul_write_cycles: int = 2
    simd_start_cycles: int = 4
    simd_next_cycles: int = 0
    simd_latency: int = 7
    simd_hazard_cycles: int = 2
    host_cycles: int = 0
    ingress_cycles: int = 1

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"Timing.{f.name} must be an integer >= 0, not {v!r}")

    def replace(self, **changes):
        """A copy with ``changes`` (for calibration sweeps)."""
        return dataclasses.replace(self, **changes)


def check_cycles(timing, factors):
    """Issue cycles of an instruction whose SRAM extents are the products ``factors`` (pairs):
    the shift-and-add runs over the smaller factor of each product, in parallel."""
    bits = max((min(a, b).bit_length() for a, b in factors), default=0)
    return timing.check_base_cycles + bits


def bank_reads(cfg, demands):
    """The busiest bank's read-port load: ``demands`` is a list of ``(first word, words)``; each
    block is charged to the bank of its first word (one read per bank and cycle)."""
    load = {}
    for start, words in demands:
        bank = start // cfg.tile.sram_depth
        load[bank] = load.get(bank, 0) + words
    return max(load.values(), default=0)


def bank_share(words, clients, other_words, other_clients, other_rate=1.0):
    """Cycles two bursts of reads of one bank lose to each other: ``words`` read by ``clients``
    ports against ``other_words`` (still to read) by ``other_clients`` ports, which read
    ``other_rate`` words per cycle between them (1: every cycle). The bank's round-robin
    arbiter serves every requesting port in turn, one word per cycle, so while both read, each
    side gets its share of ports; a side loses one cycle per word the other side reads
    meanwhile, and a side that reads now and then (a MATMUL's old C rows, once per fold) only
    that often. Returns ``(cycles this side loses, cycles the other side loses)``."""
    mine = min(other_words, words * other_clients / clients * other_rate)
    theirs = min(words, other_words * clients / other_clients) * other_rate
    return mine, theirs


def matmul_timing(cfg, timing, *, a, b, c, k, m_folds, n_folds, last, acc, start,
                  prev_last_step):
    """Closed-form schedule of one MATMUL on the matrix engine.

    A step needs ``a_words`` A and ``b_words`` B reads; each bank reads one word per cycle, so a
    step costs ``a_words + b_words`` cycles when A and B share a bank, else the larger of the
    two (with ``acc``, the old C rows of a fold compete too). A fold's ``last`` step is admitted
    no earlier than ``R`` cycles after the previous one
    (:func:`tilemesh.tile.matrix.back_to_back_cycles`) and no faster than the C write port
    drains ``R * c_words`` words. Bank conflicts with other units are not modelled.

    Parameters
    ----------
    start : int
        Cycle the engine takes the command (its first step may enter ``matmul_start_cycles``
        later, or right after the previous instruction's last step).
    prev_last_step : int or None
        Cycle of the previous instruction's last step (None when the array is drained).

    Returns
    -------
    (int, int, int)
        ``(last_step, accept_next, done)``: cycle of this instruction's last step, first cycle
        the engine takes the next command, and cycle the last C row is in SRAM (with
        ``last=0``: the last step is in the array).
    """
    from ..layouts import matmul_operand_words

    t = cfg.tile
    w = matmul_operand_words(cfg)
    c_rows = t.pe_rows * w["c"]
    run = bank_reads(cfg, [(a, k * w["a"]), (b, k * w["b"])] + ([(c, c_rows)] if acc else []))
    period_min = max(t.pe_rows, c_rows) if last else t.pe_rows
    first_step = start + timing.matmul_start_cycles if prev_last_step is None \
        else max(start, prev_last_step + 1)
    last_step = first_step + run - 1
    if prev_last_step is not None:
        last_step = max(last_step, prev_last_step + period_min)
    last_step += (m_folds * n_folds - 1) * max(run, period_min)
    if last:
        # rows leave the array one per cycle but are written c_words words each
        done = last_step + output_latency(t.pe_cols) + c_rows + timing.matmul_write_cycles
    else:
        done = last_step + 1
    return last_step, last_step + 1, done


def simd_cycles(cfg, timing, count, reads, write_words, *, queued=False):
    """Schedule of a SIMD instruction over ``count`` vectors: per vector, the operand reads
    ``reads`` (``(first word, words)`` blocks, see :func:`bank_reads`) and ``write_words``
    result words (one per cycle). ``queued``: the command waited for the one before it, so
    its reads follow that one's after ``simd_next_cycles`` instead of ``simd_start_cycles``.

    Returns ``(reads, done)``: cycles from taking the command to its last operand read (the
    engine may start the next command's reads then) and to its last result word in SRAM
    (``simd_latency`` later, plus the last vector's writes)."""
    beat = max(1, bank_reads(cfg, reads), write_words)
    start = timing.simd_next_cycles if queued else timing.simd_start_cycles
    reads_end = start + count * beat
    return reads_end, reads_end + timing.simd_latency + write_words


class BusyCounter:
    """Cycles covered by a union of intervals given in order of their start (a unit's busy
    time): ``add(start, end)`` then ``total``."""

    def __init__(self):
        self.total = 0
        self.until = 0

    def add(self, start, end):
        if end <= start:
            return
        if start >= self.until:
            self.total += end - start
        elif end > self.until:
            self.total += end - self.until
        self.until = max(self.until, end)


class _Fifo:
    """A buffer packets queue in, first in first out: a source's queue of packets to send, the
    ingress checker behind an inject link or the host port, a router input. ``capacity`` flits
    (None: unbounded); ``feeder`` is the link whose end it is (None for a source queue)."""

    __slots__ = ("entries", "capacity", "feeder", "id")

    def __init__(self, capacity, feeder, id_):
        self.entries = deque()
        self.capacity, self.feeder, self.id = capacity, feeder, id_


class _Entry:
    """One packet in one :class:`_Fifo`, the ``i``-th of its path (it leaves it by the packet's
    link ``i``): ``head`` is the cycle its head can request that link, ``out`` the cycle it got
    it, ``gone`` the cycle its tail leaves the buffer (both None until known)."""

    __slots__ = ("packet", "i", "head", "out", "gone")

    def __init__(self, packet, i, head):
        self.packet, self.i, self.head = packet, i, head
        self.out = self.gone = None


class _Link:
    """A link and the round-robin arbiter in front of it: ``requests`` maps the fifo whose front
    packet wants the link to (cycle it may have it, that packet's :class:`_Entry`); ``owner``
    holds it until its tail has passed (``release``: that cycle, once known)."""

    __slots__ = ("key", "requests", "owner", "release", "last")

    def __init__(self, key):
        self.key, self.requests = key, {}
        self.owner = self.release = None
        self.last = -1


class _Packet:
    __slots__ = ("links", "fifos", "entries", "flits", "hold", "on_injected", "on_arrived")


class Network:
    """Packet-level event model of the mesh NoC with XY routing and the host port.

    A packet of ``flits`` flits (header included) waits in a first-in-first-out buffer at each
    hop: its source's send queue, then the ingress checker behind the inject link (or the host
    port), then a router input FIFO per mesh link. Only a buffer's front packet asks for its next
    link (head-of-line blocking, as in the routers); each link has a round-robin arbiter over
    the buffers asking for it, deciding in the cycle the link is free, after every request of
    that cycle is in. A granted packet holds the link until its tail has passed it, which is
    ``flits`` cycles later unless the buffer at the link's end is full: the tail passes once
    the flits still queued ahead of it, its own included, fit in ``capacity`` (wormhole
    back-pressure, so a worm blocked downstream holds the links behind it and at last its
    source). The ingress checker stores a whole packet before forwarding it; a router input
    forwards the head ``router_cycles`` after it arrived.

    Time moves through the owner's event queue: ``schedule(t, late, fn, *args)`` must call
    ``fn(*args)`` at cycle ``t``, every ``late`` call of a cycle after the others.
    :meth:`send` returns at once and reports through its callbacks.

    Members
    -------
    flits : int
        Flits injected (header and payload), all packets.
    link_flits : int
        Flit-hops: flits times links crossed (inject, mesh and eject links).
    host_flits_in, host_flits_out : int
        Flits through the host port, each way.
    """

    def __init__(self, cfg, timing, schedule):
        self.cfg, self.timing, self.schedule = cfg, timing, schedule
        self.flits = self.link_flits = 0
        self.host_flits_in = self.host_flits_out = 0
        self.host_tile = (cfg.host_x, cfg.host_y)
        self.host_address = host_address(cfg)
        self.ingress_depth = ingress_depth(cfg)
        self._paths = {}
        self._links = {}
        self._fifos = {}

    def path(self, src, dst):
        """Links from ``src`` to ``dst`` (tiles ``(x, y)`` or :data:`HOST`), XY order."""
        key = (src, dst)
        if key in self._paths:
            return self._paths[key]
        links = []
        if src == HOST:
            links.append(("host_in",))
            x, y = self.host_tile
        else:
            links.append(("inject", src))
            x, y = src
        tx, ty = self.host_tile if dst == HOST else dst
        while x != tx:
            nx = x + (1 if tx > x else -1)
            links.append(((x, y), (nx, y)))
            x = nx
        while y != ty:
            ny = y + (1 if ty > y else -1)
            links.append(((x, y), (x, ny)))
            y = ny
        links.append(("host_out",) if dst == HOST else ("eject", dst))
        self._paths[key] = [self._link(k) for k in links]
        return self._paths[key]

    def _link(self, key):
        if key not in self._links:
            self._links[key] = _Link(key)
        return self._links[key]

    def _fifo(self, key, capacity, feeder):
        if key not in self._fifos:
            self._fifos[key] = _Fifo(capacity, feeder, len(self._fifos))
        return self._fifos[key]

    def _count(self, src, dst, flits, hops):
        self.flits += flits
        self.link_flits += flits * hops
        if src == HOST:
            self.host_flits_in += flits
        if dst == HOST:
            self.host_flits_out += flits

    def send(self, src, dst, flits, t, *, hold=None, port="tx", on_injected=None,
             on_arrived=None):
        """Offer a packet at cycle ``t`` (``t`` >= the current cycle). ``on_injected(cycle)``
        is called when its tail has left the source (the source may offer its next packet),
        ``on_arrived(cycle)`` when its tail has reached the destination's receive side.
        ``hold`` (default ``flits``): cycles the packet needs on the inject link, when the
        source cannot send a flit every cycle (its SRAM reads lose cycles to bank conflicts).
        ``port`` names the source's send queue (packets of one queue leave in order; the
        source's queues take turns)."""
        links = self.path(src, dst)
        p = _Packet()
        p.links, p.flits = links, flits
        p.hold = flits if hold is None else max(hold, flits)
        p.on_injected, p.on_arrived = on_injected, on_arrived
        fifos = [self._fifo(("send", src, port), None, None)]
        for i, link in enumerate(links[:-1]):
            cap = (self.ingress_depth + self.cfg.noc.fifo_depth if i == 0
                   else self.cfg.noc.fifo_depth)
            fifos.append(self._fifo(link.key, cap, link))
        p.fifos, p.entries = fifos, [None] * len(fifos)
        self._count(src, dst, flits, len(links))
        self.schedule(t, False, self._offer, p, t)

    def _offer(self, p, t):
        self._enter(p, 0, t, t)

    def _enter(self, p, i, head, now):
        """``p``'s head is in fifo ``i`` (its tail may still be on the way)."""
        fifo = p.fifos[i]
        e = p.entries[i] = _Entry(p, i, head)
        fifo.entries.append(e)
        if len(fifo.entries) == 1:
            self._request(fifo, e, head)
        self._try_release(fifo, now)

    def _request(self, fifo, e, t):
        link = e.packet.links[e.i]
        link.requests[fifo] = (t, e)
        self.schedule(t, True, self._arbitrate, link, t)

    def _arbitrate(self, link, now):
        if link.owner is not None or not link.requests:
            return
        best = None
        for fifo, (ready, e) in link.requests.items():
            if ready <= now:
                turn = (fifo.id - link.last - 1) % len(self._fifos)
                if best is None or turn < best[0]:
                    best = (turn, fifo, e)
        if best is None:
            return   # the requests' own arbitration events come later
        _, fifo, e = best
        del link.requests[fifo]
        p, i = e.packet, e.i
        link.owner, link.last = p, fifo.id
        e.out = now
        if i + 1 == len(p.links):
            self._release_at(p, i, now + p.flits, now)   # the receive side never waits
        else:
            tm = self.timing
            # the ingress checker stores the whole packet before it commits it; a router
            # input forwards the head as soon as it has crossed the router
            head = now + p.hold + tm.ingress_cycles if i == 0 else now + tm.router_cycles
            self._enter(p, i + 1, head, now)
        self._try_release(fifo, now)

    def _try_release(self, fifo, now):
        """When the tail of the packet entering ``fifo`` will have passed its feeder link: its
        own ``flits`` (``hold`` on an inject link) after the grant, and once the flits queued
        ahead of it, its own included, fit in ``capacity``; undecided (None) while that depends
        on a packet ahead that has not left yet."""
        link = fifo.feeder
        if link is None or link.owner is None or link.release is not None:
            return
        p, mine = link.owner, fifo.entries[-1]
        if mine.packet is not p:
            return
        i = mine.i
        lo = max(now, p.entries[i - 1].out + (p.hold if i == 1 else p.flits))

        def queued(t):
            n = 0
            for e in fifo.entries:
                f = e.packet.flits
                if e.gone is not None:
                    n += max(0, min(f, e.gone - t))
                elif e.out is not None and e.packet is p:
                    n += max(0, f - max(0, t - e.out))
                else:
                    n += f
            return n

        cap = fifo.capacity
        if queued(lo) > cap:
            known = [e.gone for e in fifo.entries if e.gone is not None]
            if mine.out is not None:
                known.append(mine.out + p.flits)
            hi = max(known, default=lo)
            if hi <= lo or queued(hi) > cap:
                return
            while lo < hi:       # first cycle it fits; queued() never grows with t
                mid = (lo + hi) // 2
                if queued(mid) <= cap:
                    hi = mid
                else:
                    lo = mid + 1
        self._release_at(p, i - 1, lo, now)

    def _release_at(self, p, i, t, now):
        """``p``'s tail passes its link ``i`` at ``t`` (leaving its fifo ``i``)."""
        p.links[i].release = t
        p.entries[i].gone = t
        self.schedule(t, False, self._release, p, i, t)
        self._try_release(p.fifos[i], now)   # the packet entering the fifo it leaves

    def _release(self, p, i, t):
        link = p.links[i]
        link.owner = link.release = None
        fifo = p.fifos[i]
        fifo.entries.popleft()
        if fifo.entries:
            e = fifo.entries[0]
            self._request(fifo, e, max(e.head, t))
            self._try_release(fifo, t)
        if i == 0 and p.on_injected is not None:
            p.on_injected(t)
        if i + 1 == len(p.links) and p.on_arrived is not None:
            p.on_arrived(t)
        self.schedule(t, True, self._arbitrate, link, t)
