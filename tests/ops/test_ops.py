"""Every op of the library against its numpy reference; bad tensors give errors, not crashes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import onnx_ecc
from onnx_ecc import ops
from onnx_ecc.codes import Layout
from onnx_ecc.ops.oracles import decode, depthwise_check, parity_check


def _single_op_model(decl, inputs, attrs, input_types=None):
    input_types = input_types or [TensorProto.FLOAT] * len(inputs)
    node = decl.make_node(inputs, ["Z"], "op", **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, t, None) for n, t in zip(inputs, input_types) if n],
                          [helper.make_tensor_value_info("Z", TensorProto.FLOAT, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.DOMAIN, 1)], ir_version=9)


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), sess_options=onnx_ecc.session_options(),
                                providers=["CPUExecutionProvider"])


def _decode_attrs(layout: Layout, gain=50.0, **extra):
    n = layout.groups * len(layout.block_sizes) * layout.parity
    return dict(axis=1, data_channels=layout.data_channels, groups=layout.groups, block=layout.block,
                parity=layout.parity, generator=layout.generator_attribute(), noise_gain=[gain] * n,
                noise_offset=[1.0] * n, tolerance=4.0, **extra)


def _encoded(rng, layout: Layout, shape_rest, outer=3, axis=1):
    data = rng.standard_normal((outer, layout.data_channels) + shape_rest)
    rows = np.moveaxis(data, 1, 0).reshape(layout.data_channels, -1)
    aug = layout.augment_rows(rows).reshape((layout.total_channels, outer) + shape_rest)
    return np.ascontiguousarray(np.moveaxis(aug, 0, 1), dtype=np.float32), data.astype(np.float32)


LAYOUTS = [Layout(64, 32, 2), Layout(40, 16, 2), Layout(24, 8, 3, groups=3), Layout(20, 20, 4), Layout(7, 32, 2)]


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
@pytest.mark.parametrize("mode", ["correct", "detect"])
@pytest.mark.parametrize("activation", ["", "Relu"])
def test_decode_matches_reference(layout, mode, activation):
    rng = np.random.default_rng(layout.total_channels)
    y, clean = _encoded(rng, layout, (5, 4))
    flat = y.reshape(-1)
    hits = rng.choice(flat.size, size=25, replace=False)
    flat[hits[:20]] += rng.choice([-1, 1], 20) * rng.uniform(1, 100, 20).astype(np.float32)
    flat[hits[20:]] = [np.nan, np.inf, -np.inf, 3e38, -1e30]
    x = rng.standard_normal((3, 10)).astype(np.float32)
    attrs = _decode_attrs(layout, mode=mode, activation=activation)
    got = _session(_single_op_model(ops.DECODE, ["Y", "X"], attrs)).run(None, {"Y": y, "X": x})[0]
    want, counts = decode(y, x, **attrs)
    assert counts["flagged"] > 0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_decode_corrects_one_error_per_block_exactly(layout):
    rng = np.random.default_rng(layout.data_channels)
    y, clean = _encoded(rng, layout, (6,), outer=4)
    per_group = layout.data_per_group + layout.parity_per_group
    for o in range(4):
        for i in range(6):
            g = rng.integers(layout.groups)
            k = rng.integers(len(layout.block_sizes))
            start = g * per_group + k * layout.block
            ch = start + rng.integers(layout.block_sizes[k])
            y[o, ch, i] = [np.nan, 1e30, y[o, ch, i] + 3.0][rng.integers(3)]
    got = _session(_single_op_model(ops.DECODE, ["Y"], _decode_attrs(layout))).run(None, {"Y": y})[0]
    np.testing.assert_allclose(got, clean, atol=1e-4)


def test_decode_counters_match_reference():
    layout = Layout(64, 32, 2)
    rng = np.random.default_rng(0)
    y, _ = _encoded(rng, layout, (8, 8))
    y[0, 3, 1, 1] += 50.0
    y[1, 40, 2, 2] += 50.0
    y[1, 41, 2, 2] -= 80.0                      # two errors in one block: detected, not corrected
    attrs = _decode_attrs(layout, layer="L", model_id="counter-test")
    sess = _session(_single_op_model(ops.DECODE, ["Y"], attrs))
    before = onnx_ecc.read_counters("counter-test").get("L")
    sess.run(None, {"Y": y})
    after = onnx_ecc.read_counters("counter-test")["L"]
    delta = after - before if before else after
    _, counts = decode(y, None, **attrs)
    assert (delta.flagged, delta.corrected_blocks, delta.uncorrectable) == \
           (counts["flagged"], counts["corrected_blocks"], counts["uncorrectable"]) == (2, 1, 1)


def test_decode_last_axis():
    layout = Layout(10, 4, 2)
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((10, 6))
    y = layout.augment_rows(rows).T.reshape(2, 3, -1).astype(np.float32)
    y[1, 2, 5] = 1e6
    attrs = dict(_decode_attrs(layout), axis=-1)
    got = _session(_single_op_model(ops.DECODE, ["Y"], attrs)).run(None, {"Y": y})[0]
    np.testing.assert_allclose(got, rows.T.reshape(2, 3, 10), atol=1e-5)


def test_fail_stop_raises_on_uncorrectable_block():
    layout = Layout(32, 32, 2)
    y, _ = _encoded(np.random.default_rng(2), layout, (4,))
    y[0, [1, 2], 0] += [30.0, -70.0]
    sess = _session(_single_op_model(ops.DECODE, ["Y"], _decode_attrs(layout, fail_stop=1, layer="fs")))
    with pytest.raises(Exception, match="uncorrectable"):
        sess.run(None, {"Y": y})


@pytest.mark.parametrize("strides,pads,dil", [((1, 1), (1, 1, 1, 1), (1, 1)), ((2, 2), (1, 1, 1, 1), (1, 1)),
                                               ((1, 2), (0, 2, 1, 0), (2, 1))])
def test_depthwise_check_matches_reference(strides, pads, dil):
    rng = np.random.default_rng(sum(strides) + sum(pads))
    c, h, w = 6, 11, 9
    wt = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    x = rng.standard_normal((2, c, h, w)).astype(np.float32)
    conv = helper.make_model(helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], group=c, strides=list(strides), pads=list(pads), dilations=list(dil))],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(wt, "w"), onnx.numpy_helper.from_array(b, "b")]),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    y = ort.InferenceSession(conv.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    clean = y.copy()
    y[0, 2, 1, 1] += 5.0
    y[1, 4, 0, :] = np.nan
    attrs = dict(weights=onnx.numpy_helper.from_array(wt), bias=onnx.numpy_helper.from_array(b),
                 weight_sums=(wt.reshape(c, -1).astype(np.float64).sum(1) + b).tolist(),
                 strides=list(strides), pads=list(pads), dilations=list(dil), tolerance=16.0)
    got = _session(_single_op_model(ops.DEPTHWISE_CHECK, ["X", "Y"], attrs)).run(None, {"X": x, "Y": y})[0]
    ref_attrs = dict(attrs, weights=wt, bias=b)
    want, counts = depthwise_check(x, y, **ref_attrs)
    assert counts["corrected_blocks"] == 2
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(got, clean, atol=1e-5)


@pytest.mark.parametrize("strides", [(2, 2), (1, 2), (1, 3)])
def test_strided_depthwise_check_of_many_small_planes_matches_reference(strides):
    """Planes checked eight at a time (column strides up to 4): each faulty plane found, as the oracle finds it."""
    rng = np.random.default_rng(7 + sum(strides))
    c, h, w = 16, 14, 13
    wt = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    x = rng.standard_normal((3, c, h, w)).astype(np.float32)
    pads = [1, 1, 1, 1]
    conv = helper.make_model(helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], group=c, strides=list(strides), pads=pads)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(wt, "w"), onnx.numpy_helper.from_array(b, "b")]),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    y = ort.InferenceSession(conv.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    clean = y.copy()
    planes = rng.choice(3 * c, 7, replace=False)
    for p in planes:
        n, ch = divmod(int(p), c)
        y[n, ch, rng.integers(y.shape[2]), rng.integers(y.shape[3])] += 3.0
    attrs = dict(weights=onnx.numpy_helper.from_array(wt), bias=onnx.numpy_helper.from_array(b),
                 weight_sums=(wt.reshape(c, -1).astype(np.float64).sum(1) + b).tolist(),
                 strides=list(strides), pads=pads, dilations=[1, 1], tolerance=16.0)
    got = _session(_single_op_model(ops.DEPTHWISE_CHECK, ["X", "Y"], attrs)).run(None, {"X": x, "Y": y})[0]
    want, counts = depthwise_check(x, y, **dict(attrs, weights=wt, bias=b))
    assert counts["corrected_blocks"] == 7
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(got, clean, atol=1e-5)


@pytest.mark.parametrize("case", ["channels", "dtype", "generator", "mode"])
def test_bad_tensors_and_attributes_give_ort_errors(case):
    layout = Layout(16, 8, 2)
    attrs = _decode_attrs(layout)
    y = np.zeros((2, layout.total_channels), np.float32)
    types = None
    if case == "channels":
        y = np.zeros((2, layout.total_channels + 1), np.float32)
    elif case == "dtype":
        y = np.zeros((2, layout.total_channels), np.float64)
        types = [TensorProto.DOUBLE]
    elif case == "generator":
        attrs["generator"] = attrs["generator"][:-1]
    elif case == "mode":
        attrs["mode"] = "repair"
    model = _single_op_model(ops.DECODE, ["Y"], attrs, types)
    with pytest.raises(Exception) as info:
        _session(model).run(None, {"Y": y})
    assert "onnx-ecc" in str(info.value) or "NOT_IMPLEMENTED" in str(info.value) or "type" in str(info.value).lower()


def test_inject_fault_counts_and_is_reproducible():
    x = np.ones((1000,), np.float32)
    model = _single_op_model(ops.INJECT_FAULT, ["X", "Seed", "Rate"], dict(kind="bitflip", bits=[30], count=0, site=3),
                             [TensorProto.FLOAT, TensorProto.INT64, TensorProto.FLOAT])
    sess = _session(model)
    feeds = {"X": x, "Seed": np.array(42, np.int64), "Rate": np.array(0.01, np.float32)}
    a, b = sess.run(None, feeds)[0], sess.run(None, feeds)[0]
    assert np.array_equal(a, b)
    changed = a != x
    assert 2 <= changed.sum() <= 30
    assert np.all(a[changed] == np.float32(np.array(1.0, np.float32).view(np.uint32) ^ np.uint32(1 << 30)).view(np.float32)) or \
        np.all(np.isinf(a[changed]) | (a[changed] > 1e30))
    c = sess.run(None, dict(feeds, Seed=np.array(43, np.int64)))[0]
    assert not np.array_equal(a, c)


def test_every_declared_op_is_implemented_by_the_library():
    for decl in ops.ALL_OPS:
        node = helper.make_node(decl.name, [n for n, _ in decl.inputs if True][:1], ["Z"], domain=ops.DOMAIN)
        g = helper.make_graph([node], "g", [helper.make_tensor_value_info(decl.inputs[0][0], TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("Z", TensorProto.FLOAT, None)])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.DOMAIN, 1)], ir_version=9)
        try:
            _session(m)
        except Exception as e:  # attributes are missing on purpose; the op itself must be known
            assert "onnx-ecc" in str(e) or "missing attribute" in str(e) or "input" in str(e).lower() \
                or "Type Error" in str(e), str(e)  # the int8 ops take no float32 tensors
            assert "not a registered function/op" not in str(e)


@pytest.mark.parametrize("activation", ["", "Relu"])
def test_decode_adds_the_residual_before_the_activation(activation):
    layout = Layout(48, 16, 2)
    rng = np.random.default_rng(4)
    y, clean = _encoded(rng, layout, (3, 3), outer=2)
    y[1, 5, 2, 2] = 7e30
    res = rng.standard_normal(clean.shape).astype(np.float32)
    attrs = _decode_attrs(layout, activation=activation)
    got = _session(_single_op_model(ops.DECODE, ["Y", "", "R"], attrs)).run(None, {"Y": y, "R": res})[0]
    want, counts = decode(y, None, res, **attrs)
    assert counts["corrected_blocks"] == 1
    np.testing.assert_allclose(got, want, atol=1e-5)
    expected = clean + res
    np.testing.assert_allclose(got, np.maximum(expected, 0) if activation else expected, atol=1e-4)


def test_nan_in_an_uncorrectable_block_stays_visible_through_relu():
    layout = Layout(16, 16, 2)
    y, _ = _encoded(np.random.default_rng(8), layout, (2,), outer=1)
    y[0, [1, 2, 3], 0] = [np.nan, 5.0, -7.0]     # three wrong values: beyond correction
    attrs = _decode_attrs(layout, activation="Relu")
    got = _session(_single_op_model(ops.DECODE, ["Y"], attrs)).run(None, {"Y": y})[0]
    want, counts = decode(y, None, **attrs)
    assert counts["uncorrectable"] == 1
    assert np.isnan(got[0, 1, 0]) and np.isnan(want[0, 1, 0])
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("seed", range(12))
def test_decode_matches_reference_on_random_layouts_and_faults(seed):
    """Random layouts, axes, modes, scales and fault patterns: kernel == numpy oracle, counts too."""
    rng = np.random.default_rng(1000 + seed)
    groups = int(rng.choice([1, 1, 2, 3]))
    per_group = int(rng.integers(1, 40))
    layout = Layout(per_group * groups, int(rng.integers(1, 33)), int(rng.integers(1, 6)), groups)
    axis_last = bool(rng.integers(2))
    shape_rest = () if axis_last else (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
    y, _ = _encoded(rng, layout, shape_rest, outer=int(rng.integers(1, 4)))
    if axis_last:
        y = np.ascontiguousarray(np.moveaxis(y, 1, -1)) if y.ndim > 2 else y
    flat = y.reshape(-1)
    k = int(rng.integers(0, max(flat.size // 3, 1)))
    hits = rng.choice(flat.size, size=k, replace=False)
    kinds = rng.integers(0, 4, size=k)
    flat[hits] = np.where(kinds == 0, np.nan, np.where(kinds == 1, flat[hits] * 1e20,
                          np.where(kinds == 2, flat[hits] + rng.normal(0, 5, k), 0.0))).astype(np.float32)
    scale = str(rng.choice(["output", "input"]))
    x = rng.standard_normal((int(np.prod(y.shape[:1 if not axis_last else y.ndim - 1])), 7)).astype(np.float32)
    attrs = _decode_attrs(layout, mode=str(rng.choice(["correct", "detect"])), activation=str(rng.choice(["", "Relu"])),
                          scale=scale, layer=f"rand{seed}", model_id="random-test")
    attrs["axis"] = -1 if axis_last else 1
    inputs = ["Y", "X"] if scale == "input" else ["Y"]
    feeds = {"Y": y, "X": x} if scale == "input" else {"Y": y}
    before = onnx_ecc.read_counters("random-test").get(f"rand{seed}")
    got = _session(_single_op_model(ops.DECODE, inputs, attrs)).run(None, feeds)[0]
    after = onnx_ecc.read_counters("random-test")[f"rand{seed}"]
    delta = after - before if before else after
    want, counts = decode(y, x if scale == "input" else None, **attrs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert (delta.flagged, delta.corrected_blocks, delta.uncorrectable) == \
           (counts["flagged"], counts["corrected_blocks"], counts["uncorrectable"])


def test_parity_three_never_miscorrects_two_errors():
    """R=3 has distance 4: one error is corrected, any two are reported, never 'fixed' wrongly."""
    layout = Layout(32, 32, 3)
    rng = np.random.default_rng(11)
    y, clean = _encoded(rng, layout, (1,), outer=300)
    for o in range(300):
        pos = rng.choice(layout.total_channels, size=2, replace=False)
        y[o, pos, 0] += (rng.choice([-1, 1], 2) * rng.uniform(0.5, 50, 2)).astype(np.float32)
    attrs = _decode_attrs(layout, layer="r3", model_id="r3-test")
    before = onnx_ecc.read_counters("r3-test").get("r3")
    got = _session(_single_op_model(ops.DECODE, ["Y"], attrs)).run(None, {"Y": y})[0]
    after = onnx_ecc.read_counters("r3-test")["r3"]
    delta = after - before if before else after
    assert delta.flagged == 300 and delta.uncorrectable == 300 and delta.corrected_blocks == 0


# ---- ParityCheck ----------------------------------------------------------------------------

def _parity_model(attrs, with_flag=False, y_type=TensorProto.FLOAT):
    inputs = ["Y", "P"] + (["Flag"] if with_flag else [])
    types = [y_type, TensorProto.FLOAT, TensorProto.BOOL]
    node = ops.PARITY_CHECK.make_node(inputs, ["Raised"], "op", **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, t, None) for n, t in zip(inputs, types)],
                          [helper.make_tensor_value_info("Raised", TensorProto.BOOL, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.DOMAIN, 1)], ir_version=9)


def _parity_attrs(layout: Layout, **extra):
    n = len(layout.block_sizes) * layout.parity
    return dict(data_channels=layout.data_channels, block=layout.block, parity=layout.parity,
                generator=layout.generator_attribute(), noise_gain=layout.output_noise_gains(), noise_offset=[1.0] * n,
                tolerance=64.0, **extra)


def _parity_inputs(rng, layout: Layout, shape_rest, outer, channels_last):
    """Y (data channels) and P (its checks) of a fault-free layer output, channels on axis 1 or last."""
    y, _ = _encoded(rng, layout, shape_rest, outer=outer)
    data, par = y[:, :layout.data_channels], y[:, layout.data_channels:]
    if channels_last:
        data, par = np.moveaxis(data, 1, -1), np.moveaxis(par, 1, -1)
    return np.ascontiguousarray(data), np.ascontiguousarray(par)


def _parity_failures(model_id, layer):
    return onnx_ecc.read_counters(model_id).get(f"{layer} (parity check)")


@pytest.mark.parametrize("seed", range(10))
def test_parity_check_matches_reference(seed):
    """Random layouts, axes and faults (gross, NaN, inf): Raised and the failing blocks as the oracle."""
    rng = np.random.default_rng(2000 + seed)
    layout = Layout(int(rng.integers(1, 90)), int(rng.integers(1, 40)), int(rng.integers(1, 5)))
    channels_last = bool(rng.integers(2))
    rest = () if channels_last and seed % 2 else (int(rng.integers(1, 9)), int(rng.integers(1, 9)))
    y, p = _parity_inputs(rng, layout, rest, int(rng.integers(1, 40 if not rest else 4)), channels_last)
    for t in (y, p):
        flat = t.reshape(-1)
        k = int(rng.integers(0, max(flat.size // 40, 2)))
        hits = rng.choice(flat.size, size=min(k, flat.size), replace=False)
        kinds = rng.integers(0, 4, size=hits.size)
        flat[hits] = np.where(kinds == 0, np.nan, np.where(kinds == 1, np.inf,
                              np.where(kinds == 2, flat[hits] + rng.choice([-1, 1], hits.size) * 3.0, flat[hits] * 1e20)))
    axis = -1 if channels_last else 1
    layer = f"pc{seed}"
    attrs = _parity_attrs(layout, axis=axis, layer=layer, model_id="parity-test")
    before = _parity_failures("parity-test", layer)
    raised = _session(_parity_model(attrs)).run(None, {"Y": y, "P": p})[0]
    after = _parity_failures("parity-test", layer)
    delta = after - before if before else after
    want_raised, want_failed = parity_check(np.moveaxis(y, axis, -1), np.moveaxis(p, axis, -1), **dict(attrs, axis=-1))
    assert raised.shape == (1,) and raised.dtype == np.bool_
    assert bool(raised[0]) == want_raised
    vectors = y.size // layout.data_channels
    assert (delta.vectors, delta.flagged) == (vectors * len(layout.block_sizes), want_failed)


@pytest.mark.parametrize("channels_last", [False, True])
def test_parity_check_passes_clean_outputs_and_forwards_the_flag(channels_last):
    layout = Layout(200, 32, 2)
    y, p = _parity_inputs(np.random.default_rng(5), layout, (7, 7), 8, channels_last)
    attrs = _parity_attrs(layout, axis=-1 if channels_last else 1)
    sess = _session(_parity_model(attrs, with_flag=True))
    assert not sess.run(None, {"Y": y, "P": p, "Flag": np.array([False])})[0][0]
    assert sess.run(None, {"Y": y, "P": p, "Flag": np.array([True])})[0][0]
    assert not _session(_parity_model(attrs)).run(None, {"Y": y, "P": p})[0][0]
    y[(3, 2, 2, 150) if channels_last else (3, 150, 2, 2)] += 1.0   # one wrong value: its block fails
    assert sess.run(None, {"Y": y, "P": p, "Flag": np.array([False])})[0][0]


def test_parity_check_fail_stop_names_the_layer():
    layout = Layout(64, 32, 2)
    y, p = _parity_inputs(np.random.default_rng(6), layout, (), 16, True)
    p[4, 1] = np.nan
    sess = _session(_parity_model(_parity_attrs(layout, fail_stop=1, layer="fc7")))
    with pytest.raises(Exception, match=r"ParityCheck\(fc7\).*1 block"):
        sess.run(None, {"Y": y, "P": p})


@pytest.mark.parametrize("case", ["p_shape", "y_channels", "dtype", "flag", "axis", "generator", "parity"])
def test_parity_check_bad_inputs_and_attributes_give_ort_errors(case):
    layout = Layout(16, 8, 2)
    attrs = _parity_attrs(layout)
    y = np.zeros((3, 16), np.float32)
    p = np.zeros((3, 4), np.float32)
    feeds, with_flag, y_type = {"Y": y, "P": p}, False, TensorProto.FLOAT
    if case == "p_shape":
        feeds["P"] = np.zeros((3, 5), np.float32)
    elif case == "y_channels":
        feeds["Y"] = np.zeros((3, 17), np.float32)
    elif case == "dtype":
        feeds["Y"], y_type = y.astype(np.float64), TensorProto.DOUBLE
    elif case == "flag":
        feeds["Flag"], with_flag = np.array([True, False]), True
    elif case == "axis":
        attrs["axis"] = 5
    elif case == "generator":
        attrs["generator"] = attrs["generator"][:-1]
    elif case == "parity":
        attrs["parity"] = 0
    with pytest.raises(Exception) as info:
        _session(_parity_model(attrs, with_flag, y_type)).run(None, feeds)
    assert "onnx-ecc" in str(info.value) or "NOT_IMPLEMENTED" in str(info.value) or "type" in str(info.value).lower()


def test_counters_outlive_the_session_that_counted_them():
    """onnxruntime unloads a custom-op library with its last session; session_options() keeps it
    loaded, so counts read after the session is gone are still there (a fresh process)."""
    import subprocess
    import sys

    script = """
import numpy as np, onnx_ecc
from onnx_ecc.codes import Layout
from onnx_ecc import ops
import test_ops as t
layout = Layout(8, 8, 2)
y = np.zeros((2, 10, 3), np.float32); y[0, 1, 0] = 5
t._session(t._single_op_model(ops.DECODE, ["Y"], t._decode_attrs(layout, layer="L", model_id="outlive"))).run(None, {"Y": y})
print(onnx_ecc.read_counters("outlive")["L"].corrected_blocks)
"""
    import os
    import pathlib

    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=pathlib.Path(__file__).parent, env=dict(os.environ))
    assert out.stdout.strip() == "1"
