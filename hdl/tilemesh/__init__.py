"""tilemesh: a generator of synthesizable RTL for a 2-D mesh of compute tiles."""

from .config import PRESETS, ConfigError, MeshConfig, NocConfig, TileConfig, preset

__all__ = ["ConfigError", "MeshConfig", "NocConfig", "TileConfig", "PRESETS", "preset"]
__version__ = "0.1.0"
