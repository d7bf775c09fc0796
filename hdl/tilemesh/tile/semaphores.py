"""The tile's semaphores: ``SEMAPHORES`` saturating counters of ``SEM_BITS`` bits.

Incremented by SIGNAL packets (the NI), set by writes of the ``SEMn`` registers, decremented by
the controller's WAIT, cleared by RESET, through one shared datapath (a counter per semaphore
with its own adder would cost the area of the rest of the network interface).
"""

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..layouts import SEM_BITS, SEM_INDEX_BITS, SEMAPHORES
from .ports import sem_dec_layout, sem_overflow_layout, sem_value_layout

__all__ = ["sem_inc_layout", "sem_set_layout", "Semaphores"]


def sem_inc_layout():
    """An increment of semaphore ``sem`` by one (a SIGNAL packet)."""
    return data.StructLayout({"sem": unsigned(SEM_INDEX_BITS)})


def sem_set_layout():
    """A write of register ``SEMn``: semaphore ``sem`` becomes ``value``."""
    return data.StructLayout({"sem": unsigned(SEM_INDEX_BITS), "value": unsigned(SEM_BITS)})


class Semaphores(wiring.Component):
    """``SEMAPHORES`` counters of ``SEM_BITS`` bits.

    Increments (``inc``) and sets (``set``) are staged for one cycle, then applied together
    with the decrement (``dec``) of that cycle, through one shared datapath (one adder, one
    subtractor): a counter is incremented or set one cycle after the request, decremented in
    the cycle after ``dec``. The receive path sends at most one increment or set per cycle, the
    controller at most one decrement, so one datapath suffices.

    When the staged operation and the decrement hit the same counter, a staged increment and
    the decrement both take effect (WAIT consumes atomically with respect to concurrent
    signals); a staged set wins (the host raced the program). ``clear`` (RESET) zeroes every
    counter at once and drops a staged operation and a pending overflow event. An increment
    that would pass ``2**SEM_BITS - 1`` leaves the counter at that maximum and raises an
    ``overflow`` event; one event is held until taken, later overflows meanwhile are not
    reported (the controller stops on the first error anyway). A decrement larger than the
    counter (the controller never asks for one) leaves 0. Every input stream is always ready.

    Members
    -------
    value : ``Out(sem_value_layout())``
        The counters (registered).
    inc : ``In(stream.Signature(sem_inc_layout()))``
    set : ``In(stream.Signature(sem_set_layout()))``
        Not in the same cycle as ``inc``.
    dec : ``In(stream.Signature(sem_dec_layout()))``
        ``{sem, count}``: subtract ``count``.
    enough : ``Out(1)``
        Counter ``dec.payload.sem`` holds at least ``dec.payload.count`` (combinational, whatever
        ``dec.valid``): the controller's WAIT decides on it, so the counter multiplexer and the
        subtractor of the decrement also serve its comparison.
    clear : ``In(1)``
        RESET: zero every counter.
    overflow : ``Out(stream.Signature(sem_overflow_layout()))``
        ``{sem}`` of an increment that saturated (``ErrorCode.SEM_OVERFLOW``).
    """

    def __init__(self):
        super().__init__({
            "value": Out(sem_value_layout()),
            "inc": In(stream.Signature(sem_inc_layout())),
            "set": In(stream.Signature(sem_set_layout())),
            "dec": In(stream.Signature(sem_dec_layout())),
            "enough": Out(1),
            "clear": In(1),
            "overflow": Out(stream.Signature(sem_overflow_layout())),
        })

    def elaborate(self, platform):
        m = Module()
        top = (1 << SEM_BITS) - 1
        m.d.comb += [self.inc.ready.eq(1), self.set.ready.eq(1), self.dec.ready.eq(1)]

        counters = [Signal(SEM_BITS, name=f"sem{i}") for i in range(SEMAPHORES)]
        m.d.comb += [self.value[i].eq(c) for i, c in enumerate(counters)]

        def read(index, name):
            out = Signal(SEM_BITS, name=name)
            with m.Switch(index):
                for i, c in enumerate(counters):
                    with m.Case(i):
                        m.d.comb += out.eq(c)
            return out

        # stage: the increment or set of the last cycle
        s_inc = Signal()
        s_set = Signal()
        s_sem = Signal(SEM_INDEX_BITS)
        s_value = Signal(SEM_BITS)
        m.d.sync += [
            s_inc.eq(self.inc.valid & ~self.clear),
            s_set.eq(self.set.valid & ~self.inc.valid & ~self.clear),
            s_sem.eq(Mux(self.inc.valid, self.inc.payload.sem, self.set.payload.sem)),
            s_value.eq(self.set.payload.value),
        ]

        dec = self.dec
        d_sem, d_count = dec.payload.sem, dec.payload.count
        same = Signal()
        m.d.comb += same.eq(dec.valid & (d_sem == s_sem))

        # decrement: counter - count, or 0 if count is larger
        less = Signal(SEM_BITS + 1)
        after_dec = Signal(SEM_BITS)
        m.d.comb += [
            less.eq(read(d_sem, "dec_before") - d_count),
            after_dec.eq(Mux(less[SEM_BITS], 0, less[:SEM_BITS])),
            self.enough.eq(~less[SEM_BITS]),
        ]
        # staged operation: a set, or an increment on top of the decrement when both hit one
        # counter
        bumped = Signal(SEM_BITS + 1)
        staged = Signal(SEM_BITS)
        saturated = Signal()
        # Both increments are formed before ``same`` (which waits for the controller's WAIT
        # decision, late in the cycle) picks one: no adder after it.
        m.d.comb += [
            bumped.eq(Mux(same, after_dec + 1, read(s_sem, "inc_before") + 1)),
            saturated.eq(s_inc & bumped[SEM_BITS]),
            staged.eq(Mux(s_set, s_value, Mux(bumped[SEM_BITS], top, bumped[:SEM_BITS]))),
        ]

        # Per counter: zero, the staged result or the decrement result, else hold (a flip-flop
        # enable): one LUT per bit.
        for i, c in enumerate(counters):
            with m.If(self.clear):
                m.d.sync += c.eq(0)
            with m.Elif((s_inc | s_set) & (s_sem == i)):
                m.d.sync += c.eq(staged)
            with m.Elif(dec.valid & (d_sem == i)):
                m.d.sync += c.eq(after_dec)

        ov = self.overflow
        with m.If(self.clear):
            m.d.sync += ov.valid.eq(0)
        with m.Elif(saturated & (~ov.valid | ov.ready)):
            m.d.sync += [ov.valid.eq(1), ov.payload.sem.eq(s_sem)]
        with m.Elif(ov.ready):
            m.d.sync += ov.valid.eq(0)
        return m
