"""IntDecode, Int32Decode and Im2ColNhwc (the ops of int8 layers) against their numpy oracles."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import onnx_ecc
from onnx_ecc import ops
from onnx_ecc.codes import integer
from onnx_ecc.ops.oracles import im2col_nhwc, int32_decode, int_decode
from onnx_ecc.runtime.counters import read_counters


def _model(decl, x_type, z_type, attrs):
    node = decl.make_node(["X"], ["Z"], "op", **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", x_type, None)],
                          [helper.make_tensor_value_info("Z", z_type, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.DOMAIN, 1)],
                             ir_version=9)


def _run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), sess_options=onnx_ecc.session_options(),
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {"X": x})[0]


def _layer(rng, m, k, block, parity, rows, with_bias=True):
    """Accumulators [rows, M + P] of a random int8 layer with its digit columns, and IntDecode's attributes."""
    w = rng.integers(-128, 128, (m, k)).astype(np.int8)
    digits, planes, g = integer.parity_rows(w, block, parity)
    x = rng.integers(-128, 128, (rows, k)).astype(np.int64)
    y = (x @ np.concatenate([w, digits]).astype(np.int64).T).astype(np.int32)
    bias = rng.integers(-5000, 5000, m) if with_bias else None
    attrs = dict(data_channels=m, block=block, parity=parity, generator=[int(v) for v in g.ravel()],
                 planes=planes, scale=[float(v) for v in rng.uniform(1e-4, 3e-3, m).astype(np.float32)],
                 zero_point=int(rng.integers(0, 256)), layer="int-layer", model_id="test-int-ops")
    if with_bias:
        attrs.update(bias=[int(v) for v in bias], bias_parity=integer.bias_parity(bias, block, parity))
    return y, attrs


@pytest.mark.parametrize("m,block,parity", [(40, 32, 2), (64, 32, 2), (10, 4, 3), (33, 8, 1)])
@pytest.mark.parametrize("faults", [0, 1, 3])
def test_int_decode_matches_its_oracle(m, block, parity, faults):
    rng = np.random.default_rng(m * 10 + faults)
    y, attrs = _layer(rng, m, 75, block, parity, rows=97)
    for _ in range(faults * 20):  # wrong accumulators anywhere, data or digit columns
        y[rng.integers(0, y.shape[0]), rng.integers(0, y.shape[1])] += int(rng.integers(-10**6, 10**6))
    want, counts = int_decode(y, **attrs)
    got = _run(_model(ops.INT_DECODE, TensorProto.INT32, TensorProto.UINT8, attrs), y)
    np.testing.assert_array_equal(got, want)
    if faults == 0:
        assert counts["flagged"] == 0


def test_int_decode_corrects_every_single_wrong_accumulator_and_counts_it():
    rng = np.random.default_rng(1)
    y, attrs = _layer(rng, 64, 50, 32, 2, rows=64)
    attrs["model_id"] = "test-int-single"
    clean, _ = int_decode(y, **attrs)
    bad = y.copy()
    for row in range(64):  # one gross error per row, in every data channel in turn
        bad[row, row] += (-1) ** row * (1 << 20)
    got = _run(_model(ops.INT_DECODE, TensorProto.INT32, TensorProto.UINT8, attrs), bad)
    np.testing.assert_array_equal(got, clean)
    c = read_counters("test-int-single")["int-layer"]
    assert (c.flagged, c.corrected_values, c.uncorrectable) == (64, 64, 0)


def test_int_decode_repairs_a_corrupted_bias():
    rng = np.random.default_rng(2)
    y, attrs = _layer(rng, 40, 20, 32, 2, rows=5)
    clean, _ = int_decode(y, **attrs)
    attrs["bias"] = list(attrs["bias"])
    attrs["bias"][7] ^= 1 << 12
    got = _run(_model(ops.INT_DECODE, TensorProto.INT32, TensorProto.UINT8, attrs), y)
    np.testing.assert_array_equal(got, clean)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("kernel,strides,pads,dil", [((3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
                                                     ((3, 2), (2, 1), (0, 1, 2, 0), (1, 2)),
                                                     ((1, 1), (2, 2), (0, 0, 0, 0), (1, 1))])
@pytest.mark.parametrize("channels", [5, 1])
def test_im2col_nhwc_matches_its_oracle(dtype, kernel, strides, pads, dil, channels):
    rng = np.random.default_rng(3)
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, (2, 7, 9, channels)).astype(dtype)
    attrs = dict(kernel_shape=list(kernel), strides=list(strides), pads=list(pads), dilations=list(dil), pad_value=131)
    x_type = TensorProto.UINT8 if dtype == np.uint8 else TensorProto.INT8
    got = _run(_model(ops.IM2COL_NHWC, x_type, TensorProto.UINT8, attrs), x)
    np.testing.assert_array_equal(got, im2col_nhwc(x, **attrs))


@pytest.mark.parametrize("case", ["y_float", "y_channels", "bad_generator", "bad_planes", "x_rank", "x_float"])
def test_bad_inputs_and_attributes_give_ort_errors(case):
    rng = np.random.default_rng(4)
    y, attrs = _layer(rng, 8, 8, 4, 2, rows=3)
    if case.startswith("x_"):
        x = rng.integers(0, 255, (2, 3, 3) if case == "x_rank" else (1, 3, 3, 2)).astype(np.uint8)
        model = _model(ops.IM2COL_NHWC, TensorProto.FLOAT if case == "x_float" else TensorProto.UINT8,
                       TensorProto.UINT8, dict(kernel_shape=[2, 2]))
        feed = x.astype(np.float32) if case == "x_float" else x
    else:
        if case == "bad_generator":
            attrs["generator"] = [2] * len(attrs["generator"])
        if case == "bad_planes":
            attrs["planes"] = attrs["planes"][:-1]
        model = _model(ops.INT_DECODE, TensorProto.FLOAT if case == "y_float" else TensorProto.INT32,
                       TensorProto.UINT8, attrs)
        feed = y.astype(np.float32) if case == "y_float" else (y[:, :-1] if case == "y_channels" else y)
    with pytest.raises(Exception) as err:
        _run(model, feed)
    assert "onnx-ecc" in str(err.value) or "Type" in str(err.value)


def _int32_attrs(attrs):
    """IntDecode's attributes less the requantisation's (Int32Decode has none)."""
    return {k: v for k, v in attrs.items() if k not in ("scale", "zero_point")}


@pytest.mark.parametrize("layout", ["rows", "tokens", "nchw"])
@pytest.mark.parametrize("m,block,parity", [(40, 32, 2), (10, 4, 3), (33, 8, 1)])
@pytest.mark.parametrize("faults", [0, 1, 3])
@pytest.mark.parametrize("with_bias", [True, False])
def test_int32_decode_matches_its_oracle(layout, m, block, parity, faults, with_bias):
    """Corrected accumulators (+ bias) in int32 on channels-last rows, [N, T, C] tokens and NCHW planes
    (axis 1, positions in spans of 64 and a remainder), with wrong values anywhere."""
    rng = np.random.default_rng(m * 100 + faults * 10 + with_bias)
    y, attrs = _layer(rng, m, 75, block, parity, rows=2 * 77, with_bias=with_bias)
    attrs = _int32_attrs(attrs)
    for _ in range(faults * 20):
        y[rng.integers(0, y.shape[0]), rng.integers(0, y.shape[1])] += int(rng.integers(-10**6, 10**6))
    if layout == "tokens":
        y = y.reshape(2, 77, -1)
    elif layout == "nchw":  # [N, C, H, W]: 2 samples of 7 x 11 positions
        y = np.ascontiguousarray(y.reshape(2, 7, 11, -1).transpose(0, 3, 1, 2))
        attrs["axis"] = 1
    want, counts = int32_decode(y, **attrs)
    got = _run(_model(ops.INT32_DECODE, TensorProto.INT32, TensorProto.INT32, attrs), y)
    assert got.dtype == np.int32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    if faults == 0:
        assert counts["flagged"] == 0
        # fault-free: exactly the data accumulators plus the bias, int32
        data = np.take(y, np.arange(m), axis=attrs.get("axis", -1)).astype(np.int64)
        bias = np.asarray(attrs.get("bias", np.zeros(m)), np.int64)
        np.testing.assert_array_equal(got, _plus_bias(data, bias, attrs.get("axis", -1)))


def _plus_bias(data, bias, axis):
    shape = [1] * data.ndim
    shape[axis] = len(bias)
    return data + bias.reshape(shape)


@pytest.mark.parametrize("axis", [-1, 1])
def test_int32_decode_corrects_every_single_wrong_accumulator_and_counts_it(axis):
    rng = np.random.default_rng(5)
    y, attrs = _layer(rng, 64, 50, 32, 2, rows=64)
    attrs = dict(_int32_attrs(attrs), model_id=f"test-int32-single-{axis}", axis=axis)
    clean = (y[:, :64].astype(np.int64) + np.asarray(attrs["bias"])).astype(np.int32)
    bad = y.copy()
    for row in range(64):  # one gross error per row, in every data channel in turn
        bad[row, row] += (-1) ** row * (1 << 24)
    if axis == 1:  # the same values as [1, C, 8, 8]
        bad, clean = (np.ascontiguousarray(a.T.reshape(1, -1, 8, 8)) for a in (bad, clean))
    got = _run(_model(ops.INT32_DECODE, TensorProto.INT32, TensorProto.INT32, attrs), bad)
    np.testing.assert_array_equal(got, clean)
    c = read_counters(attrs["model_id"])["int-layer"]
    assert (c.flagged, c.corrected_values, c.uncorrectable) == (64, 64, 0)


def test_int32_decode_repairs_a_corrupted_bias_and_detects_in_detect_mode():
    rng = np.random.default_rng(6)
    y, attrs = _layer(rng, 40, 20, 32, 2, rows=5)
    attrs = _int32_attrs(attrs)
    clean, _ = int32_decode(y, **attrs)
    attrs["bias"] = list(attrs["bias"])
    attrs["bias"][7] ^= 1 << 12
    np.testing.assert_array_equal(_run(_model(ops.INT32_DECODE, TensorProto.INT32, TensorProto.INT32, attrs), y), clean)
    bad = y.copy()
    bad[2, 3] += 999
    attrs.update(mode="detect", fail_stop=1)
    with pytest.raises(Exception, match="uncorrectable"):
        _run(_model(ops.INT32_DECODE, TensorProto.INT32, TensorProto.INT32, attrs), bad)


@pytest.mark.parametrize("case", ["y_float", "y_channels", "bad_axis", "bad_generator", "bad_planes", "bad_parity",
                                  "bad_bias_parity", "bad_mode", "bias_range"])
def test_int32_decode_bad_inputs_and_attributes_give_ort_errors(case):
    rng = np.random.default_rng(7)
    y, attrs = _layer(rng, 8, 8, 4, 2, rows=3)
    attrs = _int32_attrs(attrs)
    feed = y
    if case == "y_float":
        feed = y.astype(np.float32)
    if case == "y_channels":
        feed = y[:, :-1]
    if case == "bad_axis":
        attrs["axis"] = 2
    if case == "bad_generator":
        attrs["generator"] = [2] * len(attrs["generator"])
    if case == "bad_planes":
        attrs["planes"] = attrs["planes"][:-1]
    if case == "bad_parity":
        attrs["parity"] = 5
    if case == "bad_bias_parity":
        attrs["bias_parity"] = attrs["bias_parity"][:-1]
    if case == "bad_mode":
        attrs["mode"] = "fix"
    if case == "bias_range":
        attrs["bias"] = [1 << 40] + list(attrs["bias"][1:])
    model = _model(ops.INT32_DECODE, TensorProto.FLOAT if case == "y_float" else TensorProto.INT32, TensorProto.INT32,
                   attrs)
    with pytest.raises(Exception) as err:
        _run(model, feed)
    message = str(err.value)
    assert ("onnx-ecc" in message and "Int32Decode" in message) or "Type" in message, message


@pytest.mark.parametrize("pad", [0, 77, 255])
def test_im2col_nhwc_pads_with_the_run_time_pad_value_when_given(pad):
    """PadValue (a run-time zero point) overrides the pad_value attribute; a bad PadValue is an ORT error."""
    rng = np.random.default_rng(10)
    x = rng.integers(0, 256, (2, 5, 6, 3)).astype(np.uint8)
    attrs = dict(kernel_shape=[3, 3], pads=[1, 2, 1, 0], pad_value=9)
    node = ops.IM2COL_NHWC.make_node(["X", "P"], ["Z"], "op", **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.UINT8, None),
                                        helper.make_tensor_value_info("P", TensorProto.UINT8, None)],
                          [helper.make_tensor_value_info("Z", TensorProto.UINT8, None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.DOMAIN, 1)],
                              ir_version=9)
    sess = ort.InferenceSession(model.SerializeToString(), sess_options=onnx_ecc.session_options(),
                                providers=["CPUExecutionProvider"])
    got = sess.run(None, {"X": x, "P": np.array(pad, np.uint8)})[0]
    np.testing.assert_array_equal(got, im2col_nhwc(x, **dict(attrs, pad_value=pad)))
    with pytest.raises(Exception, match="PadValue must be one uint8"):
        sess.run(None, {"X": x, "P": np.array([1, 2], np.uint8)})
