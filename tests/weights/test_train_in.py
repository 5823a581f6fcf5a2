"""Trained-in codes: the projected layer satisfies H w = 0 after export and scrub repairs it without parity."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

torch = pytest.importorskip("torch")

from onnx_ecc.weights.trained_in import Constraint, export_onnx, onnx_logits, train_mlp  # noqa: E402
from onnx_ecc.weights import read_weight_codes, scrub_model  # noqa: E402
from onnx_ecc.weights.check_matrices import check_matrix  # noqa: E402


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    x = rng.random((256, 64), dtype=np.float32)
    y = (x[:, :8].argmax(axis=1)).astype(np.int64)
    c = Constraint(checks=120, seed=3)
    model = train_mlp(x, y, constraint=c, sizes=(64, 32, 10), epochs=3)
    return x, y, c, export_onnx(model, c)


def test_exported_weight_is_in_null_space(trained):
    x, _, c, proto = trained
    (entry,) = read_weight_codes(proto)
    assert entry["mode"] == "trained" and "parity_tensor" not in entry
    w = numpy_helper.to_array([t for t in proto.graph.initializer if t.name == entry["tensor"]][0])
    assert w.shape == (10, 32)
    h = check_matrix("dct", 320, 120, 3, 0).dense()  # independent dense oracle
    assert np.abs(h @ w.reshape(-1).astype(np.float64)).max() < 1e-6 * np.linalg.norm(w)
    assert scrub_model(proto)[1].status == "clean"
    onnx.checker.check_model(proto)


def test_scrub_repairs_trained_layer(trained):
    x, _, _, proto = trained
    reference = onnx_logits(proto, x)
    (entry,) = read_weight_codes(proto)
    bad = onnx.ModelProto()
    bad.CopyFrom(proto)
    for t in bad.graph.initializer:
        if t.name == entry["tensor"]:
            w = numpy_helper.to_array(t).copy()
            pos = np.random.default_rng(1).choice(w.size, 25, replace=False)
            w.reshape(-1)[pos] = np.float32(5.0)
            w.reshape(-1)[pos[:5]] = np.nan
            t.CopyFrom(numpy_helper.from_array(w, t.name))
    fixed, report = scrub_model(bad)
    assert report.status == "repaired" and report.tensors[0].corrected == 25
    np.testing.assert_allclose(onnx_logits(fixed, x), reference, atol=1e-5)


def test_constraint_keeps_learning():
    rng = np.random.default_rng(0)
    x = rng.random((512, 64), dtype=np.float32)
    y = (x[:, :8].argmax(axis=1)).astype(np.int64)
    free = export_onnx(train_mlp(x, y, sizes=(64, 32, 10), epochs=30, lr=3e-3))
    c = Constraint(checks=60)
    tied = export_onnx(train_mlp(x, y, constraint=c, sizes=(64, 32, 10), epochs=30, lr=3e-3), c)
    acc = [np.mean(onnx_logits(p, x).argmax(1) == y) for p in (free, tied)]
    assert acc[0] > 0.5 and acc[1] > acc[0] - 0.1
