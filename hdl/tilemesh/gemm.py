"""Run one GEMM ``C = A @ B`` on a mesh - on the Python model or on the generated RTL - and check
it bit-exactly against numpy (``tilemesh gemm``, and ``make sim``'s demo).

::

    report = run_gemm(preset("default"), A, B, backend="rtl", simulator="verilator")
    print(report.table())           # cycles, utilisation, traffic, per-tile busy time
    assert report.ok                 # C equals the plan's reference and numpy, bit for bit

Both back ends run the same :class:`~tilemesh.compiler.gemm.GemmPlan` through a
:class:`~tilemesh.host.driver.HostDriver`: ``model`` over
:class:`~tilemesh.model.machine.ModelTransport`, ``rtl`` in a cocotb simulation of the mesh's
Verilog (``sim/gemm_bench.py``, :class:`~tilemesh.host.rtl.CocotbTransport` with random idle
cycles into the host port and random backpressure out of it). Cycles are the host clock of the
driver's transport on both, in mesh clock cycles, so the two are directly comparable.
"""

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import pickle
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from .config import ConfigError, MeshConfig

__all__ = ["BACKENDS", "GemmReport", "OperandError", "run_gemm", "run_gemms", "plan_gemm",
           "numpy_gemm", "check_operands", "random_operands", "random_bias", "mesh_verilog",
           "host_port_bound", "epilogue_to_dict", "epilogue_from_dict", "add_arguments", "run",
           "run_demo", "DEMO_SHAPES"]

BACKENDS = ("model", "rtl", "uart")
#: Top-level Verilog name of the mesh in every RTL run (builds are shared by Verilog hash).
DESIGN_NAME = "tilemesh_mesh"
BENCH_MODULE = "tilemesh_sim.gemm_bench"


class OperandError(ValueError):
    """A user-given operand (or bias) has the wrong dtype, shape or value range."""


# -- the plan: engineer C's compiler -------------------------------------------------------------

def plan_gemm(cfg, M, K, N, epilogue=None):
    """The :class:`~tilemesh.compiler.gemm.GemmPlan` of ``M`` x ``K`` x ``N`` on ``cfg``: the one
    place both back ends (and the simulator process) get their plan from.

    Raises
    ------
    ConfigError
        When the shape cannot be compiled for ``cfg`` (the message says why).
    """
    for name, v in (("M", M), ("K", K), ("N", N)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"GEMM {name} must be an integer >= 1, not {v!r}")
    from .compiler.gemm import compile_gemm

    return compile_gemm(cfg, int(M), int(K), int(N), epilogue=epilogue)


def epilogue_to_dict(epilogue):
    """JSON form of an :class:`~tilemesh.compiler.gemm.Epilogue` (None: no epilogue)."""
    if epilogue is None:
        return None
    rq = epilogue.requant
    return {"bias": bool(epilogue.bias), "relu": bool(epilogue.relu),
            "requant": None if rq is None else
            {"scale": int(rq.scale), "shift": int(rq.shift), "zero_point": int(rq.zero_point)}}


def epilogue_from_dict(d):
    """The inverse of :func:`epilogue_to_dict`."""
    if d is None:
        return None
    from .compiler.gemm import Epilogue, Requant

    rq = d.get("requant")
    return Epilogue(bias=d.get("bias", False), relu=d.get("relu", False),
                    requant=None if rq is None else Requant(**rq))


def _has_epilogue(epilogue):
    return epilogue is not None and (epilogue.bias or epilogue.relu
                                     or epilogue.requant is not None)


# -- operands and the numpy answer -----------------------------------------------------------------

def _signed_range(bits):
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def check_operands(cfg, A, B, bias=None, *, need_bias=False):
    """Validate user operands for ``cfg``; returns them as int64 arrays.

    Raises
    ------
    OperandError
        Naming the operand and what is wrong: not an integer array, not 2-D, inner dimensions
        that differ, values outside the signed ``data_bits`` range (``acc_bits`` for the bias),
        a bias that is not a vector of N elements, or a missing / unexpected bias.
    """
    t = cfg.tile
    out = []
    for name, m in (("A", A), ("B", B)):
        m = np.asarray(m)
        if m.dtype.kind not in "iu":
            raise OperandError(f"{name} must be an integer array, not dtype {m.dtype}")
        if m.ndim != 2 or 0 in m.shape:
            raise OperandError(f"{name} must be a non-empty 2-D matrix, not shape {m.shape}")
        lo, hi = _signed_range(t.data_bits)
        if m.min() < lo or m.max() > hi:
            raise OperandError(f"{name} values must lie in {lo}..{hi} (int{t.data_bits}), "
                               f"found {int(m.min())}..{int(m.max())}")
        out.append(m.astype(np.int64))
    A, B = out
    if A.shape[1] != B.shape[0]:
        raise OperandError(f"A is {A.shape[0]}x{A.shape[1]} and B is {B.shape[0]}x{B.shape[1]}: "
                           f"A's columns must equal B's rows")
    if bias is None:
        if need_bias:
            raise OperandError("the epilogue adds a bias, but no bias was given")
        return A, B, None
    if not need_bias:
        raise OperandError("a bias was given but the epilogue has no bias add")
    bias = np.asarray(bias)
    if bias.dtype.kind not in "iu":
        raise OperandError(f"bias must be an integer array, not dtype {bias.dtype}")
    if bias.shape != (B.shape[1],):
        raise OperandError(f"bias must be a vector of N={B.shape[1]} elements, not shape "
                           f"{bias.shape}")
    lo, hi = _signed_range(t.acc_bits)
    if bias.min() < lo or bias.max() > hi:
        raise OperandError(f"bias values must lie in {lo}..{hi} (int{t.acc_bits}), found "
                           f"{int(bias.min())}..{int(bias.max())}")
    return A, B, bias.astype(np.int64)


def random_operands(cfg, M, K, N, seed, *, bias=False):
    """Seeded random A (M x K), B (K x N) over the whole signed ``data_bits`` range (the
    extremes included, where wrap-around and saturation happen), and a bias if asked."""
    rnd = np.random.default_rng(seed)
    lo, hi = _signed_range(cfg.tile.data_bits)
    A = rnd.integers(lo, hi + 1, (M, K), dtype=np.int64)
    B = rnd.integers(lo, hi + 1, (K, N), dtype=np.int64)
    return A, B, (random_bias(cfg, K, N, rnd) if bias else None)


def random_bias(cfg, K, N, rnd):
    """N random bias values of the size of K-term products (so the epilogue's output is not all
    saturated), within the signed ``acc_bits`` range; ``rnd`` a seed or numpy Generator."""
    rnd = np.random.default_rng(rnd)
    hi = 1 << (cfg.tile.data_bits - 1)
    span = min(1 << (cfg.tile.acc_bits - 2), K * hi * hi)
    return rnd.integers(-span, span, N, dtype=np.int64)


def _wrap(x, bits):
    x = np.asarray(x, dtype=object)
    m = 1 << bits
    return np.asarray(((x + (m >> 1)) % m) - (m >> 1), dtype=object)


def numpy_gemm(cfg, A, B, bias=None, epilogue=None):
    """C from numpy alone, written out from the documented semantics (docs/simd.md,
    :class:`~tilemesh.compiler.gemm.Epilogue`), not through the model: ``A @ B`` wrapped to
    ``acc_bits``; then the epilogue in its order - bias add (wrapping), ReLU, REQUANT
    (``sat_data_bits(round_half_away(x * scale / 2**shift) + zero_point)``)."""
    t = cfg.tile
    c = _wrap(np.asarray(A, dtype=object) @ np.asarray(B, dtype=object), t.acc_bits)
    if epilogue is not None:
        if epilogue.bias:
            c = _wrap(c + np.asarray(bias, dtype=object)[None, :], t.acc_bits)
        if epilogue.relu:
            c = np.maximum(c, 0)
        rq = epilogue.requant
        if rq is not None:
            p = c * int(rq.scale)
            if rq.shift:
                half = 1 << (rq.shift - 1)
                mag = (abs(p) + half) >> rq.shift
                p = np.where(p < 0, -mag, mag)
            lo, hi = _signed_range(t.data_bits)
            c = np.minimum(np.maximum(p + int(rq.zero_point), lo), hi)
    return np.asarray(c, dtype=object).astype(np.int64)


def host_port_bound(cfg, M, K, N, epilogue=None):
    """The end-to-end utilisation the host port allows at best: A and B (and the bias) must
    come in and C must go out through it, one word per cycle each way, packed as tightly as
    the element widths allow; ``useful_macs / (pes * max(words in, words out))``, at most 1."""
    t, w = cfg.tile, cfg.word_bits
    words_in = -(-M * K * t.data_bits // w) + -(-K * N * t.data_bits // w)
    if epilogue is not None and epilogue.bias:
        words_in += -(-N * t.acc_bits // w)
    out_bits = t.data_bits if (epilogue is not None and epilogue.requant is not None) \
        else t.acc_bits
    words_out = -(-M * N * out_bits // w)
    return min(1.0, M * K * N / (cfg.pes * max(words_in, words_out)))


# -- the report ------------------------------------------------------------------------------------

def _counters(tile_counters):
    return {str(k).upper(): int(v) for k, v in tile_counters.items()}


@dataclasses.dataclass
class GemmReport:
    """What :func:`run_gemm` returns: the run, the check, and the figures.

    Members
    -------
    cfg : MeshConfig
    M, K, N : int
    backend, simulator : str
        ``simulator`` is the RTL simulator, or the serial port of the ``uart`` back end.
    seed : int
    epilogue : Epilogue or None
    run : GemmRun
        Engineer C's run record: ``C``, host-clock times ``t_begin`` / ``t_start`` /
        ``t_done`` / ``t_end``, per-tile counters, host words, utilisations.
    expected : numpy.ndarray
        The plan's bit-exact reference (equal to :func:`numpy_gemm`, or :attr:`ok` is False).
    mismatches : int
        Elements of C that differ from the reference (plus one if the reference and numpy
        disagree, which would be a bug of the reference).
    errors : list of str
        The first few differences, described.
    stats : dict
        The plan's static figures (useful/padded MACs, host and network words, instructions).
    elapsed_s : float
        Wall time of the run, build included.
    waves : str or None
        The waveform file of an RTL run with ``waves=True``.
    """
    cfg: MeshConfig
    M: int
    K: int
    N: int
    backend: str
    simulator: str
    seed: int
    epilogue: object
    run: object
    expected: np.ndarray
    mismatches: int
    errors: list
    stats: dict
    elapsed_s: float = 0.0
    waves: str = None

    @property
    def ok(self):
        """True when C is bit-exact."""
        return self.mismatches == 0

    @property
    def useful_macs(self):
        return self.M * self.K * self.N

    @property
    def host_bound(self):
        """:func:`host_port_bound`: the end-to-end limit if every operand crossed the host
        port once."""
        return host_port_bound(self.cfg, self.M, self.K, self.N, self.epilogue)

    @property
    def traffic_bound(self):
        """The end-to-end limit of the words this run actually moved through the host port
        (programs, operands as the plan sends them - e.g. A once per column pass - and C)."""
        r = self.run
        return min(1.0, self.useful_macs / (self.cfg.pes * max(1, r.host_words_in,
                                                               r.host_words_out)))

    def _where(self):
        return {"model": "model", "rtl": f"rtl/{self.simulator}",
                "uart": f"board on {self.simulator}"}[self.backend]

    def to_json(self):
        """A JSON-serialisable dict of every figure (not the matrices)."""
        r = self.run
        tiles = {f"{x},{y}": _counters(c) for (x, y), c in sorted(r.tiles.items())}
        return {
            "M": self.M, "K": self.K, "N": self.N, "backend": self.backend,
            "simulator": self.simulator if self.backend != "model" else None, "seed": self.seed,
            "mesh": f"{self.cfg.rows}x{self.cfg.cols}",
            "pe": f"{self.cfg.tile.pe_rows}x{self.cfg.tile.pe_cols}", "pes": self.cfg.pes,
            "epilogue": epilogue_to_dict(self.epilogue), "ok": self.ok,
            "mismatches": self.mismatches, "errors": self.errors[:5],
            "t_begin": int(r.t_begin), "t_start": int(r.t_start), "t_done": int(r.t_done),
            "t_end": int(r.t_end), "mesh_cycles": int(r.t_done - r.t_start),
            "total_cycles": int(r.t_end - r.t_begin), "useful_macs": self.useful_macs,
            "on_mesh_utilisation": float(r.on_mesh_utilisation),
            "end_to_end_utilisation": float(r.end_to_end_utilisation),
            "host_port_bound": self.host_bound, "traffic_bound": self.traffic_bound,
            "host_words_in": int(r.host_words_in), "host_words_out": int(r.host_words_out),
            "word_bytes": self.cfg.word_bits / 8,
            "stats": {k: (v if isinstance(v, (int, float, str, bool)) or v is None
                          else str(v)) for k, v in self.stats.items()},
            "tiles": tiles, "elapsed_s": round(self.elapsed_s, 3), "waves": self.waves,
            "config": self.cfg.to_dict(),
        }

    def table(self):
        """The report as text: check, cycles, utilisation, traffic, per-tile busy time."""
        r, cfg = self.run, self.cfg
        wb = cfg.word_bits / 8
        mesh = r.t_done - r.t_start
        total = r.t_end - r.t_begin
        ep = epilogue_to_dict(self.epilogue)
        ep_text = "none" if not _has_epilogue(self.epilogue) else ", ".join(
            (["bias"] if ep["bias"] else []) + (["relu"] if ep["relu"] else [])
            + ([f"requant(scale={ep['requant']['scale']}, shift={ep['requant']['shift']}, "
                f"zp={ep['requant']['zero_point']})"] if ep["requant"] else []))
        verdict = "PASS: bit-exact vs numpy" if self.ok else \
            f"FAIL: {self.mismatches} elements differ from numpy"
        net = self.stats.get("network_words")
        lines = [
            f"GEMM {self.M}x{self.K}x{self.N} on a {cfg.rows}x{cfg.cols} mesh of "
            f"{cfg.tile.pe_rows}x{cfg.tile.pe_cols} PEs (int{cfg.tile.data_bits}, "
            f"acc{cfg.tile.acc_bits}), {self._where()}, seed {self.seed}, epilogue {ep_text}",
            f"  result            {verdict}",
            f"  cycles            start->done {mesh:>10,}   begin->end {total:>10,}",
            f"  MAC utilisation   on-mesh {100 * r.on_mesh_utilisation:6.1f} %   "
            f"end-to-end {100 * r.end_to_end_utilisation:6.1f} %   "
            f"(limit 100 %)",
            f"  host-port bounds  operands once {100 * self.host_bound:5.1f} %   "
            f"this plan's traffic {100 * self.traffic_bound:5.1f} %   (end-to-end at best)",
            f"  host port         in {r.host_words_in:>9,} words ({r.host_words_in * wb:,.0f} B)"
            f"   out {r.host_words_out:>9,} words ({r.host_words_out * wb:,.0f} B)",
        ]
        tx = sum(_counters(c).get("TX_WORDS", 0) for c in r.tiles.values())
        if net is not None:
            lines.append(f"  network           {int(net):>9,} words tile to tile "
                         f"({int(net) * wb:,.0f} B, planned)   all tiles' TX_WORDS {tx:,}")
        lines.append(f"  per tile (% of the {mesh:,} cycles start->done)")
        lines.append("    tile    CYCLES   DMA %  MATMUL %  SIMD %  stall %")
        for (x, y), c in sorted(r.tiles.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            c = _counters(c)

            def pct(name, c=c):
                return f"{100 * c.get(name, 0) / mesh:6.1f}" if mesh else "   n/a"
            lines.append(f"    ({x},{y}) {c.get('CYCLES', 0):>9,}  {pct('DMA_BUSY')}  "
                         f"{pct('MATMUL_BUSY'):>8}  {pct('SIMD_BUSY')}  {pct('STALL_CYCLES'):>7}")
        lines.append("    (stall: the controller waits - WAIT, FENCE or a full unit queue - while "
                     "its units may be busy)")
        for e in self.errors[:5]:
            lines.append(f"  mismatch: {e}")
        if self.backend == "uart":
            lines.append("  (board: host times are UART bit periods, so the utilisations above are "
                         "the host link's; per-tile CYCLES are mesh cycles)")
        if self.waves:
            lines.append(f"  waves             {self.waves}")
        return "\n".join(lines)


def _compare(got, expected, limit=5):
    got = np.asarray(got)
    if got.shape != expected.shape:
        return expected.size, [f"C has shape {got.shape}, expected {expected.shape}"]
    bad = np.argwhere(got != expected)
    return len(bad), [f"C[{i},{j}] = {int(got[i, j])}, expected {int(expected[i, j])}"
                      for i, j in bad[:limit]]


# -- back ends -------------------------------------------------------------------------------------

def _timeout(cfg, M, K, N):
    """Host-driver timeout (cycles) for one wait: generous - the whole GEMM many times over -
    so only a real hang trips it."""
    t = cfg.tile
    compute = -(-M // t.pe_rows) * -(-N // t.pe_cols) * (K + t.pe_rows + t.pe_cols)
    io = (M * K + K * N + M * N) * 4
    return 200_000 + 20 * (compute + io)


def _run_model(cfg, plan, A, B, bias, progress, timeline=False):
    from .host.driver import HostDriver
    from .model.machine import MeshModel, ModelTransport

    model = MeshModel(cfg)
    if timeline:
        model.timeline = []
    drv = HostDriver(cfg, ModelTransport(model), timeout=_timeout(cfg, plan.M, plan.K, plan.N))
    run = asyncio.run(plan.run(drv, A, B, bias, progress=progress))
    run.timeline = sort_timeline(model.timeline) if timeline else None
    return run


def timeline_recordable(backend, simulator):
    """A timeline (:attr:`GemmRun.timeline`) comes from the model, or from the RTL on Icarus: a
    Verilator build exposes only the mesh's ports, a board nothing."""
    return backend == "model" or (backend == "rtl" and simulator == "icarus")


def sort_timeline(events):
    """Timeline events in a canonical order: by cycle, then tile (row-major), then unit."""
    return sorted(events, key=lambda e: (e[0], e[1][1], e[1][0], e[2]))


def _run_uart(cfg, plan, A, B, bias, port, baud, progress):
    """The plan on a board behind its UART bridge (``tilemesh build``), through pyserial."""
    from .host.driver import HostDriver
    from .host.uart import SerialLink, UartTransport

    try:
        link = SerialLink(port, baud)
    except OSError as e:   # serial.SerialException is an OSError
        raise OperandError(f"cannot open the serial port {port}: {e}") from None
    try:
        drv = HostDriver(cfg, UartTransport(cfg, link), timeout=link.seconds(120))
        return asyncio.run(plan.run(drv, A, B, bias, progress=progress))
    finally:
        link.close()


#: What the mesh's Verilog is made from (software - compiler, model, host - is not).
_HDL_SOURCES = ("config.py", "layouts.py", "mesh.py", "generate.py", "tile/*.py", "noc/*.py")


def _hdl_fingerprint():
    """A hash of the hardware sources: the cached Verilog is reused only while none changed."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for p in sorted(q for pattern in _HDL_SOURCES for q in root.glob(pattern)):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


_VERILOG = {}


def mesh_verilog(cfg, *, progress=None):
    """The mesh's Verilog (top ``tilemesh_mesh``): converted once per configuration and source
    tree, cached in memory and under ``build/sim/verilog`` (conversion of a whole mesh takes a
    while).

    This is the one place that decides how the mesh becomes Verilog.
    """
    from tilemesh_sim.runner import BUILD_ROOT

    key = hashlib.sha256(f"{json.dumps(cfg.to_dict(), sort_keys=True)}|{_hdl_fingerprint()}"
                         .encode()).hexdigest()[:16]
    if key in _VERILOG:
        return _VERILOG[key]
    path = BUILD_ROOT / "sim" / "verilog" / f"{DESIGN_NAME}-{key}.v"
    if path.exists():
        text = path.read_text()
    else:
        if progress:
            progress(0, 1, f"converting the {cfg.rows}x{cfg.cols} mesh to Verilog")
        text = _convert_mesh(cfg)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
        tmp.write_text(text)
        tmp.replace(path)   # atomic: parallel workers never read a half-written file
    _VERILOG[key] = text
    return text


def _convert_mesh(cfg):
    # Engineer G's structural generator (one tile module) when it is there; otherwise the
    # flat conversion. Both give a top named tilemesh_mesh with the same ports.
    from . import generate

    if hasattr(generate, "mesh_verilog"):
        return generate.mesh_verilog(cfg, DESIGN_NAME)
    from tilemesh_sim.runner import to_verilog

    from .mesh import Mesh
    return to_verilog(Mesh(cfg), DESIGN_NAME)


def rtl_build_args(simulator, waves=False):
    """Simulator build arguments of every mesh simulation (the mesh tests use the same, so a
    build is shared)."""
    from tilemesh_sim import runner

    if simulator == "icarus":
        return list(getattr(runner, "ICARUS_VERILOG_2005", ()))
    # Only the top's ports are public (the bench touches nothing else); unoptimised C++ builds
    # fast, and the host-port driver in Python, not the C++, sets the pace.
    return [*runner.top_ports_public(DESIGN_NAME), "-CFLAGS", "-O0",
            *(["--trace-fst"] if waves else [])]


class _ProgressTail(threading.Thread):
    """Follows the progress file the simulator process appends to and calls ``progress``."""

    def __init__(self, path, progress, quiet=15.0):
        super().__init__(daemon=True)
        self.path, self.progress, self.quiet = Path(path), progress, quiet
        self.stop = threading.Event()
        self._pos = 0
        self._t0 = self._news = time.monotonic()

    def poll(self):
        try:
            with open(self.path) as f:
                f.seek(self._pos)
                chunk = f.read()
        except FileNotFoundError:
            return
        complete = chunk[:chunk.rfind("\n") + 1]
        self._pos += len(complete.encode())
        for line in complete.splitlines():
            done, total, what = line.split(" ", 2)
            self.progress(int(done), int(total), what)
            self._news = time.monotonic()

    def run(self):
        while not self.stop.wait(0.5):
            self.poll()
            now = time.monotonic()
            if now - self._news >= self.quiet:   # a cold build says nothing for minutes
                what = "simulating" if self._pos else "building or starting the simulator"
                self.progress(0, 1, f"busy: {what} ({now - self._t0:.0f} s)")
                self._news = now


def _run_rtl(cfg, jobs, *, simulator, waves, seed, host_idle, host_stall, progress,
             timeline=False):
    """Run ``jobs`` (plan, A, B, bias) one after the other in ONE simulation of the mesh;
    returns ([GemmRun], waveform path or None)."""
    from tilemesh_sim.runner import SimulationFailed, run_cocotb

    verilog = mesh_verilog(cfg, progress=progress)
    with tempfile.TemporaryDirectory(prefix="tilemesh-gemm-") as tmp:
        tmp = Path(tmp)
        entries = []
        for i, (plan, A, B, bias) in enumerate(jobs):
            np.save(tmp / f"a{i}.npy", A)
            np.save(tmp / f"b{i}.npy", B)
            if bias is not None:
                np.save(tmp / f"bias{i}.npy", bias)
            entries.append({
                "M": plan.M, "K": plan.K, "N": plan.N,
                "epilogue": epilogue_to_dict(plan.epilogue), "a": str(tmp / f"a{i}.npy"),
                "b": str(tmp / f"b{i}.npy"),
                "bias": str(tmp / f"bias{i}.npy") if bias is not None else None,
                "result": str(tmp / f"run{i}.pickle"),
                "timeout": _timeout(cfg, plan.M, plan.K, plan.N)})
        prog = tmp / "progress.txt"
        params = {"cfg": cfg.to_dict(), "jobs": entries, "idle": host_idle, "stall": host_stall,
                  "progress": str(prog) if progress else None, "timeline": timeline}
        if progress:
            progress(0, 1, f"building (cached per design) and starting {simulator}")
        tail = _ProgressTail(prog, progress) if progress else None
        if tail:
            tail.start()
        try:
            with _icarus_dump_2005(simulator == "icarus" and waves):
                test_dir = run_cocotb(verilog, name=DESIGN_NAME, module=BENCH_MODULE,
                                      simulator=simulator, seed=seed, params=params,
                                      waves=waves, build_args=rtl_build_args(simulator, waves))
        finally:
            if tail:
                tail.stop.set()
                tail.join()
                tail.poll()
        runs = []
        for e in entries:
            try:
                with open(e["result"], "rb") as f:
                    runs.append(pickle.load(f))
            except FileNotFoundError:   # the bench passed without writing it: a bench bug
                raise SimulationFailed(f"{BENCH_MODULE} wrote no result for GEMM "
                                       f"{e['M']}x{e['K']}x{e['N']}") from None
    return runs, (_wave_file(simulator, test_dir) if waves else None)


@contextlib.contextmanager
def _icarus_dump_2005(active):
    """cocotb's Icarus waveform module declares a SystemVerilog ``string``, which the -g2005 the
    mesh needs (runner.ICARUS_VERILOG_2005) rejects, and -g2005-sv brings back the time-0 X
    that hangs the mesh. While active, cocotb writes a Verilog-2005 module instead (same
    module name, same FST path)."""
    if not active:
        yield
        return
    from cocotb_tools import runner as cocotb_runner

    icarus = cocotb_runner.Icarus
    original = icarus._create_iverilog_dump_file

    def create(self):
        with open(self.iverilog_dump_file, "w") as f:
            f.write("module cocotb_iverilog_dump();\ninitial begin\n"
                    f'    $dumpfile("{self.build_dir / self.hdl_toplevel}.fst");\n'
                    f"    $dumpvars(0, {self.hdl_toplevel});\nend\nendmodule\n")

    icarus._create_iverilog_dump_file = create
    try:
        yield
    finally:
        icarus._create_iverilog_dump_file = original


def _wave_file(simulator, test_dir):
    test_dir = Path(test_dir)
    if simulator == "verilator":
        for name in ("dump.fst", "dump.vcd"):
            if (test_dir / name).exists():
                return str(test_dir / name)
        return None
    # cocotb's Icarus dump module writes the FST into the (shared) build directory: keep this
    # run's copy beside its log.
    src = test_dir.parents[1] / f"{DESIGN_NAME}.fst"
    if not src.exists():
        return None
    dst = test_dir / src.name
    src.replace(dst)
    return str(dst)


def _report(cfg, plan, A, B, bias, gemm_run, *, backend, simulator, seed, elapsed, waves):
    expected = np.asarray(plan.reference(A, B, bias), dtype=np.int64)
    mismatches, errors = _compare(gemm_run.C, expected)
    npy = numpy_gemm(cfg, A, B, bias, plan.epilogue)
    if not np.array_equal(expected, npy):
        bad = int((expected != npy).sum())
        mismatches += 1
        errors.insert(0, f"the plan's reference differs from numpy in {bad} elements")
    return GemmReport(cfg=cfg, M=plan.M, K=plan.K, N=plan.N, backend=backend,
                      simulator=simulator, seed=seed, epilogue=plan.epilogue, run=gemm_run,
                      expected=expected, mismatches=mismatches, errors=errors,
                      stats=dict(plan.stats), elapsed_s=elapsed, waves=waves)


def _prepare(cfg, A, B, bias, epilogue):
    A, B, bias = check_operands(cfg, A, B, bias,
                                need_bias=epilogue is not None and epilogue.bias)
    return plan_gemm(cfg, A.shape[0], A.shape[1], B.shape[1], epilogue), A, B, bias


def run_gemm(cfg, A, B, *, bias=None, epilogue=None, backend="model", simulator="verilator",
             waves=False, seed=0, host_idle=0.0, host_stall=0.0, progress=None, baud=115200,
             timeline=False):
    """Compile ``C = A @ B`` (plus the ``epilogue``) for ``cfg``, run it on ``backend`` and
    check C against the plan's reference and :func:`numpy_gemm`.

    Parameters
    ----------
    cfg : MeshConfig
    A, B : array of int
        M x K and K x N, signed ``cfg.tile.data_bits`` values.
    bias : array of int, optional
        N values (signed ``acc_bits``), when the epilogue adds a bias.
    epilogue : Epilogue, optional
    backend : {"model", "rtl", "uart"}
    simulator : str
        The RTL simulator (``backend="rtl"``: "verilator" or "icarus"), or the serial port of
        the board (``backend="uart"``, e.g. "/dev/ttyUSB1"; ``baud`` must match its bitstream).
    waves : bool
        Record a waveform (RTL): FST, path in :attr:`GemmReport.waves`.
    seed : int
        Seeds the host port's random idle cycles and backpressure (RTL).
    host_idle, host_stall : float
        Probability of an idle cycle before each flit into the host port / of ``ready`` low on
        the way out (RTL).
    progress : callable(done, total, what), optional
        Called now and then (never per cycle).
    timeline : bool
        Record when each unit of each tile takes a command (``run.timeline``, see
        :class:`~tilemesh.compiler.gemm.GemmRun`): the model, or the RTL on Icarus (whose
        simulation exposes the tiles' internal signals; a Verilator build only its ports).

    Returns
    -------
    GemmReport

    Raises
    ------
    OperandError
        On bad operands (see :func:`check_operands`).
    ConfigError
        When the shape cannot be compiled for ``cfg``.
    tilemesh_sim.runner.SimulationFailed
        When the RTL simulation fails (a hang, an error NOTIFY): the message points at the log.
    """
    return run_gemms(cfg, [dict(A=A, B=B, bias=bias, epilogue=epilogue)], backend=backend,
                     simulator=simulator, waves=waves, seed=seed, host_idle=host_idle,
                     host_stall=host_stall, progress=progress, baud=baud,
                     timeline=timeline)[0]


def run_gemms(cfg, cases, *, backend="model", simulator="verilator", waves=False, seed=0,
              host_idle=0.0, host_stall=0.0, progress=None, baud=115200, timeline=False):
    """:func:`run_gemm` for several GEMMs on one mesh; on the RTL they run one after the other
    in ONE simulation (one simulator start, one waveform). ``cases`` are dicts with keys
    ``A``, ``B`` and optionally ``bias``, ``epilogue``. Returns a list of :class:`GemmReport`."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if timeline and not timeline_recordable(backend, simulator):
        raise ValueError("a timeline needs the model or the RTL on Icarus (a Verilator build "
                         "exposes only the mesh's ports, a board nothing)")
    t0 = time.perf_counter()
    if progress:
        progress(0, 1, "compiling")
    jobs = [_prepare(cfg, c["A"], c["B"], c.get("bias"), c.get("epilogue")) for c in cases]
    if backend == "model":
        runs, wave_file = [_run_model(cfg, plan, A, B, bias, progress, timeline)
                           for plan, A, B, bias in jobs], None
    elif backend == "uart":
        runs, wave_file = [_run_uart(cfg, plan, A, B, bias, simulator, baud, progress)
                           for plan, A, B, bias in jobs], None
    else:
        runs, wave_file = _run_rtl(cfg, jobs, simulator=simulator, waves=waves, seed=seed,
                                   host_idle=host_idle, host_stall=host_stall,
                                   progress=progress, timeline=timeline)
    elapsed = (time.perf_counter() - t0) / max(1, len(jobs))
    return [_report(cfg, plan, A, B, bias, r, backend=backend, simulator=simulator, seed=seed,
                    elapsed=elapsed, waves=wave_file)
            for (plan, A, B, bias), r in zip(jobs, runs, strict=True)]


# -- tilemesh gemm ---------------------------------------------------------------------------------

class _Progress:
    """Progress lines on stderr for runs that take a while: none in the first ``quiet``
    seconds, then at most one every ``every`` seconds (and one per new phase)."""

    def __init__(self, every=2.0, quiet=1.0, stream=None):
        self.every, self.quiet, self.stream = every, quiet, stream or sys.stderr
        self.t0 = time.perf_counter()
        self._last, self._what = 0.0, None

    def __call__(self, done, total, what):
        now = time.perf_counter()
        phase = what.split(":")[0]
        if now - self.t0 < self.quiet or (phase == self._what and now - self._last < self.every):
            return
        self._last, self._what = now, phase
        frac = f" {100 * done / total:5.1f} %" if total > 1 else ""
        print(f"  [{now - self.t0:7.1f} s]{frac} {what}", file=self.stream, flush=True)


def _requant_arg(text):
    try:
        scale, shift, zp = (int(v, 0) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--requant must be SCALE,SHIFT,ZERO_POINT (three integers), "
                         f"not {text!r}") from None
    return scale, shift, zp


def add_arguments(parser):
    parser.add_argument("-M", type=int, help="rows of A and C")
    parser.add_argument("-K", type=int, help="columns of A, rows of B")
    parser.add_argument("-N", type=int, help="columns of B and C")
    parser.add_argument("--backend", default="model", choices=BACKENDS,
                        help="the Python model (fast), the RTL in simulation, or a board over "
                             "its UART (--port) (default: %(default)s)")
    parser.add_argument("--port", help="uart: the board's serial port, e.g. /dev/ttyUSB1")
    parser.add_argument("--baud", type=int, default=115200,
                        help="uart: baud rate of the bitstream (default: %(default)s)")
    parser.add_argument("--sim", default="verilator", choices=["verilator", "icarus"],
                        help="RTL simulator (default: %(default)s)")
    parser.add_argument("--waves", action="store_true",
                        help="record a waveform (RTL; FST for GTKWave/Surfer) and print its path")
    parser.add_argument("--seed", type=int, default=1,
                        help="seed of the random operands and host-port noise "
                             "(default: %(default)s)")
    parser.add_argument("--a", metavar="A.npy", help="A from a .npy file (M x K integers)")
    parser.add_argument("--b", metavar="B.npy", help="B from a .npy file (K x N integers)")
    parser.add_argument("--bias", nargs="?", const="random", metavar="BIAS.npy",
                        help="epilogue: add a bias per column (random, or from a .npy file)")
    parser.add_argument("--requant", metavar="SCALE,SHIFT,ZP",
                        help="epilogue: requantize to int8 (x * SCALE >> SHIFT, + ZP, saturate)")
    parser.add_argument("--relu", action="store_true", help="epilogue: ReLU")
    parser.add_argument("--host-idle", type=float, default=0.0,
                        help="RTL: probability of an idle cycle before each flit into the host "
                             "port (default: %(default)s)")
    parser.add_argument("--host-stall", type=float, default=0.0,
                        help="RTL: probability of backpressure on the host port's output "
                             "(default: %(default)s)")
    parser.add_argument("--json", metavar="OUT", help="write the report as JSON")
    parser.add_argument("--timeline", metavar="OUT.csv",
                        help="write when each tile's DMA / matrix / SIMD unit took each command "
                             "(model, or RTL with --sim icarus): cycle,x,y,unit")


def _load_npy(path, what):
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise OperandError(f"cannot read {what} from {path}: {e}") from None


def _epilogue_from_args(args):
    if not (args.bias or args.requant or args.relu):
        return None
    rq = _requant_arg(args.requant) if args.requant else None
    from .compiler.gemm import Epilogue, Requant

    rq = None if rq is None else Requant(*rq)
    return Epilogue(bias=bool(args.bias), requant=rq, relu=bool(args.relu))


def _operands_from_args(args, cfg, epilogue):
    if (args.a is None) != (args.b is None):
        raise OperandError("give both --a and --b, or neither (random operands)")
    if args.a is not None:
        A, B = _load_npy(args.a, "A"), _load_npy(args.b, "B")
        for flag, v, shape in (("-M", args.M, A.shape[:1]), ("-K", args.K, A.shape[1:2]),
                               ("-N", args.N, B.shape[1:2])):
            if v is not None and tuple(shape) != (v,):
                raise OperandError(f"{flag} {v} does not match the .npy operands "
                                   f"(A {A.shape}, B {B.shape})")
        bias = None
        if args.bias == "random" and A.ndim == B.ndim == 2:
            bias = random_bias(cfg, B.shape[0], B.shape[1], args.seed)
        elif args.bias is not None:
            bias = _load_npy(args.bias, "the bias")
        return A, B, bias
    missing = [f for f, v in (("-M", args.M), ("-K", args.K), ("-N", args.N)) if v is None]
    if missing:
        raise OperandError(f"give {', '.join(missing)} (or --a and --b)")
    for flag, v in (("-M", args.M), ("-K", args.K), ("-N", args.N)):
        if v < 1:
            raise OperandError(f"{flag} must be at least 1, not {v}")
    A, B, bias = random_operands(cfg, args.M, args.K, args.N, args.seed,
                                 bias=epilogue is not None and epilogue.bias)
    if args.bias not in (None, "random"):
        bias = _load_npy(args.bias, "the bias")
    return A, B, bias


def _fail(msg):
    print(f"tilemesh gemm: error: {msg}", file=sys.stderr)
    return 2


def run(args):
    """``tilemesh gemm``: exit 0 only when C is bit-exact, 1 on a mismatch or a failed
    simulation, 2 on bad arguments, operands or an uncompilable shape."""
    from tilemesh.cli import config_from_args

    cfg = config_from_args(args)
    try:
        epilogue = _epilogue_from_args(args)
        A, B, bias = _operands_from_args(args, cfg, epilogue)
    except (OperandError, ValueError) as e:
        return _fail(e)
    if args.backend != "rtl" and (args.waves or args.host_idle or args.host_stall):
        return _fail("--waves, --host-idle and --host-stall need --backend rtl")
    if (args.backend == "uart") != (args.port is not None):
        return _fail("--backend uart needs --port (and --port needs --backend uart)")
    for name, v in (("--host-idle", args.host_idle), ("--host-stall", args.host_stall)):
        if not 0.0 <= v < 1.0:
            return _fail(f"{name} must be in [0, 1), not {v}")
    if args.timeline and not timeline_recordable(args.backend, args.sim):
        return _fail("--timeline needs --backend model, or --backend rtl with --sim icarus")
    where = args.port if args.backend == "uart" else args.sim
    return _run_and_print(cfg, A, B, bias, epilogue, args.backend, where, args.waves,
                          args.seed, args.host_idle, args.host_stall, args.json, baud=args.baud,
                          timeline_out=args.timeline)


def write_timeline(path, timeline):
    """``timeline`` (:attr:`GemmRun.timeline`) as CSV: ``cycle,x,y,unit``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["cycle,x,y,unit"] + [f"{c},{x},{y},{u}" for c, (x, y), u in timeline]
    path.write_text("\n".join(lines) + "\n")


def _run_and_print(cfg, A, B, bias, epilogue, backend, simulator, waves, seed, idle, stall,
                   json_out, *, baud=115200, timeline_out=None):
    from tilemesh_sim.runner import SimulationFailed

    from .compiler.gemm import GemmError
    from .host.driver import HostError, HostTimeout

    try:
        report = run_gemm(cfg, A, B, bias=bias, epilogue=epilogue, backend=backend,
                          simulator=simulator, waves=waves, seed=seed, host_idle=idle,
                          host_stall=stall, progress=_Progress(), baud=baud,
                          timeline=timeline_out is not None)
    except (OperandError, ConfigError) as e:
        return _fail(e)
    except (SimulationFailed, GemmError, HostError, HostTimeout) as e:
        print(f"tilemesh gemm: the run failed: {e}", file=sys.stderr)
        return 1
    print(report.table(), flush=True)
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(report.to_json(), indent=2) + "\n")
        print(f"  json              {json_out}")
    if timeline_out:
        write_timeline(timeline_out, report.run.timeline)
        print(f"  timeline          {timeline_out} ({len(report.run.timeline)} commands)")
    return 0 if report.ok else 1


# -- make sim: the demo ----------------------------------------------------------------------------

#: The demo's GEMMs: (M, K, N, epilogue?) - square, ragged, primes, degenerate, quantized layers
#: and one larger than a ``default`` tile's SRAM (A, B and C: 96 KiB; a tile has 64 KiB).
DEMO_SHAPES = [(64, 64, 64, False), (37, 53, 29, False), (1, 1, 1, False), (17, 3, 31, True),
               (40, 72, 24, True), (128, 128, 128, False)]


def run_demo(cfg, *, simulator="verilator", seed=1, shapes=None, host_idle=0.1,
             host_stall=0.1, out=None, backend="rtl"):
    """``make sim``: a set of random GEMMs (``shapes``, default :data:`DEMO_SHAPES`) on the RTL
    (or the model) vs numpy, a report per GEMM and a summary, JSON to ``out`` if given; returns
    the exit status (0 only when every GEMM is bit-exact)."""
    from tilemesh_sim.runner import SimulationFailed

    from .compiler.gemm import Epilogue, GemmError, Requant

    shapes = DEMO_SHAPES if shapes is None else shapes
    where = simulator if backend == "rtl" else "the model"
    print(f"tilemesh sim: {len(shapes)} random GEMMs on the {cfg.rows}x{cfg.cols} mesh of "
          f"{cfg.tile.pe_rows}x{cfg.tile.pe_cols} PEs, {where} vs numpy, seed {seed}, "
          f"host port noise idle {host_idle} / stall {host_stall}", flush=True)
    rows, results, t0 = [], [], time.perf_counter()
    for i, (M, K, N, ep) in enumerate(shapes):
        epilogue = Epilogue(bias=True, requant=Requant(scale=1 << 10, shift=16, zero_point=3),
                            relu=True) if ep else None
        A, B, bias = random_operands(cfg, M, K, N, seed + i, bias=ep)
        print(f"\n[{i + 1}/{len(shapes)}] {M}x{K}x{N}" + (" + bias, relu, requant" if ep
                                                           else ""), flush=True)
        try:
            noise = (host_idle, host_stall) if backend == "rtl" else (0.0, 0.0)
            rep = run_gemm(cfg, A, B, bias=bias, epilogue=epilogue, backend=backend,
                           simulator=simulator, seed=seed + i, host_idle=noise[0],
                           host_stall=noise[1], progress=_Progress(every=5.0))
        except (SimulationFailed, GemmError, ConfigError) as e:
            print(f"  FAILED: {e}", flush=True)
            rows.append((M, K, N, ep, None))
            continue
        print(rep.table(), flush=True)
        rows.append((M, K, N, ep, rep))
        results.append(rep.to_json())
    bad = [r for r in rows if r[4] is None or not r[4].ok]
    print(f"\nsummary ({time.perf_counter() - t0:.0f} s)")
    print("  GEMM          epilogue  result   start->done  begin->end  on-mesh  end-to-end")
    for M, K, N, ep, rep in rows:
        shape = f"{M}x{K}x{N}"
        if rep is None:
            print(f"  {shape:<13} {'yes' if ep else 'no':<9} ERROR")
            continue
        r = rep.run
        print(f"  {shape:<13} {'yes' if ep else 'no':<9} {'PASS' if rep.ok else 'FAIL':<8} "
              f"{r.t_done - r.t_start:>11,} {r.t_end - r.t_begin:>11,} "
              f"{100 * r.on_mesh_utilisation:6.1f} % {100 * r.end_to_end_utilisation:8.1f} %")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(results, indent=2) + "\n")
        print(f"  json: {out}")
    if bad:
        print(f"\nFAIL: {len(bad)} of {len(rows)} GEMMs did not match numpy", file=sys.stderr)
        return 1
    print(f"\nPASS: all {len(rows)} GEMMs bit-exact against numpy")
    return 0

