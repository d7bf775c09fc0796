"""cocotb benches for tilemesh: runner helpers, stream drivers/monitors, scoreboards.

Installed as ``tilemesh_sim`` (see pyproject.toml) so the simulator's embedded Python and the
``tilemesh bench`` command can import the benches.
"""
