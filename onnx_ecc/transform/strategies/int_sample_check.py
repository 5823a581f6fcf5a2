"""Fast-path checks of int8 QDQ layers that leave onnxruntime's fused integer kernels as they are.

Why: decoding an int8 layer inline replaces onnxruntime's fused QLinearConv / QGemm with
Im2ColNhwc -> MatMulInteger -> IntDecode, which costs about as much as running the model twice.
Here each QDQ Conv / Gemm / MatMul stays exactly as in the original (onnxruntime still fuses it,
and runs the convs channels last), and a strided copy of it, with DequantizeLinear nodes and a
QuantizeLinear of its own, recomputes a sample of its output: every s-th row and column of a conv
(``sample_check.sample_strides``: 1/64 of a large map at stride 8), every s-th row (batch or token)
of a Gemm / MatMul. onnxruntime fuses the copy into the same integer kernel, and integer arithmetic
is deterministic, so one IntSampleCheck compares the original's quantised output there with the
copy's bit for bit, row by row: no threshold and no false alarm by construction. A conv's output is
sampled by a 1x1 MaxPool, which onnxruntime runs channels last as NhwcMaxPool, and both sides are
compared channels last (a Transpose that cancels onnxruntime's own), so no Transpose is left around
the fused convs; a Gemm / MatMul's check reads its whole output and compares every s-th row. The
same op sums each output channel's int8 weights plus its int32 bias in int64 against the sums stored
at transform time, which sees a corrupted stored weight wherever its inputs are (zero, or
unsampled). A flag routes the run through the inline-decoded int8 graph (rerun.py), which reads its
own copy of the weights (W_aug, weights and parity digits) and corrects one wrong accumulator per
block and output vector. Only QDQ layers with explicit pads are kept fused (fused_qdq_layers); the
other int8 layers (MatMulInteger / ConvInteger) are decoded inline on the fast path; operator forms
(QLinearConv, QGemm, QLinearMatMul) are expressed as QDQ before (rerun.py), and grouped / depthwise convs
are recomputed from a weight copy of their own (int_recompute.py).

Why not a parity check of the whole output: the fused kernels give out only the requantised values
(rounded, clamped to 0..255), not the int32 accumulators a parity sums exactly; a parity of the
requantised values only bounds the accumulators by intervals (half-open wherever an output
saturates, as after every fused ReLU), so it is not exact. What is exactly checkable on the fused
path is a bit-for-bit recomputation and the stored weights, which is what this does.

int8 activations are made uint8 first (the QuantizeLinear / DequantizeLinear pairs of a tensor only
dequantised get zero point + 128: the same values, as onnxruntime's own QDQ S8-to-U8 pass does),
because onnxruntime converts a pair only while the QuantizeLinear has one consumer, and the
sampling adds one; an unconverted int8 pair would stop the fusion of both layers.

What this does not see: a transient error of the layer's computation at an unsampled position (63
of 64 on a large conv output at stride 8; 7 of 8 rows of a Gemm at batch 8), faults in a weight's
scale or in the requantisation parameters (stored floats that both the original and its copy read),
and faults in the layer's input (which the layer and its copy both read).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnx_ecc import ops
from onnx_ecc.transform.common import constant_value, emit_node
from onnx_ecc.transform.rules.quantised import dequantised_through, int8_zero_point_at
from onnx_ecc.transform.strategies.sample_check import sample_strides

ROW_AXIS = -2  # the rows of a Gemm / MatMul input that the copy samples


@dataclasses.dataclass
class PlacedIntSampleCheck:
    """One IntSampleCheck: its layer, node and the rows and columns between samples."""

    layer: str
    node: str
    strides: tuple[int, ...]


def _quantised(t) -> bool:
    return isinstance(t, gs.Variable) and len(t.inputs) == 1 and t.inputs[0].op == "DequantizeLinear"


def _int8_zero_point(node: gs.Node):
    """A QuantizeLinear / DequantizeLinear's per-tensor int8 zero point, or None."""
    zp = constant_value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
    return zp if zp is not None and zp.dtype == np.int8 and zp.size == 1 else None


def fused_qdq_layers(model: onnx.ModelProto) -> set[str]:
    """Names of the QDQ Conv / Gemm / MatMul layers this check keeps fused: input and weight (and bias)
    from DequantizeLinear nodes, the weight and bias constant (or, for a MatMul, a second activation:
    a product), the output through one QuantizeLinear, explicit pads.
    Other int8 layers (onnxruntime's operator forms, MatMulInteger / ConvInteger) are decoded inline."""
    graph = gs.import_onnx(model)
    out = set()
    for node in graph.nodes:
        if node.op not in ("Conv", "Gemm", "MatMul") or len(node.inputs) < 2 or not node.name:
            continue
        consts = [t for t in node.inputs[1:] if t.name]
        y = node.outputs[0]
        if node.op == "Conv" and node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
            continue  # a strided copy would pad differently
        if (_quantised(node.inputs[0]) and all(_quantised(t) for t in consts)
                and (is_product(node) or all(constant_value(t.inputs[0].inputs[0]) is not None for t in consts))
                and y not in graph.outputs and len(y.outputs) == 1 and y.outputs[0].op == "QuantizeLinear"):
            out.add(node.name)
    return out


def is_product(node: gs.Node) -> bool:
    """A QDQ MatMul of two activations (attention's products): its second input is not a constant."""
    return (node.op == "MatMul" and _quantised(node.inputs[1])
            and constant_value(node.inputs[1].inputs[0].inputs[0]) is None)


def uint8_activations(graph: gs.Graph) -> int:
    """Make int8 activations uint8 where a tensor is only dequantised, directly or through value-preserving
    and shiftable ops (an operator-format model's int8 MaxPool -> Flatten, or QLinearGlobalAveragePool, before
    a Gemm): zero points + 128, exact;
    returns how many tensors changed."""
    changed = 0
    for q in [n for n in graph.nodes if n.op == "QuantizeLinear"]:
        out = q.outputs[0]
        found = dequantised_through(graph, out) if _int8_zero_point(q) is not None else None
        if found is None:
            continue
        zero_points, tensors = found
        for i, (node, k) in enumerate([(q, 2)] + zero_points):
            zp = int8_zero_point_at(node, k)
            node.inputs[k] = gs.Constant(f"{out.name}__ecc_fast_zp_u8_{i}",
                                        np.asarray(zp.astype(np.int16) + 128, np.uint8))
        for t in tensors:
            t.dtype = np.uint8
        changed += 1
    return changed


def _dequantised_copy(graph: gs.Graph, t: gs.Variable, source: gs.Variable, name: str) -> gs.Variable:
    """A DequantizeLinear of its own for the copy: ``t`` = DequantizeLinear(x, ...) applied to ``source``."""
    dq = t.inputs[0]
    out = gs.Variable(f"{name}__ecc_dq", dtype=np.float32)
    graph.nodes.append(gs.Node("DequantizeLinear", f"{name}__ecc_dq", dict(dq.attrs), [source] + list(dq.inputs[1:]),
                               [out]))
    return out


def _rows(graph: gs.Graph, t: gs.Variable, stride: int, name: str) -> gs.Variable:
    """Rows 0, stride, 2 * stride, ... of ``t`` on ROW_AXIS (a strided Slice)."""
    out = gs.Variable(f"{name}__ecc_rows", dtype=t.dtype)
    consts = [gs.Constant(f"{name}__ecc_rows_{k}", np.array([v], np.int64))
              for k, v in (("starts", 0), ("ends", np.iinfo(np.int64).max), ("axes", ROW_AXIS), ("steps", stride))]
    graph.nodes.append(gs.Node("Slice", f"{name}__ecc_rows", {}, [t] + consts, [out]))
    return out


def _channels_last(graph: gs.Graph, t: gs.Variable) -> gs.Variable:
    """``t`` [N, C, H, W] as [N, H, W, C]: onnxruntime, which runs the int8 convs channels last, then
    cancels this Transpose against its own one back to NCHW, so the check reads its layout as it is
    (the check compares rows of bytes: any layout shared by both sides will do)."""
    out = gs.Variable(f"{t.name}__ecc_nhwc", dtype=t.dtype)
    graph.nodes.append(gs.Node("Transpose", f"{t.name}__ecc_nhwc", {"perm": [0, 2, 3, 1]}, [t], [out]))
    return out


def _filter_sums(node: gs.Node) -> tuple[gs.Constant, gs.Constant | None, int, list[int]]:
    """(int8 weight, int32 bias or None, the weight's output-channel axis, per output channel the
    int64 sum of its weights and bias) of a QDQ layer."""
    w = node.inputs[1].inputs[0].inputs[0]
    wv = np.asarray(constant_value(w), np.int64)
    if node.op == "Conv" or (node.op == "Gemm" and node.attrs.get("transB", 0)):
        axis, sums = 0, wv.reshape(wv.shape[0], -1).sum(axis=1)
    else:  # [K, M]
        axis, sums = 1, wv.sum(axis=0)
    bias = None
    if len(node.inputs) > 2 and node.inputs[2].name and _quantised(node.inputs[2]):
        bias = node.inputs[2].inputs[0].inputs[0]
        sums = sums + np.asarray(constant_value(bias), np.int64).ravel()
    return w, bias, axis, [int(v) for v in sums]


def add_int_sample_check(graph: gs.Graph, node: gs.Node, options, model_id: str, flag):
    """The strided copy of one QDQ layer and its IntSampleCheck; returns (the placed check, its flag)."""
    name = node.name
    q = node.outputs[0].outputs[0]
    yq = q.outputs[0]
    xq = node.inputs[0].inputs[0].inputs[0]
    conv = node.op == "Conv"
    attrs = dict(node.attrs)
    if conv:
        s = sample_strides(node, int(options.sample_stride))
        strides = [int(v) for v in attrs.get("strides", [1, 1])]
        attrs["strides"] = [s[0] * strides[0], s[1] * strides[1]]
        copy_x = _dequantised_copy(graph, node.inputs[0], xq, f"{name}__ecc_copy_x")
    else:
        s = (max(1, int(options.sample_stride)),)
        copy_x = _dequantised_copy(graph, node.inputs[0], _rows(graph, xq, s[0], f"{name}__ecc_copy_x"),
                                   f"{name}__ecc_copy_x")
    inputs = [copy_x] + [_dequantised_copy(graph, t, t.inputs[0].inputs[0], f"{name}__ecc_copy_{k}")
                         for k, t in enumerate(node.inputs[1:], 1) if t.name]
    copy = gs.Variable(f"{name}__ecc_copy", dtype=np.float32)
    graph.nodes.append(gs.Node(node.op, f"{name}__ecc_copy", attrs, inputs, [copy]))
    copy_q = gs.Variable(f"{name}__ecc_copy_q", dtype=yq.dtype)
    graph.nodes.append(gs.Node("QuantizeLinear", f"{name}__ecc_copy_q", dict(q.attrs), [copy] + list(q.inputs[1:]),
                               [copy_q]))
    if conv:  # the original's output at the copy's positions; both compared channels last (below)
        sampled = gs.Variable(f"{name}__ecc_sampled", dtype=yq.dtype)
        graph.nodes.append(gs.Node("MaxPool", f"{name}__ecc_sample_pool", {"kernel_shape": [1, 1], "strides": list(s)},
                                   [yq], [sampled]))
        sampled, copy_q = (_channels_last(graph, t) for t in (sampled, copy_q))
    else:  # the whole output, of whose rows the check compares every s-th
        sampled = yq
    if is_product(node):  # no stored weights: its second input is checked where it is computed
        shape = node.outputs[0].shape
        channels = shape[-1] if shape and isinstance(shape[-1], int) and shape[-1] > 0 else 1
        w = bias = None
        weights = dict(data_channels=int(channels))
    else:
        w, bias, axis, sums = _filter_sums(node)
        weights = dict(data_channels=len(sums), weight_axis=axis, filter_sums=sums)
    raised = gs.Variable(f"{name}__ecc_sample_raised", dtype=np.bool_, shape=[1])
    emit_node(graph, ops.INT_SAMPLE_CHECK,
              [sampled, copy_q] + [t if t is not None else gs.Variable.empty() for t in (w, bias, flag)],
              [raised], f"{name}__ecc_sample_check",
              dict(weights, row_stride=1 if conv else s[0], fail_stop=int(options.fail_stop and options.mode == "detect"),
                   layer=name, model_id=model_id))
    return PlacedIntSampleCheck(name, f"{name}__ecc_sample_check", tuple(int(v) for v in s)), raised


def add_int_sample_checks(model: onnx.ModelProto, layers: list[str], options, model_id: str, flag_name: str | None):
    """Give each named QDQ layer its sampled copy and exact check; returns the model, the checks and
    the last flag."""
    from onnx_ecc.transform.strategies import with_checks

    if not layers:
        return model, [], flag_name
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
    flag = graph.tensors()[flag_name] if flag_name else None
    uint8_activations(graph)
    wanted, checks = set(layers), []
    for node in list(graph.nodes):
        if node.name in wanted:
            placed, flag = add_int_sample_check(graph, node, options, model_id, flag)
            checks.append(placed)
    return with_checks(model, graph, checks, flag)
