"""The rerun strategy's fast path at real-model cost: Gemm / MatMul checked by a separate parity
product, stride-1 convs predicted from pooled input windows, onnxruntime's fusions kept."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import corrupt_initializer, feeds_for, insert_output_fault, protected_model, zoo_model

import onnx_ecc
from onnx_ecc import ops
from onnx_ecc.runtime import optimized
from onnx_ecc.transform.record import read_protection
from onnx_ecc.transform.calibration import probe
from onnx_ecc.ops.oracles import linear_check_ratios
from onnx_ecc.transform.strategies.parity_check import parity_check_ratios


def _run(model, feeds):
    sess = onnx_ecc.ProtectedSession(model)
    return sess.run(None, feeds)[0], sess.last_report


def _linear_layers(protected):
    """The Gemm / MatMul layers with a weight (not the products of two activations)."""
    return [p["name"] for p in read_protection(protected)["protected"] if p["op"] in ("Gemm", "MatMul") and p["params"]]


def _tol(clean):
    return dict(rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(clean).max())))


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("name", ["mlp", "transformer_encoder"])
def test_linear_layers_are_checked_by_a_parity_product_and_not_decoded_on_the_fast_path(name, device):
    """For the CPU each weight layer gets one LinearCheck (its parity from the layer's input in the
    kernel); for CUDA a parity product and a ParityCheck, ops with CUDA kernels."""
    model = zoo_model(name)
    protected = protected_model(name, strategy="rerun", device=device)
    onnx.checker.check_model(protected, full_check=True)
    top = [n for n in protected.graph.node if n.domain == ops.DOMAIN]
    weight_check = ops.LINEAR_CHECK.name if device == "cpu" else ops.PARITY_CHECK.name
    # the weight layers' checks, and a ProductCheck of each product of two activations (CPU)
    assert {n.op_type for n in top if n.op_type != ops.PRODUCT_CHECK.name} == {weight_check}
    assert len(top) == len(read_protection(protected)["protected"]) > 0  # products of activations too
    products = len([n for n in top if n.op_type == ops.PRODUCT_CHECK.name])
    assert products == (4 if name == "transformer_encoder" and device == "cpu" else 0)
    if device == "cpu":  # no copies of the inputs' rows and no parity products left
        assert not [n.name for n in protected.graph.node if n.name.endswith(("__ecc_rows", "__ecc_parity"))]
    # the layers' weights are the original ones: the parity comes from a product of its own
    originals = {i.name for i in model.graph.initializer}
    weight_layers = [p["name"] for p in read_protection(protected)["protected"] if p["params"] > 0]
    for node in protected.graph.node:
        if node.name in weight_layers:
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
    """The parity check reads every sample_stride-th output row: errors at many places (some in
    a checked row) are caught; a single error in an unchecked row would pass (README)."""
    model = zoo_model("mlp")
    protected = protected_model("mlp", strategy="rerun")
    feeds = feeds_for(model, batch=4, seed=6)
    clean = onnx_ecc.ProtectedSession(model).run(None, feeds)[0]
    nodes = {n.name: n for n in protected.graph.node}
    for layer in _linear_layers(protected):
        got, report = _run(insert_output_fault(protected, nodes[layer].output[0], seed=9, bits=(30,), count=40),
                           feeds)
        assert report.checks_failed > 0, (layer, report.summary())
        np.testing.assert_allclose(got, clean, **_tol(clean))


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_parity_check_kernel_agrees_with_the_numpy_ratios(device):
    """The tolerance calibrated from the numpy ratios (linear_check_ratios of a LinearCheck,
    parity_check_ratios of a ParityCheck) is what the kernel applies: scaled just under the worst
    clean ratio of one layer, that layer's check fires; just over, it does not."""
    model = zoo_model("mlp")
    protected = protected_model("mlp", tolerance=None, strategy="rerun", device=device)
    op = ops.LINEAR_CHECK.name if device == "cpu" else ops.PARITY_CHECK.name
    node = next(n for n in protected.graph.node if n.op_type == op)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    feeds = feeds_for(model, batch=4, seed=1)
    if device == "cpu":
        x, wg, y = node.input[:3]
        constants = {t.name: onnx.numpy_helper.to_array(t) for t in protected.graph.initializer}
        values = probe(protected, [x, y])(feeds)
        pb = constants[node.input[4]] if len(node.input) > 4 and node.input[4] else None
        worst = float(linear_check_ratios(values[x], constants[wg], values[y], pb, **attrs).max())
    else:
        values = probe(protected, node.input[:2])(feeds)
        worst = float(parity_check_ratios(values[node.input[0]], values[node.input[1]], **attrs).max())
    assert worst > 0
    for factor, fires in ((0.9, True), (1.1, False)):
        changed = onnx.ModelProto()
        changed.CopyFrom(protected)
        target = next(n for n in changed.graph.node if n.name == node.name)
        from onnx_ecc.transform.calibration import set_attribute

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


@pytest.mark.parametrize("name", ["resnet_style", "depthwise_separable_cnn", "grouped_cnn"])
@pytest.mark.parametrize("bit", [30, 26])
def test_sample_checks_catch_a_flipped_conv_weight_and_the_run_is_decoded(name, bit):
    """A flipped weight fails its output channel's filter sum, so the run is decoded."""
    model = zoo_model(name)
    protected = protected_model(name, strategy="rerun")
    feeds = feeds_for(model, batch=2, seed=5)
    clean = onnx_ecc.ProtectedSession(model).run(None, feeds)[0]
    nodes = {n.name: n for n in protected.graph.node}
    convs = [p["name"] for p in read_protection(protected)["protected"] if "sample_check_tolerance" in p]
    assert convs
    for layer in convs:
        weight = nodes[layer].input[1]
        wrong = onnx_ecc.ProtectedSession(corrupt_initializer(model, weight, (0, 0, 0, 0), bit)).run(None, feeds)[0]
        if np.allclose(wrong, clean, rtol=1e-4, atol=1e-4):
            continue  # this flip does not change the outputs: nothing to show
        got, report = _run(corrupt_initializer(protected, weight, (0, 0, 0, 0), bit), feeds)
        assert report.checks_failed > 0, (layer, report.summary())
        assert report.corrected > 0 and report.uncorrectable == 0, (layer, report.summary())
        np.testing.assert_allclose(got, clean, **_tol(clean))


def _one_conv_model(groups: int):
    """x [1, 8, 16, 16] -> 3x3 conv (8 -> 8 channels, pads 1, ``groups``) -> Relu, random weights."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    w = rng.standard_normal((8, 8 // groups, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], "conv", pads=[1, 1, 1, 1], group=groups),
         helper.make_node("Relu", ["c"], ["y"], "relu")], "one_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize("groups", [1, 8])
def test_filter_sums_catch_a_weight_whose_input_is_zero_at_every_sample(groups):
    """Input channel 0 is non-zero only at (5, 5), which no sampled output reads: the strided copy
    never sees its weights, but the filter sums do; the parity filters (the alternative) do not."""
    model = _one_conv_model(groups)
    x = np.zeros((1, 8, 16, 16), np.float32)
    x[0, 0, 5, 5] = 1.0
    x[0, 1:] = np.random.default_rng(0).random((7, 16, 16), dtype=np.float32)
    feeds = {"x": x}
    clean = onnx_ecc.ProtectedSession(model).run(None, feeds)[0]
    wrong = onnx_ecc.ProtectedSession(corrupt_initializer(model, "w", (0, 0, 1, 1), 30)).run(None, feeds)[0]
    assert not np.allclose(wrong, clean)
    by_sums = onnx_ecc.transform(model, strategy="rerun", filter_checks="sums", sample_stride=8)
    got, report = _run(corrupt_initializer(by_sums, "w", (0, 0, 1, 1), 30), feeds)
    assert report.checks_failed > 0 and report.uncorrectable == 0, report.summary()
    np.testing.assert_allclose(got, clean, **_tol(clean))
    if groups == 1:  # parity filters exist for dense convs only; blind here
        by_parity = onnx_ecc.transform(model, strategy="rerun", filter_checks="parity", sample_stride=8)
        got, report = _run(corrupt_initializer(by_parity, "w", (0, 0, 1, 1), 30), feeds)
        assert report.checks_failed == 0
        np.testing.assert_array_equal(got, wrong)


def test_sample_checks_catch_output_errors_at_sampled_positions():
    """A conv output with many wrong values (some at sampled positions) fails its sample check and
    the run is recomputed; one wrong value at an unsampled position is not seen (documented)."""
    model = zoo_model("resnet_style")
    protected = protected_model("resnet_style", strategy="rerun")
    feeds = feeds_for(model, batch=2, seed=7)
    clean = onnx_ecc.ProtectedSession(model).run(None, feeds)[0]
    nodes = {n.name: n for n in protected.graph.node}
    for layer in [p["name"] for p in read_protection(protected)["protected"] if "sample_check_tolerance" in p]:
        faulty = insert_output_fault(protected, nodes[layer].output[0], seed=11, bits=(30,), count=300)
        got, report = _run(faulty, feeds)
        assert report.checks_failed > 0, (layer, report.summary())
        np.testing.assert_allclose(got, clean, **_tol(clean))


def _sample_check_session(inputs, **attrs):
    import onnxruntime as ort
    from onnx import TensorProto, helper

    node = ops.SAMPLE_CHECK.make_node(inputs, ["Raised"], "check", **attrs)
    types = {"Flag": TensorProto.BOOL}
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, types.get(n, TensorProto.FLOAT), None)
                                        for n in inputs if n],
                          [helper.make_tensor_value_info("Raised", TensorProto.BOOL, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.DOMAIN, 1)],
                          ir_version=9)
    return ort.InferenceSession(m.SerializeToString(), onnx_ecc.session_options(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("seed", range(12))
def test_sample_check_kernel_matches_its_oracle(seed):
    """Random conv samples with a Clip and a residual, parity channels (or, for a depthwise conv,
    its filters and bias with their sums), and the faults each part must see: the kernel's verdict
    and count equal the numpy oracle's."""
    from onnx_ecc.codes import Layout
    from onnx_ecc.ops.oracles import sample_check
    from onnx_ecc.transform.strategies.sample_check import filter_sums

    rng = np.random.default_rng(seed)
    n, c, h, w = 3, 12, 4, 5
    depthwise = seed % 2 == 1
    y = rng.standard_normal((n, c, h, w)).astype(np.float32)
    r = rng.standard_normal((n, c, h, w)).astype(np.float32)
    a = np.minimum(np.maximum(y + r, np.float32(0)), np.float32(6))
    attrs = dict(data_channels=c, activation="Clip", activation_params=[0.0, 6.0], tolerance=8.0)
    layout = Layout(c, 4, 2)
    filters = bias = None
    if depthwise:
        extra = y
        filters = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
        bias = rng.standard_normal(c).astype(np.float32)
        attrs.update(filter_sums=filter_sums(filters, bias))
    else:
        parity = np.einsum("pc,nchw->nphw", layout.parity_matrix(), y.astype(np.float64)).astype(np.float32)
        extra = np.concatenate([y, parity], axis=1)
        attrs.update(block=4, parity=2, generator=layout.generator_attribute(),
                     noise_gain=layout.output_noise_gains(), noise_offset=[0.0] * 6, parity_tolerance=16.0)
    fault = seed // 2
    bad = int(rng.integers(0, n))
    if fault == 1:      # the original's output wrong at a sampled position
        a[bad, 2, 1, 1] += np.float32(0.5)
    elif fault == 2:    # a value a few ulps off: within the tolerance
        a[bad, 3, 0, 0] = np.nextafter(np.nextafter(a[bad, 3, 0, 0], np.float32(9)), np.float32(9))
    elif fault == 3:    # a corrupted weight: the copy disagrees with its parity, or a filter with its sum
        if depthwise:
            filters[5, 0, 2, 2] *= np.float32(1.5)
        else:
            extra[bad, c + 1, 2, 2] += np.float32(1.0)
    elif fault == 4:    # NaN matched by NaN passes; NaN against a number does not
        a[bad, 0, 0, 0] = np.nan
    elif fault == 5:    # a non-finite weight or bias
        if depthwise:
            bias[7] = np.inf
        else:
            extra[bad, c, 0, 1] = np.nan
    feeds = {"A": a, "Y": extra, "R": r}
    inputs = ["A", "Y", "W" if depthwise else "", "R", "", "Bias" if depthwise else ""]
    if depthwise:
        feeds.update(W=filters, Bias=bias)
    got = bool(_sample_check_session(inputs, **attrs).run(None, feeds)[0][0])
    want, failed = sample_check(a, extra, filters, r, bias=bias, **attrs)
    assert got == want, (seed, failed)
    assert want == (fault in (1, 3, 4, 5)), seed


def test_sample_check_rejects_bad_tensors_with_an_error():
    with_filters = _sample_check_session(["A", "Y", "W"], data_channels=4)  # W without filter_sums
    with pytest.raises(Exception, match="onnx-ecc SampleCheck.*filter_sums"):
        with_filters.run(None, {"A": np.zeros((2, 4, 3, 3), np.float32), "Y": np.zeros((2, 4, 3, 3), np.float32),
                                "W": np.zeros((4, 1, 3, 3), np.float32)})
    sess = _sample_check_session(["A", "Y"], data_channels=4)
    with pytest.raises(Exception, match="onnx-ecc SampleCheck"):
        sess.run(None, {"A": np.zeros((2, 4, 3, 3), np.float32), "Y": np.zeros((2, 5, 3, 3), np.float32)})
    with pytest.raises(Exception, match="onnx-ecc SampleCheck"):
        sess.run(None, {"A": np.zeros((2, 3, 3, 3), np.float32), "Y": np.zeros((2, 3, 3, 3), np.float32)})


def test_parity_check_with_a_stride_checks_every_strided_row_as_its_oracle():
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from onnx_ecc.codes import Layout
    from onnx_ecc.ops.oracles import parity_check

    rng = np.random.default_rng(3)
    rows, n, stride = 7, 40, 3
    layout = Layout(n, 16, 2)
    attrs = dict(axis=-1, stride=stride, data_channels=n, block=16, parity=2, generator=layout.generator_attribute(),
                 noise_gain=layout.output_noise_gains(), noise_offset=[0.0] * 6, tolerance=32.0)
    node = ops.PARITY_CHECK.make_node(["Y", "P"], ["R"], "check", **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in "YP"],
                          [helper.make_tensor_value_info("R", TensorProto.BOOL, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.DOMAIN, 1)],
                          ir_version=9)
    sess = ort.InferenceSession(m.SerializeToString(), onnx_ecc.session_options(), providers=["CPUExecutionProvider"])
    y = rng.standard_normal((rows, n)).astype(np.float32)
    p = (y[::stride].astype(np.float64) @ layout.parity_matrix().T).astype(np.float32)
    for row, expect in ((None, False), (3, True), (4, False)):  # row 3 is checked, row 4 is not
        yy = y.copy()
        if row is not None:
            yy[row, 5] += np.float32(1.0)
        got = bool(sess.run(None, {"Y": yy, "P": p})[0][0])
        assert got == expect == parity_check(yy, p, **attrs)[0], row
    with pytest.raises(Exception, match="onnx-ecc ParityCheck"):
        sess.run(None, {"Y": y, "P": np.zeros((rows, 6), np.float32)})


def test_auto_conv_check_samples_depthwise_and_relu6_convs_and_sums_the_others():
    model = zoo_model("mobilenet_v2")
    protected = protected_model("mobilenet_v2", strategy="rerun", conv_check="auto")
    layers = {p["name"]: p for p in read_protection(protected)["protected"] if p["op"] == "Conv"}
    kinds = {n.name: ("sample" if "sample_check_tolerance" in layers[n.name] else "sum")
             for n in model.graph.node if n.name in layers}
    consumers = {t: m.op_type for m in model.graph.node for t in m.input}
    for node in model.graph.node:
        if node.name in kinds:
            clipped = consumers.get(node.output[0]) == "Clip"
            assert kinds[node.name] == ("sample" if clipped else "sum"), node.name
    assert set(kinds.values()) == {"sample", "sum"}


def test_sample_checks_work_on_dynamic_spatial_sizes():
    """With the image size unknown at transform time the copies sample from row and column 0 at
    the full stride; fault-free outputs match at two sizes and a flipped weight is still caught."""
    model = zoo_model("resnet_style")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    del model.graph.value_info[:]
    protected = onnx_ecc.transform(model, strategy="rerun")
    for size in (32, 48):
        feeds = {"input": np.random.default_rng(size).random((2, 3, size, size), dtype=np.float32)}
        got, report = _run(protected, feeds)
        np.testing.assert_allclose(got, onnx_ecc.ProtectedSession(model).run(None, feeds)[0], rtol=1e-5, atol=1e-6)
        assert report.checks_failed == 0, report.summary()
    conv = next(n for n in protected.graph.node if n.name == "/3/conv1/Conv")
    _, report = _run(corrupt_initializer(protected, conv.input[1], (0, 0, 1, 1), 30), feeds)
    assert report.checks_failed > 0 and report.corrected > 0, report.summary()
