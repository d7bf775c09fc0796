"""Verilog generation: which blocks a configuration produces, and writing them out.

Files are only ever written here (and by the CLI that calls it), never while elaborating.
Output is deterministic: the same config gives byte-identical files, with no source paths.

**Structural generation.** A tile and a router do not depend on their position (it arrives on
their ``x``/``y`` inputs), so the mesh's Verilog holds each block kind once: ``tilemesh_tile``,
``tilemesh_router`` and ``tilemesh_ingress`` are converted on their own; ``tilemesh_noc``
instantiates a router and an ingress checker per position, and ``tilemesh_mesh`` instantiates
``tilemesh_noc`` once and a tile per position, with Amaranth :class:`~amaranth.hdl.Instance`\\ s
tying the position inputs to constants (:func:`mesh_verilog`, :func:`noc_verilog`). Only the
tops' instance lists grow with the mesh (BENCHMARKS.md, "Generation time").
"""

import json
import re
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import ClockSignal, Instance, Module, ResetSignal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from .config import MeshConfig

__all__ = ["ModuleInstance", "instance_of", "block_factory", "AtPosition", "StructuralDesign",
           "mesh_design", "noc_design", "fabric_parts", "mesh_verilog", "noc_verilog", "to_verilog",
           "verilog_text", "blocks", "generate", "resource_estimate"]

#: Verilog module names of the block kinds a structural mesh instantiates.
TILE_MODULE = "tilemesh_tile"
ROUTER_MODULE = "tilemesh_router"
INGRESS_MODULE = "tilemesh_ingress"
NOC_MODULE = "tilemesh_noc"


def to_verilog(component, name):
    """Verilog text of one Amaranth component as module ``name``: deterministic, no source
    paths, no internal attributes."""
    return verilog.convert(component, name=name, emit_src=False, strip_internal_attrs=True)


class ModuleInstance(wiring.Component):
    """Stands in a design for ``component``, converted separately as Verilog module ``name``.

    It has the component's ports (its signature), and elaborates to an
    :class:`~amaranth.hdl.Instance` of ``name`` whose port names are the ones
    ``verilog.convert`` gives a component's ports (the member path joined with ``__``, e.g.
    ``net_in__valid``), plus ``clk`` and ``rst`` of the ``sync`` domain. The component itself is
    never elaborated here.

    Parameters
    ----------
    component : wiring.Component or wiring.Signature
        The block this instance stands for (only its signature is used), or that signature.
    name : str
        Verilog module name of the separately converted ``component``.
    """

    def __init__(self, component, name):
        if isinstance(component, wiring.Signature):
            signature = component
        else:
            component._MustUse__used = True  # stands for it: never elaborated in this design
            signature = component.signature
        self._module = name
        super().__init__(signature)

    @property
    def module(self):
        return self._module

    def elaborate(self, platform):
        ports = {"i_clk": ClockSignal("sync"), "i_rst": ResetSignal("sync")}
        for path, member, value in self.signature.flatten(self):
            prefix = "i_" if member.flow == In else "o_"
            ports[prefix + "__".join(map(str, path))] = Value.cast(value)
        return Instance(self._module, **ports)


def instance_of(component, name):
    """``component`` itself when ``name`` is None, else a :class:`ModuleInstance` of module
    ``name`` standing for it."""
    return component if name is None else ModuleInstance(component, name)


def block_factory(make, name):
    """A function returning a new block per call: ``make()`` when ``name`` is None, else a
    :class:`ModuleInstance` of module ``name`` (one block is made, for its signature, and shared
    by every instance: a fabric of 256 routers then builds 256 small stand-ins, not 256 routers)."""
    if name is None:
        return make
    prototype = make()
    prototype._MustUse__used = True  # only its signature is used
    signature = prototype.signature
    return lambda: ModuleInstance(signature, name)


class AtPosition(wiring.Component):
    """A positioned block (:class:`~tilemesh.tile.tile.Tile`,
    :class:`~tilemesh.noc.router.Router`, ...) with its ``x``/``y`` inputs tied to constants, as
    a mesh ties them: for using or synthesising one block alone (synthesis folds the constants
    exactly as it does inside a mesh).

    Parameters
    ----------
    component : wiring.Component
        A block with ``x`` and ``y`` input ports.
    cfg : MeshConfig
        The mesh the position belongs to.
    x, y : int
        Column and row.

    Members
    -------
    Every port of ``component`` except ``x`` and ``y``, forwarded.

    Raises
    ------
    ValueError
        If (``x``, ``y``) is not a tile of ``cfg``'s mesh, or ``component`` has no ``x``/``y``
        input ports.
    """

    def __init__(self, component, cfg, x, y):
        members = component.signature.members
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (x, y))
        if not (ints and 0 <= x < cfg.cols and 0 <= y < cfg.rows):
            component._MustUse__used = self._MustUse__used = True
            raise ValueError(f"position must be a tile of the {cfg.rows}x{cfg.cols} mesh, "
                             f"not ({x!r}, {y!r})")
        if not all(n in members and members[n].is_port and members[n].flow == In
                   for n in ("x", "y")):
            component._MustUse__used = self._MustUse__used = True
            raise ValueError(f"{type(component).__name__} has no x and y input ports")
        self._inner, self._x, self._y = component, x, y
        super().__init__({n: m for n, m in members.items() if n not in ("x", "y")})

    def elaborate(self, platform):
        m = Module()
        m.submodules.block = inner = self._inner
        m.d.comb += [inner.x.eq(self._x), inner.y.eq(self._y)]
        for path, member, value in inner.signature.flatten(inner):
            if path[0] in ("x", "y"):
                continue
            outer = self
            for step in path:
                outer = outer[step] if isinstance(step, int) else getattr(outer, step)
            if member.flow == In:
                m.d.comb += value.eq(outer)
            else:
                m.d.comb += outer.eq(value)
        return m


_MODULE = re.compile(r"^module (\S+?)\s*\((.*?)\);", re.M | re.S)


def _modules(text):
    """``{module name: [port names]}`` of Yosys-written Verilog, in order, with duplicates
    reported by the caller (a list of names is returned beside)."""
    found = [(m.group(1), [p.strip() for p in m.group(2).split(",") if p.strip()])
             for m in _MODULE.finditer(text)]
    return found


def _instance_ports(text, module):
    """Port-name sets of every instance of ``module`` in ``text`` (Yosys' one-line-per-port
    instance syntax)."""
    sets = []
    for m in re.finditer(rf"^\s*{re.escape(module)} \S+ \((.*?)\);", text, re.M | re.S):
        sets.append(frozenset(re.findall(r"^\s*\.(\w+)\(", m.group(1), re.M)))
    return sets


class StructuralDesign:
    """A top that instantiates separately converted blocks, and those blocks: one Verilog text.

    Components are built only when :meth:`verilog` runs (from the factories given), so making a
    ``StructuralDesign`` costs nothing and leaves no unelaborated component behind.

    Parameters
    ----------
    name : str
        Verilog module name of the top.
    top : callable
        Returns the top component; it instantiates the parts through :class:`ModuleInstance`.
    parts : dict of str to callable or StructuralDesign
        ``{Verilog module name: factory of the component}`` of every block the top instantiates;
        a part may itself be a ``StructuralDesign`` of that name (e.g. a board top or testbench
        instantiating :func:`mesh_design` as ``ModuleInstance(Mesh(cfg), "tilemesh_mesh")``).
    """

    def __init__(self, name, top, parts):
        self.name = name
        self._top = top
        self._parts = dict(parts)

    @property
    def parts(self):
        """Module names of the separately converted blocks."""
        return list(self._parts)

    def verilog(self, cache=None):
        """The top's Verilog followed by every part's, each converted once.

        ``cache`` (a dict of module name to text, optional) is read and filled (with the parts'
        texts and this design's), so blocks shared by several designs of one configuration (the
        router, the NoC inside the mesh) are converted once.

        Raises
        ------
        RuntimeError
            If a module name occurs twice in the text, or an instance's ports differ from its
            module's (a port the signature flattening named differently than the converter).
        """
        cache = {} if cache is None else cache
        if self.name in cache:
            return cache[self.name]
        texts = [to_verilog(self._top(), self.name)]
        for name, part in self._parts.items():
            if isinstance(part, StructuralDesign):
                if part.name != name:
                    raise ValueError(f"part {name!r} is the structural design {part.name!r}")
                texts.append(part.verilog(cache))
                continue
            if name not in cache:
                cache[name] = to_verilog(part(), name)
            texts.append(cache[name])
        text = "\n".join(texts)
        modules = _modules(text)
        names = [n for n, _ in modules]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise RuntimeError(f"{self.name}: module names occur twice: {', '.join(twice)}")
        ports = dict(modules)
        for name in self._parts:
            for inst in _instance_ports(texts[0], name):
                if inst != frozenset(ports[name]):
                    diff = sorted(inst.symmetric_difference(ports[name]))
                    raise RuntimeError(f"{self.name}: an instance of {name} does not match its "
                                       f"ports: {', '.join(diff)}")
        cache[self.name] = text
        return text


def fabric_parts(cfg: MeshConfig):
    """``(modules, parts)`` for a design holding a structural
    :class:`~tilemesh.noc.fabric.NocFabric` of ``cfg``: ``NocFabric(cfg, modules=modules)``
    instantiates ``tilemesh_router`` and ``tilemesh_ingress`` per position, and ``parts`` (for
    :class:`StructuralDesign`) converts those two modules once."""
    from .noc.ingress import Ingress
    from .noc.router import Router

    modules = {"router": ROUTER_MODULE, "ingress": INGRESS_MODULE}
    return modules, {ROUTER_MODULE: lambda: Router(cfg), INGRESS_MODULE: lambda: Ingress(cfg)}


def noc_design(cfg: MeshConfig, name=NOC_MODULE):
    """The :class:`~tilemesh.noc.fabric.NocFabric` of ``cfg`` as a :class:`StructuralDesign`:
    one ``tilemesh_router`` and one ``tilemesh_ingress`` module, instantiated per position."""
    from .noc.fabric import NocFabric

    modules, parts = fabric_parts(cfg)
    return StructuralDesign(name, lambda: NocFabric(cfg, modules=modules), parts)


def mesh_design(cfg: MeshConfig, name="tilemesh_mesh"):
    """The :class:`~tilemesh.mesh.Mesh` of ``cfg`` as a :class:`StructuralDesign`: the top
    instantiates ``tilemesh_tile`` per position and the fabric ``tilemesh_noc``
    (:func:`noc_design`: ``tilemesh_router`` and ``tilemesh_ingress`` per position); each module
    occurs once in the text."""
    from .mesh import Mesh
    from .tile.tile import Tile

    modules = {"tile": TILE_MODULE, "noc": NOC_MODULE}
    return StructuralDesign(name, lambda: Mesh(cfg, modules=modules),
                            {NOC_MODULE: noc_design(cfg, NOC_MODULE),
                             TILE_MODULE: lambda: Tile(cfg)})


def mesh_verilog(cfg: MeshConfig, name="tilemesh_mesh"):
    """Verilog text of the whole mesh of ``cfg``, top module ``name`` (ports as
    :class:`~tilemesh.mesh.Mesh`'s): structural, each block kind once."""
    return mesh_design(cfg, name).verilog()


def noc_verilog(cfg: MeshConfig, name=NOC_MODULE):
    """Verilog text of the network fabric of ``cfg``, top module ``name`` (ports as
    :class:`~tilemesh.noc.fabric.NocFabric`'s): structural, each block kind once."""
    return noc_design(cfg, name).verilog()


def verilog_text(block, name, cache=None):
    """Verilog of one block of :func:`blocks`: a component converted as module ``name``, or a
    :class:`StructuralDesign` (whose top must be ``name``); ``cache`` as in
    :meth:`StructuralDesign.verilog`."""
    if isinstance(block, StructuralDesign):
        if block.name != name:
            raise ValueError(f"structural design {block.name!r} cannot be written as {name!r}")
        return block.verilog(cache)
    if cache is not None and name in cache:
        block._MustUse__used = True  # the same block was converted already
        return cache[name]
    text = to_verilog(block, name)
    if cache is not None:
        cache[name] = text
    return text


def blocks(cfg: MeshConfig, *, noc_only=False):
    """Top-level blocks of ``cfg`` as ``{verilog module name: component or StructuralDesign}``
    (:func:`verilog_text` converts either).

    Raises
    ------
    ConfigError
        Unless ``noc_only``, if ``cfg`` cannot build tiles
        (:meth:`~tilemesh.config.MeshConfig.check_tiles`).
    """
    if noc_only:
        return {NOC_MODULE: noc_design(cfg)}
    cfg.check_tiles()  # before anything is built: a NoC-only config may not make tiles
    from .noc.router import Router
    from .tile.matrix import MatrixUnit
    from .tile.simd import SimdUnit
    from .tile.sram import SramBank

    t = cfg.tile
    return {
        "tilemesh_matrix": MatrixUnit.from_config(t),
        "tilemesh_simd": SimdUnit.from_config(t),
        "tilemesh_sram_bank": SramBank(width=cfg.word_bits, depth=t.sram_depth),
        ROUTER_MODULE: Router(cfg),
        NOC_MODULE: noc_design(cfg),
        "tilemesh_mesh": mesh_design(cfg),
    }


def resource_estimate(cfg: MeshConfig):
    """First-order resource figures from the parameters alone (synthesis gives the real ones)."""
    t = cfg.tile
    return {
        "tiles": cfg.tiles,
        "multipliers": cfg.pes,
        "multiplier_bits": f"{t.data_bits}x{t.data_bits}",
        "accumulator_bits": cfg.pes * t.acc_bits,
        "sram_bits_per_tile": t.sram_words * cfg.word_bits,
        "sram_bits_total": cfg.tiles * t.sram_words * cfg.word_bits,
        "router_fifo_bits_total": cfg.tiles * 5 * cfg.noc.fifo_depth * (cfg.noc.flit_bits + 1),
        "peak_macs_per_cycle": cfg.pes,
        "peak_link_flits_per_cycle": 2 * (cfg.rows * (cfg.cols - 1) + cfg.cols * (cfg.rows - 1)),
    }


def generate(cfg: MeshConfig, out_dir, *, noc_only=False, progress=None):
    """Write ``<name>.v`` per block, ``params.json`` and ``resources.json`` into ``out_dir``.

    The mesh and NoC files are structural (:func:`mesh_verilog`); blocks they share (the router)
    are converted once per call. Returns the list of written paths.
    """
    todo = blocks(cfg, noc_only=noc_only)  # a config error before any file is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    cache = {}
    for name, block in todo.items():
        if progress:
            progress(f"generating {name}")
        path = out / f"{name}.v"
        path.write_text(verilog_text(block, name, cache))
        written.append(path)
    params = {"config": cfg.to_dict(), "derived": {
        "tiles": cfg.tiles, "pes": cfg.pes, "word_bits": cfg.word_bits,
        "coord_bits": cfg.coord_bits, "tile_addr_bits": cfg.tile_addr_bits,
        "header_fixed_bits": cfg.header_fixed_bits}}
    for fname, content in (("params.json", params), ("resources.json", resource_estimate(cfg))):
        path = out / fname
        path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
