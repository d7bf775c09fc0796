"""Every format that crosses a block boundary, defined once.

Hardware, testbenches, the assembler and the models all import these layouts; nothing else
spells out bit offsets. Formats that depend on parameters are functions of the config.
"""

from amaranth.hdl import signed, unsigned
from amaranth.lib import data, enum

__all__ = ["Port", "Opcode", "header_layout", "flit_layout", "vector_layout"]


class Port(enum.Enum, shape=3):
    """The five router ports. Tile (x, y): x grows to the east, y grows to the south."""
    NORTH = 0
    EAST = 1
    SOUTH = 2
    WEST = 3
    LOCAL = 4


class Opcode(enum.Enum, shape=3):
    """Packet opcodes. Encodings 6 and 7 are invalid: such packets are dropped and counted."""
    WRITE = 0       # payload words are written at ``addr`` onwards in the destination tile
    READ_REQ = 1    # ask the destination to send words back (payload says where to)
    READ_RESP = 2   # the answer to a READ_REQ; written at ``addr`` like WRITE
    SIGNAL = 3      # increment semaphore ``addr`` of the destination tile
    NOTIFY = 4      # a message to the host (tile id and payload)
    CONTROL = 5     # start / reset a tile, from the host

    @classmethod
    def valid_values(cls):
        return {op.value for op in cls}


def header_layout(cfg):
    """The header flit of a packet (fills ``cfg.noc.flit_bits``; first field in the low bits).

    ``length`` counts the payload flits that follow the header; the last of them (or the
    header itself when ``length == 0``) has ``last`` set in :func:`flit_layout`. ``addr`` is a
    word address in the destination's address map or, for SIGNAL, a semaphore number.
    """
    coord = unsigned(cfg.coord_bits)
    fields = {
        "dst_x": coord, "dst_y": coord, "src_x": coord, "src_y": coord,
        "opcode": Opcode,
        "length": unsigned(cfg.noc.length_bits),
    }
    fields["addr"] = unsigned(cfg.noc.flit_bits - cfg.header_fixed_bits)
    return data.StructLayout(fields)


def flit_layout(cfg):
    """One flit on a link: ``data`` is a header (see :func:`header_layout`) or a payload word;
    ``last`` marks the tail flit of a packet."""
    return data.StructLayout({"data": unsigned(cfg.noc.flit_bits), "last": 1})


def vector_layout(lanes, elem_bits, *, is_signed=True):
    """``lanes`` elements of ``elem_bits`` each, element 0 in the low bits."""
    return data.ArrayLayout(signed(elem_bits) if is_signed else unsigned(elem_bits), lanes)
