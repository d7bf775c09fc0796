"""Timing of the mesh model: named cycle parameters, the network's link model, unit durations.

Everything :class:`~tilemesh.model.machine.MeshModel` knows about time is here, so calibrating
the model against the RTL (issue 5: within 5 %) changes this file only. The model is
discrete-event: a unit's work on one instruction is a closed-form duration, and the network
reserves links packet by packet (wormhole, 1 flit per cycle per link, ``router_cycles`` per hop),
so a 256x256x256 GEMM models in seconds instead of stepping every cycle in Python.

::

    host ──host_in──► router(hx,hy) ──► ... ──► router(x,y) ──eject──► NI rx (SRAM, semaphores)
                                                     ▲
                               NI tx (DMA engine, READ_RESP) ──inject──┘

SRAM banks read one word per cycle and serve the units' read ports round-robin. A unit's own
operands sharing a bank slow it in closed form (:func:`bank_reads`); between units, both sides of
a conflict lose the cycles :func:`bank_share` gives: a command starting on a bank another unit is
reading starts that much later, and the command under way is stretched (``MeshModel._contend``).
DMA packets leave one event at a time, so each packet meets the reads under way when it is sent,
and the READ_REQ responder's reads compete like the DMA engine's. Every packet is stored whole by
the ingress checker it enters through (a tile's inject link or the host port) before it goes on
wormhole-style; a worm whose head has to wait keeps its source busy until its tail fits into the
buffers on its way (back-pressure on the DMA engine and the host).

Approximations, so calibration knows where to look: reads are spread evenly over a command's
duration; a packet's reads are charged to the bank of its first word; the NI's write port is
never a bottleneck (banks have separate read and write ports); links are booked packet by packet
in the first gap long enough for the packet, so traffic booked earlier keeps its place; the
routers' round robin is approximated by leaving a gap after an input's packet for the other
inputs served recently (``Network._turn``, ``Timing.rr_window``: without it a tile sending C to
the host behind two others got a quarter of the host port where the router gives it a third);
a SIGNAL a tile sends itself waits behind a whole host feed booked on its eject link, where the
router would let it in after one packet; a blocked worm does not hold the links behind its head.
"""

import bisect
import dataclasses
from dataclasses import dataclass

from ..noc.ingress import ingress_depth
from ..noc.routing import host_address
from ..tile.matrix import output_latency

__all__ = ["Timing", "Network", "BusyCounter", "check_cycles", "bank_reads", "bank_share",
           "matmul_timing", "simd_cycles", "HOST", "CONTROL_FLITS"]

#: Packets of at most this many flits (SIGNAL, READ_REQ, CONTROL, NOTIFY) are control packets
#: for :meth:`Network.send`.
CONTROL_FLITS = 3

#: The network node of the host (``Network`` accepts it wherever it takes a tile ``(x, y)``).
HOST = "host"


@dataclass(frozen=True, kw_only=True)
class Timing:
    """Cycle parameters of the mesh model; every figure the model uses is one of these.

    Parameters
    ----------
    issue_cycles : int
        Cycles the controller spends on a control instruction or on queueing SIGNAL / NOTIFY /
        SIMD_CFG (one instruction per cycle).
    check_base_cycles : int
        Fixed part of issuing DMA / MATMUL / SIMD (load and decision of the range check); the
        shift-and-add adds one cycle per bit of the smaller factor (:func:`check_cycles`).
    wake_cycles : int
        Cycles from the event that unblocks issue (semaphore bump, unit idle) to the next issue.
    queue_depth : int
        Commands each unit queue holds; a full queue blocks issue.
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
        Cycles from the last C word leaving the array to it being in SRAM.
    simd_start_cycles : int
        Cycles from the SIMD engine taking a command to its first operand read.
    simd_latency : int
        Pipeline cycles from a vector's last operand word to its last result word in SRAM;
        the engine takes its next command meanwhile.
    simd_hazard_cycles : int
        Extra cycles before a SIMD command that reads results the previous one is still
        writing may start, after those are written.
    host_cycles : int
        Cycles the host needs between two packets it sends (0: line rate).
    ingress_cycles : int
        Cycles from a packet's tail entering an ingress checker (a tile's inject link or the
        host port) to its header leaving towards the router: the checker stores the whole
        packet before it commits it (tilemesh.noc.ingress).
    rr_window : int
        Round-robin turns (``Network._turn``): another input of a link counts as waiting for
        its turn when its last packet on the link ended at most this many of its packet
        lengths before the packet now taking the link began; 0 turns the turns off (links in
        booking order).
    """
    issue_cycles: int = 1
    check_base_cycles: int = 2
    wake_cycles: int = 1
    queue_depth: int = 2
    router_cycles: int = 2
    ni_tx_cycles: int = 1
    ni_rx_cycles: int = 1
    dma_start_cycles: int = 1
    dma_packet_gap: int = 0
    read_resp_cycles: int = 3
    matmul_start_cycles: int = 3
    matmul_write_cycles: int = 1
    simd_start_cycles: int = 4
    simd_latency: int = 7
    simd_hazard_cycles: int = 4
    host_cycles: int = 0
    ingress_cycles: int = 1
    rr_window: int = 3

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            lo = 1 if f.name == "queue_depth" else 0
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"Timing.{f.name} must be an integer >= {lo}, not {v!r}")

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


def bank_share(words, clients, other_words, other_clients):
    """Cycles two bursts of reads of one bank lose to each other: ``words`` read by ``clients``
    ports against ``other_words`` (still to read) by ``other_clients`` ports. The bank's
    round-robin arbiter serves every requesting port in turn, one word per cycle, so while both
    read, each side gets its share of ports; a side loses one cycle per word the other side
    reads meanwhile. Returns ``(cycles this side loses, cycles the other side loses)``."""
    mine = min(other_words, words * other_clients / clients)
    theirs = min(words, other_words * clients / other_clients)
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


def simd_cycles(cfg, timing, count, reads, write_words):
    """Cycles of a SIMD instruction over ``count`` vectors: per vector, the operand reads
    ``reads`` (``(first word, words)`` blocks, see :func:`bank_reads`) and ``write_words``
    result words (one per cycle)."""
    beat = max(1, bank_reads(cfg, reads), write_words)
    return timing.simd_start_cycles + count * beat + timing.simd_latency


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


class Network:
    """Link-level model of the mesh NoC with XY routing and the host port.

    A packet of ``flits`` flits (header included) crosses links in order. The first link (a
    tile's inject link or the host port) ends in an ingress checker that stores the whole
    packet, so the next link starts ``ingress_cycles`` after its tail; on every further link it
    starts no earlier than ``router_cycles`` after it started on the previous one and in the
    first gap of ``flits`` cycles the link has from then on, which it then holds (wormhole, one
    flit per cycle). Links keep their booked intervals, so a packet sent now may use a link in
    the gap before traffic booked for later. Control packets (at most :data:`CONTROL_FLITS`
    flits) only wait for the packet under way on each link. No packet arrives before one sent
    earlier on the same path (XY routes, in-order routers).

    Members
    -------
    flits : int
        Flits injected (header and payload), all packets.
    link_flits : int
        Flit-hops: flits times links crossed (inject, mesh and eject links).
    host_flits_in, host_flits_out : int
        Flits through the host port, each way.
    horizon : int
        No packet will be sent before this cycle any more (set by the model); bookings that
        end before it are forgotten.
    """

    def __init__(self, cfg, timing):
        self.cfg, self.timing = cfg, timing
        self.booked = {}          # link -> ([starts], [ends]), sorted, disjoint
        self.flits = self.link_flits = 0
        self.host_flits_in = self.host_flits_out = 0
        self.host_tile = (cfg.host_x, cfg.host_y)
        self.host_address = host_address(cfg)
        self.ingress_depth = ingress_depth(cfg)
        self._last = {}           # (src, dst) -> arrival of the last packet on that path
        self.horizon = 0
        self._paths = {}
        self._served = {}         # link -> {input link: (start, end) of its last packet on it}

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
        self._paths[key] = links
        return links

    def _find(self, link, t, n):
        """First cycle from ``t`` on with ``n`` free cycles on ``link``."""
        starts, ends = self.booked.setdefault(link, ([], []))
        if len(ends) > 32 and ends[16] <= self.horizon:
            k = bisect.bisect_right(ends, self.horizon)
            del starts[:k], ends[:k]
        i = bisect.bisect_right(ends, t)
        while i < len(starts) and starts[i] < t + n:
            t = max(t, ends[i])
            i += 1
        return t

    def _insert(self, link, start, end):
        """Book ``start .. end`` on ``link`` (cut short where a later booking begins)."""
        starts, ends = self.booked[link]
        i = bisect.bisect_right(starts, start)
        if i < len(starts):
            end = min(end, starts[i])
        starts.insert(i, start)
        ends.insert(i, end)

    def _turn(self, link, inp, t):
        """The first cycle from ``t`` on at which the router's round-robin arbiter would give
        ``link`` to the next packet from input ``inp``: after ``inp``'s previous packet on it,
        every other input still waiting then gets one packet first.

        Links are booked when packets are sent, not when their heads arrive, so the model
        cannot see which inputs wait: an input counts as waiting when its last packet on the
        link ended at most ``rr_window`` of its packet lengths before ``inp``'s previous one
        began. The gap is left for their next packets (booked later, in the first gap that
        fits); without it a source that sends sooner (deeper buffers free it earlier) books the
        link packet after packet ahead of the others, where the router takes turns."""
        served = self._served.get(link)
        if not self.timing.rr_window or not served or inp not in served:
            return t
        start, end = served[inp]
        window = self.timing.rr_window
        gap = sum(e - s for i, (s, e) in served.items()
                  if i != inp and e >= start - window * (e - s) and s < end)
        return max(t, end + gap) if gap else t

    def _current(self, link, t):
        """End of the booking of ``link`` under way at ``t`` (``t`` if it is free then)."""
        starts, ends = self.booked.setdefault(link, ([], []))
        i = bisect.bisect_right(starts, t) - 1
        return max(t, ends[i]) if i >= 0 else t

    def _send_control(self, links, src, dst, flits, t):
        # A router's round-robin arbiter lets a short control packet (SIGNAL, NOTIFY, READ_REQ,
        # CONTROL) in after the packet under way on each link, not after all traffic booked
        # behind it; its few flits are not booked (the capacity they take is negligible).
        head = self._current(links[0], t)
        injected = head + flits
        head = injected - self.timing.router_cycles + self.timing.ingress_cycles
        for link in links[1:]:
            head = self._current(link, head + self.timing.router_cycles)
        # one path per (source, destination) and in-order routers: never before the packet
        # sent ahead of it on the same path
        arrived = max(head + flits, self._last.get((src, dst), 0) + flits)
        self._last[(src, dst)] = arrived
        self._count(src, dst, flits, len(links))
        return injected, arrived

    def _count(self, src, dst, flits, hops):
        self.flits += flits
        self.link_flits += flits * hops
        if src == HOST:
            self.host_flits_in += flits
        if dst == HOST:
            self.host_flits_out += flits

    def send(self, src, dst, flits, t, hold=None):
        """Send a packet offered at cycle ``t``; returns ``(injected, arrived)``: the cycle its
        tail left the source (the source may offer its next packet) and the cycle its tail
        reached the destination's receive side. ``hold`` (default ``flits``): cycles the packet
        needs on each link, when the source cannot send a flit every cycle (its SRAM reads lose
        cycles to bank conflicts, the worm keeps its links meanwhile).

        The head takes each link in its first free gap. Where it had to wait, the worm backs
        up to its source: the source is busy until the tail fits into the buffers between it
        and the blocked link (the ingress checker's packet buffer, ``fifo_depth`` flits per
        router), so a DMA engine whose packet is blocked downstream cannot send the next one.
        The links behind the head are booked for ``flits`` cycles only (holding them for the
        wait too made later traffic queue behind reservations the routers' round-robin
        arbiters would have interleaved)."""
        hop = self.timing.router_cycles
        hold = flits if hold is None else max(hold, flits)
        links = self.path(src, dst)
        if hold <= CONTROL_FLITS:
            return self._send_control(links, src, dst, flits, t)
        heads = [self._find(links[0], t, hold)]
        # The ingress checker holds the whole packet until its tail is in (store and forward),
        # then sends it on at one flit per cycle however slowly it came in.
        nxt = heads[0] + hold - hop + self.timing.ingress_cycles
        for prev, link in zip(links[:-1], links[1:], strict=True):
            nxt = self._find(link, self._turn(link, prev, nxt + hop), flits)
            heads.append(nxt)
            self._served.setdefault(link, {})[prev] = (nxt, nxt + flits)
        tails = [heads[-1] + flits]
        for i in range(len(links) - 2, -1, -1):
            depth = self.ingress_depth if i == 0 else self.cfg.noc.fifo_depth
            tails.append(max(heads[i] + (hold if i == 0 else flits), tails[-1] - hop - depth))
        tails.reverse()
        for i, (link, head, tail) in enumerate(zip(links, heads, tails, strict=True)):
            self._insert(link, head, tail if i == 0 else head + flits)
        injected = tails[0]
        self._count(src, dst, flits, len(links))
        arrived = max(heads[-1] + flits, self._last.get((src, dst), 0) + flits)
        self._last[(src, dst)] = arrived
        return injected, arrived
