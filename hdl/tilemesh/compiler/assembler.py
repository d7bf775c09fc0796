"""Assembler, disassembler and program builder for the tile instruction set.

The encoding lives in :mod:`tilemesh.layouts` (``InstrWord`` and the per-kind operand structs);
this module adds the text syntax, the operand rules the controller enforces at issue
(``ErrorCode.BAD_OPERAND`` and friends) and, given a :class:`~tilemesh.config.MeshConfig`, the
range checks against that configuration. It never spells out a bit offset: fields are packed
with the offsets of the Amaranth layouts.

Syntax (one instruction per line, ``#`` starts a comment)::

    .define BUF 0x100                       # a named constant, usable in any number
    ar.set reg=1 value=BUF
    loop count=4 {                          # the body runs 4 times ({ } or len=N)
        dma.read tile=(1,0) local=ar1+0 remote=0x200 rows=4 cols=4 remote_stride=8 signal=3
        wait sem=3
        matmul a=ar1 b=0x400 c=0x800 c_stride=4 k=16
        ar.add reg=1 value=64
    }
    fence
    notify code=1 value=0xbeef
    halt
    .word 0x0000_0000_0000_0000_0000_0000_0000_0001   # any raw 128-bit word (here: NOP)

Fields are ``name=value``; flags may be written bare (``acc`` is ``acc=1``). Numbers are decimal,
``0x`` hex, ``0b`` binary or ``0o`` octal, with ``_`` separators, optionally combined with ``+``
and ``-`` and ``.define`` names. Address operands take ``arN+offset`` to add address register N
at issue. :func:`isa_table_markdown` renders every instruction and field.

Errors raise :class:`AssemblerError` naming the line, the instruction, the field, the value
and what is allowed: ``line 7: unknown instruction 'mov'``.
"""

import argparse
import contextlib
import re
import sys
from pathlib import Path

from amaranth.lib import data

from ..layouts import (
    ADDR_BITS,
    ADDR_REGS,
    ERROR_TEXT,
    INSTR_ARGS,
    INSTR_BITS,
    INSTR_UNIT,
    LOOP_DEPTH,
    ArMode,
    ElemFormat,
    ErrorCode,
    InstrArgs,
    InstrOp,
    InstrWord,
    SimdOp,
    YMode,
    csr_map,
    instr_words,
    matmul_operand_words,
    packed_words,
    simd_vector_words,
)

__all__ = ["AssemblerError", "RegAddr", "AR0", "AR1", "AR2", "AR3", "Instruction", "decode",
           "Program", "assemble", "disassemble", "imem_image", "to_consts",
           "isa_table_markdown", "error_table_markdown", "csr_table_markdown", "update_docs"]


class AssemblerError(ValueError):
    """Bad assembly text or builder call; the message names the line (for text), the
    instruction, the field, the value and what is allowed."""


class RegAddr:
    """An address operand: ``offset`` plus address register ``reg`` (added at issue).

    Write ``AR1 + 0x40`` in Python, ``ar1+0x40`` in assembly.
    """

    __slots__ = ("reg", "offset")

    def __init__(self, reg, offset=0):
        self.reg, self.offset = reg, offset

    def __add__(self, offset):
        if not _is_int(offset):
            return NotImplemented
        return RegAddr(self.reg, self.offset + offset)

    __radd__ = __add__

    def __sub__(self, offset):
        if not _is_int(offset):
            return NotImplemented
        return RegAddr(self.reg, self.offset - offset)

    def __eq__(self, other):
        if _is_int(other):
            other = RegAddr(0, other)
        return isinstance(other, RegAddr) and (self.reg, self.offset) == (other.reg, other.offset)

    def __hash__(self):
        return hash((self.reg, self.offset))

    def __repr__(self):
        return f"AR{self.reg} + {self.offset:#x}" if self.reg else f"{self.offset:#x}"


AR0, AR1, AR2, AR3 = (RegAddr(n) for n in range(ADDR_REGS))


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


class _Required:
    def __repr__(self):
        return "required"


REQUIRED = _Required()


# -- fields: one syntax-level operand each, mapped onto layout fields ------------------------------

class _Field:
    """An operand as the programmer writes it; maps to one or more layout fields."""

    hex = False

    def __init__(self, name, doc, *, default=REQUIRED):
        self.name, self.doc, self.default = name, doc, default

    def default_for(self, values):
        return self.default(values) if callable(self.default) else self.default

    def default_text(self):
        if self.default is REQUIRED:
            return "required"
        if callable(self.default):
            return self.default.__doc__
        return self.format(self.default) if self.default is not None else "—"


class _Int(_Field):
    def __init__(self, name, bits, doc, *, lo=None, hi=None, default=REQUIRED, hex=False,
                 layout=None, signed=False):
        super().__init__(name, doc, default=default)
        self.bits, self.signed, self.hex = bits, signed, hex
        self.enc_lo = -(1 << (bits - 1)) if signed else 0
        self.enc_hi = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
        self.lo, self.hi = lo if lo is not None else self.enc_lo, self.enc_hi if hi is None else hi
        self.layout = layout or name

    def range_text(self, check=True):
        lo, hi = (self.lo, self.hi) if check else (self.enc_lo, self.enc_hi)
        return f"{lo}..{hi}" if not self.hex else f"{lo:#x}..{hi:#x}"

    def normalize(self, v, check):
        if not _is_int(v):
            raise _FieldError(self, v, f"an integer in {self.range_text(check)}")
        if not self.enc_lo <= v <= self.enc_hi:
            raise _FieldError(self, v, f"in {self.range_text(check)}")
        return v

    def rules(self, v):
        if not self.lo <= v <= self.hi:
            yield f"field '{self.name}' must be in {self.range_text()}, not {v}"

    def parse(self, text, ctx):
        return ctx.expr(text, self)

    def format(self, v):
        return f"{v:#x}" if self.hex and v >= 0 else str(v)

    def to_raw(self, v):
        return {self.layout: v}

    def from_raw(self, raw):
        return raw[self.layout]

    def bits_text(self):
        return f"{self.bits}" + (" signed" if self.signed else "")


class _Flag(_Field):
    def __init__(self, name, doc, *, default=False):
        super().__init__(name, doc, default=default)

    def normalize(self, v, check):
        if isinstance(v, bool) or v in (0, 1):
            return bool(v)
        raise _FieldError(self, v, "0 or 1")

    def rules(self, v):
        return ()

    def parse(self, text, ctx):
        if text is None:
            return True
        return ctx.expr(text, self)

    def format(self, v):
        return str(int(v))

    def to_raw(self, v):
        return {self.name: int(v)}

    def from_raw(self, raw):
        return bool(raw[self.name])

    def range_text(self, check=True):
        return "0, 1"

    def bits_text(self):
        return "1"


class _Addr(_Field):
    """An SRAM word address plus an optional address register."""

    hex = True

    def normalize(self, v, check):
        if _is_int(v):
            v = RegAddr(0, v)
        if not isinstance(v, RegAddr) or not _is_int(v.reg) or not _is_int(v.offset):
            raise _FieldError(self, v, f"an address in 0..{(1 << ADDR_BITS) - 1:#x}, "
                                       f"optionally arN+offset")
        if not 0 <= v.reg < ADDR_REGS:
            raise _FieldError(self, v, f"an address register ar0..ar{ADDR_REGS - 1}")
        if not 0 <= v.offset < 1 << ADDR_BITS:
            raise _FieldError(self, v.offset, f"in 0..{(1 << ADDR_BITS) - 1:#x}")
        return v

    def rules(self, v):
        return ()

    def parse(self, text, ctx):
        return ctx.expr(text, self, allow_reg=True)

    def format(self, v):
        if v.reg:
            return f"ar{v.reg}+{v.offset:#x}" if v.offset else f"ar{v.reg}"
        return f"{v.offset:#x}"

    def to_raw(self, v):
        return {self.name: v.offset, f"{self.name}_ar": v.reg}

    def from_raw(self, raw):
        return RegAddr(raw[f"{self.name}_ar"], raw[self.name])

    def range_text(self, check=True):
        return f"[arN+]0..{(1 << ADDR_BITS) - 1:#x}"

    def bits_text(self):
        return f"{ADDR_BITS} + {2}"


class _Tile(_Field):
    """Tile coordinates ``(x, y)``; None when the instruction targets something else."""

    def __init__(self, name, doc, *, bits, default=REQUIRED, none_flag=None, none_when=None):
        super().__init__(name, doc, default=default)
        # none_flag: a layout flag this field sets when None (SIGNAL's ``local``);
        # none_when: a flag another field sets, meaning this one decodes as None (DMA's ``host``)
        self.bits, self.none_flag, self.none_when = bits, none_flag, none_when

    def normalize(self, v, check):
        if v is None and self.default is None:
            return None
        if (not isinstance(v, tuple | list) or len(v) != 2
                or not all(_is_int(c) for c in v)):
            raise _FieldError(self, v, "a pair (x, y) of integers")
        for c in v:
            if not 0 <= c < 1 << self.bits:
                raise _FieldError(self, tuple(v), f"(x, y) with x, y in 0..{(1 << self.bits) - 1}")
        return tuple(v)

    def rules(self, v):
        return ()

    def parse(self, text, ctx):
        m = re.fullmatch(r"\((.*),(.*)\)", text or "")
        if not m:
            raise ctx.error(f"field '{self.name}' must be written (x,y), not {text!r}")
        return (ctx.expr(m[1], self), ctx.expr(m[2], self))

    def format(self, v):
        return f"({v[0]},{v[1]})"

    def to_raw(self, v):
        raw = {"x": 0, "y": 0} if v is None else {"x": v[0], "y": v[1]}
        if self.none_flag:
            raw[self.none_flag] = int(v is None)
        return raw

    def from_raw(self, raw):
        flag = self.none_flag or self.none_when
        if flag and raw[flag]:
            return None
        return (raw["x"], raw["y"])

    def range_text(self, check=True):
        return f"(0..{(1 << self.bits) - 1}, 0..{(1 << self.bits) - 1})"

    def bits_text(self):
        return f"2 x {self.bits}"


class _Signal(_Field):
    """``signal=N``: bump semaphore N on completion (``signal`` and ``sem`` layout fields)."""

    def __init__(self, name, doc, *, bits):
        super().__init__(name, doc, default=None)
        self.bits = bits

    def normalize(self, v, check):
        if v is None:
            return None
        if not _is_int(v) or not 0 <= v < 1 << self.bits:
            raise _FieldError(self, v, f"a semaphore in 0..{(1 << self.bits) - 1}")
        return v

    def rules(self, v):
        return ()

    def parse(self, text, ctx):
        if text is None:
            raise ctx.error(f"field '{self.name}' needs a semaphore number: {self.name}=N")
        return ctx.expr(text, self)

    def format(self, v):
        return str(v)

    def to_raw(self, v):
        return {"signal": int(v is not None), "sem": v or 0}

    def from_raw(self, raw):
        return raw["sem"] if raw["signal"] else None

    def range_text(self, check=True):
        return f"0..{(1 << self.bits) - 1}"

    def bits_text(self):
        return f"1 + {self.bits}"


class _Enum(_Field):
    def __init__(self, name, enum_cls, doc, *, default=REQUIRED):
        super().__init__(name, doc, default=default)
        self.enum = enum_cls

    def normalize(self, v, check):
        if isinstance(v, self.enum):
            return v
        if isinstance(v, str):
            try:
                return self.enum[v.upper()]
            except KeyError:
                pass
        raise _FieldError(self, v, "one of " + ", ".join(m.name.lower() for m in self.enum))

    def rules(self, v):
        return ()

    def parse(self, text, ctx):
        if text is None:
            raise ctx.error(f"field '{self.name}' needs a value: "
                            + ", ".join(m.name.lower() for m in self.enum))
        return text

    def format(self, v):
        return v.name.lower()

    def to_raw(self, v):
        return {self.name: v.value}

    def from_raw(self, raw):
        return self.enum(raw[self.name])

    def range_text(self, check=True):
        return ", ".join(m.name.lower() for m in self.enum)

    def bits_text(self):
        return str(self.enum.as_shape().width)


class _FieldError(Exception):
    def __init__(self, field, value, allowed):
        self.field, self.value, self.allowed = field, value, allowed

    def message(self):
        return f"field '{self.field.name}' must be {self.allowed}, not {self.value!r}"


# -- instruction kinds -----------------------------------------------------------------------------

class _Kind:
    """One mnemonic: opcode, operand fields, fixed layout fields, doc, and its rules."""

    def __init__(self, mnemonic, op, fields, doc, *, fixed=None, rules=None, cfg_rules=None,
                 empty_defaults=None):
        self.mnemonic, self.op, self.fields, self.doc = mnemonic, op, fields, doc
        self.fixed = fixed or {}
        self.member = INSTR_ARGS[op]
        self.unit = INSTR_UNIT[op]
        self._rules, self._cfg_rules = rules, cfg_rules
        self.empty_defaults = empty_defaults  # field values used when no field is given
        self.by_name = {f.name: f for f in fields}

    def rules(self, values):
        for f in self.fields:
            if values[f.name] is not None:
                yield from f.rules(values[f.name])
        if self._rules:
            yield from self._rules(values)

    def cfg_rules(self, values, cfg):
        if self._cfg_rules:
            yield from self._cfg_rules(values, cfg)


def _addr_name(values, name):
    a = values[name]
    return f" (before adding ar{a.reg})" if a.reg else ""


def _extent_problem(field, start, words, cfg, note=""):
    """SRAM block [start.offset, start.offset + words) must fit the tile's SRAM."""
    last = start.offset + words - 1
    if words > 0 and last >= cfg.tile.sram_words:
        return (f"field '{field}' block ends at word {last:#x}{note}, past the last SRAM word "
                f"{cfg.tile.sram_words - 1:#x} (TileConfig.sram_banks x sram_depth)")
    return None


def _on_mesh_problem(field, tile, cfg):
    x, y = tile
    if not (x < cfg.cols and y < cfg.rows):
        return (f"field '{field}' ({x},{y}) is off the {cfg.rows}x{cfg.cols} mesh "
                f"(x must be in 0..{cfg.cols - 1}, y in 0..{cfg.rows - 1})")
    return None


def _overlap(a0, an, b0, bn):
    return an > 0 and bn > 0 and a0 < b0 + bn and b0 < a0 + an


# DMA ----------------------------------------------------------------------------------------------

def _dma_rules(read):
    def rules(v):
        if read and v["host"]:
            yield "the host cannot be read by DMA (dma.read needs tile=(x,y), not host)"
        elif v["host"] and v["tile"] is not None:
            yield "give either tile=(x,y) or host, not both"
        elif not v["host"] and v["tile"] is None:
            yield "missing field 'tile' (or host)"
    return rules


def _dma_cfg_rules(v, cfg):
    if v["tile"] is not None and not v["host"]:
        p = _on_mesh_problem("tile", v["tile"], cfg)
        if p:
            yield p
    for side in ("local", "remote"):
        span = (v["rows"] - 1) * v[f"{side}_stride"] + v["cols"] if v["rows"] and v["cols"] else 0
        p = _extent_problem(side, v[side], span, cfg, _addr_name(v, side))
        if p:
            yield p


def _cols_default(v):
    """cols (rows packed)"""
    return v["cols"]


def _dma_kind(mnemonic, op, read):
    target = ("remote tile to read from" if read else "remote tile to write to")
    fields = [
        _Tile("tile", target + (" (or give host)" if not read else ""), bits=5, default=None,
              none_when="host"),
        _Flag("host", "must be 0: the host cannot be read (BAD_OPERAND)" if read
              else "write to the host instead of a tile"),
        _Addr("local", "first word of the block in this tile's SRAM"),
        _Addr("remote", "first word of the block at the remote tile (or host)"),
        _Int("rows", 12, "rows of the block", lo=1),
        _Int("cols", 12, "words per row", lo=1),
        _Int("local_stride", 20, "words from one local row to the next", default=_cols_default),
        _Int("remote_stride", 20, "words from one remote row to the next",
              default=_cols_default),
        _Signal("signal", "semaphore to bump once the block has landed: "
                + ("locally" if read else "at the destination"), bits=4),
    ]
    what = ("copy a rows x cols block from a remote tile's SRAM to local SRAM"
            if read else "copy a rows x cols block of local SRAM to a remote tile (or the host)")
    return _Kind(mnemonic, op, fields, what, rules=_dma_rules(read), cfg_rules=_dma_cfg_rules)


# MATMUL -----------------------------------------------------------------------------------------

def _matmul_rules(v):
    if v["m_folds"] * v["n_folds"] > 1 and not (v["first"] and v["last"]):
        yield ("first=0 or last=0 (accumulating across instructions) needs "
               "m_folds=1 and n_folds=1")


def _matmul_cfg_rules(v, cfg):
    w = matmul_operand_words(cfg)
    t = cfg.tile
    spans = {"a": v["m_folds"] * v["k"] * w["a"], "b": v["n_folds"] * v["k"] * w["b"]}
    if v["last"]:
        spans["c"] = (v["m_folds"] * t.pe_rows - 1) * v["c_stride"] + v["n_folds"] * w["c"]
        if v["c_stride"] < v["n_folds"] * w["c"]:
            yield (f"field 'c_stride' must be at least n_folds x {w['c']} words of a C row "
                   f"({v['n_folds'] * w['c']}), not {v['c_stride']}")
    for name, span in spans.items():
        p = _extent_problem(name, v[name], span, cfg, _addr_name(v, name))
        if p:
            yield p
    if "c" in spans and all(v[n].reg == 0 for n in spans):
        for src in ("a", "b"):
            if _overlap(v["c"].offset, spans["c"], v[src].offset, spans[src]):
                yield f"the c block overlaps the {src} block"


# SIMD ---------------------------------------------------------------------------------------------

_UNARY_SIMD = {SimdOp.RELU, SimdOp.SHR, SimdOp.SAT, SimdOp.REQUANT}


def _simd_cfg_rules(v, cfg):
    n = v["count"]
    xw = simd_vector_words(cfg, v["xfmt"])
    yw = simd_vector_words(cfg, v["yfmt"])
    dw = simd_vector_words(cfg, v["dfmt"])
    ymode = v["ymode"]
    spans = {"x": n * xw, "d": n * dw}
    if ymode != YMode.NONE:
        ybits = cfg.tile.acc_bits if v["yfmt"] == ElemFormat.ACC else cfg.tile.data_bits
        spans["y"] = {YMode.VECTOR: n * yw, YMode.REPEAT: yw,
                      YMode.SCALAR: packed_words(1, ybits, cfg.word_bits)}[ymode]
    for name, span in spans.items():
        p = _extent_problem(name, v[name], span, cfg, _addr_name(v, name))
        if p:
            yield p
    if all(v[k].reg == 0 for k in spans):
        d0 = v["d"].offset
        for src, sw in (("x", xw), ("y", yw)):
            if src not in spans:
                continue
            in_place = v[src].offset == d0 and sw == dw and (src == "x" or ymode == YMode.VECTOR)
            if not in_place and _overlap(d0, spans["d"], v[src].offset, spans[src]):
                yield (f"the d block overlaps the {src} block (only d={src} with the same "
                       f"vector size is allowed: in place)")


def _ymode_default(op):
    unary = op in _UNARY_SIMD

    def default(v):
        return YMode.NONE if unary else YMode.VECTOR
    default.__doc__ = "none" if unary else "vector"
    return default


def _y_default(v):
    """0 with ymode=none, else required"""
    return RegAddr(0, 0) if v["ymode"] == YMode.NONE else REQUIRED


def _simd_kind(op):
    fields = [
        _Addr("x", "first x vector"),
        _Enum("ymode", YMode, "vector: one y per x; repeat: the same y vector for all; "
              "scalar: y element 0 in every lane; none: zeros", default=_ymode_default(op)),
        _Addr("y", "y operand (see ymode)", default=_y_default),
        _Addr("d", "first result vector"),
        _Int("count", 12, "vectors of simd_lanes elements", lo=1),
        _Enum("xfmt", ElemFormat, "x elements: acc (acc_bits) or data (data_bits, "
              "sign-extended)", default=ElemFormat.ACC),
        _Enum("yfmt", ElemFormat, "y elements, as xfmt", default=ElemFormat.ACC),
        _Enum("dfmt", ElemFormat, "result elements: acc, or data (low data_bits)",
              default=ElemFormat.ACC),
        _Int("shift", 7, "right shift of SHR and REQUANT", default=0),
    ]
    return _Kind(f"simd.{op.name.lower()}", InstrOp.SIMD, fields,
                 f"SIMD {op.name} over count vectors (reference: model.reference.simd)",
                 fixed={"func": op.value}, cfg_rules=_simd_cfg_rules)


def _zero_point_rules(v, cfg):
    bits = cfg.tile.acc_bits
    if bits < 32 and not -(1 << (bits - 1)) <= v["zero_point"] < 1 << (bits - 1):
        yield (f"field 'zero_point' must be in {-(1 << (bits - 1))}..{(1 << (bits - 1)) - 1} "
               f"(signed acc_bits={bits}), not {v['zero_point']}")


def _signal_cfg_rules(v, cfg):
    if v["tile"] is not None:
        p = _on_mesh_problem("tile", v["tile"], cfg)
        if p:
            yield p


def _ar_kind(mnemonic, mode):
    if mode == ArMode.SET:
        value = _Int("value", ADDR_BITS + 1, "new value of the register", signed=True,
                      lo=0, hi=(1 << ADDR_BITS) - 1, hex=True)
        doc = "set address register ar[reg] (added at issue to arN+offset operands)"
    else:
        value = _Int("value", ADDR_BITS + 1, "signed value added (mod 2**20)", signed=True)
        doc = "add a signed value to address register ar[reg], modulo 2**20"
    fields = [_Int("reg", 2, "address register (ar0 is always zero)", lo=1), value]
    return _Kind(mnemonic, InstrOp.AR, fields, doc, fixed={"mode": mode.value})


_KINDS = [
    _Kind("halt", InstrOp.HALT, [], "wait until every unit is idle, then stop (state HALTED)"),
    _Kind("nop", InstrOp.NOP, [], "do nothing"),
    _dma_kind("dma.write", InstrOp.DMA_WRITE, read=False),
    _dma_kind("dma.read", InstrOp.DMA_READ, read=True),
    _Kind("matmul", InstrOp.MATMUL, [
        _Addr("a", "A columns, fold-major: fold i, step s at `a + (i*k + s) * a_words`"),
        _Addr("b", "B rows: fold j, step s at `b + (j*k + s) * b_words`"),
        _Addr("c", "C: row r of tile (i, j) at `c + (i*R + r) * c_stride + j * c_words`"),
        _Int("c_stride", 20, "words from one C row to the next"),
        _Int("k", 12, "steps (A columns / B rows) per output tile", lo=1),
        _Int("m_folds", 8, "output tiles along M (R rows each)", lo=1, default=1),
        _Int("n_folds", 8, "output tiles along N (C columns each)", lo=1, default=1),
        _Flag("first", "clear the accumulators first (0: continue the open accumulation)",
              default=True),
        _Flag("last", "write C at the end (0: keep accumulating in the array)", default=True),
        _Flag("acc", "add the results to C in SRAM instead of overwriting it"),
    ], "C (+)= A @ B on the matrix unit, m_folds x n_folds output tiles of R x C",
        rules=_matmul_rules, cfg_rules=_matmul_cfg_rules),
    *[_simd_kind(op) for op in SimdOp],
    _Kind("simd.cfg", InstrOp.SIMD_CFG, [
        _Int("scale", 16, "REQUANT multiplier", signed=True),
        _Int("zero_point", 32, "REQUANT zero point (signed acc_bits)", signed=True, default=0),
    ], "set REQUANT's scale and zero point for the SIMD instructions after it",
        cfg_rules=_zero_point_rules),
    _Kind("signal", InstrOp.SIGNAL, [
        _Tile("tile", "tile whose semaphore to bump (omitted: this tile)", bits=5, default=None,
              none_flag="local"),
        _Int("sem", 4, "semaphore"),
    ], "increment a semaphore here or at another tile, after every earlier DMA has left",
        cfg_rules=_signal_cfg_rules),
    _Kind("wait", InstrOp.WAIT, [
        _Int("sem", 4, "semaphore"),
        _Int("count", 16, "value needed, then subtracted", default=1),
    ], "block until semaphore sem >= count, then subtract count"),
    _Kind("notify", InstrOp.NOTIFY, [
        _Int("code", 16, "code for the host"),
        _Int("value", 32, "value for the host", default=0, hex=True),
    ], "send a NOTIFY packet (kind PROGRAM) to the host, after every earlier DMA has left"),
    _Kind("fence", InstrOp.FENCE, [
        _Flag("dma", "wait for the DMA queue and engine"),
        _Flag("matmul", "wait for the matrix unit"),
        _Flag("simd", "wait for the SIMD unit"),
    ], "block issue until the selected units (bare `fence`: all) are idle",
        empty_defaults={"dma": True, "matmul": True, "simd": True}),
    _Kind("loop", InstrOp.LOOP, [
        _Int("count", 16, "iterations", lo=1),
        _Int("len", 12, "instructions in the body (or write the body in { })", lo=1),
    ], f"run the next len instructions count times (nesting up to {LOOP_DEPTH})"),
    _ar_kind("ar.set", ArMode.SET),
    _ar_kind("ar.add", ArMode.ADD),
]

KINDS = {k.mnemonic: k for k in _KINDS}


def _kind_for(op_value, raw_args):
    """The kind of a decoded word, or None if its opcode / SIMD func / AR mode is unknown."""
    if op_value not in InstrOp.valid_values():
        return None
    op = InstrOp(op_value)
    for kind in _KINDS:
        if kind.op == op and all(raw_args.get(k) == val for k, val in kind.fixed.items()):
            return kind
    return None


# -- bit packing via the layouts' own offsets ------------------------------------------------------

_OP_FIELD = data.Layout.cast(InstrWord)["op"]
_ARGS_FIELD = data.Layout.cast(InstrWord)["args"]


def _member_layout(member):
    return data.Layout.cast(data.Layout.cast(InstrArgs)[member].shape)


def _pack(layout, raw):
    word = 0
    for name, field in layout:
        v = raw[name]
        width = _shape_width(field.shape)
        word |= (v & ((1 << width) - 1)) << field.offset
    return word


def _shape_width(shape):
    from amaranth.hdl import Shape
    if isinstance(shape, data.Layout) or (isinstance(shape, type)
                                           and issubclass(shape, data.Struct | data.Union)):
        return data.Layout.cast(shape).size
    return Shape.cast(shape).width


def _unpack(layout, word):
    from amaranth.hdl import Shape
    raw = {}
    for name, field in layout:
        width = _shape_width(field.shape)
        v = (word >> field.offset) & ((1 << width) - 1)
        try:
            is_signed = Shape.cast(field.shape).signed
        except TypeError:
            is_signed = False
        if is_signed and v >> (width - 1):
            v -= 1 << width
        raw[name] = v
    return raw


# -- instructions ----------------------------------------------------------------------------------

class Instruction:
    """One instruction as operand values: ``mnemonic`` and ``fields`` (syntax-level values,
    defaults filled in). ``.word`` is a raw word: ``fields == {"value": int}``.

    Build with ``Instruction("dma.write", tile=(1, 0), local=0x100, ...)``; the constructor
    checks that every value is encodable (not the operand rules: see :meth:`problems`).
    """

    def __init__(self, mnemonic, *, _check=True, **fields):
        self.mnemonic = mnemonic
        if mnemonic == ".word":
            v = fields.get("value")
            if set(fields) != {"value"} or not _is_int(v) or not 0 <= v < 1 << INSTR_BITS:
                raise AssemblerError(f".word needs one value in 0..2**{INSTR_BITS}-1, "
                                     f"not {fields!r}")
            self.kind, self.fields = None, {"value": v}
            return
        kind = KINDS.get(mnemonic)
        if kind is None:
            raise AssemblerError(f"unknown instruction {mnemonic!r}")
        self.kind = kind
        for name in fields:
            if name not in kind.by_name:
                known = ", ".join(kind.by_name) or "none"
                raise AssemblerError(f"{mnemonic}: unknown field {name!r} (fields: {known})")
        if not fields and kind.empty_defaults:
            fields = dict(kind.empty_defaults)
        values = {}
        try:
            for f in kind.fields:
                if f.name in fields:
                    values[f.name] = f.normalize(fields[f.name], _check)
            for f in kind.fields:
                if f.name not in values:
                    d = f.default_for(values)
                    if d is REQUIRED:
                        raise AssemblerError(f"{mnemonic}: missing field '{f.name}'")
                    values[f.name] = f.normalize(d, _check)
        except _FieldError as e:
            raise AssemblerError(f"{mnemonic}: {e.message()}") from None
        self.fields = values

    def __getitem__(self, name):
        return self.fields[name]

    def __eq__(self, other):
        return (isinstance(other, Instruction) and self.mnemonic == other.mnemonic
                and self.fields == other.fields)

    def __repr__(self):
        return f"Instruction({self.text()!r})"

    @property
    def op(self):
        """The :class:`~tilemesh.layouts.InstrOp`, or None for a raw word with a bad opcode."""
        if self.kind is not None:
            return self.kind.op
        op = (self.fields["value"] >> _OP_FIELD.offset) & 0xF
        return InstrOp(op) if op in InstrOp.valid_values() else None

    def problems(self, cfg=None):
        """Messages for every rule this instruction breaks: the controller's operand rules
        (``BAD_OPERAND``) and, given ``cfg``, mesh and SRAM ranges. Raw words have none."""
        if self.kind is None:
            return []
        out = list(self.kind.rules(self.fields))
        if cfg is not None and not out:
            out += self.kind.cfg_rules(self.fields, cfg)
        return out

    def layout_values(self):
        """``(op, member, values)``: the :class:`~tilemesh.layouts.InstrOp`, the
        ``InstrArgs`` member it uses (None: no operands) and that member's field values as
        ints (what ``InstrWord.const({"op": op, "args": {member: values}})`` takes)."""
        if self.kind is None:
            raise AssemblerError(".word has no layout values")
        kind = self.kind
        if kind.member is None:
            return kind.op, None, {}
        raw = dict(kind.fixed)
        for f in kind.fields:
            raw.update(f.to_raw(self.fields[f.name]))
        return kind.op, kind.member, {name: raw.get(name, 0)
                                      for name, _ in _member_layout(kind.member)}

    def encode(self):
        """The instruction word (an ``INSTR_BITS``-bit int)."""
        if self.kind is None:
            return self.fields["value"]
        op, member, values = self.layout_values()
        word = op.value << _OP_FIELD.offset
        if member is not None:
            word |= _pack(_member_layout(member), values) << _ARGS_FIELD.offset
        return word

    def text(self, *, length=True):
        """Canonical assembly text (``length=False`` leaves out a loop's ``len``, for the
        ``{ }`` block form)."""
        if self.kind is None:
            return f".word {_hex128(self.fields['value'])}"
        kind, v = self.kind, self.fields
        if kind.empty_defaults:  # fence: bare = all units, else the units named
            on = [n for n in kind.empty_defaults if v[n]]
            if len(on) == len(kind.empty_defaults):
                return kind.mnemonic
            return " ".join([kind.mnemonic] + (on or [f"{n}=0" for n in kind.empty_defaults]))
        parts = [kind.mnemonic]
        for f in kind.fields:
            if f.name == "len" and not length:
                continue
            d = f.default_for(v)
            if d is not REQUIRED and v[f.name] == f.normalize(d, False):
                continue
            if isinstance(f, _Flag):
                parts.append(f.name if v[f.name] else f"{f.name}=0")
            else:
                parts.append(f"{f.name}={f.format(v[f.name])}")
        return " ".join(parts)


def _hex128(v):
    s = f"{v:032x}"
    return "0x" + "_".join(s[i:i + 8] for i in range(0, 32, 8))


def decode(word):
    """The :class:`Instruction` a word encodes, or a raw ``.word`` instruction when the opcode,
    SIMD func or AR mode is unknown or bits outside the operands are set."""
    if not _is_int(word) or not 0 <= word < 1 << INSTR_BITS:
        raise AssemblerError(f"an instruction word must be an integer in 0..2**{INSTR_BITS}-1, "
                             f"not {word!r}")
    raw_word = Instruction(".word", value=word)
    op_value = (word >> _OP_FIELD.offset) & 0xF
    args = word >> _ARGS_FIELD.offset
    member = INSTR_ARGS.get(InstrOp(op_value)) if op_value in InstrOp.valid_values() else None
    raw = _unpack(_member_layout(member), args) if member else {}
    kind = _kind_for(op_value, raw)
    if kind is None:
        return raw_word
    values = {f.name: f.from_raw(raw) for f in kind.fields}
    try:
        instr = Instruction(kind.mnemonic, _check=False, **values)
    except AssemblerError:
        return raw_word
    return instr if instr.encode() == word else raw_word


# -- programs --------------------------------------------------------------------------------------

def _loop_problems(instrs):
    """(index, message) for each LOOP the controller would reject with LOOP_NEST. A rejected
    loop is not entered, so later loops are judged as the assembler sees them (raw words are
    opaque, as the assembler treats them)."""
    problems, stack = [], []  # stack of body end indices
    n = len(instrs)
    for i, ins in enumerate(instrs):
        while stack and stack[-1] < i:
            stack.pop()
        if ins.mnemonic != "loop" or ins.problems():
            continue
        end = i + ins["len"]
        if end >= n:
            problems.append((i, f"loop body (len={ins['len']}) runs past the end of the program "
                                f"(last instruction {n - 1})"))
        elif stack and end > stack[-1]:
            problems.append((i, f"loop body (len={ins['len']}) ends after the enclosing loop's "
                                f"body (instruction {stack[-1]})"))
        elif len(stack) >= LOOP_DEPTH:
            problems.append((i, f"loops nested deeper than LOOP_DEPTH={LOOP_DEPTH}"))
        else:
            stack.append(end)
    return problems


class Program:
    """A tile program: a list of :class:`Instruction`, built in Python or parsed from text.

    Parameters
    ----------
    cfg : MeshConfig or None
        When given (and ``check``), every instruction is also checked against it: tiles on the
        mesh, SRAM blocks in range, program length within ``imem_depth``.
    check : bool
        Enforce the controller's operand rules (default). ``check=False`` lets a test build
        programs the hardware must reject (only encodability is then checked).

    Members
    -------
    instructions : list of Instruction

    Raises
    ------
    AssemblerError
        On any bad instruction or field, naming the field, the value and what is allowed.

    Example::

        p = Program(cfg)
        p.dma_read(tile=(1, 0), local=0x100, remote=0x200, rows=4, cols=4, signal=3)
        p.wait(sem=3)
        with p.loop(8):
            p.matmul(a=AR1, b=0x400, c=0x800, c_stride=4, k=16)
            p.ar_add(reg=1, value=64)
        p.halt()
        words = p.words()
    """

    def __init__(self, cfg=None, *, check=True):
        self.cfg, self.check = cfg, check
        self.instructions = []
        self._lines = []   # source line of each instruction (None when built in Python)
        self._open_loops = []

    def __len__(self):
        return len(self.instructions)

    # -- building --------------------------------------------------------------------------------

    def emit(self, mnemonic, _line=None, **fields):
        """Append one instruction (``mnemonic`` as in assembly, fields as keywords)."""
        prefix = f"line {_line}: " if _line is not None else ""
        try:
            ins = Instruction(mnemonic, _check=self.check, **fields)
            if self.check:
                probs = ins.problems(self.cfg)
                if probs:
                    raise AssemblerError(f"{mnemonic}: {probs[0]}")
        except AssemblerError as e:
            raise AssemblerError(prefix + str(e)) from None
        self.instructions.append(ins)
        self._lines.append(_line)
        return ins

    def word(self, value):
        """Append a raw instruction word (not checked: for tests of the hardware's checks)."""
        return self.emit(".word", value=value)

    def halt(self):
        return self.emit("halt")

    def nop(self):
        return self.emit("nop")

    def dma_write(self, **fields):
        """``dma.write``: tile=(x, y) or host=True, local, remote, rows, cols, local_stride,
        remote_stride, signal."""
        return self.emit("dma.write", **fields)

    def dma_read(self, **fields):
        """``dma.read``: tile=(x, y), local, remote, rows, cols, strides, signal."""
        return self.emit("dma.read", **fields)

    def matmul(self, **fields):
        """``matmul``: a, b, c, c_stride, k, m_folds, n_folds, first, last, acc."""
        return self.emit("matmul", **fields)

    def simd(self, func, **fields):
        """``simd.<func>`` (func a :class:`~tilemesh.layouts.SimdOp` or its name): x, y, d,
        count, ymode, xfmt, yfmt, dfmt, shift."""
        name = func.name if isinstance(func, SimdOp) else str(func)
        return self.emit(f"simd.{name.lower()}", **fields)

    def simd_cfg(self, **fields):
        """``simd.cfg``: scale, zero_point."""
        return self.emit("simd.cfg", **fields)

    def signal(self, **fields):
        """``signal``: sem, tile (omitted: this tile)."""
        return self.emit("signal", **fields)

    def wait(self, **fields):
        """``wait``: sem, count."""
        return self.emit("wait", **fields)

    def notify(self, **fields):
        """``notify``: code, value."""
        return self.emit("notify", **fields)

    def fence(self, *units):
        """``fence`` on the named units ("dma", "matmul", "simd"); none named: all."""
        return self.emit("fence", **{u: True for u in units})

    def ar_set(self, **fields):
        """``ar.set``: reg, value."""
        return self.emit("ar.set", **fields)

    def ar_add(self, **fields):
        """``ar.add``: reg, value."""
        return self.emit("ar.add", **fields)

    @contextlib.contextmanager
    def loop(self, count):
        """Context manager: the instructions emitted inside run ``count`` times."""
        index = len(self.instructions)
        self.emit("loop", count=count, len=1)
        yield
        self._close_loop(index)

    def _close_loop(self, index, line=None):
        body = len(self.instructions) - index - 1
        prefix = f"line {line}: " if line is not None else ""
        if body == 0:
            raise AssemblerError(prefix + "loop: the loop body is empty")
        old = self.instructions[index]
        try:
            self.instructions[index] = Instruction("loop", _check=self.check,
                                                   count=old["count"], len=body)
        except AssemblerError as e:
            raise AssemblerError(prefix + f"loop: body of {body} instructions: {e}") from None
        if self.check and self.instructions[index].problems():
            raise AssemblerError(prefix + "loop: " + self.instructions[index].problems()[0])

    # -- output ----------------------------------------------------------------------------------

    def validate(self):
        """Program-level checks: loop nesting (LOOP_DEPTH, bodies inside their parents and the
        program) and, with ``cfg``, the length against ``imem_depth``."""
        if not self.check:
            return
        for i, msg in _loop_problems(self.instructions):
            raise AssemblerError(self._where(i) + "loop: " + msg)
        if self.cfg is not None and len(self) > self.cfg.tile.imem_depth:
            raise AssemblerError(f"the program has {len(self)} instructions, more than the "
                                 f"instruction memory's {self.cfg.tile.imem_depth} "
                                 f"(TileConfig.imem_depth)")

    def _where(self, i):
        line = self._lines[i]
        return f"line {line}: " if line is not None else f"instruction {i}: "

    def words(self):
        """The instruction words (ints of ``INSTR_BITS``), after :meth:`validate`."""
        self.validate()
        return [ins.encode() for ins in self.instructions]

    def consts(self):
        """The instruction words as ``data.Const`` views of ``InstrWord``."""
        return to_consts(self.words())

    def text(self):
        """Canonical assembly text of the program (loops in ``{ }`` block form)."""
        return disassemble(self.words())

    # -- parsing ---------------------------------------------------------------------------------

    @classmethod
    def parse(cls, text, cfg=None, *, check=True):
        """Parse assembly ``text`` (see the module docstring) into a Program."""
        prog = cls(cfg, check=check)
        ctx = _Context()
        for lineno, line in enumerate(text.splitlines(), 1):
            ctx.line = lineno
            prog._parse_line(line, ctx)
        if prog._open_loops:
            index, line = prog._open_loops[-1]
            raise AssemblerError(f"line {line}: loop: '{{' is never closed by '}}'")
        prog.validate()
        return prog

    def _parse_line(self, line, ctx):
        code = line.split("#", 1)[0].strip()
        if not code:
            return
        if code == "}":
            if not self._open_loops:
                raise ctx.error("'}' without an open loop")
            index, line_open = self._open_loops.pop()
            self._close_loop(index, line_open)
            return
        opens = code.endswith("{")
        if opens:
            code = code[:-1].rstrip()
        head, _, rest = code.partition(" ")
        if head == ".define":
            name, _, value = rest.strip().partition(" ")
            if not re.fullmatch(r"[A-Za-z_]\w*", name) or not value.strip():
                raise ctx.error(".define needs a name and a value: .define NAME VALUE")
            if re.fullmatch(r"ar\d+", name) or name in ctx.defines:
                raise ctx.error(f".define: name {name!r} is reserved or already defined")
            ctx.defines[name] = ctx.expr(re.sub(r"\s+", "", value), None)
            return
        # spaces around = + - , and inside ( ) are not separators
        rest = re.sub(r"\s*([=+,-])\s*", r"\1", rest.strip())
        tokens = _split_tokens(re.sub(r"\(\s*", "(", re.sub(r"\s*\)", ")", rest)), ctx)
        if head == ".word":
            if len(tokens) != 1:
                raise ctx.error(".word needs exactly one value")
            value = ctx.expr(tokens[0], None)
            if not 0 <= value < 1 << INSTR_BITS:
                raise ctx.error(f".word value must be in 0..2**{INSTR_BITS}-1, not {value}")
            self.emit(".word", ctx.line, value=value)
            return
        kind = KINDS.get(head)
        if kind is None:
            raise ctx.error(f"unknown instruction {head!r}")
        fields = {}
        for tok in tokens:
            name, eq, value = tok.partition("=")
            f = kind.by_name.get(name)
            if f is None:
                known = ", ".join(kind.by_name) or "none"
                raise ctx.error(f"{head}: unknown field {name!r} (fields: {known})")
            if name in fields:
                raise ctx.error(f"{head}: field {name!r} given twice")
            if not eq and not isinstance(f, _Flag):
                raise ctx.error(f"{head}: field {name!r} needs a value: {name}=...")
            fields[name] = f.parse(value if eq else None, ctx)
        if opens:
            if head != "loop":
                raise ctx.error(f"{head}: only loop opens a '{{' block")
            if "len" in fields:
                raise ctx.error("loop: give len=N or a { } block, not both")
            fields["len"] = 1
            self._open_loops.append((len(self.instructions), ctx.line))
        self.emit(head, ctx.line, **fields)


def _split_tokens(rest, ctx):
    tokens, cur, depth = [], "", 0
    for ch in rest:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ctx.error("unbalanced ')'")
        if ch.isspace() and depth == 0:
            if cur:
                tokens.append(cur)
            cur = ""
        else:
            cur += ch
    if depth:
        raise ctx.error("unbalanced '('")
    if cur:
        tokens.append(cur)
    return tokens


class _Context:
    def __init__(self):
        self.line = 0
        self.defines = {}

    def error(self, msg):
        return AssemblerError(f"line {self.line}: {msg}")

    def expr(self, text, field, allow_reg=False):
        """``term (+|- term)*``; a term is a number, a .define name or (addresses) arN."""
        where = f"field '{field.name}'" if field is not None else "value"
        if not text:
            raise self.error(f"{where} is empty")
        terms = re.findall(r"([+-]?)([^+-]+)", text)
        if "".join(s + t for s, t in terms) != text:
            raise self.error(f"{where}: cannot read {text!r}")
        total, reg = 0, None
        for sign, term in terms:
            m = re.fullmatch(r"ar(\d+)", term)
            if m:
                if not allow_reg:
                    raise self.error(f"{where}: address register {term} is only allowed in "
                                     f"address fields")
                if sign == "-" or reg is not None:
                    raise self.error(f"{where}: an address register can only be added once")
                reg = int(m[1])
                if reg >= ADDR_REGS:
                    raise self.error(f"{where}: no address register {term} "
                                     f"(ar0..ar{ADDR_REGS - 1})")
                continue
            if term in self.defines:
                value = self.defines[term]
            else:
                try:
                    value = int(term, 0)
                except ValueError:
                    raise self.error(f"{where}: bad number or unknown name {term!r}") from None
            total += -value if sign == "-" else value
        if reg is not None:
            return RegAddr(reg, total)
        return total


# -- top-level helpers -----------------------------------------------------------------------------

def assemble(text, cfg=None, *, check=True):
    """Assemble ``text`` into a list of instruction words (ints of ``INSTR_BITS``).

    With ``cfg``, values are also checked against that configuration; ``check=False`` skips
    every rule except encodability (to build programs the hardware must reject).
    """
    return Program.parse(text, cfg, check=check).words()


def disassemble(words, cfg=None, *, blocks=True, pcs=False):
    """Assembly text for instruction ``words``; ``assemble(disassemble(w, cfg), cfg) == w``.

    A word that is not a valid instruction (unknown opcode, operand rules, with ``cfg`` its
    ranges, loops the controller rejects) becomes ``.word`` with the reason as a comment.
    ``blocks`` writes loop bodies in ``{ }``; ``pcs`` appends each instruction's index.
    """
    instrs = [decode(w) for w in words]
    reasons = {}
    for i, ins in enumerate(instrs):
        probs = ins.problems(cfg)
        if probs:
            reasons[i] = f"{ins.mnemonic}: {probs[0]}"
            instrs[i] = Instruction(".word", value=words[i])
    for i, msg in _loop_problems(instrs):
        reasons[i] = f"loop: {msg}"
        instrs[i] = Instruction(".word", value=words[i])
    lines, ends = [], []  # ends: body end index of each open block
    for i, ins in enumerate(instrs):
        block = blocks and ins.mnemonic == "loop"
        text = ins.text(length=not block) + (" {" if block else "")
        comment = []
        if pcs:
            comment.append(f"{i}")
        if i in reasons:
            comment.append(reasons[i])
        line = "    " * len(ends) + text
        if comment:
            line += "  # " + "; ".join(comment)
        lines.append(line)
        if block:
            ends.append(i + ins["len"])
        while ends and ends[-1] == i:
            ends.pop()
            lines.append("    " * len(ends) + "}")
    return "\n".join(lines) + ("\n" if lines else "")


def to_consts(words):
    """``data.Const`` views of ``InstrWord`` for instruction ``words`` (e.g. for a memory's
    ``init`` or a testbench)."""
    layout = data.Layout.cast(InstrWord)
    return [layout.from_bits(w) for w in words]


def imem_image(words, cfg):
    """The ``cfg.word_bits`` words that load instruction ``words`` through the IMEM space:
    instruction ``i`` is words ``i * instr_words(cfg)`` onwards, low bits first."""
    n, w = instr_words(cfg), cfg.word_bits
    mask = (1 << w) - 1
    return [(word >> (w * part)) & mask for word in words for part in range(n)]


# -- documentation, generated from the definitions -------------------------------------------------

def isa_table_markdown():
    """Markdown tables of the instruction set (summary, then the operands of each kind),
    rendered from the layouts and the assembler's field definitions."""
    out = [f"Every instruction is {INSTR_BITS} bits: `op` (`InstrOp`, 4 bits) in the low bits, "
           f"then the operands (`InstrArgs`, a union). Unused bits are zero.", "",
           "| mnemonic | op | unit | what it does |", "|---|---|---|---|"]
    seen_simd = False
    groups = []
    for k in _KINDS:
        if k.op == InstrOp.SIMD:
            if seen_simd:
                continue
            seen_simd = True
            funcs = ", ".join(op.name.lower() for op in SimdOp)
            mn, doc = "simd.<func>", f"SIMD func over count vectors; func: {funcs}"
        else:
            mn, doc = k.mnemonic, k.doc
        out.append(f"| `{mn}` | {k.op.value} `{k.op.name}` | {k.unit.name.lower()} | {doc} |")
        groups.append((mn, k))
    for mn, k in groups:
        if not k.fields:
            continue
        notes = [f"{', '.join(k.fixed)} from the mnemonic"] if k.fixed else []
        if k.empty_defaults:
            notes.append("no field given: all " + ", ".join(k.empty_defaults) + " set")
        out += ["", f"**`{mn}`** — operands in `InstrArgs.{k.member}`"
                    + (f" ({'; '.join(notes)})" if notes else ""), "",
                "| field | bits | valid values | default | meaning |", "|---|---|---|---|---|"]
        for f in k.fields:
            out.append(f"| `{f.name}` | {f.bits_text()} | {f.range_text()} | "
                       f"{f.default_text()} | {f.doc} |")
    return "\n".join(out) + "\n"


def error_table_markdown():
    """Markdown table of :class:`~tilemesh.layouts.ErrorCode`."""
    out = ["| code | name | cause |", "|---|---|---|"]
    out += [f"| {e.value} | `{e.name}` | {ERROR_TEXT[e]} |" for e in ErrorCode]
    return "\n".join(out) + "\n"


def csr_table_markdown(cfg):
    """Markdown table of the CSR space of a tile of ``cfg``."""
    out = [f"CSR space for {cfg.word_bits}-bit words (`csr_map(cfg)`):", "",
           "| word | name | bits | access | meaning |", "|---|---|---|---|---|"]
    for c in csr_map(cfg).values():
        words = f"{c.word}" if c.words == 1 else f"{c.word}..{c.word + c.words - 1}"
        shape = c.shape.__name__ if isinstance(c.shape, type) else ""
        out.append(f"| {words} | `{c.name}` | {c.bits}{f' `{shape}`' if shape else ''} | "
                   f"{c.access} | {c.doc} |")
    return "\n".join(out) + "\n"


def preset_table_markdown():
    """Markdown table of the configuration presets (:data:`tilemesh.config.PRESETS`)."""
    from ..config import PRESETS

    out = ["| preset | mesh | PEs per tile | data / acc bits | SIMD lanes | SRAM per tile | "
           "IMEM | flit bits | router FIFO | peak MACs/cycle |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for name, c in PRESETS.items():
        t = c.tile
        kib = t.sram_banks * t.sram_depth * c.word_bits // 8192
        out.append(f"| `{name}` | {c.rows} x {c.cols} | {t.pe_rows} x {t.pe_cols} | "
                   f"{t.data_bits} / {t.acc_bits} | {t.simd_lanes} | {t.sram_banks} x "
                   f"{t.sram_depth} words ({kib} KiB) | {t.imem_depth} | {c.noc.flit_bits} | "
                   f"{c.noc.fifo_depth} | {c.pes} |")
    return "\n".join(out) + "\n"


_DOC_SECTIONS = {
    "isa-table": lambda cfg: isa_table_markdown(),
    "error-table": lambda cfg: error_table_markdown(),
    "csr-table": csr_table_markdown,
    "preset-table": lambda cfg: preset_table_markdown(),
}


def update_docs(path, cfg, *, write=True):
    """Replace each ``<!-- NAME:begin -->`` .. ``<!-- NAME:end -->`` section of the markdown
    file ``path`` (NAME one of the generated tables) with its table; returns True if the file
    was already current. A file must have at least one such section."""
    path = Path(path)
    text = path.read_text()
    new = text
    found = False
    for name, render in _DOC_SECTIONS.items():
        pattern = re.compile(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)", re.S)
        if pattern.search(new):
            found = True
            new = pattern.sub(lambda m, r=render: m[1] + r(cfg) + m[2], new)
    if not found:
        names = ", ".join(_DOC_SECTIONS)
        raise AssemblerError(f"{path}: no <!-- NAME:begin --> ... <!-- NAME:end --> section "
                             f"(NAME one of {names})")
    if write and new != text:
        path.write_text(new)
    return new == text


def main(argv=None):
    """``python -m tilemesh.compiler.assembler``: assemble, disassemble or refresh the docs."""
    from ..config import preset

    parser = argparse.ArgumentParser(prog="python -m tilemesh.compiler.assembler",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="default", help="configuration to check against")
    sub = parser.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("asm", help="assemble a file; print one hex word per line")
    a.add_argument("file")
    d = sub.add_parser("dis", help="disassemble hex words (one per line)")
    d.add_argument("file")
    u = sub.add_parser("docs", help="refresh the generated tables in a markdown file")
    u.add_argument("file", nargs="?", default="docs/tile-design.md")
    args = parser.parse_args(argv)
    cfg = preset(args.preset)
    try:
        if args.cmd == "asm":
            for w in assemble(Path(args.file).read_text(), cfg):
                print(_hex128(w))
        elif args.cmd == "dis":
            words = [int(t.replace("_", ""), 16) for t in Path(args.file).read_text().split()]
            sys.stdout.write(disassemble(words, cfg, pcs=True))
        else:
            current = update_docs(args.file, cfg)
            print(f"{args.file}: {'up to date' if current else 'updated'}")
    except AssemblerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
