"""float16 models (as onnxconverter-common makes them, keep_io_types=True): parity weights in
float16, decoded in float32, thresholds in float16 rounding steps; on real data and with faults."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import with_wrong_value, zoo_model

import onnx_ecc
from onnx_ecc.faults.single import flip_weight_bit
from onnx_ecc.transform.record import read_protection
from onnx_ecc.transform.calibration import probe

float16 = pytest.importorskip("onnxconverter_common.float16")

MODELS = ("mlp", "cnn", "depthwise_separable_cnn", "resnet_style", "transformer_encoder")
STRATEGIES = ("inline", "rerun")


def _half(model: onnx.ModelProto) -> onnx.ModelProto:
    with warnings.catch_warnings():  # it warns about every weight below float16's smallest normal
        warnings.simplefilter("ignore")
        return float16.convert_float_to_float16(model, keep_io_types=True)


def _plain(model, feeds):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _feeds(model, batch=4, seed=0):
    shape = [batch] + [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    return {model.graph.input[0].name: np.random.default_rng(seed).random(shape, dtype=np.float32)}


def test_sum_checks_of_float16_convs_fall_back_to_sample_checks():
    half = _half(zoo_model("resnet_style"))
    record = read_protection(onnx_ecc.transform(half, strategy="rerun", conv_check="sum"))
    convs = [p for p in record["protected"] if p["op"] == "Conv"]
    assert convs and all("sample_check_tolerance" in p for p in convs)


def _close(got, want):
    """Within float16 rounding: onnxruntime's CPU provider runs the original's layers in float32
    back to back, while the protected model rounds each protected layer's output to float16."""
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=4e-3, atol=4e-3 * scale)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", MODELS)
def test_float16_models_are_protected_in_float16_with_equal_outputs(name, strategy):
    half = _half(zoo_model(name))
    protected = onnx_ecc.transform(half, strategy=strategy)
    record = read_protection(protected)
    layers = [n.name for n in half.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]  # attention's too
    assert {p["name"] for p in record["protected"]} == set(layers), record["skipped"]
    assert all(p["dtype"] == "float16" for p in record["protected"])
    added = {t.name: t for t in protected.graph.initializer} .keys() - {t.name for t in half.graph.initializer}
    kinds = {onnx.TensorProto.DataType.Name(t.data_type) for t in protected.graph.initializer if t.name in added
             and t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16) and len(t.dims) >= 2}
    assert kinds == {"FLOAT16"}  # parity weights are stored in the weights' own type
    feeds = _feeds(half)
    session = onnx_ecc.ProtectedSession(protected)
    _close(session.run(None, feeds)[0], _plain(half, feeds))
    assert session.last_report.flagged == 0 and session.last_report.checks_failed == 0


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("kind", ["x16", "x-16", "inf", "nan"])
def test_a_gross_error_in_each_float16_layer_output_is_corrected(strategy, kind):
    half = _half(zoo_model("cnn"))
    protected = onnx_ecc.transform(half, strategy=strategy)
    feeds = _feeds(half, seed=2)
    clean = onnx_ecc.ProtectedSession(protected).run(None, feeds)[0]
    layers = [p["name"] for p in read_protection(protected)["protected"]]
    outputs = {n.name: n.output[0] for n in protected.graph.node if n.name in layers}
    values = probe(protected, list(outputs.values()))(feeds)
    for i, layer in enumerate(layers):
        # a value at a position the rerun strategy's fast path samples (row and column 0 of a conv's
        # output, row 0 of a Gemm's), and positive, so that the Relu after it does not hide the error
        v = values[outputs[layer]]
        first = v[(0,) + (slice(None),) + (0,) * (v.ndim - 2)]
        where = int(np.ravel_multi_index((0, int(np.argmax(first > 0.05))) + (0,) * (v.ndim - 2), v.shape))
        faulty = with_wrong_value(protected, outputs[layer], v.shape, kind, where + (0 if strategy == "rerun" else i),
                                  np.float16)
        session = onnx_ecc.ProtectedSession(faulty)
        got = session.run(None, feeds)[0]
        assert session.last_report.uncorrectable == 0, (layer, session.last_report.summary())
        assert session.last_report.flagged + session.last_report.checks_failed > 0, layer
        _close(got, clean)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_float16_weight_bit_flips_that_change_the_output_are_corrected(strategy):
    """Bits 10-14 (exponent) and 15 (sign) of a weight in every protected layer."""
    half = _half(zoo_model("cnn"))
    protected = onnx_ecc.transform(half, strategy=strategy)
    feeds = _feeds(half, seed=5)
    clean = _plain(half, feeds)
    layers = {p["name"] for p in read_protection(protected)["protected"]}
    rng = np.random.default_rng(0)
    changed = 0
    # a protected layer's weight keeps the original's values at the same index (parity appended)
    weight_of = {n.name: n.input[1] for n in protected.graph.node if n.name in layers}
    for node in [n for n in half.graph.node if n.name in layers]:
        w = onnx.numpy_helper.to_array(next(t for t in half.graph.initializer if t.name == node.input[1]))
        for bit in (10, 12, 13, 14, 15):
            index = tuple(int(rng.integers(s)) for s in w.shape)
            wrong = _plain(flip_weight_bit(half, node.input[1], index, bit)[0], feeds)
            if np.allclose(wrong, clean, rtol=1e-2, atol=1e-2 * np.abs(clean).max()):
                continue  # the flip does not change the output: nothing to correct
            changed += 1
            session = onnx_ecc.ProtectedSession(flip_weight_bit(protected, weight_of[node.name], index, bit)[0])
            got = session.run(None, feeds)[0]
            assert session.last_report.uncorrectable == 0, (node.name, index, bit)
            _close(got, clean)
    assert changed >= 4


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_false_alarm_on_real_fashion_mnist_in_float16(strategy):
    from onnx_ecc import datasets, zoo

    try:
        data = datasets.load("fashion-mnist")
    except datasets.DatasetUnavailable as e:
        pytest.skip(str(e))
    half = _half(zoo.build("fashion_cnn"))
    protected = onnx_ecc.transform(half, strategy=strategy)
    feeds = {half.graph.input[0].name: data.x_test[:1000]}
    session = onnx_ecc.ProtectedSession(protected)
    got = session.run(None, feeds)[0]
    assert session.last_report.flagged == 0 and session.last_report.checks_failed == 0, session.last_report.summary()
    want = _plain(half, feeds)
    _close(got, want)
    accuracy = (got.argmax(1) == data.y_test[:1000]).mean()
    assert accuracy == pytest.approx((want.argmax(1) == data.y_test[:1000]).mean(), abs=0.003) and accuracy > 0.85


@pytest.mark.parametrize("name", ["resnet_style", "depthwise_separable_cnn"])
def test_rerun_checks_keep_float16_convs_in_the_blocked_layout(name):
    """onnxruntime runs a float16 model's convs in float32 with weights cast once at load, in its
    blocked layout; the sample checks' strided copies must not change that (a float16 weight read
    by two convs is cast at every run and both convs leave the layout)."""
    from onnx_ecc.runtime.optimized import optimized_graph

    original = _half(zoo_model(name))
    protected = onnx_ecc.transform(original, strategy="rerun")

    def convs(model):
        g = optimized_graph(model)
        return ({(n.domain, n.op_type) for n in g.node if "Conv" in n.op_type},
                sum(n.op_type == "Cast" for n in g.node))

    kinds_o, casts_o = convs(original)
    kinds_p, casts_p = convs(protected)
    assert kinds_o == {("com.microsoft.nchwc", "Conv")} and kinds_p == kinds_o
    # our own casts of the (small) samples and residuals, at most two per checked conv
    n_convs = sum(n.op_type == "Conv" for n in original.graph.node)
    assert casts_p - casts_o <= 2 * n_convs


def test_float16_bert_encoder_is_protected_under_rerun_and_a_query_weight_flip_is_corrected():
    """A check of Q/K/V keeps onnxruntime from running the LayerNormalization before them in
    float32 (SkipLayerNormalization unfused): the protected outputs then carry float16 rounding of
    the normalisation's input, within the verification's 8 float16 steps, and no false alarm."""
    from onnx_ecc.transform.verification import FLOAT16_RTOL, random_feeds

    half = _half(zoo_model("bert_encoder"))
    protected = onnx_ecc.transform(half, strategy="rerun")
    record = read_protection(protected)
    assert {p["name"] for p in record["protected"]} >= {n.name for n in half.graph.node if n.op_type == "MatMul"
                                                         and any(i.name == n.input[1] for i in half.graph.initializer)}
    feeds = random_feeds(half, seed=7)
    want = _plain(half, feeds)
    session = onnx_ecc.ProtectedSession(protected)
    got = session.run(None, feeds)[0]
    assert session.last_report.flagged == 0 and session.last_report.checks_failed == 0
    scale = float(np.abs(want).max())
    assert 0 < np.abs(got - want).max() <= FLOAT16_RTOL * scale  # not bit-equal: the normalisation's rounding
    query = next(n for n in half.graph.node if n.name == "/2/attn/q/MatMul")
    wrong_model = flip_weight_bit(half, query.input[1], (5, 17), 14)[0]
    wrong = _plain(wrong_model, feeds)
    assert np.abs(wrong - want).max() > 5 * FLOAT16_RTOL * scale  # far beyond rounding: the flip matters
    weight = next(n for n in protected.graph.node if n.name == query.name).input[1]
    session = onnx_ecc.ProtectedSession(flip_weight_bit(protected, weight, (5, 17), 14)[0])
    repaired = session.run(None, feeds)[0]
    assert session.last_report.checks_failed > 0 and session.last_report.uncorrectable == 0
    np.testing.assert_allclose(repaired, got, rtol=FLOAT16_RTOL, atol=FLOAT16_RTOL * scale)
