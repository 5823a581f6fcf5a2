"""int8 QDQ models under the rerun strategy (strategies/int_sample_check.py): the fast path keeps
onnxruntime's fused integer kernels, its exact sample checks raise no alarm on real data and the
outputs are the fused original's bit for bit; a wrong output value at a sampled position and int8
weight bit flips are caught and the run corrected by the inline-decoded rerun; a wrong value at an
unsampled position is not seen (what the module says the fast path does not see); int8 layers in
onnxruntime's operator form keep their fused kernels on the fast path too.

The models are test_int8.py's: the pretrained MNIST CNN and the Fashion-MNIST MLP, quantised U8S8
and S8S8 per-channel, calibrated on 128 real images, with 200 real test images."""

from __future__ import annotations

import collections
import functools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from test_int8 import CASES, _case, _copy, _flip, _fused, _protected, _run, _toposort, _weight_position

import onnx_ecc
from onnx_ecc.runtime.counters import read_counters
from onnx_ecc.transform.record import read_protection

FUSED = ("QLinearConv", "QGemm", "QLinearMatMul", "NhwcMaxPool")


@functools.lru_cache(maxsize=None)
def _rerun(name: str, variant: str):
    """(QDQ model, its rerun protection, real test images), once per session."""
    qdq, _, x = _case(name, variant)
    return qdq, onnx_ecc.transform(qdq, strategy="rerun"), x


def _layers(protected):
    return [p["name"] for p in read_protection(protected)["protected"]]


def _deltas(model_id, run):
    """run()'s result and, per counter key, the counts it added."""
    before = read_counters(model_id)
    out = run()
    after = read_counters(model_id)
    return out, {k: (c - before[k] if k in before else c) for k, c in after.items()}


def _optimized_ops(model, path) -> list[str]:
    so = onnx_ecc.session_options()
    so.log_severity_level = 3
    so.optimized_model_filepath = str(path)
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(path)).graph.node]


@pytest.mark.parametrize("name,variant", CASES)
def test_the_fast_path_keeps_every_fused_integer_kernel_and_adds_no_layout_conversion(name, variant, tmp_path):
    qdq, protected, _ = _rerun(name, variant)
    original = collections.Counter(_optimized_ops(qdq, tmp_path / "original.onnx"))
    fast = collections.Counter(_optimized_ops(protected, tmp_path / "protected.onnx"))
    assert sum(original[op] for op in FUSED) > 0, original
    for op in FUSED:  # the original's fused nodes, plus the strided copies (fused the same way)
        assert fast[op] >= original[op], (op, original, fast)
    assert fast["QLinearConv"] == 2 * original["QLinearConv"] and fast["QGemm"] == 2 * original["QGemm"], fast
    # no float layer left, and no Transpose / Cast beyond the original's around the fused nodes
    assert not {"Conv", "Gemm", "MatMul", "MatMulInteger"} & set(fast), fast
    assert fast["Transpose"] == original["Transpose"] and fast["Cast"] == original["Cast"], (original, fast)
    assert fast["IntSampleCheck"] == len(_layers(protected)) and fast["If"] == 1


@pytest.mark.parametrize("name,variant", CASES)
def test_fault_free_outputs_are_the_fused_originals_bit_for_bit_on_the_fast_path(name, variant):
    qdq, protected, x = _rerun(name, variant)
    record = read_protection(protected)
    assert record["options"]["strategy"] == "rerun" and not record["skipped"]
    assert all(p["kind"] == "int-code" and p["sample_check_tolerance"] == 0.0 for p in record["protected"])
    from onnx_ecc.transform.inspection import format_report

    assert "exact sample check every" in format_report(protected)
    want = _run(_fused(qdq), x)
    sess = _protected(protected)
    got, counts = _deltas(record["model_id"], lambda: _run(sess, x))
    assert len(x) >= 200
    np.testing.assert_array_equal(got, want)
    for layer in _layers(protected):
        check = counts[f"{layer} (sample check)"]
        assert check.runs == 1 and check.vectors > 0 and check.flagged == 0, (layer, check)
        # the If's then-branch (the inline-decoded graph) did not run: its IntDecode counted nothing
        assert layer not in counts or counts[layer].runs == 0, (layer, counts.get(layer))


def _zero_point_type(model, tensor: str) -> int:
    """The element type of the quantised ``tensor``: its QuantizeLinear's zero point's."""
    q = next(n for n in model.graph.node if tensor in n.output)
    return next(t.data_type for t in model.graph.initializer if t.name == q.input[2])


def _with_added_fault(model, tensor: str):
    """``model`` whose readers of the quantised ``tensor`` (in the main graph, not the rerun branch)
    read tensor + ``<tensor>__fault`` (a graph input of its type, wrapping) instead."""
    out = _copy(model)
    g = out.graph
    elem = _zero_point_type(model, tensor)
    faulty = f"{tensor}__faulty"
    for node in g.node:
        node.input[:] = [faulty if t == tensor else t for t in node.input]
    g.node.append(helper.make_node("Add", [tensor, f"{tensor}__fault"], [faulty], name=f"{tensor}__fault_add"))
    g.input.append(helper.make_tensor_value_info(f"{tensor}__fault", elem, None))
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(_toposort(nodes, {i.name for i in g.input} | {t.name for t in g.initializer}))
    return out


def _quantised_output(protected, layer: str) -> str:
    """The QuantizeLinear output of a QDQ layer on the fast path."""
    g = protected.graph
    node = next(n for n in g.node if n.name == layer)
    return next(n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] == node.output[0]).output[0]


def _position(shape, strides, sampled: bool):
    """An output position of a conv ([N, C, H, W]) or Gemm ([N, M]) that the copy samples, or not."""
    if len(shape) == 4:
        sh, sw = strides
        return (1, 3, sh, sw) if sampled else (1, 3, sh + 1, sw + 1)
    return (strides[0], 5) if sampled else (1, 5)


@pytest.mark.parametrize("name,variant", [CASES[0], CASES[1], CASES[3]])
def test_a_wrong_output_value_at_a_sampled_position_is_caught_and_the_run_corrected(name, variant):
    qdq, protected, x = _rerun(name, variant)
    x = x[:16]
    record = read_protection(protected)
    clean = _run(_fused(qdq), x)
    from onnx_ecc.transform.calibration import probe

    outputs = {layer: _quantised_output(protected, layer) for layer in _layers(protected)}
    values = probe(protected, list(outputs.values()))({protected.graph.input[0].name: x})
    shapes = {k: v.shape for k, v in values.items()}
    unseen_changes = 0
    for p in record["protected"]:
        layer, tensor = p["name"], outputs[p["name"]]
        faulty = _protected(_with_added_fault(protected, tensor))
        fault = np.zeros(shapes[tensor], np.uint8)
        fault[_position(fault.shape, p["sample_stride"], True)] = 64  # a gross error: 64 quantisation steps
        feeds = {protected.graph.input[0].name: x, f"{tensor}__fault": fault}
        got, counts = _deltas(record["model_id"], lambda: faulty.run(None, feeds)[0])
        assert counts[f"{layer} (sample check)"].flagged > 0, layer
        assert counts[layer].runs == 1, layer  # the If's then-branch decoded the run
        np.testing.assert_array_equal(got, clean, err_msg=layer)
        # the same error where the copy does not sample is not seen on the fast path
        fault[...] = 0
        fault[_position(fault.shape, p["sample_stride"], False)] = 64
        # the same fault in the original (int8 activations: the same bits, +64 wrapping either way)
        original_feeds = dict(feeds, **{f"{tensor}__fault": fault.view(np.int8)}) \
            if _zero_point_type(qdq, tensor) == TensorProto.INT8 else feeds
        wrong = _fused(_with_added_fault(qdq, tensor)).run(None, original_feeds)[0]
        got, counts = _deltas(record["model_id"], lambda: faulty.run(None, feeds)[0])
        assert counts[f"{layer} (sample check)"].flagged == 0, layer
        np.testing.assert_array_equal(got, wrong, err_msg=layer)
        unseen_changes += not np.array_equal(wrong, clean)
    assert unseen_changes > 0  # an unseen error that changes the outputs


@pytest.mark.parametrize("name,variant", [CASES[0], CASES[2]])
def test_int8_weight_bit_flips_that_change_the_output_are_caught_and_corrected(name, variant):
    """A flipped bit of a stored int8 weight: in the fast path's weight alone (the rerun reads its
    own copy, W_aug), and in both copies (IntDecode then corrects the rerun's accumulators too)."""
    qdq, protected, x = _rerun(name, variant)
    x = x[:32]
    record = read_protection(protected)
    clean = _run(_fused(qdq), x)
    rng = np.random.default_rng(1)
    changed = 0
    for layer in _layers(protected):
        w_name, w, aug_name, to_aug = _weight_position(protected, qdq, layer)
        flat = np.argsort(-np.abs(w.astype(np.int16)).ravel())[:20]   # large weights change the output
        index = np.unravel_index(flat[rng.integers(0, len(flat))], w.shape)
        for bit in range(8):
            if np.array_equal(_run(_fused(_flip(qdq, w_name, index, bit)), x), clean):
                continue
            changed += 1
            fast_only = _flip(protected, w_name, index, bit)
            both = _flip(fast_only, aug_name, to_aug(tuple(int(i) for i in index)), bit)
            for model, copies in ((fast_only, "fast path"), (both, "both copies")):
                sess = _protected(model)
                got, counts = _deltas(record["model_id"], lambda: _run(sess, x))
                check = counts[f"{layer} (sample check)"]
                assert check.flagged == check.vectors > 0, (layer, bit, copies, check)
                np.testing.assert_array_equal(got, clean, err_msg=f"{layer} {index} bit {bit} ({copies})")
                if copies == "both copies":
                    assert counts[layer].corrected_values > 0 and counts[layer].uncorrectable == 0, (layer, bit)
    assert changed > 0


@pytest.mark.parametrize("variant", ["u8s8", "s8s8_pc"])
def test_int8_layers_in_onnxruntimes_operator_form_keep_their_fused_kernels_on_the_fast_path(variant, tmp_path):
    """QLinearConv / QGemm models (quantize_static QOperator) are expressed as QDQ before the fast path picks
    its layers: onnxruntime fuses that form back into the same kernels, so every QLinearConv, QGemm and uint8
    MaxPool of the original is there with its sampled copy, no layer is decoded inline, and the outputs on
    200 real test images are the original's bit for bit with every check clean."""
    from onnx_ecc import datasets, zoo
    from onnx_ecc.zoo.quantised import quantize_operator

    _, _, x = _case("mnist_cnn", "u8s8")
    model = quantize_operator(zoo.mnist_cnn(), datasets.load("mnist").x_train[:128].reshape((-1,) + x.shape[1:]),
                              variant)
    protected = onnx_ecc.transform(model, strategy="rerun")
    record = read_protection(protected)
    assert record["protected"] and {p["fast_path"] for p in record["protected"]} == {"check"}
    assert {p["op"] for p in record["protected"]} == {"QLinearConv", "QGemm"}
    original = collections.Counter(_optimized_ops(model, tmp_path / "original.onnx"))
    fast = collections.Counter(_optimized_ops(protected, tmp_path / "protected.onnx"))
    assert original["QLinearConv"] == 3 and original["QGemm"] >= 1, original
    assert fast["IntSampleCheck"] == len(record["protected"]) and not {"MatMulInteger", "IntDecode"} & set(fast), fast
    assert fast["QLinearConv"] == 2 * original["QLinearConv"] and fast["QGemm"] == 2 * original["QGemm"], fast
    assert fast["NhwcMaxPool"] >= original["NhwcMaxPool"] > 0, (original, fast)
    # S8S8: the int8 MaxPool -> Flatten before the first Gemm runs uint8 too (uint8_activations), so nothing unfuses
    assert not {"Conv", "Gemm", "MatMul", "MaxPool"} & set(fast), fast
    assert fast["Transpose"] == original["Transpose"], fast
    got, counts = _deltas(record["model_id"], lambda: _run(_protected(protected), x))
    np.testing.assert_array_equal(got, _run(_fused(model), x))
    assert all(counts[f"{p['name']} (sample check)"].flagged == 0 for p in record["protected"])


@pytest.mark.parametrize("strategy", ["inline", "rerun"])
def test_an_int8_conv_with_auto_pad_is_left_alone_with_the_reason(strategy):
    """auto_pad convs (padding from the strides: a strided copy or Im2ColNhwc with explicit pads would
    pad differently) are skipped, not protected wrongly; the model still computes the original."""
    from onnx import numpy_helper

    from onnx_ecc.zoo.quantised import quantize_qdq

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
               numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y0"], name="conv", auto_pad="SAME_UPPER", strides=[2, 2],
                              kernel_shape=[3, 3]), helper.make_node("Relu", ["y0"], ["y"], name="relu")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 10, 10])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], weights)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    qdq = quantize_qdq(model, rng.random((64, 3, 10, 10)).astype(np.float32))
    protected = onnx_ecc.transform(qdq, strategy=strategy)
    record = read_protection(protected)
    assert not record["protected"] and "auto_pad" in record["skipped"][0]["reason"]
    x = rng.random((4, 3, 10, 10)).astype(np.float32)
    np.testing.assert_array_equal(_run(_protected(protected), x), _run(_fused(qdq), x))


def test_detect_mode_flags_a_sampled_error_without_decoding_and_fail_stop_raises():
    from onnx_ecc.transform.calibration import probe

    qdq, _, x = _rerun("mnist_cnn", "u8s8")
    x = x[:8]
    layer = next(n.name for n in qdq.graph.node if n.op_type == "Conv")
    for fail_stop in (False, True):
        protected = onnx_ecc.transform(qdq, strategy="rerun", mode="detect", fail_stop=fail_stop)
        tensor = _quantised_output(protected, layer)
        stride = next(p["sample_stride"] for p in read_protection(protected)["protected"] if p["name"] == layer)
        sess = _protected(_with_added_fault(protected, tensor))
        fault = np.zeros(probe(protected, [tensor])({qdq.graph.input[0].name: x})[tensor].shape, np.uint8)
        fault[_position(fault.shape, stride, True)] = 64
        feeds = {qdq.graph.input[0].name: x, f"{tensor}__fault": fault}
        if fail_stop:
            with pytest.raises(Exception, match="failed the exact sample check"):
                sess.run(None, feeds)
            continue
        got, counts = _deltas(read_protection(protected)["model_id"], lambda: sess.run(None, feeds)[0])
        assert counts[f"{layer} (sample check)"].flagged > 0
        # detect mode does not repair: the outputs are the fused original's with the same error
        np.testing.assert_array_equal(got, _fused(_with_added_fault(qdq, tensor)).run(None, feeds)[0])


@functools.lru_cache(maxsize=None)
def _int8_encoder():
    """(the zoo's BERT-style encoder quantised QDQ, its rerun protection, inputs): random weights and
    inputs, as the encoder has no data of its own."""
    from onnx_ecc import zoo
    from onnx_ecc.zoo.quantised import quantize_qdq

    model = zoo.transformer_encoder()
    rng = np.random.default_rng(0)
    shape = tuple(zoo.input_shape(model))[1:]
    qdq = quantize_qdq(model, rng.standard_normal((64,) + shape).astype(np.float32))
    return qdq, onnx_ecc.transform(qdq, strategy="rerun"), rng.standard_normal((4,) + shape).astype(np.float32)


def test_qdq_attention_products_keep_their_fused_kernels_with_exact_sample_checks(tmp_path):
    """The products of two int8 activations (attention's QK^T and AV, QLinearMatMul in the original)
    are sampled by rows like a MatMul with weights (no stored weights to sum): the fast path keeps
    every fused kernel, and a sampled error in a product is flagged and the run decoded."""
    qdq, protected, x = _int8_encoder()
    record = read_protection(protected)
    products = [p["name"] for p in record["protected"] if p["kind"] != "int-code"]
    assert len(products) == 4 and all(p["sample_check_tolerance"] == 0.0 for p in record["protected"])
    original = collections.Counter(_optimized_ops(qdq, tmp_path / "original.onnx"))
    fast = collections.Counter(_optimized_ops(protected, tmp_path / "protected.onnx"))
    assert fast["QLinearMatMul"] == 2 * original["QLinearMatMul"] == 2 * len(record["protected"]), (original, fast)
    assert "MatMul" not in fast and fast["Transpose"] == original["Transpose"], fast
    got, counts = _deltas(record["model_id"], lambda: _run(_protected(protected), x))
    np.testing.assert_array_equal(got, _run(_fused(qdq), x))
    assert all(c.flagged == 0 for k, c in counts.items() if k.endswith("(sample check)"))
    decoded = _run(_protected(onnx_ecc.transform(qdq)), x)  # what the rerun computes: the inline-decoded graph
    layer = products[0]
    tensor = _quantised_output(protected, layer)
    fault = np.zeros(_probe_shape(protected, tensor, x), np.uint8)
    fault[(0,) * (fault.ndim - 2) + (8, 3)] = 64  # row 8 of the first sample and head: sampled at stride 8
    faulty = _protected(_with_added_fault(protected, tensor))
    feeds = {protected.graph.input[0].name: x, f"{tensor}__fault": fault}
    got, counts = _deltas(record["model_id"], lambda: faulty.run(None, feeds)[0])
    assert counts[f"{layer} (sample check)"].flagged > 0 and counts[layer].runs == 1
    np.testing.assert_array_equal(got, decoded)


def _probe_shape(model, tensor: str, x) -> tuple[int, ...]:
    """The shape ``tensor`` has in a run of ``model`` on ``x``."""
    from onnx_ecc.transform.calibration import probe

    return probe(model, [tensor])({model.graph.input[0].name: x})[tensor].shape
