# amaranth: UnusedElaboratable=no
# (the constructor test makes a component that fails before it can be elaborated)
"""SIMD engine (SIMD / SIMD_CFG on SRAM vectors) in Amaranth's simulator against
``model.reference.simd_instr``: every func, element format and ymode, random shifts, scales and
zero points, in-place operation and chains through one buffer, with the behavioural SRAM of
test_matmul_engine.py (random request/write stalls and read latency) and gaps on the command
stream; START resetting scale and zero point; abort in mid-flight; the one-vector-per-cycle
rate with one-word vectors."""

import random

import pytest
from amaranth.lib import data
from test_matmul_engine import ODD, ClientSram, run_engine

from tilemesh.config import preset
from tilemesh.layouts import ElemFormat, InstrOp, SimdOp, YMode, packed_words
from tilemesh.model.reference import simd_instr
from tilemesh.tile.ports import unit_command_layout
from tilemesh.tile.simd_engine import SimdEngine

DEFAULT = preset("default")   # 4 lanes: acc vectors of 4 words, data vectors of 1 word
TINY = preset("tiny")         # 2 lanes of acc 24: 48-bit vectors straddle words
CMD = data.Layout.cast(unit_command_layout())
FMT = {"acc": ElemFormat.ACC, "data": ElemFormat.DATA}
YMODES = {"vector": YMode.VECTOR, "repeat": YMode.REPEAT, "scalar": YMode.SCALAR,
          "none": YMode.NONE}


def simd_cmd(ins):
    if ins["op"] == "cfg":
        return CMD.const({"op": InstrOp.SIMD_CFG,
                          "args": {"simd_cfg": {"scale": ins["scale"],
                                                "zero_point": ins["zero_point"]}}})
    return CMD.const({"op": InstrOp.SIMD, "args": {"simd": {
        "x": ins["x"], "y": ins["y"], "d": ins["d"], "count": ins["count"],
        "func": ins["func"], "ymode": YMODES[ins["ymode"]], "xfmt": FMT[ins["xfmt"]],
        "yfmt": FMT[ins["yfmt"]], "dfmt": FMT[ins["dfmt"]], "shift": ins["shift"]}}})


def words(cfg, fmt):
    bits = cfg.tile.acc_bits if fmt == "acc" else cfg.tile.data_bits
    return packed_words(cfg.tile.simd_lanes, bits, cfg.word_bits)


def y_extent(cfg, ins):
    bits = cfg.tile.acc_bits if ins["yfmt"] == "acc" else cfg.tile.data_bits
    return {"vector": ins["count"] * words(cfg, ins["yfmt"]),
            "repeat": words(cfg, ins["yfmt"]),
            "scalar": packed_words(1, bits, cfg.word_bits), "none": 0}[ins["ymode"]]


def reference_run(cfg, mem, prog):
    scale, zero_point = 1, 0
    for ins in prog:
        if ins == "start":
            scale, zero_point = 1, 0
        elif ins["op"] == "cfg":
            scale, zero_point = ins["scale"], ins["zero_point"]
        else:
            simd_instr(mem, cfg, func=ins["func"], x=ins["x"], y=ins["y"], d=ins["d"],
                       count=ins["count"], ymode=ins["ymode"], xfmt=ins["xfmt"],
                       yfmt=ins["yfmt"], dfmt=ins["dfmt"], shift=ins["shift"], scale=scale,
                       zero_point=zero_point)


def random_simd_program(rnd, cfg, n_instr, space):
    """Random SIMD and SIMD_CFG instructions in the first ``space`` words: in place
    (``d == x`` or ``d == y``), chains reading the previous result, otherwise ``d`` apart from
    the instruction's own operands (the ISA leaves other overlaps unspecified)."""
    prog, prev = [], None
    for _ in range(n_instr):
        if rnd.random() < 0.2:
            prog.append({"op": "cfg", "scale": rnd.randint(-(1 << 15), (1 << 15) - 1),
                         "zero_point": rnd.choice([0, rnd.randint(-300, 300),
                                                   rnd.randint(-(1 << 31), (1 << 31) - 1)])})
            continue
        ins = {"op": "simd", "func": rnd.choice(list(SimdOp)), "count": rnd.randint(1, 7),
               "ymode": rnd.choice(list(YMODES)), "xfmt": rnd.choice(["acc", "data"]),
               "yfmt": rnd.choice(["acc", "data"]), "dfmt": rnd.choice(["acc", "data"]),
               "shift": rnd.choice([0, 1, rnd.randint(0, 20), rnd.randint(0, 127)])}
        x_len = ins["count"] * words(cfg, ins["xfmt"])
        y_len = y_extent(cfg, ins)
        d_len = ins["count"] * words(cfg, ins["dfmt"])
        for _ in range(1000):
            r = rnd.random()
            if prev is not None and r < 0.3 and prev["d"] + x_len <= space:
                x = prev["d"]                     # read the previous result (chain)
            else:
                x = rnd.randrange(space - x_len)
            if y_len and prev is not None and rnd.random() < 0.3 and prev["d"] + y_len <= space:
                y = prev["d"]                     # y is the previous result (chain)
            else:
                y = rnd.randrange(space - y_len) if y_len else 0
            r = rnd.random()
            if r < 0.25 and ins["dfmt"] == ins["xfmt"]:
                d = x                             # in place
            elif r < 0.4 and ins["ymode"] == "vector" and ins["dfmt"] == ins["yfmt"]:
                d = y
            else:
                d = rnd.randrange(space - d_len)
                if (x < d + d_len and d < x + x_len) or (y < d + d_len and d < y + y_len):
                    continue
            if d == x and y_len and (y < d + d_len and d < y + y_len) and d != y:
                continue
            if d == y and (x < d + d_len and d < x + x_len) and d != x:
                continue
            break
        else:
            raise AssertionError("could not place the operands")
        ins.update(x=x, y=y, d=d)
        prog.append(ins)
        prev = ins
    return prog


def run_simd(cfg, prog, mem, *, seed, ready=0.75, latency=(1, 4), idle=0.0, then=(),
             **kwargs):
    dut = SimdEngine(cfg)
    sram = ClientSram(mem, {"x": dut.x, "y": dut.y, "d": dut.d}, random.Random(seed + 1),
                      ready=ready, latency=latency, readers="xy", writers="d")
    as_cmds = [i if i == "start" else simd_cmd(i) for i in prog]
    return run_engine(dut, sram, as_cmds, seed=seed, idle=idle,
                      then=[simd_cmd(i) for i in then], **kwargs)


def random_image(rnd, cfg, n):
    return [rnd.getrandbits(cfg.word_bits) for _ in range(n)]


@pytest.mark.parametrize("cfg, seed, n_instr",
                         [(DEFAULT, 1, 24), (DEFAULT, 2, 24), (TINY, 3, 24), (ODD, 4, 24),
                          (preset("large"), 22, 12)],
                         ids=["default-1", "default-2", "tiny", "odd", "large"])
def test_random_programs(cfg, seed, n_instr):
    print(f"seed={seed}")
    rnd = random.Random(seed)
    space = 400
    prog = random_simd_program(rnd, cfg, n_instr, space)
    mem = random_image(rnd, cfg, space)
    want = list(mem)
    reference_run(cfg, want, prog)
    run_simd(cfg, prog, mem, seed=seed, ready=0.7, latency=(1, 5), idle=0.2)
    assert mem == want


def test_requant_epilogue_chain():
    """The GEMM epilogue through one buffer without fences: bias add (repeat), requantize to
    data, ReLU in place, SIMD_CFG between instructions, results read back as y: each step
    sees the previous result and the scale / zero point current when it was issued."""
    cfg = DEFAULT
    rnd = random.Random(11)
    base = {"op": "simd", "shift": 0, "yfmt": "acc", "y": 0}
    prog = [
        {"op": "cfg", "scale": 23170, "zero_point": -3},
        dict(base, func=SimdOp.ADD, x=0, y=100, ymode="repeat", d=200, count=8,
             xfmt="acc", dfmt="acc"),
        dict(base, func=SimdOp.REQUANT, x=200, ymode="none", d=300, count=8, xfmt="acc",
             dfmt="data", shift=18),
        {"op": "cfg", "scale": -7, "zero_point": 5},
        dict(base, func=SimdOp.RELU, x=300, ymode="none", d=300, count=8, xfmt="data",
             dfmt="data"),
        dict(base, func=SimdOp.REQUANT, x=200, ymode="none", d=320, count=8, xfmt="acc",
             dfmt="acc", shift=3),
        dict(base, func=SimdOp.MAX, x=320, ymode="scalar", y=300, yfmt="data", d=320,
             count=8, xfmt="acc", dfmt="acc"),
        dict(base, func=SimdOp.SUB, x=0, ymode="vector", y=320, yfmt="acc", d=100, count=8,
             xfmt="acc", dfmt="acc"),
    ]
    mem = random_image(rnd, cfg, 400)
    want = list(mem)
    reference_run(cfg, want, prog)
    run_simd(cfg, prog, mem, seed=11, ready=0.9, latency=(1, 3))
    assert mem == want


def test_reads_wait_for_earlier_results():
    """The SRAM takes d writes slowly, so results lag far behind: x of the next instruction
    starting just below the pending d block and running into it, and a y inside it, read
    each word only after it has been written."""
    cfg = DEFAULT
    rnd = random.Random(17)
    base = {"op": "simd", "shift": 0, "y": 0, "yfmt": "acc", "ymode": "none"}
    prog = [
        dict(base, func=SimdOp.ADD, x=0, d=100, count=12, xfmt="data", dfmt="acc"),
        dict(base, func=SimdOp.RELU, x=99, d=200, count=4, xfmt="acc", dfmt="acc"),
        dict(base, func=SimdOp.MUL, x=0, d=300, count=12, xfmt="data", dfmt="acc"),
        dict(base, func=SimdOp.ADD, x=250, d=400, count=4, xfmt="acc", dfmt="acc",
             ymode="vector", y=299),
    ]
    mem = random_image(rnd, cfg, 500)
    want = list(mem)
    reference_run(cfg, want, prog)
    run_simd(cfg, prog, mem, seed=17, ready={"x": 1.0, "y": 1.0, "d": 0.3}, latency=(1, 2))
    assert mem == want


def test_start_resets_requant_parameters():
    cfg = DEFAULT
    rnd = random.Random(12)
    req = {"op": "simd", "func": SimdOp.REQUANT, "x": 0, "y": 0, "ymode": "none",
           "count": 4, "xfmt": "acc", "yfmt": "acc", "dfmt": "acc", "shift": 2}
    prog = [{"op": "cfg", "scale": 300, "zero_point": 77}, dict(req, d=100), "start",
            dict(req, d=200)]
    mem = random_image(rnd, cfg, 300)
    mem[0:16] = [rnd.randint(-3, 3) & 0xFFFF_FFFF for _ in range(16)]   # no saturation
    want = list(mem)
    reference_run(cfg, want, prog)
    run_simd(cfg, prog, mem, seed=12)
    assert mem == want
    assert mem[100:116] != mem[200:216]


def test_abort_then_clean_run():
    """Abort with reads and results in flight, then at once a new program in the same
    simulation: idle a few cycles after the abort, no stale answer reaches the new program,
    scale and zero point back to 1 and 0."""
    cfg = DEFAULT
    for seed in (13, 14, 15):
        print(f"seed={seed}")
        rnd = random.Random(seed)
        space = 400
        prog = [{"op": "cfg", "scale": 99, "zero_point": 9}]
        prog += random_simd_program(rnd, cfg, 5, space)
        prog2 = random_simd_program(rnd, cfg, 6, space)
        mem = random_image(rnd, cfg, space)
        abort_at = rnd.randint(10, 40)
        res = run_simd(cfg, prog, mem, seed=seed, latency=(2, 6), abort_at=abort_at,
                       then=prog2)
        assert res["accepted"][1] < abort_at, "the abort should hit a busy engine"
        assert res["idle_at"] - abort_at <= 12
        want = res["snapshot"]
        reference_run(cfg, want, prog2)
        assert mem == want


@pytest.mark.parametrize("ymode", ["none", "repeat", "vector"])
def test_one_vector_per_cycle(ymode):
    """One-word vectors (data in, data out on the default tile), x and y on separate clients of
    an SRAM answering every read after 2 cycles: ``count`` vectors take ``count`` cycles plus
    the pipeline latency."""
    cfg = DEFAULT
    count = 48
    assert words(cfg, "data") == 1
    ins = {"op": "simd", "func": SimdOp.ADD, "x": 0, "y": 100, "d": 200, "count": count,
           "ymode": ymode, "xfmt": "data", "yfmt": "data", "dfmt": "data", "shift": 0}
    rnd = random.Random(16)
    mem = random_image(rnd, cfg, 300)
    want = list(mem)
    reference_run(cfg, want, [ins])
    res = run_simd(cfg, [ins], mem, seed=16, ready=1.0, latency=(2, 2))
    assert mem == want
    print(f"{count} vectors (ymode {ymode}) in {res['busy']} busy cycles")
    # request queue 1 + read 2 + operand FIFO 1 + SIMD unit 5 + result FIFO 1 + write 1
    assert res["busy"] <= count + 11


def test_parameter_errors():
    with pytest.raises(ValueError, match=r"SIMD engine read_tags must be an integer in "
                                         r"2\.\.64, not 1"):
        SimdEngine(DEFAULT, read_tags=1)
