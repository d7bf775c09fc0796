"""Board tops: the mesh behind the UART host bridge on real FPGA boards, and their build flow.

``tilemesh build --board NAME`` (or ``make bitstream BOARD=NAME``) runs :func:`build.build`.
Each board file holds its top (clock, reset button, LEDs, UART pins) and a ``BOARD`` dict: the
amaranth-boards platform, the default preset, the board clock (the Fmax the design must meet)
and the synthesis options.
"""

from . import icebreaker, ulx3s

BOARDS = {b["name"]: b for b in (icebreaker.BOARD, ulx3s.BOARD)}

__all__ = ["BOARDS"]
