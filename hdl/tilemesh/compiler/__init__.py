"""Compilers for the tile instruction set: the assembler (:mod:`.assembler`) and the tiling
GEMM compiler (:mod:`.gemm`, docs/gemm.md).

The GEMM names are loaded on first use, so ``python -m tilemesh.compiler.gemm`` and the
assembler do not import each other's modules early."""

_GEMM = ("Epilogue", "GemmError", "GemmPlan", "GemmRun", "Requant", "compile_gemm")

__all__ = list(_GEMM)


def __getattr__(name):
    if name in _GEMM:
        from . import gemm
        return getattr(gemm, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
