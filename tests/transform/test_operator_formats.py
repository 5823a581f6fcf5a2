"""int8 models in onnxruntime's operator formats: quantize_static with QuantFormat.QOperator
(QLinearConv, com.microsoft:QGemm, QLinearMatMul; calibrated on real images) and quantize_dynamic
(ConvInteger / MatMulInteger with int32 outputs). On the pretrained MNIST CNN, the Fashion-MNIST MLP
and the zoo BERT-style encoder: outputs bit-identical to the quantised original with no alarm (the
int32 outputs of the integer layers too), every layer covered and named as in the user's model, a
gross wrong accumulator in every output vector of every protected layer corrected, and int8 weight
bit flips (bits 0-7) that change the original's output corrected."""

from __future__ import annotations

import collections
import functools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnx_ecc
from onnx_ecc.runtime.counters import read_counters
from onnx_ecc.transform.calibration import probe
from onnx_ecc.transform.record import read_protection
from conftest import pretrained_with_data
from test_int8 import _flip, _fused, _protected, _run, _with_accumulator_faults

pytest.importorskip("onnxruntime.quantization")

LAYER_OPS = ("QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger")


@functools.lru_cache(maxsize=None)
def _case(name: str, fmt: str):
    """(quantised model, protected model, inputs) of a zoo model, once per session: real test images for the
    pretrained models, seeded random token embeddings for the encoder (random weights, no data of its own)."""
    pytest.importorskip("torch")
    from onnx_ecc import zoo
    from onnx_ecc.zoo.quantised import quantize_dynamic_int8, quantize_operator

    model, data = (zoo.bert_encoder(), None) if name == "bert_encoder" else pretrained_with_data(name)
    shape = (-1,) + tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:])
    if data is None:
        x = np.random.default_rng(0).standard_normal((16,) + shape[1:]).astype(np.float32)
    else:
        x = data.x_test[:200].reshape(shape).astype(np.float32)
    if fmt == "dynamic":
        quantised = quantize_dynamic_int8(model)
    else:
        calibration = data.x_train[:128].reshape(shape) if data is not None else x
        quantised = quantize_operator(model, calibration, fmt)
    return quantised, onnx_ecc.transform(quantised), x


CASES = [("mnist_cnn", "u8s8"), ("mnist_cnn", "s8s8_pc"), ("mnist_cnn", "dynamic"), ("fashion_mlp", "u8s8"),
         ("fashion_mlp", "s8s8_pc"), ("fashion_mlp", "dynamic"), ("bert_encoder", "dynamic"),
         ("bert_encoder", "u8s8")]  # QLinearMatMul (its 12 products of two activations stay as they are)


def _layers(quantised) -> dict[str, onnx.NodeProto]:
    """The quantised model's integer layers with a constant weight, by name."""
    inits = {t.name for t in quantised.graph.initializer}
    return {n.name: n for n in quantised.graph.node if n.op_type in LAYER_OPS and n.input[3 if n.op_type.startswith("Q") else 1] in inits}


@pytest.mark.parametrize("name,fmt", CASES)
def test_operator_format_model_is_bit_identical_with_no_alarm_and_every_layer_covered(name, fmt):
    quantised, protected, x = _case(name, fmt)
    record = read_protection(protected)
    layers = _layers(quantised)
    int_layers = {p["name"]: p for p in record["protected"] if p["kind"] == "int-code"}
    assert set(int_layers) == set(layers) and layers, record["skipped"]
    assert all(p["op"] == layers[n].op_type and p["dtype"] == "int8" for n, p in int_layers.items())
    assert not any(s["op"] in LAYER_OPS and s["name"] in layers for s in record["skipped"])
    names = {n.name for n in protected.graph.node}
    assert set(layers) <= names  # the layer keeps the user's name
    assert not [n.name for n in protected.graph.node if n.name in layers and n.op_type in ("QLinearConv", "QLinearMatMul",
                                                                                           "QGemm")]
    want = _run(_fused(quantised), x)
    got = _run(_protected(protected), x)
    np.testing.assert_array_equal(got, want)
    counts = read_counters(record["model_id"])
    assert set(int_layers) <= set(counts)
    assert sum(c.flagged for c in counts.values()) == 0
    if fmt == "dynamic":  # the integer layers' own int32 outputs, bit for bit
        outs = [n.output[0] for n in layers.values()]
        feeds = {quantised.graph.input[0].name: x[:64]}
        a, b = probe(quantised, outs)(feeds), probe(protected, outs)(feeds)
        for t in outs:
            assert b[t].dtype == np.int32
            np.testing.assert_array_equal(b[t], a[t], err_msg=t)


def test_inspect_shows_the_operator_format_layers_as_covered():
    from onnx_ecc.transform.inspection import format_report

    for name, fmt in (("mnist_cnn", "u8s8"), ("mnist_cnn", "dynamic"), ("bert_encoder", "dynamic")):
        quantised, protected, _ = _case(name, fmt)
        report = format_report(protected)
        for op in {n.op_type for n in _layers(quantised).values()}:
            assert f"not covered: {op}" not in report, report
        assert "int8 R=2 per 32, exact" in report
        if name == "mnist_cnn":  # every linear layer, their multiply-adds counted (QGemm's too)
            n = len(_layers(quantised))
            assert f"coverage: {n} of {n} linear layer(s) protected, 100.0% of the linear layers' multiply-adds" \
                in report, report


def _decode_axes(protected) -> dict[str, int]:
    """The channel axis of each protected layer's accumulators (its IntDecode / Int32Decode's axis)."""
    out = {}
    for n in protected.graph.node:
        if n.op_type in ("IntDecode", "Int32Decode"):
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            out[attrs["layer"].decode()] = int(attrs.get("axis", -1))
    return out


def _gross_faults(shape, axis, rng) -> np.ndarray:
    """One error of +-2^24 in every output vector (a random data or digit channel of each)."""
    moved = (shape[:axis] + shape[axis + 1:] + (shape[axis],)) if axis != -1 else shape
    f = np.zeros(moved, np.int32).reshape(-1, moved[-1])
    f[np.arange(len(f)), rng.integers(0, moved[-1], len(f))] = rng.choice([-1, 1], len(f)) * (1 << 24)
    return np.moveaxis(f.reshape(moved), -1, axis) if axis != -1 else f.reshape(shape)


@pytest.mark.parametrize("name,fmt", CASES)
def test_a_gross_wrong_accumulator_in_every_output_vector_of_every_layer_is_corrected(name, fmt):
    quantised, protected, x = _case(name, fmt)
    x = x[:16]
    record = read_protection(protected)
    layers = [p["name"] for p in record["protected"] if p["kind"] == "int-code"]
    axes = _decode_axes(protected)
    clean = _run(_fused(quantised), x)
    feeds = {protected.graph.input[0].name: x}
    shapes = {k: v.shape for k, v in probe(protected, [f"{n}__ecc_acc" for n in layers])(feeds).items()}
    faulty = _protected(_with_accumulator_faults(protected, layers))
    rng = np.random.default_rng(0)
    for layer in layers:
        feeds[f"{layer}__fault"] = _gross_faults(shapes[f"{layer}__ecc_acc"], axes[layer], rng)
    before = read_counters(record["model_id"])
    np.testing.assert_array_equal(faulty.run(None, feeds)[0], clean)
    after = read_counters(record["model_id"])
    for layer in layers:
        d = after[layer] - before[layer]
        shape = shapes[f"{layer}__ecc_acc"]
        vectors = int(np.prod(shape)) // shape[axes[layer]]
        assert d.flagged == vectors and d.uncorrectable == 0, (layer, d)


def _aug_index(node: onnx.NodeProto, w: np.ndarray, aug: np.ndarray, idx: tuple) -> tuple:
    """Where weight ``idx`` of ``node`` sits in the protected layer's W_aug ``aug``."""
    if w.ndim == 4 and aug.ndim == 2:  # convs channels last: [K, M + P], taps (i, j, c)
        m, c, i, j = idx
        return ((i * w.shape[3] + j) * w.shape[1] + c, m)
    if node.op_type == "QGemm" and next((a.i for a in node.attribute if a.name == "transB"), 0):
        return (idx[1], idx[0])
    return idx  # QLinearMatMul / MatMulInteger [K, N + P], NCHW ConvInteger [M + P, C, kh, kw]


@pytest.mark.parametrize("name,fmt", [("mnist_cnn", "u8s8"), ("mnist_cnn", "dynamic"), ("fashion_mlp", "s8s8_pc"),
                                      ("fashion_mlp", "dynamic"), ("bert_encoder", "dynamic")])
def test_int8_weight_bit_flips_that_change_the_output_are_corrected(name, fmt):
    """Sampled flips: per layer, 3 weights (two large ones, which change the output, and any one) x bits 0-7."""
    quantised, protected, x = _case(name, fmt)
    x = x[:16] if name != "bert_encoder" else x[:2]
    clean = _run(_fused(quantised), x)
    rng = np.random.default_rng(1)
    inits = {t.name: numpy_helper.to_array(t) for t in quantised.graph.initializer}
    augs = {t.name: numpy_helper.to_array(t) for t in protected.graph.initializer if t.name.endswith("__ecc_w_aug")}
    layers = _layers(quantised)
    picks = 3
    if name == "bert_encoder":  # 36 layers: 3 of them (a query, a key and an FFN projection), 2 weights each
        layers, picks = dict(list(layers.items())[::13]), 2
    tried = changed = 0
    for layer, node in layers.items():
        w_name = node.input[3 if node.op_type.startswith("Q") else 1]
        w = inits[w_name]
        large = np.argsort(-np.abs(w.astype(np.int16)).ravel())[:20]
        for flat in [large[rng.integers(0, len(large))] for _ in range(picks - 1)] + [rng.integers(0, w.size)]:
            index = tuple(int(i) for i in np.unravel_index(flat, w.shape))
            for bit in range(8):
                tried += 1
                if np.array_equal(_run(_fused(_flip(quantised, w_name, index, bit)), x), clean):
                    continue
                changed += 1
                aug = augs[f"{layer}__ecc_w_aug"]
                got = _run(_protected(_flip(protected, f"{layer}__ecc_w_aug", _aug_index(node, w, aug, index), bit)), x)
                np.testing.assert_array_equal(got, clean, err_msg=f"{layer} {index} bit {bit}")
    assert changed > tried // 4, (changed, tried)


def _integer_model(op, w, w_zp, x_type, same=False):
    """One MatMulInteger / ConvInteger with a constant weight and zero point, and a run-time input zero point
    (``same``: auto_pad SAME_UPPER, which keeps the ConvInteger NCHW)."""
    inputs = ["X", "W", "XZ"] + (["WZ"] if w_zp is not None else [])
    attrs = {} if op != "ConvInteger" else (dict(kernel_shape=list(w.shape[2:]), auto_pad="SAME_UPPER") if same
                                            else dict(kernel_shape=list(w.shape[2:]), pads=[1, 1, 1, 1]))
    node = helper.make_node(op, inputs, ["Y"], name="layer", **attrs)
    inits = [numpy_helper.from_array(w, "W")] + ([numpy_helper.from_array(w_zp, "WZ")] if w_zp is not None else [])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", x_type, None),
                                        helper.make_tensor_value_info("XZ", x_type, [])],
                          [helper.make_tensor_value_info("Y", TensorProto.INT32, None)], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize("op,w_type,zp_kind", [("MatMulInteger", np.int8, "none"), ("MatMulInteger", np.uint8, "tensor"),
                                               ("MatMulInteger", np.int8, "column"), ("MatMulInteger", np.uint8, "column"),
                                               ("ConvInteger", np.uint8, "tensor"), ("ConvInteger", np.int8, "tensor"),
                                               ("ConvInteger", np.uint8, "none"),
                                               ("ConvInteger", np.int8, "tensor_nchw"),
                                               ("ConvInteger", np.uint8, "none_nchw")])
def test_zero_points_as_the_spec_defines_them(op, w_type, zp_kind):
    """Weight zero points per tensor or per column (uint8 or int8 weights) and a run-time input zero point:
    the protected layer's int32 output equals the original's, and a wrong accumulator is corrected."""
    from onnx_ecc.transform.rules.integer_ops import protect_integer  # noqa: F401 (the rule under test)

    rng = np.random.default_rng(8)
    info = np.iinfo(w_type)
    m, k = 40, 24
    w = rng.integers(info.min, info.max + 1, (m, 3, 3, 3) if op == "ConvInteger" else (k, m)).astype(w_type)
    nchw = zp_kind.endswith("_nchw")
    zp_kind = zp_kind.replace("_nchw", "")
    w_zp = None if zp_kind == "none" else (
        rng.integers(info.min // 2, info.max // 2, m).astype(w_type) if zp_kind == "column" else np.array(7 if w_type == np.int8 else 131, w_type))
    model = _integer_model(op, w, w_zp, TensorProto.UINT8, same=nchw)
    protected = onnx_ecc.transform(model, verify=False)
    record = read_protection(protected)
    if nchw and w_type == np.uint8 and w_zp is None:  # zero point 0 of uint8 weights: the digits need a zero
        assert "cannot share" in record["skipped"][0]["reason"]  # point of their own, which onnxruntime's
        return                                                    # ConvInteger cannot take
    assert [p["name"] for p in record["protected"]] == ["layer"], record["skipped"]
    ops_run = {n.op_type for n in protected.graph.node}
    if op == "ConvInteger":  # channels last (Im2ColNhwc + MatMulInteger) unless auto_pad keeps it NCHW
        assert ("ConvInteger" in ops_run) == nchw and ("Im2ColNhwc" in ops_run) != nchw, ops_run
    x = rng.integers(0, 256, (2, 3, 6, 7) if op == "ConvInteger" else (5, k)).astype(np.uint8)
    feeds = {"X": x, "XZ": np.array(rng.integers(0, 256), np.uint8)}
    want = _fused(model).run(None, feeds)[0]
    np.testing.assert_array_equal(_protected(protected).run(None, feeds)[0], want)
    faulty = _protected(_with_accumulator_faults(protected, ["layer"]))
    acc_shape = probe(protected, ["layer__ecc_acc"])(feeds)["layer__ecc_acc"].shape
    f = _gross_faults(acc_shape, _decode_axes(protected)["layer"], rng)
    np.testing.assert_array_equal(faulty.run(None, dict(feeds, layer__fault=f))[0], want)


def test_what_cannot_be_expressed_is_left_as_it_was_with_the_reason():
    """A QLinearConv whose weight is not a constant and a grouped ConvInteger stay, with the reason; the model
    still runs as the original."""
    rng = np.random.default_rng(9)
    w = rng.integers(-128, 128, (8, 2, 3, 3)).astype(np.int8)
    conv = helper.make_node("ConvInteger", ["X", "W", "XZ"], ["Y"], name="grouped", group=2, kernel_shape=[3, 3])
    q = helper.make_node("QLinearConv", ["X", "S", "XZC", "WV", "S", "WZ", "S", "XZC"], ["Q"], name="dyn_weight",
                         kernel_shape=[1, 1])
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array(0.1, np.float32), "S"),
             numpy_helper.from_array(np.array(0, np.int8), "WZ"), numpy_helper.from_array(np.array(3, np.uint8), "XZC")]
    g = helper.make_graph([conv, q], "g", [helper.make_tensor_value_info("X", TensorProto.UINT8, [1, 4, 5, 5]),
                                           helper.make_tensor_value_info("XZ", TensorProto.UINT8, []),
                                           helper.make_tensor_value_info("WV", TensorProto.INT8, [4, 4, 1, 1])],
                          [helper.make_tensor_value_info("Y", TensorProto.INT32, None),
                           helper.make_tensor_value_info("Q", TensorProto.UINT8, None)], initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    protected = onnx_ecc.transform(model, verify=False)
    record = read_protection(protected)
    reasons = {s["name"]: (s["op"], s["reason"]) for s in record["skipped"]}
    assert reasons["grouped"][0] == "ConvInteger" and "grouped" in reasons["grouped"][1]
    assert reasons["dyn_weight"][0] == "QLinearConv" and "not a constant" in reasons["dyn_weight"][1]
    assert collections.Counter(n.op_type for n in protected.graph.node) == {"ConvInteger": 1, "QLinearConv": 1}
    feeds = {"X": rng.integers(0, 256, (1, 4, 5, 5)).astype(np.uint8), "XZ": np.array(3, np.uint8),
             "WV": rng.integers(-128, 128, (4, 4, 1, 1)).astype(np.int8)}
    for a, b in zip(_fused(model).run(None, feeds), _protected(protected).run(None, feeds)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("fmt", ["u8s8", "s8s8_pc"])
def test_a_layer_left_alone_is_put_back_in_its_operator_form(fmt):
    """The middle conv left unprotected (layer mode 'none'): it runs as the original QLinearConv again, next to
    protected neighbours that moved its int8 input to uint8 (s8s8), and the outputs stay bit-identical."""
    quantised, _, x = _case("mnist_cnn", fmt)
    convs = [n.name for n in quantised.graph.node if n.op_type == "QLinearConv"]
    protected = onnx_ecc.transform(quantised, layer_modes=((convs[1], "none"),))
    record = read_protection(protected)
    assert [s["name"] for s in record["skipped"]] == [convs[1]] and record["skipped"][0]["op"] == "QLinearConv"
    assert len(record["protected"]) == len(_layers(quantised)) - 1
    kept = [n for n in protected.graph.node if n.name == convs[1]]
    assert [n.op_type for n in kept] == ["QLinearConv"]
    np.testing.assert_array_equal(_run(_protected(protected), x), _run(_fused(quantised), x))
