"""Real-number check matrices H (m x n) for weight memory codes, regenerated from (family, n, m, seed).

Two families:

* ``"gaussian"``: iid N(0, 1/m) entries, the classic compressed-sensing analysis. Applying it
  costs O(mn) and needs the dense matrix, so it is meant for blocks of a few thousand weights.
* ``"dct"``: H = R_S C D with D random signs, C the orthonormal DCT-II and R_S a random subset of
  m rows (a partial random orthogonal transform). H x and H^T y cost O(n log n) with
  ``scipy.fft``; the rows are orthonormal (H H^T = I), which makes projections onto
  {e : H e = s} free. Any set of columns is available in closed form without the dense matrix.

The stream argument lets one seed drive independent codes for the blocks of a large tensor.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import scipy.fft
import scipy.linalg

FAMILIES = ("dct", "gaussian")
DEFAULT_FRACTION = 0.2


@dataclasses.dataclass(frozen=True)
class CheckMatrix:
    """An m x n real check matrix defined by (family, n, m, seed, stream); nothing of it is stored."""

    family: str
    n: int
    m: int
    seed: int = 0
    stream: int = 0

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown check family {self.family!r}; choose from {FAMILIES}")
        if not (1 <= self.m <= self.n):
            raise ValueError(f"need 1 <= m <= n, got m={self.m}, n={self.n}")

    # -- random ingredients -------------------------------------------------------------
    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([int(self.seed), int(self.stream), self.n, self.m])

    @functools.cached_property
    def _dct_parts(self) -> tuple[np.ndarray, np.ndarray]:
        rng = self._rng()
        signs = rng.choice(np.array([-1.0, 1.0]), size=self.n)
        rows = np.sort(rng.choice(self.n, size=self.m, replace=False))
        return signs, rows

    @functools.cached_property
    def _gaussian(self) -> np.ndarray:
        return self._rng().standard_normal((self.m, self.n)) / np.sqrt(self.m)

    @functools.cached_property
    def _gram_factor(self):
        """Cholesky factor of H H^T (None when the rows are orthonormal)."""
        if self.family == "dct":
            return None
        h = self._gaussian
        return scipy.linalg.cho_factor(h @ h.T)

    # -- linear maps ---------------------------------------------------------------------
    def apply(self, x: np.ndarray) -> np.ndarray:
        """H x for x of shape (n,) or (n, k), in float64."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[0] != self.n:
            raise ValueError(f"expected leading dimension {self.n}, got {x.shape}")
        if self.family == "gaussian":
            return self._gaussian @ x
        signs, rows = self._dct_parts
        sx = x * (signs if x.ndim == 1 else signs[:, None])
        return scipy.fft.dct(sx, type=2, norm="ortho", axis=0)[rows]

    def apply_T(self, y: np.ndarray) -> np.ndarray:
        """H^T y for y of shape (m,) or (m, k), in float64."""
        y = np.asarray(y, dtype=np.float64)
        if y.shape[0] != self.m:
            raise ValueError(f"expected leading dimension {self.m}, got {y.shape}")
        if self.family == "gaussian":
            return self._gaussian.T @ y
        signs, rows = self._dct_parts
        full = np.zeros((self.n,) + y.shape[1:])
        full[rows] = y
        out = scipy.fft.idct(full, type=2, norm="ortho", axis=0)
        return out * (signs if y.ndim == 1 else signs[:, None])

    def columns(self, idx: np.ndarray) -> np.ndarray:
        """The columns H[:, idx] (m x len(idx)) without forming the dense matrix."""
        idx = np.asarray(idx, dtype=np.int64)
        if self.family == "gaussian":
            return self._gaussian[:, idx]
        signs, rows = self._dct_parts
        k = rows[:, None].astype(np.float64)
        j = idx[None, :].astype(np.float64)
        cols = np.cos(np.pi * k * (2.0 * j + 1.0) / (2.0 * self.n)) * np.sqrt(2.0 / self.n)
        cols[rows == 0, :] /= np.sqrt(2.0)
        return cols * signs[idx][None, :]

    def dense(self) -> np.ndarray:
        """The dense m x n matrix (for small n, tests and the LP baseline)."""
        return self.columns(np.arange(self.n))

    @functools.cached_property
    def row_norms(self) -> np.ndarray:
        """||H_i||_2 for every row (all ones for the dct family)."""
        if self.family == "dct":
            return np.ones(self.m)
        return np.linalg.norm(self._gaussian, axis=1)

    @property
    def orthonormal_rows(self) -> bool:
        """True when H H^T = I (projections need no solve)."""
        return self.family == "dct"

    def solve_gram(self, y: np.ndarray) -> np.ndarray:
        """(H H^T)^{-1} y."""
        if self._gram_factor is None:
            return np.asarray(y, dtype=np.float64)
        return scipy.linalg.cho_solve(self._gram_factor, y)

    def project_null(self, x: np.ndarray) -> np.ndarray:
        """x - H^T (H H^T)^{-1} H x: the nearest vector with H x = 0."""
        return np.asarray(x, dtype=np.float64) - self.apply_T(self.solve_gram(self.apply(x)))


@functools.lru_cache(maxsize=64)
def check_matrix(family: str, n: int, m: int, seed: int = 0, stream: int = 0) -> CheckMatrix:
    """A cached CheckMatrix (its random parts and Gram factor are computed once)."""
    return CheckMatrix(family, int(n), int(m), int(seed), int(stream))


def block_bounds(n: int, block_size: int) -> list[tuple[int, int]]:
    """Split range(n) into ceil(n / block_size) nearly equal contiguous blocks."""
    if n < 1 or block_size < 1:
        raise ValueError(f"n ({n}) and block_size ({block_size}) must be >= 1")
    count = -(-n // block_size)
    edges = np.linspace(0, n, count + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def checks_for(n_block: int, checks: int | None, fraction: float | None) -> int:
    """Number of checks for a block: explicit ``checks`` (capped at n-1) or ceil(fraction * n)."""
    if checks is not None and fraction is not None:
        raise ValueError("give checks or fraction, not both")
    if checks is None:
        fraction = DEFAULT_FRACTION if fraction is None else float(fraction)
        if not (0.0 < fraction < 1.0):
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        checks = int(np.ceil(fraction * n_block))
    return max(1, min(int(checks), n_block - 1 if n_block > 1 else 1))
