"""Fault models: the injector really injects, records reproduce, the Python mirror matches the kernel."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnx_ecc
from onnx_ecc import faults as F
from onnx_ecc.faults.rng import mix, unmix


def gemm_model(w: np.ndarray, b: np.ndarray | None = None) -> onnx.ModelProto:
    """Y = X @ W.T (+ b): a tiny Gemm with transB=1."""
    n, k = w.shape
    inits = [numpy_helper.from_array(w.astype(np.float32), "W")]
    inputs = ["x", "W"]
    if b is not None:
        inits.append(numpy_helper.from_array(b.astype(np.float32), "B"))
        inputs.append("B")
    g = helper.make_graph([helper.make_node("Gemm", inputs, ["y"], name="fc", transB=1)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def run(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), onnx_ecc.session_options(so),
                                providers=["CPUExecutionProvider"]).run(None, feeds)[0]


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    return gemm_model(rng.uniform(-1, 1, (6, 5)), rng.uniform(-1, 1, 6)), rng.uniform(-1, 1, (4, 5)).astype(np.float32)


def test_bitflip_changes_only_the_affected_feature(tiny):
    model, x = tiny
    w = numpy_helper.to_array(model.graph.initializer[0])
    f = F.Fault("W", (2, 3), "bitflip", bit=30)
    faulty = F.apply_weight_faults(model, [f])
    y0, y1 = run(model, {"x": x}), run(faulty, {"x": x})
    # oracle: numpy with the bit flipped by hand
    w2 = w.copy()
    w2.view(np.uint32)[2, 3] ^= np.uint32(1 << 30)
    assert w2[2, 3] != w[2, 3] and abs(w2[2, 3]) > 1e30
    changed = np.any(y1 != y0, axis=0)
    assert changed.tolist() == [False, False, True, False, False, False]
    np.testing.assert_allclose(y1[:, 2], (x.astype(np.float64) @ w2[2].astype(np.float64))
                               + numpy_helper.to_array(model.graph.initializer[1])[2], rtol=1e-5)


def test_kinds_and_original_untouched(tiny):
    model, _ = tiny
    before = model.SerializeToString()
    out = F.apply_weight_faults(model, [F.Fault("W", 7, "zero"), F.Fault("W", (0, 0), "value", value=2.5),
                                        F.Fault("B", (1,), "bitflip", bit=31)])
    assert model.SerializeToString() == before
    w = numpy_helper.to_array(out.graph.initializer[0])
    b0, b = numpy_helper.to_array(model.graph.initializer[1]), numpy_helper.to_array(out.graph.initializer[1])
    assert w.reshape(-1)[7] == 0 and w[0, 0] == np.float32(2.5) and b[1] == -b0[1]
    with pytest.raises(ValueError):
        F.apply_weight_faults(model, [F.Fault("nope", 0, "zero")])
    with pytest.raises(ValueError):
        F.apply_weight_faults(model, [F.Fault("W", (6, 0), "zero")])


def test_records_reproduce(tiny):
    model, _ = tiny
    spec = F.WeightFaultSpec(ber=0.05, bits="exponent", tensors="all")
    a, b = F.draw_weight_faults(model, spec, 7), F.draw_weight_faults(model, spec, 7)
    assert a == b and a != F.draw_weight_faults(model, spec, 8)
    assert all(f.bit in range(23, 31) for f in a)
    assert [F.Fault.from_dict(f.to_dict()) for f in a] == a
    assert F.apply_weight_faults(model, a).SerializeToString() == F.apply_weight_faults(model, a).SerializeToString()
    c = F.draw_weight_faults(model, F.WeightFaultSpec(count=20, kind="random"), 3)
    assert len({(f.target, f.index) for f in c}) == 20           # distinct elements
    w = numpy_helper.to_array(model.graph.initializer[0])
    assert all(abs(f.value) <= np.abs(w).max() for f in c if f.target == "W")
    with pytest.raises(ValueError):
        F.Fault("W", 0, "bitflip", bit=32)
    with pytest.raises(ValueError):
        F.WeightFaultSpec(count=1, ber=0.1)


def test_ber_count_is_binomial(tiny):
    model, _ = tiny
    spec = F.WeightFaultSpec(ber=0.01, tensors="all")
    total_bits = (30 + 6) * 32
    counts = [len(F.draw_weight_faults(model, spec, s)) for s in range(400)]
    assert abs(np.mean(counts) - total_bits * 0.01) < 4 * np.sqrt(total_bits * 0.01 * 0.99 / 400)


def test_bit_presets():
    assert F.parse_bits("sign") == (31,)
    assert F.parse_bits("exponent") == tuple(range(23, 31))
    assert F.parse_bits("sign,0-2") == (0, 1, 2, 31)
    with pytest.raises(ValueError):
        F.parse_bits("bogus")


def test_splitmix_inverse():
    rng = np.random.default_rng(1)
    for z in rng.integers(0, 2**63, 200).tolist():
        assert unmix(mix(z)) == z and mix(unmix(z)) == z


@pytest.mark.parametrize("kind", ["bitflip", "random", "zero"])
@pytest.mark.parametrize("count,rate", [(3, 0.0), (0, 0.02), (0, 0.5), (0, 1.0)])
def test_python_mirror_matches_kernel(kind, count, rate):
    # identity MatMul: the instrumented output is x with the injected faults
    k = 40
    g = helper.make_graph([helper.make_node("MatMul", ["x", "I"], ["y"], name="mm")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, k])],
                          [numpy_helper.from_array(np.eye(k, dtype=np.float32), "I")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = np.random.default_rng(5).uniform(-3, 3, (6, k)).astype(np.float32)
    bits = "23-31" if kind == "bitflip" else None
    inst, sites = F.instrument(model, kind=kind, bits=bits, count=count, sites={"mm": 4})
    assert sites[0].site == 4
    for seed in (0, 11, -3, 2**62 + 9):
        y = run(inst, {"x": x, **F.fault_feeds(seed, rate)})
        expect = x.copy().reshape(-1)
        faults = F.compute_faults(seed, 4, x.size, kind=kind, bits=bits, count=count, rate=rate,
                                  value_range=float(np.abs(x).max()))
        for f in faults:
            expect[f.index] = F.corrupt(expect[f.index], f)
        assert np.array_equal(y.reshape(-1).view(np.uint32), expect.view(np.uint32))
        if count:
            assert len(faults) == count


def test_seed_for_fault_hits_chosen_element():
    k = 30
    g = helper.make_graph([helper.make_node("MatMul", ["x", "I"], ["y"], name="mm")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, k])],
                          [numpy_helper.from_array(np.eye(k, dtype=np.float32), "I")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    inst, _ = F.instrument(model, count=1, sites={"mm": 2})
    x = np.ones((2, k), np.float32)
    for index, bit in ((0, 30), (59, 0), (31, 31)):
        seed = F.seed_for_fault(2, x.size, index, bit)
        y = run(inst, {"x": x, **F.fault_feeds(seed)}).reshape(-1)
        diff = y.view(np.uint32) ^ x.reshape(-1).view(np.uint32)
        assert np.flatnonzero(diff).tolist() == [index] and diff[index] == 1 << bit


def test_protected_mapping_and_instrumentation(tiny):
    model, x = tiny
    prot = onnx_ecc.transform(model, parity=2, block=4)
    f = F.Fault("W", (5, 2), "bitflip", bit=30)
    [fp] = F.to_protected([f], prot)
    assert fp.target.startswith("W__ecc_") and fp.index == (5, 2)        # layout [6 data rows, 2 x 2 parity rows]
    assert F.to_original([fp], prot) == [f]
    parity_fault = F.Fault(fp.target, (6, 0), "bitflip", bit=3)          # a parity row: no counterpart
    assert F.to_original([parity_fault], prot) == []
    # the protected model corrects the same weight fault
    from onnx_ecc.runtime import ProtectedSession

    s = ProtectedSession(F.apply_weight_faults(prot, [fp]))
    y = s.run(None, {"x": x})[0]
    np.testing.assert_allclose(y, run(model, {"x": x}), rtol=1e-5, atol=1e-5)
    assert s.last_report.corrected > 0
    # faults go between the layer and its decoder
    inst, sites = F.instrument(prot)
    inj = next(n for n in inst.graph.node if n.op_type == "InjectFault")
    assert inj.output[0].endswith("__ecc_aug")
    assert any(n.op_type == "Decode" and n.input[0] == inj.output[0] for n in inst.graph.node)
    assert sites[0].data_channels == 6 and sites[0].total_channels == 10


def test_inplace_runner_matches_fresh_session(tiny):
    from onnx_ecc.campaign import Runner

    model, x = tiny
    r = Runner(model, ["W", "B"])
    faults = F.draw_weight_faults(model, F.WeightFaultSpec(count=3, bits="23-30", tensors="all"), 1)
    got = r.run(x, faults)[0]
    np.testing.assert_allclose(got, run(F.apply_weight_faults(model, faults), {"x": x}), rtol=1e-6)
    np.testing.assert_array_equal(r.run(x)[0], run(model, {"x": x}))     # restored


def test_inject_cli_never_overwrites_input(tmp_path, tiny):
    model, _ = tiny
    src = tmp_path / "m.onnx"
    onnx.save(model, str(src))
    data = src.read_bytes()
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, "-m", "onnx_ecc.cli.inject"]
    r = subprocess.run(cmd + [str(src), "-o", str(src), "--count", "2"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "refusing to overwrite the input" in r.stderr and src.read_bytes() == data
    r = subprocess.run(cmd + [str(src), "-o", str(tmp_path / ".." / tmp_path.name / "m.onnx"), "--count", "2"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2 and src.read_bytes() == data
    out = tmp_path / "f.onnx"
    r = subprocess.run(cmd + [str(src), "-o", str(out), "--count", "2", "--bits", "30", "--seed", "9",
                              "--tensors", "all"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert src.read_bytes() == data and "bit 30" in r.stdout
    expect = F.apply_weight_faults(model, F.draw_weight_faults(
        model, F.WeightFaultSpec(count=2, bits=(30,), tensors="all"), 9))
    assert [numpy_helper.to_array(t).tobytes() for t in onnx.load(str(out)).graph.initializer] == \
        [numpy_helper.to_array(t).tobytes() for t in expect.graph.initializer]
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name]
    r = subprocess.run(cmd + [str(src), "-o", str(out), "--ber", "2"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
