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
* parity stored as float32 (the default): the stored check is c~_i = fl32(c_i), so
  |c~_i - c_i| <= 2^-24 |c_i| <= 2^-24 ||H_i|| ||w|| (Cauchy-Schwarz); t_i adds that term. A clean
  tensor is never flagged; the price is sensitivity: one error e_j is seen by check i only when
  |H_ij e_j| > t_i, i.e. above about 2^-24 n |w|_rms for the dct family (a block of 8192
  weights: changes below ~5e-4 of the weights' rms, the lowest ~11 mantissa bits, pass unseen,
  and are harmless; after a verified repair up to ~(VERIFY_FACTOR + 1) times that may be left:
  ``unseen_change``).
* trained-in (H w_exact = 0, w = fl32(w_exact)): |H_i (w - w_exact)| <= 2^-24 sum_j |H_ij||w_j|
  <= 2^-24 ||H_i|| ||w|| (Cauchy-Schwarz), so a clean tensor is never flagged.
Fits and repairs are verified against ``VERIFY_FACTOR`` = 4 times the detection threshold. With
d = c~ - c the checks' rounding, a least-squares fit on the true support leaves the residual
(I - P_S) d, whose entries are at most |d_i| + ||d||_2 <= 2 t_i (dct family, where ||H||_2 =
||H_i||_2 = 1; a little more for gaussian checks); the repaired values, rounded
to float32 (half an ulp each, <= 2^-24 ||H_i|| ||w_S|| <= t_i more), leave at most 3 t_i. A
float32 repair is therefore not always bit-exact: it lies within ``repair_bound`` (||d||_2 /
sigma_min(H_S), at worst ~100 ulps of the block's rms for 5% checks; measured: a few ulps) plus
half an ulp of the original.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import scipy.linalg
import scipy.optimize

from .check_matrices import CheckMatrix

EPS32 = float(np.finfo(np.float32).eps)
RTOL_FLOAT64 = 1e-10
# Unit roundoff of a check value stored in each dtype (1e-6: the float64 sum it is rounded from).
PARITY_ROUNDING = {"float64": 0.0, "float32": EPS32 / 2 * (1 + 1e-6)}
VERIFY_FACTOR = 4.0
KEEP_ULPS = 8  # a repair that moves a stored value by at most this many eps keeps the stored value


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


def parity_rtol(mode: str = "parity", parity_dtype: str = "float64") -> float:
    """Relative rounding of a check value: |c_i - stored c_i| <= rtol ||H_i|| ||w|| (see module doc)."""
    if mode == "trained":
        return 2.0**-24 * (1 + 1e-6) + RTOL_FLOAT64
    if mode != "parity":
        raise ValueError(f"mode must be 'parity' or 'trained', got {mode!r}")
    if parity_dtype not in PARITY_ROUNDING:
        raise ValueError(f"parity dtype must be one of {tuple(PARITY_ROUNDING)}, got {parity_dtype!r}")
    return PARITY_ROUNDING[parity_dtype] + RTOL_FLOAT64


def syndrome_tolerance(
    h: CheckMatrix, w_norm: float, mode: str = "parity", parity_dtype: str = "float64"
) -> np.ndarray:
    """Per-check detection threshold t_i that a clean float32 tensor never exceeds."""
    return parity_rtol(mode, parity_dtype) * h.row_norms * float(w_norm) + 1e-300


def repair_bound(h: CheckMatrix, support: np.ndarray, check_norm: float, w_norm: float,
                 parity_dtype: str = "float64") -> float:
    """Largest l2 error, over ``support``, that the stored checks' rounding leaves in a repair.

    A repair on a support S containing every error solves H_S x = s by least squares, with
    s = H_S e + d where d is the stored checks' rounding (||d||_2 <= u ||c||_2, u the parity
    dtype's unit roundoff, c = H w) plus the float64 noise of evaluating H w' (<= RTOL_FLOAT64
    ||H_i|| ||w|| per check); so ||x - e||_2 <= ||d||_2 / sigma_min(H_S). The rounding of each
    repaired value to the weights' dtype (half an ulp) comes on top.
    """
    parity_rtol("parity", parity_dtype)  # validates the dtype
    sigma = float(np.linalg.svd(h.columns(np.asarray(support, np.int64)), compute_uv=False).min())
    u = PARITY_ROUNDING[parity_dtype]
    rounding = u * float(check_norm) / (1.0 - u)  # ||c||_2 <= ||c~||_2 / (1 - u)
    noise = RTOL_FLOAT64 * float(np.linalg.norm(h.row_norms)) * float(w_norm)
    return (rounding + noise) / sigma


def unseen_change(h: CheckMatrix, positions: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """Per position j, the largest change of w_j alone that a verified block may still hold.

    A repair is accepted when every check is within VERIFY_FACTOR t_i of the stored value, and
    the stored check's own rounding is at most t_i, so a leftover change e_j passes unseen while
    |H_ij e_j| <= (VERIFY_FACTOR + 1) t_i for every check i. With float32 checks this is about
    5 * 2^-24 n |w|_rms / sqrt(2) for the dct family (|H_ij| <= sqrt(2 / n)): the checks'
    resolution, 1.7e-3 of the weights' rms in a block of 8192.
    """
    cols = np.abs(h.columns(np.asarray(positions, np.int64)))
    with np.errstate(divide="ignore"):
        return (VERIFY_FACTOR + 1.0) * np.min(np.asarray(tol)[:, None] / cols, axis=0)


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


def decode_weight_block(
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
    if absmax is not None and _above_absmax(h, fixed[positions], positions, absmax, tol):
        return fail("repair produced values above the stored max |w|")
    res = float(np.max(np.abs(h.apply(fixed.astype(np.float64)) - ref) / tol))
    if res > VERIFY_FACTOR:
        return fail("repaired weights fail the checks", res)
    return DecodeResult(
        "repaired", positions, len(erased), time.perf_counter() - start, res, fixed, iters
    )


def _above_absmax(h: CheckMatrix, values: np.ndarray, positions: np.ndarray, absmax: float,
                  tol: np.ndarray) -> bool:
    """True when a repaired value exceeds the stored max |w| by more than the fit's rounding.

    The checks' rounding d (|d_i| <= t_i) moves a least-squares repair on the support by at most
    ||d||_2 / sigma_min(H_S) <= ||t||_2 / sigma_min(H_S), about the checks' resolution
    (``unseen_change``): a block's largest weight, repaired, may come back that much above max
    |w| (tens of ulps with float32 checks, as seen on MobileNetV2's classifier).
    """
    over = np.abs(values.astype(np.float64)) > absmax * (1 + 4 * EPS32)
    if not over.any():
        return False
    sigma = float(np.linalg.svd(h.columns(positions), compute_uv=False).min())
    slack = float(np.linalg.norm(tol)) / sigma if sigma > 0 else np.inf
    return bool(np.any(np.abs(values[over].astype(np.float64)) > absmax * (1 + 4 * EPS32) + slack))


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
        small = np.isfinite(old) & ~erased_mask[positions] & (np.abs(new - old) <= KEEP_ULPS * EPS32 * np.abs(old))
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
