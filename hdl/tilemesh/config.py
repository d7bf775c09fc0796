"""The one configuration object that drives the hardware, the compiler and the models.

``MeshConfig`` holds the mesh size and two parts: ``TileConfig`` (compute tile) and ``NocConfig``
(network). All three are frozen, keyword-only dataclasses validated at construction; a bad value
raises :class:`ConfigError` naming the field, the value and what is allowed. Derived values are
properties. Presets are made with :func:`dataclasses.replace` from the defaults.
"""

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ConfigError", "TileConfig", "NocConfig", "MeshConfig", "PRESETS", "preset", "bits_for"]


class ConfigError(ValueError):
    """An invalid configuration value: the message names the field, the value and the range."""


def bits_for(n):
    """Bits needed to hold the unsigned value ``n`` (at least 1)."""
    return max(1, int(n).bit_length())


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(owner, name, value, lo, hi, *, pow2=False, why=""):
    ok = _is_int(value) and lo <= value <= hi and (not pow2 or value & (value - 1) == 0)
    if not ok:
        kind = "a power of two" if pow2 else "an integer"
        note = f" ({why})" if why else ""
        raise ConfigError(f"{owner}.{name} must be {kind} in {lo}..{hi}{note}, not {value!r}")


def _check_choice(owner, name, value, choices):
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"{owner}.{name} must be one of {allowed}, not {value!r}")


@dataclass(frozen=True, kw_only=True)
class TileConfig:
    """Parameters of one compute tile.

    Members
    -------
    pe_rows, pe_cols : int
        Size R x C of the output-stationary systolic array (1..32 each).
    data_bits : int
        Width of the signed matrix/SIMD input elements (4..16).
    acc_bits : int
        Width of the accumulators; wraps in two's complement (2 x data_bits..64).
    simd_lanes : int
        Lanes of the SIMD unit (1..64).
    sram_banks : int
        Number of SRAM banks (1..16).
    sram_depth : int
        Words per bank, a power of two (16..65536).
    imem_depth : int
        Instructions in the controller's instruction memory, a power of two (16..4096).
    unit_queue_depth : int
        Commands each of the controller's unit queues (DMA, matrix, SIMD) holds (1..16, default
        4). Results never depend on it; a deeper queue lets the controller run further ahead of
        the units, at ~one instruction of flip-flops (or LUT RAM) per entry and queue.
    """

    pe_rows: int = 4
    pe_cols: int = 4
    data_bits: int = 8
    acc_bits: int = 32
    simd_lanes: int = 4
    sram_banks: int = 4
    sram_depth: int = 4096
    imem_depth: int = 256
    unit_queue_depth: int = 4

    def __post_init__(self):
        o = "TileConfig"
        _check_int(o, "pe_rows", self.pe_rows, 1, 32)
        _check_int(o, "pe_cols", self.pe_cols, 1, 32)
        _check_int(o, "data_bits", self.data_bits, 4, 16)
        _check_int(o, "acc_bits", self.acc_bits, 2 * self.data_bits, 64,
                   why="at least 2 x data_bits so one product fits")
        _check_int(o, "simd_lanes", self.simd_lanes, 1, 64)
        _check_int(o, "sram_banks", self.sram_banks, 1, 16)
        _check_int(o, "sram_depth", self.sram_depth, 16, 65536, pow2=True)
        _check_int(o, "imem_depth", self.imem_depth, 16, 4096, pow2=True)
        _check_int(o, "unit_queue_depth", self.unit_queue_depth, 1, 16)

    @property
    def pes(self):
        """Number of processing elements (MACs) in the matrix unit."""
        return self.pe_rows * self.pe_cols

    @property
    def sram_words(self):
        """Total SRAM words in the tile (all banks)."""
        return self.sram_banks * self.sram_depth


@dataclass(frozen=True, kw_only=True)
class NocConfig:
    """Parameters of the network on chip.

    Members
    -------
    flit_bits : int
        Data bits of one flit (16..256); a payload flit carries one SRAM word, and the header
        flit must fit all header fields (checked by ``MeshConfig``).
    fifo_depth : int
        Depth of each router input FIFO (2..64). The default 16 holds uniform traffic's
        saturation above 70 % of the bisection limit (head-of-line blocking costs less the deeper
        the FIFO; docs/noc.md) and is the depth of one LUT-RAM primitive on ECP5 (DPR16X4), so
        it costs pointer bits, not RAM.
    max_packet_flits : int
        Largest number of payload flits after a header (1..256).
    """

    flit_bits: int = 32
    fifo_depth: int = 16
    max_packet_flits: int = 16

    def __post_init__(self):
        o = "NocConfig"
        _check_int(o, "flit_bits", self.flit_bits, 16, 256)
        _check_int(o, "fifo_depth", self.fifo_depth, 2, 64)
        _check_int(o, "max_packet_flits", self.max_packet_flits, 1, 256)

    @property
    def length_bits(self):
        """Width of the header's payload length field."""
        return bits_for(self.max_packet_flits)


HOST_SIDES = ("north", "east", "south", "west")
_OPCODE_BITS = 3  # layouts.Opcode's shape; kept here so config does not import the HDL
_INSTR_BITS = 128  # layouts.INSTR_BITS, likewise
_NOTIFY_BITS = 64  # layouts.NotifyPayload's width, likewise
CSR_SPACE_WORDS = 128  # words reserved for control/status registers (layouts.csr_map fits in it)


@dataclass(frozen=True, kw_only=True)
class MeshConfig:
    """A mesh of ``rows`` x ``cols`` tiles and everything else the generator needs.

    Members
    -------
    rows, cols : int
        Mesh size (1..32 each). Tile (x, y) is column x, row y; row 0 is the north edge.
    tile : TileConfig
    noc : NocConfig
    host_x, host_y : int
        The tile whose edge router port carries the host port (default tile (0, 0)).
    host_side : str
        Which side of that tile: it must be on the mesh edge (default ``"west"``).

    Raises
    ------
    ConfigError
        On any field out of range, naming the field, the value and the allowed range.
    """

    rows: int = 2
    cols: int = 2
    tile: TileConfig = field(default_factory=TileConfig)
    noc: NocConfig = field(default_factory=NocConfig)
    host_x: int = 0
    host_y: int = 0
    host_side: str = "west"

    def __post_init__(self):
        o = "MeshConfig"
        _check_int(o, "rows", self.rows, 1, 32)
        _check_int(o, "cols", self.cols, 1, 32)
        if not isinstance(self.tile, TileConfig):
            raise ConfigError(f"{o}.tile must be a TileConfig, not {self.tile!r}")
        if not isinstance(self.noc, NocConfig):
            raise ConfigError(f"{o}.noc must be a NocConfig, not {self.noc!r}")
        _check_int(o, "host_x", self.host_x, 0, self.cols - 1, why="a column of the mesh")
        _check_int(o, "host_y", self.host_y, 0, self.rows - 1, why="a row of the mesh")
        _check_choice(o, "host_side", self.host_side, HOST_SIDES)
        on_edge = {"west": self.host_x == 0, "east": self.host_x == self.cols - 1,
                   "north": self.host_y == 0, "south": self.host_y == self.rows - 1}
        if not on_edge[self.host_side]:
            raise ConfigError(f"{o}.host_side must name a mesh edge of tile "
                              f"({self.host_x}, {self.host_y}), not {self.host_side!r}")
        need = self.header_fixed_bits + self.tile_addr_bits
        if self.noc.flit_bits < need:
            raise ConfigError(
                f"NocConfig.flit_bits must be at least {need} for a {self.rows}x{self.cols} mesh "
                f"of these tiles (header: 4 x {self.coord_bits} coordinate bits, "
                f"{_OPCODE_BITS} opcode bits, {self.noc.length_bits} length bits, "
                f"{self.tile_addr_bits} address bits), not {self.noc.flit_bits!r}")

    # -- derived values -----------------------------------------------------------------------

    @property
    def tiles(self):
        """Number of tiles in the mesh."""
        return self.rows * self.cols

    @property
    def coord_bits(self):
        """Width of a header coordinate: one value past the mesh edge stays representable, so a
        packet addressed off the mesh can be seen and dropped rather than wrapping around."""
        return bits_for(max(self.rows, self.cols))

    @property
    def word_bits(self):
        """Width of an SRAM word: one payload flit carries one word."""
        return self.noc.flit_bits

    @property
    def imem_words(self):
        """Address-map words of the instruction memory: an instruction spans several words."""
        return self.tile.imem_depth * -(-_INSTR_BITS // self.word_bits)

    @property
    def tile_addr_bits(self):
        """Address bits of a tile's address map: 2 bits of space (SRAM, instruction memory,
        control registers) and the word address within the largest space."""
        return 2 + bits_for(max(self.tile.sram_words, self.imem_words, CSR_SPACE_WORDS) - 1)

    @property
    def header_fixed_bits(self):
        """Header bits other than the address field."""
        return 4 * self.coord_bits + _OPCODE_BITS + self.noc.length_bits

    @property
    def pes(self):
        """Processing elements in the whole mesh."""
        return self.tiles * self.tile.pes

    @property
    def notify_flits(self):
        """Payload flits of a NOTIFY packet (the 64-bit ``layouts.NotifyPayload``)."""
        return -(-_NOTIFY_BITS // self.noc.flit_bits)

    def check_tiles(self):
        """Raise :class:`ConfigError` unless compute tiles can be built from this configuration.

        The constructor accepts every configuration a network alone can carry (NoC-only designs
        and benchmarks may use single-flit packets); a mesh of tiles also needs its largest
        fixed-size packet, NOTIFY (header + :attr:`notify_flits`), to fit
        ``noc.max_packet_flits``. ``Tile``, ``DmaEngine``, ``Mesh`` and ``tilemesh generate``
        (without ``--noc-only``) call this.
        """
        need = self.notify_flits
        if self.noc.max_packet_flits < need:
            raise ConfigError(
                f"NocConfig.max_packet_flits must be in {need}..256 for a mesh of tiles (a NOTIFY "
                f"packet carries {need} payload flits of {self.noc.flit_bits} bits), "
                f"not {self.noc.max_packet_flits!r}")

    # -- serialisation --------------------------------------------------------------------------

    def to_dict(self):
        """Plain nested dict (JSON/TOML friendly)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data, *, base=None):
        """Build a config from a nested dict; keys not given keep ``base``'s value (default
        values if ``base`` is None). Unknown keys raise :class:`ConfigError`."""
        base = cls() if base is None else base
        if not isinstance(data, dict):
            raise ConfigError(f"a mesh configuration must be a table/object, not {data!r}")
        data = dict(data)
        if "preset" in data:
            base = preset(data.pop("preset"))
        parts = {}
        for part, klass in (("tile", TileConfig), ("noc", NocConfig)):
            sub = data.pop(part, {})
            if not isinstance(sub, dict):
                raise ConfigError(f"MeshConfig.{part} must be a table/object, not {sub!r}")
            _reject_unknown(klass, sub)
            parts[part] = dataclasses.replace(getattr(base, part), **sub)
        _reject_unknown(cls, data)
        return dataclasses.replace(base, **data, **parts)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text, *, base=None):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"invalid JSON configuration: {e}") from None
        return cls.from_dict(data, base=base)

    def to_toml(self):
        d = self.to_dict()
        lines = [f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
        for part in ("tile", "noc"):
            lines += ["", f"[{part}]"] + [f"{k} = {_toml_value(v)}" for k, v in d[part].items()]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, text, *, base=None):
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"invalid TOML configuration: {e}") from None
        return cls.from_dict(data, base=base)

    @classmethod
    def load(cls, path, *, base=None):
        """Load a ``.toml`` or ``.json`` file; fields it omits keep ``base``'s values (the
        defaults if None, or the preset the file names with ``preset = "..."``)."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise ConfigError(f"cannot read configuration file {str(path)!r}: {e.strerror}") \
                from None
        if path.suffix == ".json":
            return cls.from_json(text, base=base)
        if path.suffix == ".toml":
            return cls.from_toml(text, base=base)
        raise ConfigError(f"configuration file must end in .toml or .json, not {path.name!r}")

    def save(self, path):
        path = Path(path)
        if path.suffix not in (".toml", ".json"):
            raise ConfigError(f"configuration file must end in .toml or .json, not {path.name!r}")
        path.write_text(self.to_json() if path.suffix == ".json" else self.to_toml())


def _reject_unknown(klass, data):
    known = {f.name for f in dataclasses.fields(klass)}
    for key in data:
        if key not in known:
            raise ConfigError(f"{klass.__name__} has no field {key!r}; fields are "
                              f"{', '.join(sorted(known))}")


def _toml_value(v):
    return json.dumps(v)  # ints and strings: JSON spelling is valid TOML


PRESETS = {
    # For the iCE40UP5K (8 SB_MAC16, 30 EBR, 5280 LUT4): one tile of 2x2 int8 PEs (4 SB_MAC16)
    # and 2 SIMD lanes (2 SB_MAC16 each); one-entry unit queues (flip-flops: no LUT RAM).
    "tiny": MeshConfig(rows=1, cols=1,
                       tile=TileConfig(pe_rows=2, pe_cols=2, acc_bits=24, simd_lanes=2,
                                       sram_banks=2, sram_depth=256, imem_depth=64,
                                       unit_queue_depth=1),
                       noc=NocConfig(fifo_depth=2, max_packet_flits=8)),
    # 2x2 tiles of 4x4 int8 PEs: the reference design (ECP5-85F, 100 MHz target). One-entry
    # unit queues: deeper ones made no compiled GEMM faster (the cycle model, checked against
    # the RTL at depths 1 and 4: 16 shapes within 0.2 %, some 2-5 % faster at 1) and their
    # 117-140-bit entries cost ~400 logic sites per tile in LUT RAM.
    "default": MeshConfig(tile=TileConfig(unit_queue_depth=1)),
    # 4x4 tiles of 8x8 PEs: simulation only. 64-bit flits carry the wider address field.
    "large": MeshConfig(rows=4, cols=4,
                        tile=TileConfig(pe_rows=8, pe_cols=8, simd_lanes=8, sram_banks=8,
                                        sram_depth=2048, imem_depth=512),
                        noc=NocConfig(flit_bits=64, max_packet_flits=16)),
}


def preset(name):
    """The named preset; raises :class:`ConfigError` listing the presets for an unknown name."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"preset must be one of {', '.join(PRESETS)}, not {name!r}") from None
