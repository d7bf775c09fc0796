"""The host side of a mesh: :class:`HostDriver` over a :class:`HostTransport` back end (the cocotb
RTL simulation in :mod:`tilemesh.host.rtl`; the Python model and the UART bridge later)."""

from .driver import HostDriver, HostError, HostTimeout, HostTransport, Notify, Packet, TileStatus

__all__ = ["HostDriver", "HostError", "HostTimeout", "HostTransport", "Notify", "Packet",
           "TileStatus"]
