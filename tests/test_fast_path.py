"""The rerun strategy's fast path at real-model cost: Gemm / MatMul checked by a separate parity
product, stride-1 convs predicted from pooled input windows, onnxruntime's fusions kept."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import corrupt_initializer, feeds_for, insert_output_fault, protected_model, zoo_model

import onnx_ecc
from onnx_ecc import ops, optimized
from onnx_ecc.metadata import read_protection
from onnx_ecc.noise import probe
from onnx_ecc.transform.parity_check import parity_check_ratios


def _run(model, feeds):
    sess = onnx_ecc.ProtectedSession(model)
    return sess.run(None, feeds)[0], sess.last_report


def _linear_layers(protected):
    return [p["name"] for p in read_protection(protected)["protected"] if p["op"] in ("Gemm", "MatMul")]


def _tol(clean):
    return dict(rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(clean).max())))


@pytest.mark.parametrize("name", ["mlp", "transformer_encoder"])
def test_linear_layers_are_checked_by_a_parity_product_and_not_decoded_on_the_fast_path(name):
    model = zoo_model(name)
    protected = protected_model(name, strategy="rerun")
    onnx.checker.check_model(protected, full_check=True)
    top = [n for n in protected.graph.node if n.domain == ops.DOMAIN]
    assert {n.op_type for n in top} == {ops.PARITY_CHECK.name}
    assert len(top) == len(_linear_layers(protected)) > 0
    # the layers' weights are the original ones: the parity comes from a product of its own
    originals = {i.name for i in model.graph.initializer}
    for node in protected.graph.node:
        if node.name in _linear_layers(protected):
            assert node.input[1] in originals
    feeds = feeds_for(model, batch=3, seed=2)
    got, report = _run(protected, feeds)
    clean = onnx_ecc.ProtectedSession(model).run(None, feeds)[0]
    np.testing.assert_array_equal(got, clean)  # the fast path computes exactly what the original does
    assert report.checks_failed == 0 and report.flagged == 0, report.summary()


@pytest.mark.parametrize("bit", [30, 27])
def test_a_flipped_linear_weight_bit_fails_its_parity_check_and_the_run_is_decoded(bit):
    model = zoo_model("transformer_encoder")
    protected = protected_model("transformer_encoder", strategy="rerun")
    feeds = feeds_for(model, batch=2, seed=4)
    clean = onnx_ecc.ProtectedSession(model).run(None, feeds)[0]
    nodes = {n.name: n for n in protected.graph.node}
    for layer in _linear_layers(protected):
        weight = nodes[layer].input[1]
        got, report = _run(corrupt_initializer(protected, weight, (3, 5), bit), feeds)
        assert report.checks_failed > 0, (layer, report.summary())
        assert report.corrected > 0 and report.uncorrectable == 0, (layer, report.summary())
        np.testing.assert_allclose(got, clean, **_tol(clean))


def test_a_gross_error_in_a_linear_output_is_caught_and_recomputed():
    model = zoo_model("mlp")
    protected = protected_model("mlp", strategy="rerun")
    feeds = feeds_for(model, batch=4, seed=6)
    clean = onnx_ecc.ProtectedSession(model).run(None, feeds)[0]
    nodes = {n.name: n for n in protected.graph.node}
    for layer in _linear_layers(protected):
        got, report = _run(insert_output_fault(protected, nodes[layer].output[0], seed=9, bits=(30,)), feeds)
        assert report.checks_failed > 0, (layer, report.summary())
        np.testing.assert_allclose(got, clean, **_tol(clean))


def test_parity_check_kernel_agrees_with_the_numpy_ratios():
    """The tolerance calibrated from parity_check_ratios is what the kernel applies: scaled just
    under the worst clean ratio of one layer, that layer's check fires; just over, it does not."""
    model = zoo_model("mlp")
    protected = protected_model("mlp", tolerance=None, strategy="rerun")
    node = next(n for n in protected.graph.node if n.op_type == ops.PARITY_CHECK.name)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    feeds = feeds_for(model, batch=4, seed=1)
    values = probe(protected, node.input[:2])(feeds)
    worst = float(parity_check_ratios(values[node.input[0]], values[node.input[1]], **attrs).max())
    assert worst > 0
    for factor, fires in ((0.9, True), (1.1, False)):
        changed = onnx.ModelProto()
        changed.CopyFrom(protected)
        target = next(n for n in changed.graph.node if n.name == node.name)
        from onnx_ecc.noise import set_attribute

        set_attribute(target, "tolerance", worst * factor)
        _, report = _run(changed, feeds)
        assert (report.checks_failed > 0) == fires, (factor, report.summary())


@pytest.mark.parametrize("name", ["resnet_style", "depthwise_separable_cnn"])
def test_pooled_window_means_predict_the_conv_output_sum(name):
    """For stride-1 convs the check pools the input's windows: their projection must equal the
    check-weighted spatial mean of the conv's output (minus a . bias), up to float rounding."""
    protected = protected_model(name, strategy="rerun", conv_check="sum")
    producer = {o: n for n in protected.graph.node for o in n.output}
    pools = {"AveragePool", "GlobalAveragePool"}

    def predicted_from_pools(check):
        project = producer.get(check.input[1])
        return project is not None and project.op_type == "Conv" and producer[project.input[0]].op_type in pools

    pooled = [n for n in protected.graph.node if n.op_type == ops.SUM_CHECK.name and predicted_from_pools(n)]
    assert pooled, "no check predicted from pooled windows"
    feeds = feeds_for(zoo_model(name), batch=2, seed=3)
    values = probe(protected, [t for n in pooled for t in n.input[:2]] + [n.input[3] for n in pooled if len(n.input) > 3])(feeds)
    for n in pooled:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        y = values[n.input[0]].reshape(2, -1).astype(np.float64)
        if len(n.input) > 3 and n.input[3]:
            y = y - values[n.input[3]].reshape(2, -1)
        lhs = y @ np.asarray(attrs["weights"]) - attrs["offset"]
        rhs = values[n.input[1]].reshape(2, -1)[:, :attrs["taps"]].sum(axis=1)
        np.testing.assert_allclose(lhs, rhs, rtol=1e-4, atol=1e-4 * float(np.abs(y).sum(axis=1).max()))


def test_onnxruntime_keeps_every_transformer_fusion_of_the_original():
    model = zoo_model("transformer_encoder")
    protected = protected_model("transformer_encoder", strategy="rerun")
    assert optimized.lost_fusions(model, protected) == {}
    fused = {kind for (domain, kind) in optimized.op_counts(optimized.optimized_graph(model)) if domain == "com.microsoft"}
    assert {"FusedMatMul", "BiasGelu", "SkipLayerNormalization"} <= fused


@pytest.mark.parametrize("name", ["resnet_style", "depthwise_separable_cnn", "mobilenet_v2"])
def test_sample_checks_keep_every_conv_fusion_and_layout_of_the_original(name):
    model = zoo_model(name)
    protected = protected_model(name, strategy="rerun")
    assert optimized.lost_fusions(model, protected) == {}
    counts = optimized.op_counts(optimized.optimized_graph(model))
    assert any("+" in kind for _, kind in counts), "the original has fused conv activations to keep"


def test_a_sum_checked_conv_loses_only_its_activation_fusion():
    """A sum check of a conv reads its whole output before the activation, so onnxruntime cannot
    fuse that activation into the conv (README: what protection costs); nothing else is lost."""
    model = zoo_model("resnet_style")
    protected = protected_model("resnet_style", strategy="rerun", conv_check="sum")
    lost = optimized.lost_fusions(model, protected)
    assert set(lost) <= {"Conv+Relu", "extra ReorderOutput", "extra ReorderInput"}
    assert lost.get("extra ReorderInput", 0) == 0
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    unchecked = onnx_ecc.transform(model, strategy="rerun", conv_check="sum",
                                   layer_modes=tuple((c, "none") for c in convs))
    assert "Conv+Relu" not in optimized.lost_fusions(model, unchecked)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v2", "bert_encoder"])
def test_real_size_zoo_models_protect_with_equal_outputs(name):
    model = zoo_model(name)
    protected = protected_model(name, strategy="rerun")
    feeds = feeds_for(model, batch=2, seed=0)
    got, report = _run(protected, feeds)
    # a checked conv runs its activation unfused, which may round its last bit differently
    np.testing.assert_allclose(got, onnx_ecc.ProtectedSession(model).run(None, feeds)[0], rtol=1e-5, atol=1e-6)
    assert report.checks_failed == 0 and report.flagged == 0, report.summary()
