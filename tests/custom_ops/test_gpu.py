"""The CUDA kernels: the CPU correctness suite under CUDAExecutionProvider.

Skipped unless onnxruntime offers CUDAExecutionProvider and the custom-op library was built
with ONNX_ECC_CUDA=ON. Sessions forbid CPU fallback, so every node (our ops included) must
run on the CUDA provider; TF32 is turned off, as protected models need (see custom_ops/cuda/README.md).
"""

from __future__ import annotations

import ctypes
import itertools
import uuid

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnx_ecc
from onnx_ecc import ops
from onnx_ecc.codes import Layout

pytestmark = pytest.mark.gpu

CUDA = ("CUDAExecutionProvider", {"use_tf32": "0"})


def _library_has_cuda() -> bool:
    try:
        return hasattr(ctypes.CDLL(onnx_ecc.library_path()), "OnnxEcc_HasCuda")
    except (OSError, FileNotFoundError):
        return False


if "CUDAExecutionProvider" not in ort.get_available_providers():
    pytest.skip("CUDAExecutionProvider is not available", allow_module_level=True)
if not _library_has_cuda():
    pytest.skip("the onnx-ecc library was built without CUDA (ONNX_ECC_CUDA=OFF)", allow_module_level=True)


# ---- models and helpers -------------------------------------------------------------------

def _cnn(seed: int = 0) -> onnx.ModelProto:
    """Conv+Relu, depthwise Conv+Relu, 1x1 Conv, Gemm: every kind of protected layer."""
    rng = np.random.default_rng(seed)
    w = lambda *s: numpy_helper.from_array((rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32))  # noqa: E731
    inits = [w(16, 3, 3, 3), w(16), w(16, 1, 3, 3), w(16), w(32, 16, 1, 1), w(10, 32 * 8 * 8)]
    for t, name in zip(inits, ["W1", "B1", "Wd", "Bd", "W2", "W3"]):
        t.name = name
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "Wd", "Bd"], ["cd"], name="dw", pads=[1, 1, 1, 1], group=16),
        helper.make_node("Relu", ["cd"], ["rd"], name="relud"),
        helper.make_node("Conv", ["rd", "W2"], ["c2"], name="conv2"),
        helper.make_node("Flatten", ["c2"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "W3"], ["y"], name="fc", transB=1),
    ]
    g = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _mlp_3d(seed: int = 1) -> onnx.ModelProto:
    """MatMul over [N, S, D] (the channel axis last, inner size 1): the transformer case."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array((rng.standard_normal((32, 64)) / 6).astype(np.float32), "W1")
    w2 = numpy_helper.from_array((rng.standard_normal((64, 32)) / 8).astype(np.float32), "W2")
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "W2"], ["y"], name="mm2")]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16, 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16, 32])], [w1, w2])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _feeds(model: onnx.ModelProto, batch: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    from onnx_ecc.transform.verification import random_feeds

    return random_feeds(model, batch=batch, seed=seed)


def _strict_options() -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    return so


def _run_original(model: onnx.ModelProto, feeds, providers) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=providers).run(None, feeds)[0]


def _run_protected(model: onnx.ModelProto, feeds, gpu: bool, fail_stop: bool | None = None):
    if gpu:
        s = onnx_ecc.ProtectedSession(model, providers=[CUDA], options=_strict_options(), fail_stop=fail_stop)
    else:
        s = onnx_ecc.ProtectedSession(model, providers=["CPUExecutionProvider"], fail_stop=fail_stop)
    out = s.run(None, feeds)[0]
    return out, s.last_report


def _weight_of(model: onnx.ModelProto, layer: str) -> str:
    return next(n.input[1] for n in model.graph.node if n.name == layer)


def _corrupt(model: onnx.ModelProto, name: str, edits) -> onnx.ModelProto:
    """A copy with initializer `name` changed: edits is a list of (index, added value)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    init = next(i for i in out.graph.initializer if i.name == name)
    a = numpy_helper.to_array(init).copy()
    for index, delta in edits:
        a[index] += np.float32(delta)
    init.CopyFrom(numpy_helper.from_array(a, name))
    return out


def _close(got, want, rtol=1e-4):
    scale = float(np.max(np.abs(want))) + 1e-30
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


def _counts(report):
    return {k: (v.vectors, v.flagged, v.corrected_blocks, v.corrected_values, v.uncorrectable)
            for k, v in report.layers.items()}


def _run_on_both(model: onnx.ModelProto, feeds):
    """The GPU's output and report for a protected model, and the CPU's output; both count alike."""
    got, report = _run_protected(model, feeds, gpu=True)
    cpu_out, cpu_report = _run_protected(model, feeds, gpu=False)
    assert _counts(report) == _counts(cpu_report)
    return got, report, cpu_out


# ---- fault-free ---------------------------------------------------------------------------

@pytest.mark.parametrize("make,batch", [(_cnn, 1), (_cnn, 8), (_mlp_3d, 1), (_mlp_3d, 5)])
def test_fault_free_matches_original(make, batch):
    model = make()
    prot = onnx_ecc.transform(model)
    feeds = _feeds(model, batch=batch)
    want = _run_original(model, feeds, [CUDA])
    got, report, _ = _run_on_both(prot, feeds)  # the same counts of checked vectors as on the CPU
    _close(got, want)
    assert report.flagged == 0, report.layers
    assert all(c.runs == 1 and c.vectors > 0 for c in report.layers.values()), report.layers


def test_counters_accumulate_over_runs():
    model = _cnn()
    prot = onnx_ecc.transform(model)
    bad = _corrupt(prot, _weight_of(prot, "conv1"), [((3, 0, 1, 1), 4.0)])
    s = onnx_ecc.ProtectedSession(bad, providers=[CUDA], options=_strict_options())
    feeds = _feeds(model, batch=2)
    per_run = []
    for _ in range(3):
        s.run(None, feeds)
        per_run.append(s.last_report.corrected)
    assert per_run[0] > 0 and per_run == [per_run[0]] * 3
    totals = onnx_ecc.read_counters(s.model_id)["conv1"]
    assert totals.runs >= 3 and totals.corrected_blocks >= 3 * per_run[0]


# ---- errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("make,layer,edits", [
    (_cnn, "conv1", [((5, 1, 1, 1), 3.0)]),                        # one value per output vector
    (_cnn, "conv2", [((7, 3, 0, 0), -2.0), ((20, 9, 0, 0), 2.5)]),  # two blocks, one error each
    (_cnn, "fc", [((2, 100), 5.0)]),
    (_mlp_3d, "mm1", [((4, 10), 3.0)]),                            # [K, N] weights: output column 10
])
def test_single_errors_corrected(make, layer, edits):
    model = make()
    prot = onnx_ecc.transform(model, parity=2, block=8)
    bad = _corrupt(prot, _weight_of(prot, layer), edits)
    feeds = _feeds(model, batch=4)
    want = _run_original(model, feeds, [CUDA])
    got, report, cpu_out = _run_on_both(bad, feeds)
    _close(got, want, rtol=1e-3)
    assert report.corrected > 0 and report.uncorrectable == 0, report.layers
    _close(got, cpu_out, rtol=1e-3)


def test_multiple_errors_per_block_corrected():
    model = _cnn()
    prot = onnx_ecc.transform(model, parity=4, block=8)
    bad = _corrupt(prot, _weight_of(prot, "conv2"), [((1, 2, 0, 0), 3.0), ((2, 5, 0, 0), -3.0)])  # same block
    feeds = _feeds(model, batch=2)
    got, report, _ = _run_on_both(bad, feeds)
    _close(got, _run_original(model, feeds, [CUDA]), rtol=1e-3)
    layer = report.layers["conv2"]
    assert layer.corrected_blocks > 0 and layer.corrected_values > layer.corrected_blocks  # some with 2 values
    assert report.uncorrectable == 0


def test_depthwise_error_corrected():
    model = _cnn()
    prot = onnx_ecc.transform(model)
    assert any(n.op_type == ops.DEPTHWISE_CHECK.name for n in prot.graph.node)
    bad = _corrupt(prot, _weight_of(prot, "dw"), [((4, 0, 1, 1), 2.0)])
    feeds = _feeds(model, batch=2)
    got, report, _ = _run_on_both(bad, feeds)
    _close(got, _run_original(model, feeds, [CUDA]), rtol=1e-3)
    assert report.layers["dw"].corrected_blocks > 0 and report.uncorrectable == 0


def test_uncorrectable_detected_and_fail_stop():
    model = _cnn()
    prot = onnx_ecc.transform(model, parity=2, block=8)
    bad = _corrupt(prot, _weight_of(prot, "conv2"), [((1, 2, 0, 0), 3.0), ((2, 5, 0, 0), -3.0)])  # 2 in one block
    feeds = _feeds(model, batch=2)
    _, report, _ = _run_on_both(bad, feeds)
    assert report.uncorrectable > 0
    with pytest.raises(Exception, match="uncorrectable"):
        _run_protected(bad, feeds, gpu=True, fail_stop=True)
    # fail_stop on a clean model passes
    out, report = _run_protected(prot, feeds, gpu=True, fail_stop=True)
    assert report.flagged == 0


def test_non_finite_values_are_erasures():
    model = _mlp_3d()
    prot = onnx_ecc.transform(model, parity=2, block=8)
    bad = _corrupt(prot, _weight_of(prot, "mm2"), [((3, 6), np.inf)])
    feeds = _feeds(model, batch=2)
    got, _, cpu_out = _run_on_both(bad, feeds)
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(cpu_out))


# ---- Decode: scale, residual, activation, against the CPU kernel ----------------------------

def _decode_model(layout: Layout, inputs, model_id: str, **attrs) -> onnx.ModelProto:
    n = layout.groups * len(layout.block_sizes) * layout.parity
    node = ops.DECODE.make_node(inputs, ["Z"], "dec", axis=1, data_channels=layout.data_channels, groups=layout.groups,
                                block=layout.block, parity=layout.parity, generator=layout.generator_attribute(),
                                noise_gain=[50.0] * n, noise_offset=[1.0] * n, tolerance=4.0, layer="dec",
                                model_id=model_id, **attrs)
    g = helper.make_graph([node], "dec", [helper.make_tensor_value_info(i, TensorProto.FLOAT, None) for i in inputs if i],
                          [helper.make_tensor_value_info("Z", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.DOMAIN, ops.OPSET_VERSION)])
    m.ir_version = 8
    return m


def _decode_feeds(layout: Layout, rest: tuple, scale: str, residual: bool, seed: int) -> dict[str, np.ndarray]:
    """Encoded Y ([4, C, *rest]) with wrong values (one or two per hit block, NaN, inf, huge)."""
    rng = np.random.default_rng(seed)
    outer = 4
    data = rng.standard_normal((outer, layout.data_channels) + rest) * rng.choice([1e-3, 1.0, 1e3], (outer, 1) + rest)
    rows = np.moveaxis(data, 1, 0).reshape(layout.data_channels, -1)
    aug = layout.augment_rows(rows).reshape((layout.total_channels, outer) + rest)
    y = np.ascontiguousarray(np.moveaxis(aug, 0, 1), dtype=np.float32)
    flat = y.reshape(-1)
    hits = rng.choice(flat.size, size=min(flat.size, 30), replace=False)
    flat[hits[:22]] += rng.choice([-1, 1], 22) * rng.uniform(1, 100, 22).astype(np.float32)
    flat[hits[22:]] = [np.nan, np.inf, -np.inf, 3e38, -1e30, 7e30, 1e-30, 0.0][:len(hits) - 22]
    feeds = {"Y": y}
    if scale == "input":
        x = (2 * rng.standard_normal((outer, 37))).astype(np.float32)
        x[1, 3], x[2, 5] = np.nan, np.inf  # NaN is skipped, an infinite max|X| becomes FLT_MAX
        feeds["X"] = x
    if residual:
        r = rng.standard_normal((outer, layout.data_channels) + rest).astype(np.float32)
        r.reshape(-1)[:3] = [np.nan, np.inf, -0.0]
        feeds["R"] = r
    return feeds


def _assert_same_floats(got: np.ndarray, want: np.ndarray):
    """Bitwise equal, except that NaN payloads may differ (x86 propagates them, CUDA does not)."""
    assert got.shape == want.shape and got.dtype == want.dtype
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


DECODE_LAYOUTS = [Layout(64, 32, 2), Layout(24, 8, 3, groups=3), Layout(20, 20, 4), Layout(7, 32, 2), Layout(36, 12, 6)]


@pytest.mark.parametrize("layout", DECODE_LAYOUTS, ids=str)
@pytest.mark.parametrize("rest", [(5, 4), ()], ids=["nchw", "rows"])
@pytest.mark.parametrize("scale,residual,activation,mode",
                         list(itertools.product(["output", "input"], [False, True], ["", "Relu"], ["correct"]))
                         + [("output", True, "Relu", "detect"), ("input", False, "", "detect")])
def test_decode_op_identical_on_cpu_and_gpu(layout, rest, scale, residual, activation, mode):
    """Decode alone: outputs bit for bit (NaN payloads aside) and the same counts as the CPU kernel,
    for both threshold scales, with and without the residual R, Relu, detect mode, and
    non-finite or huge values (the [rows, C] case takes the CPU's DecodeRows path)."""
    inputs = ["Y", "X" if scale == "input" else "", "R" if residual else ""]
    while inputs[-1] == "":
        inputs.pop()
    attrs = dict(scale=scale, activation=activation, mode=mode)
    feeds = _decode_feeds(layout, rest, scale, residual, seed=layout.total_channels + len(rest))
    ids = {dev: f"gpu-test-{dev}-{uuid.uuid4().hex}" for dev in ("cpu", "gpu")}
    cpu = ort.InferenceSession(_decode_model(layout, inputs, ids["cpu"], **attrs).SerializeToString(),
                               sess_options=onnx_ecc.session_options(), providers=["CPUExecutionProvider"])
    gpu = ort.InferenceSession(_decode_model(layout, inputs, ids["gpu"], **attrs).SerializeToString(),
                               sess_options=onnx_ecc.session_options(_strict_options()), providers=[CUDA])
    want = cpu.run(None, feeds)[0]
    got = gpu.run(None, feeds)[0]
    _assert_same_floats(got, want)
    c, g = onnx_ecc.read_counters(ids["cpu"])["dec"], onnx_ecc.read_counters(ids["gpu"])["dec"]
    key = lambda v: (v.runs, v.vectors, v.flagged, v.corrected_blocks, v.corrected_values, v.uncorrectable)  # noqa: E731
    assert key(g) == key(c) and c.flagged > 0


@pytest.mark.parametrize("case", ["no_x", "r_shape"])
def test_decode_op_refuses_bad_inputs_like_the_cpu(case):
    layout = Layout(16, 8, 2)
    feeds = _decode_feeds(layout, (3,), "input", True, seed=1)
    if case == "no_x":
        inputs, attrs = ["Y"], dict(scale="input")
        feeds = {"Y": feeds["Y"]}
    else:
        inputs, attrs = ["Y", "", "R"], dict(scale="output")
        feeds = {"Y": feeds["Y"], "R": feeds["R"][:, :, :2].copy()}
    model = _decode_model(layout, inputs, "gpu-test-bad", **attrs)
    gpu = ort.InferenceSession(model.SerializeToString(), sess_options=onnx_ecc.session_options(_strict_options()),
                               providers=[CUDA])
    with pytest.raises(Exception, match="R must be float32 with the shape|needs the layer input X"):
        gpu.run(None, feeds)


def _residual_cnn(seed: int = 2) -> onnx.ModelProto:
    """Two residual blocks: Conv -> Add(skip) -> Relu, then 1x1 Conv -> Add(skip); and a MatMul -> Add."""
    rng = np.random.default_rng(seed)
    w = lambda *s: numpy_helper.from_array((rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32))  # noqa: E731
    inits = [w(16, 16, 3, 3), w(16), w(16, 16, 1, 1), w(8, 8)]
    for t, name in zip(inits, ["W1", "B1", "W2", "W3"]):
        t.name = name
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c1", "x"], ["a1"], name="add1"),
        helper.make_node("Relu", ["a1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "W2"], ["c2"], name="conv2"),
        helper.make_node("Add", ["c2", "r1"], ["a2"], name="add2"),
        helper.make_node("Reshape", ["a2", "shape"], ["t"], name="reshape"),
        helper.make_node("MatMul", ["t", "W3"], ["m"], name="mm"),
        helper.make_node("Add", ["m", "t"], ["y"], name="add3"),
    ]
    shape = numpy_helper.from_array(np.array([0, 128, 8], np.int64), "shape")
    g = helper.make_graph(nodes, "rescnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 128, 8])], inits + [shape])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("scale", ["output", "input"])
def test_residual_model_fault_free_and_corrected(scale):
    model = _residual_cnn()
    prot = onnx_ecc.transform(model, parity=2, block=8, scale=scale)
    decoders = [n for n in prot.graph.node if n.op_type == ops.DECODE.name]
    assert sum(len(n.input) == 3 and n.input[2] != "" for n in decoders) >= 2, "the residual Adds were not absorbed"
    feeds = _feeds(model, batch=3)
    want = _run_original(model, feeds, [CUDA])
    got, report, _ = _run_on_both(prot, feeds)
    _close(got, want)
    assert report.flagged == 0, report.layers
    bad = _corrupt(prot, _weight_of(prot, "conv1"), [((5, 2, 1, 1), 3.0)])
    bad = _corrupt(bad, _weight_of(bad, "mm"), [((3, 4), -2.0)])
    got, report, cpu_out = _run_on_both(bad, feeds)
    _close(got, want, rtol=1e-3)
    assert report.corrected > 0 and report.uncorrectable == 0, report.layers
    _close(got, cpu_out, rtol=1e-3)


# ---- InjectFault --------------------------------------------------------------------------

def _inject_model(kind: str, count: int, site: int, bits=(0, 7, 23, 30, 31)) -> onnx.ModelProto:
    node = ops.INJECT_FAULT.make_node(["x", "seed", "rate"], ["y"], "inject", kind=kind, bits=list(bits),
                                      count=count, site=site)
    g = helper.make_graph([node], "inject",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None]),
                           helper.make_tensor_value_info("seed", TensorProto.INT64, []),
                           helper.make_tensor_value_info("rate", TensorProto.FLOAT, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.DOMAIN, ops.OPSET_VERSION)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("kind", ["bitflip", "random", "zero"])
@pytest.mark.parametrize("count,rate,n", [(5, 0.0, 1000), (0, 1e-3, 200_000), (0, 0.25, 4000), (0, 1.0, 333), (0, 0.0, 100)])
def test_inject_fault_identical_on_cpu_and_gpu(kind, count, rate, n):
    site = 3
    model = _inject_model(kind, count, site).SerializeToString()
    cpu = ort.InferenceSession(model, sess_options=onnx_ecc.session_options(), providers=["CPUExecutionProvider"])
    gpu = ort.InferenceSession(model, sess_options=onnx_ecc.session_options(_strict_options()), providers=[CUDA])
    x = np.random.default_rng(7).standard_normal(n).astype(np.float32)
    layer = f"/site{site}"
    for seed in (0, 1, 12345, -9):
        feeds = {"x": x, "seed": np.array(seed, np.int64), "rate": np.array(rate, np.float32)}
        before = onnx_ecc.read_counters()[layer].flagged if layer in onnx_ecc.read_counters() else 0
        want = cpu.run(None, feeds)[0]
        mid = onnx_ecc.read_counters()[layer].flagged
        got = gpu.run(None, feeds)[0]
        after = onnx_ecc.read_counters()[layer].flagged
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
        assert after - mid == mid - before, "GPU and CPU count different numbers of faults"


# ---- the rerun strategy's fast path (SampleCheck, ParityCheck) on the GPU --------------------

@pytest.mark.parametrize("filter_checks", ["sums", "parity"])
def test_rerun_strategy_runs_on_the_gpu_and_recomputes_a_corrupted_run(filter_checks):
    """Every node on the CUDA provider (no CPU fallback): clean runs count as on the CPU; a
    corrupted conv weight fails its sample check there and the run is recomputed, corrected."""
    model = _cnn()
    protected = onnx_ecc.transform(model, strategy="rerun", filter_checks=filter_checks)
    feeds = _feeds(model, batch=4)
    got, report, cpu_out = _run_on_both(protected, feeds)
    np.testing.assert_array_equal(got, cpu_out)
    assert report.checks_failed == 0
    want = _run_original(model, feeds, ["CPUExecutionProvider"])
    bad = _corrupt(protected, _weight_of(protected, "conv1"), [((3, 1, 1, 1), 40.0)])
    got, report, cpu_out = _run_on_both(bad, feeds)
    assert report.checks_failed > 0 and report.uncorrectable == 0
    _close(got, want)
    _close(cpu_out, want)
