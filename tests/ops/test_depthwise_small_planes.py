"""DepthwiseCheck on many small planes, where the kernel transposes groups of eight or sixteen
planes after writing their output in one pass (Y, or Relu(Y)): every row the oracle keeps is Y
(or Relu(Y)) bit for bit, every row it repairs is repaired, and the counts agree, with channel
runs that wrap past the last channel, a group tail of eight, and planes left to the scalar path."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import onnx_ecc
from onnx_ecc import ops
from onnx_ecc.ops.oracles import depthwise_check


def _model(nodes, inputs, outputs, initializers=()):
    info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in inputs + outputs]
    g = helper.make_graph(nodes, "g", info[:len(inputs)], info[len(inputs):], list(initializers))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.DOMAIN, 1)],
                             ir_version=9)


@pytest.mark.parametrize("activation", ["", "Relu"])
@pytest.mark.parametrize("size,c,n", [(7, 24, 5), (14, 17, 3), (5, 3, 9)])
def test_small_planes_output_and_counts_match_the_oracle(activation, size, c, n):
    rng = np.random.default_rng(size * 100 + c + len(activation))
    wt = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    x = rng.standard_normal((n, c, size, size)).astype(np.float32)
    conv = _model([helper.make_node("Conv", ["x", "w", "b"], ["y"], group=c, pads=[1, 1, 1, 1])], ["x"], ["y"],
                  [onnx.numpy_helper.from_array(wt, "w"), onnx.numpy_helper.from_array(b, "b")])
    y = ort.InferenceSession(conv.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    y[0, 1, 2, 3] += 4.0
    y[n - 1, c - 1, 0, :] = np.nan
    y[n // 2, c // 2, size - 1, 0] = -np.inf
    y.reshape(-1)[::997] = -0.0  # faults too (mostly); Relu's zero of -0 must match where kept
    attrs = dict(weights=onnx.numpy_helper.from_array(wt), bias=onnx.numpy_helper.from_array(b),
                 weight_sums=(wt.reshape(c, -1).astype(np.float64).sum(1) + b).tolist(), pads=[1, 1, 1, 1],
                 tolerance=64.0, activation=activation, layer=f"small{size}x{c}x{n}{activation}",
                 model_id="depthwise-small")
    node = ops.DEPTHWISE_CHECK.make_node(["X", "Y"], ["Z"], "op", **attrs)
    sess = ort.InferenceSession(_model([node], ["X", "Y"], ["Z"]).SerializeToString(),
                                sess_options=onnx_ecc.session_options(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"X": x, "Y": y})[0]
    want, counts = depthwise_check(x, y, **dict(attrs, weights=wt, bias=b))
    kept = np.all(want.view(np.uint32) == (np.maximum(y, 0) + 0 if activation else y).view(np.uint32), axis=3)
    kept_bits = (got.view(np.uint32) == want.view(np.uint32)).all(axis=3)
    assert kept_bits[kept].all()  # rows the oracle keeps: the same bits
    np.testing.assert_allclose(got[~kept], want[~kept], rtol=1e-5, atol=1e-5)
    layer = onnx_ecc.read_counters("depthwise-small")[attrs["layer"]]
    assert (layer.flagged, layer.corrected_blocks) == (counts["flagged"], counts["corrected_blocks"])
    assert counts["flagged"] >= 3 and kept.sum() > 0.9 * kept.size
