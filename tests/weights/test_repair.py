"""Both codes together (weights.repair): the layer code and the weight codes in turns, and weight
codes whose own checks are wrong; the oracle is the protected model's weights and checks before
the faults."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import onnx_ecc
from onnx_ecc.weights import read_weight_codes, scrub_model
from onnx_ecc.weights.layer_code import layer_views
from onnx_ecc.weights.model import _block_code

FC = "/1/fc_layers/fc_layers.0/Gemm"


@pytest.fixture(scope="module")
def protected():
    pytest.importorskip("torch")
    from onnx_ecc import zoo

    try:
        model = zoo.mnist_cnn()
    except Exception as e:  # noqa: BLE001 - package missing: say which
        pytest.skip(f"MNIST CNN unavailable: {e}")
    return onnx_ecc.transform(model, parity=2, weight_checks=1000)


def _inits(model):
    return {t.name: numpy_helper.to_array(t).copy() for t in model.graph.initializer}


def _with(model, arrays):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.name in arrays:
            t.CopyFrom(numpy_helper.from_array(arrays[t.name], t.name))
    return out


def _fc(protected):
    view = next(v for v in layer_views(protected) if v.name == FC)
    entry = next(e for e in read_weight_codes(protected) if e["tensor"] == view.weights[0].tensor)
    return entry


def test_wrong_checks_of_a_weight_code_are_found_and_reencoded(protected):
    entry = _fc(protected)
    inits = _inits(protected)
    checks = inits[entry["parity_tensor"]]
    checks.view(np.uint32)[[3, 500, 1500]] ^= np.uint32(1 << 30)   # three flipped checks, weights intact
    checks[1200] *= 1.5
    fixed, report = scrub_model(_with(protected, {entry["parity_tensor"]: checks}))
    assert report.status == "repaired" and report.checks_reencoded == 4 and not report.beyond_repair
    after = _inits(fixed)
    assert np.array_equal(after[entry["tensor"]].view(np.uint32), inits[entry["tensor"]].view(np.uint32))
    np.testing.assert_allclose(after[entry["parity_tensor"]], _inits(protected)[entry["parity_tensor"]],
                               rtol=1e-6, atol=1e-7)
    again, report = scrub_model(fixed)
    assert report.status == "clean" and again is fixed


def test_both_codes_repair_what_neither_repairs_alone(protected):
    """A column with two wrong values (beyond R=2) whose weight-code block also has two wrong checks:
    the layer code leaves the column, the weight code's decoder fails on its checks, and together
    (the weight code decoding only the values the layer code did not verify) they repair both."""
    entry = _fc(protected)
    inits = _inits(protected)
    w = inits[entry["tensor"]]
    w[3, 5] *= -4.0
    w[9, 5] += 0.05
    flat = 3 * w.shape[1] + 5
    index = next(i for i, b in enumerate(entry["blocks"]) if b["start"] <= flat < b["stop"])
    offset = sum(b["m"] for b in entry["blocks"][:index])
    checks = inits[entry["parity_tensor"]]
    checks[offset + 10] *= 3.0
    checks.view(np.uint32)[offset + 700] ^= np.uint32(1 << 30)
    bad = _with(protected, {entry["tensor"]: w, entry["parity_tensor"]: checks})
    ref = _inits(protected)
    scale = np.abs(ref[entry["tensor"]]).max()
    _, alone = scrub_model(bad, weight_code=False)
    assert entry["tensor"] in alone.beyond_repair
    _, alone = scrub_model(bad, layer_code=False)
    assert entry["tensor"] in alone.beyond_repair
    for order in ("layer-first", "weight-first"):
        fixed, report = scrub_model(bad, order=order)
        assert report.status == "repaired" and report.checks_reencoded == 2, (order, report.table())
        got = _inits(fixed)
        assert np.max(np.abs(got[entry["tensor"]] - ref[entry["tensor"]])) <= 1e-6 * scale
        h = _block_code(entry, entry["blocks"][index])
        b = entry["blocks"][index]
        stored = got[entry["parity_tensor"]][offset:offset + h.m].astype(np.float64)
        np.testing.assert_allclose(stored, h.apply(got[entry["tensor"]].reshape(-1)[b["start"]:b["stop"]]
                                                   .astype(np.float64)), rtol=1e-6, atol=1e-6)
