"""int8 QDQ models (quantize_static, int8 weights, calibrated on real digits): the protected
model is bit-identical to the fused original, raises no alarm on real data, and corrects a gross
wrong accumulator in every protected layer and single int8 weight bit flips (bits 0-7)."""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnx_ecc
from onnx_ecc.runtime.counters import read_counters
from onnx_ecc.transform.record import read_protection

from conftest import pretrained_with_data

pytest.importorskip("onnxruntime.quantization")


@functools.lru_cache(maxsize=None)
def _case(name: str, variant: str):
    """(QDQ model, protected model, real test images) of a pretrained model, once per session."""
    from onnx_ecc.zoo.quantised import quantize_qdq

    model, data = pretrained_with_data(name)
    shape = (-1,) + tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:])
    qdq = quantize_qdq(model, data.x_train[:128].reshape(shape), variant)
    return qdq, onnx_ecc.transform(qdq), data.x_test[:200].reshape(shape).astype(np.float32)


def _copy(model):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _fused(model):  # the original at onnxruntime's default level: DQ-Conv-Q fused into QLinearConv / QGemm
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _protected(model):
    return ort.InferenceSession(model.SerializeToString(), sess_options=onnx_ecc.session_options(),
                                providers=["CPUExecutionProvider"])


def _run(sess, x):
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


CASES = [("mnist_cnn", "u8s8"), ("mnist_cnn", "s8s8_pc"), ("fashion_mlp", "u8s8"), ("fashion_mlp", "s8s8_pc")]


@pytest.mark.parametrize("name,variant", CASES)
def test_protected_int8_model_is_bit_identical_to_the_fused_original_with_no_alarm(name, variant):
    qdq, protected, x = _case(name, variant)
    record = read_protection(protected)
    layers = [p for p in record["protected"] if p["kind"] == "int-code"]
    ops_in = {n.op_type for n in qdq.graph.node}
    assert len(layers) == sum(n.op_type in ("Conv", "Gemm", "MatMul") for n in qdq.graph.node) > 0, record["skipped"]
    assert {p["dtype"] for p in layers} == {"int8"} and "QLinearConv" not in ops_in
    names = {n.name for n in protected.graph.node}
    assert all(p["name"] in names for p in layers)  # protected nodes keep the original names
    want = _run(_fused(qdq), x)
    got = _run(_protected(protected), x)
    np.testing.assert_array_equal(got, want)
    counts = read_counters(record["model_id"])
    assert {p["name"] for p in layers} <= set(counts)
    assert sum(c.flagged for c in counts.values()) == 0


def _with_accumulator_faults(model, layers):
    """``model`` with each layer's int32 accumulator plus a graph input (``<layer>__fault``)."""
    out = _copy(model)
    g = out.graph
    for layer in layers:
        acc = f"{layer}__ecc_acc"
        consumer = next(n for n in g.node if acc in n.input and n.op_type in ("IntDecode", "Int32Decode"))
        g.node.append(helper.make_node("Add", [acc, f"{layer}__fault"], [f"{acc}_f"], name=f"{layer}__fault_add"))
        consumer.input[0] = f"{acc}_f"
        g.input.append(helper.make_tensor_value_info(f"{layer}__fault", TensorProto.INT32, None))
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(_toposort(nodes, {i.name for i in g.input} | {t.name for t in g.initializer}))
    return out


def _toposort(nodes, known):
    done, order = set(known), []
    pending = list(nodes)
    while pending:
        for n in pending:
            if all(not i or i in done for i in n.input):
                order.append(n)
                done.update(n.output)
                pending.remove(n)
                break
        else:
            raise ValueError("cycle")
    return order


@pytest.mark.parametrize("name,variant", CASES)
def test_a_gross_wrong_accumulator_in_every_protected_layer_is_corrected(name, variant):
    qdq, protected, x = _case(name, variant)
    x = x[:16]
    record = read_protection(protected)
    layers = [p["name"] for p in record["protected"]]
    clean = _run(_fused(qdq), x)
    from onnx_ecc.transform.calibration import probe

    shapes = {k: v.shape for k, v in probe(protected, [f"{n}__ecc_acc" for n in layers])({protected.graph.input[0].name: x}).items()}
    faulty = _protected(_with_accumulator_faults(protected, layers))
    rng = np.random.default_rng(0)
    feeds = {faulty.get_inputs()[0].name: x}
    for layer in layers:  # one gross error in every output vector of every layer, data or digit channel
        shape = shapes[f"{layer}__ecc_acc"]
        f = np.zeros(shape, np.int32).reshape(-1, shape[-1])
        f[np.arange(len(f)), rng.integers(0, shape[-1], len(f))] = rng.choice([-1, 1], len(f)) * (1 << 24)
        feeds[f"{layer}__fault"] = f.reshape(shape)
    before = read_counters(record["model_id"])
    got = faulty.run(None, feeds)[0]
    np.testing.assert_array_equal(got, clean)
    after = read_counters(record["model_id"])
    for layer in layers:
        d = after[layer] - before[layer]
        vectors = int(np.prod(shapes[f"{layer}__ecc_acc"][:-1]))
        assert d.flagged == vectors and d.uncorrectable == 0, (layer, d)


def _weight_position(protected, qdq, layer):
    """(initializer of the original's int8 weight, of the protected W_aug, index map original -> W_aug)."""
    node = next(n for n in qdq.graph.node if n.name == layer)
    wdq = next(n for n in qdq.graph.node if n.output[0] == node.input[1])
    w_name, aug_name = wdq.input[0], f"{layer}__ecc_w_aug"
    w = numpy_helper.to_array(next(t for t in qdq.graph.initializer if t.name == w_name))
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)

    def to_aug(idx):
        if node.op_type == "Conv":
            m, c, i, j = idx
            return ((i * w.shape[3] + j) * w.shape[1] + c, m)
        if node.op_type == "Gemm" and trans_b:
            return (idx[1], idx[0])
        return idx

    return w_name, w, aug_name, to_aug


def _flip(model, name, index, bit):
    out = _copy(model)
    t = next(t for t in out.graph.initializer if t.name == name)
    a = numpy_helper.to_array(t).copy()
    a.view(np.uint8)[index] ^= np.uint8(1 << bit)
    t.CopyFrom(numpy_helper.from_array(a, name))
    return out


@pytest.mark.parametrize("name,variant", CASES[:1] + CASES[2:3])
def test_int8_weight_bit_flips_that_change_the_output_are_corrected(name, variant):
    qdq, protected, x = _case(name, variant)
    x = x[:32]
    clean = _run(_fused(qdq), x)
    rng = np.random.default_rng(1)
    changed = 0
    for layer in [p["name"] for p in read_protection(protected)["protected"]]:
        w_name, w, aug_name, to_aug = _weight_position(protected, qdq, layer)
        flat = np.argsort(-np.abs(w.astype(np.int16)).ravel())[:20]   # large weights change the output
        index = np.unravel_index(flat[rng.integers(0, len(flat))], w.shape)
        for bit in range(8):
            if not np.array_equal(_run(_fused(_flip(qdq, w_name, index, bit)), x), clean):
                changed += 1
                got = _run(_protected(_flip(protected, aug_name, to_aug(tuple(int(i) for i in index)), bit)), x)
                np.testing.assert_array_equal(got, clean, err_msg=f"{layer} {index} bit {bit}")
    assert changed > 0


@pytest.mark.parametrize("name,variant", CASES[:2])
def test_the_cnn_stays_channels_last_from_conv_to_conv(name, variant, tmp_path):
    """The convs chain channels last: MaxPools between them run as NhwcMaxPool and the optimized
    graph has only the Transposes the chain needs (into channels last at the first conv, back to NCHW
    before the Flatten)."""
    from onnx_ecc.transform.rules.quantised import nhwc_max_pool_available

    if not nhwc_max_pool_available():
        pytest.skip("onnxruntime without com.microsoft:NhwcMaxPool: per-layer Transposes")
    qdq, protected, x = _case(name, variant)
    pools = sum(n.op_type == "MaxPool" for n in qdq.graph.node)
    so = onnx_ecc.session_options()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(protected.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ops_run = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
    assert ops_run.count("Transpose") <= 2, ops_run
    assert ops_run.count("NhwcMaxPool") == pools > 0 and "MaxPool" not in ops_run, ops_run
    np.testing.assert_array_equal(_run(_protected(protected), x), _run(_fused(qdq), x))
