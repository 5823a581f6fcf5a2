"""End to end on real architectures: protected models reproduce the originals and repair faults."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import corrupt_initializer, feeds_for, insert_output_fault, protected_model, zoo_model

import onnx_ecc
from onnx_ecc.transform.record import read_protection
from onnx_ecc.transform.verification import run_model

MODELS = ["mlp", "cnn", "resnet_style", "depthwise_separable_cnn", "grouped_cnn", "transformer_encoder"]


def _outputs(model, feeds):
    return run_model(model, feeds, with_library=True)


def _close(a, b, rtol=1e-4):
    scale = max(float(np.max(np.abs(b))), 1e-6)
    return np.allclose(a, b, rtol=rtol, atol=rtol * scale)


def _protected_weights(model):
    """(layer name, weight initializer name, number of data rows) of each protected layer."""
    record = read_protection(model)
    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        for p in record["protected"]:
            if node.name == p["name"] and len(node.input) > 1 and node.input[1] in inits:
                out.append((p, node.input[1]))
    return out


@pytest.mark.parametrize("name", MODELS)
def test_fault_free_outputs_match_the_original(name):
    original, protected = zoo_model(name), protected_model(name)
    onnx.checker.check_model(protected, full_check=True)
    assert [i.name for i in protected.graph.input] == [i.name for i in original.graph.input]
    assert [o.name for o in protected.graph.output] == [o.name for o in original.graph.output]
    for seed in range(2):
        feeds = feeds_for(original, batch=3, seed=seed)
        sess = onnx_ecc.ProtectedSession(protected)
        got = sess.run(None, feeds)
        for g, e in zip(got, run_model(original, feeds)):
            assert g.shape == e.shape and g.dtype == e.dtype
            assert _close(g, e)
        assert sess.last_report.flagged == 0


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("bit", [31, 30, 29, 27, 23, 20])
def test_one_corrupted_weight_is_corrected(name, bit):
    protected = protected_model(name)
    rng = np.random.default_rng(bit)
    layers = _protected_weights(protected)
    p, init = layers[rng.integers(len(layers))]
    w = onnx.numpy_helper.to_array(next(i for i in protected.graph.initializer if i.name == init))
    index = tuple(int(rng.integers(s)) for s in w.shape)
    faulty = corrupt_initializer(protected, init, index, bit)
    feeds = feeds_for(protected, batch=2, seed=bit)
    clean = _outputs(protected, feeds)
    sess = onnx_ecc.ProtectedSession(faulty)
    got = sess.run(None, feeds)
    for g, e in zip(got, clean):
        assert np.all(np.isfinite(g))
        assert _close(g, e), f"{p['name']} {init}{index} bit {bit}: outputs differ"
    assert sess.last_report.uncorrectable == 0


@pytest.mark.parametrize("name", MODELS)
def test_one_corrupted_layer_output_is_corrected(name):
    protected = protected_model(name)
    feeds = feeds_for(protected, batch=2, seed=5)
    clean = _outputs(protected, feeds)
    checked = [n.input[0] if n.op_type == "Decode" else n.input[1] for n in protected.graph.node
               if n.domain == onnx_ecc.ops.DOMAIN]
    for k, tensor in enumerate(checked):
        for kind, bits in (("bitflip", (30,)), ("random", (0,)), ("bitflip", (28, 29))):
            faulty = insert_output_fault(protected, tensor, seed=k, kind=kind, bits=bits)
            sess = onnx_ecc.ProtectedSession(faulty)
            got = sess.run(None, feeds)
            for g, e in zip(got, clean):
                assert _close(g, e), f"fault in {tensor} ({kind}) not corrected"


@pytest.mark.parametrize("name", ["cnn", "transformer_encoder"])
def test_floor_r_half_errors_per_block_are_corrected(name):
    protected = onnx_ecc.transform(zoo_model(name), parity=4, block=16)
    feeds = feeds_for(protected, batch=2, seed=1)
    clean = _outputs(protected, feeds)
    decode = next(n for n in protected.graph.node if n.op_type == "Decode")
    faulty = insert_output_fault(protected, decode.input[0], seed=3, kind="random", count=2)
    sess = onnx_ecc.ProtectedSession(faulty)
    for _ in range(3):
        got = sess.run(None, feeds)
        assert all(_close(g, e) for g, e in zip(got, clean))


def test_more_errors_than_correctable_are_detected_and_fail_stop_raises():
    protected = onnx_ecc.transform(zoo_model("mlp"), parity=2, block=8, mode="detect")
    feeds = feeds_for(protected, batch=1, seed=2)
    # Two wrong values in every block of the first layer: beyond correction, within detection.
    decode = next(n for n in protected.graph.node if n.op_type == "Decode")
    faulty = insert_output_fault(protected, decode.input[0], seed=9, kind="random", count=0)
    faulty = _set_rate(faulty, 1.0)
    sess = onnx_ecc.ProtectedSession(faulty)
    sess.run(None, feeds)
    assert sess.last_report.uncorrectable > 0 and sess.last_report.corrected == 0
    with pytest.raises(Exception, match="uncorrectable"):
        onnx_ecc.ProtectedSession(faulty, fail_stop=True).run(None, feeds)


def test_two_errors_in_a_block_are_reported_in_correct_mode():
    protected = onnx_ecc.transform(zoo_model("mlp"), parity=3, block=8)
    feeds = feeds_for(protected, batch=1, seed=2)
    decode = next(n for n in protected.graph.node if n.op_type == "Decode")
    faulty = _set_rate(insert_output_fault(protected, decode.input[0], seed=4, kind="random", count=0), 1.0)
    sess = onnx_ecc.ProtectedSession(faulty)
    sess.run(None, feeds)
    assert sess.last_report.uncorrectable > 0


def _set_rate(model, rate):
    for init in model.graph.initializer:
        if init.name.endswith("__rate"):
            init.CopyFrom(onnx.numpy_helper.from_array(np.array(rate, np.float32), init.name))
    return model


def test_inspect_lists_layers_left_alone():
    from onnx_ecc.transform.inspection import format_report

    report = format_report(protected_model("transformer_encoder"))
    assert "coverage: 16 of 16 linear layer(s) protected, 100.0%" in report
    assert "R=2 per 32" in report
    partial = format_report(protected_model("transformer_encoder", ops=("Gemm", "Conv")))
    assert "not covered: MatMul x16" in partial and "op type not selected" in partial


def test_float16_weights_are_refused_with_a_reason():
    model = zoo_model("mlp")
    half = onnx.ModelProto()
    half.CopyFrom(model)
    from onnx import helper, numpy_helper

    first = half.graph.node[[n.op_type for n in half.graph.node].index("Gemm")]
    init = next(i for i in half.graph.initializer if i.name == first.input[1])
    arr = numpy_helper.to_array(init).astype(np.float16)
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    cast_out = first.input[1] + "_f32"
    half.graph.node.insert(0, helper.make_node("Cast", [first.input[1]], [cast_out], to=onnx.TensorProto.FLOAT))
    first.input[1] = cast_out
    record = read_protection(onnx_ecc.transform(half))
    assert any(s["name"] == first.name and "not a constant" in s["reason"] for s in record["skipped"])


def test_layers_of_other_float_types_are_left_alone_with_a_clear_reason():
    from onnx import TensorProto, helper, numpy_helper

    w = np.ones((4, 3), np.float64)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm64")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [2, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [2, 3])],
                          [numpy_helper.from_array(w, "w")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    record = read_protection(onnx_ecc.transform(model))
    assert [(s["name"], s["reason"]) for s in record["skipped"]] == [
        ("mm64", "weights of type float64 are not supported (float32 and float16 only)")]


def test_depthwise_convolutions_can_be_left_alone():
    record = read_protection(onnx_ecc.transform(zoo_model("depthwise_separable_cnn"), depthwise=False))
    reasons = [s["reason"] for s in record["skipped"]]
    assert len(reasons) == 4 and all("depthwise" in r for r in reasons)
    assert all(p["kind"] == "code" for p in record["protected"])


def test_a_qdq_int8_model_has_every_layer_protected_and_runs_unchanged():
    """quantize_static's QDQ model: every linear layer gets the exact integer code (rules/quantised.py),
    inspect shows full coverage, and ProtectedSession's report covers the int8 layers."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    from onnx_ecc.transform.inspection import format_report

    model = zoo_model("cnn")
    feeds = feeds_for(model, batch=8, seed=0)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{k: v[i:i + 1] for k, v in feeds.items()} for i in range(8)])

        def get_next(self):
            return next(self.batches, None)

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(model, f"{tmp}/float.onnx")
        quantize_static(f"{tmp}/float.onnx", f"{tmp}/int8.onnx", Reader(), quant_format=QuantFormat.QDQ)
        int8 = onnx.load(f"{tmp}/int8.onnx")
    protected = onnx_ecc.transform(int8)
    record = read_protection(protected)
    layers = [n.name for n in int8.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    assert [p["name"] for p in record["protected"]] == layers and len(layers) == 4 and record["skipped"] == []
    assert {p["kind"] for p in record["protected"]} == {"int-code"}
    report = format_report(protected)
    assert "coverage: 4 of 4 linear layer(s) protected" in report and "int8 R=2 per 32, exact" in report
    session = onnx_ecc.ProtectedSession(protected)
    np.testing.assert_array_equal(session.run(None, feeds)[0], onnx_ecc.ProtectedSession(int8).run(None, feeds)[0])
    assert set(layers) <= set(session.last_report.layers) and session.last_report.clean
