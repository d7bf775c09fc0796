"""cocotb bench of one GEMM on a whole mesh: the RTL back end of :func:`tilemesh.gemm.run_gemm`.

The simulator process rebuilds the same :class:`~tilemesh.compiler.gemm.GemmPlan` from the
parameters (:func:`tilemesh.gemm.plan_gemm`: compilation is deterministic), loads the operands
from ``.npy`` files and runs ``plan.run`` through a :class:`~tilemesh.host.driver.HostDriver` over
a :class:`~tilemesh.host.rtl.CocotbTransport` - random idle cycles into ``host_in``, random
backpressure on ``host_out``. Python only runs the host-port driver; the tiles run their
programs on their own. Each :class:`GemmRun` is pickled to its ``result``; the caller checks it.

Parameters (``run_cocotb(params=...)``): ``cfg`` (``MeshConfig.to_dict()``), ``idle``, ``stall``
(host-port noise), ``progress`` (a file that gets a line ``done total what`` now and then, or
null) and ``jobs``, GEMMs run one after the other, each with ``M``, ``K``, ``N``, ``epilogue``
(:func:`tilemesh.gemm.epilogue_to_dict`), ``a``, ``b``, ``bias`` (``.npy`` paths; ``bias`` may
be null), ``result`` (pickle path) and ``timeout`` (host-driver timeout, cycles).
"""

import pickle

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge

from tilemesh.config import MeshConfig
from tilemesh.gemm import epilogue_from_dict, plan_gemm, sort_timeline
from tilemesh.host.driver import HostDriver
from tilemesh.host.rtl import CocotbTransport
from tilemesh_sim.streams import params, reset, rng, start_clock


class _ProgressFile:
    """``progress(done, total, what)`` appending lines to a file the caller follows."""

    def __init__(self, path):
        self.path = path

    def __call__(self, done, total, what):
        with open(self.path, "a") as f:
            f.write(f"{int(done)} {int(total)} {' '.join(str(what).split())}\n")


@cocotb.test()
async def gemm(dut):
    p = params()
    cfg = MeshConfig.from_dict(p["cfg"])
    await start_clock(dut)
    dut.host_in__valid.value = 0
    await reset(dut)
    # One transport for the whole simulation (its receiver drains the port throughout); a
    # fresh driver per GEMM, as a new host program would have.
    transport = CocotbTransport(dut, cfg, rnd=rng("gemm"), idle=p.get("idle", 0.0),
                                stall=p.get("stall", 0.0))
    progress = _ProgressFile(p["progress"]) if p.get("progress") else None
    timeline = [] if p.get("timeline") else None
    if timeline is not None:
        cocotb.start_soon(_record_takes(dut, cfg, transport, timeline))
    for job in p["jobs"]:
        plan = plan_gemm(cfg, job["M"], job["K"], job["N"], epilogue_from_dict(job["epilogue"]))
        A, B = np.load(job["a"]), np.load(job["b"])
        bias = np.load(job["bias"]) if job.get("bias") else None
        drv = HostDriver(cfg, transport, timeout=job["timeout"])
        sent, received = transport.sent_flits, transport.received_flits
        if progress:
            progress(0, 1, f"GEMM {job['M']}x{job['K']}x{job['N']}")
        first = len(timeline) if timeline is not None else 0
        run = await plan.run(drv, A, B, bias, progress=progress)
        if timeline is not None:
            run.timeline = sort_timeline(timeline[first:])
        cocotb.log.info("GEMM %dx%dx%d: t_start->t_done %d cycles, t_begin->t_end %d cycles, "
                        "host port flits in %d / out %d", job["M"], job["K"], job["N"],
                        run.t_done - run.t_start, run.t_end - run.t_begin,
                        transport.sent_flits - sent, transport.received_flits - received)
        with open(job["result"], "wb") as f:
            pickle.dump(run, f)


async def _record_takes(dut, cfg, transport, timeline):
    """Append ``(cycle, (x, y), unit)`` to ``timeline`` whenever a tile's DMA engine, matrix
    unit or SIMD engine takes a command from its controller queue (the ``*_cmd`` handshakes;
    host clock, as the model's :attr:`~tilemesh.model.machine.MeshModel.timeline`). Needs the
    tiles' internal signals: Icarus."""
    ports = []
    for y in range(cfg.rows):
        for x in range(cfg.cols):
            ctl = getattr(dut, f"tile_{y}_{x}").controller
            for unit in ("dma", "matmul", "simd"):
                ports.append(((x, y), unit, getattr(ctl, f"{unit}_cmd__valid"),
                              getattr(ctl, f"{unit}_cmd__ready")))
    while True:
        await RisingEdge(dut.clk)
        await ReadOnly()
        now = transport.cycles
        for tile, unit, valid, ready in ports:
            if int(valid.value) and int(ready.value):
                timeline.append((now, tile, unit))
