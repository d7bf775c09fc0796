"""The tiling GEMM compiler (tilemesh.compiler.gemm) run on the Python mesh model: bit-exact
results against numpy and the reference for every shape class and mesh, the epilogue, the
protocol's guarantees (semaphores, no extra work, constant program size), and errors.

Everything runs through HostDriver(ModelTransport(MeshModel(cfg))), the same host code path as
the RTL back end. Seeds are fixed (SEED) and printed on failure through the test ids."""

import asyncio
import dataclasses
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tilemesh.compiler.assembler import Program
from tilemesh.compiler.gemm import (
    DONE_CODE,
    Epilogue,
    GemmError,
    Requant,
    compile_gemm,
)
from tilemesh.config import ConfigError, MeshConfig, NocConfig, TileConfig, preset
from tilemesh.host.driver import HostDriver
from tilemesh.model import reference as ref
from tilemesh.model.machine import MeshModel, ModelTransport

SEED = 20261122

FULL = Epilogue(bias=True, relu=True, requant=Requant(scale=12345, shift=20, zero_point=-7))


def mesh(rows, cols, **tile):
    return MeshConfig(rows=rows, cols=cols, tile=TileConfig(**tile))


def operands(cfg, M, K, N, seed, bias=False):
    r = np.random.default_rng([SEED, seed, M, K, N])
    half = 1 << (cfg.tile.data_bits - 1)
    A = r.integers(-half, half, (M, K))
    B = r.integers(-half, half, (K, N))
    lim = 1 << (cfg.tile.acc_bits - 4)
    b = r.integers(-lim, lim, N) if bias else None
    return A, B, b


def run_plan(plan, A, B, bias=None, drv=None):
    if drv is None:
        drv = HostDriver(plan.cfg, ModelTransport(MeshModel(plan.cfg)))
    return asyncio.run(plan.run(drv, A, B, bias))


def check(cfg, M, K, N, epilogue=None, seed=0):
    """Compile, run on the model, compare with numpy and the reference; return (plan, run)."""
    plan = compile_gemm(cfg, M, K, N, epilogue=epilogue)
    A, B, bias = operands(cfg, M, K, N, seed, bias=epilogue is not None and epilogue.bias)
    run = run_plan(plan, A, B, bias)
    expect = plan.reference(A, B, bias)
    assert run.C.shape == (M, N)
    assert (run.C == expect).all(), (cfg, M, K, N, epilogue, plan.blocking)
    if epilogue is None:
        # independent of the reference: plain numpy (int64 never overflows here)
        assert (run.C == ref.wrap(A @ B, cfg.tile.acc_bits)).all()
    return plan, run


# -- shapes on the meshes the issue names --------------------------------------------------------

MESHES = {
    "1x1": mesh(1, 1),
    "1x3": mesh(1, 3),
    "2x2": mesh(2, 2),
    "3x2": mesh(3, 2),
    "tiny": preset("tiny"),
    "default": preset("default"),
    "large": preset("large"),
}

SHAPES = [
    (1, 1, 1),
    (7, 13, 5),      # primes, smaller than one fold in places
    (17, 3, 23),     # ragged on every mesh
    (33, 64, 20),
]


@pytest.mark.parametrize("name", list(MESHES))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_shapes_on_meshes(name, shape):
    check(MESHES[name], *shape, seed=hash(name) & 0xFFFF)


@pytest.mark.parametrize("name", ["1x1", "2x2", "3x2", "tiny", "default", "large"])
def test_full_epilogue(name):
    cfg = MESHES[name]
    check(cfg, 11, 29, 13, FULL, seed=3)


@pytest.mark.parametrize("epilogue", [
    Epilogue(bias=True),
    Epilogue(relu=True),
    Epilogue(requant=Requant(scale=-20000, shift=13, zero_point=100)),
    Epilogue(bias=True, requant=Requant(scale=1, shift=0)),        # saturation only
    Epilogue(relu=True, requant=Requant(scale=32767, shift=127)),   # a shift past everything
], ids=["bias", "relu", "requant", "bias-sat", "relu-shift127"])
def test_epilogue_parts(epilogue):
    plan, run = check(mesh(2, 2), 9, 31, 10, epilogue, seed=5)
    if epilogue.requant is not None:
        t = plan.cfg.tile
        assert run.C.min() >= -(1 << (t.data_bits - 1)) and run.C.max() < 1 << (t.data_bits - 1)
    if epilogue.relu and epilogue.requant is None:
        assert run.C.min() >= 0


def test_larger_than_sram_k_chunks():
    """K that cannot sit in one piece: the K-chunk scheme accumulates C over the chunks."""
    cfg = preset("tiny")
    plan, run = check(cfg, 5, 700, 7, seed=7)
    assert plan.scheme == "kchunk" and plan.blocking.nk >= 2
    A_words = 5 * 700 // 4
    assert A_words > cfg.tile.sram_words // 2 or plan.blocking.nk > 2
    plan, run = check(cfg, 6, 500, 5, FULL, seed=8)
    assert plan.scheme == "kchunk"


def test_larger_than_sram_m_and_n_blocks():
    """M and N whose output does not fit one tile's SRAM: sub-blocks streamed in turn."""
    cfg = preset("tiny")
    M, K, N = 40, 12, 46
    plan, run = check(cfg, M, K, N, seed=9)
    assert M * N * 4 // cfg.tiles > cfg.tile.sram_words   # C alone would not fit
    assert plan.blocking.blocks > 1


def test_odd_tile_configs():
    """Non-square PE arrays, 28-bit flits (accumulators straddle words), odd element widths,
    one SRAM bank, SIMD lanes != pe_cols (no epilogue then)."""
    cfg = MeshConfig(rows=2, cols=3,
                     tile=TileConfig(pe_rows=3, pe_cols=2, data_bits=6, acc_bits=20,
                                     simd_lanes=2, sram_banks=1, sram_depth=1024,
                                     imem_depth=64),
                     noc=NocConfig(flit_bits=28, max_packet_flits=5))
    check(cfg, 10, 19, 9, seed=11)
    check(cfg, 7, 23, 5, Epilogue(bias=True, relu=True, requant=Requant(77, 5, -3)), seed=12)
    cfg2 = dataclasses.replace(cfg, tile=dataclasses.replace(cfg.tile, simd_lanes=3))
    check(cfg2, 8, 8, 8, seed=13)


def test_host_not_at_origin():
    cfg = MeshConfig(rows=2, cols=3, host_x=2, host_y=1, host_side="east")
    check(cfg, 21, 15, 26, Epilogue(relu=True), seed=14)


@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.integers(1, 3), cols=st.integers(1, 3), M=st.integers(1, 24),
       K=st.integers(1, 40), N=st.integers(1, 24), kind=st.sampled_from(["none", "full",
                                                                         "relu"]),
       small=st.booleans())
def test_property_many_small_gemms(rows, cols, M, K, N, kind, small):
    tile = (dict(pe_rows=2, pe_cols=2, simd_lanes=2, acc_bits=24, sram_banks=2,
                 sram_depth=64, imem_depth=64) if small else {})
    cfg = mesh(rows, cols, **tile)
    epi = {"none": None, "full": FULL, "relu": Epilogue(relu=True)}[kind]
    check(cfg, M, K, N, epi, seed=M * 1000 + K)


@st.composite
def tile_configs(draw):
    """Tile and NoC configurations a GEMM must compile for (or be refused with ConfigError)."""
    data_bits = draw(st.sampled_from([4, 6, 8, 12, 16]))
    pe_cols = draw(st.integers(1, 5))
    tile = TileConfig(pe_rows=draw(st.integers(1, 5)), pe_cols=pe_cols, data_bits=data_bits,
                      acc_bits=draw(st.integers(2 * data_bits, 64)), simd_lanes=pe_cols,
                      sram_banks=draw(st.integers(1, 4)),
                      sram_depth=draw(st.sampled_from([64, 128, 512])), imem_depth=64)
    flit_bits = draw(st.sampled_from([24, 32, 40, 64]))
    # At least a NOTIFY packet's payload (MeshConfig.check_tiles: tiles need it).
    noc = NocConfig(flit_bits=flit_bits,
                    max_packet_flits=draw(st.integers(-(-64 // flit_bits), 9)))
    try:
        return MeshConfig(rows=draw(st.integers(1, 2)), cols=draw(st.integers(1, 3)),
                          tile=tile, noc=noc)
    except ConfigError:      # a header that does not fit the flit: not a GEMM question
        return MeshConfig(rows=1, cols=2, tile=tile, noc=dataclasses.replace(noc,
                                                                            flit_bits=64))


@settings(max_examples=20, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(cfg=tile_configs(), M=st.integers(1, 14), K=st.integers(1, 30), N=st.integers(1, 14),
       epi=st.booleans())
def test_property_any_tile_config(cfg, M, K, N, epi):
    """Any PE shape, element and accumulator width, word width (elements straddling words),
    bank count and packet size: the result is exact, or the compiler refuses with ConfigError
    naming the SRAM (never a wrong or hanging run)."""
    epilogue = Epilogue(bias=True, relu=True, requant=Requant(-77, 3, 2)) if epi else None
    try:
        compile_gemm(cfg, M, K, N, epilogue=epilogue)
    except ConfigError as e:
        assert "do not fit the SRAM" in str(e) or "imem_depth" in str(e), e
        return
    check(cfg, M, K, N, epilogue, seed=N)


# -- the protocol's properties ------------------------------------------------------------------

def _expected_steps(plan):
    """Matrix-unit steps of a plan: the padded MACs, plus one k=1 MATMUL of zeros per C
    sub-block in the K-chunk scheme."""
    b, cfg = plan.blocking, plan.cfg
    steps = plan.stats["padded_macs"] // cfg.tile.pes
    if plan.scheme == "kchunk":
        steps += cfg.tiles * b.blocks * b.bm * b.bn
    return steps


@pytest.mark.parametrize("cfg,shape", [(mesh(2, 3), (19, 24, 30)), (mesh(2, 2), (40, 9, 24)),
                                       (preset("tiny"), (4, 300, 4))],
                         ids=["2x3", "2x2-stream", "tiny-kchunk"])
def test_no_extra_matrix_work_and_counters(cfg, shape):
    """The matrix units do exactly the planned steps (no lost or repeated step), every tile
    reports its counters, and the words the tiles received match the plan's statistics."""
    plan, run = check(cfg, *shape, seed=15)
    steps = sum(c["matmul_steps"] for c in run.tiles.values())
    assert steps == _expected_steps(plan)
    assert plan.stats["useful_macs"] == math.prod(shape) <= plan.stats["padded_macs"]
    assert set(run.tiles) == {(x, y) for x in range(cfg.cols) for y in range(cfg.rows)}
    for c in run.tiles.values():
        assert c["cycles"] > 0 and c["matmul_busy"] > 0
    rx = sum(c["rx_words"] for c in run.tiles.values())
    # every word a tile received came from the host (operands, programs, setup) or a neighbour
    assert rx == (plan.stats["host_words_in"] + plan.stats["host_program_words"]
                  + plan.stats["network_words"])
    assert run.t_begin <= run.t_start < run.t_done <= run.t_end
    assert 0 < run.end_to_end_utilisation < run.on_mesh_utilisation <= 1


def test_program_size_does_not_grow_with_the_problem():
    cfg = preset("default")
    small = compile_gemm(cfg, 64, 64, 64)
    big = compile_gemm(cfg, 512, 512, 512)
    assert small.stats["instructions"] == big.stats["instructions"]
    assert big.steps > 8 * small.steps
    tiny = preset("tiny")
    for M, K, N in ((300, 9, 300), (8, 5000, 8), (200, 300, 100)):
        plan = compile_gemm(tiny, M, K, N, epilogue=FULL)
        assert max(plan.stats["instructions"].values()) <= tiny.tile.imem_depth


def test_programs_synchronise_only_with_semaphores():
    """Every tile program is loops, waits, signals, DMA, MATMUL, SIMD: no nop padding or timing
    loops, and every MATMUL is preceded by waits for its operands."""
    plan = compile_gemm(mesh(2, 2), 40, 40, 40, epilogue=FULL)
    for prog in plan.programs.values():
        names = [i.mnemonic for i in prog.instructions]
        assert "nop" not in names
        first_mm = names.index("matmul")
        assert names[:first_mm].count("wait") >= 2
        assert names[-2:] == ["notify", "halt"]
        assert prog.instructions[-2]["code"] == DONE_CODE


def test_driver_reused_for_two_runs():
    cfg = mesh(2, 2)
    drv = HostDriver(cfg, ModelTransport(MeshModel(cfg)))
    p1 = compile_gemm(cfg, 20, 30, 18)
    p2 = compile_gemm(cfg, 9, 700, 7, epilogue=Epilogue(bias=True))
    A, B, _ = operands(cfg, 20, 30, 18, 1)
    r1 = run_plan(p1, A, B, drv=drv)
    assert (r1.C == p1.reference(A, B)).all()
    A, B, bias = operands(cfg, 9, 700, 7, 2, bias=True)
    r2 = run_plan(p2, A, B, bias, drv=drv)
    assert (r2.C == p2.reference(A, B, bias)).all()
    assert r2.t_begin >= r1.t_end


def test_default_256_cube_plan():
    """The benchmark shape compiles to the streaming scheme with K in one piece (the measured
    utilisation is in docs/gemm.md; running it takes ~25 s, so it is not run here)."""
    plan = compile_gemm(preset("default"), 256, 256, 256)
    assert plan.scheme == "stream" and plan.blocking.nk == 1
    assert plan.stats["padded_macs"] == plan.stats["useful_macs"]
    assert plan.estimated_cycles < 256 ** 3 / plan.cfg.pes / 0.85


def test_utilisation_of_a_mid_size_gemm():
    """Deterministic modelled cycles (not wall time): 128 x 64 x 128 on default keeps the
    matrix units busy more than half the time (0.67 on the model of 2026-11-22), and every
    tile's matrix unit is busy for at least its own steps."""
    plan, run = check(preset("default"), 128, 64, 128, seed=17)
    assert run.on_mesh_utilisation > 0.5, run.on_mesh_utilisation
    for c in run.tiles.values():
        assert c["matmul_busy"] >= c["matmul_steps"]


# -- errors ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("M,K,N,match", [
    (0, 1, 1, "GEMM size M must be an integer >= 1, not 0"),
    (1, -3, 1, "GEMM size K must be an integer >= 1, not -3"),
    (1, 1, 2.5, "GEMM size N must be an integer >= 1, not 2.5"),
    (True, 1, 1, "GEMM size M must be an integer >= 1, not True"),
])
def test_bad_sizes(M, K, N, match):
    with pytest.raises(ConfigError, match=match):
        compile_gemm(mesh(1, 1), M, K, N)


def test_bad_epilogues():
    cfg = mesh(1, 2, simd_lanes=2)
    with pytest.raises(ConfigError, match=r"TileConfig.simd_lanes must equal pe_cols \(4\)"):
        compile_gemm(cfg, 4, 4, 4, epilogue=Epilogue(relu=True))
    compile_gemm(cfg, 4, 4, 4)      # fine without an epilogue
    with pytest.raises(ConfigError, match=r"Requant.scale must be an integer in "
                                          r"-32768..32767, not 40000"):
        Requant(scale=40000, shift=1)
    with pytest.raises(ConfigError, match=r"Requant.shift must be an integer in 0..127"):
        Requant(scale=1, shift=-1)
    tiny = preset("tiny")      # acc_bits = 24
    with pytest.raises(ConfigError, match=r"Requant.zero_point must be a signed "
                                          r"acc_bits=24 value \(-8388608..8388607\), not "
                                          r"8388608"):
        compile_gemm(tiny, 4, 4, 4, epilogue=Epilogue(requant=Requant(1, 0, 1 << 23)))
    with pytest.raises(ConfigError, match="epilogue must be an Epilogue"):
        compile_gemm(tiny, 4, 4, 4, epilogue="relu")


def test_config_too_small():
    big_pe = MeshConfig(rows=1, cols=1,
                        tile=TileConfig(pe_rows=32, pe_cols=32, data_bits=16, acc_bits=64,
                                        simd_lanes=32, sram_banks=1, sram_depth=1024),
                        noc=NocConfig(flit_bits=32))
    with pytest.raises(ConfigError, match=r"cannot compile a 4x4x4 GEMM for this mesh: .*"
                                          r"do not fit the SRAM .*sram_banks x sram_depth = "
                                          r"1024 words"):
        compile_gemm(big_pe, 4, 4, 4)
    small_imem = mesh(3, 3, imem_depth=16)
    with pytest.raises(ConfigError, match=r"TileConfig.imem_depth=16 is too small for the GEMM "
                                          r"program of tile \(\d,\d\): it needs \d+ "
                                          r"instructions"):
        compile_gemm(small_imem, 8, 8, 8, epilogue=FULL)


def test_bad_operands():
    cfg = mesh(1, 1)
    plan = compile_gemm(cfg, 4, 5, 6)
    A, B, _ = operands(cfg, 4, 5, 6, 0)
    with pytest.raises(ValueError, match=r"the plan is for A 4x5 and B 5x6, not A \(5, 4\)"):
        plan.reference(A.T, B)
    with pytest.raises(ValueError, match=r"A elements must be signed 8-bit \(-128..127\)"):
        plan.reference(A + 200, B)
    with pytest.raises(ValueError, match="bias given but the plan's epilogue has no bias"):
        plan.reference(A, B, np.zeros(6, dtype=int))
    pb = compile_gemm(cfg, 4, 5, 6, epilogue=Epilogue(bias=True))
    with pytest.raises(ValueError, match=r"the plan's epilogue adds a bias: give bias \(N,\)"):
        pb.reference(A, B)
    with pytest.raises(ValueError, match="bias must be 6 integers"):
        pb.reference(A, B, np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="B must hold integers"):
        plan.reference(A, B.astype(float))


def _sabotaged(plan, tile, build):
    prog = Program(plan.cfg, check=False)
    build(prog)
    plan.programs[tile] = prog
    return plan


def test_run_reports_a_hung_tile():
    """A tile that never finishes (here: waits on a semaphore nobody signals) ends the run with
    GemmError naming each tile's state instead of hanging."""
    cfg = mesh(2, 2)
    plan = compile_gemm(cfg, 8, 8, 8)

    def hang(p):
        p.wait(sem=9)
        p.halt()

    _sabotaged(plan, (1, 1), hang)
    A, B, _ = operands(cfg, 8, 8, 8, 0)
    with pytest.raises(GemmError, match=r"(?s)no NOTIFY within \d+ cycles.*tile \(1,1\): "
                                        r"WAITING pc=0 error=NONE@0 wait sem9>=1"):
        run_plan(plan, A, B)


def test_run_reports_an_error_notify():
    cfg = mesh(1, 2)
    plan = compile_gemm(cfg, 8, 8, 8)

    def bad(p):
        p.matmul(a=0, b=0, c=0x100, c_stride=4, k=0)    # BAD_OPERAND at issue
        p.halt()

    _sabotaged(plan, (1, 0), bad)
    A, B, _ = operands(cfg, 8, 8, 8, 0)
    with pytest.raises(GemmError, match=r"(?s)tile \(1, 0\) stopped with BAD_OPERAND at pc 0"
                                        r".*tile \(1,0\): ERROR pc=0 error=BAD_OPERAND@0"):
        run_plan(plan, A, B)


def test_host_transaction_list():
    """run() executes exactly host_transactions(): resets and programs first, piece 0 into
    every tile, then only the west column (A) and north row (B), each write followed by its
    SIGNAL, a credit wait before every refill, START before any credit wait."""
    cfg = mesh(2, 3)
    plan = compile_gemm(cfg, 30, 20, 40)
    ops = list(plan.host_transactions())
    kinds = [op.kind for op in ops]
    assert kinds[:cfg.tiles] == ["reset"] * cfg.tiles and kinds[-1] == "done"
    first_start = kinds.index("start")
    assert "credit" not in kinds[:first_start]
    assert kinds[first_start:first_start + cfg.tiles] == ["start"] * cfg.tiles
    writes = [op for op in ops if op.kind == "write"]
    assert {op.tile for op in writes if op.step == 0} == set(plan.programs)
    later = [op for op in writes if op.step]
    assert {op.tile for op in later if op.what == "A"} == {(0, y) for y in range(2)}
    assert {op.tile for op in later if op.what == "B"} == {(x, 0) for x in range(3)}
    for i, op in enumerate(ops):
        if op.kind == "write" and op.what in "AB":
            assert ops[i + 1].kind == "signal" and ops[i + 1].tile == op.tile
    credits = sum(op.kind == "credit" for op in ops)
    assert credits == (cfg.rows + cfg.cols) * (plan.steps - 1)     # steps 2 .. steps (marker)
    A, B, _ = operands(cfg, 30, 20, 40, 0)
    run = run_plan(plan, A, B)
    assert (run.C == plan.reference(A, B)).all()
