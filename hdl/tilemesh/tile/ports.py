"""Internal interfaces between the blocks of a tile (docs/tile-design.md §1).

Owned by T1 (NI, SRAM array, semaphores, CSRs); T2 (controller, DMA engine, tile) and T3
(matrix / SIMD engines) code against these. Additions are fine at any time; a change to an
existing definition is announced in the log below.

Change log (newest first):
- T1: ``dma_ni_signature`` has ``resp_awaited`` (DMA -> NI): a READ_RESP arriving while it is 0
  is dropped and counted (stray, e.g. after RESET). A DMA packet started on ``tx`` must be
  finished, also on abort (the NI's transmit arbiter holds net_out until its ``last``).
- T1: the SRAM client layouts are ``sram_client_*_layout(cfg)`` (``layouts.sram_*_layout`` are
  the bank's own, with other parameters).
"""

from amaranth.hdl import unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import bits_for
from ..layouts import (
    ADDR_BITS,
    SEM_BITS,
    SEM_INDEX_BITS,
    SEMAPHORES,
    InstrArgs,
    InstrOp,
    flit_layout,
)

__all__ = [
    "sram_client_read_req_layout", "sram_client_read_resp_layout", "sram_client_write_layout",
    "sram_client_signature",
    "unit_command_layout",
    "imem_addr_bits", "imem_write_layout",
    "sem_value_layout", "sem_dec_layout", "sem_overflow_layout",
    "dma_ni_signature",
]


# -- 1. SRAM client port ------------------------------------------------------------------------
# Addresses are global SRAM word addresses (bank = addr // sram_depth); ADDR_BITS wide so that
# any client can pass an instruction's address field straight through. Addresses at or beyond
# cfg.tile.sram_words are range-checked by the clients first; should one slip through, the array
# drops the write and answers the read with 0 (it never hangs).

def sram_client_read_req_layout(cfg):
    """A read request of an SRAM client: the global word address."""
    return data.StructLayout({"addr": unsigned(ADDR_BITS)})


def sram_client_read_resp_layout(cfg):
    """A read response to an SRAM client (in request order, per client)."""
    return data.StructLayout({"data": unsigned(cfg.word_bits)})


def sram_client_write_layout(cfg):
    """A write of an SRAM client: global word address and the word."""
    return data.StructLayout({"addr": unsigned(ADDR_BITS), "data": unsigned(cfg.word_bits)})


def sram_client_signature(cfg):
    """One client of :class:`~tilemesh.tile.sram_array.SramArray`, from the client's view.

    Members
    -------
    read_req : ``Out(stream.Signature(sram_client_read_req_layout(cfg)))``
    read_resp : ``In(stream.Signature(sram_client_read_resp_layout(cfg)))``
        Responses come back in request order; the client may apply backpressure.
    write : ``Out(stream.Signature(sram_client_write_layout(cfg)))``
    """
    return wiring.Signature({
        "read_req": Out(stream.Signature(sram_client_read_req_layout(cfg))),
        "read_resp": In(stream.Signature(sram_client_read_resp_layout(cfg))),
        "write": Out(stream.Signature(sram_client_write_layout(cfg))),
    })


# -- 2. Unit command streams (controller -> DMA / SIMD engine) ----------------------------------
# The matrix engine takes a plain MatmulInstr. Address registers are already resolved: the
# offset field holds the sum and the *_ar field is 0.

def unit_command_layout():
    """Command to the DMA engine (DMA_WRITE, DMA_READ, SIGNAL, NOTIFY) or to the SIMD engine
    (SIMD, SIMD_CFG): the opcode and the instruction's operands."""
    return data.StructLayout({"op": InstrOp, "args": InstrArgs})


# -- 5. Controller <-> NI: instruction memory writes --------------------------------------------

def imem_addr_bits(cfg):
    """Bits of an IMEM-space word address (``imem_depth * instr_words(cfg)`` words)."""
    return bits_for(cfg.imem_words - 1)


def imem_write_layout(cfg):
    """An IMEM write from the NI to the controller: word ``addr`` of the IMEM space (instruction
    ``addr // instr_words(cfg)``, part ``addr % instr_words(cfg)``, part 0 = low bits)."""
    return data.StructLayout({"addr": unsigned(imem_addr_bits(cfg)),
                              "data": unsigned(cfg.word_bits)})


# -- 4. Semaphores (NI -> controller) -----------------------------------------------------------

def sem_value_layout():
    """All semaphore values, semaphore ``i`` at element ``i``."""
    return data.ArrayLayout(unsigned(SEM_BITS), SEMAPHORES)


def sem_dec_layout():
    """WAIT's decrement: subtract ``count`` from semaphore ``sem`` (only requested when
    value >= count; applied atomically with a same-cycle increment)."""
    return data.StructLayout({"sem": unsigned(SEM_INDEX_BITS), "count": unsigned(SEM_BITS)})


def sem_overflow_layout():
    """A semaphore increment that saturated (ErrorCode.SEM_OVERFLOW)."""
    return data.StructLayout({"sem": unsigned(SEM_INDEX_BITS)})


# -- 3. NI <-> DMA engine -----------------------------------------------------------------------

def dma_ni_signature(cfg):
    """The DMA engine's side of its link with the NI, from the DMA engine's view.

    Members
    -------
    tx : ``Out(stream.Signature(flit_layout(cfg)))``
        Whole packets (header, payload, ``last`` on the tail); the NI holds the packet from
        header to tail on its transmit arbiter, so a started packet must be finished, also on
        ``abort`` (finish it, padding with zeros if need be): a truncated packet would hold
        the tile's network output forever.
    resp_word : ``In(1)``
        Pulse: one READ_RESP word for this tile was written into SRAM.
    resp_done : ``In(1)``
        Pulse: the tail word of a READ_RESP was written (comes with its ``resp_word``).
    resp_awaited : ``Out(1)``
        The DMA engine awaits READ_RESP words (a READ_REQ of it is outstanding); a READ_RESP
        arriving while this is 0 is dropped and counted in RX_ERRORS (stray, e.g. after RESET).
    """
    return wiring.Signature({
        "tx": Out(stream.Signature(flit_layout(cfg))),
        "resp_word": In(1),
        "resp_done": In(1),
        "resp_awaited": Out(1),
    })


# -- 5. Controller -> NI / CSRs: status (appended by T2) ----------------------------------------

__all__ += ["COUNTER_NAMES", "controller_status_layout"]

#: The controller's 32-bit cycle counters, named as their CSRs (lower case), in CSR order.
COUNTER_NAMES = ("cycles", "stall_cycles", "dma_busy", "matmul_busy", "simd_busy",
                 "matmul_steps")


def controller_status_layout(cfg):
    """What the controller shows the CSRs (docs/tile-design.md §2, CSR table).

    Members
    -------
    status : ``StatusReg``
        The STATUS register: TileState and the unit busy flags (a busy flag covers the unit's
        queue and the unit; ``dma_busy`` includes awaited read data).
    pc : ``unsigned(PC_BITS)``
        PC: the next instruction to issue (in HALTED: the HALT; in ERROR: the failing one).
    error : ``ErrorReg``
        ERROR: the first error since RESET and its pc.
    wait_sem, wait_count :
        WAIT_SEM / WAIT_COUNT: what the WAIT being issued needs (meaningful in WAITING).
    ar : ``ArrayLayout(unsigned(ADDR_BITS), 3)``
        AR1..AR3 (element 0 is ar1).
    cycles, stall_cycles, dma_busy, matmul_busy, simd_busy, matmul_steps : ``unsigned(32)``
        The counters of :data:`COUNTER_NAMES` (wrapping; cleared by RESET only).
    """
    from ..layouts import ADDR_REGS, PC_BITS, ErrorReg, StatusReg
    fields = {
        "status": StatusReg,
        "pc": unsigned(PC_BITS),
        "error": ErrorReg,
        "wait_sem": unsigned(SEM_INDEX_BITS),
        "wait_count": unsigned(SEM_BITS),
        "ar": data.ArrayLayout(unsigned(ADDR_BITS), ADDR_REGS - 1),
    }
    fields.update({name: unsigned(32) for name in COUNTER_NAMES})
    return data.StructLayout(fields)
