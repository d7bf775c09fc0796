"""cocotb bench of a whole mesh, driven through its host port by :class:`tilemesh.host.HostDriver`
(the RTL back end, :class:`tilemesh.host.rtl.CocotbTransport`: random idle cycles into
``host_in``, random backpressure on ``host_out``).

Scenarios (issue 4, item 6), each a plain-Python builder (programs, SRAM images, expected
results) and a cocotb test that runs it:

* ``ring``: a 2-D strided block travels around a ring of every tile, hop by hop alternating
  push (``dma.write ... signal``) and pull (``signal`` then ``dma.read ... signal``), and comes
  back to the first tile intact; every tile's copy is checked.
* ``matmul_requant``: MATMUL (several folds) in one tile, then SIMD requantize of the C block to
  ``data_bits``, checked against :func:`tilemesh.model.reference.matmul_instr` /
  :func:`~tilemesh.model.reference.simd_instr` and numpy; the int8 result goes to the host with
  ``dma.write host``.
* ``gemm``: tile (0, 0) feeds every other tile its A and B blocks, every tile computes its C
  block and sends it back into the full C at tile (0, 0), which tells the host; C vs numpy.
* ``errors``: BAD_OPCODE, OFF_MESH, SRAM_RANGE, a WAIT nobody satisfies (seen in the status,
  reset by the host) and the same WAIT with TIMEOUT set; every error NOTIFYs the host with its
  code and pc; meanwhile another tile runs a job that must finish correctly, no SRAM outside the
  programs' blocks changes, a packet the host sends off the mesh is dropped and counted, and
  afterwards every tile runs a job again.

Parameters (``run_cocotb(params=...)``): ``cfg`` (``MeshConfig.to_dict()``), ``idle`` and ``stall``
(host port noise), ``timeout`` (cycles the host waits for any answer), ``gemm`` (keyword
arguments of :func:`gemm_plan`). :class:`PysimTransport` runs the same scenarios in Amaranth's
simulator (small meshes, for debugging without a Verilog simulator).
"""

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from tilemesh.compiler.assembler import assemble
from tilemesh.config import MeshConfig
from tilemesh.host.driver import HostDriver, HostTimeout, Packet
from tilemesh.host.rtl import CocotbTransport
from tilemesh.layouts import (
    ElemFormat,
    ErrorCode,
    NotifyKind,
    Opcode,
    SimdOp,
    TileState,
    matmul_operand_words,
    simd_vector_words,
)
from tilemesh.model.reference import (
    matmul_instr,
    pack_vector,
    simd_instr,
    unpack_vector,
    wrap,
)
from tilemesh_sim.streams import params, reset, rng, start_clock

__all__ = ["ring_order", "ring_programs", "gemm_plan", "matmul_requant_plan"]


# -- scenario builders (no simulator needed) -------------------------------------------------------

def ring_order(cfg):
    """Every tile once, each next to the one before (a snake through the rows), so the ring's
    hops are short; the last hop closes the ring back to the first tile."""
    order = []
    for y in range(cfg.rows):
        xs = range(cfg.cols) if y % 2 == 0 else reversed(range(cfg.cols))
        order += [(x, y) for x in xs]
    return order


RING_BUF, RING_BACK = 0x40, 0x100
RING_BLOCK = dict(rows=3, cols=20, stride=23)   # 2-D, longer than a packet per row


def ring_programs(cfg, block=None):
    """Assembly per tile for the ring. Hop ``i`` (tile ``i`` to ``i + 1``) is a push when ``i``
    is even (``dma.write ... signal=0`` at the receiver) and a pull when odd (the sender signals
    semaphore 2, the receiver ``dma.read``s with ``signal=0``). The block comes back to
    ``RING_BACK`` of the first tile (semaphore 1), which then NOTIFYs code 0xA."""
    b = dict(RING_BLOCK, **(block or {}))
    order = ring_order(cfg)
    n = len(order)
    shape = (f"rows={b['rows']} cols={b['cols']} local_stride={b['stride']} "
             f"remote_stride={b['stride']}")
    progs = {}
    for i, tile in enumerate(order):
        lines = []
        if i > 0:   # receive from the previous tile
            prev = order[i - 1]
            if (i - 1) % 2 == 0:
                lines.append("wait sem=0")
            else:
                lines += ["wait sem=2",
                          f"dma.read tile=({prev[0]},{prev[1]}) local={RING_BUF} "
                          f"remote={RING_BUF} {shape} signal=0",
                          "wait sem=0"]
        nxt = order[(i + 1) % n]
        last = i == n - 1
        dst = RING_BACK if last else RING_BUF
        sem = 1 if last else 0
        if n == 1 or i % 2 == 0:
            lines.append(f"dma.write tile=({nxt[0]},{nxt[1]}) local={RING_BUF} remote={dst} "
                         f"{shape} signal={sem}")
        else:
            lines.append(f"signal tile=({nxt[0]},{nxt[1]}) sem=2")
        if i == 0:
            if n > 1 and (n - 1) % 2 == 1:   # the closing hop is a pull by the first tile
                last_tile = order[-1]
                lines += ["wait sem=2",
                          f"dma.read tile=({last_tile[0]},{last_tile[1]}) local={RING_BACK} "
                          f"remote={RING_BUF} {shape} signal=1"]
            lines += ["wait sem=1", "notify code=0xA value=0x600d"]
        lines.append("halt")
        progs[tile] = "\n".join(lines) + "\n"
    return progs


def _fold_major_a(cfg, a, m_folds, k):
    """A (m_folds*R x k) as MATMUL wants it: fold i, step s -> an A column of R elements."""
    t, w = cfg.tile, cfg.word_bits
    words = []
    for i in range(m_folds):
        for s in range(k):
            words += pack_vector(a[i * t.pe_rows:(i + 1) * t.pe_rows, s], t.data_bits, w)
    return words


def _fold_major_b(cfg, b, n_folds, k):
    """B (k x n_folds*C): fold j, step s -> a B row of C elements."""
    t, w = cfg.tile, cfg.word_bits
    words = []
    for j in range(n_folds):
        for s in range(k):
            words += pack_vector(b[s, j * t.pe_cols:(j + 1) * t.pe_cols], t.data_bits, w)
    return words


def _unpack_c(cfg, words, rows, cols, stride):
    """A row-major C block of ``rows`` x ``cols`` accumulators, ``stride`` words per row."""
    t, w = cfg.tile, cfg.word_bits
    cw = matmul_operand_words(cfg)["c"]
    out = np.zeros((rows, cols), dtype=np.int64)
    for r in range(rows):
        for j in range(cols // t.pe_cols):
            p = r * stride + j * cw
            out[r, j * t.pe_cols:(j + 1) * t.pe_cols] = unpack_vector(
                words[p:p + cw], t.pe_cols, t.acc_bits, w)
    return out


def _rand_matrix(rnd, shape, bits):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return np.array([[rnd.randint(lo, hi) for _ in range(shape[1])]
                     for _ in range(shape[0])], dtype=np.int64)


def matmul_requant_plan(cfg, rnd, *, m_folds=2, n_folds=2, k=7):
    """One tile: C = A @ B (MATMUL, folds), then REQUANT to ``data_bits`` (SIMD), result to the
    host. Returns (program text, SRAM writes {addr: words}, expected {name: ...})."""
    t = cfg.tile
    ow = matmul_operand_words(cfg)
    M, N = m_folds * t.pe_rows, n_folds * t.pe_cols
    a = _rand_matrix(rnd, (M, k), t.data_bits)
    b = _rand_matrix(rnd, (k, N), t.data_bits)
    A, B = 0x0, 0x80
    C = 0x100
    c_stride = n_folds * ow["c"]
    Q = C + M * c_stride + 4
    count = M * n_folds                           # C rows of one fold = one acc vector
    scale, zp, shift = rnd.randrange(100, 3000), rnd.randrange(-20, 20), 12
    qwords = count * simd_vector_words(cfg, ElemFormat.DATA)
    prog = f"""
        matmul a={A} b={B} c={C} c_stride={c_stride} k={k} m_folds={m_folds} n_folds={n_folds}
        fence matmul
        simd.cfg scale={scale} zero_point={zp}
        simd.requant x={C} d={Q} count={count} dfmt=data shift={shift}
        fence simd
        dma.write host local={Q} remote=0 rows=1 cols={qwords}
        notify code=0xB value={qwords}
        halt
    """
    writes = {A: _fold_major_a(cfg, a, m_folds, k), B: _fold_major_b(cfg, b, n_folds, k)}
    # The reference: the same two instructions on an SRAM image.
    sram = [0] * t.sram_words
    for addr, ws in writes.items():
        sram[addr:addr + len(ws)] = ws
    matmul_instr(sram, cfg, a=A, b=B, c=C, c_stride=c_stride, k=k, m_folds=m_folds,
                 n_folds=n_folds)
    simd_instr(sram, cfg, func=SimdOp.REQUANT, x=C, d=Q, count=count, dfmt="data", shift=shift,
               scale=scale, zero_point=zp)
    c_np = wrap(a @ b, t.acc_bits)
    assert (_unpack_c(cfg, sram[C:C + M * c_stride], M, N, c_stride) == c_np).all()
    return prog, writes, {"C": (C, sram[C:C + M * c_stride]), "Q": sram[Q:Q + qwords],
                          "qwords": qwords, "c_np": c_np, "M": M, "N": N,
                          "c_stride": c_stride}


def gemm_plan(cfg, rnd, *, m_folds=1, n_folds=1, k=6):
    """Tile (0, 0) feeds every tile (x, y) its A row block (y) and B column block (x); each
    computes C[y, x] (``m_folds*R`` x ``n_folds*C``) and writes it into the full, row-major C at
    tile (0, 0) (semaphore 1 there), which NOTIFYs code 0xC when all blocks are in.

    Returns (programs {tile: text}, SRAM writes {tile: {addr: words}}, (C addr, words per C
    row, rows), numpy C)."""
    t = cfg.tile
    ow = matmul_operand_words(cfg)
    mb, nb = m_folds * t.pe_rows, n_folds * t.pe_cols
    M, N = cfg.rows * mb, cfg.cols * nb
    a = _rand_matrix(rnd, (M, k), t.data_bits)
    b = _rand_matrix(rnd, (k, N), t.data_bits)
    a_len, b_len = m_folds * k * ow["a"], n_folds * k * ow["b"]
    cw_row = n_folds * ow["c"]                # words of a block's C row
    full_row = cfg.cols * cw_row              # words of a full C row
    tiles = [(x, y) for y in range(cfg.rows) for x in range(cfg.cols)]
    # Tile (0, 0): sources of every block, then the full C.
    src = {}
    addr = 0
    for tile in tiles:
        src[tile] = (addr, addr + a_len)
        addr += a_len + b_len
    c_full = addr
    A_BUF, B_BUF = 0, a_len
    C_BUF = a_len + b_len
    assert c_full + M * full_row <= t.sram_words, "GEMM plan does not fit the SRAM"
    feeds = {(0, 0): {}}
    for (x, y), (sa, sb) in src.items():
        feeds[(0, 0)][sa] = _fold_major_a(cfg, a[y * mb:(y + 1) * mb], m_folds, k)
        feeds[(0, 0)][sb] = _fold_major_b(cfg, b[:, x * nb:(x + 1) * nb], n_folds, k)
    progs = {}
    others = [tl for tl in tiles if tl != (0, 0)]
    lines = []
    for (x, y) in others:
        sa, sb = src[x, y]
        lines += [f"dma.write tile=({x},{y}) local={sa} remote={A_BUF} rows=1 cols={a_len} "
                  f"signal=0",
                  f"dma.write tile=({x},{y}) local={sb} remote={B_BUF} rows=1 cols={b_len} "
                  f"signal=0"]
    sa, sb = src[0, 0]
    lines += [f"matmul a={sa} b={sb} c={c_full} c_stride={full_row} k={k} m_folds={m_folds} "
              f"n_folds={n_folds}"]
    if others:
        lines.append(f"wait sem=1 count={len(others)}")
    lines += ["fence", f"notify code=0xC value={len(tiles)}", "halt"]
    progs[0, 0] = "\n".join(lines) + "\n"
    for (x, y) in others:
        dest = c_full + y * mb * full_row + x * cw_row
        progs[x, y] = "\n".join([
            "wait sem=0 count=2",
            f"matmul a={A_BUF} b={B_BUF} c={C_BUF} c_stride={cw_row} k={k} m_folds={m_folds} "
            f"n_folds={n_folds}",
            "fence matmul",
            f"dma.write tile=(0,0) local={C_BUF} remote={dest} rows={mb} cols={cw_row} "
            f"local_stride={cw_row} remote_stride={full_row} signal=1",
            "halt"]) + "\n"
    return progs, feeds, (c_full, full_row, M), wrap(a @ b, t.acc_bits)


# -- cocotb plumbing -------------------------------------------------------------------------------

async def _setup(dut, tag):
    p = params()
    cfg = MeshConfig.from_dict(p["cfg"])
    await start_clock(dut)
    dut.host_in__valid.value = 0
    await reset(dut)
    rnd = rng(tag)
    drv = HostDriver(cfg, CocotbTransport(dut, cfg, rnd=rnd, idle=p.get("idle", 0.2),
                                          stall=p.get("stall", 0.3)),
                     timeout=p.get("timeout", 100_000))
    for y in range(cfg.rows):
        for x in range(cfg.cols):
            await drv.reset(x, y)
    return cfg, drv, rnd


def _tiles(cfg):
    return [(x, y) for y in range(cfg.rows) for x in range(cfg.cols)]


async def _expect_halted(drv, tiles):
    for x, y in tiles:
        st = await drv.read_status(x, y)
        assert st.state == TileState.HALTED and st.error == ErrorCode.NONE, \
            f"tile {(x, y)}: {st}"


async def run_ring(cfg, drv, rnd):
    order = ring_order(cfg)
    b = RING_BLOCK
    data = [rnd.getrandbits(cfg.word_bits) for _ in range(b["rows"] * b["cols"])]
    first = order[0]
    # The block, written row by row (the host writes whole rows; strides leave gaps).
    for r in range(b["rows"]):
        await drv.write_sram(*first, RING_BUF + r * b["stride"],
                             data[r * b["cols"]:(r + 1) * b["cols"]])
    progs = ring_programs(cfg)
    for tile, text in progs.items():
        await drv.load_program(*tile, text)
    # Start in reverse order: receivers are ready before their senders (and semaphores count
    # while idle anyway).
    for tile in reversed(order):
        await drv.start(*tile)
    note = await drv.wait_notify(tile=first)
    assert (note.kind, note.code, note.value) == (NotifyKind.PROGRAM, 0xA, 0x600D), note
    for tile in order:
        got = []
        base = RING_BACK if tile == first else RING_BUF
        for r in range(b["rows"]):
            got += await drv.read_sram(*tile, base + r * b["stride"], b["cols"])
        assert got == data, f"tile {tile}: the block differs"
    await _expect_halted(drv, order)


async def run_matmul_requant(cfg, drv, rnd, tile):
    prog, writes, exp = matmul_requant_plan(cfg, rnd)
    for addr, words in writes.items():
        await drv.write_sram(*tile, addr, words)
    await drv.load_program(*tile, prog)
    await drv.start(*tile)
    note = await drv.wait_notify(tile=tile)
    assert (note.kind, note.code, note.value) == (NotifyKind.PROGRAM, 0xB, exp["qwords"])
    c_addr, c_words = exp["C"]
    got_c = await drv.read_sram(*tile, c_addr, len(c_words))
    assert got_c == c_words, "C differs from model.reference.matmul_instr"
    assert (_unpack_c(cfg, got_c, exp["M"], exp["N"], exp["c_stride"]) == exp["c_np"]).all()
    host = drv.results.get(tuple(tile), {})
    got_q = [host.get(i) for i in range(exp["qwords"])]
    assert got_q == exp["Q"], "requantized block (sent to the host) differs from simd_instr"
    await _expect_halted(drv, [tile])
    counters = {n: await drv.read_csr(*tile, n) for n in ("MATMUL_STEPS", "MATMUL_BUSY",
                                                          "CYCLES")}
    assert counters["MATMUL_STEPS"] == 2 * 2 * 7, counters   # folds x k
    assert 0 < counters["MATMUL_BUSY"] <= counters["CYCLES"], counters


async def run_gemm(cfg, drv, rnd, **plan):
    progs, feeds, (c_addr, row_words, rows), c_np = gemm_plan(cfg, rnd, **plan)
    for tile, writes in feeds.items():
        for addr, words in writes.items():
            await drv.write_sram(*tile, addr, words)
    for tile, text in progs.items():
        await drv.load_program(*tile, text)
    for tile in progs:
        await drv.start(*tile)
    note = await drv.wait_notify(tile=(0, 0))
    assert (note.kind, note.code) == (NotifyKind.PROGRAM, 0xC), note
    words = await drv.read_sram(0, 0, c_addr, rows * row_words)
    got = _unpack_c(cfg, words, rows, c_np.shape[1], row_words)
    assert (got == c_np).all(), f"C differs from numpy:\n{got}\n{c_np}"
    await _expect_halted(drv, progs)


async def run_errors(cfg, drv, rnd):
    assert cfg.rows >= 2 and cfg.cols >= 2, "the error scenario needs a 2x2 mesh"
    sw = cfg.tile.sram_words
    # A pattern in every tile's SRAM, to prove afterwards that nothing else was written.
    guard = {tile: [rnd.getrandbits(cfg.word_bits) for _ in range(32)] for tile in _tiles(cfg)}
    GUARD = sw - 32    # the last 32 words
    for tile, words in guard.items():
        await drv.write_sram(*tile, GUARD, words)
    cases = {
        (1, 0): ("nop\nnop\n.word 0xe\nhalt", ErrorCode.BAD_OPCODE, 2, 0xE),
        (0, 1): (f"ar.set reg=1 value=0x10\ndma.write tile=({cfg.cols + 1},0) local=ar1 "
                 f"remote=0 rows=1 cols=4\nhalt", ErrorCode.OFF_MESH, 1, None),
        (1, 1): (f"dma.read tile=(0,0) local={sw - 2} remote=0 rows=1 cols=4 signal=1\nhalt",
                 ErrorCode.SRAM_RANGE, 0, None),
    }
    for tile, (text, _, _, _) in cases.items():
        # (check=False: the assembler would refuse these programs, the controller must too)
        await drv.write_imem(*tile, assemble(text, cfg, check=False))
    # Tile (0, 0) waits on a semaphore nobody signals.
    await drv.load_program(0, 0, "nop\nwait sem=3 count=2\nnotify code=1\nhalt")
    for tile in list(cases) + [(0, 0)]:
        await drv.start(*tile)
    seen = {}
    for _ in cases:
        note = await drv.wait_notify(kind=NotifyKind.ERROR)
        seen[note.tile] = note
    for tile, (_, code, pc, value) in cases.items():
        note = seen[tile]
        assert (note.error, note.pc) == (code, pc), f"tile {tile}: {note}"
        if value is not None:
            assert note.value == value
        st = await drv.read_status(*tile)
        assert (st.state, st.error, st.error_pc) == (TileState.ERROR, code, pc), st
    # The WAIT: visible, not an error, resettable.
    st = await drv.read_status(0, 0)
    assert (st.state, st.wait_sem, st.wait_count, st.pc) == (TileState.WAITING, 3, 2, 1), st
    assert await drv.read_csr(0, 0, "SEM3") == 0
    await drv.reset(0, 0)
    st = await drv.read_status(0, 0)
    assert (st.state, st.error) == (TileState.IDLE, ErrorCode.NONE), st
    # With TIMEOUT set the same WAIT is an error the host hears about.
    await drv.write_csr(0, 0, "TIMEOUT", 300)
    assert await drv.read_csr(0, 0, "TIMEOUT") == 300
    await drv.start(0, 0)
    note = await drv.wait_notify(tile=(0, 0), timeout=5000)
    assert (note.kind, note.error, note.pc) == (NotifyKind.ERROR, ErrorCode.TIMEOUT, 1), note
    # A START while in ERROR is refused (and counted); RESET clears the error.
    await drv.start(1, 0)
    st = await drv.read_status(1, 0)
    assert st.state == TileState.ERROR
    assert await drv.read_csr(1, 0, "RX_ERRORS") >= 1
    # A host write past the end of a tile's SRAM: dropped and counted in its RX_ERRORS.
    before = await drv.read_csr(1, 1, "RX_ERRORS")
    await drv.write_sram(1, 1, sw - 1, [0x1234, 0x5678])     # the second word is out of range
    assert await drv.read_csr(1, 1, "RX_ERRORS") == before + 1
    assert await drv.read_sram(1, 1, sw - 1, 1) == [0x1234]
    guard[1, 1][-1] = 0x1234
    # A packet for a tile off the mesh, from the host: dropped at the port, counted, harmless.
    dropped = int(cocotb.top.host_drops.value)
    await drv.send(Packet(Opcode.WRITE, (cfg.cols, cfg.rows), drv.host, 0, [1, 2, 3]))
    for _ in range(40):
        await RisingEdge(cocotb.top.clk)
    assert int(cocotb.top.host_drops.value) != dropped
    # Nothing outside the programs' blocks changed, anywhere.
    for tile, words in guard.items():
        assert await drv.read_sram(*tile, GUARD, len(words)) == words, f"tile {tile} corrupted"
    # No NOTIFY is left over, and every tile works again after a RESET.
    try:
        extra = await drv.wait_notify(timeout=200)
    except HostTimeout:
        extra = None
    assert extra is None, f"unexpected NOTIFY {extra}"
    for tile in _tiles(cfg):
        await drv.reset(*tile)
        await drv.write_csr(*tile, "TIMEOUT", 0)


# -- cocotb tests ----------------------------------------------------------------------------------

async def _diagnosed(cfg, drv, scenario):
    """Run ``scenario``; if the host times out, add every tile's status and counters."""
    try:
        await scenario
    except HostTimeout as e:
        lines = [str(e)]
        for x, y in _tiles(cfg):
            try:
                st = await drv.read_status(x, y, timeout=2000)
                counts = {n: await drv.read_csr(x, y, n, timeout=2000)
                          for n in ("CYCLES", "DMA_BUSY", "MATMUL_BUSY", "SIMD_BUSY",
                                    "MATMUL_STEPS", "RX_ERRORS", "TX_WORDS", "RX_WORDS")}
                lines.append(f"tile {(x, y)}: {st} {counts}")
            except HostTimeout:
                lines.append(f"tile {(x, y)}: no answer")
        raise AssertionError("\n".join(lines)) from e


@cocotb.test()
async def ring(dut):
    cfg, drv, rnd = await _setup(dut, "ring")
    await _diagnosed(cfg, drv, run_ring(cfg, drv, rnd))


@cocotb.test()
async def matmul_requant(dut):
    cfg, drv, rnd = await _setup(dut, "matmul_requant")
    await _diagnosed(cfg, drv, run_matmul_requant(cfg, drv, rnd, (cfg.cols - 1, cfg.rows - 1)))


@cocotb.test()
async def gemm(dut):
    cfg, drv, rnd = await _setup(dut, "gemm")
    await _diagnosed(cfg, drv, run_gemm(cfg, drv, rnd, **params().get("gemm", {})))


@cocotb.test()
async def errors(dut):
    cfg, drv, rnd = await _setup(dut, "errors")
    await _diagnosed(cfg, drv, run_errors(cfg, drv, rnd))
    # The mesh still computes: the GEMM on every tile, after all those errors.
    await _diagnosed(cfg, drv, run_gemm(cfg, drv, rnd, **params().get("gemm", {})))


# -- Amaranth-simulator back end (debugging, unit tests of small meshes) ---------------------------

class PysimTransport:
    """A :class:`~tilemesh.host.driver.HostTransport` for Amaranth's simulator: call
    :meth:`add_to` before ``sim.run()``; the driver then runs inside a testbench, its
    coroutines awaiting ``ctx.tick()``. Random idle cycles in, random backpressure out."""

    def __init__(self, dut, cfg, *, rnd, idle=0.0, stall=0.0):
        self.dut, self.cfg, self.rnd = dut, cfg, rnd
        self.idle, self.stall = idle, stall
        self.cycles = 0
        self.ctx = None
        self._packets, self._partial = [], []

    def add_to(self, sim):
        sim.add_testbench(self._receiver, background=True)

    def now(self):
        return self.cycles

    async def _receiver(self, ctx):
        port = self.dut.host_out
        w = self.cfg.word_bits
        while True:
            ready = self.rnd.random() >= self.stall
            ctx.set(port.ready, ready)
            _, _, valid, flit = await ctx.tick().sample(port.valid, port.payload.as_value())
            self.cycles += 1
            if valid and ready:
                self._partial.append(flit)
                if flit >> w & 1:
                    self._packets.append(self._partial)
                    self._partial = []

    async def send(self, flits):
        port = self.dut.host_in
        for flit in flits:
            while self.rnd.random() < self.idle:
                await self.ctx.tick()
            self.ctx.set(port.valid, 1)
            self.ctx.set(port.payload.as_value(), flit)
            await self.ctx.tick().until(port.ready)
            self.ctx.set(port.valid, 0)

    async def receive(self, timeout=None):
        waited = 0
        while not self._packets:
            if timeout is not None and waited >= timeout:
                return None
            await self.ctx.tick()
            waited += 1
        return self._packets.pop(0)
