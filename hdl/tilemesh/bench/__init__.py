"""Benchmarks behind ``tilemesh bench NAME``.

Each module exposes ``add_arguments(parser)`` (its options; ``--preset``/``--config`` are added by
the command line) and ``run(args) -> int`` (prints a table, writes JSON under ``build/bench``).
"""
