"""Rule for the integer layers whose output is the int32 accumulators: MatMulInteger and ConvInteger,
as onnxruntime.quantization.quantize_dynamic makes them (DynamicQuantizeLinear feeds them, a
Cast and Mul scale their int32 output afterwards).

The layer keeps its name, with parity channels appended to its constant weight: MatMulInteger(a,
B_aug [K, N + P], a_zp, b_zp') -> Int32Decode (channels last). A 2-D ConvInteger of a uint8 input runs
channels last as the QDQ rule's convs: Transpose -> Im2ColNhwc (padding with the run-time input zero
point, its PadValue input) -> MatMulInteger(columns, W_aug [K, M + P], x_zp, w_zp') -> Int32Decode ->
Transpose back to NCHW int32, which costs less than onnxruntime's own ConvInteger (0.1-0.8x of it on
the CNNs' convs, benchmarks/conv_integer_layout.py); other ConvIntegers keep their op, ConvInteger(x,
W_aug [M + P, C, kh, kw], x_zp, w_zp') -> Int32Decode on axis 1 (NCHW, 1.1-2x the original). The extra
columns / filters hold the balanced base-256 digits of the integer parity weights sum_i g_ri (W_i - z_i)
(codes.integer) of the zero-point-corrected weights, so the op itself computes, with the same input
and input zero point (a run-time tensor of DynamicQuantizeLinear is fine: the checks are linear in
the input), sum_k (a_k - a_zp) (digit_k) exactly; Int32Decode checks the accumulators in int64 (zero
threshold: no false alarm), corrects one wrong accumulator per block and output vector, and passes
the data channels on as int32: bit for bit the original's output on a fault-free run.

Zero points as the ONNX spec defines them: the weight's zero point is a constant, per tensor or per
output column / channel. A per-tensor zero point z serves the digit columns too: their digits are
taken in [min - z, max - z] of the weight's type (any 256 consecutive integers around 0 are digits
of base 256) and stored plus z. Per-column zero points (or z at the type's limit) give the digits a
zero point of their own (0 for int8 weights, 128 for uint8) in a per-column zero-point vector, which
MatMulInteger takes (so do channels-last convs; onnxruntime's ConvInteger takes per-tensor zero points
only: such an NCHW ConvInteger is skipped). Not covered: grouped ConvIntegers, weights or weight zero points that are not constants.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnx_ecc import ops
from onnx_ecc.codes import integer
from onnx_ecc.transform.common import Protected, Skip, constant_value, emit_node

KIND = "int-code"
OPS = ("MatMulInteger", "ConvInteger")
_DIGIT_ZERO = {np.dtype(np.int8): 0, np.dtype(np.uint8): 128}  # the digit columns' zero point per weight type


def _input(node: gs.Node, i: int):
    """Input ``i`` of ``node``, or None where it is absent (optional, empty name)."""
    return node.inputs[i] if len(node.inputs) > i and node.inputs[i].name else None


def _weight(node: gs.Node) -> tuple[np.ndarray, np.ndarray]:
    """(int8 / uint8 weight constant, its zero point per output channel as int64)."""
    w = constant_value(node.inputs[1])
    if w is None or w.dtype not in _DIGIT_ZERO:
        raise Skip("weight is not an int8 or uint8 constant")
    zp_t = _input(node, 3)
    zp = np.zeros(1, np.int64) if zp_t is None else constant_value(zp_t)
    if zp is None:
        raise Skip("weight zero point is not a constant")
    if zp_t is not None and zp.dtype != w.dtype:
        raise Skip("weight zero point's type differs from the weight's")
    m = w.shape[0] if node.op == "ConvInteger" else w.shape[-1]
    zp = np.asarray(zp, np.int64).ravel()
    if zp.size not in (1, m):
        raise Skip("weight zero point is neither per tensor nor per output channel")
    return w, np.broadcast_to(zp, (m,)).copy()


def _digits(w2d: np.ndarray, block: int, parity: int, dtype: np.dtype, zp: np.ndarray, per_tensor: bool):
    """(digit rows as stored in the weight's type, planes, generator, and the zero-point vector over data +
    digit channels, or None where the layer's own zero point z serves them: digits in [min - z, max - z],
    stored plus z)."""
    info = np.iinfo(dtype)
    if per_tensor and info.min - zp[0] < 0 < info.max - zp[0]:
        digits, planes, g = integer.parity_rows(w2d, block, parity, low=int(info.min - zp[0]))
        return (digits.astype(np.int64) + zp[0]).astype(dtype), planes, g, None
    zd = _DIGIT_ZERO[np.dtype(dtype)]
    digits, planes, g = integer.parity_rows(w2d, block, parity)
    stored = (digits.astype(np.int64) + zd).astype(dtype)
    return stored, planes, g, np.concatenate([zp, np.full(len(digits), zd)]).astype(dtype)


def _channels_last_fits(node: gs.Node, w: np.ndarray) -> bool:
    """Whether a ConvInteger runs channels last (Im2ColNhwc + MatMulInteger, several times cheaper than
    onnxruntime's ConvInteger: benchmarks/conv_integer_layout.py): a 2-D conv of a uint8 input with explicit pads."""
    x = node.inputs[0]
    from_dynamic = len(x.inputs) == 1 and x.inputs[0].op == "DynamicQuantizeLinear"
    return (w.ndim == 4 and (x.dtype == np.uint8 or from_dynamic)
            and node.attrs.get("auto_pad", "NOTSET") in ("NOTSET", b"NOTSET")
            and len(node.attrs.get("pads", [0] * 4)) == 4)


def protect_integer(graph: gs.Graph, node: gs.Node, options, model_id: str) -> Protected:
    """Protect one MatMulInteger / ConvInteger layer with a constant weight (see the module docstring)."""
    if options.strategy != "inline":
        raise Skip("int8 layers are decoded inline only (--strategy inline)")
    w, zp = _weight(node)
    conv = node.op == "ConvInteger"
    if conv:
        if int(node.attrs.get("group", 1)) != 1:
            raise Skip("grouped / depthwise ConvIntegers are not protected yet")
        if w.ndim < 3:
            raise Skip("ConvInteger weight must be [M, C, k...]")
        w2d = w.reshape(w.shape[0], -1).astype(np.int64) - zp[:, None]          # [M, C*kh*kw]
    else:
        if w.ndim != 2:
            raise Skip("constant weight is not 2-D")
        w2d = (w.astype(np.int64) - zp[None, :]).T                               # [N, K]
    m, k = w2d.shape
    block, parity = min(options.block, m), options.parity
    if parity > 4:
        raise Skip("int8 layers take at most 4 checks per block")
    zp_t = _input(node, 3)
    stored, planes, g, zp_vector = _digits(w2d, block, parity, w.dtype, zp, zp_t is None or constant_value(zp_t).size == 1)
    p = stored.shape[0]
    name = node.name
    a_zp = _input(node, 2)
    x = node.inputs[0]
    channels_last = conv and _channels_last_fits(node, w)
    out = node.outputs[0]
    acc = gs.Variable(f"{name}__ecc_acc", dtype=np.int32)
    if conv and not channels_last:
        w_aug = np.concatenate([w, stored.reshape((p,) + w.shape[1:])])          # [M + P, C, kh, kw]
        if zp_vector is not None:
            raise Skip("ConvInteger (per-tensor weight zero point only, in onnxruntime) with a weight zero point "
                       "the digit filters cannot share (per channel, or the type's limit)")
    elif conv:  # taps (i, j, c) as Im2ColNhwc writes them: [K, M + P]
        w_aug = np.concatenate([w, stored.reshape((p,) + w.shape[1:])]).transpose(0, 2, 3, 1).reshape(m + p, -1).T
        nhwc = gs.Variable(f"{name}__ecc_x_nhwc", dtype=np.uint8)
        graph.nodes.append(gs.Node("Transpose", f"{name}__ecc_to_nhwc", {"perm": [0, 2, 3, 1]}, [x], [nhwc]))
        x = gs.Variable(f"{name}__ecc_im2col", dtype=np.uint8)
        attrs = node.attrs
        emit_node(graph, ops.IM2COL_NHWC, [nhwc] + ([a_zp] if a_zp is not None else []), [x], f"{name}__ecc_im2col",
                  dict(kernel_shape=[int(v) for v in w.shape[2:]], strides=list(attrs.get("strides", [1, 1])),
                       pads=list(attrs.get("pads", [0, 0, 0, 0])), dilations=list(attrs.get("dilations", [1, 1]))))
    else:
        w_aug = np.concatenate([w, stored.T], axis=1)                              # [K, N + P]
    inputs = [x, gs.Constant(f"{name}__ecc_w_aug", np.ascontiguousarray(w_aug))]
    if zp_vector is not None:
        inputs += [a_zp if a_zp is not None else gs.Variable.empty(), gs.Constant(f"{name}__ecc_w_zp", zp_vector)]
    elif a_zp is not None or zp_t is not None:  # the digits share the layer's own zero point
        inputs.append(a_zp if a_zp is not None else gs.Variable.empty())
        if zp_t is not None:
            inputs.append(zp_t)
    op, op_attrs = ("MatMulInteger", {}) if channels_last else (node.op, dict(node.attrs))
    node.outputs.clear()
    node.inputs.clear()
    graph.nodes.append(gs.Node(op, name, op_attrs, inputs, [acc]))
    decoded = gs.Variable(f"{name}__ecc_nhwc", dtype=np.int32) if channels_last else out
    emit_node(graph, ops.INT32_DECODE, [acc], [decoded], f"{name}__ecc_decode",
              dict(axis=1 if conv and not channels_last else -1, data_channels=int(m), block=int(block),
                   parity=int(parity), generator=[int(v) for v in g.ravel()], planes=[int(v) for v in planes],
                   mode=options.mode, fail_stop=int(options.fail_stop), layer=name, model_id=model_id))
    if channels_last:
        graph.nodes.append(gs.Node("Transpose", f"{name}__ecc_to_nchw", {"perm": [0, 3, 1, 2]}, [decoded], [out]))
    return Protected(name, node.op, KIND, int(m), int(p), int(block), int(parity), 1, params=int(w.size),
                     extra_params=int(p * k), macs_per_vector=int(m * k), extra_macs_per_vector=float(p * k + parity * m),
                     dtype="int8")
