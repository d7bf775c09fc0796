"""Formal proof of the NoC FIFO (:class:`tilemesh.noc.fifo.Fifo`): it never overflows or
underflows, ``level`` counts exactly what it holds, and it returns every word it accepted, intact
and in order.

Technique: a shadow counter of accepted-minus-delivered words, and one *tracked word* chosen by
the solver (the free input ``track`` picks which write is tracked, so every write position is
covered). The harness records the word and how many words are ahead of it, counts that down on
each read, and asserts that when nothing is ahead the FIFO's head is exactly the recorded word.
That is the FIFO contract: the n-th word read is the n-th word written.

The contract properties only look at the ports. Induction also needs invariants about the
FIFO's internals (marked "white box" below): the pointers index the storage, the write pointer
is ``level`` places after the read pointer, and the tracked word sits ``ahead`` places after the
head. Without them k-induction cannot close for any k, because the solver may stall the reader
forever while an unreachable memory content waits to be read. The harness reads the storage
through extra read ports it adds (``formal_support.open_fifo``); the FIFO is otherwise unchanged.

Every proof has broken variants that the prover must reject, each for the property it breaks, so
a vacuous harness cannot pass; and a cover run shows the interesting states are reachable.
"""

import pytest
from amaranth.asserts import AnySeq
from amaranth.hdl import Array, Assert, Cover, Module, Mux, Shape, Signal, Value, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In
from formal_support import open_fifo, require_formal_tools, smallest_config

from tilemesh.formal import named, prove, run_formal
from tilemesh.layouts import flit_layout
from tilemesh.noc.fifo import Fifo

pytestmark = pytest.mark.formal

# A real flit (the narrowest that holds a header) at the smallest depth the router uses, and
# two small words at depths whose pointers wrap with and without a power of two. The data path
# is data-independent, so wider words prove nothing more.
TINY_NOC = smallest_config(2, 2, max_packet_flits=3)
CASES = [
    pytest.param(flit_layout(TINY_NOC), 2, id="flit-depth2"),
    pytest.param(unsigned(4), 3, id="u4-depth3"),
    pytest.param(unsigned(4), 4, id="u4-depth4"),
]

# SymbiYosys depth 2: a 2-cycle base case and a 1-step induction (the invariants make the
# contract 1-inductive).
PROVE_DEPTH = 2
# Enough cycles to fill a depth-4 FIFO, wrap its pointers and read a tracked last word out.
COVER_DEPTH = 14

# Enough cycles from reset to fill a depth-3 FIFO and wrap its pointers.
MUTANT_DEPTH = 10

# Boundary mutations of the FIFO, each breaking one promise of the contract.
MUTANTS = {
    # accepts a write while full: the word is lost
    "ready_when_full": "assert 'w.ready exactly when the FIFO is not full'",
    # offers a word while empty: reads garbage
    "valid_when_empty": "assert 'r.valid exactly when the FIFO holds a word'",
    # a read that does not pop: the head is read twice
    "read_without_pop": "assert 'level counts accepted minus delivered words'",
    # one data bit flipped in the last row of a full FIFO
    "corrupt_when_full": "assert 'the tracked word comes out intact and in order'",
}


def _mod_add(a, b, depth):
    total = a + b
    return Mux(total >= depth, total - depth, total)


class FifoHarness(wiring.Component):
    """Proof harness: drives a :class:`Fifo` from free inputs and checks its contract.

    Parameters
    ----------
    shape : ShapeLike
        Entry shape.
    depth : int
        FIFO depth.
    mutant : str or None
        A key of ``MUTANTS``: insert that bug between the FIFO and the harness.

    Members
    -------
    w : ``In(stream.Signature(shape))``
        Writer side (free inputs: the solver writes anything at any time).
    r_ready : ``In(1)``
        Reader's ready (free input: arbitrary backpressure).
    track : ``In(1)``
        Which accepted write becomes the tracked word (free input).
    """

    def __init__(self, shape, depth, *, mutant=None):
        if mutant is not None and mutant not in MUTANTS:
            raise ValueError(f"unknown FIFO mutant {mutant!r}")
        self._shape, self._depth, self._mutant = shape, depth, mutant
        super().__init__({
            "w": In(stream.Signature(shape)),
            "r_ready": In(1),
            "track": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        depth, mutant = self._depth, self._mutant
        width = Shape.cast(self._shape).width
        m.submodules.fifo = fifo = Fifo(self._shape, depth)
        inside = open_fifo(fifo, platform)  # white-box view, used by the invariants only
        rp, wp = inside.head, inside.tail

        # The FIFO as the contract sees it: its ports, or a mutated copy of them.
        w_ready, r_valid = Signal(), Signal()
        r_payload = Signal(width)
        glitch = AnySeq(1)
        m.d.comb += [
            fifo.w.valid.eq(self.w.valid),
            fifo.w.payload.eq(self.w.payload),
            w_ready.eq(fifo.w.ready),
            r_valid.eq(fifo.r.valid),
            r_payload.eq(Value.cast(fifo.r.payload)),
            fifo.r.ready.eq(self.r_ready),
            self.w.ready.eq(w_ready),
        ]
        if mutant == "ready_when_full":
            m.d.comb += w_ready.eq(1)
        elif mutant == "valid_when_empty":
            m.d.comb += r_valid.eq(fifo.r.valid | glitch)
        elif mutant == "read_without_pop":
            m.d.comb += fifo.r.ready.eq(self.r_ready & ~glitch)
        elif mutant == "corrupt_when_full":
            flip = (fifo.level == depth) & (rp == depth - 1)
            m.d.comb += r_payload.eq(Value.cast(fifo.r.payload) ^ flip)
        w_fire = self.w.valid & w_ready
        r_fire = r_valid & self.r_ready

        # Shadow level: wide enough that an overflow shows instead of wrapping.
        count = Signal(range(2 * depth + 2))
        m.d.sync += count.eq(count + w_fire - r_fire)

        tracking = Signal()
        ahead = Signal(range(depth + 1))
        tracked = Signal(width)
        with m.If(tracking):
            with m.If(r_fire):
                with m.If(ahead == 0):
                    m.d.sync += tracking.eq(0)
                with m.Else():
                    m.d.sync += ahead.eq(ahead - 1)
        with m.Elif(w_fire & self.track):
            m.d.sync += [
                tracking.eq(1),
                tracked.eq(Value.cast(self.w.payload)),
                ahead.eq(count - r_fire),
            ]

        # -- the contract (ports only) --
        m.d.comb += [
            Assert(count <= depth, "never holds more than depth words"),
            Assert(fifo.level == count, "level counts accepted minus delivered words"),
            Assert(w_ready == (count != depth), "w.ready exactly when the FIFO is not full"),
            Assert(r_valid == (count != 0), "r.valid exactly when the FIFO holds a word"),
        ]
        with m.If(tracking):
            m.d.comb += Assert(ahead < count, "the tracked word is still inside the FIFO")
            with m.If(r_valid & (ahead == 0)):
                m.d.comb += Assert(r_payload == tracked,
                                   "the tracked word comes out intact and in order")

        # -- white box: inductive strengthening only, not part of the contract --
        m.d.comb += [
            Assert((rp < depth) & (wp < depth), "white box: pointers index the storage"),
            Assert(wp == _mod_add(rp, fifo.level, depth),
                   "white box: write pointer is level places after read pointer"),
        ]
        with m.If(tracking):
            m.d.comb += Assert(Array(inside.entries)[ahead] == tracked,
                               "white box: the tracked word is ahead places after the head")

        # -- reachability of the interesting states (cover runs) --
        m.d.comb += [
            Cover(named(m, "cover__full_then_tracked_last_out",
                        tracking & r_fire & (ahead == 0) & (count == depth) & self.w.valid)),
            Cover(named(m, "cover__tracked_word_written_into_full_wrap",
                        tracking & (ahead == depth - 1) & (rp == depth - 1))),
            Cover(named(m, "cover__read_and_write_same_cycle",
                        w_fire & r_fire & (count == 1))),
        ]
        return m


@pytest.fixture(scope="module", autouse=True)
def _tools():
    require_formal_tools()


@pytest.mark.parametrize("shape, depth", CASES)
def test_fifo_contract_proof(shape, depth):
    result = prove(FifoHarness(shape, depth), name=f"fifo_d{depth}_w{Shape.cast(shape).width}",
                   mode="prove", depth=PROVE_DEPTH)
    print(result.summary())


@pytest.mark.parametrize("shape, depth", CASES[:1] + CASES[2:])
def test_fifo_contract_cover(shape, depth):
    result = prove(FifoHarness(shape, depth), name=f"fifo_cover_d{depth}", mode="cover",
                   depth=COVER_DEPTH)
    print(result.summary(), result.reached)
    assert len(result.reached) == 3, result.reached


@pytest.mark.parametrize("mutant", list(MUTANTS))
def test_fifo_broken_variant_rejected(mutant):
    # BMC from reset: the prover must find a real counterexample trace, not only an induction
    # failure (which an over-strong invariant could also cause).
    result = run_formal(FifoHarness(unsigned(4), 3, mutant=mutant), name=f"fifo_{mutant}",
                        mode="bmc", depth=MUTANT_DEPTH)
    print(result.summary(), result.failed, "step", result.step)
    assert result.status == "FAIL", result.tail()
    assert result.step is not None, result.tail()
    assert MUTANTS[mutant] in result.failed, result.failed
