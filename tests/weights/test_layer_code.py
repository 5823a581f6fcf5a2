"""Repair of stored weights from the layer code (parity rows P = G W), erasures, pruning.

Oracles: the original model's weights (the protected model's data rows must come back to them)
and the original model's outputs on real MNIST digits; a block's repair against the values it
was built from.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import zoo_model
from onnx import numpy_helper

import onnx_ecc
from onnx_ecc.codes import generator
from onnx_ecc.faults.weight_flips import (
    WeightFaultSpec,
    apply_weight_faults,
    draw_weight_faults,
    weight_maps,
)
from onnx_ecc.transform.record import (
    ERASURES_KEY,
    channel_block,
    read_erasures,
    read_protection,
    unit_channel,
    write_erasures,
)
from onnx_ecc.transform.verification import run_model
from onnx_ecc.weights import WeightScrubber, scrub_model
from onnx_ecc.weights.layer_code import (
    layer_views,
    parse_units,
    prune_units,
    repair_block,
)

FC, CONV = "/1/fc_layers/fc_layers.0/Gemm", "/1/conv_layers/conv_layers.6/Conv"


@pytest.fixture(scope="module")
def mnist():
    pytest.importorskip("torch")
    from onnx_ecc import datasets, zoo

    try:
        model = zoo.mnist_cnn()
        data = datasets.load("mnist")
    except Exception as e:  # noqa: BLE001 - package missing: say which
        pytest.skip(f"MNIST CNN or data unavailable: {e}")
    return model, onnx_ecc.transform(model, parity=3), data.x_test[:500], data.y_test[:500]


def _inits(model):
    return {t.name: numpy_helper.to_array(t).copy() for t in model.graph.initializer}


def _data_rows(protected):
    """The data rows of every protected weight and bias, as the original model's tensors."""
    inits = _inits(protected)
    out = {}
    for name, m in weight_maps(protected).items():
        if not m.original:            # a rerun layer's separate parity weights
            continue
        index = [m.to_protected(i) for i in range(m.data_channels)]
        out[m.original] = np.take(inits[name], index, axis=m.axis)
    return out


def assert_weights_match(protected, original, rel=1e-4, names=None):
    """Every data row of ``protected`` within ``rel`` of the largest weight of the original tensor."""
    ref = _inits(original)
    for name, got in _data_rows(protected).items():
        if names is not None and name not in names:
            continue
        scale = float(np.abs(ref[name]).max())
        err = float(np.max(np.abs(got.astype(np.float64) - ref[name])))
        assert err <= rel * scale, (name, err, scale)


def _logits(model, x):
    sess = onnx_ecc.ProtectedSession(model)
    return sess.run(None, {model.graph.input[0].name: x})[0], sess.last_report


def test_two_dead_units_in_one_block_are_rebuilt_from_the_parity_rows(mnist):
    original, protected, x, _ = mnist
    pruned, recorded = prune_units(protected, {FC: [3, 7], CONV: [40, 50]})
    assert read_erasures(pruned) == recorded == {FC: [3, 7], CONV: [40, 50]}
    assert all(channel_block(read_protection(pruned)["protected"][3], c)[1] == 0 for c in (3, 7))  # one block
    fixed, report = scrub_model(pruned)
    assert report.status == "repaired" and not report.beyond_repair
    layers = {r.name: r for r in report.layers}
    assert layers[FC].rebuilt_units == [3, 7] and layers[CONV].rebuilt_units == [40, 50]
    assert_weights_match(fixed, original, rel=1e-4)
    assert read_erasures(fixed) == {}                      # the rebuilt units left the list
    ref = run_model(original, {original.graph.input[0].name: x})[0]
    got, run = _logits(fixed, x)
    assert run.flagged == 0, run.summary()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    again, report = scrub_model(fixed)
    assert report.status == "clean" and again is fixed     # the repair leaves a consistent layer


def test_dead_rows_are_known_without_a_record(mnist):
    """Rows that look dead (all zero, all NaN) are erasures even when no one recorded them."""
    original, protected, _, _ = mnist
    inits = _inits(protected)
    view = next(v for v in layer_views(protected) if v.name == FC)
    w = inits[view.weights[0].tensor].copy()
    w[[10, 20]] = 0.0
    w[[40]] = np.nan                          # another block: a unit overwritten with NaN
    damaged = onnx.ModelProto()
    damaged.CopyFrom(protected)
    next(t for t in damaged.graph.initializer if t.name == view.weights[0].tensor).CopyFrom(
        numpy_helper.from_array(w, view.weights[0].tensor))
    fixed, report = scrub_model(damaged)
    assert report.status == "repaired"
    assert next(r for r in report.layers if r.name == FC).rebuilt_units == [10, 20, 40]
    assert_weights_match(fixed, original)


def test_rows_corrupted_at_unknown_positions_are_located_from_many_columns(mnist):
    """Two units of one block overwritten with plausible random values: no column can locate two
    errors with R=3, but the syndromes of all columns span exactly those two columns of H."""
    original, protected, _, _ = mnist
    view = next(v for v in layer_views(protected) if v.name == FC)
    name = view.weights[0].tensor
    w = _inits(protected)[name].copy()
    rng = np.random.default_rng(3)
    w[[5, 17]] = rng.uniform(-1, 1, (2, w.shape[1])).astype(np.float32) * np.abs(w).max()
    damaged = onnx.ModelProto()
    damaged.CopyFrom(protected)
    next(t for t in damaged.graph.initializer if t.name == name).CopyFrom(numpy_helper.from_array(w, name))
    fixed, report = scrub_model(damaged)
    assert report.status == "repaired"
    assert next(r for r in report.layers if r.name == FC).rebuilt_units == [5, 17]
    assert_weights_match(fixed, original)


def test_one_dead_unit_per_block_keeps_the_protected_models_outputs(mnist):
    """Pruned units stay gone (no scrub): the Decode op corrects them in every output vector."""
    original, protected, x, _ = mnist
    pruned, _ = prune_units(protected, {FC: [3, 40], CONV: [1, 33, 70, 100]})   # one per block
    ref = run_model(original, {original.graph.input[0].name: x})[0]
    got, run = _logits(pruned, x)
    assert run.uncorrectable == 0
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    from onnx_ecc.transform.inspection import correction_left, format_report

    layers = {p["name"]: p for p in read_protection(pruned)["protected"]}
    erased = read_erasures(pruned)
    left = correction_left(layers[FC], erased[FC])
    assert (left["erasures_left"], left["errors_left"]) == (3 - 1, (3 - 1) // 2)
    pruned2, _ = prune_units(pruned, {FC: [7]})           # a second unit in block 0
    left = correction_left(layers[FC], read_erasures(pruned2)[FC])
    assert (left["erasures"], left["erasures_left"], left["errors_left"]) == (3, 1, 0)
    text = format_report(pruned2)
    assert "dead units 3, 7, 40" in text and "1 erasure(s) or 0 error(s) left" in text


def test_prune_of_an_unprotected_model_and_bad_requests(mnist):
    original, protected, _, _ = mnist
    pruned, recorded = prune_units(original, {FC: [0, 1]})
    w = _inits(pruned)["1.fc_layers.0.weight"]
    assert recorded == {FC: []} and ERASURES_KEY not in {p.key for p in pruned.metadata_props}
    assert not w[:2].any() and w[2:].any() and not _inits(pruned)["1.fc_layers.0.bias"][:2].any()
    with pytest.raises(ValueError, match="no Gemm/MatMul/Conv layer named"):
        prune_units(protected, {"nope": [1]})
    with pytest.raises(ValueError, match="units 0..255"):
        prune_units(protected, {FC: [256]})
    assert parse_units([f"{FC}:1,3-5", f"{CONV}:2"]) == {FC: [1, 3, 4, 5], CONV: [2]}
    for bad in ("fc", f"{FC}:", f"{FC}:a", f"{FC}:5-3"):
        with pytest.raises(ValueError):
            parse_units([bad])


def test_scattered_bit_flips_are_repaired_per_column(mnist):
    """A low bit error rate over weights, biases and parity rows: at most one wrong value in
    nearly every column of a block, each located by that column's checks."""
    original, protected, _, _ = mnist
    faults = draw_weight_faults(protected, WeightFaultSpec(ber=1e-5), seed=4)
    assert len(faults) > 50
    fixed, report = scrub_model(apply_weight_faults(protected, faults))
    assert report.status == "repaired", report.table()
    assert_weights_match(fixed, original, rel=1e-5)


def test_beyond_repair_the_rest_is_still_repaired_and_written(mnist):
    """BER 3e-4 (about 4000 flips): some columns hold more wrong values than R=3 checks can
    place; every tensor that can be repaired is, the others are named, and the model is better."""
    original, protected, x, y = mnist
    bad = apply_weight_faults(protected, draw_weight_faults(protected, WeightFaultSpec(ber=3e-4), seed=1))
    fixed, report = scrub_model(bad)
    assert report.status == "uncorrectable" and report.beyond_repair and fixed is not bad
    ref = _inits(original)
    wrong = {}
    for label, model in (("before", bad), ("after", fixed)):
        rows = _data_rows(model)
        wrong[label] = sum(int(np.sum(np.abs(rows[n].astype(np.float64) - ref[n]) > 1e-4 * np.abs(ref[n]).max()))
                           for n in rows)
    assert wrong["after"] < 0.15 * wrong["before"], wrong
    verified = {m.original for name, m in weight_maps(fixed).items() if name not in report.beyond_repair}
    assert_weights_match(fixed, original, rel=1e-4, names=verified)   # the tensors it says it repaired
    acc = {label: float(np.mean(_logits(m, x)[0].argmax(1) == y)) for label, m in (("bad", bad), ("fixed", fixed))}
    clean = float(np.mean(_logits(protected, x)[0].argmax(1) == y))
    assert acc["fixed"] > acc["bad"] + 0.3 and acc["fixed"] <= clean, acc


def test_rerun_strategy_parity_rows_in_their_own_initializers(mnist):
    original, _, x, _ = mnist
    protected = onnx_ecc.transform(original, parity=3, strategy="rerun")
    views = {v.name: v for v in layer_views(protected)}
    assert len(views[FC].weights) == 2 and views[FC].weights[1].tensor.endswith("__ecc_parity_w")
    pruned, _ = prune_units(protected, {FC: [3, 7]})
    inits = _inits(pruned)
    parity_w = views[CONV].weights[1].tensor
    inits[parity_w][1] = 0.0                                # a dead parity filter as well
    damaged = onnx.ModelProto()
    damaged.CopyFrom(pruned)
    next(t for t in damaged.graph.initializer if t.name == parity_w).CopyFrom(
        numpy_helper.from_array(inits[parity_w], parity_w))
    fixed, report = scrub_model(damaged)
    assert report.status == "repaired"
    layers = {r.name: r for r in report.layers}
    assert layers[FC].rebuilt_units == [3, 7] and layers[CONV].rebuilt_parity == 1
    assert_weights_match(fixed, original)
    np.testing.assert_allclose(_inits(fixed)[parity_w], _inits(protected)[parity_w], rtol=0, atol=1e-6)
    ref = run_model(original, {original.graph.input[0].name: x[:64]})[0]
    got, run = _logits(fixed, x[:64])
    assert run.flagged == 0
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_live_scrubber_rebuilds_a_dead_unit_in_the_running_session(mnist):
    original, protected, x, _ = mnist
    scrubber = WeightScrubber(protected)                     # no weight codes: the layer code alone
    sess = scrubber.make_session()
    feed = {protected.graph.input[0].name: x[:32]}
    ref = sess.run(None, feed)[0]
    view = next(v for v in layer_views(protected) if v.name == FC)
    buf = scrubber.buffers[view.weights[0].tensor]
    buf[[3, 7]] = 0.0                                       # two units die behind the session
    assert scrubber.check_now().status == "repaired"
    np.testing.assert_allclose(sess.run(None, feed)[0], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert_weights_match(scrubber.current_model(), original)


def test_grouped_and_float16_layers():
    """Grouped convolutions (channels per group) and float16 weights (rounding 2^-11)."""
    from onnx_ecc.transform.verification import random_feeds

    model = zoo_model("grouped_cnn")
    protected = onnx_ecc.transform(model, parity=3, block=8)
    for layer in read_protection(protected)["protected"]:
        if layer["kind"] == "code":
            maps = {m.original: m for m in weight_maps(protected).values()}
            node = next(n for n in model.graph.node if n.name == layer["name"])
            m = maps[node.input[1]]
            assert [unit_channel(layer, i) for i in range(m.data_channels)] == \
                   [m.to_protected(i) for i in range(m.data_channels)]   # against faults' own mapping
    grouped = next(p for p in read_protection(protected)["protected"] if p["groups"] > 1)
    pruned, _ = prune_units(protected, {grouped["name"]: [0, 1, grouped["data_channels"] - 1]})
    fixed, report = scrub_model(pruned)
    assert report.status == "repaired"
    assert_weights_match(fixed, model)
    f16 = pytest.importorskip("onnxconverter_common.float16")
    half = f16.convert_float_to_float16(zoo_model("cnn"), keep_io_types=True)
    protected = onnx_ecc.transform(half, parity=3)
    layer = next(v for v in layer_views(protected))
    assert layer.dtype == np.float16
    pruned, _ = prune_units(protected, {layer.name: [0, 2]})
    fixed, report = scrub_model(pruned)
    assert report.status == "repaired"
    assert_weights_match(fixed, half, rel=1e-2)   # rebuilt from float16 parity rows: within their rounding
    feeds = random_feeds(half, seed=2, positive=True)
    np.testing.assert_allclose(onnx_ecc.ProtectedSession(fixed).run(None, feeds)[0], run_model(half, feeds)[0],
                               rtol=2e-2, atol=2e-2)


# ---- one block, against the values it was built from ------------------------------------------

def _block(b=32, r=3, k=200, seed=0):
    rng = np.random.default_rng(seed)
    g = generator(b, r)
    data = (rng.standard_normal((b, k)) * 0.05).astype(np.float32).astype(np.float64)
    return g, np.concatenate([data, (g @ data).astype(np.float32).astype(np.float64)])


def test_block_up_to_r_erasures_exactly_and_no_more():
    g, clean = _block()
    for dead in ([4], [4, 9], [4, 9, 33]):                  # 33: a parity row
        values = clean.copy()
        values[dead] = 0.0
        fixed, out = repair_block(values, g, np.float32)
        assert out.status == "repaired" and out.rows == dead
        assert np.max(np.abs(fixed - clean)) <= 1e-6 * np.abs(clean).max()
    values = clean.copy()
    values[[1, 2, 3, 4]] = 0.0                              # R + 1 dead rows: beyond the code
    fixed, out = repair_block(values, g, np.float32)
    assert out.status == "uncorrectable" and np.array_equal(fixed, values)
    fixed, out = repair_block(clean, g, np.float32, known=[4, 9])   # recorded but fine: clean
    assert out.status == "clean" and np.array_equal(fixed, clean)


def test_block_scattered_errors_with_known_erasures_and_ranges():
    g, clean = _block(k=400, seed=1)
    rng = np.random.default_rng(2)
    values = clean.copy()
    values[[6, 20]] = 0.0                                   # two dead rows, recorded
    cols = rng.choice(400, 60, replace=False)
    rows = rng.choice([j for j in range(35) if j not in (6, 20)], 60)
    values[rows, cols] *= 1e30                              # gross: beyond the recorded range
    limit = np.full(values.shape, np.abs(clean).max())
    fixed, out = repair_block(values, g, np.float32, known=[6, 20], limit=limit)
    assert out.status == "repaired", out.reason
    assert np.max(np.abs(fixed - clean)) <= 1e-6 * np.abs(clean).max()
    values[rows, cols] = clean[rows, cols] * -3.0           # in range now: one unknown per column, one check left
    fixed, out = repair_block(values, g, np.float32, known=[6, 20])
    assert out.status == "uncorrectable"                    # R - 2 = 1 check: no room to locate
    assert np.array_equal(fixed[:, cols], values[:, cols])  # failing columns left as they were


def test_erasure_metadata_round_trip_and_bad_metadata(mnist):
    _, protected, _, _ = mnist
    model = onnx.ModelProto()
    model.CopyFrom(protected)
    write_erasures(model, {FC: [7, 3, 3], CONV: []})
    assert read_erasures(model) == {FC: [3, 7]}
    write_erasures(model, {})
    assert ERASURES_KEY not in {p.key for p in model.metadata_props}
    model.metadata_props.add(key=ERASURES_KEY, value='{"version": 9}')
    with pytest.raises(ValueError, match="malformed onnx_ecc.erasures"):
        read_erasures(model)
