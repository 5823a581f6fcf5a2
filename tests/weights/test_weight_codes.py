"""Check-matrix families: fast apply/apply_T agree with the dense matrix, regeneration is deterministic."""

import numpy as np
import pytest
import scipy.fft

from onnx_ecc.weights.check_matrices import CheckMatrix, block_bounds, check_matrix, checks_for


@pytest.mark.parametrize("family", ["dct", "gaussian"])
def test_apply_matches_dense(family):
    h = CheckMatrix(family, 96, 30, seed=5)
    dense = h.dense()
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(96), rng.standard_normal(30)
    np.testing.assert_allclose(h.apply(x), dense @ x, atol=1e-12)
    np.testing.assert_allclose(h.apply_T(y), dense.T @ y, atol=1e-12)
    xs = rng.standard_normal((96, 3))
    np.testing.assert_allclose(h.apply(xs), dense @ xs, atol=1e-12)
    idx = np.array([0, 7, 95])
    np.testing.assert_allclose(h.columns(idx), dense[:, idx], atol=1e-15)


def test_dct_rows_are_scipy_dct_rows_and_orthonormal():
    h = CheckMatrix("dct", 64, 20, seed=1)
    signs, rows = h._dct_parts
    full = scipy.fft.dct(np.eye(64), norm="ortho", axis=0)  # independent oracle: full DCT matrix
    np.testing.assert_allclose(h.dense(), full[rows] * signs[None, :], atol=1e-12)
    np.testing.assert_allclose(h.dense() @ h.dense().T, np.eye(20), atol=1e-12)


@pytest.mark.parametrize("family", ["dct", "gaussian"])
def test_projection_and_determinism(family):
    h = check_matrix(family, 128, 40, 3, 1)
    x = np.random.default_rng(1).standard_normal(128)
    assert np.abs(h.dense() @ h.project_null(x)).max() < 1e-12
    np.testing.assert_array_equal(CheckMatrix(family, 128, 40, 3, 1).dense(), h.dense())
    assert not np.array_equal(CheckMatrix(family, 128, 40, 3, 2).dense(), h.dense())


def test_bad_parameters_raise():
    with pytest.raises(ValueError):
        CheckMatrix("hadamard", 10, 5)
    with pytest.raises(ValueError):
        CheckMatrix("dct", 10, 11)
    with pytest.raises(ValueError):
        checks_for(100, 10, 0.1)


def test_blocks_cover_range():
    bounds = block_bounds(20001, 8192)
    assert bounds[0][0] == 0 and bounds[-1][1] == 20001 and len(bounds) == 3
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert checks_for(5120, None, 0.2) == 1024 and checks_for(50, 1000, None) == 49
