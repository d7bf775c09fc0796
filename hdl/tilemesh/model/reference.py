"""Bit-exact numpy references for every datapath block.

Integers are modelled exactly: values are held in int64 (or Python ints where wider) and wrapped
to the hardware's width with :func:`wrap`, so a result here is what the RTL must produce bit for
bit. Each block's section below is its specification in executable form.
"""

import numpy as np

__all__ = ["wrap", "saturate"]


def wrap(x, bits):
    """Two's-complement wrap of integer array ``x`` to ``bits`` (<= 64) signed bits."""
    x = np.asarray(x).astype(np.int64)
    if bits >= 64:
        return x
    mask = (1 << bits) - 1
    half = 1 << (bits - 1)
    return ((x & mask) ^ half) - half


def saturate(x, bits):
    """Clamp integer array ``x`` to the signed range of ``bits``."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return np.clip(np.asarray(x).astype(np.int64), lo, hi)
