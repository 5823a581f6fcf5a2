"""Depthwise int8 convs under the rerun strategy (strategies/int_recompute.py), and operator-format models
on the fused fast path: a depthwise-separable CNN trained on Fashion-MNIST (zoo.pretrained.fashion_depthwise_cnn),
quantised by quantize_static as QDQ and QOperator (U8S8, S8S8 per channel), calibrated on 128 real
images, run on 200 real test images. The fused original (onnxruntime's QLinearConv / QGemm) is the oracle."""

from __future__ import annotations

import collections
import functools

import numpy as np
import pytest
from test_int8 import _flip, _fused, _protected, _run
from test_int8_rerun import _deltas, _optimized_ops, _position, _quantised_output, _with_added_fault

import onnx_ecc
from onnx_ecc.transform.record import read_protection
from onnx_ecc.transform.strategies.int_recompute import KIND

CASES = [("qdq", "u8s8"), ("qdq", "s8s8_pc"), ("qoperator", "u8s8"), ("qoperator", "s8s8_pc")]


@functools.lru_cache(maxsize=None)
def _case(fmt: str, variant: str):
    """(quantised model, its rerun protection, 200 real test images), once per session."""
    pytest.importorskip("torch")
    from onnx_ecc import datasets
    from onnx_ecc.zoo.pretrained import fashion_depthwise_cnn, fashion_rgb32
    from onnx_ecc.zoo.quantised import quantize_operator, quantize_qdq

    try:
        model, data = fashion_depthwise_cnn(), datasets.load("fashion-mnist")
    except Exception as e:  # torch or the data missing: say which
        pytest.skip(f"the Fashion-MNIST depthwise CNN or its data unavailable: {e}")
    quantise = quantize_qdq if fmt == "qdq" else quantize_operator
    q = quantise(model, fashion_rgb32(data.x_train[:128]), variant)
    return q, onnx_ecc.transform(q, strategy="rerun"), fashion_rgb32(data.x_test[:200])


def _depthwise(protected) -> list[dict]:
    return [p for p in read_protection(protected)["protected"] if p["kind"] == KIND]


@pytest.mark.parametrize("fmt,variant", CASES)
def test_every_layer_is_covered_and_fault_free_outputs_are_the_fused_originals_bit_for_bit(fmt, variant):
    from onnx_ecc.transform.inspection import format_report

    q, protected, x = _case(fmt, variant)
    record = read_protection(protected)
    depthwise = _depthwise(protected)
    assert len(depthwise) == 4 and all(p["groups"] == p["data_channels"] > 1 for p in depthwise)
    assert len(record["protected"]) == 10 and not record["skipped"]
    assert all(p["sample_check_tolerance"] == 0.0 for p in record["protected"])
    if fmt == "qoperator":  # the user's ops in the record
        assert {p["op"] for p in record["protected"]} == {"QLinearConv", "QGemm"}
    report = format_report(protected)
    assert "coverage: 10 of 10 linear layer(s) protected, 100.0%" in report
    assert report.count("rerun from a weight copy") == 4
    sess = _protected(protected)
    got, counts = _deltas(record["model_id"], lambda: _run(sess, x))
    assert len(x) >= 200
    np.testing.assert_array_equal(got, _run(_fused(q), x))
    for p in record["protected"]:
        check = counts[f"{p['name']} (sample check)"]
        assert check.runs == 1 and check.vectors > 0 and check.flagged == 0, (p["name"], check)
        assert p["name"] not in counts or counts[p["name"]].runs == 0  # the rerun branch did not run


@pytest.mark.parametrize("fmt,variant", CASES)
def test_the_fast_path_keeps_every_fused_kernel(fmt, variant, tmp_path):
    """QDQ and operator-format models alike: every QLinearConv (depthwise ones too) and QGemm of the
    original, plus its strided copy, no float or unfused integer layer, no extra Transpose."""
    q, protected, _ = _case(fmt, variant)
    original = collections.Counter(_optimized_ops(q, tmp_path / "original.onnx"))
    fast = collections.Counter(_optimized_ops(protected, tmp_path / "protected.onnx"))
    assert original["QLinearConv"] == 9 and original["QGemm"] == 1, original
    assert fast["QLinearConv"] == 2 * original["QLinearConv"] and fast["QGemm"] == 2 * original["QGemm"], fast
    assert not {"Conv", "Gemm", "MatMulInteger", "IntDecode", "Im2ColNhwc"} & set(fast), fast
    assert fast["Transpose"] == original["Transpose"] and fast["IntSampleCheck"] == 10 and fast["If"] == 1, fast


@pytest.mark.parametrize("fmt,variant", CASES[:2])
def test_a_gross_error_at_a_sampled_position_of_every_depthwise_layer_is_caught_and_the_run_corrected(fmt, variant):
    q, protected, x = _case(fmt, variant)
    x = x[:16]
    record = read_protection(protected)
    clean = _run(_fused(q), x)
    from onnx_ecc.transform.calibration import probe

    for p in _depthwise(protected):
        layer, tensor = p["name"], _quantised_output(protected, p["name"])
        shape = probe(protected, [tensor])({protected.graph.input[0].name: x})[tensor].shape
        faulty = _protected(_with_added_fault(protected, tensor))
        fault = np.zeros(shape, np.uint8)
        fault[_position(shape, p["sample_stride"], True)] = 64  # 64 quantisation steps
        feeds = {protected.graph.input[0].name: x, f"{tensor}__fault": fault}
        got, counts = _deltas(record["model_id"], lambda: faulty.run(None, feeds)[0])
        assert counts[f"{layer} (sample check)"].flagged > 0, layer
        assert any(c.runs for k, c in counts.items() if not k.endswith("(sample check)")), layer  # rerun ran
        np.testing.assert_array_equal(got, clean, err_msg=layer)


def _weight_name(model, layer: str) -> str:
    node = next(n for n in model.graph.node if n.name == layer)
    return next(n for n in model.graph.node if n.output[0] == node.input[1]).input[0]


@pytest.mark.parametrize("fmt,variant", [CASES[0], CASES[2]])
def test_depthwise_int8_weight_bit_flips_that_change_the_output_are_flagged_and_corrected(fmt, variant):
    """Bits 0-7 of a large weight of every depthwise layer in the fast path's weight: flagged in every
    row by the weight sums, and the rerun (its own weight copy) gives the clean outputs; the same flip in
    both copies is flagged (not corrected: the module says so)."""
    from onnx import numpy_helper

    q, protected, x = _case(fmt, variant)
    x = x[:32]
    record = read_protection(protected)
    clean = _run(_fused(q), x)
    changed = 0
    for p in _depthwise(protected):
        layer = p["name"]
        w_name = _weight_name(protected, layer)
        w = numpy_helper.to_array(next(t for t in protected.graph.initializer if t.name == w_name))
        index = np.unravel_index(int(np.argmax(np.abs(w.astype(np.int16)))), w.shape)
        original_w = w_name if fmt == "qdq" else next(n.input[3] for n in q.graph.node if n.name == layer)
        for bit in range(8):
            if np.array_equal(_run(_fused(_flip(q, original_w, index, bit)), x), clean):
                continue
            changed += 1
            fast_only = _flip(protected, w_name, index, bit)
            both = _flip(fast_only, f"{w_name}__ecc_rerun_{layer}", index, bit)
            for model, copies in ((fast_only, "fast path"), (both, "both copies")):
                sess = _protected(model)
                got, counts = _deltas(record["model_id"], lambda: _run(sess, x))
                check = counts[f"{layer} (sample check)"]
                assert check.flagged == check.vectors > 0, (layer, bit, copies, check)
                if copies == "fast path":
                    np.testing.assert_array_equal(got, clean, err_msg=f"{layer} {index} bit {bit}")
    assert changed >= 8


@pytest.mark.parametrize("fmt,variant", CASES)
def test_the_inline_strategy_leaves_depthwise_int8_convs_alone_with_the_reason(fmt, variant):
    """The other six layers are decoded inline, the last conv's int8 output (S8S8) through a
    QLinearGlobalAveragePool with shifted zero points in the QOperator model, bit-identical."""
    q, _, x = _case(fmt, variant)
    protected = onnx_ecc.transform(q)
    record = read_protection(protected)
    skipped = {s["name"]: s["reason"] for s in record["skipped"]}
    assert len(skipped) == 4 and all("--strategy rerun only" in r for r in skipped.values()), skipped
    assert len(record["protected"]) == 6
    np.testing.assert_array_equal(_run(_protected(protected), x[:64]), _run(_fused(q), x[:64]))


@functools.lru_cache(maxsize=None)
def _grouped():
    """The zoo's CNN with a groups=4 conv (random weights) quantised QDQ U8S8 on real Fashion-MNIST images, and 200
    real test images."""
    pytest.importorskip("torch")
    from onnx_ecc import datasets, zoo
    from onnx_ecc.zoo.pretrained import fashion_rgb32
    from onnx_ecc.zoo.quantised import quantize_qdq

    data = datasets.load("fashion-mnist")
    return quantize_qdq(zoo.grouped_cnn(), fashion_rgb32(data.x_train[:128])), fashion_rgb32(data.x_test[:200])


def test_a_grouped_int8_conv_is_coded_group_by_group_inline_and_a_wrong_accumulator_per_group_corrected():
    """groups=4 (8 input, 16 output channels per group): a code per group, bit-identical when clean with no flag;
    a +2^24 error in one accumulator of each group's every output vector corrected."""
    from test_int8 import _with_accumulator_faults

    q, x = _grouped()
    protected = onnx_ecc.transform(q)
    record = read_protection(protected)
    layer = next(p for p in record["protected"] if p["groups"] > 1)
    assert layer["groups"] == 4 and layer["kind"] == "int-code"
    assert not record["skipped"] and len(record["protected"]) == 4
    from onnx_ecc.transform.inspection import format_report

    assert "x4 groups, exact" in format_report(protected)
    got, counts = _deltas(record["model_id"], lambda: _run(_protected(protected), x))
    clean = _run(_fused(q), x)
    np.testing.assert_array_equal(got, clean)
    assert counts[layer["name"]].runs == 4 and counts[layer["name"]].flagged == 0  # one IntDecode per group
    from onnx_ecc.transform.calibration import probe

    names = [f"{layer['name']}__ecc_group{g}" for g in range(4)]  # each group's accumulators: <name>__ecc_acc
    feeds = {protected.graph.input[0].name: x[:8]}
    shapes = {k: v.shape for k, v in probe(protected, [f"{n}__ecc_acc" for n in names])(feeds).items()}
    sess = _protected(_with_accumulator_faults(protected, names))
    rng = np.random.default_rng(0)
    for i, n in enumerate(names):
        fault = np.zeros(shapes[f"{n}__ecc_acc"], np.int32)  # [N, H, W, 16 channels + digit columns]
        fault[..., rng.integers(0, 16)] = (1 << 24) * (1 if i % 2 else -1)
        feeds[f"{n}__fault"] = fault
    got, counts = _deltas(record["model_id"], lambda: sess.run(None, feeds)[0])
    np.testing.assert_array_equal(got, clean[:8])
    assert counts[layer["name"]].corrected_values >= 4 * 8 * 16 * 16 and counts[layer["name"]].uncorrectable == 0


def test_a_grouped_int8_conv_is_covered_under_the_rerun_strategy_and_a_sampled_error_corrected():
    """The same model under the rerun strategy: the grouped conv keeps its fused kernel with the exact sample
    check, bit-identical when clean; a sampled error is flagged and the run decoded (its groups' IntDecodes)."""
    from onnx_ecc.transform.calibration import probe

    q, x = _grouped()
    protected = onnx_ecc.transform(q, strategy="rerun")
    record = read_protection(protected)
    grouped = [p for p in record["protected"] if p["groups"] > 1]
    assert [p["groups"] for p in grouped] == [4] and not record["skipped"] and len(record["protected"]) == 4
    sess = _protected(protected)
    got, counts = _deltas(record["model_id"], lambda: _run(sess, x))
    clean = _run(_fused(q), x)
    np.testing.assert_array_equal(got, clean)
    assert all(c.flagged == 0 for k, c in counts.items() if k.endswith("(sample check)"))
    layer = grouped[0]["name"]
    tensor = _quantised_output(protected, layer)
    shape = probe(protected, [tensor])({protected.graph.input[0].name: x[:16]})[tensor].shape
    fault = np.zeros(shape, np.uint8)
    fault[_position(shape, grouped[0]["sample_stride"], True)] = 64
    feeds = {protected.graph.input[0].name: x[:16], f"{tensor}__fault": fault}
    faulty = _protected(_with_added_fault(protected, tensor))
    got, counts = _deltas(record["model_id"], lambda: faulty.run(None, feeds)[0])
    assert counts[f"{layer} (sample check)"].flagged > 0 and counts[layer].runs == 4
    np.testing.assert_array_equal(got, clean[:16])


def test_layer_mode_decode_of_a_depthwise_int8_conv_is_refused_and_none_leaves_it_alone():
    q, protected, x = _case("qdq", "u8s8")
    layer = _depthwise(protected)[0]["name"]
    with pytest.raises(Exception, match="no inline decoding"):
        onnx_ecc.transform(q, strategy="rerun", layer_modes=((layer, "decode"),))
    alone = onnx_ecc.transform(q, strategy="rerun", layer_modes=((layer, "none"),))
    record = read_protection(alone)
    assert [s["name"] for s in record["skipped"]] == [layer] and len(_depthwise(alone)) == 3
    np.testing.assert_array_equal(_run(_protected(alone), x[:32]), _run(_fused(q), x[:32]))
