"""The SymbiYosys runner itself (:mod:`tilemesh.formal`): verdicts, the names it reports for
failing properties, its errors, and the Yosys flow details a proof depends on."""

import pytest
from amaranth.asserts import AnyConst
from amaranth.hdl import Array, Assert, Assume, Cover, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In
from formal_support import require_formal_tools

from tilemesh.formal import FormalFailure, named, prove, run_formal

pytestmark = pytest.mark.formal


class Counter(wiring.Component):
    """A modulo-``wrap`` counter with an enable; ``bug`` lets it run past ``wrap``."""

    enable: In(1)

    def __init__(self, wrap=10, *, bug=False, table=False):
        self._wrap, self._bug, self._table = wrap, bug, table
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        count = Signal(range(16))
        limit = self._wrap + 3 if self._bug else self._wrap
        with m.If(self.enable):
            m.d.sync += count.eq(count + 1)
            with m.If(count == limit - 1):
                m.d.sync += count.eq(0)
        m.d.comb += Assert(count < self._wrap, "count stays below wrap")
        if self._table:
            # A constant table indexed by a register: Yosys would make it a ROM (a memory an
            # induction step may assume arbitrary) unless the runner forbids that.
            double = Array([(2 * v) % 16 for v in range(16)])[count]
            m.d.comb += Assert(double == ((count + count) & 15), "table matches arithmetic")
        m.d.comb += Cover(named(m, "cover__count_at_top", count == self._wrap - 1))
        return m


class Unreachable(wiring.Component):
    enable: In(1)

    def elaborate(self, platform):
        m = Module()
        value = AnyConst(4)
        m.d.comb += Assume(value < 8)
        m.d.comb += Cover(named(m, "cover__value_above_8", value > 8))
        return m


@pytest.fixture(scope="module", autouse=True)
def _tools():
    require_formal_tools()


def test_proof_passes():
    result = prove(Counter(), name="runner_counter", mode="prove", depth=3)
    assert result.passed and result.failed == [] and result.step is None


def test_failing_property_is_named_with_its_step():
    result = run_formal(Counter(bug=True), name="runner_counter_bug", mode="bmc", depth=15)
    assert result.status == "FAIL"
    assert result.failed == ["assert 'count stays below wrap'"]
    assert result.step == 10  # count reaches 10 after ten enabled cycles


def test_prove_raises_with_the_property_and_log():
    with pytest.raises(FormalFailure, match=r"runner_counter_raise: bmc depth 15: FAIL .*"
                                            r"failing: assert 'count stays below wrap'"):
        prove(Counter(bug=True), name="runner_counter_raise", mode="bmc", depth=15)


def test_cover_reports_reached_and_unreached():
    reached = prove(Counter(), name="runner_cover", mode="cover", depth=12)
    assert reached.reached == ["cover 'cover__count_at_top'"]
    missed = run_formal(Unreachable(), name="runner_unreachable", mode="cover", depth=4)
    assert missed.status == "FAIL"
    assert missed.failed == ["unreached cover 'cover__value_above_8'"]


def test_constant_tables_stay_logic_for_induction():
    # Fails by induction if the table became a ROM whose contents the induction step can choose.
    prove(Counter(table=True), name="runner_table", mode="prove", depth=2)


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="prove2"), r"Formal mode must be one of prove, bmc, cover, not 'prove2'"),
    (dict(depth=0), r"Formal depth must be a positive integer, not 0"),
    (dict(depth=True), r"Formal depth must be a positive integer, not True"),
    (dict(name="a-b"), r"Formal job name must be a Verilog identifier, not 'a-b'"),
])
def test_bad_arguments(kwargs, message):
    args = dict(name="runner_bad", mode="bmc", depth=2) | kwargs
    with pytest.raises(ValueError, match=message):
        run_formal(None, **args)  # arguments are checked before the design is used
