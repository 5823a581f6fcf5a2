"""IntSampleCheck (the rerun strategy's exact check of int8 layers) against its numpy oracle, and its
errors on bad inputs and attributes (an error status, never a crash)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnx_ecc
from onnx_ecc import ops
from onnx_ecc.ops.oracles import int_sample_check
from onnx_ecc.runtime.counters import read_counters

MODEL_ID = "test-int-sample-check"
KEY = "layer (sample check)"  # the counters of a fast-path check, next to the layer's decoder


def _model(a_type, with_w: bool, with_bias: bool, **attrs):
    names = ["A", "Y", "W" if with_w else "", "Bias" if with_bias else "", "Flag"]
    node = ops.INT_SAMPLE_CHECK.make_node(names, ["Raised"], "check", layer="layer", model_id=MODEL_ID, **attrs)
    types = {"A": a_type, "Y": a_type, "W": TensorProto.INT8, "Bias": TensorProto.INT32, "Flag": TensorProto.BOOL}
    inputs = [helper.make_tensor_value_info(n, types[n], None) for n in names if n]
    g = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("Raised", TensorProto.BOOL, [1])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.DOMAIN, 1)],
                              ir_version=9)
    return ort.InferenceSession(model.SerializeToString(), sess_options=onnx_ecc.session_options(),
                                providers=["CPUExecutionProvider"])


def _sums(w, bias, axis):
    s = (w.astype(np.int64) if axis == 0 else w.astype(np.int64).T).reshape(w.shape[axis], -1).sum(axis=1)
    return [int(v) for v in (s if bias is None else s + bias)]


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("faults", [0, 1, 5])
@pytest.mark.parametrize("stride", [1, 3])
def test_rows_that_differ_anywhere_fail_and_equal_ones_pass(dtype, faults, stride):
    rng = np.random.default_rng(faults * 10 + stride)
    a = rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max + 1, (9, 3, 10, 16)).astype(dtype)
    y = a[..., ::stride, :].copy()
    for _ in range(faults):  # one changed bit at a random position of the copy or of a sampled row of A
        idx = tuple(int(rng.integers(0, d)) for d in y.shape)
        target, at = (y, idx) if rng.random() < 0.5 else (a, idx[:2] + (idx[2] * stride,) + idx[3:])
        target.view(np.uint8)[at] ^= np.uint8(1 << int(rng.integers(0, 8)))
    sess = _model(TensorProto.UINT8 if dtype == np.uint8 else TensorProto.INT8, False, False, data_channels=16,
                  row_stride=stride)
    before = read_counters(MODEL_ID).get(KEY)
    raised = bool(sess.run(None, {"A": a, "Y": y, "Flag": np.array([False])})[0][0])
    want, failed = int_sample_check(a, y, data_channels=16, row_stride=stride)
    assert raised == want == (faults > 0)
    after = read_counters(MODEL_ID)[KEY]
    d = after - before if before is not None else after
    assert d.vectors == y.size // 16 and d.flagged == failed >= min(faults, 1)
    if stride > 1:  # rows of A the copy does not sample are not compared
        clean = rng.integers(0, 100, a.shape).astype(dtype)
        changed = clean.copy()
        changed[..., 1, :] += np.array(1, dtype)
        assert not sess.run(None, {"A": changed, "Y": clean[..., ::stride, :].copy(), "Flag": np.array([False])})[0][0]
    # an earlier check's flag passes through
    assert bool(sess.run(None, {"A": a, "Y": a[..., ::stride, :].copy(), "Flag": np.array([True])})[0][0])


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("with_bias", [False, True])
def test_a_flipped_weight_bit_fails_every_sample_even_where_the_samples_agree(axis, with_bias):
    rng = np.random.default_rng(axis * 2 + with_bias)
    w = rng.integers(-128, 128, (12, 5, 3, 3) if axis == 0 else (40, 12)).astype(np.int8)
    bias = rng.integers(-10**6, 10**6, 12).astype(np.int32) if with_bias else None
    attrs = dict(data_channels=12, weight_axis=axis, filter_sums=_sums(w, bias, axis))
    sess = _model(TensorProto.UINT8, True, with_bias, **attrs)
    a = rng.integers(0, 256, (4, 12, 2, 2)).astype(np.uint8)
    feeds = {"A": a, "Y": a, "W": w, "Flag": np.array([False])}
    if with_bias:
        feeds["Bias"] = bias
    assert not sess.run(None, feeds)[0][0]
    for bit in range(8):
        bad = w.copy()
        idx = tuple(int(rng.integers(0, d)) for d in w.shape)
        bad.view(np.uint8)[idx] ^= np.uint8(1 << bit)
        raised = bool(sess.run(None, dict(feeds, W=bad))[0][0])
        assert raised == int_sample_check(a, a, bad, bias, **attrs)[0] is True
    if with_bias:
        b = bias.copy()
        b[3] ^= np.int32(1 << 20)
        assert sess.run(None, dict(feeds, Bias=b))[0][0]


@pytest.mark.parametrize("change,message", [
    (dict(Y=np.zeros((2, 4, 2), np.uint8)), "Y must have A's shape but every row_stride-th row"),
    (dict(W=np.zeros((5, 3), np.int8)), "W must be int8 with 4 output channels"),
])
def test_bad_inputs_return_an_error_status(change, message):
    attrs = dict(data_channels=4, filter_sums=[0, 0, 0, 0])
    sess = _model(TensorProto.UINT8, True, False, **attrs)
    feeds = dict({"A": np.zeros((2, 4, 3), np.uint8), "Y": np.zeros((2, 4, 3), np.uint8),
                  "W": np.zeros((4, 3), np.int8), "Flag": np.array([False])}, **change)
    with pytest.raises(Exception, match=message):
        sess.run(None, feeds)


def test_bad_attributes_are_refused_when_the_session_starts():
    with pytest.raises(Exception, match="filter_sums needs one value per output channel"):
        _model(TensorProto.UINT8, True, False, data_channels=4, filter_sums=[0, 0])
    with pytest.raises(Exception, match="row_stride must be >= 1"):
        _model(TensorProto.UINT8, False, False, data_channels=4, row_stride=0)
    with pytest.raises(Exception, match="weight_axis must be 0 or 1"):
        _model(TensorProto.UINT8, True, False, data_channels=4, weight_axis=2, filter_sums=[0] * 4)


def test_large_weights_are_summed_in_parallel_tasks_and_any_flipped_bit_fails():
    """Weights of 2^19 values: the channels are summed in parallel tasks (of about 64 KB); a flipped
    bit in the first, a middle or the last channel, at the start or in a row's tail, is seen."""
    rng = np.random.default_rng(7)
    w = rng.integers(-128, 128, (64, 8195)).astype(np.int8)
    attrs = dict(data_channels=64, filter_sums=_sums(w, None, 0))
    sess = _model(TensorProto.UINT8, True, False, **attrs)
    a = np.zeros((2, 64, 1, 1), np.uint8)
    feeds = {"A": a, "Y": a, "W": w, "Flag": np.array([False])}
    assert not sess.run(None, feeds)[0][0]
    for idx in [(0, 0), (31, 4000), (63, 8194), (63, 8180)]:
        bad = w.copy()
        bad.view(np.uint8)[idx] ^= np.uint8(1 << int(rng.integers(0, 8)))
        assert sess.run(None, dict(feeds, W=bad))[0][0], idx
        assert int_sample_check(a, a, bad, **attrs)[0]
