"""cocotb bench of the SRAM bank: a write driver and a read-request driver with random idle
cycles, a response monitor with random backpressure, and a model fed cycle by cycle with the
transactions the bank accepted (:class:`tilemesh.model.reference.SramModel`), whose answers the
scoreboard compares in order with the responses.

The stimulus helper :func:`random_requests` has no simulator dependency; the Amaranth unit tests
use it too. Parameters (``run_cocotb(params=...)``): ``width``, ``depth``, ``tag_bits``,
``transparent``, ``init`` (list), ``ops``, ``idle``, ``stall``.
"""

import random

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge

from tilemesh.layouts import sram_read_req_layout, sram_read_resp_layout, sram_write_layout
from tilemesh.model.reference import SramModel
from tilemesh_sim.streams import (
    StreamDriver,
    StreamMonitor,
    cycles_until,
    params,
    reset,
    rng,
    start_clock,
)

__all__ = ["random_requests"]


def random_requests(rnd, width, depth, n, tag_bits=0):
    """``n`` writes ``{addr, data}`` and ``n`` reads ``{addr[, tag]}``. Half the addresses come
    from a hot set of four, so reads often meet writes to the same word, in the same cycle
    or the cycles around it."""
    hot = [rnd.randrange(depth) for _ in range(4)] + [0, depth - 1]

    def addr():
        return rnd.choice(hot) if rnd.random() < 0.5 else rnd.randrange(depth)

    def word():
        return rnd.choice([0, (1 << width) - 1, rnd.getrandbits(width)])

    writes = [{"addr": addr(), "data": word()} for _ in range(n)]
    reads = [{"addr": addr(), **({"tag": rnd.getrandbits(tag_bits)} if tag_bits else {})}
             for _ in range(n)]
    return writes, reads


_models = {}


def bank_model(p):
    """The model of the bank's words. The tests of this module run one after the other on the
    same simulated bank, whose words survive reset, so they share one model too."""
    if "model" not in _models:
        _models["model"] = SramModel(p["width"], p["depth"], transparent=p["transparent"],
                                     init=p["init"])
    return _models["model"]


class AcceptMonitor:
    """Samples, every cycle, which write and read request the bank accepts, runs the model on
    them and queues the expected response (with its tag)."""

    def __init__(self, dut, p, model):
        self.dut, self.model, self.tag_bits = dut, model, p["tag_bits"]
        self.write_layout = sram_write_layout(p["width"], p["depth"])
        self.req_layout = sram_read_req_layout(p["depth"], p["tag_bits"])
        self.expected = []
        self.collisions = 0
        cocotb.start_soon(self._run())

    async def _run(self):
        d = self.dut
        while True:
            await ReadOnly()
            write = read = tag = None
            if d.write__valid.value and d.write__ready.value:
                w = self.write_layout.from_bits(int(d.write__payload.value))
                write = (int(w.addr), int(w.data))
            if d.read_req__valid.value and d.read_req__ready.value:
                r = self.req_layout.from_bits(int(d.read_req__payload.value))
                read = int(r.addr)
                tag = int(r.tag) if self.tag_bits else None
            if write and read is not None and write[0] == read:
                self.collisions += 1
            data = self.model.cycle(write=write, read=read)
            if read is not None:
                self.expected.append({"data": data, **({"tag": tag} if self.tag_bits else {})})
            await RisingEdge(d.clk)


class Scoreboard:
    def __init__(self, accept, monitor, tag_bits):
        self.accept, self.monitor, self.tag_bits = accept, monitor, tag_bits

    def check(self):
        got = [{"data": int(v.data), **({"tag": int(v.tag)} if self.tag_bits else {})}
               for v in self.monitor.values()]
        want = self.accept.expected
        assert len(got) == len(want), f"{len(got)} responses for {len(want)} accepted reads"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert g == w, f"response {i}: got {g}, expected {w}"


@cocotb.test()
async def random_reads_and_writes(dut):
    """Random writes and reads with random gaps, random response stalls; every response is
    the model's word for the cycle its request was accepted in."""
    p = {"tag_bits": 0, "transparent": True, "init": [], "ops": 400, "idle": 0.3,
         "stall": 0.3, **params()}
    rnd = rng("random")
    w_layout = sram_write_layout(p["width"], p["depth"])
    q_layout = sram_read_req_layout(p["depth"], p["tag_bits"])
    r_layout = sram_read_resp_layout(p["width"], p["tag_bits"])
    writer = StreamDriver(dut, "write", w_layout, rnd=random.Random(rnd.random()),
                          idle=p["idle"])
    reader = StreamDriver(dut, "read_req", q_layout, rnd=random.Random(rnd.random()),
                          idle=p["idle"])
    monitor = StreamMonitor(dut, "read_resp", r_layout, rnd=random.Random(rnd.random()),
                            stall=p["stall"])
    await start_clock(dut)
    await reset(dut)
    accept = AcceptMonitor(dut, p, bank_model(p))
    writes, reads = random_requests(rnd, p["width"], p["depth"], p["ops"], p["tag_bits"])
    w_task = cocotb.start_soon(writer.send_all(writes))
    await reader.send_all(reads)
    await w_task
    await monitor.wait_for(len(reads), timeout_cycles=20 * len(reads) + 100)
    for _ in range(10):  # nothing more may come out: no duplicated responses
        await RisingEdge(dut.clk)
    Scoreboard(accept, monitor, p["tag_bits"]).check()
    assert accept.collisions > 0, "no same-cycle read/write of one address was exercised"


@cocotb.test()
async def back_to_back_reads(dut):
    """Reads every cycle with the response always ready: one word per cycle, and each
    response appears the cycle after its request (latency 1)."""
    p = {"tag_bits": 0, "transparent": True, "init": [], **params()}
    q_layout = sram_read_req_layout(p["depth"], p["tag_bits"])
    r_layout = sram_read_resp_layout(p["width"], p["tag_bits"])
    reader = StreamDriver(dut, "read_req", q_layout)
    monitor = StreamMonitor(dut, "read_resp", r_layout)
    dut.write__valid.value = 0
    await start_clock(dut)
    await reset(dut)
    accept = AcceptMonitor(dut, p, bank_model(p))
    n = min(64, p["depth"])
    reads = [{"addr": a, **({"tag": a % (1 << p["tag_bits"])} if p["tag_bits"] else {})}
             for a in range(n)]
    counter = cocotb.start_soon(cycles_until(dut, lambda: len(monitor.beats) >= n))
    await reader.send_all(reads)
    cycles = await counter
    Scoreboard(accept, monitor, p["tag_bits"]).check()
    assert cycles == n + 1, f"{n} reads took {cycles} cycles, not {n} + 1"
