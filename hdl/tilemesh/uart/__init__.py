"""The UART host bridge (RTL) and its protocol: a board's host port over two pins
(docs/host-protocol.md)."""

from .bridge import UartBridge, UartMesh
from .phy import UartRx, UartTx

__all__ = ["UartBridge", "UartMesh", "UartRx", "UartTx"]
