"""Bit-exact numpy references for every datapath block.

Integers are modelled exactly: values are held in int64 (or Python ints where wider) and wrapped
to the hardware's width with :func:`wrap`, so a result here is what the RTL must produce bit for
bit. Each block's section below is its specification in executable form.
"""

import numpy as np

__all__ = ["wrap", "saturate"]


def wrap(x, bits):
    """Two's-complement wrap of integer array ``x`` to ``bits`` (<= 64) signed bits."""
    x = np.asarray(x).astype(np.int64)
    if bits >= 64:
        return x
    mask = (1 << bits) - 1
    half = 1 << (bits - 1)
    return ((x & mask) ^ half) - half


def saturate(x, bits):
    """Clamp integer array ``x`` to the signed range of ``bits``."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return np.clip(np.asarray(x).astype(np.int64), lo, hi)


# -- SIMD unit ----------------------------------------------------------------------------------
# The specification of tilemesh.tile.simd.SimdUnit and of docs/simd.md. Arithmetic is done on
# Python integers (object arrays), so no intermediate can overflow: the only narrowing steps are
# the ones written here (wrap to acc_bits, saturate to out_bits).

__all__ += ["round_shift", "simd", "SIMD_OP_SEMANTICS", "simd_op_table_markdown", "SramModel"]

# Per op: the result of one lane and the inputs it reads. docs/simd.md embeds the table that
# simd_op_table_markdown() renders from this (a test keeps the two equal); simd() implements it.
SIMD_OP_SEMANTICS = {
    "ADD": ("wrap(x + y)", "x, y"),
    "SUB": ("wrap(x - y)", "x, y"),
    "MUL": ("wrap(x * y)", "x, y"),
    "MIN": ("min(x, y)", "x, y"),
    "MAX": ("max(x, y)", "x, y"),
    "RELU": ("max(x, 0)", "x"),
    "SHR": ("round_shift(x, shift)", "x, shift"),
    "SAT": ("sat(x)", "x"),
    "REQUANT": ("sat(round_shift(x * scale, shift) + zero_point)", "x, scale, shift, zero_point"),
}


def simd_op_table_markdown():
    """The SIMD op table of docs/simd.md, rendered from ``SimdOp`` and the semantics above."""
    from tilemesh.layouts import SimdOp

    rows = ["| op | code | result per lane | reads |", "|---|---|---|---|"]
    for op in SimdOp:
        formula, reads = SIMD_OP_SEMANTICS[op.name]
        rows.append(f"| `{op.name}` | {op.value} | `{formula}` | {reads} |")
    invalid = sorted(set(range(1 << SimdOp.as_shape().width)) - SimdOp.valid_values())
    rows.append(f"| invalid | {invalid[0]}..{invalid[-1]} | `x`, and `error` is set | x |")
    return "\n".join(rows) + "\n"


def _wrap_int(v, bits):
    # Two's-complement wrap of Python-int (object) arrays, exact for any width.
    half = 1 << (bits - 1)
    return ((v + half) & ((1 << bits) - 1)) - half


def _check_range(name, v, bits, *, is_signed=True):
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if is_signed else (0, (1 << bits) - 1)
    arr = np.asarray(v, dtype=object)
    if arr.size and (arr.min() < lo or arr.max() > hi):
        kind = "signed" if is_signed else "unsigned"
        raise ValueError(f"SIMD {name} must be {kind} {bits}-bit ({lo}..{hi}), not {v!r}")


def round_shift(x, shift):
    """``x / 2**shift`` rounded to the nearest integer, ties away from zero (gemmlowp's
    ``RoundingDivideByPOT``): ``round_shift(5, 1) == 3``, ``round_shift(-5, 1) == -3``.

    Exact for integers of any size (``x`` may be an int, a list or an array; object arrays of
    Python ints stay exact). ``shift == 0`` returns ``x``.
    """
    x = np.asarray(x, dtype=object)
    if shift < 0:
        raise ValueError(f"SIMD shift must be a non-negative integer, not {shift!r}")
    if shift == 0:
        return x
    mag = (np.abs(x) + (1 << (shift - 1))) >> shift
    return np.where(x < 0, -mag, mag)


def simd(op, x, y=None, *, broadcast=False, shift=0, scale=1, zero_point=0, acc_bits=32,
         out_bits=8, scale_bits=16):
    """The result of one SIMD beat (vectorised over the lanes, and over any leading axes).

    Parameters
    ----------
    op : SimdOp or int
        The operation (an int may be an invalid encoding 9..15).
    x, y : array of int
        Operand vectors, signed ``acc_bits`` each; ``y`` defaults to zeros.
    broadcast : bool
        Use ``y[..., 0]`` for every lane (scalar operand / bias).
    shift : int
        Unsigned ``simd_shift_bits(acc_bits, scale_bits)``-bit shift of SHR and REQUANT.
    scale : int
        Signed ``scale_bits`` multiplier of REQUANT.
    zero_point : int
        Signed ``acc_bits`` offset REQUANT adds after the shift.

    Returns
    -------
    (numpy.ndarray of int64, bool)
        The output lanes (signed ``acc_bits``; SAT/REQUANT results lie in the signed range of
        ``out_bits``) and the error flag, set only for an invalid ``op`` (the result is then
        ``x`` unchanged).

    Notes
    -----
    ``wrap`` is two's-complement wrap-around to ``acc_bits``; ``sat`` clamps to the signed
    range of ``out_bits``; ``round_shift`` is :func:`round_shift`. REQUANT forms the exact
    product ``x * scale`` (``acc_bits + scale_bits`` bits), rounds once, adds the zero point
    exactly and saturates: no intermediate is ever truncated.
    """
    from tilemesh.layouts import SimdOp, simd_shift_bits

    _check_range("x", x, acc_bits)
    x = np.asarray(x, dtype=object)
    y = np.zeros_like(x) if y is None else np.asarray(y, dtype=object)
    _check_range("y", y, acc_bits)
    _check_range("shift", shift, simd_shift_bits(acc_bits, scale_bits), is_signed=False)
    _check_range("scale", scale, scale_bits)
    _check_range("zero_point", zero_point, acc_bits)
    if not 2 <= out_bits <= acc_bits:
        raise ValueError(f"SIMD out_bits must be in 2..{acc_bits}, not {out_bits!r}")
    shift, scale, zero_point = int(shift), int(scale), int(zero_point)
    if broadcast:
        y = np.broadcast_to(y[..., :1], x.shape)

    def sat(v):
        lo, hi = -(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1
        return np.minimum(np.maximum(v, lo), hi)

    code = int(op.value if isinstance(op, SimdOp) else op)
    if code not in SimdOp.valid_values():
        return x.astype(np.int64), True
    op = SimdOp(code)
    if op == SimdOp.ADD:
        r = _wrap_int(x + y, acc_bits)
    elif op == SimdOp.SUB:
        r = _wrap_int(x - y, acc_bits)
    elif op == SimdOp.MUL:
        r = _wrap_int(x * y, acc_bits)
    elif op == SimdOp.MIN:
        r = np.minimum(x, y)
    elif op == SimdOp.MAX:
        r = np.maximum(x, y)
    elif op == SimdOp.RELU:
        r = np.maximum(x, 0)
    elif op == SimdOp.SHR:
        r = round_shift(x, shift)
    elif op == SimdOp.SAT:
        r = sat(x)
    else:  # REQUANT
        r = sat(round_shift(x * scale, shift) + zero_point)
    return np.asarray(r, dtype=object).astype(np.int64), False


# -- SRAM bank ----------------------------------------------------------------------------------

class SramModel:
    """Cycle model of ``tilemesh.tile.sram.SramBank``: the words and the same-cycle rule.

    Feed it, cycle by cycle, the write and the read request the bank accepted in that cycle;
    :meth:`cycle` returns the word that read returns. A write is visible to reads accepted in
    later cycles; a read accepted in the same cycle as a write to its address returns the new
    word when ``transparent`` (the default), else the old one. Words not written read as
    ``init`` (else 0).
    """

    def __init__(self, width, depth, *, transparent=True, init=()):
        self.width, self.depth, self.transparent = width, depth, transparent
        self.words = [0] * depth
        for i, v in enumerate(init):
            self.words[i] = int(v) & ((1 << width) - 1)

    def cycle(self, *, write=None, read=None):
        """One clock cycle: ``write`` is ``(addr, data)`` or None, ``read`` an address or None.
        Returns the word read (or None)."""
        result = None
        if read is not None and not self.transparent:
            result = self.words[read]
        if write is not None:
            addr, value = write
            self.words[addr] = int(value) & ((1 << self.width) - 1)
        if read is not None and self.transparent:
            result = self.words[read]
        return result


# -- Network on chip ----------------------------------------------------------------------------
# The specification of the packet check in tilemesh.noc.ingress.Ingress (docs/noc.md): which
# packets enter the network, and the reason counted for each one that does not.

__all__ += ["noc_drop_reason"]


def noc_drop_reason(cfg, dst_x, dst_y, opcode, length, last_index):
    """Why a packet entering the mesh of ``cfg`` is dropped, or None when it is delivered.

    ``dst_x``, ``dst_y``, ``opcode`` and ``length`` are the raw header fields (integers);
    ``last_index`` is the index of the packet's first flit with ``last`` set (0 = the header).
    The first reason that applies, in this order, is the one counted: ``"off_mesh"`` (neither a
    tile nor the host address), ``"bad_opcode"`` (6 or 7), ``"bad_length"`` (above
    ``cfg.noc.max_packet_flits``), ``"bad_tail"`` (``last_index != length``).
    """
    from tilemesh.layouts import Opcode
    from tilemesh.noc.routing import host_address

    on_mesh = dst_x < cfg.cols and dst_y < cfg.rows
    if not on_mesh and (dst_x, dst_y) != host_address(cfg):
        return "off_mesh"
    if opcode not in Opcode.valid_values():
        return "bad_opcode"
    if length > cfg.noc.max_packet_flits:
        return "bad_length"
    if last_index != length:
        return "bad_tail"
    return None


# -- Matrix unit --------------------------------------------------------------------------------
#
# The output-stationary array consumes one *step* per cycle: column k of an A block (R values)
# and row k of a B block (C values), and adds their outer product into its R x C accumulators.
# ``first`` on a step clears the accumulators before adding; ``last`` emits them as a C tile and
# zeroes them (a K-chunked GEMM accumulates across operations by leaving ``last`` off all but the
# final chunk and ``first`` off all but the first). Accumulators start at zero and wrap to
# ``acc_bits`` in two's complement.

__all__ += ["gemm", "matmul_tiles", "tile_steps"]


def gemm(a, b, acc_bits):
    """``a @ b`` of integer matrices with the sum wrapped to ``acc_bits`` (<= 64) signed bits.

    Wrapping once at the end equals wrapping after every addition, because both are arithmetic
    modulo 2**acc_bits (int64 itself wraps modulo 2**64, which ``acc_bits`` divides).
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"gemm needs an M x K and a K x N matrix, not {a.shape} and {b.shape}")
    return wrap(a @ b, acc_bits)


def tile_steps(a, b, *, first=True, last=True):
    """The stream-level steps of one tile operation ``C = a @ b`` (a: R x K, b: K x C).

    Returns ``(a_steps, b_steps, first, last)``: K x R, K x C and two length-K boolean arrays with
    ``first`` on step 0 (if ``first``) and ``last`` on step K - 1 (if ``last``).
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0] or a.shape[1] < 1:
        raise ValueError(f"a tile operation needs an R x K and a K x C block with K >= 1, "
                         f"not {a.shape} and {b.shape}")
    k = a.shape[1]
    f = np.zeros(k, dtype=bool)
    e = np.zeros(k, dtype=bool)
    f[0], e[k - 1] = first, last
    return a.T.copy(), b.copy(), f, e


def matmul_tiles(a_steps, b_steps, first, last, acc_bits):
    """The C tiles the matrix unit emits for a sequence of steps.

    Parameters
    ----------
    a_steps : array (S, R)
        ``a_steps[s]`` is the ``a`` beat of step s (a column of A).
    b_steps : array (S, C)
        ``b_steps[s]`` is the ``b`` beat of step s (a row of B).
    first, last : array (S,) of bool
        The step flags (see the section comment).
    acc_bits : int
        Accumulator width (<= 64).

    Returns
    -------
    array (T, R, C) of int64
        One tile per step with ``last`` set, in order.
    """
    a_steps = np.asarray(a_steps, dtype=np.int64)
    b_steps = np.asarray(b_steps, dtype=np.int64)
    first = np.asarray(first, dtype=bool)
    last = np.asarray(last, dtype=bool)
    steps = a_steps.shape[0]
    if (a_steps.ndim != 2 or b_steps.ndim != 2 or b_steps.shape[0] != steps
            or first.shape != (steps,) or last.shape != (steps,)):
        raise ValueError(f"matmul_tiles needs (S, R), (S, C), (S,), (S,) arrays, not "
                         f"{a_steps.shape}, {b_steps.shape}, {first.shape}, {last.shape}")
    rows, cols = a_steps.shape[1], b_steps.shape[1]
    acc = np.zeros((rows, cols), dtype=np.int64)
    tiles = []
    for s in range(steps):
        if first[s]:
            acc[:] = 0
        acc += np.outer(a_steps[s], b_steps[s])   # int64 wraps modulo 2**64: exact after wrap()
        if last[s]:
            tiles.append(wrap(acc, acc_bits))
            acc[:] = 0
    return np.array(tiles, dtype=np.int64).reshape(len(tiles), rows, cols)


# -- NoC benchmark traffic ----------------------------------------------------------------------
# The specification of tilemesh.bench.traffic: each tile's random number generator, the draws it
# takes from it, the destination of every traffic pattern, the packets a generator must create
# and the payload words a sink checks. Python integers, bit for bit what the hardware computes.

__all__ += ["xorshift64", "splitmix64", "traffic_seed", "traffic_draw", "TRAFFIC_PATTERNS",
            "traffic_destination", "traffic_schedule", "traffic_payload_word"]

_MASK64 = (1 << 64) - 1
_TRAFFIC_FILL = int("a5" * 32, 16)  # payload bits above the packed fields: an alternating 1010

TRAFFIC_PATTERNS = ("uniform", "transpose", "bit_complement", "hotspot", "neighbour")


def xorshift64(state):
    """One step of Marsaglia's xorshift64 with shifts (13, 7, 17): a linear-feedback generator
    over GF(2)^64 of period 2**64 - 1 (a non-zero state never reaches zero)."""
    state ^= (state << 13) & _MASK64
    state ^= state >> 7
    state ^= (state << 17) & _MASK64
    return state


def splitmix64(i):
    """Vigna's splitmix64 output for counter ``i``: the per-tile seed constants."""
    z = (i * 0x9E3779B97F4A7C15 + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def traffic_seed(seed, tile):
    """State in cycle 0 of the generator of tile number ``tile`` (``y * cols + x``) for the
    32-bit run ``seed``: the seed in both halves, XOR ``splitmix64(tile)``. The constant's two
    halves differ (checked for every tile of a 32x32 mesh), so the state is never zero."""
    return ((seed & 0xFFFFFFFF) * 0x1_0000_0001) ^ splitmix64(tile)


def traffic_draw(state):
    """The four 16-bit fields a generator uses from one state: ``inject`` (bits 48..63, compared
    with the injection threshold), ``x`` and ``y`` (bits 32..47 and 16..31, scaled to a column and
    a row), ``aux`` (bits 0..15: hotspot choice, neighbour direction)."""
    return {"inject": state >> 48, "x": (state >> 32) & 0xFFFF, "y": (state >> 16) & 0xFFFF,
            "aux": state & 0xFFFF}


def traffic_destination(pattern, state, x, y, rows, cols, *, hotspot=None, hotspot_threshold=0):
    """Destination ``(dst_x, dst_y)`` that tile (``x``, ``y``) picks from ``state``.

    ``uniform``: every tile (itself included) equally likely: column ``(draw.x * cols) >> 16``,
    row ``(draw.y * rows) >> 16``. ``transpose``: (y, x) (square meshes). ``bit_complement``:
    (cols-1-x, rows-1-y). ``hotspot``: tile ``hotspot`` when ``draw.aux < hotspot_threshold``
    (a fraction ``threshold / 65536`` of the packets), otherwise uniform. ``neighbour``: the
    neighbour north, east, south or west for ``draw.aux % 4`` = 0, 1, 2, 3; off the mesh, the
    opposite neighbour; if neither exists (a mesh one tile wide), the tile itself.
    """
    d = traffic_draw(state)
    ux, uy = (d["x"] * cols) >> 16, (d["y"] * rows) >> 16
    if pattern == "uniform":
        return ux, uy
    if pattern == "transpose":
        if rows != cols:
            raise ValueError(f"transpose traffic needs a square mesh, not {rows}x{cols}")
        return y, x
    if pattern == "bit_complement":
        return cols - 1 - x, rows - 1 - y
    if pattern == "hotspot":
        hx, hy = hotspot if hotspot is not None else (cols // 2, rows // 2)
        return (hx, hy) if d["aux"] < hotspot_threshold else (ux, uy)
    if pattern == "neighbour":
        return _neighbour(d["aux"] & 3, x, y, rows, cols)
    raise ValueError(f"traffic pattern must be one of {', '.join(TRAFFIC_PATTERNS)}, "
                     f"not {pattern!r}")


def _neighbour(direction, x, y, rows, cols):
    steps = ((0, -1), (1, 0), (0, 1), (-1, 0))  # north, east, south, west (layouts.Port order)
    for dx, dy in (steps[direction], steps[direction ^ 2]):
        if 0 <= x + dx < cols and 0 <= y + dy < rows:
            return x + dx, y + dy
    return x, y


def traffic_schedule(pattern, seed, x, y, rows, cols, threshold, cycles, **kwargs):
    """Packets the generator of tile (``x``, ``y``) creates in cycles ``0 .. cycles-1``: a list
    of ``(cycle, dst_x, dst_y)``; its sequence numbers are the list indices.

    In cycle ``t`` the generator's state is ``xorshift64`` applied ``t`` times to
    :func:`traffic_seed`; it creates a packet when ``draw.inject < threshold`` (``threshold`` in
    0..65536: a packet with probability ``threshold / 65536`` per cycle). ``kwargs`` go to
    :func:`traffic_destination`.
    """
    state = traffic_seed(seed, y * cols + x)
    packets = []
    for t in range(cycles):
        if (state >> 48) < threshold:
            packets.append((t, *traffic_destination(pattern, state, x, y, rows, cols, **kwargs)))
        state = xorshift64(state)
    return packets


def traffic_payload_word(src, seq, index, bits):
    """Payload flit ``index`` (1 = first after the header) of packet ``seq`` from tile number
    ``src``: index in bits 0..8, source in bits 9..18, sequence number from bit 19, XOR a 1010
    fill, truncated to ``bits``. Any flipped, stuck or misplaced bit shows."""
    word = (index & 0x1FF) | ((src & 0x3FF) << 9) | (seq << 19)
    return (word ^ _TRAFFIC_FILL) & ((1 << bits) - 1)


# -- Tile instructions: SRAM data layout, MATMUL and SIMD on an SRAM image ----------------------
# The specification of docs/tile-design.md "Data layout in SRAM": how a vector packs into SRAM
# words, and what one MATMUL or SIMD instruction does to a tile's SRAM (addresses are effective:
# address registers already added). ``sram`` is a list of Python ints (words may exceed 64 bits).

__all__ += ["pack_vector", "unpack_vector", "matmul_instr", "simd_instr"]


def pack_vector(values, elem_bits, word_bits):
    """The SRAM words of a vector: element ``i`` at bit ``i * elem_bits`` of the words'
    concatenation (word 0 in the low bits), zero-padded to whole words. ``values`` may be signed
    or unsigned ``elem_bits`` integers."""
    from ..layouts import packed_words

    lo, hi = -(1 << (elem_bits - 1)), (1 << elem_bits) - 1
    bits = 0
    for i, v in enumerate(values):
        v = int(v)
        if not lo <= v <= hi:
            raise ValueError(f"vector element {i} does not fit {elem_bits} bits: {v}")
        bits |= (v & hi) << (i * elem_bits)
    mask = (1 << word_bits) - 1
    return [(bits >> (j * word_bits)) & mask
            for j in range(packed_words(len(values), elem_bits, word_bits))]


def unpack_vector(words, n, elem_bits, word_bits):
    """The ``n`` signed ``elem_bits`` elements packed in ``words`` (see :func:`pack_vector`)."""
    bits = 0
    for j, w in enumerate(words):
        bits |= (int(w) & ((1 << word_bits) - 1)) << (j * word_bits)
    mask, half = (1 << elem_bits) - 1, 1 << (elem_bits - 1)
    return np.array([(((bits >> (i * elem_bits)) & mask) ^ half) - half for i in range(n)],
                    dtype=np.int64)


def matmul_instr(sram, cfg, *, a, b, c, c_stride, k, m_folds=1, n_folds=1, first=True,
                 last=True, acc=False, state=None):
    """One MATMUL instruction on ``sram`` (modified in place) for a tile of ``cfg``.

    Output tile (i, j), i < m_folds (outer), j < n_folds, runs ``k`` steps: step s takes the A
    column at ``a + (i*k + s) * a_words`` (``pe_rows`` data elements) and the B row at
    ``b + (j*k + s) * b_words`` (``pe_cols`` data elements). ``first`` starts from zero, else
    from ``state`` (the accumulators an earlier MATMUL with ``last=0`` returned). With ``last``,
    row r of the tile is written (``acc``: added, wrapping) at ``c + (i*R + r) * c_stride +
    j * c_words`` as ``pe_cols`` accumulators; otherwise the accumulators are returned.
    Words per vector: :func:`tilemesh.layouts.matmul_operand_words`.
    """
    from ..layouts import matmul_operand_words

    t, word = cfg.tile, cfg.word_bits
    w = matmul_operand_words(cfg)
    if m_folds * n_folds > 1 and not (first and last):
        raise ValueError("MATMUL with several folds must have first and last set")
    if not first and state is None:
        raise ValueError("MATMUL with first=0 needs the state of an open accumulation")
    for i in range(m_folds):
        for j in range(n_folds):
            accum = np.zeros((t.pe_rows, t.pe_cols), dtype=np.int64) if first \
                else np.array(state, dtype=np.int64)
            for s in range(k):
                pa = a + (i * k + s) * w["a"]
                pb = b + (j * k + s) * w["b"]
                col = unpack_vector(sram[pa:pa + w["a"]], t.pe_rows, t.data_bits, word)
                row = unpack_vector(sram[pb:pb + w["b"]], t.pe_cols, t.data_bits, word)
                accum += np.outer(col, row)   # int64 wraps modulo 2**64: exact after wrap()
            accum = wrap(accum, t.acc_bits)
            if not last:
                return accum
            for r in range(t.pe_rows):
                pc = c + (i * t.pe_rows + r) * c_stride + j * w["c"]
                out = accum[r]
                if acc:
                    old = unpack_vector(sram[pc:pc + w["c"]], t.pe_cols, t.acc_bits, word)
                    out = wrap(out + old, t.acc_bits)
                sram[pc:pc + w["c"]] = pack_vector(out, t.acc_bits, word)
    return None


def simd_instr(sram, cfg, *, func, x, d, count, y=0, ymode="vector", xfmt="acc", yfmt="acc",
               dfmt="acc", shift=0, scale=1, zero_point=0):
    """One SIMD instruction on ``sram`` (modified in place) for a tile of ``cfg``.

    Vector v (``simd_lanes`` elements) of x is at ``x + v * x_words``, its result goes to
    ``d + v * d_words``; ``ymode`` "vector" reads y vector v, "repeat" y vector 0 every time,
    "scalar" element 0 of y in every lane, "none" zeros. Formats "acc" (``acc_bits``) or "data"
    (``data_bits``; loads sign-extend, stores keep the low bits). Each beat is :func:`simd` with
    ``out_bits = data_bits``; ``shift`` is clamped to the unit's largest shift and ``zero_point``
    wrapped to ``acc_bits``. Vectors are processed in order, so ``d == x`` works in place.
    """
    from ..layouts import SIMD_SCALE_BITS, packed_words, simd_shift_bits

    t, word = cfg.tile, cfg.word_bits
    bits = {"acc": t.acc_bits, "data": t.data_bits}
    vw = {f: packed_words(t.simd_lanes, bits[f], word) for f in bits}
    shift = min(shift, (1 << simd_shift_bits(t.acc_bits, SIMD_SCALE_BITS)) - 1)
    zero_point = int(wrap(zero_point, t.acc_bits))
    lanes = t.simd_lanes
    for v in range(count):
        px, pd = x + v * vw[xfmt], d + v * vw[dfmt]
        xv = unpack_vector(sram[px:px + vw[xfmt]], lanes, bits[xfmt], word)
        if ymode == "none":
            yv = np.zeros(lanes, dtype=np.int64)
        elif ymode == "scalar":
            n = packed_words(1, bits[yfmt], word)
            yv = np.repeat(unpack_vector(sram[y:y + n], 1, bits[yfmt], word), lanes)
        else:
            py = y + (v * vw[yfmt] if ymode == "vector" else 0)
            yv = unpack_vector(sram[py:py + vw[yfmt]], lanes, bits[yfmt], word)
        out, _ = simd(func, xv, yv, shift=shift, scale=scale, zero_point=zero_point,
                      acc_bits=t.acc_bits, out_bits=t.data_bits)
        sram[pd:pd + vw[dfmt]] = pack_vector(wrap(out, bits[dfmt]), bits[dfmt], word)


# -- Tile controller and DMA engine ---------------------------------------------------------------
# The issue model of tilemesh.tile.controller.Controller (docs/tile-design.md §6-7) and the packets
# tilemesh.tile.dma.DmaEngine sends for one command. Instruction and command words are handled as
# integers; fields are read and written at the offsets of the Amaranth layouts.

__all__ += ["layout_get", "layout_set", "ControllerRun", "controller_run", "header_word",
            "dma_packets"]


def _field_span(layout, path):
    from amaranth.hdl import Shape
    from amaranth.lib import data

    offset, shape = 0, layout
    for name in path:
        field = data.Layout.cast(shape)[name]
        offset, shape = offset + field.offset, field.shape
    try:
        width, is_signed = Shape.cast(shape).width, Shape.cast(shape).signed
    except TypeError:
        width, is_signed = data.Layout.cast(shape).size, False
    return offset, width, is_signed


def layout_get(layout, bits, *path):
    """Field ``path`` (names, outermost first) of the integer ``bits`` of ``layout``, as an int
    (sign-extended for signed fields; enums as their raw value)."""
    offset, width, is_signed = _field_span(layout, path)
    v = (int(bits) >> offset) & ((1 << width) - 1)
    if is_signed and v >> (width - 1):
        v -= 1 << width
    return v


def layout_set(layout, bits, path, value):
    """``bits`` with field ``path`` (a tuple of names) replaced by ``value`` (wrapped to fit)."""
    offset, width, _ = _field_span(layout, path)
    mask = ((1 << width) - 1) << offset
    return (int(bits) & ~mask) | ((int(value) << offset) & mask)


class ControllerRun:
    """What :func:`controller_run` found: ``state`` (TileState), ``pc``, ``error`` (ErrorCode),
    ``error_pc``, ``notify`` (the ERROR NotifyPayload as a dict, or None), ``ar`` ([ar1, ar2,
    ar3]), ``sems`` (list), ``issued`` (instructions issued) and ``commands``: per queue
    ("dma", "matmul", "simd") the integer payloads the controller pushes (``dma_command_layout``,
    ``MatmulInstr``, ``unit_command_layout``), in order."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def __repr__(self):
        return (f"ControllerRun(state={self.state!r}, pc={self.pc}, error={self.error!r}, "
                f"issued={self.issued})")


def controller_run(words, cfg, *, pc=0, sems=None, max_issue=100_000):
    """Run the controller's issue rules over instruction ``words`` (IMEM is zero, i.e. HALT,
    beyond them) from ``pc``: every unit completes its commands eventually, semaphores start at
    ``sems`` (16 values, default 0) and nobody else signals, so a WAIT that cannot be satisfied
    leaves the run WAITING. TIMEOUT and SEM_OVERFLOW depend on timing and are not modelled.

    Checks in the hardware's priority order: PC_RANGE, BAD_OPCODE, BAD_OPERAND, OFF_MESH,
    SRAM_RANGE, MATMUL_CHAIN, LOOP_NEST. Returns a :class:`ControllerRun`.
    """
    from amaranth.lib import data

    from ..layouts import (
        ADDR_BITS,
        INSTR_ARGS,
        LOOP_DEPTH,
        PC_BITS,
        ElemFormat,
        ErrorCode,
        InstrArgs,
        InstrOp,
        InstrWord,
        SimdOp,
        TileState,
        YMode,
        matmul_operand_words,
        packed_words,
        simd_vector_words,
    )
    from ..tile.dma import dma_command_layout
    from ..tile.ports import unit_command_layout

    t = cfg.tile
    depth = t.imem_depth
    iw = data.Layout.cast(InstrWord)
    args_l = data.Layout.cast(InstrArgs)
    words = list(words)[:depth] + [0] * max(0, depth - len(words))
    ar = [0, 0, 0, 0]
    stack = []            # [start, end, left] per open loop, outermost first
    mm_open = False
    sems = list(sems) if sems is not None else [0] * 16
    cmds = {"dma": [], "matmul": [], "simd": []}
    mw = matmul_operand_words(cfg)
    vw = {f: simd_vector_words(cfg, f) for f in ElemFormat}
    issued = 0
    mask20 = (1 << ADDR_BITS) - 1

    def result(state, error=ErrorCode.NONE, value=0):
        notify = None
        if error != ErrorCode.NONE:
            notify = {"kind": 1, "code": error.value, "pc": pc & ((1 << PC_BITS) - 1),
                      "value": value}
        return ControllerRun(state=state, pc=pc, error=error, error_pc=pc if notify else 0,
                             notify=notify, ar=ar[1:], sems=sems, issued=issued,
                             commands=cmds)

    def advance():
        nxt = pc + 1
        while stack and stack[-1][1] == pc:
            if stack[-1][2] > 0:
                stack[-1][2] -= 1
                nxt = stack[-1][0]
                break
            stack.pop()
        return nxt

    while issued < max_issue:
        if pc == depth:
            return result(TileState.ERROR, ErrorCode.PC_RANGE, 0)
        word = words[pc]
        low = word & 0xFFFF_FFFF
        op_v = layout_get(iw, word, "op")
        if op_v not in InstrOp.valid_values():
            return result(TileState.ERROR, ErrorCode.BAD_OPCODE, low)
        op = InstrOp(op_v)
        args = layout_get(iw, word, "args")
        member = INSTR_ARGS[op]

        def f(name, _m=member, _a=args):
            return layout_get(args_l, _a, _m, name)

        err = None
        blocks = []       # (start, words) SRAM blocks to range-check
        resolved = {}     # address field -> start with its register added
        if op in (InstrOp.DMA_WRITE, InstrOp.DMA_READ):
            if f("rows") == 0 or f("cols") == 0 or (op == InstrOp.DMA_READ and f("host")):
                err = ErrorCode.BAD_OPERAND
            elif not f("host") and (f("x") >= cfg.cols or f("y") >= cfg.rows):
                err = ErrorCode.OFF_MESH
            for side in ("local", "remote"):
                start = f(side) + ar[f(side + "_ar")]
                resolved[side] = start
                blocks.append((start, (f("rows") - 1) * f(side + "_stride") + f("cols")))
        elif op == InstrOp.MATMUL:
            mf, nf = f("m_folds"), f("n_folds")
            if f("k") == 0 or mf == 0 or nf == 0 or ((mf > 1 or nf > 1)
                                                     and not (f("first") and f("last"))):
                err = ErrorCode.BAD_OPERAND
            for name in ("a", "b", "c"):
                resolved[name] = f(name) + ar[f(name + "_ar")]
            blocks += [(resolved["a"], mf * f("k") * mw["a"]),
                       (resolved["b"], nf * f("k") * mw["b"])]
            if f("last"):
                blocks.append((resolved["c"], (mf * t.pe_rows - 1) * f("c_stride")
                               + nf * mw["c"]))
        elif op == InstrOp.SIMD:
            n = f("count")
            if n == 0 or f("func") not in SimdOp.valid_values():
                err = ErrorCode.BAD_OPERAND
            for name in ("x", "y", "d"):
                resolved[name] = f(name) + ar[f(name + "_ar")]
            blocks += [(resolved["x"], n * vw[ElemFormat(f("xfmt"))]),
                       (resolved["d"], n * vw[ElemFormat(f("dfmt"))])]
            ymode, yfmt = YMode(f("ymode")), ElemFormat(f("yfmt"))
            ybits = t.acc_bits if yfmt == ElemFormat.ACC else t.data_bits
            if ymode != YMode.NONE:
                blocks.append((resolved["y"], {YMode.VECTOR: n * vw[yfmt], YMode.REPEAT: vw[yfmt],
                                               YMode.SCALAR: packed_words(1, ybits,
                                                                          cfg.word_bits)}[ymode]))
        elif op == InstrOp.SIGNAL:
            if not f("local") and (f("x") >= cfg.cols or f("y") >= cfg.rows):
                err = ErrorCode.OFF_MESH
        elif op == InstrOp.LOOP:
            end = pc + f("len")
            if f("count") == 0 or f("len") == 0:
                err = ErrorCode.BAD_OPERAND
            elif len(stack) == LOOP_DEPTH or end >= depth or (stack and end > stack[-1][1]):
                err = ErrorCode.LOOP_NEST
        elif op == InstrOp.AR:
            if f("reg") == 0:
                err = ErrorCode.BAD_OPERAND
        if err is None and any(s + n > t.sram_words for s, n in blocks):
            err = ErrorCode.SRAM_RANGE
        if err is None and op == InstrOp.MATMUL and bool(f("first")) == mm_open:
            err = ErrorCode.MATMUL_CHAIN
        if err is not None:
            return result(TileState.ERROR, err, low)

        for name, start in resolved.items():
            args = layout_set(args_l, args, (member, name), start & mask20)
            args = layout_set(args_l, args, (member, name + "_ar"), 0)
        if op == InstrOp.HALT:
            return result(TileState.HALTED)
        if op == InstrOp.WAIT:
            s, n = f("sem"), f("count")
            if sems[s] < n:
                return result(TileState.WAITING)
            sems[s] -= n
        elif op in (InstrOp.DMA_WRITE, InstrOp.DMA_READ, InstrOp.SIGNAL, InstrOp.NOTIFY):
            cl = data.Layout.cast(dma_command_layout())
            cmds["dma"].append(layout_set(cl, layout_set(cl, layout_set(
                cl, 0, ("op",), op.value), ("args",), args), ("pc",), pc))
        elif op == InstrOp.MATMUL:
            cmds["matmul"].append(layout_get(args_l, args, "matmul"))
            mm_open = not f("last")
        elif op in (InstrOp.SIMD, InstrOp.SIMD_CFG):
            ul = data.Layout.cast(unit_command_layout())
            cmds["simd"].append(layout_set(ul, layout_set(ul, 0, ("op",), op.value),
                                           ("args",), args))
        elif op == InstrOp.AR:
            r, v = f("reg"), f("value")
            ar[r] = (ar[r] + v if f("mode") else v) & mask20
        issued += 1
        if op == InstrOp.LOOP:
            stack.append([pc + 1, pc + f("len"), f("count") - 1])
            pc += 1
        else:
            pc = advance()
    return result(TileState.RUNNING)


def header_word(cfg, *, dst, src, opcode, length, addr):
    """The integer header flit data of a packet (``dst``/``src`` as (x, y))."""
    from amaranth.lib import data

    from ..layouts import header_layout

    return data.Layout.cast(header_layout(cfg)).const({
        "dst_x": dst[0], "dst_y": dst[1], "src_x": src[0], "src_y": src[1],
        "opcode": opcode, "length": length, "addr": addr}).as_value().value


def dma_packets(cfg, x, y, command, sram):
    """The packets the DMA engine of tile (``x``, ``y``) sends for ``command`` (an integer of
    ``dma_command_layout()``), reading words from ``sram`` (a sequence): a list of packets, each
    a list of ``(data, last)`` flits. A ``dma.read`` gives its READ_REQs (each waits for its
    answer) and the SIGNAL to itself."""
    from amaranth.lib import data

    from ..layouts import (
        InstrOp,
        NotifyPayload,
        Opcode,
        Space,
        payload_flits,
        read_req_layout,
        tile_addr_layout,
    )
    from ..noc.routing import host_address
    from ..tile.dma import dma_command_layout

    cl = data.Layout.cast(dma_command_layout())
    op = InstrOp(layout_get(cl, command, "op"))
    pc = layout_get(cl, command, "pc")
    w, max_pkt = cfg.word_bits, cfg.noc.max_packet_flits
    here = (x, y)

    def a(name, member="dma"):
        return layout_get(cl, command, "args", member, name)

    def sram_addr(word):
        return data.Layout.cast(tile_addr_layout(cfg)).const(
            {"word": word, "space": Space.SRAM}).as_value().value

    def hdr(dst, opcode, length, addr):
        return (header_word(cfg, dst=dst, src=here, opcode=opcode, length=length, addr=addr),
                int(length == 0))

    def signal(dst, sem):
        return [hdr(dst, Opcode.SIGNAL, 0, sem)]

    packets = []
    if op in (InstrOp.DMA_WRITE, InstrOp.DMA_READ):
        rows, cols = a("rows"), a("cols")
        dst = host_address(cfg) if a("host") else (a("x"), a("y"))
        for r in range(rows):
            for c0 in range(0, cols, max_pkt):
                n = min(max_pkt, cols - c0)
                local = a("local") + r * a("local_stride") + c0
                remote = a("remote") + r * a("remote_stride") + c0
                if op == InstrOp.DMA_WRITE:
                    packets.append([hdr(dst, Opcode.WRITE, n, sram_addr(remote))]
                                   + [(int(sram[local + i]), int(i == n - 1)) for i in range(n)])
                else:
                    req = data.Layout.cast(read_req_layout(cfg)).const(
                        {"reply_addr": sram_addr(local), "count": n}).as_value().value
                    packets.append([hdr(dst, Opcode.READ_REQ, 1, sram_addr(remote)), (req, 1)])
        if a("signal"):
            packets.append(signal(dst if op == InstrOp.DMA_WRITE else here, a("sem")))
    elif op == InstrOp.SIGNAL:
        local = a("local", "signal")
        packets.append(signal(here if local else (a("x", "signal"), a("y", "signal")),
                              a("sem", "signal")))
    elif op == InstrOp.NOTIFY:
        nf = payload_flits(NotifyPayload, cfg)
        bits = data.Layout.cast(NotifyPayload).const({
            "value": a("value", "notify"), "code": a("code", "notify"), "pc": pc,
            "kind": 0}).as_value().value
        packets.append([hdr(host_address(cfg), Opcode.NOTIFY, nf, 0)]
                       + [((bits >> (i * w)) & ((1 << w) - 1), int(i == nf - 1))
                          for i in range(nf)])
    return packets
