"""ParityCheck's row sweep (channels last, blocks of 32, parity 2: the AVX-512 quads where the CPU
has them) against the oracle: faults at every position of a quad of blocks and of its checks,
non-finite values, all-zero rows, a short last block, and every 8th row (stride 8)."""

from __future__ import annotations

import numpy as np
import onnx_ecc
import pytest

from onnx_ecc.codes import Layout
from onnx_ecc.ops.oracles import parity_check
from test_ops import _parity_attrs, _parity_model, _session


def _rows(rng, layout: Layout, rows: int, stride: int):
    """Y [rows, C] and P, the checks of every stride-th row, fault-free."""
    y = rng.standard_normal((rows, layout.data_channels))
    aug = layout.augment_rows(y[::stride].T).T
    return np.ascontiguousarray(y, np.float32), np.ascontiguousarray(aug[:, layout.data_channels:], np.float32)


def _flagged(y, p, attrs, layer):
    """Blocks the kernel flagged in one run."""
    before = onnx_ecc.read_counters("parity-rows").get(f"{layer} (parity check)")
    _session(_parity_model(dict(attrs, layer=layer, model_id="parity-rows"))).run(None, {"Y": y, "P": p})
    after = onnx_ecc.read_counters("parity-rows").get(f"{layer} (parity check)")
    return (after - before if before else after).flagged


@pytest.mark.parametrize("channels,stride", [(384, 1), (384, 8), (167, 1), (1024, 3)])
@pytest.mark.parametrize("kind", ["gross", "nan", "inf", "huge", "tiny"])
def test_row_faults_at_every_position_of_a_quad_match_the_oracle(channels, stride, kind):
    rng = np.random.default_rng(channels + stride)
    layout = Layout(channels, 32, 2)
    checks = 2 * len(layout.block_sizes)
    sampled = 2 * (channels + checks)  # one fault per sampled row: every value, then every check twice
    y, p = _rows(rng, layout, sampled * stride, stride)
    for i in range(sampled):
        pos = i % (channels + checks)
        t, j = (y, pos) if pos < channels else (p, pos - channels)
        r = i * stride if t is y else i
        v = t[r, j]
        t[r, j] = {"gross": v + 3.0, "nan": np.nan, "inf": np.inf if i % 2 else -np.inf, "huge": v * 1e20,
                   "tiny": v * (1 + 2e-7)}[kind]
    attrs = _parity_attrs(layout, axis=-1, stride=stride)
    _, want = parity_check(y, p, **attrs)
    assert _flagged(y, p, attrs, f"rows-{channels}-{stride}-{kind}") == want
    if kind != "tiny":
        assert want == sampled


def test_zero_and_clean_rows_pass():
    layout = Layout(384, 32, 2)
    y, p = _rows(np.random.default_rng(7), layout, 64, 1)
    y[::2] = 0.0
    y[1::4] = -0.0
    p[::2] = 0.0
    p[1::4] = -0.0
    attrs = _parity_attrs(layout, axis=-1)
    assert parity_check(y, p, **attrs)[1] == 0
    assert _flagged(y, p, attrs, "rows-zero") == 0
