"""cocotb traffic runs on the NoC fabric's Verilog, on Verilator and Icarus.

Each run executes every test of :mod:`tilemesh_sim.noc_traffic` (traffic patterns from light load
to past saturation with 1-flit and multi-flit packets, malformed packets from every entry point,
zero-load latency) against one mesh; the Verilog of a mesh is built once per simulator.
"""

import functools
import os

import pytest

from tilemesh.noc.fabric import NocFabric
from tilemesh_sim.noc_model import PATTERNS, noc_config
from tilemesh_sim.runner import run_cocotb, to_verilog, top_ports_public

pytestmark = pytest.mark.rtl

# Reproduce a failure with TILEMESH_SEED=<seed> (cocotb also prints it in the log).
SEED = int(os.environ.get("TILEMESH_SEED", "20261122"))
# [gap, stall] probabilities, used in turn by the phases of a run.
NOISE = [[0.0, 0.0], [0.3, 0.3], [0.1, 0.6], [0.5, 0.0]]

MESHES = {
    # 1x1: the host and one tile; every pattern degenerates to "to myself" or "to the host".
    "1x1": dict(cfg=noc_config(1, 1, fifo_depth=2, max_packet_flits=4),
                run=dict(patterns=["uniform", "neighbour"], rates=[0.1, 1.0],
                         sizes=["single", "multi"], packets=12)),
    # 2x3: not square, host west of (0, 0); deeper FIFOs and longer packets.
    "2x3": dict(cfg=noc_config(2, 3, fifo_depth=4, max_packet_flits=8),
                run=dict(patterns=list(PATTERNS), rates=[0.15, 1.0],
                         sizes=["mixed"], packets=8)),
    # 4x4 at the smallest FIFO depth, host on the east edge; 1-flit and 4-flit packets.
    "4x4": dict(cfg=noc_config(4, 4, fifo_depth=2, max_packet_flits=4, host_x=3, host_y=1,
                               host_side="east"),
                run=dict(patterns=list(PATTERNS), rates=[0.1, 0.4, 1.0],
                         sizes=["single", 3], packets=6)),
}


@functools.cache
def _verilog(mesh):
    return to_verilog(NocFabric(MESHES[mesh]["cfg"]), f"noc_fabric_{mesh}")


def _build_args(simulator, name):
    if simulator != "verilator":
        return []
    # Unoptimised C++: the simulation itself is not the bottleneck (Python is).
    return [*top_ports_public(name), "-CFLAGS", "-O0"]


@pytest.mark.parametrize("mesh", list(MESHES))
def test_noc_traffic(mesh, simulator):
    spec = MESHES[mesh]
    name = f"noc_fabric_{mesh}"
    params = dict(spec["run"], cfg=spec["cfg"].to_dict(), noise=NOISE)
    run_cocotb(_verilog(mesh), name=name, module="tilemesh_sim.noc_traffic",
               simulator=simulator, params=params, seed=SEED,
               build_args=_build_args(simulator, name))
