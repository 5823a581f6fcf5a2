"""Decoder: clean blocks stay clean, sparse errors and erasures are repaired exactly, LP oracle agrees."""

import numpy as np
import pytest

from onnx_ecc.weights.check_matrices import check_matrix
from onnx_ecc.weights.decode import (_above_absmax, decode_weight_block, find_erasures, l1_decode_lp, repair_bound,
                                     syndrome_tolerance)


def _setup(family="dct", n=1024, m=300, mode="parity", seed=0):
    rng = np.random.default_rng(seed)
    h = check_matrix(family, n, m, 11)
    w = (rng.uniform(-1, 1, n) * 0.05).astype(np.float32)
    if mode == "trained":
        w = h.project_null(w.astype(np.float64)).astype(np.float32)
        ref = None
    else:
        ref = h.apply(w.astype(np.float64))
    wd = w.astype(np.float64)
    tol = syndrome_tolerance(h, np.linalg.norm(wd), mode)
    return rng, h, w, ref, tol, float(np.abs(wd).max())


@pytest.mark.parametrize("mode", ["parity", "trained"])
@pytest.mark.parametrize("family", ["dct", "gaussian"])
def test_clean_is_clean(family, mode):
    _, h, w, ref, tol, amax = _setup(family, mode=mode)
    res = decode_weight_block(h, w, ref, tol, amax)
    assert res.status == "clean" and res.corrected is None


@pytest.mark.parametrize("family", ["dct", "gaussian"])
def test_sparse_gross_errors_repaired_bit_exact(family):
    rng, h, w, ref, tol, amax = _setup(family)
    for _ in range(3):
        bad = w.copy()
        pos = rng.choice(h.n, 50, replace=False)
        bad[pos] += (rng.standard_normal(50) * 0.02).astype(np.float32)  # stays below max|w|: no erasure hint
        res = decode_weight_block(h, bad, ref, tol, None)
        assert res.status == "repaired"
        np.testing.assert_array_equal(res.corrected, w)  # oracle: the original weights
        assert set(res.positions) == set(pos[bad[pos] != w[pos]])


def test_trained_mode_repairs_close_to_original():
    rng, h, w, ref, tol, amax = _setup("dct", mode="trained")
    bad = w.copy()
    pos = rng.choice(h.n, 40, replace=False)
    bad[pos] = rng.standard_normal(40).astype(np.float32)
    res = decode_weight_block(h, bad, ref, tol, amax)
    assert res.status == "repaired"
    np.testing.assert_allclose(res.corrected, w, atol=1e-6)


def test_erasures_nan_inf_and_huge():
    rng, h, w, ref, tol, amax = _setup()
    bad = w.copy()
    pos = rng.choice(h.n, 200, replace=False)  # more than m/2 = 150 but all erasures
    bad[pos[:50]] = np.nan
    bad[pos[50:100]] = np.inf
    bad[pos[100:]] = 3e38
    assert find_erasures(bad, amax).sum() == 200
    res = decode_weight_block(h, bad, ref, tol, amax)
    assert res.status == "repaired" and res.erasures == 200
    np.testing.assert_array_equal(res.corrected, w)


def test_too_many_errors_uncorrectable_and_nothing_returned():
    rng, h, w, ref, tol, amax = _setup(m=100)
    bad = w.copy()
    pos = rng.choice(h.n, 300, replace=False)
    bad[pos] += (rng.standard_normal(300) * 0.02).astype(np.float32)
    res = decode_weight_block(h, bad, ref, tol, None, max_iter=300)
    assert res.status == "uncorrectable" and res.corrected is None and res.reason


def test_single_ulp_flip_detected_with_float64_parity():
    _, h, w, ref, tol, amax = _setup()
    bad = w.copy()
    j = int(np.argmax(np.abs(w)))
    bad[j] = np.nextafter(bad[j], np.float32(np.inf) if bad[j] < 0 else np.float32(-np.inf))
    bad[j] = np.float32(bad[j] * 1.001)
    res = decode_weight_block(h, bad, ref, tol, amax)
    assert res.status == "repaired"
    np.testing.assert_array_equal(res.corrected, w)


def test_agrees_with_highs_lp_oracle():
    rng = np.random.default_rng(3)
    h = check_matrix("gaussian", 200, 80, 2)
    dense = h.dense()
    for k in (5, 15):
        e = np.zeros(200)
        pos = rng.choice(200, k, replace=False)
        e[pos] = rng.standard_normal(k)
        s = dense @ e
        e_lp, _ = l1_decode_lp(dense, s)
        w = np.zeros(200, np.float32)
        tol = syndrome_tolerance(h, 1.0)
        res = decode_weight_block(h, (w + e).astype(np.float32), np.zeros(80), tol, None)
        ours = np.zeros(200)
        ours[res.positions] = (w + e).astype(np.float32)[res.positions] - res.corrected[res.positions]
        assert res.status == "repaired"
        np.testing.assert_allclose(e_lp, ours, atol=1e-6)
        np.testing.assert_allclose(e_lp, e.astype(np.float32), atol=1e-6)


def _float32_checks(family, n=2048, m=400, seed=0, scale=0.05):
    """A block whose stored checks are rounded to float32 (the default), with its thresholds."""
    rng = np.random.default_rng(seed)
    h = check_matrix(family, n, m, seed)
    w = (rng.uniform(-1, 1, n) * scale).astype(np.float32)
    ref = h.apply(w.astype(np.float64)).astype(np.float32).astype(np.float64)
    tol = syndrome_tolerance(h, np.linalg.norm(w.astype(np.float64)), "parity", "float32")
    return rng, h, w, ref, tol


@pytest.mark.parametrize("family", ["dct", "gaussian"])
def test_float32_checks_never_flag_a_clean_block(family):
    for seed in range(10):
        _, h, w, ref, tol = _float32_checks(family, seed=seed, scale=10.0 ** -seed)
        assert decode_weight_block(h, w, ref, tol, None).status == "clean"
        assert np.abs(h.apply(w.astype(np.float64)) - ref).max() <= tol.min()  # the derived bound holds


@pytest.mark.parametrize("family", ["dct", "gaussian"])
def test_float32_checks_repair_within_their_rounding(family):
    rng, h, w, ref, tol = _float32_checks(family)
    for _ in range(3):
        bad = w.copy()
        pos = rng.choice(h.n, 40, replace=False)
        step = (0.01 + np.abs(rng.standard_normal(40)) * 0.02) * rng.choice([-1, 1], 40)
        bad[pos] = (bad[pos] + step).astype(np.float32)  # below max|w| + 0.05: no erasure hint needed
        res = decode_weight_block(h, bad, ref, tol, None)
        assert res.status == "repaired" and set(res.positions) == set(pos)
        # Oracle: the original weights. The repair lies within what the float32 rounding of the
        # checks explains through the fit (repair_bound) plus half an ulp of each value.
        bound = repair_bound(h, pos, np.linalg.norm(ref), np.linalg.norm(w.astype(np.float64)), "float32")
        assert bound < 1e-5 * np.abs(w).max()  # a few ulps of the weights, not a vacuous bound
        err = np.abs(res.corrected.astype(np.float64) - w)
        assert np.all(err[pos] <= bound + 2.0**-24 * np.abs(w[pos]) * 1.0001)
        assert np.all(err[np.setdiff1d(np.arange(h.n), pos)] == 0)  # nothing else touched


def test_max_guard_allows_the_fits_rounding_only():
    # A block's largest weight, repaired from float32 checks, may come back a few tens of ulps
    # above the stored max |w| (seen on MobileNetV2's classifier); the guard allows ||t||_2 /
    # sigma_min(H_S) above it, and still refuses a value clearly out of range.
    _, h, w, ref, tol = _float32_checks("dct", n=8192, m=400)
    amax = float(np.abs(w).max())
    support = np.arange(0, 8192, 200)
    slack = np.linalg.norm(tol) / np.linalg.svd(h.columns(support), compute_uv=False).min()
    assert 40 * 2.0**-24 * amax < slack < 1e-3 * amax
    near = np.full(len(support), amax * (1 + 40 * 2.0**-24), np.float32)
    assert not _above_absmax(h, near, support, amax, tol)
    assert _above_absmax(h, near * np.float32(1.01), support, amax, tol)
