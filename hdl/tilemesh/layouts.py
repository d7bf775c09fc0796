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


# -- SIMD unit ----------------------------------------------------------------------------------

__all__ += ["SimdOp", "SIMD_SCALE_BITS", "simd_shift_bits", "simd_in_layout", "simd_out_layout",
            "sram_addr_bits", "sram_read_req_layout", "sram_read_resp_layout",
            "sram_write_layout"]

SIMD_SCALE_BITS = 16  # default width of the signed REQUANT multiplier (a Q15-style scale)


class SimdOp(enum.Enum, shape=4):
    """SIMD operations; exact semantics in ``tilemesh.model.reference.simd`` (docs/simd.md).

    Encodings 9..15 are invalid: the unit passes ``x`` through and sets ``error`` on that beat.
    """
    ADD = 0       # wrap(x + y)
    SUB = 1       # wrap(x - y)
    MUL = 2       # wrap(x * y)
    MIN = 3       # min(x, y)
    MAX = 4       # max(x, y)
    RELU = 5      # max(x, 0)
    SHR = 6       # x / 2**shift, rounded half away from zero
    SAT = 7       # clamp x to the signed range of out_bits
    REQUANT = 8   # sat_out(round(x * scale / 2**shift) + zero_point)

    @classmethod
    def valid_values(cls):
        return {op.value for op in cls}


def simd_shift_bits(acc_bits, scale_bits=SIMD_SCALE_BITS):
    """Width of the SIMD ``shift`` field: it reaches ``acc_bits + scale_bits``, a shift that
    leaves no bit of any REQUANT product (every larger encoding gives the same result)."""
    return (acc_bits + scale_bits).bit_length()


def simd_in_layout(lanes, acc_bits, *, scale_bits=SIMD_SCALE_BITS):
    """One SIMD input beat: two vectors of ``lanes`` signed ``acc_bits`` elements, the operation
    and its scalar parameters (the same for every lane of the beat).

    ``broadcast`` replaces every lane of ``y`` by ``y[0]`` (scalar operand / bias add).
    ``shift`` (unsigned) is used by SHR and REQUANT, ``scale`` (signed ``scale_bits``) and
    ``zero_point`` (signed ``acc_bits``) by REQUANT only.
    """
    vec = vector_layout(lanes, acc_bits)
    return data.StructLayout({
        "x": vec, "y": vec,
        "op": SimdOp,
        "broadcast": 1,
        "shift": unsigned(simd_shift_bits(acc_bits, scale_bits)),
        "scale": signed(scale_bits),
        "zero_point": signed(acc_bits),
    })


def simd_out_layout(lanes, acc_bits):
    """One SIMD result beat: ``data`` (``lanes`` signed ``acc_bits``; SAT/REQUANT results are
    sign-extended from ``out_bits``) and ``error``, set when the beat's op was invalid."""
    return data.StructLayout({"data": vector_layout(lanes, acc_bits), "error": 1})


# -- SRAM bank ----------------------------------------------------------------------------------

def sram_addr_bits(depth):
    """Address width of an SRAM bank of ``depth`` words (a power of two)."""
    return max(1, (depth - 1).bit_length())


def sram_read_req_layout(depth, tag_bits=0):
    """A read request: word address, and an optional ``tag`` returned with the data (an arbiter
    in front of the bank uses it to route the response back to its client)."""
    fields = {"addr": unsigned(sram_addr_bits(depth))}
    if tag_bits:
        fields["tag"] = unsigned(tag_bits)
    return data.StructLayout(fields)


def sram_read_resp_layout(width, tag_bits=0):
    """A read response: the word, and the request's ``tag`` when the bank has one."""
    fields = {"data": unsigned(width)}
    if tag_bits:
        fields["tag"] = unsigned(tag_bits)
    return data.StructLayout(fields)


def sram_write_layout(width, depth):
    """A write: word address and data."""
    return data.StructLayout({"addr": unsigned(sram_addr_bits(depth)), "data": unsigned(width)})


# -- Matrix unit --------------------------------------------------------------------------------

__all__ += ["matrix_elem_shape", "matrix_a_layout", "matrix_b_layout", "matrix_c_layout"]


def matrix_elem_shape(elem):
    """The shape of a matrix element: ``elem`` is a bit count (a signed integer of that width)
    or any shape (for a later number format such as BF16)."""
    return signed(elem) if isinstance(elem, int) else elem


def matrix_a_layout(rows, elem):
    """One step of the matrix unit's ``a`` stream: column k of the A block (``data[i]`` is
    A[i, k]); ``first`` clears the accumulators for this output tile, ``last`` ends the tile."""
    return data.StructLayout({"data": data.ArrayLayout(matrix_elem_shape(elem), rows),
                              "first": 1, "last": 1})


def matrix_b_layout(cols, elem):
    """One step of the matrix unit's ``b`` stream: row k of the B block (``[j]`` is B[k, j])."""
    return data.ArrayLayout(matrix_elem_shape(elem), cols)


def matrix_c_layout(cols, acc):
    """One beat of the matrix unit's ``c`` stream: a row of the C tile (``data[j]`` is C[i, j]),
    rows in order; ``last`` is set on the tile's last row."""
    return data.StructLayout({"data": data.ArrayLayout(matrix_elem_shape(acc), cols), "last": 1})


# -- Instruction set ----------------------------------------------------------------------------
# The tile controller's instructions, the packets a tile understands and its address map: the
# contract of docs/tile-design.md, shared by the controller, the assembler
# (tilemesh.compiler.assembler), the compiler and the models.
#
# An instruction is one INSTR_BITS word: ``op`` (InstrOp) in the low 4 bits, then the operands
# of that kind (a union). Field widths are fixed, sized for the largest MeshConfig (32 x 32
# tiles, 16 banks x 65536 SRAM words, 4096 instructions), so one encoding, one assembler and one
# disassembler serve every configuration; the assembler checks values against a given config and
# the controller checks them again at issue (ErrorCode).

__all__ += [
    "INSTR_BITS", "ISA_VERSION", "ADDR_BITS", "COORD_FIELD_BITS", "PC_BITS", "COUNT_BITS",
    "FOLD_BITS", "SEMAPHORES", "SEM_INDEX_BITS", "SEM_BITS", "LOOP_DEPTH", "ADDR_REGS", "AR_BITS",
    "SHIFT_BITS", "InstrOp", "Unit", "INSTR_UNIT", "INSTR_ARGS", "ElemFormat", "YMode", "ArMode",
    "DmaInstr", "MatmulInstr", "SimdInstr", "SimdCfgInstr", "SignalInstr", "WaitInstr",
    "NotifyInstr", "FenceInstr", "LoopInstr", "ArInstr", "InstrArgs", "InstrWord",
    "packed_words", "matmul_operand_words", "simd_vector_words", "instr_words",
    "Space", "tile_addr_layout", "ControlCommand", "ControlPayload", "read_req_layout",
    "read_queue_depth",
    "NotifyKind", "NotifyPayload", "payload_flits", "TileState", "ErrorCode", "ERROR_TEXT",
    "StatusReg", "ErrorReg", "TileIdReg", "Csr", "csr_map", "check_address_map",
]

INSTR_BITS = 128       # every instruction, whatever the configuration
ISA_VERSION = 1        # readable in the ISA control register; bump on any encoding change
ADDR_BITS = 20         # SRAM word address fields: up to 16 banks x 65536 words
COORD_FIELD_BITS = 5   # tile coordinate fields: meshes up to 32 x 32
PC_BITS = 12           # instruction index: imem_depth up to 4096
COUNT_BITS = 12        # DMA rows/cols, SIMD vectors, MATMUL k steps, LOOP body length
FOLD_BITS = 8          # MATMUL output folds along M and N
SEMAPHORES = 16        # semaphore counters per tile
SEM_INDEX_BITS = 4     # log2(SEMAPHORES)
SEM_BITS = 16          # width of a semaphore counter (saturates: ErrorCode.SEM_OVERFLOW)
LOOP_DEPTH = 4         # nested LOOPs the controller tracks
ADDR_REGS = 4          # address registers ar0..ar3; ar0 always reads as zero
AR_BITS = 2            # address register selector
SHIFT_BITS = 7         # SIMD shift: reaches acc_bits + SIMD_SCALE_BITS for acc_bits up to 64


class InstrOp(enum.Enum, shape=4):
    """Instruction opcodes (``InstrWord.op``). 13..15 are invalid: ``ErrorCode.BAD_OPCODE``.

    HALT is 0 so that an all-zero (never loaded) instruction memory stops the tile cleanly.
    """
    HALT = 0
    NOP = 1
    DMA_WRITE = 2
    DMA_READ = 3
    MATMUL = 4
    SIMD = 5
    SIMD_CFG = 6
    SIGNAL = 7
    WAIT = 8
    NOTIFY = 9
    FENCE = 10
    LOOP = 11
    AR = 12

    @classmethod
    def valid_values(cls):
        return {op.value for op in cls}


class Unit(enum.Enum, shape=2):
    """Where an instruction executes: in the controller itself, or queued (in order) to a unit."""
    CONTROLLER = 0
    DMA = 1
    MATRIX = 2
    SIMD = 3


# SIGNAL and NOTIFY go through the DMA queue so that they leave after the data of every earlier
# DMA: a tile that sees the signal also sees the data (XY routes keep per-pair order).
INSTR_UNIT = {
    InstrOp.HALT: Unit.CONTROLLER, InstrOp.NOP: Unit.CONTROLLER,
    InstrOp.DMA_WRITE: Unit.DMA, InstrOp.DMA_READ: Unit.DMA,
    InstrOp.MATMUL: Unit.MATRIX,
    InstrOp.SIMD: Unit.SIMD, InstrOp.SIMD_CFG: Unit.SIMD,
    InstrOp.SIGNAL: Unit.DMA, InstrOp.NOTIFY: Unit.DMA,
    InstrOp.WAIT: Unit.CONTROLLER, InstrOp.FENCE: Unit.CONTROLLER,
    InstrOp.LOOP: Unit.CONTROLLER, InstrOp.AR: Unit.CONTROLLER,
}


class ElemFormat(enum.Enum, shape=1):
    """Element width of a SIMD operand in SRAM: ``acc_bits`` or ``data_bits`` (loads sign-extend
    to ``acc_bits``; stores keep the low ``data_bits``, so SAT/REQUANT first)."""
    ACC = 0
    DATA = 1


class YMode(enum.Enum, shape=2):
    """How a SIMD instruction reads its ``y`` operand."""
    VECTOR = 0  # one y vector per x vector, consecutive
    REPEAT = 1  # the same y vector for every x vector (per-column bias)
    SCALAR = 2  # element 0 of the y vector, in every lane of every vector
    NONE = 3    # y is not read; the unit sees zeros (unary ops)


class ArMode(enum.Enum, shape=1):
    """AR instruction: set an address register, or add a signed value to it (mod 2**ADDR_BITS)."""
    SET = 0
    ADD = 1


class DmaInstr(data.Struct):
    """Operands of DMA_WRITE (local -> remote) and DMA_READ (remote -> local).

    Copies ``rows`` x ``cols`` words: word ``c`` of row ``r`` is local word
    ``local + ar[local_ar] + r * local_stride + c`` and remote word
    ``remote + ar[remote_ar] + r * remote_stride + c`` of tile (``x``, ``y``) or, with ``host``
    (DMA_WRITE only), of the host. With ``signal``, semaphore ``sem`` is incremented once the
    whole block has landed: at the remote tile (or the host) for a write, locally for a read.
    """
    local: unsigned(ADDR_BITS)
    local_ar: unsigned(AR_BITS)
    remote: unsigned(ADDR_BITS)
    remote_ar: unsigned(AR_BITS)
    rows: unsigned(COUNT_BITS)
    cols: unsigned(COUNT_BITS)
    local_stride: unsigned(ADDR_BITS)
    remote_stride: unsigned(ADDR_BITS)
    x: unsigned(COORD_FIELD_BITS)
    y: unsigned(COORD_FIELD_BITS)
    host: 1
    signal: 1
    sem: unsigned(SEM_INDEX_BITS)


class MatmulInstr(data.Struct):
    """Operands of MATMUL: ``m_folds`` x ``n_folds`` output tiles of the R x C array, each over
    ``k`` steps; operand layout in docs/tile-design.md (see :func:`matmul_operand_words`).

    ``first`` clears the accumulators before the first step, ``last`` drains the results to C
    after the last step (else they stay in the array for the next MATMUL: K-chunking). ``acc``
    adds the results to C in SRAM (wrapping at ``acc_bits``) instead of overwriting it.
    """
    a: unsigned(ADDR_BITS)
    a_ar: unsigned(AR_BITS)
    b: unsigned(ADDR_BITS)
    b_ar: unsigned(AR_BITS)
    c: unsigned(ADDR_BITS)
    c_ar: unsigned(AR_BITS)
    c_stride: unsigned(ADDR_BITS)
    k: unsigned(COUNT_BITS)
    m_folds: unsigned(FOLD_BITS)
    n_folds: unsigned(FOLD_BITS)
    first: 1
    last: 1
    acc: 1


class SimdInstr(data.Struct):
    """Operands of SIMD: ``func`` over ``count`` vectors of ``simd_lanes`` elements, x and y from
    SRAM, result to ``d`` (see :func:`simd_vector_words`). ``shift`` feeds SHR and REQUANT
    (clamped to the unit's largest shift, which gives the same result); REQUANT's scale and
    zero point come from the last SIMD_CFG."""
    x: unsigned(ADDR_BITS)
    x_ar: unsigned(AR_BITS)
    y: unsigned(ADDR_BITS)
    y_ar: unsigned(AR_BITS)
    d: unsigned(ADDR_BITS)
    d_ar: unsigned(AR_BITS)
    count: unsigned(COUNT_BITS)
    func: SimdOp
    ymode: YMode
    xfmt: ElemFormat
    yfmt: ElemFormat
    dfmt: ElemFormat
    shift: unsigned(SHIFT_BITS)


class SimdCfgInstr(data.Struct):
    """Operands of SIMD_CFG: REQUANT parameters for the SIMD instructions that follow it.
    ``zero_point`` is taken modulo 2**acc_bits (two's complement)."""
    scale: signed(SIMD_SCALE_BITS)
    zero_point: signed(32)


class SignalInstr(data.Struct):
    """Operands of SIGNAL: increment semaphore ``sem`` of this tile (``local``) or of tile
    (``x``, ``y``)."""
    sem: unsigned(SEM_INDEX_BITS)
    x: unsigned(COORD_FIELD_BITS)
    y: unsigned(COORD_FIELD_BITS)
    local: 1


class WaitInstr(data.Struct):
    """Operands of WAIT: block until semaphore ``sem`` >= ``count``, then subtract ``count``."""
    sem: unsigned(SEM_INDEX_BITS)
    count: unsigned(SEM_BITS)


class NotifyInstr(data.Struct):
    """Operands of NOTIFY: send a :class:`NotifyPayload` (kind PROGRAM) to the host."""
    code: unsigned(16)
    value: unsigned(32)


class FenceInstr(data.Struct):
    """Operands of FENCE: block issue until each selected unit's queue is empty and it is idle."""
    dma: 1
    matmul: 1
    simd: 1


class LoopInstr(data.Struct):
    """Operands of LOOP: run the next ``len`` instructions ``count`` times."""
    count: unsigned(16)
    len: unsigned(COUNT_BITS)


class ArInstr(data.Struct):
    """Operands of AR: ``ar[reg] = value`` (SET) or ``ar[reg] += value`` (ADD), mod 2**ADDR_BITS."""
    reg: unsigned(AR_BITS)
    mode: ArMode
    value: signed(ADDR_BITS + 1)


class InstrArgs(data.Union):
    """The operands of an instruction; which member is meaningful depends on ``InstrWord.op``
    (:data:`INSTR_ARGS`). Bits a member does not cover are ignored and written as zero."""
    dma: DmaInstr
    matmul: MatmulInstr
    simd: SimdInstr
    simd_cfg: SimdCfgInstr
    signal: SignalInstr
    wait: WaitInstr
    notify: NotifyInstr
    fence: FenceInstr
    loop: LoopInstr
    ar: ArInstr
    raw: unsigned(INSTR_BITS - 4)


class InstrWord(data.Struct):
    """One instruction: ``op`` in the low bits, then its operands. ``INSTR_BITS`` wide."""
    op: InstrOp
    args: InstrArgs


# Which member of InstrArgs each opcode uses (None: no operands).
INSTR_ARGS = {
    InstrOp.HALT: None, InstrOp.NOP: None,
    InstrOp.DMA_WRITE: "dma", InstrOp.DMA_READ: "dma", InstrOp.MATMUL: "matmul",
    InstrOp.SIMD: "simd", InstrOp.SIMD_CFG: "simd_cfg", InstrOp.SIGNAL: "signal",
    InstrOp.WAIT: "wait", InstrOp.NOTIFY: "notify", InstrOp.FENCE: "fence",
    InstrOp.LOOP: "loop", InstrOp.AR: "ar",
}


def packed_words(n, elem_bits, word_bits):
    """SRAM words holding a vector of ``n`` elements of ``elem_bits``: the elements are
    concatenated (element 0 in the low bits of the first word) and padded up to whole words."""
    return -(-n * elem_bits // word_bits)


def matmul_operand_words(cfg):
    """Words per MATMUL operand vector: ``a`` (an A column, ``pe_rows`` data elements), ``b``
    (a B row, ``pe_cols`` data elements) and ``c`` (a C row, ``pe_cols`` accumulators)."""
    t, w = cfg.tile, cfg.word_bits
    return {"a": packed_words(t.pe_rows, t.data_bits, w),
            "b": packed_words(t.pe_cols, t.data_bits, w),
            "c": packed_words(t.pe_cols, t.acc_bits, w)}


def simd_vector_words(cfg, fmt):
    """Words per SIMD vector (``simd_lanes`` elements) in :class:`ElemFormat` ``fmt``."""
    bits = cfg.tile.acc_bits if ElemFormat(fmt) == ElemFormat.ACC else cfg.tile.data_bits
    return packed_words(cfg.tile.simd_lanes, bits, cfg.word_bits)


def instr_words(cfg):
    """Address-map words per instruction: an instruction is loaded as this many consecutive
    words of ``cfg.word_bits``, the low bits first."""
    return -(-INSTR_BITS // cfg.word_bits)


class Space(enum.Enum, shape=2):
    """The top two bits of a tile address: which memory the word address selects. 3 is unmapped
    (writes are dropped and reads answer zeros, both counted in RX_ERRORS)."""
    SRAM = 0
    IMEM = 1
    CSR = 2


def tile_addr_layout(cfg):
    """A tile address (``cfg.tile_addr_bits``): ``word`` within the ``space``.

    SRAM word ``w`` is in bank ``w // sram_depth``; IMEM word ``w`` is part ``w % instr_words``
    of instruction ``w // instr_words``; CSR words are listed by :func:`csr_map`.
    """
    return data.StructLayout({"word": unsigned(cfg.tile_addr_bits - 2), "space": Space})


class ControlCommand(enum.Enum, shape=2):
    """What a CONTROL packet (or a write of the CONTROL register) asks of a tile."""
    NONE = 0   # no effect
    START = 1  # run from ``pc`` (only from IDLE or HALTED; otherwise ignored, RX_ERRORS counts)
    RESET = 2  # abort everything, clear semaphores, registers, counters and errors: IDLE


class ControlPayload(data.Struct):
    """Payload of a CONTROL packet (one flit) and the value written to the CONTROL register."""
    command: ControlCommand
    pc: unsigned(PC_BITS)


def read_queue_depth(cfg):
    """READ_REQs a tile's network interface must be able to hold without stalling its network
    input: one per possible requester (every tile and the host), each of which keeps at most
    one READ_REQ outstanding per responder. The input then never waits on the output, so reads
    cannot deadlock the single network (docs/tile-design.md, "Protocol deadlock")."""
    return cfg.tiles + 1


def read_req_layout(cfg):
    """Payload of a READ_REQ packet (one flit). The header's ``addr`` is the first word to read;
    the answer is one READ_RESP packet of ``count`` words (1..max_packet_flits) sent to the
    requester (the header's ``src_x``/``src_y``) with ``reply_addr`` as its ``addr``."""
    return data.StructLayout({"reply_addr": unsigned(cfg.tile_addr_bits),
                              "count": unsigned(cfg.noc.length_bits)})


class NotifyKind(enum.Enum, shape=4):
    """Who sent a NOTIFY packet."""
    PROGRAM = 0  # a NOTIFY instruction: code and value from the instruction
    ERROR = 1    # the controller stopped: code is the ErrorCode; value is the semaphore for
                 # SEM_OVERFLOW, else the low 32 bits of the instruction at pc


class NotifyPayload(data.Struct):
    """Payload of a NOTIFY packet (64 bits in :func:`payload_flits` flits, low bits first);
    the header's ``src_x``/``src_y`` name the tile and ``addr`` is 0."""
    value: unsigned(32)
    code: unsigned(16)
    pc: unsigned(PC_BITS)
    kind: NotifyKind


def payload_flits(layout, cfg):
    """Flits carrying a payload of ``layout`` (low bits in the first flit)."""
    return -(-_shape_bits(layout) // cfg.noc.flit_bits)


class TileState(enum.Enum, shape=3):
    """The controller's state, in the STATUS register."""
    IDLE = 0     # after reset; never started
    RUNNING = 1  # issuing instructions
    WAITING = 2  # in a WAIT: WAIT_SEM / WAIT_COUNT say on what
    BLOCKED = 3  # in a FENCE, a HALT draining the units, or issue held by a full unit queue
    HALTED = 4   # executed HALT and every unit is idle
    ERROR = 5    # stopped on an error (ERROR register); RESET to leave


class ErrorCode(enum.Enum, shape=4):
    """Why a controller stopped (ERROR register, NOTIFY kind ERROR). See :data:`ERROR_TEXT`."""
    NONE = 0
    BAD_OPCODE = 1
    BAD_OPERAND = 2
    SRAM_RANGE = 3
    OFF_MESH = 4
    MATMUL_CHAIN = 5
    LOOP_NEST = 6
    PC_RANGE = 7
    SEM_OVERFLOW = 8
    TIMEOUT = 9


ERROR_TEXT = {
    ErrorCode.NONE: "no error",
    ErrorCode.BAD_OPCODE: "the instruction's opcode is not an InstrOp (13..15)",
    ErrorCode.BAD_OPERAND: "a zero count (DMA rows/cols, MATMUL k/folds, SIMD count, LOOP "
                           "count/len), MATMUL folds > 1 without first and last, an invalid SIMD "
                           "func, DMA_READ from the host, or AR of ar0",
    ErrorCode.SRAM_RANGE: "an SRAM block (after adding its address register) reaches past the "
                          "last SRAM word, locally or at the remote tile",
    ErrorCode.OFF_MESH: "DMA or SIGNAL to a tile that is not on the mesh",
    ErrorCode.MATMUL_CHAIN: "MATMUL with first=0 while no accumulation is open, or first=1 while "
                            "one is open (the previous MATMUL had last=0)",
    ErrorCode.LOOP_NEST: "a LOOP nested deeper than LOOP_DEPTH, or whose body ends after the "
                         "enclosing loop's body or after the instruction memory",
    ErrorCode.PC_RANGE: "the program ran past the last instruction of the instruction memory",
    ErrorCode.SEM_OVERFLOW: "a semaphore increment would pass 2**SEM_BITS - 1 (it saturates)",
    ErrorCode.TIMEOUT: "issue was blocked (WAITING or BLOCKED) for more than TIMEOUT cycles",
}


class StatusReg(data.Struct):
    """The STATUS register."""
    state: TileState
    dma_busy: 1     # the DMA queue holds work or a DMA is in flight (incl. awaited read data)
    matmul_busy: 1
    simd_busy: 1


class ErrorReg(data.Struct):
    """The ERROR register: the first error since the last RESET and the pc it stopped at."""
    code: ErrorCode
    pc: unsigned(PC_BITS)


class TileIdReg(data.Struct):
    """The TILE_ID register: this tile's coordinates."""
    x: unsigned(COORD_FIELD_BITS)
    y: unsigned(COORD_FIELD_BITS)


def _shape_bits(shape):
    from amaranth.hdl import Shape
    return Shape.cast(shape).width


class Csr:
    """One control/status register of a tile: ``name``, first ``word`` in the CSR space, width
    ``bits`` (over ``words`` consecutive words, low bits first), ``access`` "R", "W" or "RW",
    ``shape`` (an int width or a layout) and ``doc``."""

    def __init__(self, name, word, shape, words, access, doc):
        self.name, self.word, self.shape, self.words = name, word, shape, words
        self.access, self.doc = access, doc
        self.bits = _shape_bits(shape)

    def __repr__(self):
        return f"Csr({self.name!r}, word={self.word}, bits={self.bits}, {self.access!r})"


def csr_map(cfg):
    """The CSR space of a tile for ``cfg``, as a dict name -> :class:`Csr`, in address order.

    A register wider than ``cfg.word_bits`` spans several words; reading its first word
    snapshots the whole register, so a multi-word read never tears.
    """
    from .noc.fabric import status_layout  # the NoC owns its drop counters

    drops = [(f"DROP_{group.upper()}_{name.upper()}", data.Layout.cast(gf.shape)[name].shape,
              f"packets dropped by this tile's {group}: {name} (saturating)")
             for group, gf in status_layout() for name, _ in data.Layout.cast(gf.shape)]

    regs = [
        ("CONTROL", ControlPayload, "W", "write a ControlPayload: START at pc / RESET (reads 0)"),
        ("STATUS", StatusReg, "R", "TileState and unit busy flags"),
        ("PC", PC_BITS, "R", "index of the next instruction to issue"),
        ("ERROR", ErrorReg, "R", "ErrorCode and pc of the first error since RESET"),
        ("WAIT_SEM", SEM_INDEX_BITS, "R", "semaphore the controller waits on (WAITING)"),
        ("WAIT_COUNT", SEM_BITS, "R", "count that WAIT needs (WAITING)"),
        ("TIMEOUT", 32, "RW", "blocked cycles before ErrorCode.TIMEOUT; 0 = never (reset 0)"),
        ("TILE_ID", TileIdReg, "R", "this tile's (x, y)"),
        ("ISA", 16, "R", f"ISA_VERSION ({ISA_VERSION})"),
    ]
    regs += [(f"SEM{i}", SEM_BITS, "RW", f"semaphore {i} (a write sets it)")
             for i in range(SEMAPHORES)]
    regs += [(f"AR{i}", ADDR_BITS, "R", f"address register ar{i}") for i in range(1, ADDR_REGS)]
    regs += [(name, shape, "R", doc) for name, shape, doc in drops]
    regs += [
        ("RX_ERRORS", 16, "R", "packets to this tile it rejected: bad address/space/count, "
                               "write to a read-only CSR or to IMEM while running, stray "
                               "READ_RESP, refused START (saturating)"),
        ("CYCLES", 32, "R", "cycles since START while not IDLE/HALTED/ERROR"),
        ("STALL_CYCLES", 32, "R", "cycles in WAITING or BLOCKED"),
        ("DMA_BUSY", 32, "R", "cycles with dma_busy"),
        ("MATMUL_BUSY", 32, "R", "cycles with matmul_busy"),
        ("SIMD_BUSY", 32, "R", "cycles with simd_busy"),
        ("MATMUL_STEPS", 32, "R", "k steps done by the matrix unit (useful MACs / PEs)"),
        ("TX_WORDS", 32, "R", "payload words this tile sent (DMA writes, READ_RESP)"),
        ("RX_WORDS", 32, "R", "payload words the network wrote into this tile"),
    ]
    out, word = {}, 0
    for name, shape, access, doc in regs:
        words = -(-_shape_bits(shape) // cfg.word_bits)
        out[name] = Csr(name, word, shape, words, access, doc)
        word += words
    return out


def check_address_map(cfg):
    """Raise :class:`~tilemesh.config.ConfigError` if a space of the tile address map does not
    fit the ``cfg.tile_addr_bits - 2`` word bits (IMEM needs ``imem_depth * instr_words`` words,
    CSR the words of :func:`csr_map`)."""
    from .config import ConfigError

    limit = 1 << (cfg.tile_addr_bits - 2)
    csrs = csr_map(cfg)
    need = {"IMEM": cfg.tile.imem_depth * instr_words(cfg),
            "CSR": sum(c.words for c in csrs.values()), "SRAM": cfg.tile.sram_words}
    for space, words in need.items():
        if words > limit:
            raise ConfigError(f"the {space} space of a tile needs {words} words but the tile "
                              f"address has {cfg.tile_addr_bits - 2} word bits ({limit} words); "
                              f"MeshConfig.tile_addr_bits must grow")
