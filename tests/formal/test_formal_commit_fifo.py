"""Formal proof of the ingress buffer (:class:`tilemesh.noc.fifo.CommitFifo`): entries become
readable only when committed, a rollback discards exactly the uncommitted ones, the buffer never
overflows or underflows, and committed words come out intact and in order.

Technique as for :class:`~tilemesh.noc.fifo.Fifo` (see ``test_formal_fifo``): a shadow of the
contract's counts (words held, uncommitted words, readable words) and one tracked word chosen by
the solver; a tracked word that is rolled back stops being tracked (it must never be read, which
the tracked words behind it check: they would come out at the wrong place). Free inputs: writes,
reads, commit, rollback and reset in any combination, every cycle.

Induction needs the inside (marked "white box"): the pointers and counters agree with the
shadow, the synchronous read port (which reads one cycle ahead) shows the row at the head, and
the tracked word sits ``ahead`` rows after the head.
"""

import pytest
from amaranth.asserts import AnySeq
from amaranth.hdl import Array, Assert, Cover, Fragment, Module, Mux, Shape, Signal, Value, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In
from formal_support import internal_signals, mutant_class, open_memory, require_formal_tools

import tilemesh.noc.fifo as fifo_module
from tilemesh.formal import named, prove, run_formal
from tilemesh.noc.fifo import CommitFifo

pytestmark = pytest.mark.formal

# The ingress buffer of a 2-flit-packet mesh is 4 deep (ingress_depth); 3 wraps its pointers
# without a power of two. Data-independent, so 4-bit words suffice.
DEPTHS = [3, 4]
PROVE_DEPTH = 2   # 2-cycle base case + 1-step induction
COVER_DEPTH = 12
MUTANT_DEPTH = 10
WORD = unsigned(4)


def _mod_add(a, b, depth):
    total = a + b
    return Mux(total >= depth, total - depth, total)


def _non_transparent():
    # The head row is read one cycle ahead; without transparency a word committed in the cycle
    # it is written (into an empty buffer) is read stale.
    return mutant_class(fifo_module, "CommitFifo", [
        ("storage.read_port(transparent_for=(wport,))", "storage.read_port()")])


MUTANTS = {
    "non_transparent_read": (dict(fifo=_non_transparent),
                             "assert 'a committed word comes out intact and in order'"),
    "rollback_ignored": (dict(mutant="rollback_ignored"),
                         "assert 'level counts the words held'"),
    "valid_before_commit": (dict(mutant="valid_before_commit"),
                            "assert 'r.valid exactly when a committed word is held'"),
}


class CommitFifoHarness(wiring.Component):
    """Proof harness: free writer, reader, commit and rollback around one :class:`CommitFifo`.

    Parameters
    ----------
    depth : int
    invariants : bool
        Assert the white-box invariants (off for broken variants).
    fifo : callable
        Returns the class under proof (for mutants made from its source).
    mutant : str or None
        A bug between the buffer and the harness: ``"rollback_ignored"`` (the buffer never sees
        a rollback) or ``"valid_before_commit"`` (``r.valid`` also when only uncommitted words
        are held).
    """

    def __init__(self, depth, *, shape=WORD, invariants=True,
                 fifo=lambda: CommitFifo, mutant=None):
        self._depth, self._shape, self._invariants = depth, shape, invariants
        self._fifo, self._mutant = fifo, mutant
        super().__init__({
            "w": In(stream.Signature(shape)),
            "r_ready": In(1),
            "commit": In(1),
            "rollback": In(1),
            "track": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        depth, mutant = self._depth, self._mutant
        width = Shape.cast(self._shape).width
        fifo = self._fifo()(self._shape, depth)
        body = fifo.elaborate(platform)
        fifo._MustUse__used = True  # elaborated by hand: silence "created but never used"
        peek_addr, peek = open_memory(body, depth)
        fragment = Fragment.get(body, platform)
        m.submodules.fifo = fragment
        reg = internal_signals(fragment, ["rp", "cp", "wp", "used", "spec", "avail"])

        w_ready, r_valid = Signal(), Signal()
        glitch = AnySeq(1)
        m.d.comb += [
            fifo.w.valid.eq(self.w.valid),
            fifo.w.payload.eq(self.w.payload),
            w_ready.eq(fifo.w.ready),
            self.w.ready.eq(w_ready),
            r_valid.eq(fifo.r.valid),
            fifo.r.ready.eq(self.r_ready),
            fifo.commit.eq(self.commit),
            fifo.rollback.eq(self.rollback),
        ]
        if mutant == "rollback_ignored":
            m.d.comb += fifo.rollback.eq(0)
        elif mutant == "valid_before_commit":
            m.d.comb += r_valid.eq(fifo.r.valid | (glitch & (fifo.level != 0)))
        r_payload = Value.cast(fifo.r.payload)
        w_fire = self.w.valid & w_ready
        r_fire = r_valid & self.r_ready
        commit = self.commit
        rollback = self.rollback & ~self.commit  # commit wins, as documented

        # Shadow of the contract: words held (committed and not), uncommitted, readable.
        held = Signal(range(2 * depth + 2))
        spec = Signal(range(2 * depth + 2))
        avail = Signal(range(2 * depth + 2))
        with m.If(rollback):  # the uncommitted words and this cycle's write are discarded
            m.d.sync += [held.eq(held - spec - r_fire), spec.eq(0), avail.eq(avail - r_fire)]
        with m.Elif(commit):  # everything written so far, this cycle's write included
            m.d.sync += [held.eq(held + w_fire - r_fire), spec.eq(0),
                         avail.eq(avail + spec + w_fire - r_fire)]
        with m.Else():
            m.d.sync += [held.eq(held + w_fire - r_fire), spec.eq(spec + w_fire),
                         avail.eq(avail - r_fire)]

        # The tracked word: its value, the words ahead of it, and whether it is committed.
        tracking = Signal()
        committed = Signal()
        ahead = Signal(range(depth + 1))
        tracked = Signal(width)
        with m.If(tracking):
            with m.If(rollback & ~committed):
                m.d.sync += tracking.eq(0)  # discarded: never to be read
            with m.Elif(r_fire):
                with m.If(ahead == 0):
                    m.d.sync += tracking.eq(0)
                with m.Else():
                    m.d.sync += ahead.eq(ahead - 1)
            with m.If(commit):
                m.d.sync += committed.eq(1)
        with m.Elif(w_fire & self.track & ~rollback):
            m.d.sync += [tracking.eq(1), committed.eq(commit),
                         tracked.eq(Value.cast(self.w.payload)), ahead.eq(held - r_fire)]

        # -- the contract (ports only) --
        m.d.comb += [
            Assert(held <= depth, "never holds more than depth words"),
            Assert(fifo.level == held, "level counts the words held"),
            Assert(w_ready == (held != depth), "w.ready exactly when the buffer is not full"),
            Assert(r_valid == (avail != 0), "r.valid exactly when a committed word is held"),
        ]
        with m.If(tracking):
            m.d.comb += Assert(ahead < held, "the tracked word is still inside")
            with m.If(r_valid & (ahead == 0)):
                m.d.comb += Assert(committed & (r_payload == tracked),
                                   "a committed word comes out intact and in order")

        # High in the first cycle and the cycle after any reset: the read port's register is not
        # reset (nor initialised), and refreshes from the head row one cycle later.
        fresh = Signal(init=1)
        m.d.sync += fresh.eq(0)

        if self._invariants:
            rp, cp, wp = reg["rp"], reg["cp"], reg["wp"]
            for k in range(depth):
                m.d.comb += peek_addr[k].eq(_mod_add(rp, k, depth))
            m.d.comb += [
                Assert((rp < depth) & (cp < depth) & (wp < depth),
                       "white box: pointers index the storage"),
                Assert((reg["used"] == held) & (reg["spec"] == spec) & (reg["avail"] == avail),
                       "white box: counters agree with the contract"),
                Assert((spec <= held) & (avail == held - spec),
                       "white box: uncommitted words follow the committed ones"),
                Assert(cp == _mod_add(rp, avail, depth),
                       "white box: the commit pointer is avail rows after the head"),
                Assert(wp == _mod_add(cp, spec, depth),
                       "white box: the write pointer is spec rows after the commit pointer"),
                Assert(fresh | (r_payload == peek[0]),
                       "white box: the read port shows the head row"),
                Assert(~fresh | (avail == 0), "white box: nothing is readable after reset"),
                Assert(~tracking | (committed == (ahead < avail)),
                       "white box: the tracked word is committed exactly when before cp"),
            ]
            with m.If(tracking):
                m.d.comb += Assert(Array(peek)[ahead] == tracked,
                                   "white box: the tracked word is ahead rows after the head")

        m.d.comb += [
            Cover(named(m, "cover__committed_tracked_word_read",
                        tracking & r_fire & (ahead == 0) & committed)),
            Cover(named(m, "cover__rollback_of_a_partly_read_buffer",
                        rollback & (spec != 0) & (avail != 0) & r_fire)),
            Cover(named(m, "cover__full", held == depth)),
        ]
        return m


@pytest.fixture(scope="module", autouse=True)
def _tools():
    require_formal_tools()


@pytest.mark.parametrize("depth", DEPTHS)
def test_commit_fifo_proof(depth):
    result = prove(CommitFifoHarness(depth), name=f"commit_fifo_d{depth}", mode="prove",
                   depth=PROVE_DEPTH)
    print(result.summary())


def test_commit_fifo_cover():
    result = prove(CommitFifoHarness(3), name="commit_fifo_cover", mode="cover",
                   depth=COVER_DEPTH)
    print(result.summary(), result.reached)
    assert len(result.reached) == 3, result.reached


@pytest.mark.parametrize("mutant", list(MUTANTS))
def test_commit_fifo_broken_variant_rejected(mutant):
    kwargs, expected = MUTANTS[mutant]
    result = run_formal(CommitFifoHarness(3, invariants=False, **kwargs),
                        name=f"commit_fifo_{mutant}", mode="bmc", depth=MUTANT_DEPTH)
    print(result.summary(), result.failed, "step", result.step)
    assert result.status == "FAIL", result.tail()
    assert result.step is not None, result.tail()
    assert expected in result.failed, result.failed
