"""Decoders for weight codes: syndrome thresholds, erasures, fast l1 support recovery, verification.

Model: stored float32 weights w, check matrix H (m x n), reference c (stored parity H w, or 0 for
weights trained so that H w = 0). A corrupted copy w' = w + e gives the syndrome s = H w' - c = H e.

* Erasures: a value that is non-finite or larger in magnitude than the stored max|w| of the
  block cannot be a correct weight (flipped high exponent bits produce these). Its position is
  known; it is zeroed and its value recovered by least squares, so m checks fix up to ~m of them.
* Unknown positions: min ||e||_1 s.t. H e = s (Candes-Tao), solved by Douglas-Rachford splitting
  (soft-thresholding + projection onto {H e = s}, cheap because the dct family has orthonormal
  rows). The l1 iterate is only used to *find* the support: at checkpoints the candidate support
  (plus erasures) is fitted exactly by dense least squares, small entries are pruned and the fit
  is re-done. A fit is accepted only when every check is met to rounding precision and
  |E| + 2 |support| <= m - margin, which makes it the unique sparsest explanation of the syndrome.
* Every correction is verified on the float32 result: H w_corrected - c must be within the
  threshold, the values finite and within the stored max|w|; otherwise "uncorrectable".

Thresholds (per check row i, from ||w||_2 stored at encode time):
* parity stored as float64: t_i = 1e-10 ||H_i|| ||w||, far above float64 summation noise.
* parity stored as float32: adds eps32/2 ||H_i|| ||w|| (rounding of c_i = H_i w).
* trained-in (H w_exact = 0, w = fl32(w_exact)): |H_i (w - w_exact)| <= 2^-24 sum_j |H_ij||w_j|
  <= 2^-24 ||H_i|| ||w|| (Cauchy-Schwarz), so a clean tensor is never flagged.
Repairs are verified against ``VERIFY_FACTOR`` times the detection threshold (the float32
rounding of the repaired values adds at most the same order of noise again).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import scipy.linalg
import scipy.optimize

from .codes import CheckMatrix

EPS32 = float(np.finfo(np.float32).eps)
RTOL_FLOAT64 = 1e-10
VERIFY_FACTOR = 4.0


@dataclasses.dataclass
class DecodeResult:
    """Outcome of checking/repairing one block: status is "clean", "repaired" or "uncorrectable"."""

    status: str
    positions: np.ndarray
    erasures: int
    seconds: float
    residual: float
    corrected: np.ndarray | None = None
    iterations: int = 0
    reason: str = ""

    @property
    def errors(self) -> int:
        """Number of corrected positions (erasures included)."""
        return int(len(self.positions))


def syndrome_tolerance(
    h: CheckMatrix, w_norm: float, mode: str = "parity", parity_dtype: str = "float64"
) -> np.ndarray:
    """Per-check detection threshold t_i that a clean float32 tensor never exceeds."""
    if mode == "trained":
        rtol = 2.0**-24 * (1 + 1e-6) + RTOL_FLOAT64
    elif mode == "parity":
        if parity_dtype == "float64":
            rtol = RTOL_FLOAT64
        elif parity_dtype == "float32":
            rtol = EPS32 / 2 * (1 + 1e-6) + RTOL_FLOAT64
        else:
            raise ValueError(f"parity dtype must be float32 or float64, got {parity_dtype!r}")
    else:
        raise ValueError(f"mode must be 'parity' or 'trained', got {mode!r}")
    return rtol * h.row_norms * float(w_norm) + 1e-300


def find_erasures(w: np.ndarray, absmax: float | None) -> np.ndarray:
    """Mask of values that cannot be correct: non-finite, or |w| above the stored max |w|."""
    w = np.asarray(w)
    bad = ~np.isfinite(w)
    if absmax is not None:
        with np.errstate(invalid="ignore"):
            bad |= np.abs(w) > absmax
    return bad


def _fit(h: CheckMatrix, s: np.ndarray, t: np.ndarray, support: np.ndarray):
    """Least squares of s on the columns `support`; returns (ok, coefficients, max |r|/t)."""
    if len(support) == 0:
        ratio = float(np.max(np.abs(s) / t))
        return ratio <= 1.0, np.zeros(0), ratio
    a = h.columns(support)
    x, *_ = scipy.linalg.lstsq(a, s, lapack_driver="gelsy", check_finite=False)
    ratio = float(np.max(np.abs(s - a @ x) / t))
    return ratio <= 1.0, x, ratio


def _accept(h, s, t, support, erased, margin, augment=0):
    """Fit a candidate superset of the error support, prune, refit; return e or None."""
    support = np.union1d(support, erased).astype(np.int64)
    if len(support) > h.m - margin:
        return None
    ok, x, _ = _fit(h, s, t, support)
    for _ in range(augment):
        # A few missed (typically tiny) errors leave a residual that points at them: add the
        # columns best correlated with it, OMP style, and refit.
        room = h.m - margin - len(support)
        if ok or room <= 0:
            break
        r = s - h.columns(support) @ x
        score = np.abs(h.apply_T(r))
        score[support] = -1.0
        extra = np.argsort(-score)[:min(room, 8)]
        support = np.union1d(support, extra)
        ok, x, _ = _fit(h, s, t, support)
    if not ok:
        return None
    is_erased = np.isin(support, erased)
    colmax = np.abs(h.columns(support)).max(axis=0) if len(support) else np.zeros(0)
    noise = max(float(np.max(np.abs(x), initial=0.0)) * 1e-9, 0.0)
    keep = is_erased | (np.abs(x) * colmax > 1e-3 * float(t.min())) & (np.abs(x) > noise)
    pruned = support[keep]
    if len(pruned) < len(support):
        ok, x2, _ = _fit(h, s, t, pruned)
        if ok:
            support, x = pruned, x2
    unknown = len(support) - int(np.isin(support, erased).sum())
    if len(erased) + 2 * unknown > h.m - margin:
        return None
    e = np.zeros(h.n)
    e[support] = x
    return e


def solve_sparse(
    h: CheckMatrix,
    s: np.ndarray,
    t: np.ndarray,
    erased: np.ndarray | None = None,
    *,
    max_iter: int = 1500,
    check_every: int = 50,
    gamma: float = 0.1,
    reweight_after: int = 100,
    margin: int | None = None,
) -> tuple[np.ndarray | None, int]:
    """Find the sparsest e (free on `erased`) with |H e - s| <= t; returns (e or None, iterations)."""
    erased = np.zeros(0, np.int64) if erased is None else np.asarray(erased, np.int64)
    margin = max(8, h.m // 50) if margin is None else int(margin)
    t = np.asarray(t, dtype=np.float64) * VERIFY_FACTOR
    if len(erased):
        e = _accept(h, s, t, np.zeros(0, np.int64), erased, margin)
        if e is not None:
            return e, 0
    weight = np.ones(h.n)
    weight[erased] = 0.0
    x0 = h.apply_T(h.solve_gram(s))
    step = gamma * float(np.max(np.abs(x0[weight > 0]), initial=0.0))
    if step == 0.0:
        return None, 0
    budget = (h.m - margin - len(erased)) // 2
    if budget <= 0:
        return None, 0
    y = np.zeros(h.n)
    tried: set[bytes] = set()
    for it in range(1, max_iter + 1):
        e = y - h.apply_T(h.solve_gram(h.apply(y) - s))
        v = 2.0 * e - y
        z = np.sign(v) * np.maximum(np.abs(v) - step * weight, 0.0)
        y += z - e
        if it % check_every:
            continue
        nz = np.flatnonzero(z)
        cand = nz if len(nz) <= budget else np.argsort(-np.abs(e))[:budget]
        cand = np.setdiff1d(cand, erased)
        key = np.sort(cand).tobytes()
        if key not in tried and (len(nz) <= budget or it % (4 * check_every) == 0):
            tried.add(key)
            found = _accept(h, s, t, cand, erased, margin, augment=3 if len(nz) <= budget else 0)
            if found is not None:
                return found, it
        if reweight_after and it >= reweight_after:
            # Reweighted l1 (Candes, Wakin, Boyd): large entries are penalised less,
            # which recovers supports beyond the plain l1 limit.
            mag = np.abs(e)
            scale = max(float(np.sort(mag)[-budget]), 1e-12 * float(mag.max()))
            weight = scale / (mag + scale)
            weight[erased] = 0.0
    return None, max_iter


def _one_blas_thread():
    """Small least-squares fits run fastest on one BLAS thread; more threads only contend."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it BLAS keeps its own threading
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def decode_block(
    h: CheckMatrix,
    w: np.ndarray,
    reference: np.ndarray | None,
    tol: np.ndarray,
    absmax: float | None = None,
    **solver_options,
) -> DecodeResult:
    """Check one float32 block against its checks and repair it if possible (verified)."""
    start = time.perf_counter()
    w = np.asarray(w)
    if w.shape != (h.n,):
        raise ValueError(f"block has shape {w.shape}, code expects ({h.n},)")
    ref = np.zeros(h.m) if reference is None else np.asarray(reference, dtype=np.float64)
    erased_mask = find_erasures(w, absmax)
    erased = np.flatnonzero(erased_mask)
    x = w.astype(np.float64)
    x[erased_mask] = 0.0
    s = h.apply(x) - ref
    ratio = float(np.max(np.abs(s) / tol))
    if not len(erased) and ratio <= 1.0:
        return DecodeResult("clean", np.zeros(0, np.int64), 0, time.perf_counter() - start, ratio)
    with _one_blas_thread():
        e, iters = solve_sparse(h, s, tol, erased, **solver_options)

    def fail(reason: str, res: float = ratio) -> DecodeResult:
        return DecodeResult(
            "uncorrectable", np.zeros(0, np.int64), len(erased), time.perf_counter() - start,
            res, None, iters, reason,
        )

    if e is None:
        return fail("no sparse error pattern explains the syndrome")
    positions = np.flatnonzero(e)
    fixed = w.copy()
    fixed[positions] = (x[positions] - e[positions]).astype(w.dtype)
    # One refinement pass: refit the rounding left by float32 so exact weights come back bit-exact.
    if len(positions):
        s2 = h.apply(fixed.astype(np.float64)) - ref
        _, delta, _ = _fit(h, s2, tol * VERIFY_FACTOR, positions)
        refined = (fixed[positions].astype(np.float64) - delta).astype(w.dtype)
        if np.all(np.isfinite(refined)):
            fixed[positions] = refined
    positions, fixed = _drop_rounding_changes(h, w, fixed, positions, erased_mask, ref, tol)
    if not np.all(np.isfinite(fixed[positions])):
        return fail("repair produced non-finite values")
    if absmax is not None and np.any(np.abs(fixed[positions]) > absmax * (1 + 4 * EPS32)):
        return fail("repair produced values above the stored max |w|")
    res = float(np.max(np.abs(h.apply(fixed.astype(np.float64)) - ref) / tol))
    if res > VERIFY_FACTOR:
        return fail("repaired weights fail the checks", res)
    return DecodeResult(
        "repaired", positions, len(erased), time.perf_counter() - start, res, fixed, iters
    )


def _drop_rounding_changes(h, w, fixed, positions, erased_mask, ref, tol):
    """Keep the stored value wherever the repair only moved it by float rounding.

    The least-squares fit spreads rounding over every position of the support it found; those
    weights were not wrong, so they are left bit-identical and not counted as corrected, as long
    as the block still passes its checks.
    """
    if not len(positions):
        return positions, fixed
    old = w[positions].astype(np.float64)
    new = fixed[positions].astype(np.float64)
    with np.errstate(invalid="ignore"):
        small = np.isfinite(old) & ~erased_mask[positions] & (np.abs(new - old) <= 8 * EPS32 * np.abs(old))
    if not small.any():
        return positions, fixed
    pruned = fixed.copy()
    pruned[positions[small]] = w[positions[small]]
    res = float(np.max(np.abs(h.apply(pruned.astype(np.float64)) - ref) / tol))
    if res > VERIFY_FACTOR:
        return positions, fixed
    return positions[~small], pruned


def l1_decode_lp(
    h_dense: np.ndarray, s: np.ndarray, erased: np.ndarray | None = None
) -> tuple[np.ndarray | None, float]:
    """Baseline: min ||e||_1 (erasures free) s.t. H e = s as a standard LP with scipy HiGHS."""
    m, n = h_dense.shape
    free = np.zeros(n, bool)
    if erased is not None:
        free[np.asarray(erased, np.int64)] = True
    # e = u - v, u, v >= 0; erasure coordinates are unpenalised.
    cost = np.concatenate([np.where(free, 0.0, 1.0)] * 2)
    start = time.perf_counter()
    res = scipy.optimize.linprog(
        cost, A_eq=np.hstack([h_dense, -h_dense]), b_eq=s, bounds=(0, None), method="highs"
    )
    seconds = time.perf_counter() - start
    if res.status != 0:
        return None, seconds
    return res.x[:n] - res.x[n:], seconds
