"""The FIFOs of the network on chip, in one place.

Every buffer the NoC uses is built here, so a change of storage style (registers, LUT RAM, block
RAM) touches this file only:

* :class:`Fifo` -- the router's per-input buffer: first-word fall-through, one write and one read
  per cycle, full throughput at depth 2, and a ``w.ready`` that comes straight from a flip-flop so
  that a link's ready wire never carries logic from the receiving tile. With ``block_ram=True``
  its entries live in block RAM (wide buffers: an ECP5 LUT-RAM primitive holds 4 bits).
* :class:`CommitFifo` -- the ingress checker's buffer: written entries stay invisible to the
  reader until the writer *commits* them, and can be *rolled back* (discarded) before that. It
  keeps its storage in a memory with a synchronous read port, so it maps to block RAM.
"""

from amaranth.hdl import Module, Mux, Shape, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from . import _refuse

__all__ = ["Fifo", "CommitFifo", "unchecked_sync_read"]

#: FIFOs this deep or shallower keep their entries in flip-flops: an ECP5 LUT-RAM primitive
#: (DPR16X4: 16 entries x 4 bits) costs about as many logic sites as 8 flip-flop bits with
#: their read multiplexer, so a 2-entry FIFO wastes most of it (default tile on the ECP5-85F:
#: 433 -> 247 DPR16X4, +634 LUT4, 502 fewer logic sites after place and route).
FLIP_FLOP_DEPTH = 2


def unchecked_sync_read(m, memory, addr, *, name):
    """A synchronous read of ``memory`` at ``addr`` for a memory whose reads never need a word
    written in the same cycle (the memory carries the Yosys attribute ``no_rw_check``): the
    value at ``addr`` before this cycle's write, one cycle later.

    Built as an asynchronous port and a register rather than a synchronous port: Yosys applies
    ``no_rw_check`` (no collision logic: 2 x width flip-flops and a multiplexer otherwise) when it
    merges that register into the port, which happens whether the design reaches it as Verilog
    (``tilemesh synth``) or as RTLIL (board builds); a port already synchronous in RTLIL keeps the
    read-first rule and its emulation.
    """
    port = memory.read_port(domain="comb")
    data = Signal(port.data.shape(), name=name)
    m.d.comb += port.addr.eq(addr)
    m.d.sync += data.eq(port.data)
    return data


def _check_depth(component, kind, depth, lo):
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < lo:
        _refuse(component, f"{kind} depth must be an integer of at least {lo}, not {depth!r}")


def _succ(ptr, depth):
    """``ptr + 1`` modulo ``depth`` (any depth, not only powers of two)."""
    return Mux(ptr == depth - 1, 0, ptr + 1)


class Fifo(wiring.Component):
    """Synchronous first-word-fall-through FIFO.

    A word written in cycle ``t`` can be read in cycle ``t + 1`` (``t + 2`` with ``block_ram``).
    A read and a write may happen
    in the same cycle, also when the FIFO is full (the read frees the place the write takes in
    the next cycle, so ``w.ready`` stays low for that cycle: it is registered). With ``depth=2``
    and a reader that is always ready the FIFO passes one word per cycle.

    Parameters
    ----------
    shape : ShapeLike
        Shape of one entry (for example ``flit_layout(cfg)``).
    depth : int
        Number of entries, at least 1 (at least 2 with ``block_ram``).
    block_ram : bool
        Keep the entries in a memory with a synchronous, non-transparent read port, which
        synthesis maps to block RAM (``ram_style = "block"``): for wide FIFOs, where LUT RAM or
        flip-flops cost a logic site per bit or two and block RAM is left over. The port reads
        the next head one cycle ahead, so the FIFO still falls through, one cycle later: an
        entry becomes readable two cycles after its write, and one word per cycle passes from
        depth 3 on (depth 2 without).

    Members
    -------
    w : ``In(stream.Signature(shape))``
        Write side. ``w.ready`` is a flip-flop output ("not full"); it never depends on
        ``w.valid`` or ``r.ready`` in the same cycle.
    r : ``Out(stream.Signature(shape))``
        Read side. ``r.valid`` is high whenever the FIFO holds an entry (a flip-flop output,
        "not empty"); ``r.payload`` is the oldest entry.
    level : ``Out(range(depth + 1))``
        Number of entries held.

    Raises
    ------
    ValueError
        If ``depth`` is not an integer of at least 1.
    """

    def __init__(self, shape, depth, *, block_ram=False):
        _check_depth(self, "FIFO", depth, 2 if block_ram else 1)
        self._shape = shape
        self._depth = depth
        self._block_ram = bool(block_ram)
        Shape.cast(shape)
        super().__init__({
            "w": In(stream.Signature(shape)),
            "r": Out(stream.Signature(shape)),
            "level": Out(range(depth + 1)),
        })

    @property
    def depth(self):
        return self._depth

    @property
    def shape(self):
        return self._shape

    @property
    def block_ram(self):
        return self._block_ram

    def elaborate(self, platform):
        m = Module()
        depth = self._depth

        level = Signal(range(depth + 1), name="level_q")
        not_full = Signal(init=1, name="not_full")
        not_empty = Signal(name="not_empty")  # a flip-flop: valid starts the reader's logic

        do_write = Signal()
        do_read = Signal()
        m.d.comb += [
            self.w.ready.eq(not_full),
            self.r.valid.eq(not_empty),
            self.level.eq(level),
            do_write.eq(self.w.valid & self.w.ready),
            do_read.eq(self.r.valid & self.r.ready),
        ]
        # Entries the reader may see (``visible``) and the write that makes one visible
        # (``seen``). Without block RAM every entry held, from its write on; with it, the ones
        # written two cycles ago or earlier (``wrote``: a write in the last cycle, not yet seen).
        seen, visible = do_write, level
        if self._block_ram:
            wrote = Signal()
            m.d.sync += wrote.eq(do_write)
            seen, visible = wrote, Signal(range(depth + 1), name="visible")
            m.d.comb += visible.eq(level - wrote)
            # A read and a write of one address in the same cycle happen only when the FIFO
            # runs empty and the slot read is the one being written: that word is not visible
            # yet and is read again in the next cycle. So the read may return anything then
            # (Yosys ``no_rw_check``), and synthesis adds no collision logic (+2 x width FFs).
            m.submodules.storage = storage = memory.Memory(
                shape=self._shape, depth=depth, init=[],
                attrs={"ram_style": "block", "no_rw_check": 1})
            wport = storage.write_port()
            wp = Signal(range(depth), name="wp")
            rp = Signal(range(depth), name="rp")
            rp_next = Signal.like(rp)
            m.d.comb += [
                wport.addr.eq(wp),
                wport.data.eq(self.w.payload),
                wport.en.eq(do_write),
                # Read ahead: the port's output in the next cycle is the entry at the next head.
                # An entry visible then was written at least one cycle before this read.
                rp_next.eq(Mux(do_read, _succ(rp, depth), rp)),
                self.r.payload.eq(unchecked_sync_read(m, storage, rp_next, name="head")),
            ]
            with m.If(do_write):
                m.d.sync += wp.eq(_succ(wp, depth))
            m.d.sync += rp.eq(rp_next)
        elif depth == 1:
            # One register: a one-entry memory would have a zero-bit address (a [-1:0] range in
            # the Verilog).
            entry = Signal(self._shape, name="entry")
            with m.If(do_write):
                m.d.sync += entry.eq(self.w.payload)
            m.d.comb += self.r.payload.eq(entry)
        else:
            # LUT RAM (or flip-flops where a device has none, or where the FIFO is too shallow
            # for LUT RAM to pay) with an asynchronous read port: the head entry is visible in
            # the same cycle, which first-word fall-through needs.
            m.submodules.storage = storage = memory.Memory(
                shape=self._shape, depth=depth, init=[],
                attrs={"ram_style": "logic"} if depth <= FLIP_FLOP_DEPTH else None)
            wport = storage.write_port()
            rport = storage.read_port(domain="comb")
            wp = Signal(range(depth), name="wp")
            rp = Signal(range(depth), name="rp")
            m.d.comb += [
                wport.addr.eq(wp),
                wport.data.eq(self.w.payload),
                wport.en.eq(do_write),
                rport.addr.eq(rp),
                self.r.payload.eq(rport.data),
            ]
            with m.If(do_write):
                m.d.sync += wp.eq(_succ(wp, depth))
            with m.If(do_read):
                m.d.sync += rp.eq(_succ(rp, depth))

        # The read decision arrives late in the cycle (after the router's arbitration): both
        # outcomes are computed from the registers alone and it only selects between them.
        with m.If(do_write & ~do_read):
            m.d.sync += [level.eq(level + 1), not_full.eq(level != depth - 1)]
        with m.Elif(do_read & ~do_write):
            m.d.sync += [level.eq(level - 1), not_full.eq(1)]
        with m.If(seen & ~do_read):
            m.d.sync += not_empty.eq(1)
        with m.Elif(do_read & ~seen):
            m.d.sync += not_empty.eq(visible != 1)
        return m


class CommitFifo(wiring.Component):
    """FIFO whose written entries become readable only when the writer commits them.

    The writer streams entries into ``w`` (speculatively), then pulses ``commit`` to make every
    entry written so far -- including one written in the same cycle -- visible at ``r``, or
    ``rollback`` to discard every entry written since the last commit (a write in the same cycle
    as ``rollback`` is discarded too). Committed entries can no longer be withdrawn.

    Committed entries become readable one cycle after the commit. Storage is a memory with a
    synchronous read port (block RAM) followed by no extra register: the port reads the next
    head ahead of time and is transparent to the write port, so ``r`` still falls through.

    Parameters
    ----------
    shape : ShapeLike
        Shape of one entry.
    depth : int
        Number of entries, at least 2. Committed and speculative entries share it.

    Members
    -------
    w : ``In(stream.Signature(shape))``
        Write side; ``w.ready`` is low when all ``depth`` entries are in use.
    commit : ``In(1)``
        Make all entries written so far (and any written in this cycle) readable.
    rollback : ``In(1)``
        Discard all uncommitted entries (and any written in this cycle). Ignored with ``commit``.
    r : ``Out(stream.Signature(shape))``
        Read side: committed entries, oldest first.
    level : ``Out(range(depth + 1))``
        Entries in use (committed and speculative).

    Raises
    ------
    ValueError
        If ``depth`` is not an integer of at least 2.
    """

    def __init__(self, shape, depth):
        _check_depth(self, "commit FIFO", depth, 2)
        self._shape = shape
        self._depth = depth
        Shape.cast(shape)
        super().__init__({
            "w": In(stream.Signature(shape)),
            "commit": In(1),
            "rollback": In(1),
            "r": Out(stream.Signature(shape)),
            "level": Out(range(depth + 1)),
        })

    @property
    def depth(self):
        return self._depth

    def elaborate(self, platform):
        m = Module()
        depth = self._depth

        m.submodules.storage = storage = memory.Memory(shape=self._shape, depth=depth, init=[])
        wport = storage.write_port()
        # Transparent, so an entry written in the cycle before it becomes the head is read back
        # correctly (it can be committed in the same cycle it is written).
        rport = storage.read_port(transparent_for=(wport,))

        wp = Signal(range(depth), name="wp")      # next entry to write (speculative end)
        cp = Signal(range(depth), name="cp")      # end of the committed entries
        rp = Signal(range(depth), name="rp")      # head (next entry to read)
        used = Signal(range(depth + 1))           # entries between rp and wp
        spec = Signal(range(depth + 1))           # entries between cp and wp (uncommitted)
        avail = Signal(range(depth + 1))          # entries between rp and cp (readable)

        do_write = Signal()
        do_read = Signal()
        do_commit = Signal()
        do_rollback = Signal()
        m.d.comb += [
            self.w.ready.eq(used != depth),
            do_write.eq(self.w.valid & self.w.ready),
            self.r.valid.eq(avail != 0),
            do_read.eq(self.r.valid & self.r.ready),
            do_commit.eq(self.commit),
            do_rollback.eq(self.rollback & ~self.commit),
            self.level.eq(used),
        ]

        wp_next = Signal.like(wp)
        rp_next = Signal.like(rp)
        m.d.comb += [
            wp_next.eq(wp),
            rp_next.eq(rp),
            wport.addr.eq(wp),
            wport.data.eq(self.w.payload),
            wport.en.eq(do_write & ~do_rollback),
            # Read ahead: the port's output in the next cycle is the entry at the next head.
            rport.addr.eq(rp_next),
            self.r.payload.eq(rport.data),
        ]
        with m.If(do_write):
            m.d.comb += wp_next.eq(_succ(wp, depth))
        with m.If(do_read):
            m.d.comb += rp_next.eq(_succ(rp, depth))

        wrote = Signal(range(depth + 1))
        m.d.comb += wrote.eq(spec + do_write)
        with m.If(do_rollback):
            m.d.sync += [
                wp.eq(cp),
                spec.eq(0),
                used.eq(used - spec - do_read),
                avail.eq(avail - do_read),
            ]
        with m.Elif(do_commit):
            m.d.sync += [
                wp.eq(wp_next),
                cp.eq(wp_next),
                spec.eq(0),
                used.eq(used + do_write - do_read),
                avail.eq(avail + wrote - do_read),
            ]
        with m.Else():
            m.d.sync += [
                wp.eq(wp_next),
                spec.eq(wrote),
                used.eq(used + do_write - do_read),
                avail.eq(avail - do_read),
            ]
        m.d.sync += rp.eq(rp_next)
        return m

