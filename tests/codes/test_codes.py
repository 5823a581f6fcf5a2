"""The code itself: MDS generators, and the reference block decoder against brute force."""

import itertools

import numpy as np
import pytest

from onnx_ecc.codes import EPS32, BlockNoise, Layout, decode_block, generator


def _fixed(r, thr=1e-9):
    """A noise model with the same absolute threshold on every check."""
    return BlockNoise(np.zeros(r), np.full(r, thr), 1.0, xscale=1.0)


@pytest.mark.parametrize("block,parity", [(8, 2), (32, 2), (33, 2), (16, 3), (16, 4), (5, 5)])
def test_every_parity_columns_of_h_are_independent(block, parity):
    g = generator(block, parity)
    h = np.concatenate([g, -np.eye(parity)], axis=1)
    for cols in itertools.combinations(range(block + parity), parity):
        assert abs(np.linalg.det(h[:, cols])) > 1e-6, cols


def test_half_circle_columns_are_evenly_spread():
    g = generator(30, 2)
    angles = np.sort(np.concatenate([np.mod(np.arctan2(g[1], g[0]), np.pi), [0.0, np.pi / 2]]))
    gaps = np.diff(np.concatenate([angles, [np.pi]]))
    assert np.allclose(gaps, np.pi / 32)


def _codeword(rng, b, r):
    y = rng.standard_normal(b)
    return y, generator(b, r) @ y


@pytest.mark.parametrize("b,r", [(32, 2), (16, 3), (16, 4), (12, 5)])
def test_any_pattern_of_floor_r_half_errors_is_corrected(b, r):
    rng = np.random.default_rng(b * r)
    g = generator(b, r)
    for _ in range(200):
        y, p = _codeword(rng, b, r)
        yw, pw = y.copy(), p.copy()
        pos = rng.choice(b + r, size=r // 2, replace=False)
        for q in pos:
            e = rng.choice([-1, 1]) * 10 ** rng.uniform(-3, 30)
            if q < b:
                yw[q] += e
            else:
                pw[q - b] += e
        fixed, res = decode_block(yw, pw, g, _fixed(r))
        assert res.flagged and not res.uncorrectable
        assert np.allclose(fixed, y, atol=1e-6)


@pytest.mark.parametrize("b,r", [(32, 2), (16, 3), (16, 4)])
def test_up_to_r_errors_are_detected(b, r):
    rng = np.random.default_rng(7)
    g = generator(b, r)
    for _ in range(200):
        y, p = _codeword(rng, b, r)
        yw = y.copy()
        pos = rng.choice(b, size=rng.integers(1, r + 1), replace=False)
        yw[pos] += rng.uniform(0.5, 2.0, size=len(pos))
        _, res = decode_block(yw, p, g, _fixed(r), correct=False)
        assert res.flagged and res.uncorrectable


def test_erasures_are_recovered_from_the_checks():
    rng = np.random.default_rng(3)
    g = generator(16, 4)
    y, p = _codeword(rng, 16, 4)
    yw = y.copy()
    yw[[2, 9, 11]] = [np.nan, np.inf, -np.inf]
    fixed, res = decode_block(yw, p, g, _fixed(4))
    assert res.corrected == 3 and np.allclose(fixed, y)


def test_layout_augments_rows_per_group():
    lay = Layout(data_channels=8, block=3, parity=2, groups=2)
    assert lay.block_sizes == [3, 1]
    assert lay.total_channels == 2 * (4 + 4)
    w = np.arange(16.0).reshape(8, 2)
    aug = lay.augment_rows(w)
    assert aug.shape == (16, 2)
    assert np.allclose(aug[:4], w[:4]) and np.allclose(aug[8:12], w[4:])
    assert np.allclose(aug[4:8], lay.parity_matrix() @ w[:4])


def test_noise_bound_covers_float32_rounding():
    rng = np.random.default_rng(0)
    lay = Layout(64, 32, 2)
    w = rng.standard_normal((64, 300)).astype(np.float32)
    x = rng.standard_normal((1000, 300)).astype(np.float32)
    aug = lay.augment_rows(w).astype(np.float32)
    y = x @ aug.T
    gains, _ = lay.noise_bounds(w, None)
    gens = np.stack(lay.generators())                                   # [blocks, r, b]
    syn = np.einsum("krb,nkb->nkr", gens, y[:, :64].astype(np.float64).reshape(-1, 2, 32))
    syn = syn - y[:, 64:].reshape(-1, 2, 2)
    bound = EPS32 * np.array(gains).reshape(2, 2)[None] * np.abs(x).max(axis=1)[:, None, None]
    assert np.max(np.abs(syn) / bound) < 1.0


def test_output_scaled_thresholds_ignore_the_suspected_values():
    rng = np.random.default_rng(5)
    g = generator(32, 2)
    y, p = _codeword(rng, 32, 2)
    yw = y.copy()
    yw[7] = 3e37                                   # a flipped exponent bit, still finite
    noise = BlockNoise(np.abs(g).sum(axis=1) + 1, np.zeros(2), 64 * EPS32)
    fixed, res = decode_block(yw, p, g, noise)
    assert res.corrected == 1 and np.allclose(fixed, y)
    yw[9] = 2e37                                   # two gross errors: not mistaken for one
    _, res = decode_block(yw, p, g, noise)
    assert res.uncorrectable
