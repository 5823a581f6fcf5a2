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


# ---- the int8 ops (IntDecode, Int32Decode, Im2ColNhwc, IntSampleCheck) on the GPU ----------------

def _int_op_session(decl, inputs: dict, out_type, attrs, gpu: bool):
    """A one-node model of an int8 op (inputs: name -> type, "" for an absent optional input, in
    order); on the GPU with no CPU fallback, so the node must run there."""
    names = [n if t is not None else "" for n, t in inputs.items()]
    node = decl.make_node(names, ["Z"], "op", **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, t, None) for n, t in inputs.items()
                                        if t is not None], [helper.make_tensor_value_info("Z", out_type, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.DOMAIN, 1)],
                          ir_version=9)
    so = onnx_ecc.session_options(_strict_options() if gpu else ort.SessionOptions())
    return ort.InferenceSession(m.SerializeToString(), so, providers=[CUDA] if gpu else ["CPUExecutionProvider"])


def _int_counts(model_id: str, layer: str):
    c = onnx_ecc.read_counters(model_id).get(layer)
    return (c.vectors, c.flagged, c.corrected_blocks, c.corrected_values, c.uncorrectable) if c else None


def _int_layer(seed: int, m: int, block: int, parity: int, rows: int, faults: int, requantise: bool = True):
    """Accumulators [rows, M + digit columns] of a random int8 layer with wrong values anywhere, a
    flipped stored bias bit, and the decoder's attributes."""
    from onnx_ecc.codes import integer

    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, (m, 60)).astype(np.int8)
    digits, planes, g = integer.parity_rows(w, block, parity)
    x = rng.integers(-128, 128, (rows, 60)).astype(np.int64)
    y = (x @ np.concatenate([w, digits]).astype(np.int64).T).astype(np.int32)
    for _ in range(faults):
        y[rng.integers(rows), rng.integers(y.shape[1])] += int(rng.integers(-10**6, 10**6))
    bias = rng.integers(-5000, 5000, m)
    attrs = dict(data_channels=m, block=block, parity=parity, generator=[int(v) for v in g.ravel()], planes=planes,
                 bias_parity=integer.bias_parity(bias, block, parity), layer="int-layer")
    bias[m // 2] ^= 1 << 11  # repaired by the bias check on either provider
    attrs["bias"] = [int(v) for v in bias]
    if requantise:
        attrs.update(scale=[float(v) for v in rng.uniform(1e-4, 3e-3, m).astype(np.float32)],
                     zero_point=int(rng.integers(0, 256)))
    return y, attrs


@pytest.mark.parametrize("m,block,parity,faults", [(40, 32, 2, 0), (64, 16, 2, 30), (10, 4, 3, 200), (33, 8, 1, 50),
                                                    (96, 24, 4, 400)])
@pytest.mark.parametrize("mode", ["correct", "detect"])
def test_int_decode_op_identical_on_cpu_and_gpu(m, block, parity, faults, mode):
    y, attrs = _int_layer(m + faults, m, block, parity, rows=3 * 97, faults=faults)
    y = y.reshape(3, 97, -1)  # [N, T, C]: channels last
    outs = []
    for gpu in (False, True):
        model_id = f"gpu-int-decode-{uuid.uuid4().hex}"
        sess = _int_op_session(ops.INT_DECODE, {"Y": TensorProto.INT32}, TensorProto.UINT8,
                               dict(attrs, mode=mode, model_id=model_id), gpu)
        outs.append((sess.run(None, {"Y": y})[0], _int_counts(model_id, "int-layer")))
    (cpu, cpu_counts), (got, gpu_counts) = outs
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, cpu)
    assert gpu_counts == cpu_counts and cpu_counts[1] > 0  # at least the bias block is flagged


@pytest.mark.parametrize("layout", ["rows", "nchw"])
@pytest.mark.parametrize("faults", [0, 40])
def test_int32_decode_op_identical_on_cpu_and_gpu(layout, faults):
    y, attrs = _int_layer(7 + faults, 40, 16, 2, rows=2 * 77, faults=faults, requantise=False)
    if layout == "nchw":  # [N, C, H, W], axis 1: the kernel's strided item
        y = np.ascontiguousarray(y.reshape(2, 7, 11, -1).transpose(0, 3, 1, 2))
        attrs["axis"] = 1
    outs = []
    for gpu in (False, True):
        model_id = f"gpu-int32-decode-{uuid.uuid4().hex}"
        sess = _int_op_session(ops.INT32_DECODE, {"Y": TensorProto.INT32}, TensorProto.INT32,
                               dict(attrs, model_id=model_id), gpu)
        outs.append((sess.run(None, {"Y": y})[0], _int_counts(model_id, "int-layer")))
    (cpu, cpu_counts), (got, gpu_counts) = outs
    np.testing.assert_array_equal(got, cpu)
    assert gpu_counts == cpu_counts


def test_int_decode_fail_stop_raises_on_the_gpu_as_on_the_cpu():
    y, attrs = _int_layer(3, 32, 16, 2, rows=8, faults=0)
    y[2, 1] += 1000
    y[2, 5] += 77  # two wrong values in one block: uncorrectable
    for gpu in (False, True):
        sess = _int_op_session(ops.INT_DECODE, {"Y": TensorProto.INT32}, TensorProto.UINT8,
                               dict(attrs, fail_stop=1, model_id=f"gpu-int-fs-{gpu}"), gpu)
        with pytest.raises(Exception, match="uncorrectable"):
            sess.run(None, {"Y": y})


@pytest.mark.parametrize("case", ["channels", "axis", "pad_value"])
def test_int8_ops_refuse_bad_inputs_like_the_cpu(case):
    """The validation is shared (Read*Inputs): the same one-line error status on either provider."""
    y, attrs = _int_layer(1, 16, 8, 2, rows=4, faults=0)
    attrs["model_id"] = "gpu-int-bad"
    if case == "channels":
        decl, inputs, feeds, out = ops.INT_DECODE, {"Y": TensorProto.INT32}, {"Y": y[:, :-1].copy()}, TensorProto.UINT8
    elif case == "axis":
        decl, inputs, feeds, out = ops.INT_DECODE, {"Y": TensorProto.INT32}, {"Y": y}, TensorProto.UINT8
        attrs["axis"] = 0
    else:
        decl, out = ops.IM2COL_NHWC, TensorProto.UINT8
        inputs = {"X": TensorProto.UINT8, "PadValue": TensorProto.UINT8}
        feeds = {"X": np.zeros((1, 4, 4, 2), np.uint8), "PadValue": np.array([1, 2], np.uint8)}
        attrs = dict(kernel_shape=[3, 3])
    messages = []
    for gpu in (False, True):
        sess = _int_op_session(decl, inputs, out, attrs, gpu)
        with pytest.raises(Exception) as e:
            sess.run(None, feeds)
        messages.append(str(e.value).split("onnx-ecc", 1)[-1])
    assert messages[0] == messages[1]


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("shape,kernel,strides,pads,dil", [((2, 28, 28, 1), (5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),
                                                           ((4, 14, 14, 32), (3, 3), (2, 2), (1, 0, 1, 1), (1, 1)),
                                                           ((1, 9, 13, 3), (3, 2), (1, 3), (2, 0, 2, 1), (2, 1))])
@pytest.mark.parametrize("pad_input", [False, True])
def test_im2col_op_identical_on_cpu_and_gpu(dtype, shape, kernel, strides, pads, dil, pad_input):
    rng = np.random.default_rng(sum(shape))
    x = rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max + 1, shape).astype(dtype)
    attrs = dict(kernel_shape=list(kernel), strides=list(strides), pads=list(pads), dilations=list(dil), pad_value=17)
    inputs = {"X": TensorProto.UINT8 if dtype == np.uint8 else TensorProto.INT8}
    feeds = {"X": x}
    if pad_input:  # the run-time zero point (a host input on the GPU)
        inputs["PadValue"] = TensorProto.UINT8
        feeds["PadValue"] = np.array([201], np.uint8)
    cpu = _int_op_session(ops.IM2COL_NHWC, inputs, TensorProto.UINT8, attrs, False).run(None, feeds)[0]
    got = _int_op_session(ops.IM2COL_NHWC, inputs, TensorProto.UINT8, attrs, True).run(None, feeds)[0]
    np.testing.assert_array_equal(got, cpu)


@pytest.mark.parametrize("weight_axis", [None, 0, 1])
@pytest.mark.parametrize("fault", ["none", "row", "weight", "flag"])
def test_int_sample_check_op_identical_on_cpu_and_gpu(weight_axis, fault):
    """Raised and the counts alike; W, Bias and Flag arrive as device tensors on the GPU."""
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (4, 3, 10, 16)).astype(np.uint8)
    y = a[..., ::3, :].copy()
    attrs = dict(data_channels=16, row_stride=3, layer="isc")
    with_w = weight_axis is not None
    inputs = {"A": TensorProto.UINT8, "Y": TensorProto.UINT8, "W": TensorProto.INT8 if with_w else None,
              "Bias": TensorProto.INT32 if with_w else None, "Flag": TensorProto.BOOL}
    feeds = {"A": a, "Y": y, "Flag": np.array([fault == "flag"])}
    if with_w:
        w = rng.integers(-128, 128, (16, 8, 3, 3) if weight_axis == 0 else (72, 16)).astype(np.int8)
        bias = rng.integers(-1000, 1000, 16).astype(np.int32)
        s = (w.astype(np.int64) if weight_axis == 0 else w.astype(np.int64).T).reshape(16, -1).sum(1) + bias
        attrs.update(weight_axis=weight_axis, filter_sums=[int(v) for v in s])
        if fault == "weight":
            w.reshape(-1)[101] ^= np.int8(4)
        feeds.update(W=w, Bias=bias)
    if fault == "row":
        y[1, 2, 3, 4] ^= np.uint8(1)
    results = []
    for gpu in (False, True):
        model_id = f"gpu-int-sample-{uuid.uuid4().hex}"
        sess = _int_op_session(ops.INT_SAMPLE_CHECK, inputs, TensorProto.BOOL, dict(attrs, model_id=model_id), gpu)
        results.append((bool(sess.run(None, feeds)[0][0]), _int_counts(model_id, "isc (sample check)")))
    assert results[0] == results[1]
    assert results[0][0] == (fault != "none" and not (fault == "weight" and not with_w))


def _quantised_mnist(fmt: str):
    """The pretrained MNIST CNN quantised as tests/transform/test_int8.py and test_operator_formats.py
    do (u8s8 QDQ, s8s8_pc QDQ, or quantize_dynamic), and 64 real test images."""
    pytest.importorskip("onnxruntime.quantization")
    pytest.importorskip("torch")
    from onnx_ecc import datasets, zoo
    from onnx_ecc.zoo.quantised import quantize_dynamic_int8, quantize_qdq

    try:
        model, data = zoo.mnist_cnn(), datasets.load("mnist")
    except Exception as e:  # package or data missing: say which
        pytest.skip(f"mnist_cnn or its data unavailable: {e}")
    x = data.x_test[:64].reshape(-1, 1, 28, 28).astype(np.float32)
    if fmt == "dynamic":
        return quantize_dynamic_int8(model), x
    return quantize_qdq(model, data.x_train[:128].reshape(-1, 1, 28, 28), fmt), x


def _placements(sess: ort.InferenceSession) -> dict[str, set[str]]:
    """Op type -> the providers its nodes ran on, from the session's profile."""
    import json

    path = sess.end_profiling()
    with open(path) as f:
        events = json.load(f)
    out: dict[str, set[str]] = {}
    for e in events:
        args = e.get("args", {})
        if e.get("cat") == "Node" and "provider" in args:
            out.setdefault(args.get("op_name", ""), set()).add(args["provider"])
    return out


@pytest.mark.parametrize("fmt,strategy,our_ops", [
    ("u8s8", "duplication", {"IntDecode", "Im2ColNhwc"}),
    ("s8s8_pc", "duplication", {"IntDecode", "Im2ColNhwc"}),
    ("dynamic", "duplication", {"Int32Decode", "Im2ColNhwc"}),
    ("u8s8", "rerun", {"IntSampleCheck"}),
])
def test_quantised_mnist_cnn_on_the_gpu_is_bit_identical_to_the_cpu(fmt, strategy, our_ops, tmp_path):
    """The protected int8 model under the CUDA provider (CPU fallback allowed for the integer
    matmuls and NHWC pools onnxruntime has no CUDA kernel for): every one of our int8 nodes placed
    on the CUDA provider, no check failed on real digits, and the outputs bit for bit the CPU
    session's (duplication: integer products, exact on either provider) or, for the rerun
    strategy, whose fast path is the original layers, the original model's on the GPU."""
    from onnx_ecc.runtime.counters import read_counters
    from onnx_ecc.transform.record import read_protection

    qdq, x = _quantised_mnist(fmt)
    protected = onnx_ecc.transform(qdq, strategy=strategy) if strategy != "duplication" else onnx_ecc.transform(qdq)
    assert our_ops <= {n.op_type for n in protected.graph.node}
    model_id = read_protection(protected)["model_id"]

    def run(model, gpu: bool, profile: str | None = None):
        so = onnx_ecc.session_options()
        if profile:
            so.enable_profiling = True
            so.profile_file_prefix = str(tmp_path / profile)
        sess = ort.InferenceSession(model.SerializeToString(), so,
                                    providers=[CUDA, "CPUExecutionProvider"] if gpu else ["CPUExecutionProvider"])
        out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        return out, (_placements(sess) if profile else None)

    before = {k: v.flagged for k, v in read_counters(model_id).items()}
    got, placed = run(protected, True, f"int8_{fmt}_{strategy}")
    for op in our_ops:
        assert placed.get(op) == {"CUDAExecutionProvider"}, (op, placed.get(op))
    flagged = {k: v.flagged - before.get(k, 0) for k, v in read_counters(model_id).items()}
    assert sum(flagged.values()) == 0, f"checks failed on the GPU on clean inputs: {flagged}"
    if strategy == "rerun":
        np.testing.assert_array_equal(got, run(qdq, True)[0])
    else:
        np.testing.assert_array_equal(got, run(protected, False)[0])
