"""The instruction set (layouts.py), the assembler / disassembler / builder, the tile address map
and the SRAM data-layout references. Pure Python (no simulator)."""

import dataclasses
import random
import re
from pathlib import Path

import numpy as np
import pytest
from amaranth.lib import data

from tilemesh.compiler.assembler import (
    AR1,
    AR2,
    KINDS,
    AssemblerError,
    Instruction,
    Program,
    RegAddr,
    assemble,
    decode,
    disassemble,
    imem_image,
    isa_table_markdown,
    to_consts,
    update_docs,
)
from tilemesh.config import ConfigError, MeshConfig, NocConfig, TileConfig, preset
from tilemesh.layouts import (
    ADDR_BITS,
    COORD_FIELD_BITS,
    INSTR_ARGS,
    INSTR_BITS,
    INSTR_UNIT,
    LOOP_DEPTH,
    PC_BITS,
    SHIFT_BITS,
    SIMD_SCALE_BITS,
    ControlPayload,
    ElemFormat,
    InstrArgs,
    InstrOp,
    InstrWord,
    NotifyPayload,
    SimdOp,
    YMode,
    check_address_map,
    csr_map,
    instr_words,
    matmul_operand_words,
    payload_flits,
    read_req_layout,
    simd_vector_words,
    tile_addr_layout,
)
from tilemesh.model.reference import (
    gemm,
    matmul_instr,
    pack_vector,
    simd,
    simd_instr,
    unpack_vector,
    wrap,
)

SEED = 20261104
DOC = Path(__file__).resolve().parents[2] / "docs" / "tile-design.md"
PRESETS = ["tiny", "default", "large"]


@pytest.fixture
def rnd(request):
    seed = f"{SEED}:{request.node.name}"
    print(f"random seed {seed!r}")
    return random.Random(seed)


# -- the encoding ----------------------------------------------------------------------------------

def test_instruction_word_layout():
    word = data.Layout.cast(InstrWord)
    assert word.size == INSTR_BITS
    assert word["op"].offset == 0 and word["op"].shape is InstrOp
    assert word["args"].offset == 4
    args = data.Layout.cast(InstrArgs)
    assert args.size == INSTR_BITS - 4
    for op, member in INSTR_ARGS.items():
        if member is not None:
            assert data.Layout.cast(args[member].shape).size <= INSTR_BITS - 4, op
    assert set(INSTR_ARGS) == set(InstrOp) == set(INSTR_UNIT)
    assert InstrOp.HALT.value == 0  # an unloaded (zero) instruction memory halts


def test_isa_limits_cover_the_largest_config():
    """The fixed field widths must hold the largest MeshConfig; if config.py ever allows more,
    the one-past-the-limit configs below stop raising and this test fails."""
    big = MeshConfig(rows=32, cols=32,
                     tile=TileConfig(sram_banks=16, sram_depth=65536, imem_depth=4096,
                                     data_bits=16, acc_bits=64),
                     noc=NocConfig(flit_bits=64))
    assert big.tile.sram_words <= 1 << ADDR_BITS
    assert max(big.rows, big.cols) <= 1 << COORD_FIELD_BITS
    assert big.tile.imem_depth <= 1 << PC_BITS
    assert big.tile.acc_bits + SIMD_SCALE_BITS <= (1 << SHIFT_BITS) - 1
    check_address_map(big)
    for bad in (dict(rows=33), dict(cols=33)):
        with pytest.raises(ConfigError):
            MeshConfig(**bad)
    for bad in (dict(sram_banks=17), dict(sram_depth=131072), dict(imem_depth=8192),
                dict(acc_bits=65)):
        with pytest.raises(ConfigError):
            TileConfig(**bad)


@pytest.mark.parametrize("name", PRESETS)
def test_packet_payloads_and_address_map_fit(name):
    cfg = preset(name)
    check_address_map(cfg)
    assert payload_flits(read_req_layout(cfg), cfg) == 1
    assert payload_flits(ControlPayload, cfg) == 1
    assert data.Layout.cast(ControlPayload).size <= 16  # the narrowest flit allowed
    assert data.Layout.cast(NotifyPayload).size == 64
    assert data.Layout.cast(tile_addr_layout(cfg)).size == cfg.tile_addr_bits
    assert instr_words(cfg) * cfg.word_bits >= INSTR_BITS
    regs = list(csr_map(cfg).values())
    assert len({r.name for r in regs}) == len(regs)
    word = 0
    for r in regs:  # contiguous, in order, each wide enough
        assert r.word == word and r.words * cfg.word_bits >= r.bits
        word += r.words
    assert {f"SEM{i}" for i in range(16)} <= {r.name for r in regs}


def test_multiword_csrs_with_24_bit_words():
    cfg = MeshConfig(rows=1, cols=1,
                     tile=TileConfig(sram_banks=1, sram_depth=64, imem_depth=16),
                     noc=NocConfig(flit_bits=24, max_packet_flits=1))
    regs = csr_map(cfg)
    assert regs["CYCLES"].words == 2 and regs["AR1"].words == 1 and regs["STATUS"].words == 1
    assert regs["STALL_CYCLES"].word == regs["CYCLES"].word + 2


@pytest.mark.parametrize("cfg", [
    MeshConfig(rows=1, cols=1, tile=TileConfig(sram_banks=1, sram_depth=16, imem_depth=4096),
               noc=NocConfig(flit_bits=32, max_packet_flits=1)),
    MeshConfig(rows=1, cols=1, tile=TileConfig(sram_banks=1, sram_depth=16, imem_depth=16),
               noc=NocConfig(flit_bits=24, max_packet_flits=1)),
    preset("tiny"), preset("default"), preset("large"),
], ids=["imem-dominated", "csr-dominated", "tiny", "default", "large"])
def test_every_valid_config_has_a_fitting_address_map(cfg):
    # MeshConfig sizes tile_addr_bits from all three spaces, so a config that constructs fits.
    check_address_map(cfg)
    assert cfg.imem_words == cfg.tile.imem_depth * instr_words(cfg)


def test_too_small_flit_for_the_address_map_is_a_config_error():
    with pytest.raises(ConfigError, match=r"NocConfig\.flit_bits must be at least 17"):
        MeshConfig(rows=1, cols=1, tile=TileConfig(sram_banks=1, sram_depth=16, imem_depth=16),
                   noc=NocConfig(flit_bits=16, max_packet_flits=1))


def test_operand_word_counts():
    cfg = preset("default")
    assert matmul_operand_words(cfg) == {"a": 1, "b": 1, "c": 4}
    assert simd_vector_words(cfg, ElemFormat.ACC) == 4
    assert simd_vector_words(cfg, ElemFormat.DATA) == 1
    odd = dataclasses.replace(cfg, tile=dataclasses.replace(cfg.tile, pe_rows=3, data_bits=12))
    assert matmul_operand_words(odd)["a"] == 2  # 36 bits: an element straddles two words


# -- random instructions ---------------------------------------------------------------------------

def _addr(rnd, lo=0, hi=(1 << ADDR_BITS) - 1, regs=True):
    offset = rnd.choice([lo, hi, rnd.randint(lo, hi)])
    return RegAddr(rnd.randrange(4) if regs else 0, offset)


def random_instruction(rnd, cfg=None):
    """A random instruction that passes every rule (and fits ``cfg`` if given)."""
    kind = rnd.choice(list(KINDS))
    sram = cfg.tile.sram_words if cfg else 1 << ADDR_BITS
    regs = cfg is None  # with a cfg, keep blocks checkable: absolute addresses
    xmax = (cfg.cols - 1) if cfg else 31
    ymax = (cfg.rows - 1) if cfg else 31

    def num(lo, hi):
        return rnd.choice([lo, hi, rnd.randint(lo, hi)])

    def tile():
        return (num(0, xmax), num(0, ymax))

    if kind in ("halt", "nop"):
        return Instruction(kind)
    if kind.startswith("dma."):
        rows, cols = num(1, 8 if cfg else 4095), num(1, 8 if cfg else 4095)
        f = dict(rows=rows, cols=cols)
        for side in ("local", "remote"):
            stride = num(0, 16 if cfg else (1 << 20) - 1)
            span = (rows - 1) * stride + cols if cfg else 1  # extents are checked with a cfg
            f[side] = _addr(rnd, 0, sram - span, regs)
            if rnd.random() < 0.7:
                f[f"{side}_stride"] = stride
            elif stride != cols:
                f[f"{side}_stride"] = stride
        if kind == "dma.write" and rnd.random() < 0.2:
            f["host"] = True
        else:
            f["tile"] = tile()
        if rnd.random() < 0.5:
            f["signal"] = num(0, 15)
        return Instruction(kind, **f)
    if kind == "matmul":
        if cfg is None:
            f = dict(a=_addr(rnd), b=_addr(rnd), c=_addr(rnd), c_stride=num(0, (1 << 20) - 1),
                     k=num(1, 4095), m_folds=num(1, 255), n_folds=num(1, 255))
        else:
            w = matmul_operand_words(cfg)
            mf, nf, k = num(1, 3), num(1, 3), num(1, 16)
            c_stride = nf * w["c"] + num(0, 4)
            f = dict(k=k, m_folds=mf, n_folds=nf, c_stride=c_stride,
                     a=RegAddr(0, 0), b=RegAddr(0, mf * k * w["a"]),
                     c=RegAddr(0, mf * k * w["a"] + nf * k * w["b"]))
        if f["m_folds"] * f["n_folds"] == 1:
            f["first"], f["last"] = rnd.random() < 0.5, rnd.random() < 0.5
        f["acc"] = rnd.random() < 0.5
        return Instruction(kind, **f)
    if kind.startswith("simd.") and kind != "simd.cfg":
        ymode = rnd.choice(list(YMode))
        if cfg is None:
            f = dict(x=_addr(rnd), y=_addr(rnd), d=_addr(rnd), count=num(1, 4095))
        else:
            count = num(1, 8)
            f = dict(x=RegAddr(0, 0), y=RegAddr(0, sram // 3), d=RegAddr(0, 2 * sram // 3),
                     count=count)
            if ymode == YMode.NONE and rnd.random() < 0.5:
                del f["y"]
        f.update(ymode=ymode, xfmt=rnd.choice(list(ElemFormat)),
                 yfmt=rnd.choice(list(ElemFormat)), dfmt=rnd.choice(list(ElemFormat)),
                 shift=num(0, 127))
        return Instruction(kind, **f)
    if kind == "simd.cfg":
        zp = (-(1 << (cfg.tile.acc_bits - 1)), (1 << (cfg.tile.acc_bits - 1)) - 1) if cfg \
            else (-(1 << 31), (1 << 31) - 1)
        return Instruction(kind, scale=num(-32768, 32767), zero_point=num(*zp))
    if kind == "signal":
        f = dict(sem=num(0, 15))
        if rnd.random() < 0.5:
            f["tile"] = tile()
        return Instruction(kind, **f)
    if kind == "wait":
        return Instruction(kind, sem=num(0, 15), count=num(0, 65535))
    if kind == "notify":
        return Instruction(kind, code=num(0, 65535), value=num(0, (1 << 32) - 1))
    if kind == "fence":
        return Instruction(kind, **{u: rnd.random() < 0.5 for u in ("dma", "matmul", "simd")})
    if kind == "loop":
        return Instruction(kind, count=num(1, 65535), len=num(1, 4095))
    if kind == "ar.set":
        return Instruction(kind, reg=num(1, 3), value=num(0, (1 << 20) - 1))
    if kind == "ar.add":
        return Instruction(kind, reg=num(1, 3), value=num(-(1 << 20), (1 << 20) - 1))
    raise AssertionError(kind)


def test_random_instructions_cover_every_kind(rnd):
    seen = {random_instruction(rnd).mnemonic for _ in range(2000)}
    assert seen == set(KINDS)


def test_encoding_matches_amaranth_layout(rnd):
    """The assembler packs with its own code; Amaranth's layout const must agree bit for bit,
    and Amaranth's view of the word must give back every field."""
    layout = data.Layout.cast(InstrWord)
    for _ in range(300):
        ins = random_instruction(rnd)
        op, member, values = ins.layout_values()
        init = {"op": op} if member is None else {"op": op, "args": {member: values}}
        word = ins.encode()
        assert layout.const(init).as_value().value == word, ins
        view = layout.from_bits(word)
        assert view.op == op
        if member is not None:
            for name, value in values.items():
                got = view.args[member][name]
                got = got.value if hasattr(got, "value") else int(got)
                assert got == value, (ins, name)


def test_round_trip_random_instructions(rnd):
    for _ in range(1500):
        ins = random_instruction(rnd)
        word = ins.encode()
        assert 0 <= word < 1 << INSTR_BITS
        assert decode(word) == ins
        assert Instruction(ins.mnemonic, **ins.fields).encode() == word
    # whole programs (loops printed with len=, bodies may be anything)
    for _ in range(40):
        prog = [random_instruction(rnd) for _ in range(rnd.randint(1, 60))]
        words = [i.encode() for i in prog]
        text = disassemble(words)
        assert assemble(text, check=False) == words
        assert assemble(text) == words, text


def test_round_trip_with_config(rnd):
    for name in PRESETS:
        cfg = preset(name)
        for _ in range(20):
            prog = [random_instruction(rnd, cfg) for _ in range(rnd.randint(1, 40))]
            prog = [i for i in prog if i.mnemonic != "loop"]
            words = [i.encode() for i in prog]
            text = disassemble(words, cfg)
            assert ".word" not in text, text
            assert assemble(text, cfg) == words


def test_round_trip_any_word(rnd):
    """Every 128-bit word disassembles to text that assembles back to it: words that are not
    valid instructions become .word lines with the reason."""
    words = [rnd.getrandbits(INSTR_BITS) for _ in range(300)]
    words += [rnd.getrandbits(4) | (rnd.getrandbits(20) << rnd.randrange(4, 100))
              for _ in range(300)]
    for _ in range(300):  # valid words with one bit flipped
        w = random_instruction(rnd).encode() ^ (1 << rnd.randrange(INSTR_BITS))
        words.append(w)
    text = disassemble(words)
    assert assemble(text) == words
    assert disassemble(words, blocks=False).count("\n") == len(words)
    for name in PRESETS:
        cfg = preset(name)
        some = words[-cfg.tile.imem_depth:]
        assert assemble(disassemble(some, cfg), cfg) == some


def test_raw_words_say_why():
    bad_op = 0xE
    assert decode(bad_op).mnemonic == ".word"
    k0 = Program(check=False).matmul(a=0, b=0, c=0, c_stride=4, k=0).encode()
    assert decode(k0).mnemonic == "matmul"  # decodable, but breaks a rule:
    assert disassemble([k0]) == (f".word 0x{k0 >> 96:08x}_{(k0 >> 64) & 0xFFFFFFFF:08x}_"
                                 f"{(k0 >> 32) & 0xFFFFFFFF:08x}_{k0 & 0xFFFFFFFF:08x}  "
                                 f"# matmul: field 'k' must be in 1..4095, not 0\n")
    ignored = Instruction("nop").encode() | (1 << 100)  # bits outside the operands
    assert decode(ignored).mnemonic == ".word"
    assert disassemble([ignored]).startswith(".word 0x00000010_00000000_00000000_00000001")


# -- text syntax -----------------------------------------------------------------------------------

def test_syntax_features():
    src = """
    .define BUF  0x100
    .define NEG -8
    ar.set reg = 1 value=BUF + 0x10   # spaces around = and + are fine
    dma.read tile=( 1 , 0 ) local=ar1+4 remote=BUF-NEG rows=2 cols=3 signal=5
    dma.write host local=0 remote=0x20 rows=1 cols=8
    matmul a=0 b=0x40 c=0x80 c_stride=4 k=16 first=0 last=0 acc
    simd.relu x=0x80 d=0x80 count=4
    simd.add x=0x80 y=0x10 d=0x90 count=4 ymode=scalar
    fence
    fence dma matmul
    signal sem=1
    wait sem=1 count=0b10
    notify code=7 value=0xdead_beef
    halt
    """
    prog = Program.parse(src)
    ins = prog.instructions
    assert ins[0]["value"] == 0x110
    assert ins[1]["tile"] == (1, 0) and ins[1]["local"] == AR1 + 4 and ins[1]["remote"] == 0x108
    assert ins[1]["local_stride"] == 3 and ins[1]["signal"] == 5   # stride defaults to cols
    assert ins[2]["host"] and ins[2]["tile"] is None
    assert (ins[3]["first"], ins[3]["last"], ins[3]["acc"]) == (False, False, True)
    assert ins[4]["ymode"] == YMode.NONE and ins[5]["ymode"] == YMode.SCALAR
    assert (ins[6]["dma"], ins[6]["matmul"], ins[6]["simd"]) == (True, True, True)
    assert (ins[7]["dma"], ins[7]["matmul"], ins[7]["simd"]) == (True, True, False)
    assert ins[8]["tile"] is None and ins[9]["count"] == 2
    assert ins[10]["value"] == 0xDEADBEEF
    words = prog.words()
    assert assemble(prog.text()) == words
    assert prog.text().splitlines()[7] == "fence dma matmul"


def test_loop_blocks_and_builder_agree():
    src = """
    loop count=3 {
        nop
        loop count=2 {
            wait sem=0
            signal sem=0
        }
    }
    loop count=5 len=1
    halt
    halt
    """
    words = assemble(src)
    loops = [decode(w) for w in words if decode(w).mnemonic == "loop"]
    assert [(i["count"], i["len"]) for i in loops] == [(3, 4), (2, 2), (5, 1)]
    p = Program()
    with p.loop(3):
        p.nop()
        with p.loop(2):
            p.wait(sem=0)
            p.signal(sem=0)
    p.emit("loop", count=5, len=1)
    p.halt()
    p.halt()
    assert p.words() == words
    text = disassemble(words)
    assert text == ("loop count=3 {\n    nop\n    loop count=2 {\n        wait sem=0\n"
                    "        signal sem=0\n    }\n}\nloop count=5 {\n    halt\n}\nhalt\n")
    assert "len=4" in disassemble(words, blocks=False)
    assert assemble(text) == words


def test_builder_api(rnd):
    cfg = preset("default")
    p = Program(cfg)
    p.ar_set(reg=2, value=0x400)
    p.dma_read(tile=(1, 1), local=AR2 + 8, remote=0, rows=4, cols=4, remote_stride=16, signal=3)
    p.wait(sem=3)
    p.matmul(a=0, b=0x100, c=0x200, c_stride=4, k=64)
    p.simd(SimdOp.REQUANT, x=0x200, d=0x300, count=4, dfmt="data", shift=9)
    p.simd_cfg(scale=-7, zero_point=3)
    p.fence("matmul")
    p.notify(code=1)
    p.ar_add(reg=2, value=-16)
    p.halt()
    text = p.text()
    assert "dma.read tile=(1,1) local=ar2+0x8 remote=0x0 rows=4 cols=4 remote_stride=16 " \
           "signal=3" in text
    assert "simd.requant x=0x200 d=0x300 count=4 dfmt=data shift=9" in text
    assert assemble(text, cfg) == p.words()
    consts = p.consts()
    assert [c.op for c in consts] == [i.op for i in p.instructions]
    assert consts[3].args.matmul.k == 64


def test_imem_image():
    cfg = preset("default")
    words = assemble("nop\nnotify code=3 value=0x12345678\nhalt")
    image = imem_image(words, cfg)
    n = instr_words(cfg)
    assert len(image) == 3 * n and all(0 <= w < 1 << 32 for w in image)
    for i, word in enumerate(words):
        assert sum(image[i * n + j] << (32 * j) for j in range(n)) == word
    odd = dataclasses.replace(cfg, noc=dataclasses.replace(cfg.noc, flit_bits=48))
    assert instr_words(odd) == 3 and len(imem_image(words, odd)) == 9
    assert imem_image(words, odd)[5] == words[1] >> 96


def test_to_consts_handles_bad_opcodes():
    consts = to_consts([0xF, 0x0])
    assert consts[0].as_value().value == 0xF and consts[1].op == InstrOp.HALT


# -- errors ----------------------------------------------------------------------------------------

SYNTAX_ERRORS = [
    ("nop\nnop\n\n# x\nnop\nnop\nmov r1, r2", r"^line 7: unknown instruction 'mov'$"),
    ("dma.write tile=(1,0) local=0 remote=0 rows=5000 cols=1",
     r"^line 1: dma\.write: field 'rows' must be in 1\.\.4095, not 5000$"),
    ("dma.write tile=(1,0) local=0 remote=0 rows=0 cols=1",
     r"^line 1: dma\.write: field 'rows' must be in 1\.\.4095, not 0$"),
    ("dma.write tile=(1,0) local=0 rows=1 cols=1",
     r"^line 1: dma\.write: missing field 'remote'$"),
    ("dma.write local=0 remote=0 rows=1 cols=1",
     r"^line 1: dma\.write: missing field 'tile' \(or host\)$"),
    ("dma.write host tile=(0,0) local=0 remote=0 rows=1 cols=1",
     r"^line 1: dma\.write: give either tile=\(x,y\) or host, not both$"),
    ("dma.read host local=0 remote=0 rows=1 cols=1",
     r"^line 1: dma\.read: the host cannot be read by DMA"),
    ("dma.write tile=(32,0) local=0 remote=0 rows=1 cols=1",
     r"^line 1: dma\.write: field 'tile' must be \(x, y\) with x, y in 0\.\.31, not \(32, 0\)$"),
    ("dma.write tile=1,0 local=0 remote=0 rows=1 cols=1",
     r"^line 1: field 'tile' must be written \(x,y\), not '1,0'$"),
    ("wait sem=1 sem=2", r"^line 1: wait: field 'sem' given twice$"),
    ("wait sem=1 foo=2", r"^line 1: wait: unknown field 'foo' \(fields: sem, count\)$"),
    ("wait sem", r"^line 1: wait: field 'sem' needs a value: sem=\.\.\.$"),
    ("wait sem=0x1g", r"^line 1: field 'sem': bad number or unknown name '0x1g'$"),
    ("wait sem=ar1", r"^line 1: field 'sem': address register ar1 is only allowed in address "
                     r"fields$"),
    ("matmul a=ar4 b=0 c=0 c_stride=1 k=1", r"^line 1: field 'a': no address register ar4 "
                                            r"\(ar0\.\.ar3\)$"),
    ("matmul a=0-ar1 b=0 c=0 c_stride=1 k=1",
     r"^line 1: field 'a': an address register can only be added once$"),
    ("matmul a=0 b=0 c=0 c_stride=1 k=4 m_folds=2 first=0",
     r"^line 1: matmul: first=0 or last=0 \(accumulating across instructions\) needs "
     r"m_folds=1 and n_folds=1$"),
    ("matmul a=-1 b=0 c=0 c_stride=1 k=4", r"^line 1: matmul: field 'a' must be in "
                                           r"0\.\.0xfffff, not -1$"),
    ("simd.add x=0 d=0 count=1", r"^line 1: simd\.add: missing field 'y'$"),
    ("simd.bogus x=0 d=0 count=1", r"^line 1: unknown instruction 'simd\.bogus'$"),
    ("simd.relu x=0 d=0 count=1 ymode=sideways",
     r"^line 1: simd\.relu: field 'ymode' must be one of vector, repeat, scalar, none, "
     r"not 'sideways'$"),
    ("ar.set reg=0 value=1", r"^line 1: ar\.set: field 'reg' must be in 1\.\.3, not 0$"),
    ("ar.set reg=1 value=-1", r"^line 1: ar\.set: field 'value' must be in 0x0\.\.0xfffff, "
                              r"not -1$"),
    ("simd.cfg scale=40000", r"^line 1: simd\.cfg: field 'scale' must be in -32768\.\.32767, "
                             r"not 40000$"),
    ("loop count=2 {\nnop\n", r"^line 1: loop: '\{' is never closed by '\}'$"),
    ("nop\n}", r"^line 2: '\}' without an open loop$"),
    ("loop count=2 {\n}", r"^line 1: loop: the loop body is empty$"),
    ("nop {", r"^line 1: nop: only loop opens a '\{' block$"),
    ("loop count=2 len=1 {\nnop\n}", r"^line 1: loop: give len=N or a \{ \} block, not both$"),
    ("loop count=0 {\nnop\n}", r"^line 1: loop: field 'count' must be in 1\.\.65535, not 0$"),
    ("nop\nloop count=2 len=3\nnop\nnop",
     r"^line 2: loop: loop body \(len=3\) runs past the end of the program \(last "
     r"instruction 3\)$"),
    ("loop count=2 len=2\nloop count=2 len=2\nnop\nnop\nhalt",
     r"^line 2: loop: loop body \(len=2\) ends after the enclosing loop's body "
     r"\(instruction 2\)$"),
    ("\n".join(["loop count=2 {"] * (LOOP_DEPTH + 1) + ["nop"] + ["}"] * (LOOP_DEPTH + 1)),
     rf"^line {LOOP_DEPTH + 1}: loop: loops nested deeper than LOOP_DEPTH={LOOP_DEPTH}$"),
    (".define X 1\n.define X 2", r"^line 2: \.define: name 'X' is reserved or already defined$"),
    (".define ar1 2", r"^line 1: \.define: name 'ar1' is reserved or already defined$"),
    (".word 0x1 0x2", r"^line 1: \.word needs exactly one value$"),
    (f".word {1 << 128}", r"^line 1: \.word value must be in 0\.\.2\*\*128-1"),
    ("fence dma=2", r"^line 1: fence: field 'dma' must be 0 or 1, not 2$"),
    ("notify code=(1,2)", r"^line 1: field 'code': bad number or unknown name '\(1,2\)'$"),
]


@pytest.mark.parametrize("src,message", SYNTAX_ERRORS,
                         ids=[f"e{i}" for i in range(len(SYNTAX_ERRORS))])
def test_syntax_errors(src, message):
    with pytest.raises(AssemblerError, match=message):
        assemble(src)


CFG_ERRORS = [
    ("dma.write tile=(2,0) local=0 remote=0 rows=1 cols=1",
     r"^line 1: dma\.write: field 'tile' \(2,0\) is off the 1x2 mesh \(x must be in 0\.\.1, "
     r"y in 0\.\.0\)$"),
    ("signal tile=(0,1) sem=0", r"^line 1: signal: field 'tile' \(0,1\) is off the 1x2 mesh"),
    ("dma.read tile=(1,0) local=0x1f0 remote=0 rows=2 cols=16 local_stride=16",
     r"^line 1: dma\.read: field 'local' block ends at word 0x20f, past the last SRAM word "
     r"0x1ff \(TileConfig\.sram_banks x sram_depth\)$"),
    ("dma.read tile=(1,0) local=ar1+0x1f0 remote=0 rows=2 cols=16",
     r"field 'local' block ends at word 0x20f \(before adding ar1\), past the last SRAM word"),
    ("dma.write tile=(1,0) local=0 remote=0x1ff rows=1 cols=2",
     r"field 'remote' block ends at word 0x200, past the last SRAM word 0x1ff"),
    ("matmul a=0 b=0x100 c=0x180 c_stride=1 k=4",
     r"^line 1: matmul: field 'c_stride' must be at least n_folds x 2 words of a C row \(2\), "
     r"not 1$"),
    ("matmul a=0 b=0x100 c=0x1fc c_stride=2 k=4",
     r"field 'c' block ends at word 0x1ff"),  # 2 rows x 2 words from 0x1fc end at 0x1ff: fits?
    ("matmul a=0 b=0x100 c=0x2 c_stride=2 k=4", r"^line 1: matmul: the c block overlaps the "
                                                r"a block$"),
    ("simd.add x=0 y=0x10 d=0x12 count=4", r"^line 1: simd\.add: the d block overlaps the y "
                                            r"block"),
    ("simd.add x=0 y=0x10 d=0x1fe count=4",
     r"field 'd' block ends at word 0x205, past the last SRAM word 0x1ff"),
    ("simd.cfg scale=1 zero_point=8388608",
     r"^line 1: simd\.cfg: field 'zero_point' must be in -8388608\.\.8388607 \(signed "
     r"acc_bits=24\), not 8388608$"),
    ("\n".join(["nop"] * 65), r"^the program has 65 instructions, more than the instruction "
                              r"memory's 64 \(TileConfig\.imem_depth\)$"),
]


@pytest.mark.parametrize("src,message", CFG_ERRORS, ids=[f"c{i}" for i in range(len(CFG_ERRORS))])
def test_config_errors(src, message):
    # tiny's tiles (2 x 256 words of 32 bits, 2x2 PEs, acc 24, imem 64) in a 1 x 2 mesh
    cfg = dataclasses.replace(preset("tiny"), cols=2)
    if "0x1fc" in src:
        # the C block of a 2x2 array (2 words per row) from 0x1fc with stride 2 ends at 0x1ff:
        # it fits; one word later it does not
        assert assemble(src, cfg)
        src = src.replace("0x1fc", "0x1fd")
        message = r"field 'c' block ends at word 0x200, past the last SRAM word 0x1ff"
    with pytest.raises(AssemblerError, match=message):
        assemble(src, cfg)
    assemble(src)  # without a config these are all valid


def test_in_place_simd_is_allowed():
    cfg = preset("tiny")
    assemble("simd.relu x=0x10 d=0x10 count=4", cfg)
    assemble("simd.add x=0 y=0x10 d=0x10 count=4", cfg)  # d = y, ymode vector, same size
    with pytest.raises(AssemblerError, match="the d block overlaps the x block"):
        assemble("simd.sat x=0x10 d=0x10 count=4 dfmt=data", cfg)  # narrower: not in place
    with pytest.raises(AssemblerError, match="the d block overlaps the y block"):
        assemble("simd.add x=0 y=0x10 d=0x10 count=4 ymode=repeat", cfg)


def test_builder_errors_name_field_value_and_range():
    p = Program(preset("default"))
    with pytest.raises(AssemblerError, match=r"^matmul: field 'k' must be in 1\.\.4095, not 0$"):
        p.matmul(a=0, b=0, c=0x100, c_stride=4, k=0)
    with pytest.raises(AssemblerError, match=r"^dma\.write: unknown field 'lstride' \(fields: "
                                             r"tile, host, local, remote, rows, cols, "
                                             r"local_stride, remote_stride, signal\)$"):
        p.dma_write(tile=(0, 0), local=0, remote=0, rows=1, cols=1, lstride=4)
    with pytest.raises(AssemblerError, match=r"^wait: field 'sem' must be an integer in "
                                             r"0\.\.15, not '1'$"):
        p.wait(sem="1")
    with pytest.raises(AssemblerError, match=r"^matmul: field 'k' must be in 1\.\.4095, not "
                                             r"5000$"):
        p.matmul(a=0, b=0, c=0x100, c_stride=4, k=5000)
    with pytest.raises(AssemblerError, match=r"^loop: the loop body is empty$"):
        with p.loop(2):
            pass
    with pytest.raises(AssemblerError, match=r"^unknown instruction 'simd\.nope'$"):
        p.simd("nope", x=0, d=0, count=1)
    assert len(p) == 1  # only the (empty) loop's placeholder was appended


def test_unchecked_programs_build_what_the_hardware_must_reject():
    """check=False: only encodability is enforced, for tests of the controller's errors."""
    cfg = preset("tiny")
    p = Program(cfg, check=False)
    p.dma_write(tile=(5, 5), local=0x1ff, remote=0, rows=2, cols=2)    # OFF_MESH, SRAM_RANGE
    p.matmul(a=0, b=0, c=0, c_stride=0, k=0, m_folds=2, first=False)  # BAD_OPERAND
    p.dma_read(host=True, local=0, remote=0, rows=1, cols=1)          # BAD_OPERAND
    p.emit("ar.set", reg=0, value=5)                                  # BAD_OPERAND
    p.emit("loop", count=2, len=9)                                    # LOOP_NEST
    p.word(0xD)                                                       # BAD_OPCODE
    words = p.words()
    assert len(words) == 6 and words[5] == 0xD
    assert decode(words[1])["k"] == 0
    text = disassemble(words, cfg)
    assert text.count(".word") == 6
    assert assemble(text, cfg) == words
    with pytest.raises(AssemblerError, match="field 'k' must be in 0..4095, not 4096"):
        p.matmul(a=0, b=0, c=0, c_stride=0, k=4096)  # still must be encodable


# -- the docs are generated from the definitions ---------------------------------------------------

def test_tile_design_doc_tables_are_current():
    assert update_docs(DOC, preset("default"), write=False), \
        "docs/tile-design.md is stale: run `python -m tilemesh.compiler.assembler docs`"
    assert isa_table_markdown() in DOC.read_text()


def test_architecture_doc_tables_are_current():
    arch = DOC.with_name("architecture.md")
    assert update_docs(arch, preset("default"), write=False), \
        "docs/architecture.md is stale: run `python -m tilemesh.compiler.assembler docs " \
        "docs/architecture.md`"
    text = arch.read_text()
    assert isa_table_markdown() in text
    assert all(f"| `{name}` |" in text for name in PRESETS)


def test_update_docs_needs_a_generated_section(tmp_path):
    doc = tmp_path / "plain.md"
    doc.write_text("# nothing generated here\n")
    with pytest.raises(AssemblerError, match="no <!-- NAME:begin -->.*isa-table"):
        update_docs(doc, preset("default"), write=False)


def test_module_docstring_example_assembles():
    import tilemesh.compiler.assembler as asm

    src = asm.__doc__.split("::\n", 1)[1].split("\n\n", 1)[0]
    words = assemble(src, preset("default"))
    assert len(words) == 10 and decode(words[-1]).mnemonic == "nop"
    assert [decode(w).mnemonic for w in words[:2]] == ["ar.set", "loop"]


def test_tile_design_doc_examples_assemble():
    blocks = re.findall(r"```\n(.*?)```", DOC.read_text(), re.S)
    programs = [b for b in blocks if re.search(r"^\s*halt\s*$", b, re.M)]
    assert len(programs) >= 2
    for src in programs:
        assert assemble(src, preset("default"))


# -- SRAM data layout and instruction semantics (model.reference) ----------------------------------

def test_pack_unpack_vector(rnd):
    for _ in range(200):
        elem_bits, word_bits, n = rnd.randint(2, 64), rnd.randint(16, 256), rnd.randint(1, 20)
        values = [rnd.randint(-(1 << (elem_bits - 1)), (1 << (elem_bits - 1)) - 1)
                  for _ in range(n)]
        words = pack_vector(values, elem_bits, word_bits)
        assert len(words) == -(-n * elem_bits // word_bits)
        assert all(0 <= w < 1 << word_bits for w in words)
        assert unpack_vector(words, n, elem_bits, word_bits).tolist() == values
    assert pack_vector([1, -1, 2, -2], 8, 32) == [0xFE02FF01]   # element 0 in the low bits
    assert pack_vector([-1, 1, 0], 12, 16) == [0x1FFF, 0x0000, 0x0000]  # element 1 straddles
    with pytest.raises(ValueError, match="vector element 1 does not fit 8 bits: 256"):
        pack_vector([0, 256], 8, 32)


def _place_operands(sram, cfg, a_mat, b_mat, a, b, k):
    """Write A (M x k) and B (k x N) in the fold-major layout of docs/tile-design.md."""
    t, w, word = cfg.tile, matmul_operand_words(cfg), cfg.word_bits
    for i in range(a_mat.shape[0] // t.pe_rows):
        for s in range(k):
            p = a + (i * k + s) * w["a"]
            sram[p:p + w["a"]] = pack_vector(a_mat[i * t.pe_rows:(i + 1) * t.pe_rows, s],
                                             t.data_bits, word)
    for j in range(b_mat.shape[1] // t.pe_cols):
        for s in range(k):
            p = b + (j * k + s) * w["b"]
            sram[p:p + w["b"]] = pack_vector(b_mat[s, j * t.pe_cols:(j + 1) * t.pe_cols],
                                             t.data_bits, word)


def _read_c(sram, cfg, c, c_stride, rows, n_folds):
    t, w, word = cfg.tile, matmul_operand_words(cfg), cfg.word_bits
    out = np.zeros((rows, n_folds * t.pe_cols), dtype=np.int64)
    for r in range(rows):
        for j in range(n_folds):
            p = c + r * c_stride + j * w["c"]
            out[r, j * t.pe_cols:(j + 1) * t.pe_cols] = unpack_vector(
                sram[p:p + w["c"]], t.pe_cols, t.acc_bits, word)
    return out


@pytest.mark.parametrize("name", ["tiny", "default"])
def test_matmul_instr_reference(name, rnd):
    cfg = preset(name)
    t = cfg.tile
    lo, hi = -(1 << (t.data_bits - 1)), (1 << (t.data_bits - 1)) - 1
    mf, nf, k = 2, 3, 5
    a_mat = np.array([[rnd.choice([lo, hi, rnd.randint(lo, hi)]) for _ in range(k)]
                      for _ in range(mf * t.pe_rows)])
    b_mat = np.array([[rnd.choice([lo, hi, rnd.randint(lo, hi)]) for _ in range(nf * t.pe_cols)]
                      for _ in range(k)])
    w = matmul_operand_words(cfg)
    sram = [0] * t.sram_words
    _place_operands(sram, cfg, a_mat, b_mat, 0, 0x100, k)
    c_stride = nf * w["c"] + 1  # a gap word per row: must stay untouched
    sram[0x200:0x300] = [0xA5A5] * 0x100
    assert matmul_instr(sram, cfg, a=0, b=0x100, c=0x200, c_stride=c_stride, k=k, m_folds=mf,
                        n_folds=nf) is None
    want = gemm(a_mat, b_mat, t.acc_bits)
    assert (_read_c(sram, cfg, 0x200, c_stride, mf * t.pe_rows, nf) == want).all()
    assert sram[0x200 + nf * w["c"]] == 0xA5A5
    # acc: C += A @ B
    matmul_instr(sram, cfg, a=0, b=0x100, c=0x200, c_stride=c_stride, k=k, m_folds=mf,
                 n_folds=nf, acc=True)
    assert (_read_c(sram, cfg, 0x200, c_stride, mf * t.pe_rows, nf)
            == wrap(2 * want, t.acc_bits)).all()
    # K-chunking: first / last across three instructions equals one instruction
    a1, b1 = a_mat[:t.pe_rows], b_mat[:, :t.pe_cols]
    sram = [0] * t.sram_words
    _place_operands(sram, cfg, a1, b1, 0, 0x100, k)
    state = matmul_instr(sram, cfg, a=0, b=0x100, c=0x200, c_stride=w["c"], k=2, last=False)
    state = matmul_instr(sram, cfg, a=2 * w["a"], b=0x100 + 2 * w["b"], c=0x200,
                         c_stride=w["c"], k=2, first=False, last=False, state=state)
    matmul_instr(sram, cfg, a=4 * w["a"], b=0x100 + 4 * w["b"], c=0x200, c_stride=w["c"], k=1,
                 first=False, state=state)
    assert (_read_c(sram, cfg, 0x200, w["c"], t.pe_rows, 1) == gemm(a1, b1, t.acc_bits)).all()
    with pytest.raises(ValueError, match="first=0 needs the state"):
        matmul_instr(sram, cfg, a=0, b=0, c=0, c_stride=1, k=1, first=False)


def test_simd_instr_reference(rnd):
    cfg = preset("default")
    t, word = cfg.tile, cfg.word_bits
    lanes, n = t.simd_lanes, 6
    xs = np.array([[rnd.randint(-(1 << 31), (1 << 31) - 1) for _ in range(lanes)]
                   for _ in range(n)])
    bias = np.array([rnd.randint(-1000, 1000) for _ in range(lanes)])
    sram = [0] * t.sram_words
    xw = simd_vector_words(cfg, ElemFormat.ACC)
    for v in range(n):
        sram[v * xw:(v + 1) * xw] = pack_vector(xs[v], 32, word)
    sram[0x100:0x100 + xw] = pack_vector(bias, 32, word)
    # bias add with a repeated y vector, then requantize in place... to int8 elsewhere
    simd_instr(sram, cfg, func=SimdOp.ADD, x=0, y=0x100, d=0x200, count=n, ymode="repeat")
    simd_instr(sram, cfg, func=SimdOp.REQUANT, x=0x200, d=0x300, count=n, dfmt="data",
               shift=20, scale=12345, zero_point=-3)
    dw = simd_vector_words(cfg, ElemFormat.DATA)
    for v in range(n):
        summed, _ = simd(SimdOp.ADD, xs[v], bias)
        want, _ = simd(SimdOp.REQUANT, summed, shift=20, scale=12345, zero_point=-3)
        got = unpack_vector(sram[0x300 + v * dw:0x300 + (v + 1) * dw], lanes, t.data_bits, word)
        assert got.tolist() == want.tolist()
    # scalar y and data-format x; in place relu
    simd_instr(sram, cfg, func=SimdOp.MAX, x=0x300, y=0x100, d=0x400, count=n, ymode="scalar",
               xfmt="data")
    simd_instr(sram, cfg, func=SimdOp.RELU, x=0x400, d=0x400, count=n, ymode="none")
    for v in range(n):
        xv = unpack_vector(sram[0x300 + v * dw:0x300 + (v + 1) * dw], lanes, t.data_bits, word)
        got = unpack_vector(sram[0x400 + v * xw:0x400 + (v + 1) * xw], lanes, 32, word)
        assert got.tolist() == np.maximum(np.maximum(xv, bias[0]), 0).tolist()
