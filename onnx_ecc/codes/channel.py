"""Real-number codes over a layer's output channels: generator matrices and the block layout.

A block of ``b`` data values y gets ``r`` parity values p = G y. The check matrix is
H = [G, -I]; a codeword c = [y; p] satisfies H c = 0, and an error e gives the syndrome H e.
Any r columns of H must be independent (the code is MDS): then r wrong values are always
detected and floor(r/2) are located and corrected. How well a single error can be located
in noise depends on the angle between the columns of H, so the columns are spread as evenly
as possible (for r = 2 exactly evenly on a half circle).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)
ROUNDING_FLOOR = 2.0 ** -40   # relative rounding allowance of a residual computed in double


@functools.lru_cache(maxsize=256)
def generator(block: int, parity: int) -> np.ndarray:
    """The parity x block generator G (float64) for a block of ``block`` data values."""
    if block < 1 or parity < 1:
        raise ValueError(f"block ({block}) and parity ({parity}) must be >= 1")
    if parity == 1:
        return np.ones((1, block))
    if parity == 2:
        return _half_circle_generator(block)
    return _spread_generator(block, parity)


def _half_circle_generator(block: int) -> np.ndarray:
    """Columns of H at evenly spaced angles of a half circle; the parity columns at 0 and pi/2."""
    n = block + 2
    n += n % 2
    angles = [np.pi * i / n for i in range(n) if i not in (0, n // 2)][:block]
    return np.array([np.cos(angles), np.sin(angles)])


def _spread_generator(block: int, parity: int, tries: int = 400) -> np.ndarray:
    """Unit columns with the smallest largest coherence among seeded Gaussian draws (r >= 3)."""
    rng = np.random.default_rng(7919 * parity + block)
    eye = np.eye(parity)
    best, best_coherence = None, np.inf
    for _ in range(tries):
        g = rng.standard_normal((parity, block))
        g /= np.linalg.norm(g, axis=0)
        h = np.concatenate([g, eye], axis=1)
        gram = np.abs(h.T @ h)
        np.fill_diagonal(gram, 0.0)
        coherence = gram.max()
        if coherence < best_coherence:
            best, best_coherence = g, coherence
    return best


@dataclasses.dataclass(frozen=True)
class Layout:
    """How data and parity channels sit along the channel axis of a protected layer's output.

    Channels form ``groups`` equal segments (grouped convolutions), each laid out as
    [data_channels/groups data, parity_channels/groups parity]; the data of a segment is split
    into blocks of ``block`` channels (the last block may be shorter), each with ``parity`` checks.
    """

    data_channels: int
    block: int
    parity: int
    groups: int = 1

    def __post_init__(self):
        if self.data_channels % self.groups:
            raise ValueError(f"{self.data_channels} channels do not split into {self.groups} groups")
        if self.block < 1 or self.parity < 1:
            raise ValueError("block and parity must be >= 1")

    @property
    def data_per_group(self) -> int:
        return self.data_channels // self.groups

    @property
    def block_sizes(self) -> list[int]:
        c = self.data_per_group
        return [min(self.block, c - start) for start in range(0, c, self.block)]

    @property
    def parity_per_group(self) -> int:
        return self.parity * len(self.block_sizes)

    @property
    def total_channels(self) -> int:
        return self.groups * (self.data_per_group + self.parity_per_group)

    def generators(self) -> list[np.ndarray]:
        return [generator(b, self.parity) for b in self.block_sizes]

    def generator_attribute(self) -> list[float]:
        return [float(v) for g in self.generators() for v in g.ravel()]

    def parity_matrix(self) -> np.ndarray:
        """Matrix M (parity_per_group x data_per_group) with parity = M @ data within one group."""
        m = np.zeros((self.parity_per_group, self.data_per_group))
        start = 0
        for k, g in enumerate(self.generators()):
            m[k * self.parity:(k + 1) * self.parity, start:start + g.shape[1]] = g
            start += g.shape[1]
        return m

    def augment_rows(self, rows: np.ndarray) -> np.ndarray:
        """Stack parity rows under the data rows of each group: rows has data_channels rows.

        Works for weights (rows = output channels) and biases alike, computed in float64.
        """
        rows = np.asarray(rows, dtype=np.float64)
        m = self.parity_matrix()
        parts = []
        for g in range(self.groups):
            data = rows[g * self.data_per_group:(g + 1) * self.data_per_group]
            parts += [data, np.tensordot(m, data, axes=1)]
        return np.concatenate(parts, axis=0)

    def noise_bounds(self, weight_rows: np.ndarray, bias: np.ndarray | None) -> tuple[list[float], list[float]]:
        """Per group, block and check: bounds on the syndrome's rounding noise.

        gain * max|x| + offset bounds the sum of the absolute values of the terms that are
        added up to form the check (data rows through G plus the parity row), so that the
        rounding noise of the syndrome is a small multiple of eps32 times it.
        """
        w = np.abs(np.asarray(weight_rows, dtype=np.float64).reshape(self.data_channels, -1))
        b = np.zeros(self.data_channels) if bias is None else np.asarray(bias, dtype=np.float64)
        m = self.parity_matrix()
        gains, offsets = [], []
        for g in range(self.groups):
            sl = slice(g * self.data_per_group, (g + 1) * self.data_per_group)
            w_abs_rows, b_g = w[sl].sum(axis=1), b[sl]
            w_signed = np.asarray(weight_rows, dtype=np.float64).reshape(self.data_channels, -1)[sl]
            parity_rows = np.abs(m @ w_signed).sum(axis=1)
            gains += list(np.abs(m) @ w_abs_rows + parity_rows)
            offsets += list(np.abs(m) @ np.abs(b_g) + np.abs(m @ b_g))
        return [float(v) for v in gains], [float(v) for v in offsets]

    def output_noise_gains(self) -> list[float]:
        """Per group, block and check: sum |G_q| + 1, the check's magnitude per unit of output."""
        return [float(np.abs(g[q]).sum() + 1.0) for _ in range(self.groups) for g in self.generators()
                for q in range(self.parity)]
