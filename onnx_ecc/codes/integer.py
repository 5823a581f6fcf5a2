"""The integer code of int8 layers: an integer generator, parity weights as balanced base-256
digits (extra int8 columns of the same weight matrix), and the bias's own checks.

Per block k of ``block`` output channels and check row r, the parity weight row is
v = sum_i g_ri W_{kB+i}, exact in integers, with g_ri = t^r (t = 1..block): row 0 all ones (a
single wrong value's error is the first syndrome) and any ``parity`` columns of [G, -I]
independent for parity <= 3 in exact arithmetic. v is split into balanced digits in [-128, 127],
each an int8 column, so the layer's own int8 product computes them and the check is exact
(IntDecode, ops.INT_DECODE; numpy oracle ops.oracles.int_decode).
"""

from __future__ import annotations

import numpy as np

BASE = 256


def generator(block: int, parity: int) -> np.ndarray:
    """[parity, block] int64: row r is t^r for t = 1..block."""
    t = np.arange(1, block + 1, dtype=np.int64)
    return np.stack([t ** r for r in range(parity)])


def balanced_digits(v: np.ndarray, base: int = BASE, low: int | None = None) -> list[np.ndarray]:
    """Arrays d_j with v = sum_j base^j d_j, d_j in [low, low + base) (default [-base/2, base/2): int8); at
    least one. ``low`` < 0 < low + base - 1, so that every integer has such digits (the loop ends)."""
    low = -(base // 2) if low is None else int(low)
    if not low < 0 < low + base - 1:
        raise ValueError(f"digit window [{low}, {low + base - 1}] must hold negative and positive digits")
    v = np.asarray(v, np.int64).copy()
    out = []
    while True:
        d = ((v - low) % base) + low
        out.append(d.astype(np.int8) if low >= -128 and low + base <= 128 else d.astype(np.int64))
        v = (v - d) // base
        if not v.any():
            return out


def parity_rows(w2d: np.ndarray, block: int, parity: int, low: int | None = None
                ) -> tuple[np.ndarray, list[int], np.ndarray]:
    """w2d [M, K] integer weights (one row per output channel) -> (digit rows [P, K], int8 for the default
    balanced window, else int64 in [low, low + 256), digit rows per block and check, generator [parity, block])."""
    m = w2d.shape[0]
    g = generator(block, parity)
    rows, planes = [], []
    for c0 in range(0, m, block):
        wb = w2d[c0:c0 + block].astype(np.int64)
        for r in range(parity):
            d = balanced_digits(g[r, :wb.shape[0]] @ wb, low=low)
            rows += d
            planes.append(len(d))
    return np.stack(rows), planes, g


def bias_parity(bias: np.ndarray, block: int, parity: int) -> list[int]:
    """Per block and check: sum_i g_ri bias_i (IntDecode's bias_parity)."""
    g = generator(block, parity)
    b = np.asarray(bias, np.int64)
    return [int(g[r, :len(b[c0:c0 + block])] @ b[c0:c0 + block]) for c0 in range(0, len(b), block)
            for r in range(parity)]
