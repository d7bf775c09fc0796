"""The Python mesh model (tilemesh.model.machine / cycles): hand-written programs against numpy,
every issue-time error against reference.controller_run, semaphore handshakes, timing sanity."""

import heapq
import time

import numpy as np
import pytest

from tilemesh.compiler.assembler import Program, assemble
from tilemesh.config import MeshConfig, NocConfig, TileConfig, preset
from tilemesh.layouts import (
    ElemFormat,
    ErrorCode,
    NotifyKind,
    SimdOp,
    TileState,
    matmul_operand_words,
    simd_vector_words,
)
from tilemesh.model import reference as ref
from tilemesh.model.cycles import BusyCounter, Network, Timing, bank_share, matmul_timing
from tilemesh.model.machine import MeshModel, ModelTimeout, pack_words, unpack_words
from tilemesh.tile.matrix import back_to_back_cycles

SEED = 20261122
DEFAULT = preset("default")
# A tile whose elements straddle words (6-bit data, 20-bit accumulators in 32-bit words).
ODD = MeshConfig(rows=1, cols=2, tile=TileConfig(pe_rows=3, pe_cols=2, data_bits=6, acc_bits=20,
                                                simd_lanes=2, sram_banks=2, sram_depth=512,
                                                imem_depth=64),
                 noc=NocConfig(flit_bits=32, max_packet_flits=4))


def mesh(rows, cols):
    return MeshConfig(rows=rows, cols=cols)


def rng(extra=0):
    print(f"seed {SEED + extra}")
    return np.random.default_rng(SEED + extra)


# -- operand layout helpers (docs/tile-design.md §4) ---------------------------------------------

def a_words(cfg, a):
    """A (M x k, M = m_folds * R) as fold-major A columns."""
    t = cfg.tile
    mf, k = a.shape[0] // t.pe_rows, a.shape[1]
    cols = a.reshape(mf, t.pe_rows, k).transpose(0, 2, 1)
    return pack_words(cols, t.data_bits, cfg.word_bits).ravel()


def b_words(cfg, b):
    """B (k x N, N = n_folds * C) as fold-major B rows."""
    t = cfg.tile
    k, nf = b.shape[0], b.shape[1] // t.pe_cols
    rows = b.reshape(k, nf, t.pe_cols).transpose(1, 0, 2)
    return pack_words(rows, t.data_bits, cfg.word_bits).ravel()


def c_matrix(cfg, words, m, n):
    """Row-major C block (c_stride = n_folds * c_words) back to an m x n matrix."""
    t, cw = cfg.tile, matmul_operand_words(cfg)["c"]
    nf = n // t.pe_cols
    return unpack_words(np.asarray(words).reshape(m, nf, cw), t.pe_cols, t.acc_bits,
                        cfg.word_bits).reshape(m, n)


def run_until_notified(model, count, timeout=2_000_000):
    notes = [model.wait_notify(timeout=timeout) for _ in range(count)]
    for n in notes:
        assert n.kind == NotifyKind.PROGRAM, n
    return notes


# -- packing and the vectorised datapath against the reference ---------------------------------

@pytest.mark.parametrize("bits,word_bits", [(8, 32), (32, 32), (6, 16), (20, 16), (24, 32),
                                            (64, 64), (13, 64), (16, 16)])
def test_pack_unpack_match_reference(bits, word_bits):
    r = rng(bits + word_bits)
    n = 5
    vals = r.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=(7, n), dtype=np.int64)
    packed = pack_words(vals, bits, word_bits)
    for row, words in zip(vals, packed, strict=True):
        assert [int(w) for w in words] == ref.pack_vector(row, bits, word_bits)
        assert list(ref.unpack_vector(words, n, bits, word_bits)) == list(row)
    assert (unpack_words(packed, n, bits, word_bits) == vals).all()


@pytest.mark.parametrize("cfg", [DEFAULT, ODD], ids=["default", "odd"])
def test_matmul_effect_matches_reference(cfg):
    r = rng(1)
    w = matmul_operand_words(cfg)
    words = cfg.tile.sram_words
    for trial in range(12):
        sram = r.integers(0, 1 << cfg.word_bits, size=words, dtype=np.uint64)
        mf, nf = int(r.integers(1, 4)), int(r.integers(1, 4))
        k = int(r.integers(1, 9))
        chain = trial % 3 == 2
        if chain:
            mf = nf = 1
        a, b = 0, mf * k * w["a"]
        c = b + nf * k * w["b"] + int(r.integers(0, 3))
        c_stride = nf * w["c"] + int(r.integers(0, 2))
        acc = bool(trial % 2)
        expect = sram.copy()
        model = MeshModel(cfg)
        tl = model.tiles[(0, 0)]
        tl.sram[:] = sram
        if chain:   # first half leaves the accumulation open, second half closes it
            state = ref.matmul_instr(expect, cfg, a=a, b=b, c=c, c_stride=c_stride, k=k,
                                     last=False)
            ref.matmul_instr(expect, cfg, a=a, b=b, c=c, c_stride=c_stride, k=k, first=False,
                             acc=acc, state=state)
            base = dict(a=a, b=b, c=c, c_stride=c_stride, k=k, m_folds=1, n_folds=1, acc=acc)
            model._matmul_effect(tl, dict(base, first=1, last=0))
            model._matmul_effect(tl, dict(base, first=0, last=1))
        else:
            ref.matmul_instr(expect, cfg, a=a, b=b, c=c, c_stride=c_stride, k=k, m_folds=mf,
                             n_folds=nf, acc=acc)
            model._matmul_effect(tl, dict(a=a, b=b, c=c, c_stride=c_stride, k=k, m_folds=mf,
                                          n_folds=nf, first=1, last=1, acc=acc))
        assert (tl.sram == expect).all(), trial
    # aliasing C over A takes the word-by-word reference path and still matches it
    sram = r.integers(0, 1 << cfg.word_bits, size=words, dtype=np.uint64)
    expect = sram.copy()
    ref.matmul_instr(expect, cfg, a=0, b=64, c=2, c_stride=w["c"], k=8, m_folds=2)
    tl.sram[:] = sram
    model._matmul_effect(tl, dict(a=0, b=64, c=2, c_stride=w["c"], k=8, m_folds=2, n_folds=1,
                                  first=1, last=1, acc=0))
    assert (tl.sram == expect).all()


@pytest.mark.parametrize("cfg", [DEFAULT, ODD], ids=["default", "odd"])
def test_simd_effect_matches_reference(cfg):
    r = rng(2)
    for trial, func in enumerate(list(SimdOp) * 2):
        sram = r.integers(0, 1 << cfg.word_bits, size=cfg.tile.sram_words, dtype=np.uint64)
        ymode = ["vector", "repeat", "scalar", "none"][trial % 4]
        xfmt, yfmt, dfmt = (["acc", "data"][int(r.integers(0, 2))] for _ in range(3))
        count = int(r.integers(1, 7))
        in_place = trial % 5 == 0
        x, y = 0, 100
        d = x if in_place and xfmt == dfmt else 200
        kw = dict(func=func, x=x, y=y, d=d, count=count, ymode=ymode, xfmt=xfmt, yfmt=yfmt,
                  dfmt=dfmt, shift=int(r.integers(0, 40)), scale=int(r.integers(-500, 500)),
                  zero_point=int(r.integers(-9, 9)))
        expect = sram.copy()
        ref.simd_instr(expect, cfg, **kw)
        model = MeshModel(cfg)
        tl = model.tiles[(0, 0)]
        tl.sram[:] = sram
        tl.simd_scale, tl.simd_zero = kw["scale"], kw["zero_point"]
        fmt = {"acc": ElemFormat.ACC.value, "data": ElemFormat.DATA.value}
        model._simd_effect(tl, dict(func=func.value, x=x, y=y, d=d, count=count,
                                    ymode=["vector", "repeat", "scalar", "none"].index(ymode),
                                    xfmt=fmt[xfmt], yfmt=fmt[yfmt], dfmt=fmt[dfmt],
                                    shift=kw["shift"]))
        assert (tl.sram == expect).all(), (func, kw)


# -- programs ------------------------------------------------------------------------------------

def test_matmul_then_requantize_in_one_tile():
    cfg = DEFAULT
    r = rng(3)
    t, w = cfg.tile, matmul_operand_words(cfg)
    m, k, n = 8, 24, 12
    a = r.integers(-128, 128, (m, k))
    b = r.integers(-128, 128, (k, n))
    bias = r.integers(-3000, 3000, n)
    mf, nf = m // t.pe_rows, n // t.pe_cols
    A, B, C, BIAS, Q = 0x000, 0x100, 0x200, 0x400, 0x500
    model = MeshModel(cfg)
    model.write_sram((1, 1), A, a_words(cfg, a))
    model.write_sram((1, 1), B, b_words(cfg, b))
    model.write_sram((1, 1), BIAS, pack_words(bias.reshape(nf, t.simd_lanes), 32, 32).ravel())
    src = f"""
    matmul a={A} b={B} c={C} c_stride={nf * w['c']} k={k} m_folds={mf} n_folds={nf}
    fence matmul
    simd.cfg scale=77 zero_point=-5
    loop count={m} {{
        loop count={nf} {{
            simd.add x=ar1+{C} y=ar2+{BIAS} d=ar1+{C} count=1
            ar.add reg=1 value=4
            ar.add reg=2 value=4
        }}
        ar.set reg=2 value=0
    }}
    simd.requant x={C} d={Q} count={m * nf} dfmt=data shift=14
    simd.relu x={Q} xfmt=data d={Q} dfmt=data count={m * nf} ymode=none
    fence
    notify code=0x42 value=9
    halt
    """
    model.load_program((1, 1), assemble(src, cfg))
    model.start((1, 1))
    note, = run_until_notified(model, 1)
    assert (note.tile, note.code, note.value) == ((1, 1), 0x42, 9)
    acc = ref.wrap(a @ b + bias, 32)
    got_c = c_matrix(cfg, model.read_sram((1, 1), C, m * nf * w["c"]), m, n)
    assert (got_c == acc).all()
    q = np.maximum(np.clip(ref.round_shift(acc * 77, 14).astype(np.int64) - 5, -128, 127), 0)
    words = model.read_sram((1, 1), Q, m * nf)
    got_q = unpack_words(words.reshape(m * nf, 1), t.simd_lanes, 8, 32).reshape(m, n)
    assert (got_q == q).all()
    assert model.status((1, 1))["state"] == TileState.HALTED
    assert model.read_csr((1, 1), "MATMUL_STEPS") == mf * nf * k


@pytest.mark.parametrize("rows,cols", [(2, 2), (3, 2), (1, 3)])
def test_ring_transfer_strided_block(rows, cols):
    """A 5 x 20 block (rows cut into several packets) goes round a ring of tiles and back."""
    cfg = mesh(rows, cols)
    r = rng(rows * 10 + cols)
    ring = [(x, 0) for x in range(cols)] + [(cols - 1, y) for y in range(1, rows)]
    ring += [(x, rows - 1) for x in range(cols - 2, -1, -1)] if rows > 1 else []
    ring += [(0, y) for y in range(rows - 2, 0, -1)]
    ring = list(dict.fromkeys(ring))
    block = r.integers(0, 1 << 32, size=(5, 20), dtype=np.uint64)
    model = MeshModel(cfg)
    SRC, BUF, BACK = 0x100, 0x800, 0x2000
    model.write_sram(ring[0], SRC, np.pad(block, ((0, 0), (0, 12))).ravel())   # stride 32
    for i, tile in enumerate(ring):
        nxt = ring[(i + 1) % len(ring)]
        p = Program(cfg)
        if i == 0:
            p.dma_write(tile=nxt, local=SRC, remote=BUF, rows=5, cols=20, local_stride=32,
                        remote_stride=24, signal=0)
            p.wait(sem=0)
            p.notify(code=1)
        else:
            p.wait(sem=0)
            p.dma_write(tile=nxt, local=BUF, remote=BACK if nxt == ring[0] else BUF, rows=5,
                        cols=20, local_stride=24, remote_stride=24 if nxt != ring[0] else 20,
                        signal=0)
        p.halt()
        model.load_program(tile, p)
    for tile in ring[::-1]:
        model.start(tile)
    run_until_notified(model, 1)
    back = model.read_sram(ring[0], BACK, 100).reshape(5, 20)
    assert (back == block).all()
    model.run()
    for tile in ring:
        assert model.status(tile)["state"] == TileState.HALTED
        assert model.read_csr(tile, "TX_WORDS") >= 100
    rep = model.report()
    # every hop of the ring moved the block: 5 rows x 2 packets (16 + 4 words) plus one SIGNAL
    assert rep.flits >= len(ring) * (100 + 10 + 1)


def test_dma_read_with_local_signal():
    cfg = mesh(2, 2)
    r = rng(5)
    data = r.integers(0, 1 << 32, size=40, dtype=np.uint64)
    model = MeshModel(cfg)
    model.write_sram((1, 1), 0x300, data)
    p = Program(cfg)
    p.dma_read(tile=(1, 1), local=0x40, remote=0x300, rows=2, cols=20, local_stride=32,
               signal=5)
    p.wait(sem=5)
    p.notify(code=3)
    p.halt()
    model.load_program((0, 0), p)
    model.start((0, 0))
    run_until_notified(model, 1)
    got = model.read_sram((0, 0), 0x40, 52)
    assert (got[:20] == data[:20]).all() and (got[32:52] == data[20:]).all()
    assert (got[20:32] == 0).all()
    assert model.read_csr((1, 1), "TX_WORDS") == 40


def feed_programs(cfg, m_blk, k, n_blk):
    """Tile (0,0) sends each tile its A and B blocks; each computes C and sends it back."""
    t, w = cfg.tile, matmul_operand_words(cfg)
    mf, nf = m_blk // t.pe_rows, n_blk // t.pe_cols
    a_len, b_len = mf * k * w["a"], nf * k * w["b"]
    c_len = m_blk * nf * w["c"]
    A, B, C = 0, a_len, a_len + b_len              # worker layout
    STORE = C + c_len                               # (0,0): all operands, then all C blocks
    tiles = [(x, y) for y in range(cfg.rows) for x in range(cfg.cols)]
    store_a = {tile: STORE + i * (a_len + b_len) for i, tile in enumerate(tiles)}
    result = {tile: STORE + len(tiles) * (a_len + b_len) + i * c_len
              for i, tile in enumerate(tiles)}
    progs = {}
    for tile in tiles:
        p = Program(cfg)
        if tile == (0, 0):
            for other in tiles:
                p.dma_write(tile=other, local=store_a[other], remote=A, rows=1, cols=a_len,
                            signal=0)
                p.dma_write(tile=other, local=store_a[other] + a_len, remote=B, rows=1,
                            cols=b_len, signal=0)
        p.wait(sem=0, count=2)
        p.matmul(a=A, b=B, c=C, c_stride=nf * w["c"], k=k, m_folds=mf, n_folds=nf)
        p.fence("matmul")
        p.dma_write(tile=(0, 0), local=C, remote=result[tile], rows=1, cols=c_len, signal=1)
        if tile == (0, 0):
            p.wait(sem=1, count=len(tiles))
            p.notify(code=0xC0DE, value=len(tiles))
        p.halt()
        progs[tile] = p
    return progs, store_a, result, (a_len, c_len)


FEED_MESHES = {
    "1x1": (mesh(1, 1), (8, 20, 8)), "1x2": (mesh(1, 2), (8, 20, 8)),
    "2x2": (mesh(2, 2), (8, 20, 8)), "3x2": (mesh(3, 2), (8, 20, 8)),
    "tiny": (preset("tiny"), (4, 6, 4)), "large": (preset("large"), (16, 24, 8)),
}


@pytest.mark.parametrize("name", list(FEED_MESHES))
def test_tile00_feeds_every_tile(name):
    cfg, (m_blk, k, n_blk) = FEED_MESHES[name]
    rows, cols = cfg.rows, cfg.cols
    r = rng(100 + rows * 10 + cols)
    progs, store, result, (a_len, c_len) = feed_programs(cfg, m_blk, k, n_blk)
    model = MeshModel(cfg)
    ops = {}
    for tile in progs:
        a = r.integers(-128, 128, (m_blk, k))
        b = r.integers(-128, 128, (k, n_blk))
        ops[tile] = (a, b)
        model.write_sram((0, 0), store[tile], np.concatenate([a_words(cfg, a),
                                                               b_words(cfg, b)]))
        model.load_program(tile, progs[tile])
    for tile in progs:
        model.start(tile)
    note, = run_until_notified(model, 1)
    assert (note.tile, note.code, note.value) == ((0, 0), 0xC0DE, len(progs))
    for tile, (a, b) in ops.items():
        got = c_matrix(cfg, model.read_sram((0, 0), result[tile], c_len), m_blk, n_blk)
        assert (got == a @ b).all(), tile
    model.run()
    rep = model.report()
    assert rep.macs == len(progs) * m_blk * k * n_blk
    assert all(v["state"] == TileState.HALTED for v in rep.tiles.values())
    assert all(v["matmul_busy"] > 0 for v in rep.tiles.values())


# -- semaphores: double buffering terminates and overlaps ----------------------------------------

def double_buffer_programs(cfg, blocks, k, *, compute=True, transfer=True):
    """Producer (0,0) streams ``blocks`` A blocks to (1,0) through two buffers; the consumer
    multiplies each by a resident B. Semaphores 0/1 count free buffers (producer) and full
    buffers (consumer)."""
    w = matmul_operand_words(cfg)
    mf = 4
    a_len = mf * k * w["a"]
    bufs = (0x0000, 0x0800)
    Bres, Cout = 0x1000, 0x2000
    c_len = mf * cfg.tile.pe_rows * w["c"]
    prod, cons = Program(cfg), Program(cfg)
    prod.signal(sem=0)
    prod.signal(sem=1)
    prod.ar_set(reg=1, value=0x2800)
    cons.ar_set(reg=1, value=Cout)
    with prod.loop(blocks // 2):
        for s in (0, 1):
            prod.wait(sem=s)
            if transfer:
                prod.dma_write(tile=(1, 0), local=prod_ar(1), remote=bufs[s], rows=1,
                               cols=a_len, signal=s)
            else:
                prod.signal(tile=(1, 0), sem=s)
            prod.ar_add(reg=1, value=a_len)
    prod.halt()
    with cons.loop(blocks // 2):
        for s in (0, 1):
            cons.wait(sem=s)
            if compute:
                cons.matmul(a=bufs[s], b=Bres, c=cons_ar(1), c_stride=w["c"], k=k, m_folds=mf)
                cons.fence("matmul")
            cons.signal(tile=(0, 0), sem=s)
            cons.ar_add(reg=1, value=c_len)
    cons.notify(code=2)
    cons.halt()
    return prod, cons, a_len, c_len, Bres, Cout


def prod_ar(reg):
    from tilemesh.compiler.assembler import RegAddr
    return RegAddr(reg)


cons_ar = prod_ar


def run_double_buffer(cfg, blocks, k, a_data=None, b_data=None, **kw):
    prod, cons, a_len, c_len, Bres, Cout = double_buffer_programs(cfg, blocks, k, **kw)
    model = MeshModel(cfg)
    if a_data is not None:
        model.write_sram((0, 0), 0x2800, np.concatenate([a_words(cfg, a) for a in a_data]))
        model.write_sram((1, 0), Bres, b_words(cfg, b_data))
    model.load_program((0, 0), prod)
    model.load_program((1, 0), cons)
    model.start((0, 0))
    model.start((1, 0))
    run_until_notified(model, 1)
    model.run()
    return model, c_len, Cout


def test_double_buffered_handshake_is_correct_and_overlaps():
    cfg = mesh(1, 2)
    r = rng(7)
    blocks, k = 8, 48
    m_blk = 4 * cfg.tile.pe_rows
    a_data = [r.integers(-128, 128, (m_blk, k)) for _ in range(blocks)]
    b = r.integers(-128, 128, (k, cfg.tile.pe_cols))
    model, c_len, Cout = run_double_buffer(cfg, blocks, k, a_data, b)
    for i, a in enumerate(a_data):
        got = c_matrix(cfg, model.read_sram((1, 0), Cout + i * c_len, c_len), m_blk, 4)
        assert (got == a @ b).all(), i
    both = model.report()
    dma_only = run_double_buffer(cfg, blocks, k, compute=False)[0].report()
    mm_only = run_double_buffer(cfg, blocks, k, transfer=False)[0].report()
    print(f"cycles: both {both.cycles}, dma only {dma_only.cycles}, matmul only "
          f"{mm_only.cycles}")
    assert both.cycles < dma_only.cycles + mm_only.cycles
    assert both.cycles >= max(dma_only.cycles, mm_only.cycles)
    cons = both.tiles[(1, 0)]
    assert both.tiles[(0, 0)]["dma_busy"] > 0
    assert cons["matmul_busy"] == mm_only.tiles[(1, 0)]["matmul_busy"]


def test_semaphores_count_before_start_and_host_signal():
    cfg = mesh(1, 2)
    model = MeshModel(cfg)
    model.signal((1, 0), 3)
    model.signal((1, 0), 3)
    model.run()
    assert model.read_csr((1, 0), "SEM3") == 2          # counted while IDLE
    p = Program(cfg)
    p.wait(sem=3, count=3)
    p.notify(code=5)
    p.halt()
    model.load_program((1, 0), p)
    model.start((1, 0))
    model.run(2000)
    st = model.status((1, 0))
    assert (st["state"], st["wait_sem"], st["wait_count"]) == (TileState.WAITING, 3, 3)
    with pytest.raises(ModelTimeout, match="no notification within 100 cycles"):
        model.wait_notify(timeout=100)
    model.set_semaphore((1, 0), 3, 7)
    note = model.wait_notify(timeout=1000)
    assert note.code == 5
    assert model.read_csr((1, 0), "SEM3") == 4


# -- errors --------------------------------------------------------------------------------------

def bad(cfg, build):
    p = Program(cfg, check=False)
    build(p)
    return p.words()


ERROR_PROGRAMS = {
    "bad_opcode": (ErrorCode.BAD_OPCODE, lambda p: (p.nop(), p.word(13 | (0xABC << 8)))),
    "zero_rows": (ErrorCode.BAD_OPERAND, lambda p: p.dma_write(tile=(1, 0), local=0, remote=0,
                                                             rows=0, cols=4)),
    "read_host": (ErrorCode.BAD_OPERAND, lambda p: p.dma_read(host=True, local=0, remote=0,
                                                            rows=1, cols=4)),
    "folds_chain": (ErrorCode.BAD_OPERAND, lambda p: p.matmul(a=0, b=0x100, c=0x200, c_stride=4,
                                                            k=4, m_folds=2, last=0)),
    "simd_count": (ErrorCode.BAD_OPERAND, lambda p: p.simd("add", x=0, y=0, d=0, count=0)),
    "ar0": (ErrorCode.BAD_OPERAND, lambda p: p.ar_set(reg=0, value=1)),
    "loop_zero": (ErrorCode.BAD_OPERAND, lambda p: (p.emit("loop", count=0, len=1), p.nop())),
    "sram_local": (ErrorCode.SRAM_RANGE, lambda p: (
        p.ar_set(reg=2, value=16380),
        p.dma_write(tile=(1, 0), local=p_reg(2, 1), remote=0, rows=1, cols=4))),
    "sram_remote": (ErrorCode.SRAM_RANGE, lambda p: p.dma_write(
        tile=(1, 0), local=0, remote=16000, rows=4, cols=8, remote_stride=200)),
    "sram_matmul_c": (ErrorCode.SRAM_RANGE, lambda p: p.matmul(a=0, b=0x100, c=16370,
                                                             c_stride=4, k=4)),
    "off_mesh_dma": (ErrorCode.OFF_MESH, lambda p: p.dma_write(tile=(2, 0), local=0, remote=0,
                                                             rows=1, cols=1)),
    "off_mesh_signal": (ErrorCode.OFF_MESH, lambda p: p.signal(tile=(0, 1), sem=0)),
    "chain_first0": (ErrorCode.MATMUL_CHAIN, lambda p: p.matmul(a=0, b=0x100, c=0x200,
                                                              c_stride=4, k=4, first=0)),
    "chain_open": (ErrorCode.MATMUL_CHAIN, lambda p: (
        p.matmul(a=0, b=0x100, c=0x200, c_stride=4, k=4, last=0),
        p.matmul(a=0, b=0x100, c=0x200, c_stride=4, k=4))),
    "loop_deep": (ErrorCode.LOOP_NEST, lambda p: (
        [p.emit("loop", count=2, len=6 - i) for i in range(5)], p.nop(), p.nop())),
    "loop_past_parent": (ErrorCode.LOOP_NEST, lambda p: (
        p.emit("loop", count=2, len=2), p.emit("loop", count=2, len=3), p.nop(), p.nop())),
    "loop_past_imem": (ErrorCode.LOOP_NEST, lambda p: p.emit("loop", count=2, len=4000)),
    "pc_range": (ErrorCode.PC_RANGE, lambda p: [p.nop() for _ in range(DEFAULT.tile.imem_depth)]),
}


def p_reg(reg, offset):
    from tilemesh.compiler.assembler import RegAddr
    return RegAddr(reg, offset)


@pytest.mark.parametrize("case", sorted(ERROR_PROGRAMS))
def test_issue_errors_match_reference_and_notify(case):
    cfg = mesh(1, 2)
    code, build = ERROR_PROGRAMS[case]
    words = bad(cfg, build)
    expect = ref.controller_run(words, cfg)
    assert expect.error == code       # the program really is the case it claims to be
    model = MeshModel(cfg)
    model.load_program((0, 0), words)
    p = Program(cfg)            # the neighbour runs on regardless
    p.notify(code=77)
    p.halt()
    model.load_program((1, 0), p)
    model.start((0, 0))
    model.start((1, 0))
    notes = sorted([model.wait_notify(timeout=100_000) for _ in range(2)],
                   key=lambda n: n.tile)
    err, other = notes
    assert (err.tile, err.kind, err.code, err.pc, err.value) == (
        (0, 0), NotifyKind.ERROR, code.value, expect.notify["pc"], expect.notify["value"])
    assert (other.kind, other.code) == (NotifyKind.PROGRAM, 77)
    st = model.status((0, 0))
    assert (st["state"], st["error"], st["error_pc"], st["pc"]) == (
        TileState.ERROR, code, expect.error_pc, expect.pc % 4096)
    assert [model.read_csr((0, 0), f"AR{i}") for i in (1, 2, 3)] == expect.ar
    model.reset((0, 0))
    st = model.status((0, 0))
    assert (st["state"], st["error"]) == (TileState.IDLE, ErrorCode.NONE)
    assert model.status((1, 0))["state"] == TileState.HALTED


def test_error_lets_queued_work_finish():
    cfg = mesh(1, 2)
    model = MeshModel(cfg)
    model.write_sram((0, 0), 0, list(range(1, 65)))
    words = bad(cfg, lambda p: (p.dma_write(tile=(1, 0), local=0, remote=0x40, rows=4, cols=16,
                                            signal=2),
                                p.word(14)))
    model.load_program((0, 0), words)
    model.start((0, 0))
    note = model.wait_notify(timeout=10_000)
    assert (note.kind, note.code, note.pc) == (NotifyKind.ERROR, ErrorCode.BAD_OPCODE.value, 1)
    model.run()
    assert list(model.read_sram((1, 0), 0x40, 64)) == list(range(1, 65))
    assert model.read_csr((1, 0), "SEM2") == 1


def test_timeout_error_and_reset():
    cfg = mesh(1, 2)
    model = MeshModel(cfg)
    model.write_csr((1, 0), "TIMEOUT", 500)
    p = Program(cfg)
    p.nop()
    p.wait(sem=9, count=2)
    p.halt()
    model.load_program((1, 0), p)
    model.start((1, 0))
    model.signal((1, 0), 9)           # one of two: never satisfied
    t0 = model.now
    note = model.wait_notify(timeout=5_000)
    assert (note.tile, note.kind, note.code, note.pc) == ((1, 0), NotifyKind.ERROR,
                                                          ErrorCode.TIMEOUT.value, 1)
    assert note.value == p.words()[1] & 0xFFFF_FFFF
    assert 500 <= note.cycle - t0 < 600
    st = model.status((1, 0))
    assert (st["state"], st["error"], st["wait_sem"], st["wait_count"]) == (
        TileState.ERROR, ErrorCode.TIMEOUT, 9, 2)
    assert model.read_csr((1, 0), "SEM9") == 1
    assert model.read_csr((1, 0), "STALL_CYCLES") >= 500
    model.reset((1, 0))
    assert model.read_csr((1, 0), "SEM9") == 0
    assert model.read_csr((1, 0), "TIMEOUT") == 0
    assert model.read_csr((1, 0), "CYCLES") == 0
    # a fence on a busy unit blocks, then completes: no timeout when the limit is never hit
    model.write_csr((1, 0), "TIMEOUT", 10_000)
    q = Program(cfg)
    q.dma_write(tile=(0, 0), local=0, remote=0, rows=8, cols=64)
    q.fence()
    q.notify(code=1)
    q.halt()
    model.load_program((1, 0), q)
    model.start((1, 0))
    assert model.wait_notify(timeout=10_000).kind == NotifyKind.PROGRAM


def test_sem_overflow_error():
    cfg = mesh(1, 2)
    model = MeshModel(cfg)
    model.set_semaphore((1, 0), 4, 0xFFFF)
    p = Program(cfg)
    p.signal(tile=(1, 0), sem=4)
    p.halt()
    model.load_program((0, 0), p)
    model.start((0, 0))
    note = model.wait_notify(timeout=10_000)
    assert (note.tile, note.kind, note.code, note.value) == (
        (1, 0), NotifyKind.ERROR, ErrorCode.SEM_OVERFLOW.value, 4)
    assert model.read_csr((1, 0), "SEM4") == 0xFFFF
    assert model.status((1, 0))["error"] == ErrorCode.SEM_OVERFLOW


def test_host_port_rejections_are_counted():
    cfg = mesh(1, 1)
    model = MeshModel(cfg)
    p = Program(cfg)
    p.wait(sem=0)
    p.halt()
    model.load_program((0, 0), p)
    model.start((0, 0))
    model.start((0, 0))                                   # refused: already running
    model.load_program((0, 0), [0, 0])                    # dropped: IMEM while running
    model.write_csr((0, 0), "STATUS", 5)                  # read-only
    model.run(1000)
    assert model.read_csr((0, 0), "RX_ERRORS") == 3
    assert model.read_csr((0, 0), "ISA") == 1
    assert model.read_csr((0, 0), "TILE_ID") == 0
    model.signal((0, 0), 0)
    model.run()
    assert model.status((0, 0))["state"] == TileState.HALTED
    words = model.read((0, 0), 1, 0, 4)                   # IMEM space reads back the program
    assert sum(int(w) << (32 * i) for i, w in enumerate(words)) == p.words()[0]


def test_stray_read_resp_after_reset_is_dropped():
    cfg = mesh(1, 2)
    model = MeshModel(cfg)
    model.write_sram((1, 0), 0, [7] * 64)
    p = Program(cfg)
    p.dma_read(tile=(1, 0), local=0x100, remote=0, rows=1, cols=64)
    p.halt()
    model.load_program((0, 0), p)
    model.start((0, 0))
    model.run(60)                 # the read is under way: some answers are still to come
    model.reset((0, 0))
    model.run()
    landed = model.read_sram((0, 0), 0x100, 64).reshape(4, 16)
    chunks = [set(row.tolist()) for row in landed]
    assert all(c in ({0}, {7}) for c in chunks)
    # the one READ_REQ outstanding at the RESET is answered and dropped; later ones never leave
    assert model.read_csr((0, 0), "RX_ERRORS") == 1
    assert 0 < chunks.count({7}) < 4
    assert model.status((0, 0))["state"] == TileState.IDLE



def test_reset_while_the_closing_signal_waits_forgets_the_old_command():
    # Four tiles stream to the host; (1, 1)'s closing SIGNAL waits for its inject link behind
    # its own worm when the RESET comes. The old command's end must not count for the program
    # started after the reset: its DMA unit is busy until its own 4096 words have left.
    cfg = preset("default")
    model = MeshModel(cfg)
    tiles, victim = [(0, 0), (1, 0), (0, 1), (1, 1)], (1, 1)
    for t in tiles:
        p = Program(cfg)
        p.dma_write(host=True, local=0, remote=0, rows=8, cols=256,
                    **({"signal": 1} if t == victim else {}))
        p.halt()
        model.load_program(t, p)
    for t in tiles:
        model.start(t)
    inject = model.network._link(("inject", victim))
    while not (inject.owner is not None and inject.owner.flits == 1 and inject.release is None):
        model.run(1)
    model.reset(victim)
    model.run(20)
    p = Program(cfg)
    p.dma_write(tile=(0, 0), local=0, remote=0x1000, rows=16, cols=256)
    p.halt()
    model.load_program(victim, p)
    model.start(victim)
    t0 = model.now
    model.run()
    tl = model.tiles[victim]
    assert tl.units["dma"].inflight == 0
    assert tl.stopped_at - t0 >= 4096     # HALT waited for the whole transfer


def test_simd_command_waits_in_its_queue_for_a_job_slot():
    # The SIMD engine holds two commands between taking one and writing its last result; a
    # third waits in the (one-entry) unit queue until the first is written, so the instruction
    # behind it cannot issue before then either.
    cfg = preset("default")
    model = MeshModel(cfg)
    src = "".join(f"simd.add x={4 * i} y={0x100 + 4 * i} d={0x200 + 4 * i} count=1\n"
                  for i in range(5)) + "halt\n"
    takes, done, issued = [], [], {}
    start, unit_done, issue_one = MeshModel._start, MeshModel._unit_done, MeshModel._issue_one

    def spy_start(self, tl, unit, op, cmd, pc, t):
        takes.append(t)
        return start(self, tl, unit, op, cmd, pc, t)

    def spy_done(self, tl, unit, epoch, effect, rec):
        done.append(self.t)
        return unit_done(self, tl, unit, epoch, effect, rec)

    def spy_issue(self, tl, t):
        pc = tl.pc
        out = issue_one(self, tl, t)
        if tl.pc != pc:
            issued.setdefault(pc, t)
        return out

    mp = pytest.MonkeyPatch()
    mp.setattr(MeshModel, "_start", spy_start)
    mp.setattr(MeshModel, "_unit_done", spy_done)
    mp.setattr(MeshModel, "_issue_one", spy_issue)
    try:
        model.load_program((0, 0), assemble(src, cfg))
        model.start((0, 0))
        model.run()
    finally:
        mp.undo()
    assert len(takes) == 5 and len(done) == 5
    assert takes[2] == done[0] and takes[3] >= done[1]   # a job slot frees as a command ends
    assert issued[3] >= takes[2]      # the fourth add waited behind the third in the queue
    assert issued[4] >= takes[3]      # and the fifth behind the fourth

# -- timing ----------------------------------------------------------------------------------

def test_matmul_timing_matches_back_to_back_cycles():
    cfg = DEFAULT
    t = cfg.tile
    for ops in ([64], [64, 64, 64], [2, 7, 30], [4, 4, 4, 4]):
        start, prev, first_step = 0, None, None
        for k in ops:
            # A and B in different banks, last=0: the matrix unit's own pacing
            last_step, accept, _ = matmul_timing(cfg, Timing(), a=0, b=t.sram_depth, c=0, k=k,
                                                 m_folds=1, n_folds=1, last=False, acc=False,
                                                 start=start, prev_last_step=prev)
            if first_step is None:
                first_step = start + Timing().matmul_start_cycles
            start, prev = accept, last_step
        from tilemesh.tile.matrix import output_latency
        assert (last_step + output_latency(t.pe_cols) + t.pe_rows - first_step
                == back_to_back_cycles(t.pe_rows, t.pe_cols, ops)), ops


class _Clock:
    """A bare event queue for :class:`Network` on its own (MeshModel is its clock otherwise)."""

    def __init__(self):
        self.events, self.seq = [], 0

    def __call__(self, t, late, fn, *args):
        self.seq += 1
        heapq.heappush(self.events, (t, late, self.seq, fn, args))

    def run(self):
        while self.events:
            *_, fn, args = heapq.heappop(self.events)
            fn(*args)


def _network(cfg, timing=None):
    clock = _Clock()
    return Network(cfg, timing or Timing(), clock), clock


def _send(net, src, dst, flits, t, **kw):
    """Send one packet; the dict gets its ``injected`` and ``arrived`` cycles as they happen."""
    seen = {}
    net.send(src, dst, flits, t, on_injected=lambda c: seen.setdefault("injected", c),
             on_arrived=lambda c: seen.setdefault("arrived", c), **kw)
    return seen


def test_network_link_contention_and_latency():
    cfg = mesh(2, 3)
    tm = Timing()
    net, clock = _network(cfg, tm)
    a = _send(net, (0, 0), (2, 1), 5, 0)
    clock.run()
    hops = 3
    assert a["injected"] == 5
    # stored whole in the ingress checker, then 3 mesh links and the eject link, wormhole
    assert a["arrived"] == 5 + tm.ingress_cycles + hops * tm.router_cycles + 5
    b = _send(net, (1, 0), (2, 1), 5, 0)
    c = _send(net, (0, 0), (2, 1), 5, 0)                  # shares (1,0)->(2,0) onwards
    clock.run()
    # (1, 0) is one hop nearer: it gets the link first, then the two packets pass back to back
    assert c["arrived"] == b["arrived"] + 5
    assert net.flits == 15
    # A source slowed down (hold > flits) holds only its inject link longer: the ingress
    # checker sends the stored packet on at full rate.
    net, clock = _network(cfg, tm)
    d = _send(net, (0, 0), (2, 1), 5, 0, hold=9)
    clock.run()
    assert d["arrived"] == a["arrived"] + 4
    with pytest.raises(ValueError, match="Timing.ingress_cycles must be an integer >= 0"):
        Timing(ingress_cycles=-1)
    b = BusyCounter()
    for s, e in [(0, 10), (5, 12), (20, 25)]:
        b.add(s, e)
    assert b.total == 17
    with pytest.raises(ValueError, match="Timing.router_cycles must be an integer >= 0, not 1.5"):
        Timing(router_cycles=1.5)


def _stream(net, clock, sources, dst, packets, flits, t0=0):
    """Every source sends ``packets`` packets of ``flits`` to ``dst`` from cycle ``t0`` on, each
    as soon as the previous one left it (a DMA engine writing a block); per source, the cycles
    its packets left and arrived."""
    log = {s: ([], []) for s in sources}

    def offer(s, t):
        if len(log[s][0]) < packets:
            net.send(s, dst, flits, t, on_injected=lambda c: (log[s][0].append(c), offer(s, c)),
                     on_arrived=log[s][1].append)

    for s in sources:
        offer(s, t0)
    clock.run()
    return log


def test_network_back_pressure_reaches_the_source():
    # A long packet holds the eject link of (2, 1); a stream from (0, 1) to (2, 1) fills the
    # buffers on its way (ingress checker and router FIFOs: 35 + 16 + 16 flits at the default
    # depth), after which its source sends no faster than the eject link drains.
    cfg = mesh(2, 3)
    net, clock = _network(cfg)
    blocker = _send(net, (2, 0), (2, 1), 200, 0)          # on the eject link from cycle 203
    log = _stream(net, clock, [(0, 1)], (2, 1), 6, 17, t0=210)
    injected, arrived = log[(0, 1)]
    assert injected[:3] == [227, 244, 261]                 # line rate while buffers take them
    assert injected[-1] > blocker["arrived"]               # the sixth waited for the blocker
    assert arrived[0] >= blocker["arrived"] + 17
    assert arrived == sorted(arrived) and len(arrived) == 6


def test_network_round_robin_on_a_shared_link():
    # The host port is the west output of router (0, 0); its inputs are Local (tile (0, 0)),
    # East (tile (1, 0)) and South (tiles (0, 1) and (1, 1), XY routes). The router takes
    # turns per input, so (0, 0) and (1, 0) get a third each and finish first, after about 3 x
    # their own flits; (0, 1) and (1, 1) share the last third and finish last. (Links booked in
    # the order packets are sent gave (0, 0) a quarter: a nearer source does not win.)
    from tilemesh.model.cycles import HOST

    cfg = preset("default")
    flits, packets = 17, 12
    own = flits * packets
    tiles = [(0, 0), (1, 0), (0, 1), (1, 1)]
    log = _stream(*_network(cfg), tiles, HOST, packets, flits)
    last = {s: log[s][1][-1] for s in tiles}
    assert max(last[(0, 0)], last[(1, 0)]) < min(last[(0, 1)], last[(1, 1)])
    for s in [(0, 0), (1, 0)]:
        assert 2.9 * own <= last[s] <= 3.1 * own, last
    # the port carried every flit, one per cycle
    assert 4 * own <= max(last.values()) <= 4 * own + 40


def test_bank_share_round_robin():
    # one port against one: each side loses a cycle per word the other reads meanwhile
    assert bank_share(16, 1, 100, 1) == (16, 16)
    # against a unit reading with two ports (A and B in the bank): twice the loss for the one
    assert bank_share(16, 1, 100, 2) == (32, 16)
    # the other side has little left: the loss ends with it
    assert bank_share(16, 1, 6, 2) == (6, 3)
    # a side that reads now and then (a MATMUL's old C rows: 30 words over 600 cycles) costs a
    # DMA packet of 8 words, and loses, only as often as the two meet
    assert bank_share(8, 1, 30, 1, 30 / 600) == pytest.approx((0.4, 0.4))


def test_gemm_256_on_default_models_in_seconds():
    """A 256x256x256 GEMM's worth of work on the default 2x2 mesh: each tile computes its
    128 x 128 C block in 16 sub-blocks of 32 x 32 (k = 256), prefetching the next B block from
    its neighbour while the matrix unit works, and writes each C sub-block to the host."""
    cfg = DEFAULT
    w = matmul_operand_words(cfg)
    r = rng(9)
    k, sub = 256, 32
    mf = nf = sub // 4
    a_sub, b_sub, c_sub = mf * k * w["a"], nf * k * w["b"], sub * nf * w["c"]
    A, BUF, C, BSTORE = 0, (8192, 8192 + b_sub), 12288, 14336
    model = MeshModel(cfg)
    tiles = [(x, y) for y in range(2) for x in range(2)]
    data = {}
    for (x, y) in tiles:
        a = r.integers(-128, 128, (128, k))
        bs = r.integers(-128, 128, (k, sub))
        data[(x, y)] = (a, bs)
        model.write_sram((x, y), A, np.concatenate([a_words(cfg, a[i * 32:(i + 1) * 32])
                                                    for i in range(4)]))
        model.write_sram((x, y), BSTORE, b_words(cfg, bs))
    for (x, y) in tiles:
        src = ((x + 1) % 2, y)
        p = Program(cfg)
        p.dma_read(tile=src, local=BUF[0], remote=BSTORE, rows=1, cols=b_sub, signal=0)
        p.ar_set(reg=1, value=A)
        p.ar_set(reg=2, value=0)
        with p.loop(4):               # M sub-blocks
            with p.loop(2):           # N sub-blocks, two per iteration (ping, pong)
                for s in (0, 1):
                    p.wait(sem=s)
                    p.dma_read(tile=src, local=BUF[1 - s], remote=BSTORE, rows=1, cols=b_sub,
                               signal=1 - s)
                    p.matmul(a=p_reg(1, 0), b=BUF[s], c=C + s * c_sub,
                             c_stride=nf * w["c"], k=k, m_folds=mf, n_folds=nf)
                    p.fence("matmul")
                    # C is double-buffered too: the DMA queue is in order, so this write has
                    # left before the B read that releases the next use of the buffer lands
                    p.dma_write(host=True, local=C + s * c_sub, remote=p_reg(2, 0), rows=1,
                                cols=c_sub)
                    p.ar_add(reg=2, value=c_sub)
            p.ar_add(reg=1, value=a_sub)
        p.wait(sem=0)
        p.notify(code=0x600D)
        p.halt()
        model.load_program((x, y), p)
    for tile in tiles:
        model.start(tile)
    t0 = time.perf_counter()
    notes = run_until_notified(model, 4, timeout=10_000_000)
    wall = time.perf_counter() - t0
    model.run()
    rep = model.report()
    print(f"256^3 on default: {rep.cycles} cycles, utilisation {rep.utilisation:.3f}, "
          f"{rep.flits} flits, modelled in {wall:.2f} s")
    assert sorted(n.tile for n in notes) == sorted(tiles)
    assert rep.macs == 256 * 256 * 256
    assert wall < 30
    for (x, y), (a, _) in data.items():
        bs = data[((x + 1) % 2, y)][1]         # B comes from the neighbour
        buf = model.host_buffer((x, y))
        for i in range(4):
            for j in range(4):
                off = (i * 4 + j) * c_sub
                got = c_matrix(cfg, buf[off:off + c_sub], sub, sub)
                assert (got == a[i * 32:(i + 1) * 32] @ bs).all(), ((x, y), i, j)
    # the textbook bound: one 32x32 sub-block is 64 folds of k=256 steps on a 4x4 array
    assert rep.cycles > 64 * 256 * 16
    assert rep.utilisation < 1.0


def test_simd_vector_words_in_model_match_layouts():
    assert MeshModel(ODD)._vw == {f: simd_vector_words(ODD, f) for f in ElemFormat}


# -- the model as a back end of the host driver ------------------------------------------------

def test_host_driver_over_model_transport():
    import asyncio

    from tilemesh.host.driver import HostDriver, HostTimeout
    from tilemesh.model.machine import ModelTransport

    cfg = mesh(2, 2)
    r = rng(11)
    a = r.integers(-128, 128, (4, 16))
    b = r.integers(-128, 128, (16, 4))
    model = MeshModel(cfg)
    drv = HostDriver(cfg, ModelTransport(model), timeout=100_000)

    async def main():
        await drv.reset(1, 1)
        await drv.write_sram(1, 1, 0x000, [int(v) for v in a_words(cfg, a)])
        await drv.write_sram(1, 1, 0x100, [int(v) for v in b_words(cfg, b)])
        await drv.write_csr(1, 1, "TIMEOUT", 123_456)
        await drv.load_program(1, 1, """
            matmul a=0 b=0x100 c=0x200 c_stride=4 k=16
            fence matmul
            dma.write host local=0x200 remote=0x40 rows=2 cols=8 signal=3
            notify code=9 value=0xBEEF
            wait sem=1
            halt
        """)
        await drv.start(1, 1)
        note = await drv.wait_notify()
        await drv.wait_signal(1, 1, 3)
        st = await drv.read_status(1, 1)
        assert (st.state, st.wait_sem, st.wait_count) == (TileState.WAITING, 1, 1)
        with pytest.raises(HostTimeout):
            await drv.wait_notify(timeout=500)
        await drv.signal(1, 1, 1)
        for _ in range(50):
            if (await drv.read_status(1, 1)).state == TileState.HALTED:
                break
        words = await drv.read_sram(1, 1, 0x200, 16)
        return note, words, await drv.read_csr(1, 1, "TIMEOUT"), \
            await drv.read_status(1, 1), await drv.read_csr(1, 1, "MATMUL_STEPS")

    note, words, timeout, st, steps = asyncio.run(main())
    assert (note.tile, note.code, note.value, note.pc) == ((1, 1), 9, 0xBEEF, 3)
    assert (c_matrix(cfg, words, 4, 4) == a @ b).all()
    assert [drv.results[(1, 1)][0x40 + i] for i in range(16)] == [int(w) for w in words]
    assert timeout == 123_456 and steps == 16
    assert st.state == TileState.HALTED and st.error == ErrorCode.NONE


# -- calibration against the RTL (Amaranth simulator of tilemesh.mesh.Mesh) ---------------------

CALIBRATION = {
    # name: (program of tile (0,0), program of tile (1,0) or None); operands' banks matter
    "matmul_chain": ("loop count=4 {\nmatmul a=0 b=0x200 c=0x400 c_stride=4 k=16\n}\n", None),
    "matmul_folds": ("matmul a=0 b=0x1000 c=0x2000 c_stride=16 k=4 m_folds=4 n_folds=4\n", None),
    "simd_requant": ("simd.requant x=0 d=0x200 dfmt=data count=16\n", None),
    "dma_write_rows": ("dma.write tile=(1,0) local=0 remote=0x100 rows=8 cols=5 "
                       "local_stride=7\n", None),
    "dma_read_signal": ("dma.read tile=(1,0) local=0x300 remote=0 rows=2 cols=16 signal=2\n"
                        "wait sem=2\n", None),
    "signal_round_trip": ("signal tile=(1,0) sem=1\nwait sem=0\n",
                          "wait sem=1\nsignal tile=(0,0) sem=0\nhalt"),
    "bank_conflict": ("dma.write tile=(1,0) local=0 remote=0x100 rows=1 cols=64\n"
                      "matmul a=0 b=0x200 c=0x400 c_stride=4 k=64\n", None),
    # the DMA starts second: the matrix engine, already reading, loses cycles too
    "bank_conflict_late": ("matmul a=0 b=0x1000 c=0x2000 c_stride=4 k=96\n"
                           "dma.write tile=(1,0) local=0x100 remote=0x100 rows=1 cols=48\n",
                           None),
    # the READ_REQ responder's SRAM reads compete with its own matrix engine
    "responder_conflict": ("dma.read tile=(1,0) local=0x300 remote=0x40 rows=1 cols=48 "
                           "signal=2\nwait sem=2\n",
                           "matmul a=0 b=0x1000 c=0x2000 c_stride=4 k=128\nhalt"),
}
CALIBRATION_CSRS = ("CYCLES", "DMA_BUSY", "MATMUL_BUSY", "SIMD_BUSY", "MATMUL_STEPS")


async def _calibration_run(drv, first, second):
    await drv.load_program(0, 0, first + "notify code=1\nhalt")
    if second is not None:
        await drv.load_program(1, 0, second)
        await drv.start(1, 0)
    await drv.start(0, 0)
    await drv.wait_notify(tile=(0, 0))
    for _ in range(100):
        if (await drv.read_status(0, 0)).state == TileState.HALTED:
            break
    out = {c: await drv.read_csr(0, 0, c) for c in CALIBRATION_CSRS}
    await drv.reset(0, 0)
    await drv.reset(1, 0)
    return out


def test_model_cycles_within_5_percent_of_rtl():
    """Each program runs on the Amaranth-simulated 1x2 mesh and on the model through the same
    host driver calls; the model's CYCLES and busy counters are within 5 % (and 3 cycles) of the
    RTL's, including both commands of a bank conflict (whichever started first)."""
    import asyncio
    import random

    from amaranth.sim import Simulator

    from tilemesh.host.driver import HostDriver
    from tilemesh.mesh import Mesh
    from tilemesh.model.machine import ModelTransport
    from tilemesh_sim.mesh_bench import PysimTransport

    cfg = mesh(1, 2)
    model = {}
    for name, (first, second) in CALIBRATION.items():
        drv = HostDriver(cfg, ModelTransport(MeshModel(cfg)), timeout=100_000)
        model[name] = asyncio.run(_calibration_run(drv, first, second))

    dut = Mesh(cfg)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    transport = PysimTransport(dut, cfg, rnd=random.Random(SEED))
    drv = HostDriver(cfg, transport, timeout=100_000)
    transport.add_to(sim)
    rtl = {}

    async def bench(ctx):
        transport.ctx = ctx
        for name, (first, second) in CALIBRATION.items():
            rtl[name] = await _calibration_run(drv, first, second)

    sim.add_testbench(bench)
    sim.run()

    def close(a, b):
        return abs(a - b) <= max(3, 0.05 * b)

    for name in CALIBRATION:
        print(f"{name:18s} " + "  ".join(f"{c}={model[name][c]}/{rtl[name][c]}"
                                          for c in CALIBRATION_CSRS))
    for name in CALIBRATION:
        m, r = model[name], rtl[name]
        assert m["MATMUL_STEPS"] == r["MATMUL_STEPS"], name
        assert close(m["CYCLES"], r["CYCLES"]), (name, m, r)
        for c in ("DMA_BUSY", "MATMUL_BUSY", "SIMD_BUSY"):
            assert close(m[c], r[c]), (name, c, m, r)
