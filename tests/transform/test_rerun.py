"""The rerun strategy: original convs plus checks on the fast path, decoding only on flagged runs.

Most tests here pin the sum check (conv_check='sum'); tests/test_fast_path.py covers the sample check."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import corrupt_initializer, feeds_for, insert_output_fault, protected_model, zoo_model
from onnx import TensorProto, helper

import onnx_ecc
from onnx_ecc import ops
from onnx_ecc.transform.record import read_protection
from onnx_ecc.ops.oracles import sum_check, sum_check_ratios
from onnx_ecc.runtime import all_nodes
from onnx_ecc.transform.strategies.rerun import RERUN_SUFFIX, projected_taps

CNNS = ["cnn", "resnet_style", "grouped_cnn", "depthwise_separable_cnn"]
SUM = {"strategy": "rerun", "conv_check": "sum"}


def _run(model, feeds, fail_stop=None):
    sess = onnx_ecc.ProtectedSession(model, fail_stop=fail_stop)
    return sess.run(None, feeds)[0], sess.last_report


def _reference(model, feeds):
    return onnx_ecc.ProtectedSession(model).run(None, feeds)[0]


def _protected_convs(model):
    return [p["name"] for p in read_protection(model)["protected"] if p["op"] == "Conv"]


@pytest.mark.parametrize("name", CNNS)
def test_fault_free_outputs_match_and_no_check_fails(name):
    model = zoo_model(name)
    protected = protected_model(name, **SUM)
    onnx.checker.check_model(protected, full_check=True)
    feeds = feeds_for(model, batch=4, seed=3)
    got, report = _run(protected, feeds)
    np.testing.assert_allclose(got, _reference(model, feeds), rtol=1e-5, atol=1e-5)
    assert report.checks_failed == 0 and report.flagged == 0, report.summary()
    assert read_protection(protected)["options"]["strategy"] == "rerun"
    # the fast path holds no decoder for a conv: those live in the If's decoding branch only
    top = {n.op_type for n in protected.graph.node if n.domain == ops.DOMAIN}
    assert ops.SUM_CHECK.name in top and ops.DEPTHWISE_CHECK.name not in top


def test_the_two_convs_of_a_residual_add_share_one_check_on_the_add_output():
    protected = protected_model("resnet_style", **SUM)
    checks = {helper.get_attribute_value(a).decode(): n for n in protected.graph.node
              if n.op_type == ops.SUM_CHECK.name for a in n.attribute if a.name == "layer"}
    tolerances = {p["name"]: p["sum_check_tolerance"] for p in read_protection(protected)["protected"]
                  if p["op"] == "Conv"}
    for stage in ("/4", "/5"):
        pair = (f"{stage}/shortcut/shortcut.0/Conv", f"{stage}/conv2/Conv")
        assert "+".join(pair) in checks and not set(pair) & set(checks)
        assert tolerances[pair[0]] == tolerances[pair[1]]
        assert checks["+".join(pair)].input[0] == f"{stage}/Add_output_0__ecc_means"
        # neither conv output is read by a check, so onnxruntime fuses the Add as in the original
        pooled = {n.input[0] for n in protected.graph.node if n.op_type == "GlobalAveragePool"}
        assert not {f"{stage}/conv2/Conv_output_0", f"{stage}/shortcut/shortcut.0/Conv_output_0"} & pooled


@pytest.mark.parametrize("name", ["resnet_style", "grouped_cnn", "depthwise_separable_cnn"])
@pytest.mark.parametrize("bit", [30, 26])
def test_a_flipped_conv_weight_bit_is_caught_and_the_run_decoded(name, bit):
    model = zoo_model(name)
    protected = protected_model(name, **SUM)
    feeds = feeds_for(model, batch=2, seed=5)
    clean = _reference(model, feeds)
    convs = {n.name: n for n in protected.graph.node if n.op_type == "Conv"}
    for layer in _protected_convs(protected):
        weight = convs[layer].input[1]
        faulty_original = corrupt_initializer(model, weight, (0, 0, 0, 0), bit)
        wrong = _reference(faulty_original, feeds)
        if np.allclose(wrong, clean, rtol=1e-4, atol=1e-4):
            continue  # this flip does not change the outputs (e.g. a dead channel): nothing to show
        got, report = _run(corrupt_initializer(protected, weight, (0, 0, 0, 0), bit), feeds)
        assert report.checks_failed > 0, (layer, report.summary())
        assert report.corrected > 0 and report.uncorrectable == 0, (layer, report.summary())
        np.testing.assert_allclose(got, clean, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(clean).max()))


@pytest.mark.parametrize("persistent", [False, True], ids=["transient", "persistent"])
def test_a_corrupted_conv_output_is_caught_and_corrected(persistent):
    model = zoo_model("resnet_style")
    protected = protected_model("resnet_style", **SUM)
    feeds = feeds_for(model, batch=2, seed=7)
    clean = _reference(model, feeds)
    convs = {n.name: n for n in protected.graph.node if n.op_type == "Conv"}
    for layer in _protected_convs(protected):
        out = convs[layer].output[0]
        faulty = insert_output_fault(protected, out, seed=11, bits=(30,))
        if persistent:  # the same element goes wrong again when the decoding branch recomputes it
            faulty = insert_output_fault(faulty, f"{out}__ecc_data{RERUN_SUFFIX}", seed=11, bits=(30,))
        got, report = _run(faulty, feeds)
        assert report.checks_failed > 0, (layer, report.summary())
        if persistent:
            assert report.corrected >= 1, (layer, report.summary())
        np.testing.assert_allclose(got, clean, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(clean).max()))


def test_detect_mode_reports_and_fail_stop_raises():
    model = zoo_model("cnn")
    protected = onnx_ecc.transform(model, mode="detect", **SUM)
    assert not any(n.domain == ops.DOMAIN and n.op_type == ops.DECODE.name for n in all_nodes(protected.graph)
                   if n.name.startswith("/") and "Conv" in n.name)
    feeds = feeds_for(model, batch=2, seed=1)
    conv = next(n for n in protected.graph.node if n.op_type == "Conv" and n.name in _protected_convs(protected))
    faulty = insert_output_fault(protected, conv.output[0], seed=3, bits=(30,))
    got, report = _run(faulty, feeds)
    assert report.checks_failed > 0 and report.corrected == 0
    # detect mode reports and does not repair: outputs are those of the original with the same fault
    np.testing.assert_array_equal(got, _reference(insert_output_fault(model, conv.output[0], seed=3, bits=(30,)), feeds))
    stopping = onnx_ecc.transform(model, mode="detect", fail_stop=True, **SUM)
    with pytest.raises(Exception, match="sum check"):
        _run(insert_output_fault(stopping, conv.output[0], seed=3, bits=(30,)), feeds)


def test_no_check_fails_on_real_digits():
    pytest.importorskip("torch")
    from onnx_ecc import datasets, zoo

    try:
        model, data = zoo.mnist_cnn(), datasets.load("mnist")
    except Exception as e:
        pytest.skip(f"MNIST CNN or data unavailable: {e}")
    protected = onnx_ecc.transform(model, strategy="rerun")  # the default: sample checks
    feeds = {model.graph.input[0].name: data.x_test[:1000]}
    got, report = _run(protected, feeds)
    assert report.checks_failed == 0, report.summary()
    np.testing.assert_allclose(got, _reference(model, feeds), rtol=1e-5, atol=1e-5)


def _sum_check_model(channels, taps, offset, tolerance, with_flag):
    inputs = ["Y", "X"] + (["Flag"] if with_flag else [])
    node = ops.SUM_CHECK.make_node(inputs, ["Raised"], "check", weights=[1.0] * channels, taps=taps,
                                   offset=offset, tolerance=tolerance)
    types = [TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.BOOL]
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, t, None) for n, t in zip(inputs, types)],
                          [helper.make_tensor_value_info("Raised", TensorProto.BOOL, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.DOMAIN, 1)],
                             ir_version=9)


@pytest.mark.parametrize("seed", range(6))
def test_sum_check_kernel_matches_reference(seed):
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    n, c, taps = 5, 12, 9
    y = rng.standard_normal((n, c, 1, 1)).astype(np.float32)
    x = rng.standard_normal((n, 16, 1, 1)).astype(np.float32)
    offset = 0.25
    x[:, 0, 0, 0] += (y.sum(axis=(1, 2, 3)) - x[:, :taps].sum(axis=(1, 2, 3)) - offset)  # consistent samples
    bad = rng.integers(0, n)
    if seed % 3 == 0:
        y[bad, rng.integers(0, c)] += np.float32(2e-2 * (seed + 1))
    elif seed % 3 == 1:
        x[bad, rng.integers(0, taps)] = np.nan
    flag = np.array([seed == 5])
    tol = 2e3
    sess = ort.InferenceSession(_sum_check_model(c, taps, offset, tol, True).SerializeToString(),
                                sess_options=onnx_ecc.session_options(), providers=["CPUExecutionProvider"])
    counters_before = onnx_ecc.read_counters("")
    got = sess.run(None, {"Y": y, "X": x, "Flag": flag})[0]
    want, failed = sum_check(y, x, flag[0], weights=[1.0] * c, taps=taps, offset=offset, tolerance=tol)
    assert got.dtype == np.bool_ and got.shape == (1,) and bool(got[0]) == want
    assert want == (seed % 3 != 2 or seed == 5)
    ratios = sum_check_ratios(y, x, weights=[1.0] * c, taps=taps, offset=offset)
    assert failed == int(np.sum(~(ratios <= tol)))
    assert onnx_ecc.read_counters("")[" (sum check)"].flagged - counters_before.get(" (sum check)", _zero()).flagged \
        == failed


def _zero():
    from onnx_ecc.runtime import LayerCounts

    return LayerCounts("", "SumCheck")


def test_sum_check_rejects_bad_tensors_with_an_error():
    import onnxruntime as ort

    sess = ort.InferenceSession(_sum_check_model(4, 9, 0.0, 10.0, False).SerializeToString(),
                                sess_options=onnx_ecc.session_options(), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="onnx-ecc SumCheck"):
        sess.run(None, {"Y": np.zeros((2, 5), np.float32), "X": np.zeros((2, 16), np.float32)})
    with pytest.raises(Exception, match="onnx-ecc SumCheck"):
        sess.run(None, {"Y": np.zeros((2, 4), np.float32), "X": np.zeros((3, 16), np.float32)})
    with pytest.raises(Exception, match="onnx-ecc SumCheck"):
        sess.run(None, {"Y": np.zeros((2, 4), np.float32), "X": np.zeros((2, 4), np.float32)})


def test_projected_taps_equal_the_weighted_sum_of_conv_outputs():
    """sum_c a_c conv(x, W)_c == conv(x, V) for grouped filters: the identity the check rests on."""
    rng = np.random.default_rng(0)
    groups, cin_g, per_group = 2, 3, 4
    w = rng.standard_normal((groups * per_group, cin_g, 3, 3))
    a = rng.choice([-1.0, 1.0], size=groups * per_group)
    x = rng.standard_normal((groups * cin_g, 6, 6))
    v = projected_taps(w, a, groups)

    def conv_valid(img, k):
        return sum(img[i:i + 4, j:j + 4] * k[i, j] for i in range(3) for j in range(3))

    direct = sum(a[c] * sum(conv_valid(x[(c // per_group) * cin_g + i], w[c, i]) for i in range(cin_g))
                 for c in range(groups * per_group))
    projected = sum(conv_valid(x[ci], v[ci]) for ci in range(groups * cin_g))
    np.testing.assert_allclose(direct, projected, atol=1e-9)
