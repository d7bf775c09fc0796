"""The host driver: one Python API for talking to a mesh through its host port.

Everything is a packet (docs/tile-design.md §3). :class:`HostDriver` builds and parses them with
the layouts of :mod:`tilemesh.layouts` and hands whole packets to a :class:`HostTransport`: the
cocotb RTL simulation (:class:`tilemesh.host.rtl.CocotbTransport`) today, the Python model and
the UART bridge later. The driver is asynchronous because its RTL back end is (cocotb
coroutines); a synchronous back end implements the same three coroutines trivially.

::

    drv = HostDriver(cfg, transport)
    await drv.reset(1, 0)
    await drv.write_sram(1, 0, 0x100, words)
    await drv.load_program(1, 0, "dma.write host local=0x100 remote=0 rows=1 cols=4\\n"
                                 "notify code=7\\nhalt")
    await drv.start(1, 0)
    note = await drv.wait_notify(timeout=10_000)        # Notify(tile=(1, 0), code=7, ...)
    out = drv.results[1, 0][0:4]                          # words the tile wrote to the host
    words = await drv.read_sram(1, 0, 0x100, 4)
    status = await drv.read_status(1, 0)                  # TileStatus(state=HALTED, ...)

The host keeps at most one READ_REQ outstanding per tile and drains its port all the time (the
transport's receiver runs on its own), as the protocol-deadlock rule of the design requires.
Packets that arrive while the driver waits for something else are kept: NOTIFYs in a queue for
:meth:`HostDriver.wait_notify`, DMA writes to the host in :attr:`HostDriver.results`, SIGNALs to
the host in :attr:`HostDriver.signals`.
"""

import dataclasses
from collections import deque

from amaranth.lib import data

from ..compiler.assembler import Program, assemble, imem_image
from ..layouts import (
    ControlCommand,
    ControlPayload,
    ErrorCode,
    ErrorReg,
    NotifyKind,
    NotifyPayload,
    Opcode,
    Space,
    StatusReg,
    TileState,
    csr_map,
    header_layout,
    instr_words,
    read_req_layout,
    tile_addr_layout,
)
from ..noc.routing import host_address

__all__ = ["HostError", "HostTimeout", "Packet", "Notify", "TileStatus", "HostTransport",
           "HostDriver"]


class HostError(RuntimeError):
    """The mesh answered something the host did not expect."""


class HostTimeout(TimeoutError):
    """Nothing (or not the awaited packet) arrived within the timeout."""


def _int(layout, value):
    return data.Layout.cast(layout).const(value).as_value().value


@dataclasses.dataclass
class Packet:
    """A packet as the host sees it: ``opcode``, ``dst`` and ``src`` as (x, y), header ``addr``
    and the payload words."""
    opcode: Opcode
    dst: tuple
    src: tuple
    addr: int = 0
    payload: list = dataclasses.field(default_factory=list)

    def flits(self, cfg):
        """The packet as flit integers of ``flit_layout(cfg)`` (``data | last << W``)."""
        w = cfg.word_bits
        header = _int(header_layout(cfg), {
            "dst_x": self.dst[0], "dst_y": self.dst[1], "src_x": self.src[0],
            "src_y": self.src[1], "opcode": self.opcode, "length": len(self.payload),
            "addr": self.addr})
        datas = [header] + [int(p) for p in self.payload]
        return [d | (int(i == len(datas) - 1) << w) for i, d in enumerate(datas)]

    @classmethod
    def from_flits(cls, cfg, flits):
        """Parse one packet's flits (header first)."""
        w = cfg.word_bits
        mask = (1 << w) - 1
        layout = data.Layout.cast(header_layout(cfg))
        try:
            hdr = layout.from_bits(flits[0] & mask)
            opcode = Opcode(hdr.opcode)
        except ValueError as e:
            raise HostError(f"packet with an invalid opcode: {flits!r}") from e
        return cls(opcode, (hdr.dst_x, hdr.dst_y), (hdr.src_x, hdr.src_y), hdr.addr,
                   [f & mask for f in flits[1:]])


@dataclasses.dataclass(frozen=True)
class Notify:
    """A NOTIFY from tile ``tile``: ``kind`` PROGRAM (a ``notify`` instruction: ``code``,
    ``value``) or ERROR (``code`` an :class:`~tilemesh.layouts.ErrorCode`), and the ``pc``."""
    tile: tuple
    kind: NotifyKind
    code: int
    value: int
    pc: int

    @property
    def error(self):
        """The ErrorCode of an ERROR notification (None for PROGRAM)."""
        return ErrorCode(self.code) if self.kind == NotifyKind.ERROR else None


@dataclasses.dataclass(frozen=True)
class TileStatus:
    """What :meth:`HostDriver.read_status` reads: the controller's state and busy flags, pc,
    the first error and its pc, and what a WAIT waits for."""
    state: TileState
    dma_busy: bool
    matmul_busy: bool
    simd_busy: bool
    pc: int
    error: ErrorCode
    error_pc: int
    wait_sem: int
    wait_count: int


class HostTransport:
    """How packets reach the mesh: subclass and implement the three coroutines.

    Time is counted in the transport's unit (clock cycles for an RTL simulation).
    """

    async def send(self, flits):
        """Send one packet (flit integers, header first); returns once all are accepted."""
        raise NotImplementedError

    async def receive(self, timeout=None):
        """The flits of the next packet from the mesh, or None after ``timeout`` time units
        (None: wait for ever)."""
        raise NotImplementedError

    def now(self):
        """The current time, in the unit of ``timeout``."""
        raise NotImplementedError


class HostDriver:
    """Host-side API of a mesh of ``cfg`` over ``transport``.

    Parameters
    ----------
    cfg : MeshConfig
    transport : HostTransport
    timeout : int or None
        Default timeout of every call that waits for an answer (transport time units).

    Members
    -------
    results : dict (x, y) -> dict word -> int
        Words tiles wrote to the host with ``dma.write host`` (by offset ``remote``).
    signals : dict (x, y) -> list of 16 ints
        SIGNALs tiles sent to the host, counted per semaphore.
    notifies : deque of Notify
        NOTIFYs received and not yet taken by :meth:`wait_notify`.
    """

    def __init__(self, cfg, transport, *, timeout=200_000):
        self.cfg = cfg
        self.transport = transport
        self.timeout = timeout
        self.results = {}
        self.signals = {}
        self.notifies = deque()
        self._responses = {}    # tile -> deque of READ_RESP payloads
        self._csrs = csr_map(cfg)
        self.host = host_address(cfg)

    # -- packets --------------------------------------------------------------------------------

    def _check_tile(self, x, y):
        if not (isinstance(x, int) and isinstance(y, int) and 0 <= x < self.cfg.cols
                and 0 <= y < self.cfg.rows):
            raise ValueError(f"tile must be on the {self.cfg.rows}x{self.cfg.cols} mesh, "
                             f"not ({x!r}, {y!r})")

    def _addr(self, space, word):
        return _int(tile_addr_layout(self.cfg), {"space": space, "word": word})

    async def send(self, packet):
        """Send a :class:`Packet` (its ``src`` is set to the host)."""
        packet.src = self.host
        await self.transport.send(packet.flits(self.cfg))

    def _dispatch(self, packet):
        t = packet.src
        if packet.opcode == Opcode.READ_RESP:
            self._responses.setdefault(t, deque()).append(packet.payload)
        elif packet.opcode == Opcode.NOTIFY:
            bits = 0
            for i, word in enumerate(packet.payload):
                bits |= word << (i * self.cfg.word_bits)
            n = data.Layout.cast(NotifyPayload).from_bits(
                bits & ((1 << data.Layout.cast(NotifyPayload).size) - 1))
            self.notifies.append(Notify(t, NotifyKind(n.kind), int(n.code), int(n.value),
                                        int(n.pc)))
        elif packet.opcode == Opcode.WRITE:
            buf = self.results.setdefault(t, {})
            base = data.Layout.cast(tile_addr_layout(self.cfg)).from_bits(packet.addr).word
            for i, word in enumerate(packet.payload):
                buf[base + i] = word
        elif packet.opcode == Opcode.SIGNAL:
            self.signals.setdefault(t, [0] * 16)[packet.addr & 15] += 1
        else:
            raise HostError(f"unexpected {packet.opcode.name} packet from tile {t}")

    async def _pump(self, done, timeout, what):
        """Receive and dispatch packets until ``done()`` holds; HostTimeout after ``timeout``."""
        timeout = self.timeout if timeout is None else timeout
        end = None if timeout is None else self.transport.now() + timeout
        while not done():
            left = None if end is None else end - self.transport.now()
            if left is not None and left <= 0:
                raise HostTimeout(f"no {what} within {timeout} cycles")
            flits = await self.transport.receive(left)
            if flits is None:
                raise HostTimeout(f"no {what} within {timeout} cycles")
            self._dispatch(Packet.from_flits(self.cfg, flits))

    # -- memories ---------------------------------------------------------------------------------

    async def write(self, x, y, space, word, words):
        """Write ``words`` at ``word`` onwards of ``space`` of tile (x, y) (several packets)."""
        self._check_tile(x, y)
        words = [int(w) for w in words]
        step = self.cfg.noc.max_packet_flits
        for i in range(0, len(words), step):
            await self.send(Packet(Opcode.WRITE, (x, y), self.host, self._addr(space, word + i),
                                   words[i:i + step]))

    async def read(self, x, y, space, word, count, *, timeout=None):
        """Read ``count`` words from ``word`` onwards of ``space`` of tile (x, y)."""
        self._check_tile(x, y)
        out = []
        step = self.cfg.noc.max_packet_flits
        queue = self._responses.setdefault((x, y), deque())
        for i in range(0, count, step):
            n = min(step, count - i)
            req = _int(read_req_layout(self.cfg), {"reply_addr": self._addr(space, word + i),
                                                  "count": n})
            await self.send(Packet(Opcode.READ_REQ, (x, y), self.host,
                                   self._addr(space, word + i), [req]))
            await self._pump(lambda: bool(queue), timeout, f"READ_RESP from tile {(x, y)}")
            payload = queue.popleft()
            if len(payload) != n:
                raise HostError(f"tile {(x, y)} answered {len(payload)} words, not {n}")
            out += payload
        return out

    async def write_sram(self, x, y, addr, words):
        await self.write(x, y, Space.SRAM, addr, words)

    async def read_sram(self, x, y, addr, count, *, timeout=None):
        return await self.read(x, y, Space.SRAM, addr, count, timeout=timeout)

    async def write_imem(self, x, y, words, *, first=0):
        """Write instruction ``words`` (128-bit ints) from instruction ``first`` on."""
        await self.write(x, y, Space.IMEM, first * instr_words(self.cfg),
                         imem_image(list(words), self.cfg))

    async def load_program(self, x, y, program, *, first=0):
        """Load a :class:`~tilemesh.compiler.assembler.Program`, assembly text or a list of
        instruction words into tile (x, y)'s instruction memory."""
        if isinstance(program, str):
            words = assemble(program, self.cfg)
        elif isinstance(program, Program):
            words = program.words()
        else:
            words = list(program)
        await self.write_imem(x, y, words, first=first)

    # -- control ----------------------------------------------------------------------------------

    async def control(self, x, y, command, pc=0):
        self._check_tile(x, y)
        await self.send(Packet(Opcode.CONTROL, (x, y), self.host, 0,
                               [_int(ControlPayload, {"command": command, "pc": pc})]))

    async def start(self, x, y, pc=0):
        """START tile (x, y) at ``pc`` (ignored and counted unless it is IDLE or HALTED)."""
        await self.control(x, y, ControlCommand.START, pc)

    async def reset(self, x, y):
        """RESET tile (x, y): abort, clear semaphores, registers, counters and errors."""
        await self.control(x, y, ControlCommand.RESET)

    async def signal(self, x, y, sem):
        """Increment semaphore ``sem`` of tile (x, y)."""
        self._check_tile(x, y)
        await self.send(Packet(Opcode.SIGNAL, (x, y), self.host, sem, []))

    # -- registers --------------------------------------------------------------------------------

    def _csr(self, name):
        try:
            return self._csrs[name]
        except KeyError:
            raise ValueError(f"no CSR named {name!r}; CSRs are {', '.join(self._csrs)}") \
                from None

    async def read_csr(self, x, y, name, *, timeout=None):
        """The value of CSR ``name`` (one READ_REQ: a multi-word CSR is read as one snapshot)."""
        csr = self._csr(name)
        words = await self.read(x, y, Space.CSR, csr.word, csr.words, timeout=timeout)
        return self._join(words) & ((1 << csr.bits) - 1)

    async def write_csr(self, x, y, name, value):
        csr = self._csr(name)
        w = self.cfg.word_bits
        await self.write(x, y, Space.CSR, csr.word,
                         [(value >> (i * w)) & ((1 << w) - 1) for i in range(csr.words)])

    def _join(self, words):
        value = 0
        for i, word in enumerate(words):
            value |= word << (i * self.cfg.word_bits)
        return value

    async def read_status(self, x, y, *, timeout=None):
        """STATUS, PC, ERROR, WAIT_SEM and WAIT_COUNT of tile (x, y) as a :class:`TileStatus`."""
        names = ("STATUS", "PC", "ERROR", "WAIT_SEM", "WAIT_COUNT")
        first = self._csr(names[0]).word
        last = self._csr(names[-1])
        words = await self.read(x, y, Space.CSR, first, last.word + last.words - first,
                                timeout=timeout)
        v = {}
        for name in names:
            c = self._csr(name)
            v[name] = self._join(words[c.word - first:c.word - first + c.words]) \
                & ((1 << c.bits) - 1)
        st = data.Layout.cast(StatusReg).from_bits(v["STATUS"])
        err = data.Layout.cast(ErrorReg).from_bits(v["ERROR"])
        return TileStatus(state=TileState(st.state), dma_busy=bool(st.dma_busy),
                          matmul_busy=bool(st.matmul_busy), simd_busy=bool(st.simd_busy),
                          pc=v["PC"], error=ErrorCode(err.code), error_pc=int(err.pc),
                          wait_sem=v["WAIT_SEM"], wait_count=v["WAIT_COUNT"])

    # -- events -----------------------------------------------------------------------------------

    async def wait_notify(self, timeout=None, *, tile=None, kind=None):
        """The next NOTIFY (from ``tile`` and of ``kind`` if given; others stay queued).
        Raises :class:`HostTimeout` if none arrives within ``timeout``."""
        def match(n):
            return (tile is None or n.tile == tuple(tile)) and (kind is None or n.kind == kind)

        await self._pump(lambda: any(match(n) for n in self.notifies), timeout,
                         "NOTIFY" + (f" from tile {tuple(tile)}" if tile is not None else ""))
        for n in self.notifies:
            if match(n):
                self.notifies.remove(n)
                return n
        raise AssertionError("unreachable")  # pragma: no cover

    async def wait_signal(self, x, y, sem, count=1, timeout=None):
        """Wait until tile (x, y) has sent ``count`` SIGNALs for ``sem`` to the host, and
        consume them."""
        sigs = self.signals.setdefault((x, y), [0] * 16)
        await self._pump(lambda: sigs[sem] >= count, timeout,
                         f"SIGNAL {sem} from tile {(x, y)}")
        sigs[sem] -= count

    async def drain(self, cycles):
        """Receive and keep whatever arrives during ``cycles`` time units."""
        end = self.transport.now() + cycles
        while self.transport.now() < end:
            flits = await self.transport.receive(end - self.transport.now())
            if flits is not None:
                self._dispatch(Packet.from_flits(self.cfg, flits))
