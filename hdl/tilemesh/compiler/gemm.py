"""The tiling GEMM compiler: ``C[M, N] = A[M, K] @ B[K, N]`` on any mesh, as per-tile programs
plus the host's side of the run.

:func:`compile_gemm` splits C into one output block per tile (mesh row ``y`` owns a band of C
rows, mesh column ``x`` a band of C columns), cuts each tile's block into sub-blocks of
``bm x bn`` matrix-unit folds and K into ``nk`` chunks, lays out the tile SRAM and emits one
program per tile. A pieces (``bm`` folds x ``kc`` steps) stream along the mesh rows and B pieces
(``bn`` folds x ``kc`` steps) down the mesh columns, SUMMA style: after the first pieces
(written into every tile before START) the host feeds the west column (A) and the north row (B)
only, and every tile forwards the next pieces to its east / south neighbour while its matrix unit
works on the current ones. Every operand slot is double buffered and every hand-over is a
counting semaphore (``wait`` / ``signal`` / ``dma.* signal=``); nothing relies on timing.
docs/gemm.md describes the schedule, the SRAM plan and the measured utilisation;
``python -m tilemesh.compiler.gemm --preset default --sizes 64 256`` measures it on the model.

::

    plan = compile_gemm(cfg, M, K, N, epilogue=Epilogue(relu=True))
    run = await plan.run(HostDriver(cfg, transport), A, B)      # any HostTransport
    assert (run.C == plan.reference(A, B)).all()

CONTRACT CHANGES (additive, relative to /work/briefs/s2_gemm_api.md):

* ``GemmPlan.run`` takes an optional ``timeout`` (host time units per wait; default from the
  plan's cycle estimate) and raises :class:`GemmError` (a ``RuntimeError``) on a timeout or an
  ERROR notify; the message lists every tile's state, pc, error and what it waits for.
* ``GemmPlan`` also has ``blocking`` (a :class:`Blocking`), ``layout`` (SRAM addresses, dict),
  ``scheme`` (``"stream"`` or ``"kchunk"``), ``steps`` and ``estimated_cycles``; ``stats`` also
  holds ``estimated_cycles``, ``steps``, ``host_program_words``, ``blocking``, ``scheme`` and
  ``sram_words_used``.
* ``GemmRun`` also has ``useful_macs``, ``pes``, ``cycles`` (``t_done - t_start``) and
  ``notify_times`` (per tile).
* ``GemmPlan.host_transactions()`` yields the host transaction list (:class:`HostOp`), which
  ``run`` executes; ``measure(cfg, M, K, N)`` runs one GEMM on the model;
  ``python -m tilemesh.compiler.gemm`` prints a utilisation table.
"""

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ..config import ConfigError
from ..layouts import (
    COUNT_BITS,
    FOLD_BITS,
    SIMD_SCALE_BITS,
    ElemFormat,
    NotifyKind,
    SimdOp,
    matmul_operand_words,
    simd_shift_bits,
    simd_vector_words,
)
from . import assembler
from .assembler import AR1, AR2, AR3, Program

__all__ = ["Requant", "Epilogue", "Blocking", "GemmPlan", "GemmRun", "GemmError", "HostOp",
           "compile_gemm", "measure", "DONE_CODE"]

#: ``notify code`` a tile sends when its part of the GEMM is done.
DONE_CODE = 0x6E33

# Tile semaphores (the protocol of docs/gemm.md).
SEM_A_FULL = 0      # A pieces that have landed in this tile (west neighbour or host)
SEM_B_FULL = 1      # B pieces that have landed (north neighbour or host)
SEM_A_FREE = 2      # free A slots at the east neighbour (credits it returns)
SEM_B_FREE = 3      # free B slots at the south neighbour
SEM_C_FREE = 4      # free C slots here (a C block's write to the host has left)
# Semaphores of SIGNALs the west column / north row send to the host: an A / B slot is free.
HOST_SEM_A = 0
HOST_SEM_B = 1

_MAX_COUNT = (1 << COUNT_BITS) - 1
_MAX_FOLDS = (1 << FOLD_BITS) - 1
_MAX_LOOP = (1 << 16) - 1
_SLOTS = 2          # double buffering


class GemmError(RuntimeError):
    """A GEMM run failed on the mesh (timeout or ERROR notify); the message holds every tile's
    status."""


@dataclass(frozen=True)
class Requant:
    """SIMD REQUANT parameters: ``sat(round_shift(x * scale, shift) + zero_point)`` to
    ``data_bits`` (docs/simd.md).

    Parameters
    ----------
    scale : int
        Signed 16-bit multiplier.
    shift : int
        Right shift, 0..127 (shifts past the unit's largest give the same result).
    zero_point : int
        Signed ``acc_bits`` offset added after the shift.
    """
    scale: int
    shift: int
    zero_point: int = 0

    def __post_init__(self):
        lim = 1 << (SIMD_SCALE_BITS - 1)
        for name, lo, hi in (("scale", -lim, lim - 1), ("shift", 0, 127),
                             ("zero_point", -(1 << 31), (1 << 31) - 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ConfigError(f"Requant.{name} must be an integer in {lo}..{hi}, not {v!r}")


@dataclass(frozen=True)
class Epilogue:
    """What the SIMD unit does to each C block before it leaves the tile, in this order:
    ``bias`` (add a per-column ``acc_bits`` vector), ``relu`` (``max(x, 0)`` on the
    accumulators), ``requant`` (to ``data_bits`` elements). ReLU before REQUANT is the usual
    fused activation: for ``scale >= 0`` it equals clamping the int8 result at the zero point.

    Parameters
    ----------
    bias : bool
    requant : Requant or None
    relu : bool
    """
    bias: bool = False
    requant: Requant | None = None
    relu: bool = False

    def __post_init__(self):
        if self.requant is not None and not isinstance(self.requant, Requant):
            raise ConfigError(f"Epilogue.requant must be a Requant or None, not "
                              f"{self.requant!r}")

    @property
    def active(self):
        """True when the SIMD unit has anything to do."""
        return self.bias or self.relu or self.requant is not None


@dataclass(frozen=True)
class Blocking:
    """How one tile's output block is cut.

    Members
    -------
    fm, fn : int
        Folds (``pe_rows`` C rows / ``pe_cols`` C columns) of each tile's block, padded.
    bm, bn : int
        Folds of one C sub-block (one MATMUL's ``m_folds`` x ``n_folds``).
    ni, nj : int
        Sub-blocks along M and N (``fm = ni * bm``, ``fn = nj * bn``).
    kc, nk : int
        K steps per chunk and chunks (K padded to ``nk * kc``).
    """
    fm: int
    fn: int
    bm: int
    bn: int
    ni: int
    nj: int
    kc: int
    nk: int

    @property
    def blocks(self):
        return self.ni * self.nj

    @property
    def steps(self):
        return self.ni * self.nj * self.nk


@dataclass
class GemmRun:
    """One GEMM run through a host driver.

    Members
    -------
    C : numpy.ndarray
        The result, shape (M, N) (int64; ``data_bits`` values after a REQUANT epilogue).
    t_begin, t_start, t_done, t_end : int
        Host clock (``transport.now()``, mesh cycles for the model and the RTL) at the first
        packet, at the first START, when the last completion NOTIFY arrived, and when every
        result word was in (results stream out during the run; they are all in once the last
        NOTIFY is).
    tiles : dict
        Per tile (x, y): ``cycles``, ``stall_cycles``, ``dma_busy``, ``matmul_busy``,
        ``simd_busy``, ``matmul_steps``, ``tx_words``, ``rx_words`` (the tile's CSRs).
    host_words_in, host_words_out : int
        Payload words through the host port each way, everything counted: operands, programs,
        semaphore presets, CONTROL and READ_REQ words in; results, slot tokens, NOTIFYs and
        counter reads out (``plan.stats`` has the operand and result part alone).
    useful_macs, pes : int
        ``M * K * N`` and the mesh's processing elements.
    notify_times : dict
        Per tile, the host clock when its completion NOTIFY arrived.
    timeline : list or None
        With ``tilemesh gemm --timeline``: ``(cycle, (x, y), unit)`` each time a tile's DMA
        engine, matrix unit or SIMD engine took a command from its queue (host clock), in
        order; the model and the RTL record the same events, so the two can be compared
        command by command.
    """
    C: np.ndarray
    t_begin: int
    t_start: int
    t_done: int
    t_end: int
    tiles: dict
    host_words_in: int
    host_words_out: int
    useful_macs: int
    pes: int
    notify_times: dict = field(default_factory=dict)
    timeline: list = None

    @property
    def cycles(self):
        """``t_done - t_start``: on-mesh cycles."""
        return self.t_done - self.t_start

    @property
    def on_mesh_utilisation(self):
        """``useful_macs / (pes * (t_done - t_start))``."""
        return self.useful_macs / (self.pes * max(1, self.t_done - self.t_start))

    @property
    def end_to_end_utilisation(self):
        """``useful_macs / (pes * (t_end - t_begin))``."""
        return self.useful_macs / (self.pes * max(1, self.t_end - self.t_begin))


@dataclass(frozen=True)
class HostOp:
    """One host transaction of a GEMM run (:meth:`GemmPlan.host_transactions`).

    Members
    -------
    kind : str
        ``reset``, ``program`` (load the tile's program), ``preset`` (write semaphore ``sem``
        = ``value``), ``write`` (``words`` SRAM words at ``addr``: ``what`` is ``A`` / ``B`` /
        ``BROW`` (pieces of ``step``), ``ZERO`` or ``BIAS``), ``signal`` (semaphore ``sem``
        += 1), ``start``, ``credit`` (wait for the tile's slot token, host semaphore ``sem``),
        ``step`` (progress: ``step`` steps fed), ``done`` (wait for every completion NOTIFY).
    tile : tuple or None
    """
    kind: str
    tile: tuple | None = None
    sem: int | None = None
    value: int | None = None
    addr: int | None = None
    words: int | None = None
    what: str | None = None
    step: int | None = None


# -- planning ---------------------------------------------------------------------------------

def _cdiv(a, b):
    return -(-a // b)


def _candidates(n):
    """Sub-block sizes worth trying for ``n`` folds: one per distinct sub-block count."""
    return sorted({_cdiv(n, c) for c in range(1, n + 1)} & set(range(1, min(n, _MAX_FOLDS) + 1)))


class _Geometry:
    """Sizes (in SRAM words) of the pieces of one blocking."""

    def __init__(self, cfg, blk, epi):
        t = cfg.tile
        w = matmul_operand_words(cfg)
        self.aw, self.bw, self.cw = w["a"], w["b"], w["c"]
        self.dw = simd_vector_words(cfg, ElemFormat.DATA)
        self.rows = blk.bm * t.pe_rows                        # C rows of a sub-block
        self.sa = blk.bm * blk.kc * self.aw                   # A piece
        self.sb = blk.bn * blk.kc * self.bw                   # B piece
        self.c_stride = blk.bn * self.cw
        self.sc = self.rows * self.c_stride                   # C sub-block (acc)
        self.vectors = self.rows * blk.bn                     # SIMD vectors of a C sub-block
        self.requant = epi.requant is not None
        self.sq = self.vectors * self.dw if self.requant else 0
        self.out_row = blk.bn * (self.dw if self.requant else self.cw)
        self.sout = self.rows * self.out_row                  # words of a sub-block to the host
        self.bias_row = blk.bn * self.cw if epi.bias else 0   # bias of one sub-block's columns
        self.zero = max(blk.bm * self.aw, blk.bn * self.bw)   # zeros for the clearing MATMUL


def _place(regions, start, end, depth):
    """Pack ``regions`` (name, words; the first is A, the second B) into [start, end): A
    first, then the other regions, and B at the highest bank boundary that still fits, so the
    MATMUL's A and B reads use different banks where the half has room (else B follows the
    others). Returns {name: address} or None."""
    total = sum(n for _, n in regions)
    if start + total > end:
        return None
    (a_name, sa), (b_name, sb) = regions[:2]
    out, cur = {a_name: start}, start + sa
    for name, n in regions[2:]:
        out[name] = cur
        cur += n
    aligned = (end - sb) // depth * depth
    if aligned >= cur and aligned // depth != start // depth:
        out[b_name] = aligned
    else:
        out[b_name] = cur
    return out


def _layout(cfg, blk, geo, epi, scheme):
    """SRAM plan: slot 0 of every double-buffered region in the low half, slot 1 at ``+d``
    (``d`` = half the SRAM) in the high half; single regions in what is left. None if it does
    not fit."""
    t = cfg.tile
    words = t.sram_words
    d = words // 2
    paired = [("A", geo.sa), ("B", geo.sb)]
    singles = []
    if scheme == "stream":
        paired += [("C", geo.sc)]
        if geo.bias_row:
            paired.append(("BROW", geo.bias_row))
        if geo.sq:
            paired.append(("Q", geo.sq))
    else:
        singles += [("C", geo.sc), ("ZERO", geo.zero)]
        if geo.sq:
            singles.append(("Q", geo.sq))
        if geo.bias_row:
            singles.append(("BIAS", blk.nj * geo.bias_row))
    lay = _place(paired, 0, d, t.sram_depth)
    if lay is None:
        return None
    # free gaps of each half (the same in both): first fit for the single regions
    taken = sorted((lay[n], lay[n] + s) for n, s in paired)
    gaps, cur = [], 0
    for lo, hi in taken:
        if lo > cur:
            gaps.append([cur, lo])
        cur = max(cur, hi)
    gaps.append([cur, d])
    gaps += [[lo + d, hi + d] for lo, hi in gaps] + ([[2 * d, words]] if words > 2 * d else [])
    for name, n in singles:
        for gap in gaps:
            if gap[0] + n <= gap[1]:
                lay[name] = gap[0]
                gap[0] += n
                break
        else:
            return None
    used = sum(s for _, s in paired)
    lay["d"] = d
    lay["used"] = 2 * used + sum(n for _, n in singles)
    return lay


def _estimate(cfg, blk, geo, epi, scheme, lay):
    """Rough cycle estimate of the run (START to last NOTIFY), for choosing a blocking: per
    step the slowest of the matrix unit (plus its fixed drain and the step's control), the
    tile's DMA (forwards, C write), the host port in and out; plus the ramp of the second
    piece down the forwarding chain and the last C write."""
    t = cfg.tile
    pkt = 1 + 1 / cfg.noc.max_packet_flits
    same_bank = lay["A"] // t.sram_depth == lay["B"] // t.sram_depth
    reads = (geo.aw + geo.bw) if same_bank else max(geo.aw, geo.bw)
    fold = max(blk.kc * reads, t.pe_rows, t.pe_rows * geo.cw)
    compute = blk.bm * blk.bn * fold
    fixed = 3 + t.pe_rows + t.pe_cols + t.pe_rows * geo.cw + 40
    epi_cycles = 0
    if epi.bias:
        epi_cycles += geo.rows * (12 + blk.bn * geo.cw)
    if epi.relu:
        epi_cycles += 12 + geo.vectors * geo.cw
    if epi.requant:
        epi_cycles += 12 + geo.vectors * geo.cw
    fwd = (geo.sa + geo.sb + geo.bias_row) * pkt + 20
    host_in = (cfg.rows * geo.sa + cfg.cols * (geo.sb + geo.bias_row)) * pkt
    out = geo.sout * pkt + 20
    chain = max((cfg.cols - 1) * geo.sa, (cfg.rows - 1) * (geo.sb + geo.bias_row)) * pkt
    if scheme == "stream":
        step = max(compute + fixed + epi_cycles, fwd + out, host_in, cfg.tiles * out)
        extra = 0
    else:
        step = max(compute + fixed, fwd, host_in, cfg.tiles * out / blk.nk)
        extra = blk.blocks * (blk.bm * blk.bn * max(t.pe_rows, t.pe_rows * geo.cw)
                              + epi_cycles + out)
    if blk.steps == 1:      # nothing is forwarded
        return int(compute + fixed + epi_cycles + cfg.tiles * out + 60)
    ramp = max(0, chain - compute) + chain / blk.steps
    return int(blk.steps * step + extra + ramp + out + 60)


def _choose(cfg, M, K, N, epi):
    t = cfg.tile
    fm = _cdiv(_cdiv(M, t.pe_rows), cfg.rows)
    fn = _cdiv(_cdiv(N, t.pe_cols), cfg.cols)
    w = matmul_operand_words(cfg)
    kc_cap = min(_MAX_COUNT, _MAX_COUNT // w["a"], _MAX_COUNT // w["b"])
    best, why = None, None
    for bm in _candidates(fm):
        for bn in _candidates(fn):
            ni, nj = _cdiv(fm, bm), _cdiv(fn, bn)
            geo0 = _Geometry(cfg, Blocking(ni * bm, nj * bn, bm, bn, ni, nj, 1, 1), epi)
            if geo0.rows > _MAX_COUNT or geo0.out_row > _MAX_COUNT or geo0.c_stride > _MAX_COUNT:
                why = why or "a C sub-block row or column count passes the DMA's 4095"
                continue
            if (epi.relu or epi.requant) and geo0.vectors > _MAX_COUNT:
                why = why or "an epilogue SIMD instruction would pass 4095 vectors"
                continue
            for nk in _nk_options(K, kc_cap):
                kc = _cdiv(K, nk)
                blk = Blocking(ni * bm, nj * bn, bm, bn, ni, nj, kc, nk)
                scheme = "stream" if nk == 1 else "kchunk"
                if scheme == "stream" and blk.steps % 2 and blk.steps != 1:
                    continue    # the two-slot ring needs an even step count (or one step)
                loops = (blk.steps // 2,) if scheme == "stream" else (ni, nj, nk // 2)
                if max(loops) > _MAX_LOOP:
                    continue
                geo = _Geometry(cfg, blk, epi)
                lay = _layout(cfg, blk, geo, epi, scheme)
                if lay is None:
                    why = why or "the operands of even one fold do not fit the SRAM"
                    continue
                est = _estimate(cfg, blk, geo, epi, scheme, lay)
                key = (est, blk.steps)
                if best is None or key < best[0]:
                    best = (key, blk, geo, lay, scheme)
                break       # more chunks only cost more
    if best is None:
        raise ConfigError(
            f"cannot compile a {M}x{K}x{N} GEMM for this mesh: {why or 'no blocking fits'} "
            f"(TileConfig.sram_banks x sram_depth = {t.sram_words} words, "
            f"pe_rows={t.pe_rows}, pe_cols={t.pe_cols}, data_bits={t.data_bits}, "
            f"acc_bits={t.acc_bits}, NocConfig.flit_bits={cfg.noc.flit_bits})")
    return best[1:]


def _nk_options(K, kc_cap):
    """K chunk counts to try, fewest first: 1 if K fits one MATMUL, else even counts (the
    chunk loop runs in pairs of slots)."""
    opts = [1] if K <= kc_cap else []
    nk = max(2, _cdiv(K, kc_cap))
    nk += nk % 2
    while nk <= min(2 * K, 2 * _MAX_LOOP):
        opts.append(nk)
        nk = max(nk + 2, int(nk * 1.25) // 2 * 2)     # ~25 % steps: few tries, little waste
    return opts


# -- code generation --------------------------------------------------------------------------

class _Emitter:
    """Builds one tile's program."""

    def __init__(self, plan, x, y):
        self.plan, self.x, self.y = plan, x, y
        self.cfg, self.blk, self.geo, self.lay = plan.cfg, plan.blocking, plan.geo, plan.layout
        self.epi = plan._epi
        self.p = Program(self.cfg)
        self.east = x + 1 < self.cfg.cols
        self.south = y + 1 < self.cfg.rows

    def slot(self, name, reg=AR1):
        """Address of a slot of a double-buffered region through ``reg`` (0 or ``d``)."""
        return reg + self.lay[name]

    def arrive_and_forward(self, nxt):
        """Wait until the next A and B pieces have landed in the slot ``nxt`` (an address
        register, or None for slot 0) and pass them on to the east / south neighbour once it
        has a free slot. Reads the slot the matrix unit is *not* using (another bank)."""
        p, g, blk = self.p, self.geo, self.blk

        def at(name):
            return self.lay[name] if nxt is None else nxt + self.lay[name]

        p.wait(sem=SEM_A_FULL)
        if self.east:
            p.wait(sem=SEM_A_FREE)
            p.dma_write(tile=(self.x + 1, self.y), local=at("A"), remote=at("A"),
                        rows=blk.bm, cols=blk.kc * g.aw, signal=SEM_A_FULL)
        p.wait(sem=SEM_B_FULL)
        if self.south:
            p.wait(sem=SEM_B_FREE)
            brow = "BROW" in self.lay
            p.dma_write(tile=(self.x, self.y + 1), local=at("B"), remote=at("B"),
                        rows=blk.bn, cols=blk.kc * g.bw, signal=None if brow else SEM_B_FULL)
            if brow:
                p.dma_write(tile=(self.x, self.y + 1), local=at("BROW"), remote=at("BROW"),
                            rows=1, cols=g.bias_row, signal=SEM_B_FULL)

    def arrive(self):
        """Wait for the first pieces (the host writes piece 0 into every tile's slot 0, so
        nothing is forwarded before the first MATMUL)."""
        self.p.wait(sem=SEM_A_FULL)
        self.p.wait(sem=SEM_B_FULL)

    def step(self, c_addr, acc, nxt):
        """One K step on the current slot (ar1): MATMUL, meanwhile take in and forward the
        next pieces (slot ``nxt``; None: a single-step program, nothing follows), then wait
        for the matrix unit."""
        p, g, blk = self.p, self.geo, self.blk
        if self.plan.scheme == "stream":
            p.wait(sem=SEM_C_FREE)
        p.matmul(a=self.slot("A"), b=self.slot("B"), c=c_addr, c_stride=g.c_stride,
                 k=blk.kc, m_folds=blk.bm, n_folds=blk.bn, acc=acc)
        if nxt is not None:
            self.arrive_and_forward(nxt)
        p.fence("matmul")

    def release(self):
        """Hand this tile's A and B slots back to whoever fills them (after the forwards: the
        DMA queue is in order)."""
        p = self.p
        for host_fed, sem_tile, sem, host_sem in (
                (self.x == 0, (self.x - 1, self.y), SEM_A_FREE, HOST_SEM_A),
                (self.y == 0, (self.x, self.y - 1), SEM_B_FREE, HOST_SEM_B)):
            if host_fed:
                # a one-word write to the host carries the SIGNAL (a tile cannot signal the
                # host otherwise); the host ignores the word (offset TOKEN)
                p.dma_write(host=True, local=0, remote=self.plan.token_offset, rows=1, cols=1,
                            signal=host_sem)
            else:
                p.signal(tile=sem_tile, sem=sem)

    def epilogue(self, c_base, c_reg_base, bias_y):
        """SIMD on the C sub-block at ``c_base`` (an address); ``c_reg_base`` is the same
        block through ar2 (for the per-row bias loop), ``bias_y`` the bias row's address."""
        p, g, epi, blk = self.p, self.geo, self.epi, self.blk
        if epi.bias:
            with p.loop(g.rows):
                p.simd(SimdOp.ADD, x=c_reg_base, y=bias_y, d=c_reg_base, count=blk.bn)
                p.ar_add(reg=2, value=g.c_stride)
            p.ar_add(reg=2, value=-g.rows * g.c_stride)
        if epi.relu:
            p.simd(SimdOp.RELU, x=c_base, d=c_base, count=g.vectors)
        if epi.requant:
            q = self.out_base(c_base)
            p.simd(SimdOp.REQUANT, x=c_base, d=q, count=g.vectors, dfmt="data",
                   shift=epi.requant.shift)
        if epi.active:
            p.fence("simd")

    def out_base(self, c_base):
        if not self.epi.requant:
            return c_base
        if self.plan.scheme == "stream":
            return AR1 + self.lay["Q"]
        return self.lay["Q"]

    def write_out(self, c_base):
        g = self.geo
        self.p.dma_write(host=True, local=self.out_base(c_base), remote=0, rows=g.rows,
                         cols=g.out_row)
        self.p.signal(sem=SEM_C_FREE)

    def build(self):
        p, epi = self.p, self.epi
        if epi.requant:
            p.simd_cfg(scale=epi.requant.scale, zero_point=epi.requant.zero_point)
        if self.plan.scheme == "stream":
            self._stream()
        else:
            self._kchunk()
        p.notify(code=DONE_CODE, value=self.x | self.y << 8)
        p.halt()
        return p

    def _stream(self):
        """nk == 1: every step is a whole C sub-block; A, B and C slots all alternate with
        the step: ar1 = 0, d, 0, ... is the current slot, ar3 = d - ar1 the next one, and ar2
        follows ar1 for the bias loop."""
        p, blk, lay = self.p, self.blk, self.lay
        d = lay["d"]

        def body(nxt=AR3):
            c = AR1 + lay["C"]
            self.step(c, acc=False, nxt=nxt)
            self.epilogue(c, AR2 + lay["C"], AR1 + lay.get("BROW", 0))
            self.release()
            self.write_out(c)

        self.arrive()                         # piece 0: the host wrote it into every tile
        if blk.steps == 1:
            body(nxt=None)                    # one piece only: no end marker either
            return
        p.ar_set(reg=3, value=d)
        with p.loop(blk.steps // 2):
            with p.loop(2):
                body()
                p.ar_add(reg=1, value=d)
                p.ar_add(reg=3, value=-d)
                if self.epi.bias:
                    p.ar_add(reg=2, value=d)
            p.ar_set(reg=1, value=0)
            p.ar_set(reg=3, value=d)
            if self.epi.bias:
                p.ar_set(reg=2, value=0)

    def _kchunk(self):
        """nk >= 2 (even): C accumulates over the chunks in one C buffer (``acc``), cleared
        first by a MATMUL of zeros; A and B slots alternate per step (ar1 current, ar2 next;
        ar2 is the row pointer of the bias loop in the epilogue, ar3 the bias offset)."""
        p, blk, lay, g = self.p, self.blk, self.lay, self.geo
        c, d = lay["C"], lay["d"]
        self.arrive()                         # piece 0: the host wrote it into every tile
        with p.loop(blk.ni):
            if self.epi.bias:
                p.ar_set(reg=3, value=0)
            with p.loop(blk.nj):
                p.wait(sem=SEM_C_FREE)
                p.matmul(a=lay["ZERO"], b=lay["ZERO"], c=c, c_stride=g.c_stride, k=1,
                         m_folds=blk.bm, n_folds=blk.bn)
                p.ar_set(reg=2, value=d)
                with p.loop(blk.nk // 2):
                    with p.loop(2):
                        self.step(c, acc=True, nxt=AR2)
                        self.release()
                        p.ar_add(reg=1, value=d)
                        p.ar_add(reg=2, value=-d)
                    p.ar_set(reg=1, value=0)
                    p.ar_set(reg=2, value=d)
                if self.epi.bias:
                    p.ar_set(reg=2, value=0)
                self.epilogue(c, AR2 + c, AR3 + lay.get("BIAS", 0))
                self.write_out(c)
                if self.epi.bias:
                    p.ar_add(reg=3, value=g.bias_row)


# -- the plan -----------------------------------------------------------------------------------

class GemmPlan:
    """Everything needed to run one GEMM shape on one mesh configuration.

    Built by :func:`compile_gemm`; holds no operand data, so one plan serves many runs.

    Members
    -------
    cfg : MeshConfig
    M, K, N : int
    epilogue : Epilogue or None
    blocking : Blocking
        How each tile's block is cut (identical for every tile).
    scheme : str
        ``"stream"`` (K in one chunk: A, B and C all double buffered) or ``"kchunk"`` (K in
        ``nk`` chunks accumulated in one C buffer).
    layout : dict
        SRAM word addresses of the regions (slot 0; slot 1 is at ``+ layout["d"]``).
    programs : dict
        ``(x, y) -> Program`` (use ``.words()`` / ``.text()``).
    steps : int
        Steps per tile (each one MATMUL on one A piece and one B piece).
    estimated_cycles : int
        The planner's estimate of START-to-done cycles (used for default timeouts).
    stats : dict
        ``useful_macs``, ``padded_macs``, ``host_words_in`` (operand and setup words the host
        sends, programs excluded), ``host_program_words``, ``host_words_out`` (result words and
        slot tokens), ``network_words`` (tile-to-tile payload words),
        ``instructions`` (per tile), ``steps``, ``estimated_cycles``, ``sram_words_used``.
    """

    def __init__(self, cfg, M, K, N, epilogue, blocking, geo, layout, scheme):
        self.cfg, self.M, self.K, self.N = cfg, M, K, N
        self.epilogue = epilogue
        self.blocking, self.geo, self.layout, self.scheme = blocking, geo, layout, scheme
        self.token_offset = cfg.tile.sram_words - 1
        self.steps = blocking.steps
        self.programs = {}
        for y in range(cfg.rows):
            for x in range(cfg.cols):
                prog = _Emitter(self, x, y).build()
                if len(prog) > cfg.tile.imem_depth:
                    raise ConfigError(
                        f"TileConfig.imem_depth={cfg.tile.imem_depth} is too small for the "
                        f"GEMM program of tile ({x},{y}): it needs {len(prog)} instructions")
                try:
                    prog.validate()
                except assembler.AssemblerError as e:   # pragma: no cover - a compiler bug
                    raise ConfigError(f"GEMM program of tile ({x},{y}) is invalid: {e}") from e
                self.programs[(x, y)] = prog
        self.estimated_cycles = _estimate(cfg, blocking, geo, self._epi, scheme, layout)
        self.stats = self._stats()

    @property
    def _epi(self):
        return self.epilogue if self.epilogue is not None else Epilogue()

    # -- shapes ---------------------------------------------------------------------------------

    @property
    def padded_shape(self):
        """(M, K, N) as the mesh computes them (zero padded)."""
        t, b = self.cfg.tile, self.blocking
        return (self.cfg.rows * b.fm * t.pe_rows, b.nk * b.kc, self.cfg.cols * b.fn * t.pe_cols)

    def _step_index(self, s):
        """(i, j, kk) of step ``s``: sub-block row, sub-block column, K chunk."""
        b = self.blocking
        i, rem = divmod(s, b.nj * b.nk)
        j, kk = divmod(rem, b.nk)
        return i, j, kk

    def _stats(self):
        cfg, b, g = self.cfg, self.blocking, self.geo
        Mp, Kp, Np = self.padded_shape
        brow = g.bias_row if self.scheme == "stream" else 0
        # piece 0 goes to every tile, the others to the west column / north row
        a_edge = (cfg.rows * (b.steps - 1) + cfg.tiles) * g.sa
        b_edge = (cfg.cols * (b.steps - 1) + cfg.tiles) * (g.sb + brow)
        # semaphore presets: C_FREE everywhere, A_FREE / B_FREE where there is a neighbour
        presets = cfg.tiles + (cfg.cols - 1) * cfg.rows + (cfg.rows - 1) * cfg.cols
        setup = presets * _cdiv(16, cfg.word_bits) + cfg.tiles * (
            g.zero if self.scheme == "kchunk" else 0)
        if self.scheme == "kchunk" and g.bias_row:
            setup += cfg.tiles * b.nj * g.bias_row
        # every tile forwards pieces 1 .. steps (the last is the end marker; none if 1 step)
        nfwd = b.steps if b.steps > 1 else 0
        fwd = ((cfg.cols - 1) * cfg.rows * nfwd * g.sa
               + (cfg.rows - 1) * cfg.cols * nfwd * (g.sb + brow))
        pieces = (cfg.rows + cfg.cols) * b.steps
        tokens = pieces
        out = cfg.tiles * b.blocks * g.sout
        return {
            "useful_macs": self.M * self.K * self.N,
            "padded_macs": Mp * Kp * Np,
            "host_words_in": a_edge + b_edge + setup,
            "host_program_words": sum(len(p) for p in self.programs.values())
            * _cdiv(128, cfg.word_bits),
            "host_words_out": out + tokens,
            "network_words": fwd,
            "instructions": {c: len(p) for c, p in self.programs.items()},
            "steps": b.steps,
            "blocking": dataclasses.asdict(b),
            "scheme": self.scheme,
            "estimated_cycles": self.estimated_cycles,
            "sram_words_used": self.layout["used"],
        }

    # -- operands -------------------------------------------------------------------------------

    def _check(self, A, B, bias):
        t = self.cfg.tile
        A = np.asarray(A)
        B = np.asarray(B)
        if A.shape != (self.M, self.K) or B.shape != (self.K, self.N):
            raise ValueError(f"the plan is for A {self.M}x{self.K} and B {self.K}x{self.N}, "
                             f"not A {A.shape} and B {B.shape}")
        lo, hi = -(1 << (t.data_bits - 1)), (1 << (t.data_bits - 1)) - 1
        for name, m in (("A", A), ("B", B)):
            if not np.issubdtype(m.dtype, np.integer):
                raise ValueError(f"{name} must hold integers, not {m.dtype}")
            if m.size and (m.min() < lo or m.max() > hi):
                raise ValueError(f"{name} elements must be signed {t.data_bits}-bit "
                                 f"({lo}..{hi}); found {m.min()}..{m.max()}")
        A, B = A.astype(np.int64), B.astype(np.int64)
        if self._epi.bias:
            if bias is None:
                raise ValueError("the plan's epilogue adds a bias: give bias (N,)")
            bias = np.asarray(bias)
            if bias.shape != (self.N,) or not np.issubdtype(bias.dtype, np.integer):
                raise ValueError(f"bias must be {self.N} integers, not {bias.shape} "
                                 f"{bias.dtype}")
            blo, bhi = -(1 << (t.acc_bits - 1)), (1 << (t.acc_bits - 1)) - 1
            if bias.size and (bias.min() < blo or bias.max() > bhi):
                raise ValueError(f"bias elements must be signed {t.acc_bits}-bit")
            bias = bias.astype(np.int64)
        elif bias is not None:
            raise ValueError("bias given but the plan's epilogue has no bias "
                             "(compile with Epilogue(bias=True))")
        return A, B, bias

    def reference(self, A, B, bias=None):
        """Bit-exact expected C: ``A @ B`` wrapped to ``acc_bits``, then the epilogue exactly as
        the SIMD unit computes it (:func:`tilemesh.model.reference.simd`)."""
        from ..model import reference as ref

        t = self.cfg.tile
        A, B, bias = self._check(A, B, bias)
        C = ref.gemm(A, B, t.acc_bits)
        epi = self._epi
        kw = dict(acc_bits=t.acc_bits, out_bits=t.data_bits)
        if epi.bias:
            C, _ = ref.simd(SimdOp.ADD, C, np.broadcast_to(bias, C.shape), **kw)
        if epi.relu:
            C, _ = ref.simd(SimdOp.RELU, C, **kw)
        if epi.requant:
            rq = epi.requant
            shift = min(rq.shift, (1 << simd_shift_bits(t.acc_bits, SIMD_SCALE_BITS)) - 1)
            zp = int(ref.wrap(rq.zero_point, t.acc_bits))
            C, _ = ref.simd(SimdOp.REQUANT, C, shift=shift, scale=rq.scale, zero_point=zp,
                            **kw)
        return np.asarray(C, dtype=np.int64).reshape(self.M, self.N)

    def _padded(self, A, B, bias):
        Mp, Kp, Np = self.padded_shape
        Ap = np.zeros((Mp, Kp), dtype=np.int64)
        Ap[:self.M, :self.K] = A
        Bp = np.zeros((Kp, Np), dtype=np.int64)
        Bp[:self.K, :self.N] = B
        bp = np.zeros(Np, dtype=np.int64)
        if bias is not None:
            bp[:self.N] = bias
        return Ap, Bp, bp

    def _a_piece(self, Ap, y, s):
        from ..model.machine import pack_words

        t, b = self.cfg.tile, self.blocking
        i, _, kk = self._step_index(s)
        r0 = (y * b.fm + i * b.bm) * t.pe_rows
        blk = Ap[r0:r0 + b.bm * t.pe_rows, kk * b.kc:(kk + 1) * b.kc]
        cols = blk.reshape(b.bm, t.pe_rows, b.kc).transpose(0, 2, 1)
        return pack_words(cols, t.data_bits, self.cfg.word_bits).ravel()

    def _b_piece(self, Bp, x, s):
        from ..model.machine import pack_words

        t, b = self.cfg.tile, self.blocking
        _, j, kk = self._step_index(s)
        c0 = (x * b.fn + j * b.bn) * t.pe_cols
        blk = Bp[kk * b.kc:(kk + 1) * b.kc, c0:c0 + b.bn * t.pe_cols]
        rows = blk.reshape(b.kc, b.bn, t.pe_cols).transpose(1, 0, 2)
        return pack_words(rows, t.data_bits, self.cfg.word_bits).ravel()

    def _bias_words(self, bp, x, j0, nfolds):
        from ..model.machine import pack_words

        t, b = self.cfg.tile, self.blocking
        c0 = (x * b.fn + j0 * b.bn) * t.pe_cols
        v = bp[c0:c0 + nfolds * t.pe_cols].reshape(nfolds, t.pe_cols)
        return pack_words(v, t.acc_bits, self.cfg.word_bits).ravel()

    def _unpack_block(self, words):
        from ..model.machine import unpack_words

        t, g, b = self.cfg.tile, self.geo, self.blocking
        bits, vw = (t.data_bits, g.dw) if g.requant else (t.acc_bits, g.cw)
        w = np.asarray(words, dtype=np.uint64).reshape(g.rows, b.bn, vw)
        return unpack_words(w, t.pe_cols, bits, self.cfg.word_bits).reshape(
            g.rows, b.bn * t.pe_cols)

    # -- running --------------------------------------------------------------------------------

    def _edges(self):
        a = [(0, y) for y in range(self.cfg.rows)]
        b = [(x, 0) for x in range(self.cfg.cols)]
        return a, b

    def _tiles(self):
        return sorted(self.programs, key=lambda c: (c[1], c[0]))

    def _feed_ops(self, s, credit, everywhere=False):
        """Step ``s``'s A pieces into the west column and B pieces into the north row
        (``everywhere``: into every tile, for piece 0), each followed by a SIGNAL (it lands
        after the data: same route, in order). Step ``steps`` is the end marker: a SIGNAL
        without data (every tile takes in and forwards the piece after the one it computes
        on, so the last step needs one more)."""
        lay, g = self.layout, self.geo
        slot = (s % _SLOTS) * lay["d"]
        data = s < self.steps
        a_edges, b_edges = self._edges()
        if everywhere:
            a_edges = b_edges = self._tiles()
        for t in a_edges:
            if credit:
                yield HostOp("credit", t, sem=HOST_SEM_A)
            if data:
                yield HostOp("write", t, addr=lay["A"] + slot, words=g.sa, what="A", step=s)
            yield HostOp("signal", t, sem=SEM_A_FULL)
        for t in b_edges:
            if credit:
                yield HostOp("credit", t, sem=HOST_SEM_B)
            if data:
                yield HostOp("write", t, addr=lay["B"] + slot, words=g.sb, what="B", step=s)
                if "BROW" in lay:
                    yield HostOp("write", t, addr=lay["BROW"] + slot, words=g.bias_row,
                                 what="BROW", step=s)
            yield HostOp("signal", t, sem=SEM_B_FULL)

    def host_transactions(self):
        """The host's side of a run, in order, as :class:`HostOp` (a generator: operand data
        is not included; :meth:`run` executes exactly this list)."""
        cfg, lay, b, g = self.cfg, self.layout, self.blocking, self.geo
        tiles = self._tiles()
        for t in tiles:
            yield HostOp("reset", t)
        for t in tiles:
            x, y = t
            yield HostOp("program", t, words=len(self.programs[t]))
            # the neighbours' slot 0 holds piece 0 from the host: one free slot each
            yield HostOp("preset", t, sem=SEM_C_FREE,
                         value=_SLOTS if self.scheme == "stream" else 1)
            if x + 1 < cfg.cols:
                yield HostOp("preset", t, sem=SEM_A_FREE, value=_SLOTS - 1)
            if y + 1 < cfg.rows:
                yield HostOp("preset", t, sem=SEM_B_FREE, value=_SLOTS - 1)
            if self.scheme == "kchunk":
                yield HostOp("write", t, addr=lay["ZERO"], words=g.zero, what="ZERO")
                if "BIAS" in lay:
                    yield HostOp("write", t, addr=lay["BIAS"], words=b.nj * g.bias_row,
                                 what="BIAS")
        yield from self._feed_ops(0, credit=False, everywhere=True)
        if self.steps > 1:
            yield from self._feed_ops(1, credit=False)
        for t in tiles:
            yield HostOp("start", t)
        for s in range(_SLOTS, self.steps + 1):
            yield from self._feed_ops(s, credit=True)
            yield HostOp("step", step=min(s + 1, self.steps))
        yield HostOp("done")

    def _words(self, op, Ap, Bp, bp):
        x, y = op.tile
        if op.what == "A":
            return self._a_piece(Ap, y, op.step)
        if op.what == "B":
            return self._b_piece(Bp, x, op.step)
        if op.what == "BROW":
            return self._bias_words(bp, x, self._step_index(op.step)[1], self.blocking.bn)
        if op.what == "BIAS":
            return self._bias_words(bp, x, 0, self.blocking.nj * self.blocking.bn)
        return [0] * op.words

    async def _status_text(self, drv):
        lines = []
        for (x, y) in sorted(self.programs, key=lambda c: (c[1], c[0])):
            try:
                st = await drv.read_status(x, y, timeout=10_000)
                sems = [await drv.read_csr(x, y, f"SEM{i}", timeout=10_000) for i in range(5)]
                lines.append(f"tile ({x},{y}): {st.state.name} pc={st.pc} "
                             f"error={st.error.name}@{st.error_pc} wait sem{st.wait_sem}>="
                             f"{st.wait_count} sems={sems}")
            except Exception as e:   # noqa: BLE001 - a status we cannot read is reported
                lines.append(f"tile ({x},{y}): status unreadable ({type(e).__name__}: {e})")
        return "\n".join(lines)

    async def _execute(self, drv, op, Ap, Bp, bp, timeout, tiles, progress):
        """Carry out one :class:`HostOp` through the driver."""
        k, t = op.kind, op.tile
        if k == "reset":
            await drv.reset(*t)
        elif k == "program":
            await drv.load_program(*t, self.programs[t])
        elif k == "preset":
            await drv.write_csr(*t, f"SEM{op.sem}", op.value)
        elif k == "write":
            await drv.write_sram(*t, op.addr, self._words(op, Ap, Bp, bp))
        elif k == "signal":
            await drv.signal(*t, op.sem)
        elif k == "start":
            await drv.start(*t)
        elif k == "credit":
            await drv.wait_signal(*t, op.sem, timeout=timeout)
        elif k == "step":
            if progress is not None:
                progress(op.step, self.steps, "steps fed")
        elif k == "done":
            pending = set(tiles)
            while pending:
                note = await drv.wait_notify(timeout)
                if note.kind == NotifyKind.ERROR:
                    raise GemmError(f"tile {note.tile} stopped with {note.error.name} at "
                                    f"pc {note.pc}")
                if note.code != DONE_CODE or note.tile not in pending:
                    raise GemmError(f"unexpected NOTIFY {note}")
                pending.discard(note.tile)
        else:   # pragma: no cover - host_transactions only yields the kinds above
            raise ValueError(f"unknown host transaction {op!r}")

    async def run(self, driver, A, B, bias=None, *, progress=None, timeout=None):
        """Run the GEMM through ``driver`` (a :class:`tilemesh.host.driver.HostDriver` on any
        transport) and return a :class:`GemmRun`.

        The host resets every tile, loads the programs, presets the semaphores, writes the
        first two pieces of every edge tile, STARTs all tiles, then streams the remaining
        pieces as the edge tiles hand slots back, collects the result blocks the tiles write
        to it, waits for every tile's completion NOTIFY and reads the tiles' counters.

        Parameters
        ----------
        driver : HostDriver
        A, B : array of int
            ``M x K`` and ``K x N``, signed ``data_bits`` values.
        bias : array of int, optional
            ``N`` signed ``acc_bits`` values (required iff the epilogue has a bias).
        progress : callable, optional
            ``progress(done, total, what)``, called once per step and at the end.
        timeout : int, optional
            Host time units any single wait may take (default: from the cycle estimate).

        Raises
        ------
        ValueError
            Operands of the wrong shape or range.
        GemmError
            A wait timed out or a tile sent an ERROR notify; the message has every tile's
            status.
        """
        from ..host.driver import HostTimeout

        cfg, b = self.cfg, self.blocking
        A, B, bias = self._check(A, B, bias)
        Ap, Bp, bp = self._padded(A, B, bias)
        if timeout is None:
            timeout = 4 * self.estimated_cycles + 200_000
        tiles = self._tiles()
        tap = _Tap(driver.transport, cfg, self.token_offset)
        inner = driver.transport
        driver.transport = tap
        total = b.steps
        try:
            t_begin = tap.now()
            t_start = None
            for t in tiles:
                driver.signals.pop(t, None)
            try:
                for op in self.host_transactions():
                    if op.kind == "start" and t_start is None:
                        t_start = tap.now()
                    await self._execute(driver, op, Ap, Bp, bp, timeout, tiles, progress)
            except (HostTimeout, GemmError) as e:
                errors = [n for n in driver.notifies if n.kind == NotifyKind.ERROR]
                status = await self._status_text(driver)
                raise GemmError(f"GEMM {self.M}x{self.K}x{self.N} failed: {e}"
                                + (f"; ERROR notifies: {errors}" if errors else "")
                                + f"\n{status}") from e
            t_done = max(tap.notify_times.values())
            t_end = max(t_done, tap.last_result)
            if progress is not None:
                progress(total, total, "steps done")
            counters = {}
            names = {"cycles": "CYCLES", "stall_cycles": "STALL_CYCLES", "dma_busy": "DMA_BUSY",
                     "matmul_busy": "MATMUL_BUSY", "simd_busy": "SIMD_BUSY",
                     "matmul_steps": "MATMUL_STEPS", "tx_words": "TX_WORDS",
                     "rx_words": "RX_WORDS"}
            for (x, y) in tiles:
                counters[(x, y)] = {k: await driver.read_csr(x, y, v, timeout=timeout)
                                    for k, v in names.items()}
            for t in tiles:
                driver.signals.pop(t, None)
        finally:
            driver.transport = inner
        C = self._assemble(tap)
        return GemmRun(C=C, t_begin=t_begin, t_start=t_start, t_done=t_done, t_end=t_end,
                       tiles=counters, host_words_in=tap.words_in,
                       host_words_out=tap.words_out, useful_macs=self.M * self.K * self.N,
                       pes=cfg.pes, notify_times=dict(tap.notify_times))

    def _assemble(self, tap):
        b, g, t = self.blocking, self.geo, self.cfg.tile
        Mp, _, Np = self.padded_shape
        C = np.zeros((Mp, Np), dtype=np.int64)
        for (x, y) in self.programs:
            words = tap.streams.get((x, y), [])
            if len(words) != b.blocks * g.sout:
                raise GemmError(f"tile ({x},{y}) wrote {len(words)} result words, expected "
                                f"{b.blocks * g.sout}")
            for blk_i in range(b.blocks):
                i, j = divmod(blk_i, b.nj)
                r0 = (y * b.fm + i * b.bm) * t.pe_rows
                c0 = (x * b.fn + j * b.bn) * t.pe_cols
                C[r0:r0 + g.rows, c0:c0 + b.bn * t.pe_cols] = self._unpack_block(
                    words[blk_i * g.sout:(blk_i + 1) * g.sout])
        return C[:self.M, :self.N]


class _Tap:
    """A transport wrapper that watches what the host receives: result WRITEs per tile in
    arrival order (the order each tile wrote them), NOTIFY times, payload word counts."""

    def __init__(self, inner, cfg, token_offset):
        self.inner, self.cfg, self.token = inner, cfg, token_offset
        self.streams = {}
        self.notify_times = {}
        self.last_result = 0
        self.words_in = self.words_out = 0

    async def send(self, flits):
        self.words_in += len(flits) - 1
        await self.inner.send(flits)

    async def receive(self, timeout=None):
        flits = await self.inner.receive(timeout)
        if flits is not None:
            self._see(flits)
        return flits

    def now(self):
        return self.inner.now()

    def __getattr__(self, name):    # anything else (counters, options) is the real transport's
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _see(self, flits):
        from amaranth.lib import data

        from ..host.driver import Packet
        from ..layouts import Opcode, tile_addr_layout

        pkt = Packet.from_flits(self.cfg, flits)
        self.words_out += len(pkt.payload)
        if pkt.opcode == Opcode.NOTIFY:
            self.notify_times[pkt.src] = self.now()
        elif pkt.opcode == Opcode.WRITE:
            word = data.Layout.cast(tile_addr_layout(self.cfg)).from_bits(pkt.addr).word
            if word == self.token:
                return
            stream = self.streams.setdefault(pkt.src, [])
            stream.extend(int(w) for w in pkt.payload)
            self.last_result = self.now()


def compile_gemm(cfg, M, K, N, *, epilogue=None):
    """Compile ``C[M, N] = A[M, K] @ B[K, N]`` for mesh ``cfg``.

    Parameters
    ----------
    cfg : MeshConfig
    M, K, N : int
        Any sizes >= 1 (padded with zeros to whole folds and blocks, cropped on the way out).
    epilogue : Epilogue, optional
        SIMD work on each C block (bias, ReLU, requantize).

    Returns
    -------
    GemmPlan

    Raises
    ------
    ConfigError
        A size that is not a positive integer, an epilogue the tile cannot run (SIMD lanes
        other than ``pe_cols``, a zero point outside ``acc_bits``), or a configuration the
        GEMM cannot be compiled for (SRAM or instruction memory too small), naming the field
        and value.
    """
    from ..config import MeshConfig

    if not isinstance(cfg, MeshConfig):
        raise ConfigError(f"cfg must be a MeshConfig, not {cfg!r}")
    for name, v in (("M", M), ("K", K), ("N", N)):
        if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"GEMM size {name} must be an integer >= 1, not {v!r}")
    M, K, N = int(M), int(K), int(N)
    if epilogue is not None and not isinstance(epilogue, Epilogue):
        raise ConfigError(f"epilogue must be an Epilogue or None, not {epilogue!r}")
    epi = epilogue if epilogue is not None else Epilogue()
    t = cfg.tile
    if epi.active and t.simd_lanes != t.pe_cols:
        raise ConfigError(f"TileConfig.simd_lanes must equal pe_cols ({t.pe_cols}) for a GEMM "
                          f"epilogue (one C row fold is one SIMD vector), not {t.simd_lanes}")
    if epi.requant is not None and t.acc_bits < 32:
        zp, half = epi.requant.zero_point, 1 << (t.acc_bits - 1)
        if not -half <= zp < half:
            raise ConfigError(f"Requant.zero_point must be a signed acc_bits={t.acc_bits} "
                              f"value ({-half}..{half - 1}), not {zp}")
    blk, geo, lay, scheme = _choose(cfg, M, K, N, epi)
    return GemmPlan(cfg, M, K, N, epilogue, blk, geo, lay, scheme)


# -- command line: utilisation on the model ----------------------------------------------------

def measure(cfg, M, K, N, *, epilogue=None, seed=0):
    """Compile and run one GEMM on the Python mesh model (random operands from ``seed``);
    returns ``(plan, run, ok)`` with ``ok`` the bit-exact comparison with the reference."""
    import asyncio

    from ..host.driver import HostDriver
    from ..model.machine import MeshModel, ModelTransport

    plan = compile_gemm(cfg, M, K, N, epilogue=epilogue)
    rng = np.random.default_rng([seed, M, K, N])
    half = 1 << (cfg.tile.data_bits - 1)
    A = rng.integers(-half, half, (M, K))
    B = rng.integers(-half, half, (K, N))
    bias = None
    if plan._epi.bias:
        lim = 1 << (cfg.tile.acc_bits - 4)
        bias = rng.integers(-lim, lim, N)
    drv = HostDriver(cfg, ModelTransport(MeshModel(cfg)))
    run = asyncio.run(plan.run(drv, A, B, bias))
    return plan, run, bool((run.C == plan.reference(A, B, bias)).all())


def main(argv=None):
    """``python -m tilemesh.compiler.gemm``: utilisation of square GEMMs on the model."""
    import argparse
    import time

    from ..config import preset

    ap = argparse.ArgumentParser(prog="python -m tilemesh.compiler.gemm",
                                 description="GEMM utilisation on the mesh model")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    args = ap.parse_args(argv)
    cfg = preset(args.preset)
    print("| M=K=N | scheme | bm x bn folds, nk | steps/tile | cycles | ideal | on-mesh | "
          "end-to-end | exact | model wall |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        t0 = time.perf_counter()
        plan, run, ok = measure(cfg, n, n, n)
        b = plan.blocking
        print(f"| {n} | {plan.scheme} | {b.bm} x {b.bn}, {b.nk} | {plan.steps} | {run.cycles} | "
              f"{n ** 3 // cfg.pes} | {run.on_mesh_utilisation:.1%} | "
              f"{run.end_to_end_utilisation:.1%} | {'yes' if ok else 'NO'} | "
              f"{time.perf_counter() - t0:.1f} s |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
