"""Executable model of the mesh: tiles, controllers, units, network and host port, in Python.

The same contract as the RTL (docs/tile-design.md): per-tile SRAM, IMEM, semaphores and CSRs;
in-order issue with the controller's checks and errors; three unit queues running concurrently;
DMA packetisation over XY routes; the host port. Data effects are bit exact
(:func:`tilemesh.model.reference.matmul_instr` / :func:`~tilemesh.model.reference.simd_instr`,
vectorised here); time comes from :mod:`tilemesh.model.cycles` (discrete events, closed-form unit
durations), so the model is both the fast back end of the host driver and the cycle model.

::

    host ops ──► event queue (cycle, late, seq) ──► tile controllers ──► DMA / matrix / SIMD
                       ▲                                                          │
                       └── packets injected / arrived (Network: buffers, arbiters) ◄┘

Host operations are posted at the host's clock :attr:`MeshModel.now`; reads and waits run the
event queue forward until their answer arrives, as the RTL host driver waits on its port.
"""

import heapq
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from amaranth.lib import data

from ..host.driver import HostTransport, Packet
from ..layouts import (
    ADDR_BITS,
    INSTR_ARGS,
    INSTR_BITS,
    ISA_VERSION,
    LOOP_DEPTH,
    PC_BITS,
    SEM_BITS,
    SEMAPHORES,
    SIMD_SCALE_BITS,
    ControlCommand,
    ElemFormat,
    ErrorCode,
    InstrOp,
    InstrWord,
    NotifyKind,
    NotifyPayload,
    Opcode,
    SimdOp,
    Space,
    TileState,
    YMode,
    csr_map,
    instr_words,
    matmul_operand_words,
    packed_words,
    payload_flits,
    read_req_layout,
    simd_shift_bits,
    simd_vector_words,
    tile_addr_layout,
)
from ..tile.simd_engine import SIMD_JOBS
from . import reference as ref
from .cycles import (
    HOST,
    BusyCounter,
    Network,
    Timing,
    bank_share,
    check_cycles,
    matmul_timing,
    simd_cycles,
)

__all__ = ["MeshModel", "ModelTransport", "Notification", "ModelReport", "ModelTimeout",
           "pack_words", "unpack_words"]

_ACTIVE = (TileState.RUNNING, TileState.WAITING, TileState.BLOCKED)
_STALLED = (TileState.WAITING, TileState.BLOCKED)
_UNITS = ("dma", "matrix", "simd")
_UNIT_OF = {InstrOp.DMA_WRITE: "dma", InstrOp.DMA_READ: "dma", InstrOp.SIGNAL: "dma",
            InstrOp.NOTIFY: "dma", InstrOp.MATMUL: "matrix", InstrOp.SIMD: "simd",
            InstrOp.SIMD_CFG: "simd"}
_MASK20 = (1 << ADDR_BITS) - 1
#: Unit names of :attr:`MeshModel.timeline` (those of the RTL's command ports).
_TIMELINE_UNITS = {"dma": "dma", "matrix": "matmul", "simd": "simd"}

_NEVER = 1 << 62     # a unit's accept_free while its command's end is not known yet


class ModelTimeout(TimeoutError):
    """Raised by :meth:`MeshModel.wait_notify` when no notification arrives in time."""


@dataclass(frozen=True)
class Notification:
    """A NOTIFY packet the host received: ``tile`` (x, y), ``kind`` (:class:`NotifyKind`),
    ``code`` (the program's code, or the :class:`ErrorCode` value for kind ERROR), ``pc``,
    ``value`` and the ``cycle`` it arrived."""
    tile: tuple
    kind: NotifyKind
    code: int
    pc: int
    value: int
    cycle: int


@dataclass
class ModelReport:
    """Performance figures of a run.

    Members
    -------
    cycles : int
        Cycles from the first START to the last tile stopping (HALTED/ERROR).
    macs : int
        Useful multiply-accumulates (matrix steps x PEs), all tiles.
    utilisation : float
        ``macs / (cfg.pes * cycles)``: on-mesh MAC utilisation.
    flits, link_flits, host_flits_in, host_flits_out : int
        Flits injected, flit-hops over every link, and flits through the host port each way.
    tiles : dict
        Per tile (x, y): ``cycles``, ``stall_cycles``, ``dma_busy``, ``matmul_busy``,
        ``simd_busy``, ``matmul_steps``, ``tx_words``, ``rx_words``, ``state``.
    """
    cycles: int
    macs: int
    utilisation: float
    flits: int
    link_flits: int
    host_flits_in: int
    host_flits_out: int
    tiles: dict = field(default_factory=dict)


# -- vectorised packing (the executable form of docs/tile-design.md §4, for numpy blocks) ---------

def unpack_words(words, n, bits, word_bits):
    """Signed elements of packed vectors: ``words`` (..., nw) unsigned -> int64 (..., n).

    Same result as :func:`tilemesh.model.reference.unpack_vector` on every row."""
    words = np.asarray(words, dtype=np.uint64)
    v = np.zeros(words.shape[:-1] + (n,), dtype=np.uint64)
    for i in range(n):
        p = i * bits
        for q in range(p // word_bits, (p + bits - 1) // word_bits + 1):
            sh = q * word_bits - p
            wq = words[..., q]
            v[..., i] |= (wq << np.uint64(sh)) if sh >= 0 else (wq >> np.uint64(-sh))
    if bits == 64:
        return v.view(np.int64)
    v &= np.uint64((1 << bits) - 1)
    s = v.astype(np.int64)
    half = np.int64(1 << (bits - 1))
    return (s ^ half) - half


def pack_words(values, bits, word_bits):
    """Packed words of signed/unsigned ``bits`` elements: int (..., n) -> uint64 (..., nw).

    Same result as :func:`tilemesh.model.reference.pack_vector` on every row (values wrap)."""
    values = np.asarray(values, dtype=np.int64)
    n = values.shape[-1]
    u = values.astype(np.uint64)
    if bits < 64:
        u &= np.uint64((1 << bits) - 1)
    nw = packed_words(n, bits, word_bits)
    wmask = np.uint64((1 << word_bits) - 1)
    out = np.zeros(values.shape[:-1] + (nw,), dtype=np.uint64)
    for i in range(n):
        p = i * bits
        for q in range(p // word_bits, (p + bits - 1) // word_bits + 1):
            sh = q * word_bits - p
            part = (u[..., i] >> np.uint64(sh)) if sh >= 0 else (u[..., i] << np.uint64(-sh))
            out[..., q] |= part & wmask
    return out


def _wrap(x, bits):
    if bits >= 64:
        return x
    y = x & np.int64((1 << bits) - 1)
    return y - (((y >> np.int64(bits - 1)) & np.int64(1)) << np.int64(bits))


def _block_index(start, rows, cols, stride):
    return (start + np.arange(rows, dtype=np.int64)[:, None] * stride
            + np.arange(cols, dtype=np.int64)[None, :]).ravel()


# -- instruction decoding (cached per word) ----------------------------------------------------

class _Decoder:
    """Decodes 128-bit instruction words into (op, fields) once per distinct word."""

    def __init__(self):
        self.cache = {}
        self.spans = {}
        for member in set(INSTR_ARGS.values()) - {None}:
            layout = data.Layout.cast(InstrWord)["args"].shape
            names = [name for name, _ in data.Layout.cast(data.Layout.cast(layout)[member].shape)]
            self.spans[member] = [(name,) + ref._field_span(InstrWord, ("args", member, name))
                                  for name in names]

    def __call__(self, word):
        hit = self.cache.get(word)
        if hit is not None:
            return hit
        op_v = word & 0xF
        if op_v not in InstrOp.valid_values():
            out = (None, {})
        else:
            op = InstrOp(op_v)
            fields = {}
            member = INSTR_ARGS[op]
            for name, offset, width, is_signed in self.spans.get(member, ()):
                v = (word >> offset) & ((1 << width) - 1)
                if is_signed and v >> (width - 1):
                    v -= 1 << width
                fields[name] = v
            out = (op, fields)
        self.cache[word] = out
        return out


_DECODE = _Decoder()


# -- per-tile state -----------------------------------------------------------------------------

class _Unit:
    def __init__(self, t):
        self.queue = deque()      # (ready cycle, op, fields)
        self.inflight = 0
        self.accept_free = t
        self.busy = BusyCounter()
        self.pump_at = None
        self.last_step = None     # matrix: cycle of the last step still draining
        self.writes = []          # SIMD: (first word, end, done) of results still being written
        self.jobs = deque(maxlen=SIMD_JOBS)   # SIMD: the last commands taken (their _BankOp)

    @property
    def busy_now(self):
        return bool(self.queue) or self.inflight > 0


class _BankOp:
    """SRAM reads a unit has under way on a tile: ``words`` and read ``clients`` per bank,
    spread evenly over ``start .. end``; ``push(cycles)`` stretches them (None: booked for
    good, e.g. a packet already on the links)."""
    __slots__ = ("start", "end", "unit", "words", "clients", "push", "done")

    def __init__(self, start, end, unit, words, clients):
        self.start, self.end, self.unit = start, end, unit
        self.words, self.clients = words, clients
        self.push = self.done = None

    def left(self, bank, t):
        """Words still to read from ``bank`` at cycle ``t``."""
        if self.end <= t:
            return 0.0
        span = self.end - self.start
        return self.words[bank] * (min(1.0, (self.end - t) / span) if span > 0 else 1.0)

    def rate(self, bank):
        """Reads per cycle from ``bank`` (at most one: the bank's port)."""
        span = self.end - self.start
        return min(1.0, self.words[bank] / span) if span > 0 else 1.0


class _DmaJob:
    """A dma.write / dma.read command in progress: its packets and where they stand."""

    def __init__(self, *, t0, cmd, chunks, local, remote):
        self.t0, self.cmd, self.chunks = t0, cmd, chunks
        self.local, self.remote = local, remote
        self.i = self.pos = 0
        self.dst = self.payload = None
        self.debt = 0.0


class _Tile:
    def __init__(self, cfg, x, y):
        self.x, self.y = x, y
        self.sram = np.zeros(cfg.tile.sram_words, dtype=np.uint64)
        self.imem = [0] * cfg.tile.imem_depth
        self.sems = [0] * SEMAPHORES
        self.timeout = 0
        self.rx_errors = 0
        self.epoch = 0
        self.reset_state(0)

    def reset_state(self, t):
        self.epoch += 1
        self.reset_at = t
        self.state = TileState.IDLE
        self.state_since = t
        self.pc = 0
        self.ar = [0, 0, 0, 0]
        self.stack = []
        self.mm_open = False
        self.mm_acc = None
        self.simd_scale, self.simd_zero = 1, 0
        self.error, self.error_pc = ErrorCode.NONE, 0
        self.wait_sem = self.wait_count = 0
        self.cycles = self.stall_cycles = 0
        self.matmul_steps = self.tx_words = self.rx_words = 0
        self.units = {name: _Unit(t) for name in _UNITS}
        self.bank_ops = []        # _BankOp: SRAM reads of work under way
        self.issue_at = None
        self.block_token = 0
        self.stopped_at = None

    @property
    def coord(self):
        return (self.x, self.y)


class MeshModel:
    """Functional and cycle model of a ``cfg`` mesh, driven like the hardware through its host
    port.

    Parameters
    ----------
    cfg : MeshConfig
        The mesh (tiles, tile parameters, NoC, host port position).
    timing : Timing, optional
        Cycle parameters (:class:`tilemesh.model.cycles.Timing`); the defaults are the RTL's.

    Raises
    ------
    ConfigError
        If ``cfg`` cannot hold a mesh of tiles (:meth:`MeshConfig.check_tiles`).

    Members
    -------
    now : int
        The host's clock (cycles): posted operations leave the host port from here on.
    notifications : collections.deque of Notification
        NOTIFY packets received and not yet taken by :meth:`wait_notify`.
    host_signals : list of (tile, sem, cycle)
        SIGNAL packets tiles sent to the host (``dma.write host ... signal=``).
    network : Network
        The link model (flit counters).

    Tiles are named by ``(x, y)`` (column, row) everywhere.
    """

    def __init__(self, cfg, timing=None):
        cfg.check_tiles()   # the same ConfigError as the hardware's Mesh
        self.cfg = cfg
        self.timing = timing if timing is not None else Timing()
        self.network = Network(cfg, self.timing, self._schedule)
        self.csrs = csr_map(cfg)
        self._csr_at = {c.word: c for c in self.csrs.values()}
        self.tiles = {(x, y): _Tile(cfg, x, y) for y in range(cfg.rows) for x in range(cfg.cols)}
        self.host_buffers = {}
        self.notifications = deque()
        self.host_signals = []
        self.host_packets = None   # deque of (cycle, flits) once a ModelTransport is attached
        self.timeline = None       # a list: (cycle, tile, unit) as units take commands
        self.now = 0           # host clock
        self.t = 0             # event clock
        self._events = []
        self._seq = 0
        self._limit = 0
        self._host_free = 0
        self._started = None
        self._w = cfg.word_bits
        self._mw = matmul_operand_words(cfg)
        self._vw = {f: simd_vector_words(cfg, f) for f in ElemFormat}
        self._notify_flits = 1 + payload_flits(NotifyPayload, cfg)
        self._max_pkt = cfg.noc.max_packet_flits

    # -- host API (mirrors tilemesh.host) -------------------------------------------------------

    def _tile(self, tile):
        tile = tuple(tile)
        if tile not in self.tiles:
            raise ValueError(f"tile {tile} is not on the {self.cfg.rows} x {self.cfg.cols} mesh")
        return self.tiles[tile]

    def write(self, tile, space, word, words):
        """Post WRITE packets (``max_packet_flits`` words each) to ``space`` (:class:`Space`)
        of ``tile`` from word ``word`` on."""
        tl = self._tile(tile)
        words = [int(w) for w in words]
        for i in range(0, len(words), self._max_pkt):
            chunk = words[i:i + self._max_pkt]
            self._host_send(tl.coord, len(chunk) + 1, self._rx_write, tl, Space(space),
                            word + i, chunk)

    def write_sram(self, tile, addr, words):
        """Write ``words`` into ``tile``'s SRAM from word ``addr``."""
        self.write(tile, Space.SRAM, addr, words)

    def load_program(self, tile, program, *, pc=0):
        """Write a program (a :class:`~tilemesh.compiler.assembler.Program` or instruction
        words) into ``tile``'s IMEM from instruction ``pc`` (dropped if the tile runs)."""
        words = program.words() if hasattr(program, "words") else list(program)
        n = instr_words(self.cfg)
        image = [(int(w) >> (self._w * p)) & ((1 << self._w) - 1) for w in words for p in range(n)]
        self.write(tile, Space.IMEM, pc * n, image)

    def write_csr(self, tile, name, value):
        """Write CSR ``name`` (multi-word registers low word first)."""
        csr = self.csrs[name]
        mask = (1 << self._w) - 1
        self.write(tile, Space.CSR, csr.word,
                   [(int(value) >> (self._w * i)) & mask for i in range(csr.words)])

    def set_semaphore(self, tile, sem, value):
        """Set semaphore ``sem`` of ``tile`` (a write of ``SEMn``)."""
        self.write_csr(tile, f"SEM{sem}", value)

    def signal(self, tile, sem):
        """Post a SIGNAL packet: semaphore ``sem`` of ``tile`` += 1."""
        tl = self._tile(tile)
        self._host_send(tl.coord, 1, self._rx_signal, tl, sem)

    def start(self, tile, pc=0):
        """Post CONTROL START at ``pc`` (refused and counted unless IDLE or HALTED)."""
        self._control(tile, ControlCommand.START, pc)

    def reset(self, tile):
        """Post CONTROL RESET."""
        self._control(tile, ControlCommand.RESET, 0)

    def _control(self, tile, command, pc):
        tl = self._tile(tile)
        self._host_send(tl.coord, 2, self._rx_control, tl, command, pc)

    def read(self, tile, space, word, count):
        """Read ``count`` words of ``space`` at ``word`` (READ_REQ / READ_RESP, one outstanding);
        runs the mesh until the last answer is in."""
        tl = self._tile(tile)
        out = []
        for i in range(0, count, self._max_pkt):
            n = min(self._max_pkt, count - i)
            box = []
            self._host_send(tl.coord, 2, self._rx_read_req, tl, Space(space), word + i, n, box)
            self._run(lambda b=box: bool(b))
            out += box[0][0]
            self.now = max(self.now, box[0][1])
        return out

    def read_sram(self, tile, addr, count):
        """``count`` SRAM words of ``tile`` from ``addr`` as a uint64 array."""
        return np.array(self.read(tile, Space.SRAM, addr, count), dtype=np.uint64)

    def read_csr(self, tile, name):
        """The value of CSR ``name`` of ``tile`` (read through the host port)."""
        csr = self.csrs[name]
        words = self.read(tile, Space.CSR, csr.word, csr.words)
        return sum(int(w) << (self._w * i) for i, w in enumerate(words))

    def status(self, tile):
        """STATUS, PC, ERROR, WAIT_SEM and WAIT_COUNT of ``tile`` as a dict with ``state``
        (:class:`TileState`), ``dma_busy``, ``matmul_busy``, ``simd_busy``, ``pc``, ``error``
        (:class:`ErrorCode`), ``error_pc``, ``wait_sem``, ``wait_count``."""
        st = self.read_csr(tile, "STATUS")
        err = self.read_csr(tile, "ERROR")
        return {"state": TileState(st & 7), "dma_busy": bool(st >> 3 & 1),
                "matmul_busy": bool(st >> 4 & 1), "simd_busy": bool(st >> 5 & 1),
                "pc": self.read_csr(tile, "PC"), "error": ErrorCode(err & 0xF),
                "error_pc": err >> 4, "wait_sem": self.read_csr(tile, "WAIT_SEM"),
                "wait_count": self.read_csr(tile, "WAIT_COUNT")}

    def host_buffer(self, tile):
        """The per-tile result buffer ``dma.write host`` writes into (``sram_words`` words)."""
        return self._host_buffer(tuple(tile))

    def wait_notify(self, timeout=None):
        """Run the mesh until a NOTIFY reaches the host and return it (oldest first).

        Raises
        ------
        ModelTimeout
            If none arrives within ``timeout`` cycles of :attr:`now` (None: until the mesh has
            nothing left to do, i.e. it is finished or deadlocked).
        """
        limit = None if timeout is None else self.now + timeout
        self._run(lambda: bool(self.notifications), limit)
        if not self.notifications:
            if limit is not None:
                self.now = max(self.now, limit)
            raise ModelTimeout(f"no notification within {timeout} cycles"
                               if timeout is not None else
                               "no notification: the mesh has nothing left to do "
                               f"(tile states: {self._states_text()})")
        note = self.notifications.popleft()
        self.now = max(self.now, note.cycle)
        return note

    def run(self, cycles=None):
        """Run the mesh for ``cycles`` cycles from :attr:`now` (None: until nothing is left)."""
        limit = None if cycles is None else self.now + cycles
        self._run(lambda: False, limit)
        self.now = max(self.now, self.t) if limit is None else max(self.now, limit)

    def report(self):
        """A :class:`ModelReport` of everything run since the model was built."""
        tiles, macs, end = {}, 0, 0
        pes = self.cfg.tile.pe_rows * self.cfg.tile.pe_cols
        for c, tl in self.tiles.items():
            self._account(tl, self.t)
            macs += tl.matmul_steps * pes
            if tl.stopped_at is not None:
                end = max(end, tl.stopped_at)
            elif tl.state in _ACTIVE:
                end = max(end, self.t)
            tiles[c] = {"cycles": tl.cycles, "stall_cycles": tl.stall_cycles,
                        "dma_busy": tl.units["dma"].busy.total,
                        "matmul_busy": tl.units["matrix"].busy.total,
                        "simd_busy": tl.units["simd"].busy.total,
                        "matmul_steps": tl.matmul_steps, "tx_words": tl.tx_words,
                        "rx_words": tl.rx_words, "state": tl.state}
        cycles = max(0, end - self._started) if self._started is not None else 0
        n = self.network
        return ModelReport(cycles=cycles, macs=macs,
                           utilisation=macs / (self.cfg.pes * cycles) if cycles else 0.0,
                           flits=n.flits, link_flits=n.link_flits,
                           host_flits_in=n.host_flits_in, host_flits_out=n.host_flits_out,
                           tiles=tiles)

    # -- event machinery --------------------------------------------------------------------------

    def _at(self, t, fn, *args):
        self._schedule(t, False, fn, *args)

    def _schedule(self, t, late, fn, *args):
        # ``late``: after every other event of cycle ``t`` (the network's arbiters decide once
        # all requests of the cycle are in)
        self._seq += 1
        heapq.heappush(self._events, (t, late, self._seq, fn, args))

    def _run(self, done, limit=None):
        ev = self._events
        while not done() and ev and (limit is None or ev[0][0] <= limit):
            t, _, _, fn, args = heapq.heappop(ev)
            self.t = max(self.t, t)
            # the host is waiting in here: its clock moves with the mesh, and nothing will be
            # sent before the current cycle any more
            self.now = max(self.now, self.t)
            self._limit = t if limit is None else limit
            fn(*args)

    def _host_send(self, dst, flits, fn, *args):
        """Send a packet from the host (the mesh runs until it is in the host port) and call
        ``fn(*args)`` when it has been received (``ni_rx_cycles`` after its tail arrived)."""
        t0 = max(self.now, self._host_free, self.t)
        injected = []
        rx = self.timing.ni_rx_cycles
        self.network.send(HOST, dst, flits, t0, on_injected=injected.append,
                          on_arrived=lambda t: self._at(t + rx, fn, *args))
        self._run(lambda: bool(injected))
        self._host_free = injected[0] + self.timing.host_cycles
        self.now = max(self.now, injected[0])

    def _host_buffer(self, coord):
        if coord not in self.host_buffers:
            self.host_buffers[coord] = np.zeros(self.cfg.tile.sram_words, dtype=np.uint64)
        return self.host_buffers[coord]

    def _states_text(self):
        return ", ".join(f"{c}: {tl.state.name}" for c, tl in self.tiles.items())

    # -- network interface (receive side) -------------------------------------------------------

    def _rx_write(self, tl, space, word, words):
        tl.rx_words += len(words)
        bad = False
        if space == Space.SRAM:
            n = len(tl.sram)
            for i, w in enumerate(words):
                if word + i < n:
                    tl.sram[word + i] = w
                else:
                    bad = True
        elif space == Space.IMEM:
            if tl.state in _ACTIVE:
                bad = True
            else:
                n = instr_words(self.cfg)
                for i, w in enumerate(words):
                    ins, part = divmod(word + i, n)
                    if ins >= len(tl.imem):
                        bad = True
                        continue
                    sh = part * self._w
                    keep = ((1 << INSTR_BITS) - 1) ^ (((1 << self._w) - 1) << sh)
                    tl.imem[ins] = (tl.imem[ins] & keep) | ((w & ((1 << self._w) - 1)) << sh)
        elif space == Space.CSR:
            for i, w in enumerate(words):
                bad |= not self._csr_write(tl, word + i, w)
        else:
            bad = True
        if bad:
            tl.rx_errors = min(tl.rx_errors + 1, 0xFFFF)

    def _csr_write(self, tl, word, value):
        csr, part = self._csr_at.get(word), 0
        if csr is None:
            for c in self.csrs.values():
                if c.word <= word < c.word + c.words:
                    csr, part = c, word - c.word
        if csr is None or "W" not in csr.access:
            return False   # read-only or unmapped
        if csr.name == "TIMEOUT":   # may span words: each word sets its own bits
            sh = part * self._w
            tl.timeout = (tl.timeout & ~(((1 << self._w) - 1) << sh)) | (value << sh)
            tl.timeout &= (1 << csr.bits) - 1
        elif part:
            return False
        elif csr.name == "CONTROL":
            self._rx_control(tl, ControlCommand(value & 3), (value >> 2) & ((1 << PC_BITS) - 1))
        else:
            s = int(csr.name[3:])
            tl.sems[s] = value & ((1 << SEM_BITS) - 1)
            self._wake(tl)
        return True

    def _rx_signal(self, tl, sem):
        if tl.sems[sem] == (1 << SEM_BITS) - 1:
            if tl.error == ErrorCode.NONE:
                self._error(tl, ErrorCode.SEM_OVERFLOW, sem, self.t)
            return
        tl.sems[sem] += 1
        self._wake(tl)

    def _rx_control(self, tl, command, pc):
        t = self.t
        if command == ControlCommand.RESET:
            self._account(tl, t)
            tl.reset_state(t)
            tl.sems = [0] * SEMAPHORES
            tl.timeout = 0
            tl.rx_errors = 0
        elif command == ControlCommand.START:
            if tl.state not in (TileState.IDLE, TileState.HALTED):
                tl.rx_errors = min(tl.rx_errors + 1, 0xFFFF)
                return
            tl.pc, tl.ar, tl.stack = pc, [0, 0, 0, 0], []
            tl.mm_open, tl.mm_acc = False, None
            tl.simd_scale, tl.simd_zero = 1, 0
            tl.stopped_at = None
            if self._started is None:
                self._started = t
            self._set_state(tl, TileState.RUNNING, t)
            self._schedule_issue(tl, t + 1)   # the first instruction's decode cycle

    def _rx_read_req(self, tl, space, word, count, box, reply_addr=0):
        words = [self._read_word(tl, space, word + i, self.t) for i in range(count)]
        tl.tx_words += count
        t = self.t + self.timing.read_resp_cycles
        extra = (self._packet_reads(tl, "ni_read", word, count, t)
                 if space == Space.SRAM and word < len(tl.sram) else 0)
        if box is not None:
            def arrived(c):
                box.append((words, c))
        else:
            def arrived(c):
                self._to_host(Opcode.READ_RESP, tl.coord, reply_addr, words)
        self.network.send(tl.coord, HOST, count + 1, t, hold=count + 1 + extra, port="resp",
                          on_arrived=arrived)

    def _read_word(self, tl, space, word, t):
        if space == Space.SRAM and word < len(tl.sram):
            return int(tl.sram[word])
        if space == Space.IMEM:
            ins, part = divmod(word, instr_words(self.cfg))
            if ins < len(tl.imem):
                return (tl.imem[ins] >> (part * self._w)) & ((1 << self._w) - 1)
        if space == Space.CSR:
            for csr in self.csrs.values():
                if csr.word <= word < csr.word + csr.words:
                    v = self._csr_value(tl, csr.name, t)
                    return (v >> (self._w * (word - csr.word))) & ((1 << self._w) - 1)
        tl.rx_errors = min(tl.rx_errors + 1, 0xFFFF)
        return 0

    def _csr_value(self, tl, name, t):
        self._account(tl, t)
        u = tl.units
        m32 = 0xFFFF_FFFF
        if name == "STATUS":
            return (tl.state.value | u["dma"].busy_now << 3 | u["matrix"].busy_now << 4
                    | u["simd"].busy_now << 5)
        simple = {
            "CONTROL": 0, "PC": tl.pc & ((1 << PC_BITS) - 1),
            "ERROR": tl.error.value | (tl.error_pc & ((1 << PC_BITS) - 1)) << 4,
            "WAIT_SEM": tl.wait_sem, "WAIT_COUNT": tl.wait_count, "TIMEOUT": tl.timeout,
            "TILE_ID": tl.x | tl.y << 5, "ISA": ISA_VERSION, "RX_ERRORS": tl.rx_errors,
            "CYCLES": tl.cycles & m32, "STALL_CYCLES": tl.stall_cycles & m32,
            "DMA_BUSY": self._busy_at(u["dma"], t) & m32,
            "MATMUL_BUSY": self._busy_at(u["matrix"], t) & m32,
            "SIMD_BUSY": self._busy_at(u["simd"], t) & m32,
            "MATMUL_STEPS": tl.matmul_steps & m32, "TX_WORDS": tl.tx_words & m32,
            "RX_WORDS": tl.rx_words & m32,
        }
        if name in simple:
            return simple[name]
        if name.startswith("SEM"):
            return tl.sems[int(name[3:])]
        if name.startswith("AR"):
            return tl.ar[int(name[2:])]
        return 0   # DROP_*: the model's network drops nothing (bad packets are not modelled)

    @staticmethod
    def _busy_at(unit, t):
        # Busy intervals are booked when work starts; count only the part before t.
        return unit.busy.total - max(0, unit.busy.until - t)

    # -- controller -----------------------------------------------------------------------------

    def _account(self, tl, t):
        if t > tl.state_since:
            if tl.state in _ACTIVE:
                tl.cycles += t - tl.state_since
            if tl.state in _STALLED:
                tl.stall_cycles += t - tl.state_since
            tl.state_since = t

    def _set_state(self, tl, state, t):
        self._account(tl, t)
        tl.state = state
        if state in (TileState.HALTED, TileState.ERROR):
            tl.stopped_at = t

    def _schedule_issue(self, tl, t):
        if tl.issue_at is None or t < tl.issue_at:
            tl.issue_at = t
            self._at(t, self._issue, tl, tl.epoch, t)

    def _wake(self, tl):
        if tl.state in _STALLED:
            self._schedule_issue(tl, self.t + self.timing.wake_cycles)

    def _issue(self, tl, epoch, when):
        if epoch != tl.epoch or tl.issue_at != when:
            return
        tl.issue_at = None
        t = when
        while tl.state in _ACTIVE:
            nxt = self._issue_one(tl, t)
            if nxt is None:
                return
            if (self._events and self._events[0][0] <= nxt) or nxt > self._limit:
                self._schedule_issue(tl, nxt)
                return
            t = self.t = nxt

    def _block(self, tl, state, t):
        if tl.state not in _STALLED:
            tl.block_token += 1
            if tl.timeout:
                self._at(t + tl.timeout, self._timeout, tl, tl.epoch, tl.block_token)
        if tl.state != state:
            self._set_state(tl, state, t)
        return None

    def _timeout(self, tl, epoch, token):
        if epoch == tl.epoch and token == tl.block_token and tl.state in _STALLED:
            self._error(tl, ErrorCode.TIMEOUT, tl.imem[tl.pc] & 0xFFFF_FFFF, self.t)

    def _error(self, tl, code, value, t):
        if tl.error == ErrorCode.NONE:
            tl.error, tl.error_pc = code, tl.pc
        self._set_state(tl, TileState.ERROR, t)
        pc = tl.pc & ((1 << PC_BITS) - 1)
        self.network.send(tl.coord, HOST, self._notify_flits, t + self.timing.ni_tx_cycles,
                          on_arrived=lambda c: self._host_notify(tl.coord, NotifyKind.ERROR,
                                                                 code.value, pc, value))

    def _host_notify(self, coord, kind, code, pc, value):
        self.notifications.append(Notification(coord, kind, code, pc, value, self.t))
        if self.host_packets is not None:
            bits = data.Layout.cast(NotifyPayload).const(
                {"value": value, "code": code, "pc": pc, "kind": kind}).as_value().value
            n = payload_flits(NotifyPayload, self.cfg)
            self._to_host(Opcode.NOTIFY, coord, 0, [(bits >> (self._w * i)) & ((1 << self._w) - 1)
                                                    for i in range(n)])

    def _to_host(self, opcode, src, addr, payload):
        if self.host_packets is not None:
            pkt = Packet(opcode, self.network.host_address, src, addr, [int(p) for p in payload])
            self.host_packets.append((self.t, pkt.flits(self.cfg)))

    def _sram_addr(self, word):
        return data.Layout.cast(tile_addr_layout(self.cfg)).const(
            {"word": word, "space": Space.SRAM}).as_value().value

    def _advance(self, tl):
        nxt = tl.pc + 1
        while tl.stack and tl.stack[-1][1] == tl.pc:
            if tl.stack[-1][2] > 0:
                tl.stack[-1][2] -= 1
                nxt = tl.stack[-1][0]
                break
            tl.stack.pop()
        tl.pc = nxt

    def _issue_one(self, tl, t):
        """Try to issue the instruction at pc at cycle t: the cycle of the next issue, or None
        when issue stops or blocks."""
        cfg, tm = self.cfg, self.timing
        depth = cfg.tile.imem_depth
        if tl.pc >= depth:
            self._error(tl, ErrorCode.PC_RANGE, 0, t)
            return None
        word = tl.imem[tl.pc]
        op, f = _DECODE(word)
        if op is None:
            self._error(tl, ErrorCode.BAD_OPCODE, word & 0xFFFF_FFFF, t)
            return None
        err, blocks, resolved, factors = self._check(tl, op, f)
        if err is not None:
            self._error(tl, err, word & 0xFFFF_FFFF, t)
            return None
        # A slot starts with the instruction's decode cycle. An instruction that blocked was
        # decoded (and range-checked) while it waited: once it may go, only its decision is left.
        resumed = tl.state in _STALLED
        cost = 1 if resumed else tm.issue_cycles
        unit = _UNIT_OF.get(op)
        if op == InstrOp.HALT:
            if any(u.busy_now for u in tl.units.values()):
                return self._block(tl, TileState.BLOCKED, t)
            self._set_state(tl, TileState.HALTED, t)
            return None
        if op == InstrOp.WAIT:
            s, n = f["sem"], f["count"]
            tl.wait_sem, tl.wait_count = s, n
            if tl.sems[s] < n:
                return self._block(tl, TileState.WAITING, t)
            tl.sems[s] -= n
        elif op == InstrOp.FENCE:
            sel = [n for n, k in (("dma", "dma"), ("matrix", "matmul"), ("simd", "simd")) if f[k]]
            if any(tl.units[n].busy_now for n in sel):
                return self._block(tl, TileState.BLOCKED, t)
        elif op == InstrOp.AR:
            r, v = f["reg"], f["value"]
            tl.ar[r] = ((tl.ar[r] + v) if f["mode"] else v) & _MASK20
        elif unit is not None:
            u = tl.units[unit]
            if len(u.queue) >= self.cfg.tile.unit_queue_depth:
                return self._block(tl, TileState.BLOCKED, t)
            if factors and not resumed:
                cost = check_cycles(tm, factors)
            cmd = dict(f, **resolved)
            if op == InstrOp.MATMUL:
                tl.mm_open = not f["last"]
            u.queue.append((t + cost, op, cmd, tl.pc))
            self._pump_at(tl, unit, t + cost)
        if tl.state != TileState.RUNNING:
            self._set_state(tl, TileState.RUNNING, t)
        if op == InstrOp.LOOP:
            tl.stack.append([tl.pc + 1, tl.pc + f["len"], f["count"] - 1])
            tl.pc += 1
        else:
            self._advance(tl)
        return t + cost

    def _check(self, tl, op, f):
        """Issue checks in the controller's priority order (as reference.controller_run):
        (error or None, SRAM blocks, resolved addresses, range-check factor pairs)."""
        cfg, t = self.cfg, self.cfg.tile
        err, blocks, resolved, factors = None, [], {}, []
        ar = tl.ar
        if op in (InstrOp.DMA_WRITE, InstrOp.DMA_READ):
            if f["rows"] == 0 or f["cols"] == 0 or (op == InstrOp.DMA_READ and f["host"]):
                err = ErrorCode.BAD_OPERAND
            elif not f["host"] and (f["x"] >= cfg.cols or f["y"] >= cfg.rows):
                err = ErrorCode.OFF_MESH
            for side in ("local", "remote"):
                start = f[side] + ar[f[side + "_ar"]]
                resolved[side] = start
                blocks.append((start, (f["rows"] - 1) * f[side + "_stride"] + f["cols"]))
                factors.append((max(f["rows"] - 1, 0), f[side + "_stride"]))
        elif op == InstrOp.MATMUL:
            mf, nf, k = f["m_folds"], f["n_folds"], f["k"]
            if k == 0 or mf == 0 or nf == 0 or ((mf > 1 or nf > 1)
                                                 and not (f["first"] and f["last"])):
                err = ErrorCode.BAD_OPERAND
            for name in ("a", "b", "c"):
                resolved[name] = f[name] + ar[f[name + "_ar"]]
            blocks += [(resolved["a"], mf * k * self._mw["a"]),
                       (resolved["b"], nf * k * self._mw["b"])]
            factors += [(mf * k, self._mw["a"]), (nf * k, self._mw["b"])]
            if f["last"]:
                blocks.append((resolved["c"], (mf * t.pe_rows - 1) * f["c_stride"]
                               + nf * self._mw["c"]))
                factors.append((mf * t.pe_rows - 1, f["c_stride"]))
        elif op == InstrOp.SIMD:
            n = f["count"]
            if n == 0 or f["func"] not in SimdOp.valid_values():
                err = ErrorCode.BAD_OPERAND
            for name in ("x", "y", "d"):
                resolved[name] = f[name] + ar[f[name + "_ar"]]
            xw, dw = self._vw[ElemFormat(f["xfmt"])], self._vw[ElemFormat(f["dfmt"])]
            blocks += [(resolved["x"], n * xw), (resolved["d"], n * dw)]
            factors.append((0, 0))   # vector sizes are constants of the tile: no multiply loop
            ymode, yfmt = YMode(f["ymode"]), ElemFormat(f["yfmt"])
            if ymode != YMode.NONE:
                ybits = t.acc_bits if yfmt == ElemFormat.ACC else t.data_bits
                blocks.append((resolved["y"], {
                    YMode.VECTOR: n * self._vw[yfmt], YMode.REPEAT: self._vw[yfmt],
                    YMode.SCALAR: packed_words(1, ybits, cfg.word_bits)}[ymode]))
        elif op == InstrOp.SIGNAL:
            if not f["local"] and (f["x"] >= cfg.cols or f["y"] >= cfg.rows):
                err = ErrorCode.OFF_MESH
        elif op == InstrOp.LOOP:
            end = tl.pc + f["len"]
            if f["count"] == 0 or f["len"] == 0:
                err = ErrorCode.BAD_OPERAND
            elif (len(tl.stack) == LOOP_DEPTH or end >= t.imem_depth
                  or (tl.stack and end > tl.stack[-1][1])):
                err = ErrorCode.LOOP_NEST
        elif op == InstrOp.AR:
            if f["reg"] == 0:
                err = ErrorCode.BAD_OPERAND
        if err is None and any(s + n > t.sram_words for s, n in blocks):
            err = ErrorCode.SRAM_RANGE
        if err is None and op == InstrOp.MATMUL and bool(f["first"]) == tl.mm_open:
            err = ErrorCode.MATMUL_CHAIN
        return err, blocks, resolved, factors

    # -- units ----------------------------------------------------------------------------------

    def _pump_at(self, tl, unit, t):
        if t >= _NEVER:
            return   # the unit's command under way pumps when it completes
        u = tl.units[unit]
        if u.pump_at is None or t < u.pump_at:
            u.pump_at = t
            self._at(t, self._pump, tl, unit, tl.epoch, t)

    @staticmethod
    def _jobs_free(u):
        """First cycle the unit may take a command for want of job slots: the SIMD engine takes
        one only when fewer than SIMD_JOBS commands it took are unwritten (SIMD_CFG too); the
        command waits in its queue meanwhile, so issue behind a full queue blocks."""
        return u.jobs[0].done if len(u.jobs) == SIMD_JOBS else 0

    def _pump(self, tl, unit, epoch, when):
        u = tl.units[unit]
        if epoch != tl.epoch or u.pump_at != when:
            return
        u.pump_at = None
        t = self.t
        popped = False
        while u.queue and u.queue[0][0] <= t and u.accept_free <= t and self._jobs_free(u) <= t:
            _, op, cmd, pc = u.queue.popleft()
            popped = True
            self._start(tl, unit, op, cmd, pc, t)
        if u.queue:
            self._pump_at(tl, unit, max(u.queue[0][0], u.accept_free, self._jobs_free(u), t + 1))
        if popped:
            self._wake(tl)

    def _bank_demand(self, op, cmd):
        """SRAM reads of one MATMUL / SIMD command per bank: ``(bank -> words, bank -> read
        clients)`` (the read ports of the unit that use the bank: ``mm_a``, ``mm_b``, ``mm_c``;
        ``simd_x``, ``simd_y``), for conflicts between units."""
        depth = self.cfg.tile.sram_depth
        words, clients = {}, {}

        def add(start, n):
            bank = start // depth
            words[bank] = words.get(bank, 0) + n
            clients[bank] = clients.get(bank, 0) + 1

        if op == InstrOp.MATMUL:
            mf, nf, k = cmd["m_folds"], cmd["n_folds"], cmd["k"]
            add(cmd["a"], mf * nf * k * self._mw["a"])
            add(cmd["b"], mf * nf * k * self._mw["b"])
            if cmd["acc"] and cmd["last"]:
                add(cmd["c"], mf * nf * self.cfg.tile.pe_rows * self._mw["c"])
        elif op == InstrOp.SIMD:
            n = cmd["count"]
            add(cmd["x"], n * self._vw[ElemFormat(cmd["xfmt"])])
            ymode = YMode(cmd["ymode"])
            if ymode in (YMode.VECTOR, YMode.REPEAT):
                add(cmd["y"], n * self._vw[ElemFormat(cmd["yfmt"])])
            elif ymode == YMode.SCALAR:
                add(cmd["y"], n)
        return words, clients

    def _contend(self, tl, unit, words, clients, t):
        """Bank conflicts of new SRAM reads (``words``, ``clients`` per bank, see
        :func:`tilemesh.model.cycles.bank_share`) starting at ``t`` with the reads other units
        have under way: returns the cycles the new work loses, and stretches the work under way
        by the cycles it loses (round-robin ports: both sides slow down). A unit's own
        back-to-back commands are paced by its closed form instead."""
        tl.bank_ops = [o for o in tl.bank_ops if o.end > t]
        delay = 0.0
        for o in tl.bank_ops:
            if o.unit == unit:
                continue
            for bank, n in words.items():
                if bank not in o.words:
                    continue
                left = o.left(bank, t)
                if left <= 0:
                    continue
                mine, theirs = bank_share(n, clients[bank], left, o.clients[bank],
                                          o.rate(bank))
                delay += mine
                if o.push is not None:
                    o.push(theirs)
        return int(round(delay))

    def _start(self, tl, unit, op, cmd, pc, t):
        u = tl.units[unit]
        u.inflight += 1
        if self.timeline is not None:
            self.timeline.append((t, tl.coord, _TIMELINE_UNITS[unit]))
        if unit == "dma":
            u.accept_free = _NEVER    # until the command's last packet has left
            self._dma(tl, op, cmd, pc, t)
            return
        if op == InstrOp.SIMD_CFG:
            done = u.accept_free = t + 1
            u.busy.add(t, done)
            self._at(done, self._unit_done, tl, unit, tl.epoch,
                     (self._simd_cfg_effect, tl, cmd), None)
            return
        t0 = t
        queued = u.accept_free == t   # it waited for the engine, which takes it now
        words, clients = self._bank_demand(op, cmd)
        t = t + self._contend(tl, unit, words, clients, t)
        if op == InstrOp.MATMUL:
            last_step, accept, done = matmul_timing(
                self.cfg, self.timing, a=cmd["a"], b=cmd["b"], c=cmd["c"], k=cmd["k"],
                m_folds=cmd["m_folds"], n_folds=cmd["n_folds"], last=cmd["last"],
                acc=cmd["acc"], start=t, prev_last_step=u.last_step)
            u.last_step = last_step
            effect = (self._matmul_effect, tl, cmd)
            reads_end = last_step + 1
        else:
            reads = [(cmd["x"], self._vw[ElemFormat(cmd["xfmt"])])]
            ymode = YMode(cmd["ymode"])
            if ymode in (YMode.VECTOR, YMode.REPEAT):
                reads.append((cmd["y"], self._vw[ElemFormat(cmd["yfmt"])]))
            elif ymode == YMode.SCALAR:
                reads.append((cmd["y"], 1))
            # The engine takes the next command once this one's operands are read (its
            # pipeline drains meanwhile), unless that command reads what this one still writes.
            n = cmd["count"]
            dw = self._vw[ElemFormat(cmd["dfmt"])]
            spans = [(start, start + (words if (start, words) == reads[-1] and ymode in (
                YMode.REPEAT, YMode.SCALAR) else n * words)) for start, words in reads]
            for d0, d1, ready in u.writes:
                if ready > t and any(a < d1 and d0 < b for a, b in spans):
                    t = max(t, ready + self.timing.simd_hazard_cycles)
            reads_end, done = simd_cycles(self.cfg, self.timing, n, reads, dw, queued=queued)
            accept, done = t + reads_end, t + done
            u.writes = [w for w in u.writes if w[2] > t] + [(cmd["d"], cmd["d"] + n * dw, done)]
            effect = (self._simd_effect, tl, cmd)
            reads_end = accept
        u.accept_free = accept
        u.busy.add(t0, done)
        rec = _BankOp(t, reads_end, unit, words, clients)
        rec.done = done
        rec.push = lambda cycles, tl=tl, u=u, rec=rec, unit=unit, effect=effect: \
            self._push(tl, u, unit, rec, effect, cycles)
        tl.bank_ops.append(rec)
        if unit == "simd":
            u.jobs.append(rec)
        self._at(done, self._unit_done, tl, unit, tl.epoch, effect, rec)

    def _push(self, tl, u, unit, rec, effect, cycles):
        """Stretch the MATMUL / SIMD command ``rec`` under way by ``cycles`` lost to another
        unit's reads of its banks: its reads, its completion and the unit's next command move
        later."""
        p = int(round(cycles))
        if p <= 0:
            return
        rec.end += p
        u.busy.add(rec.done, rec.done + p)
        rec.done += p
        u.accept_free += p
        if unit == "matrix" and u.last_step is not None:
            u.last_step += p
        self._at(rec.done, self._unit_done, tl, unit, tl.epoch, effect, rec)

    def _unit_done(self, tl, unit, epoch, effect, rec):
        if epoch != tl.epoch or (rec is not None and rec.done != self.t):
            return   # reset, or stretched: a later event completes it
        u = tl.units[unit]
        u.inflight -= 1
        if effect is not None:
            effect[0](*effect[1:])
        if unit == "dma":
            u.accept_free = self.t
            if u.queue:
                self._pump_at(tl, unit, self.t)
        if unit == "matrix" and u.inflight == 0 and tl.mm_acc is None:
            u.last_step = None   # the array has drained; an open accumulation keeps it going
        self._wake(tl)

    # -- DMA engine -----------------------------------------------------------------------------

    def _dma_finish(self, tl, epoch, t0, done):
        if epoch != tl.epoch:
            return   # reset while its last packet waited to leave: the command is gone
        tl.units["dma"].busy.add(t0, done)
        self._at(done, self._unit_done, tl, "dma", epoch, None, None)

    def _packet_reads(self, tl, unit, first, n, t, job=None):
        """SRAM reads of one packet's ``n`` words from word ``first`` on (the DMA engine or the
        READ_REQ responder), starting at ``t``: the cycles they lose to other units (the
        packet's flits then hold its links that much longer) and a record of them. Cycles
        work starting later takes from the packet delay the ``job``'s next packet."""
        bank = first // self.cfg.tile.sram_depth
        extra = self._contend(tl, unit, {bank: n}, {bank: 1}, t)
        op = _BankOp(t, t + n + extra, unit, {bank: n}, {bank: 1})
        if job is not None:
            def push(cycles):
                job.debt += cycles
            op.push = push
        tl.bank_ops.append(op)
        return extra

    @staticmethod
    def _repay(job):
        """Cycles the DMA job's packet under way lost to work that started after it."""
        debt = int(round(job.debt))
        job.debt = 0.0
        return debt

    def _dma(self, tl, op, cmd, pc, t):
        """Start one DMA-queue command at cycle ``t``: packets leave one after the other (events,
        so later work on the tile's banks slows the packets still to come), and the command
        completes with its last packet."""
        tm, net = self.timing, self.network
        src, epoch = tl.coord, tl.epoch
        if op == InstrOp.SIGNAL:
            dst = src if cmd["local"] else (cmd["x"], cmd["y"])
            self._send_signal(tl, dst, cmd["sem"], t + tm.ni_tx_cycles,
                              lambda c: self._dma_finish(tl, epoch, t, c))
            return
        if op == InstrOp.NOTIFY:
            pc &= (1 << PC_BITS) - 1
            net.send(src, HOST, self._notify_flits, t + tm.ni_tx_cycles,
                     on_injected=lambda c: self._dma_finish(tl, epoch, t, c),
                     on_arrived=lambda c: self._host_notify(src, NotifyKind.PROGRAM, cmd["code"],
                                                            pc, cmd["value"]))
            return
        te = t + tm.dma_start_cycles + tm.ni_tx_cycles
        rows, cols = cmd["rows"], cmd["cols"]
        st = _DmaJob(t0=t, cmd=cmd, chunks=[min(self._max_pkt, cols - c0)
                                           for c0 in range(0, cols, self._max_pkt)] * rows,
                     local=_block_index(cmd["local"], rows, cols, cmd["local_stride"]),
                     remote=_block_index(cmd["remote"], rows, cols, cmd["remote_stride"]))
        if op == InstrOp.DMA_WRITE:
            st.dst = HOST if cmd["host"] else (cmd["x"], cmd["y"])
            st.payload = tl.sram[st.local].copy()
            tl.tx_words += rows * cols
            self._at(te, self._dma_write_packet, tl, tl.epoch, st)
        else:
            st.dst = (cmd["x"], cmd["y"])
            self._at(te, self._dma_read_request, tl, tl.epoch, st)

    def _dma_write_packet(self, tl, epoch, st):
        if epoch != tl.epoch:
            return   # reset: the engine stops
        debt = self._repay(st)
        if debt:
            self._at(self.t + debt, self._dma_write_packet, tl, epoch, st)
            return
        tm = self.timing
        t, n, pos = self.t, st.chunks[st.i], st.pos
        extra = self._packet_reads(tl, "dma", int(st.local[pos]), n, t, st)
        index, payload = st.remote[pos:pos + n], st.payload[pos:pos + n]
        st.i, st.pos = st.i + 1, pos + n
        nxt = self._dma_write_packet if st.i < len(st.chunks) else self._dma_write_tail
        self.network.send(
            tl.coord, st.dst, n + 1, t, hold=n + 1 + extra,
            # the read-ahead keeps the packets streaming
            on_injected=lambda c: self._at(c + tm.dma_packet_gap, nxt, tl, epoch, st),
            on_arrived=lambda c: self._at(c + tm.ni_rx_cycles, self._deliver, st.dst, tl.coord,
                                          index, payload))

    def _dma_write_tail(self, tl, epoch, st):
        if epoch != tl.epoch:
            return
        debt = self._repay(st)
        if debt:
            self._at(self.t + debt, self._dma_write_tail, tl, epoch, st)
            return
        if st.cmd["signal"]:
            self._send_signal(tl, st.dst, st.cmd["sem"], self.t,
                              lambda c: self._dma_finish(tl, epoch, st.t0, c))
        else:
            self._dma_finish(tl, epoch, st.t0, self.t)

    def _send_signal(self, tl, dst, sem, t, injected):
        """A SIGNAL packet from ``tl`` to ``dst`` (a tile or the host) offered at ``t``;
        ``injected(cycle)`` when it has left."""
        if dst == HOST:
            def arrived(c):
                self._host_signal(tl.coord, sem)
        else:
            def arrived(c):
                self._at(c + self.timing.ni_rx_cycles, self._rx_signal, self.tiles[dst], sem)
        self.network.send(tl.coord, dst, 1, t, on_injected=injected, on_arrived=arrived)

    def _dma_read_request(self, tl, epoch, st):
        # dma.read: one READ_REQ outstanding at a time, each answered by one READ_RESP
        if epoch != tl.epoch:
            return   # reset before this READ_REQ left: never sent
        self.network.send(tl.coord, st.dst, 2, self.t,
                          on_arrived=lambda c: self._read_serve(tl, epoch, st))

    def _read_serve(self, tl, epoch, st):
        """The responder takes a READ_REQ of ``tl``'s dma.read: reads the words (competing for
        its banks) and answers."""
        tm = self.timing
        rem = self.tiles[st.dst]
        n, pos = st.chunks[st.i], st.pos
        remote, local = st.remote[pos:pos + n], st.local[pos:pos + n]
        payload = rem.sram[remote].copy()
        rem.tx_words += n
        t = self.t + tm.read_resp_cycles
        extra = self._packet_reads(rem, "ni_read", int(remote[0]), n, t)
        st.i, st.pos = st.i + 1, pos + n
        self.network.send(rem.coord, tl.coord, n + 1, t, hold=n + 1 + extra, port="resp",
                          on_arrived=lambda c: self._read_landed(
                              tl, epoch, st, local, payload, c + tm.ni_rx_cycles + tm.ni_tx_cycles))

    def _read_landed(self, tl, epoch, st, local, payload, te):
        """A READ_RESP of ``tl``'s dma.read has arrived: its words land at ``te``, and the next
        READ_REQ (or the closing SIGNAL) leaves then."""
        tm = self.timing
        self._at(te, self._read_land, tl, epoch, local, payload)
        if epoch != tl.epoch:
            return   # the requester was reset: nothing more leaves it for this command
        if st.i < len(st.chunks):
            self._at(te, self._dma_read_request, tl, epoch, st)
            return
        if st.cmd["signal"]:
            self._send_signal(tl, tl.coord, st.cmd["sem"], te + tm.ni_tx_cycles,
                              lambda c: self._dma_finish(tl, epoch, st.t0, c))
        else:
            self._dma_finish(tl, epoch, st.t0, te)

    def _host_signal(self, src, sem):
        self.host_signals.append((src, sem, self.t))
        self._to_host(Opcode.SIGNAL, src, sem, [])

    def _deliver(self, dst, src, index, payload):
        if dst == HOST:
            self._host_buffer(src)[index] = payload
            self._to_host(Opcode.WRITE, src, self._sram_addr(int(index[0])), payload)
        else:
            tl = self.tiles[dst]
            tl.sram[index] = payload
            tl.rx_words += len(index)

    def _read_land(self, tl, epoch, local, payload):
        if epoch != tl.epoch:   # the requester was reset: a stray READ_RESP, dropped
            tl.rx_errors = min(tl.rx_errors + 1, 0xFFFF)
            return
        tl.sram[local] = payload
        tl.rx_words += len(local)

    # -- matrix and SIMD effects (bit exact, vectorised) ----------------------------------------

    def _matmul_effect(self, tl, cmd):
        cfg, t, w, W = self.cfg, self.cfg.tile, self._mw, self._w
        R, C = t.pe_rows, t.pe_cols
        k, mf, nf = cmd["k"], cmd["m_folds"], cmd["n_folds"]
        first, last, acc = bool(cmd["first"]), bool(cmd["last"]), bool(cmd["acc"])
        tl.matmul_steps += k * mf * nf
        a_idx = cmd["a"] + np.arange(mf * k * w["a"])
        b_idx = cmd["b"] + np.arange(nf * k * w["b"])
        rows = (cmd["c"] + (np.arange(mf)[:, None, None] * R + np.arange(R)[None, None, :])
                * cmd["c_stride"] + np.arange(nf)[None, :, None] * w["c"])
        c_idx = (rows[..., None] + np.arange(w["c"])).ravel() if last else np.empty(0, int)
        overlap = last and (len(np.unique(c_idx)) != len(c_idx)
                            or np.isin(c_idx, a_idx).any() or np.isin(c_idx, b_idx).any())
        if overlap:   # aliasing operands: the word-by-word reference order matters
            state = ref.matmul_instr(tl.sram, cfg, a=cmd["a"], b=cmd["b"], c=cmd["c"],
                                     c_stride=cmd["c_stride"], k=k, m_folds=mf, n_folds=nf,
                                     first=first, last=last, acc=acc, state=tl.mm_acc)
            tl.mm_acc = state
            return
        A = unpack_words(tl.sram[a_idx].reshape(mf, k, w["a"]), R, t.data_bits, W)
        B = unpack_words(tl.sram[b_idx].reshape(nf, k, w["b"]), C, t.data_bits, W)
        out = np.matmul(A.transpose(0, 2, 1)[:, None], B[None])    # (mf, nf, R, C)
        if not first:
            out = out + np.asarray(tl.mm_acc, dtype=np.int64)
        out = _wrap(out, t.acc_bits)
        if not last:
            tl.mm_acc = out[0, 0]
            return
        tl.mm_acc = None
        if acc:
            old = unpack_words(tl.sram[c_idx].reshape(mf, nf, R, w["c"]), C, t.acc_bits, W)
            out = _wrap(out + old, t.acc_bits)
        tl.sram[c_idx] = pack_words(out, t.acc_bits, W).ravel()

    def _simd_cfg_effect(self, tl, cmd):
        tl.simd_scale, tl.simd_zero = cmd["scale"], cmd["zero_point"]

    def _simd_effect(self, tl, cmd):
        cfg, t, W = self.cfg, self.cfg.tile, self._w
        n, lanes = cmd["count"], t.simd_lanes
        xf, yf, df = (ElemFormat(cmd[k]) for k in ("xfmt", "yfmt", "dfmt"))
        ymode = YMode(cmd["ymode"])
        bits = {ElemFormat.ACC: t.acc_bits, ElemFormat.DATA: t.data_bits}
        xw, yw, dw = self._vw[xf], self._vw[yf], self._vw[df]
        x_idx = cmd["x"] + np.arange(n * xw)
        d_idx = cmd["d"] + np.arange(n * dw)
        y_len = {YMode.VECTOR: n * yw, YMode.REPEAT: yw,
                 YMode.SCALAR: packed_words(1, bits[yf], W), YMode.NONE: 0}[ymode]
        y_idx = cmd["y"] + np.arange(y_len)
        in_place_x = cmd["x"] == cmd["d"] and xw == dw
        in_place_y = ymode == YMode.VECTOR and cmd["y"] == cmd["d"] and yw == dw
        if ((np.isin(d_idx, x_idx).any() and not in_place_x)
                or (np.isin(d_idx, y_idx).any() and not in_place_y)):
            names = {ElemFormat.ACC: "acc", ElemFormat.DATA: "data"}
            ref.simd_instr(tl.sram, cfg, func=SimdOp(cmd["func"]), x=cmd["x"], d=cmd["d"],
                           count=n, y=cmd["y"], ymode=ymode.name.lower(), xfmt=names[xf],
                           yfmt=names[yf], dfmt=names[df], shift=cmd["shift"],
                           scale=tl.simd_scale, zero_point=tl.simd_zero)
            return
        xv = unpack_words(tl.sram[x_idx].reshape(n, xw), lanes, bits[xf], W)
        if ymode == YMode.NONE:
            yv = np.zeros_like(xv)
        elif ymode == YMode.SCALAR:
            e0 = unpack_words(tl.sram[y_idx].reshape(1, -1), 1, bits[yf], W)[0, 0]
            yv = np.full_like(xv, e0)
        elif ymode == YMode.REPEAT:
            yv = np.broadcast_to(unpack_words(tl.sram[y_idx].reshape(1, yw), lanes, bits[yf],
                                              W), xv.shape)
        else:
            yv = unpack_words(tl.sram[y_idx].reshape(n, yw), lanes, bits[yf], W)
        shift = min(cmd["shift"], (1 << simd_shift_bits(t.acc_bits, SIMD_SCALE_BITS)) - 1)
        out, _ = ref.simd(SimdOp(cmd["func"]), xv, yv, shift=shift, scale=tl.simd_scale,
                          zero_point=int(ref.wrap(tl.simd_zero, t.acc_bits)),
                          acc_bits=t.acc_bits, out_bits=t.data_bits)
        tl.sram[d_idx] = pack_words(out, bits[df], W).ravel()


# -- packet-level host port: the model as a back end of tilemesh.host.HostDriver ------------------

def _inject(model, flits):
    """Apply one packet the host sends (flit integers ``data | last << W``, header first)."""
    cfg, w = model.cfg, model._w
    mask = (1 << w) - 1
    pkt = Packet.from_flits(cfg, [f & ((1 << (w + 1)) - 1) for f in flits])
    payload = [p & mask for p in pkt.payload]
    tile = model.tiles.get(tuple(pkt.dst))
    if tile is None:
        return   # off the mesh: the host port's ingress checker drops it
    if pkt.addr >> cfg.tile_addr_bits:
        tile.rx_errors = min(tile.rx_errors + 1, 0xFFFF)   # address bits above the map
        return
    word_bits = cfg.tile_addr_bits - 2      # tile_addr_layout: word, then the 2-bit space
    word, space = pkt.addr & ((1 << word_bits) - 1), (pkt.addr >> word_bits) & 3
    space = Space(space) if space < 3 else space   # 3: unmapped, rejected and counted
    if pkt.opcode == Opcode.WRITE:
        model._host_send(tile.coord, len(payload) + 1, model._rx_write, tile, space, word,
                         payload)
    elif pkt.opcode == Opcode.READ_REQ:
        req = data.Layout.cast(read_req_layout(cfg)).from_bits(payload[0])
        model._host_send(tile.coord, 2, model._rx_read_req, tile, space, word, int(req.count),
                         None, int(req.reply_addr))
    elif pkt.opcode == Opcode.SIGNAL:
        model.signal(tile.coord, pkt.addr & (SEMAPHORES - 1))
    elif pkt.opcode == Opcode.CONTROL:
        v = payload[0]
        model._control(tile.coord, ControlCommand(v & 3), (v >> 2) & ((1 << PC_BITS) - 1))


class ModelTransport(HostTransport):
    """A :class:`~tilemesh.host.driver.HostTransport` over a :class:`MeshModel`: the driver's
    packets go into the model's host port, the model's host-bound packets come back, and time
    is the model's host clock (cycles).

    Parameters
    ----------
    model : MeshModel
    """

    def __init__(self, model):
        self.model = model
        if model.host_packets is None:
            model.host_packets = deque()

    async def send(self, flits):
        _inject(self.model, flits)

    async def receive(self, timeout=None):
        m = self.model
        limit = None if timeout is None else m.now + timeout
        m._run(lambda: bool(m.host_packets), limit)
        if m.host_packets:
            cycle, flits = m.host_packets.popleft()
            m.now = max(m.now, cycle)
            return flits
        m.now = max(m.now, m.t if limit is None else limit)
        return None

    def now(self):
        return self.model.now
