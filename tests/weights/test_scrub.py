"""Model-level scrubbing: add_weight_checks, scrub_model, the scrub CLI verb and the live WeightScrubber."""

import argparse
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_ecc.cli import scrub as scrub_cli
from onnx_ecc.faults.records import Fault
from onnx_ecc.faults.weight_flips import apply_weight_faults
from onnx_ecc.weights import WeightScrubber, add_weight_checks, read_weight_codes, scrub_model
from onnx_ecc.weights.model import repair_tolerance


def _mlp(seed=0):
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((64, 100)) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((10, 64)) * 0.1).astype(np.float32)
    b1 = np.zeros(64, np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
         helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2t"], ["y"])],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 100])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
         numpy_helper.from_array(np.ascontiguousarray(w2.T), "w2t")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def _run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _corrupt(model, name, count, seed=1, values="gross"):
    """A copy of ``model`` with ``count`` errors in ``name``: top exponent bit flips, or N(0, 0.05) added."""
    rng = np.random.default_rng(seed)
    flat = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name)).reshape(-1)
    pos = rng.choice(flat.size, count, replace=False)
    if values == "bitflip":  # flip the top exponent bit: huge or tiny values
        faults = [Fault(name, int(p), bit=30) for p in pos]
    else:
        new = flat[pos] + rng.standard_normal(count).astype(np.float32) * 0.05
        faults = [Fault(name, int(p), kind="value", value=float(v)) for p, v in zip(pos, new)]
    return apply_weight_faults(model, faults)


def _weights(model, name):
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name)).reshape(-1)


def _assert_repaired(fixed, original, corrupted):
    """Every protected tensor of ``fixed`` equals ``original`` within the checks' rounding (oracle)."""
    for entry in read_weight_codes(original):
        name, ref = entry["tensor"], _weights(original, entry["tensor"])
        got, bad = _weights(fixed, name), _weights(corrupted, name)
        touched = np.flatnonzero((got.view(np.uint32) != ref.view(np.uint32)) | (bad.view(np.uint32) != ref.view(np.uint32)))
        allowed = repair_tolerance(entry, _weights(original, entry["parity_tensor"]), touched, got)
        assert np.all(np.abs(got[touched].astype(np.float64) - ref[touched]) <= allowed), name


@pytest.fixture(scope="module")
def protected():
    model = add_weight_checks(_mlp(), checks="25%")  # float32 checks (the default)
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def protected64():
    return add_weight_checks(_mlp(), checks=1600, parity_dtype="float64")  # a count: as many checks, 8 bytes each


def test_default_selection_and_metadata(protected):
    entries = read_weight_codes(protected)
    assert sorted(e["tensor"] for e in entries) == ["w1", "w2t"]  # biases are not weights
    names = {t.name for t in protected.graph.initializer}
    assert {"w1__ecc_weight_parity", "w2t__ecc_weight_parity"} <= names
    assert all(e["mode"] == "parity" and e["family"] == "dct" for e in entries)
    x = np.random.default_rng(0).random((3, 100), dtype=np.float32)
    np.testing.assert_array_equal(_run(protected, x), _run(_mlp(), x))  # ORT loads it, same outputs


def test_clean_model_is_clean_and_identical(protected):
    out, report = scrub_model(protected)
    assert report.status == "clean"
    assert out.SerializeToString() == protected.SerializeToString()


@pytest.mark.parametrize("values", ["gross", "bitflip"])
def test_repair_restores_outputs(protected, values):
    x = np.random.default_rng(0).random((5, 100), dtype=np.float32)
    reference = _run(protected, x)
    bad = _corrupt(protected, "w1", 200, values=values)
    assert not np.array_equal(_run(bad, x), reference)
    fixed, report = scrub_model(bad)
    assert report.status == "repaired"
    _assert_repaired(fixed, protected, bad)  # float32 checks: within their rounding, not bit-exact
    np.testing.assert_allclose(_run(fixed, x), reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("values", ["gross", "bitflip"])
def test_float64_checks_repair_bit_exact(protected64, values):
    bad = _corrupt(protected64, "w1", 200, values=values)
    fixed, report = scrub_model(bad)
    assert report.status == "repaired"
    assert fixed.SerializeToString() == protected64.SerializeToString()


def _cli(tmp_path, model, out_name="out.onnx"):
    src = tmp_path / "in.onnx"
    onnx.save(model, src)
    before = src.read_bytes()
    parser = argparse.ArgumentParser()
    scrub_cli.add_arguments(parser)
    out = tmp_path / out_name
    code = scrub_cli.run(parser.parse_args([str(src), "-o", str(out)]))
    assert src.read_bytes() == before  # input never overwritten
    return code, src, out


def test_cli_clean_repaired_uncorrectable_bad(tmp_path, protected, capsys):
    code, src, out = _cli(tmp_path, protected)
    assert code == 0 and out.read_bytes() == src.read_bytes()
    bad = _corrupt(protected, "w2t", 20)
    code, _, out = _cli(tmp_path, bad, "rep.onnx")
    assert code == 1
    _assert_repaired(onnx.load(out), protected, bad)
    code, _, out = _cli(tmp_path, _corrupt(protected, "w2t", 300), "never.onnx")
    assert code == 2 and not out.exists()
    assert "w2t" in capsys.readouterr().out
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not an onnx model at all\x00\xff")
    parser = argparse.ArgumentParser()
    scrub_cli.add_arguments(parser)
    assert scrub_cli.run(parser.parse_args([str(junk), "-o", str(tmp_path / "j.onnx")])) == 3
    assert not (tmp_path / "j.onnx").exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_live_scrubber_repairs_running_session_in_place(protected):
    x = np.random.default_rng(2).random((4, 100), dtype=np.float32)
    reference = _run(protected, x)
    events = []
    scrubber = WeightScrubber(protected, on_event=events.append)
    sess = scrubber.make_session()
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], reference)
    buf = scrubber.buffers["w1"].reshape(-1)
    rng = np.random.default_rng(5)
    pos = rng.choice(buf.size, 100, replace=False)
    buf.view(np.uint32)[pos[:50]] ^= np.uint32(1 << 30)  # memory faults behind the OrtValue
    buf[pos[50:]] += np.float32(0.03)
    assert not np.allclose(sess.run(None, {"x": x})[0], reference)  # the session sees the fault
    scrubber.start(interval=0.05)
    try:
        for _ in range(200):
            if events:
                break
            import time
            time.sleep(0.05)
    finally:
        scrubber.stop()
    assert events and events[0].status == "repaired"
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], reference, rtol=1e-5, atol=1e-6)  # same session
    assert scrubber.check_now().status == "clean"
    before = onnx.ModelProto()
    before.CopyFrom(protected)
    before.graph.initializer[0].CopyFrom(numpy_helper.from_array(buf.reshape(64, 100), "w1"))
    _assert_repaired(scrubber.current_model(), protected, before)
