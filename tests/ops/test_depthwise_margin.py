"""DepthwiseCheck at its threshold: rows with one wrong value of 0.5 to 2 times the row's threshold
(tolerance * eps32 * bound) are flagged exactly where the float64 oracle flags them. On small planes
the kernel's float32 pre-filter checks eight planes at a time and passes them only with room for
its own rounding, leaving every row near the threshold to the double-precision test; one wrong
row per eight planes makes the filter's verdict on it count. A filter passing too much would miss
the errors just above one threshold, one flagging too much would repair rows the oracle keeps."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import onnx_ecc
from onnx_ecc import ops
from onnx_ecc.ops.oracles import EPS32, depthwise_check


def _model(nodes, inputs, outputs, initializers=()):
    info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in inputs + outputs]
    g = helper.make_graph(nodes, "g", info[:len(inputs)], info[len(inputs):], list(initializers))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.DOMAIN, 1)],
                             ir_version=9)


def _row_bounds(x, wt, b, pads, ho, wo):
    """Per (sample, channel, output row): |b| W_out + sum over the row's windows of |w x| (the oracle's bound)."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    kh, kw = wt.shape[2:]
    cols_abs = np.zeros(x.shape[:2] + (ho, wo))
    for i in range(kh):
        for j in range(kw):
            cols_abs += np.abs(wt[None, :, 0, i, j, None, None].astype(np.float64) * xp[:, :, i:i + ho, j:j + wo])
    return (cols_abs + np.abs(b.astype(np.float64))[None, :, None, None]).sum(axis=3)


@pytest.mark.parametrize("size,k,pads,tolerance", [(7, 3, (1, 1, 1, 1), 64.0), (14, 3, (1, 1, 1, 1), 64.0),
                                                    (28, 3, (1, 1, 1, 1), 64.0), (14, 5, (2, 2, 2, 2), 64.0),
                                                    (7, 3, (0, 0, 0, 0), 64.0), (14, 3, (1, 1, 1, 1), 16.0)])
def test_rows_near_the_threshold_are_flagged_as_the_oracle_flags_them(size, k, pads, tolerance):
    rng = np.random.default_rng(size * 10 + k)
    c = 16
    n = max(2, 100352 // (c * size * size))  # 128 samples (256 groups of eight planes) at 7x7
    wt = rng.standard_normal((c, 1, k, k)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    x = rng.standard_normal((n, c, size, size)).astype(np.float32)
    conv = _model([helper.make_node("Conv", ["x", "w", "b"], ["y"], group=c, pads=list(pads))], ["x"], ["y"],
                  [onnx.numpy_helper.from_array(wt, "w"), onnx.numpy_helper.from_array(b, "b")])
    y = ort.InferenceSession(conv.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    ho, wo = y.shape[2:]
    bounds = _row_bounds(x, wt, b, pads, ho, wo)
    # One wrong value per eight planes (plane p: sample p // c, channel p % c), of s thresholds,
    # s log-uniform in [0.5, 2].
    planes = np.arange(0, n * c, 8) + rng.integers(0, 8, n * c // 8)
    rows = [(p // c, p % c, rng.integers(ho)) for p in planes]
    s = np.exp(rng.uniform(np.log(0.5), np.log(2.0), len(rows)))
    for (si, ch, r), sv in zip(rows, s):
        col = rng.integers(wo)
        y[si, ch, r, col] += np.float32(rng.choice([-1, 1]) * sv * tolerance * EPS32 * bounds[si, ch, r])
    attrs = dict(weights=onnx.numpy_helper.from_array(wt), bias=onnx.numpy_helper.from_array(b),
                 weight_sums=(wt.reshape(c, -1).astype(np.float64).sum(1) + b).tolist(), pads=list(pads),
                 tolerance=tolerance, layer=f"margin{size}x{k}{pads}{tolerance}", model_id="depthwise-margin")
    node = ops.DEPTHWISE_CHECK.make_node(["X", "Y"], ["Z"], "op", **attrs)
    sess = ort.InferenceSession(_model([node], ["X", "Y"], ["Z"]).SerializeToString(),
                                sess_options=onnx_ecc.session_options(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"X": x, "Y": y})[0]
    want, counts = depthwise_check(x, y, **dict(attrs, weights=wt, bias=b))
    flagged_kernel = np.any(got != y, axis=3)  # a flagged row is recomputed, so it changes
    flagged_oracle = np.any(want != y, axis=3)
    assert 0.25 * len(rows) < flagged_oracle.sum() < 0.75 * len(rows)  # both sides of the threshold are hit
    np.testing.assert_array_equal(flagged_kernel, flagged_oracle)
    layer = onnx_ecc.read_counters("depthwise-margin")[attrs["layer"]]
    assert (layer.flagged, layer.corrected_blocks) == (counts["flagged"], counts["corrected_blocks"])
