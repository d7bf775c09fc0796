"""Output arbitration of the router, in one place.

The router asks its arbiter class for one arbiter per output port; a different policy (for
example age-based or weighted) is a different class with the same ports, passed as
``Router(..., arbiter=...)`` or made the default here.
"""

from amaranth.hdl import C, Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from . import _refuse

__all__ = ["RoundRobinArbiter", "DEFAULT_ARBITER"]


class RoundRobinArbiter(wiring.Component):
    """Round-robin arbiter: the requester granted last has the lowest priority next.

    The grant is combinational, so a request can be granted in the cycle it appears. The
    priority moves only when the owner of the arbiter says the grant was used (``advance``),
    so a requester that is granted but cannot proceed (its output is still busy) keeps its turn.
    Any requester that keeps requesting is granted before any other requester is granted twice.

    Parameters
    ----------
    n : int
        Number of requesters, at least 1.

    Members
    -------
    requests : ``In(n)``
        Bit ``i`` set when requester ``i`` wants the resource.
    grant : ``Out(n)``
        One-hot: the requester that wins this cycle (zero when no requests).
    advance : ``In(1)``
        The grant was used this cycle: the winner becomes the lowest priority from the next cycle.

    Raises
    ------
    ValueError
        If ``n`` is not an integer of at least 1.
    """

    def __init__(self, n):
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            _refuse(self, f"arbiter requester count must be an integer of at least 1, "
                             f"not {n!r}")
        self._n = n
        super().__init__({"requests": In(n), "grant": Out(n), "advance": In(1)})

    @property
    def n(self):
        return self._n

    def elaborate(self, platform):
        m = Module()
        n = self._n
        # Index of the requester granted last; requester 0 has the highest priority first.
        last = Signal(range(n), init=n - 1)
        later = Signal(n)   # requests from requesters after `last`
        # (requester 0 never comes after `last`: a constant 0, not an unsigned compare with 0)
        m.d.comb += later.eq(self.requests & Cat(C(0, 1), *(last < j for j in range(1, n))))
        # The first requester after `last`, else the first requester at all. Plain logic, not
        # an adder's carry chain (x & -x), so the grant is a few LUT levels deep.
        for i in range(n):
            first_later = later[i] & ~later[:i].any() if i else later[i]
            first = self.requests[i] & ~self.requests[:i].any() if i else self.requests[i]
            m.d.comb += self.grant[i].eq(Mux(later.any(), first_later, first))
        with m.If(self.advance):
            for i in range(n):
                with m.If(self.grant[i]):
                    m.d.sync += last.eq(i)
        return m


# The policy the router uses unless told otherwise: change it here to change every router.
DEFAULT_ARBITER = RoundRobinArbiter
