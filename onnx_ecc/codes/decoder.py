"""The block decoder in numpy (the oracle of the C++ and CUDA kernels): detect, locate and correct
up to floor(r/2) wrong values of a block from its r parity values, under a rounding-noise model."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from onnx_ecc.codes.channel import ROUNDING_FLOOR


@dataclasses.dataclass
class BlockResult:
    """Outcome of decoding one block of one output vector.

    ``flagged``: something beyond the known erasures was wrong (a vector whose only wrong values
    are known erasures is expected, and not flagged); ``corrected``: values re-solved beyond the
    known erasures; ``located``: their positions (data j, check b + q); ``agree``: the known
    erasures that read right in this vector (their value as received agrees with the checks')."""

    flagged: bool = False
    corrected: int = 0
    uncorrectable: bool = False
    located: tuple[int, ...] = ()
    agree: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class BlockNoise:
    """Noise model of one block's checks: threshold = tol_eps * (gain * scale + offset).

    scale is ``xscale`` (max|x| of the layer input) when given, else the largest finite |value|
    among the values trusted under the hypothesis being tested.
    """

    gain: np.ndarray
    offset: np.ndarray
    tol_eps: float
    xscale: float | None = None

    def thresholds(self, values: np.ndarray, trusted: np.ndarray) -> np.ndarray:
        if self.xscale is not None:
            scale = self.xscale
        else:
            v = np.abs(values[trusted])
            v = v[np.isfinite(v)]
            scale = float(v.max(initial=0.0))
        return self.tol_eps * (self.gain * scale + self.offset)


def decode_block(y: np.ndarray, p: np.ndarray, g: np.ndarray, noise: BlockNoise,
                 correct: bool = True, known=()) -> tuple[np.ndarray, BlockResult]:
    """Decode one block: data y (b), parity p (r), generator g (r x b), noise model.

    Returns the corrected data and what happened. Erasures (positions known to be wrong) are the
    ``known`` positions (data j, check b + q: a layer's known erasures) and the non-finite values;
    they are solved first (least squares on the parity equations), and beyond them the smallest
    set of wrong positions, at most floor((r - erasures) / 2), that leaves every remaining check
    within its threshold is taken; the wrong data values are re-solved from the checks (never by
    subtracting an error estimate, so gross errors leave no residue).
    """
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    r, b = g.shape
    values = np.concatenate([y, p])
    known = sorted({int(k) for k in known})
    nonfinite = [i for i in range(b + r) if not np.isfinite(values[i])]
    erased = sorted(set(known) | set(nonfinite))
    if len(erased) > r:
        return y, BlockResult(flagged=True, uncorrectable=True)
    if not nonfinite and _solve_unknown(values, g, [], noise) is not None:
        return y, BlockResult(agree=tuple(known))
    result = BlockResult(flagged=True)
    if not correct:
        result.uncorrectable = True
        return y, result
    candidates = [i for i in range(b + r) if i not in erased]
    for t in range(0, (r - len(erased)) // 2 + 1):
        best = None
        for extra in itertools.combinations(candidates, t):
            unknown = sorted(erased + list(extra))
            solved = _solve_unknown(values, g, unknown, noise)
            if solved is not None and (best is None or solved[1] < best[1]):
                best = (unknown, solved[1], solved[0])
        if best is not None:
            unknown, _, z = best
            out = y.copy()
            data_unknown = [i for i in unknown if i < b]
            out[data_unknown] = z
            located = tuple(i for i in unknown if i not in known)
            agree = tuple(k for k in known if _erasure_agrees(values, g, noise, unknown, out, k))
            return out, BlockResult(flagged=bool(located), corrected=len(located), located=located, agree=agree)
    result.uncorrectable = True
    return y, result


def _erasure_agrees(values, g, noise: BlockNoise, unknown, repaired, u) -> bool:
    """Whether known erasure ``u`` reads right under the solved hypothesis (as the kernels'
    ErasureAgrees): a data value agrees with its re-solved one within every trusted check's
    threshold, a parity value with the parity of the repaired data."""
    r, b = g.shape
    trusted = np.ones(b + r, dtype=bool)
    trusted[list(unknown)] = False
    thr = noise.thresholds(values, trusted)
    held = values[u]
    if not np.isfinite(held):
        return False
    if u < b:
        z = repaired[u]
        for k in range(r):
            if not trusted[b + k]:
                continue
            gk = float(g[k, u])
            if not abs(gk * (held - z)) <= thr[k] + ROUNDING_FLOOR * abs(gk) * (abs(held) + abs(z)):
                return False
        return True
    q = u - b
    terms = g[q] * repaired
    return bool(abs(held - terms.sum()) <= thr[q] + ROUNDING_FLOOR * (abs(held) + np.abs(terms).sum()))


def _solve_unknown(values, g, unknown, noise: BlockNoise):
    """Least-squares solve of the unknown data values from the checks whose parity is known.

    Returns (data values, normalised residual) or None when a remaining check is violated.
    """
    r, b = g.shape
    trusted = np.ones(b + r, dtype=bool)
    trusted[list(unknown)] = False
    thr_all = noise.thresholds(values, trusted)
    data_u = [i for i in unknown if i < b]
    rows = [k for k in range(r) if (b + k) not in unknown]
    if len(rows) < len(data_u):
        return None
    known = [j for j in range(b) if j not in data_u]
    rows_i = np.array(rows, dtype=int)
    terms = g[np.ix_(rows, known)] * values[known][None, :] if rows else np.zeros((0, 0))
    rhs = values[b + rows_i] - terms.sum(axis=1) if rows else np.zeros(0)
    a = g[np.ix_(rows, data_u)]
    if data_u:
        z, *_ = np.linalg.lstsq(a, rhs, rcond=None)
    else:
        z = np.zeros(0)
    residual = rhs - a @ z
    # the check's threshold plus the double rounding of the residual (as in the kernels)
    magnitude = (np.abs(values[b + rows_i]) + np.abs(terms).sum(axis=1) + np.abs(a * z[None, :]).sum(axis=1)) if rows \
        else np.zeros(0)
    t = thr_all[rows] + ROUNDING_FLOOR * magnitude
    if np.any(~(np.abs(residual) <= t)):
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.where(t > 0, (residual / np.where(t > 0, t, 1.0)) ** 2, 0.0)
    return z, float(norm.sum())
