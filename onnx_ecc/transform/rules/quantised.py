"""Rule for the int8 layers of QDQ models (onnxruntime.quantization.quantize_static): a Conv, Gemm
or MatMul whose weight is DequantizeLinear(int8 constant), whose input is DequantizeLinear(a
quantised tensor) and whose output goes through one QuantizeLinear.

The layer becomes one integer product with parity columns and an exact check: Conv as
Transpose to channels last -> Im2ColNhwc -> MatMulInteger(columns, W_aug) -> IntDecode -> Transpose
back; Gemm / MatMul as MatMulInteger(x, W_aug) -> IntDecode. W_aug [K, M + P] holds the int8
weights and, per block of output channels and check, the balanced base-256 digits of the integer
parity weights (codes.integer); IntDecode checks the int32 accumulators in int64 (zero threshold:
no false alarm), corrects one wrong accumulator per block and output vector, adds the int32 bias
(checked by its own parity) and requantises bit for bit as onnxruntime's fused QLinearConv / QGemm.
Outputs are uint8: an int8 output (int8 activations) is shifted by 128 and its DequantizeLinear
consumers get the shifted zero point (exact). The MatMulInteger keeps the layer's name.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnx_ecc import ops
from onnx_ecc.codes import integer
from onnx_ecc.transform.common import Protected, Skip, constant_value, emit_node

KIND = "int-code"


def _producer(t, op: str):
    if isinstance(t, gs.Variable) and len(t.inputs) == 1 and t.inputs[0].op == op:
        return t.inputs[0]
    return None


def _qparams(node: gs.Node, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero point) constants of a QuantizeLinear / DequantizeLinear."""
    scale = constant_value(node.inputs[1])
    zp = constant_value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else np.array(0, np.uint8)
    if scale is None or zp is None:
        raise Skip(f"{what}: scale and zero point must be constants")
    return np.asarray(scale, np.float32), np.asarray(zp)


def _activation(t, what: str) -> tuple[gs.Variable, float, int, np.dtype]:
    """(quantised tensor, scale, zero point, its type) of an activation quantised per tensor."""
    dq = _producer(t, "DequantizeLinear")
    if dq is None:
        raise Skip(f"{what} does not come from a DequantizeLinear")
    scale, zp = _qparams(dq, what)
    if scale.size != 1 or zp.size != 1 or zp.dtype not in (np.uint8, np.int8):
        raise Skip(f"{what} must be quantised per tensor to uint8 or int8")
    return dq.inputs[0], float(scale.ravel()[0]), int(zp.ravel()[0]), zp.dtype


def _u8(zp: int, dtype) -> int:
    """A zero point in uint8 values (int8 activations run as uint8: + 128, exact)."""
    return zp + 128 if dtype == np.int8 else zp


def _const(name: str, value) -> gs.Constant:
    return gs.Constant(name, np.asarray(value))


def protect_quantised(graph: gs.Graph, node: gs.Node, options, model_id: str) -> Protected:
    """Protect one QDQ Conv / Gemm / MatMul layer (see the module docstring)."""
    if options.strategy != "inline":
        raise Skip("int8 layers are decoded inline only (--strategy inline)")
    wdq = _producer(node.inputs[1], "DequantizeLinear")
    wq = constant_value(wdq.inputs[0]) if wdq is not None else None
    if wq is None or wq.dtype != np.int8:
        raise Skip("quantised weight is not an int8 constant")
    sw, wz = _qparams(wdq, "weight")
    if np.asarray(wz).any():
        raise Skip("weight zero point is not 0 (only symmetric int8 weights)")
    xq, sx, zx, xtype = _activation(node.inputs[0], "input")
    out = node.outputs[0]
    if out in graph.outputs or len(out.outputs) != 1 or out.outputs[0].op != "QuantizeLinear":
        raise Skip("output does not go through one QuantizeLinear")
    q = out.outputs[0]
    sy, zy = _qparams(q, "output")
    if sy.size != 1 or zy.size != 1 or zy.dtype not in (np.uint8, np.int8):
        raise Skip("output must be quantised per tensor to uint8 or int8")
    yq = q.outputs[0]
    if zy.dtype == np.int8 and (yq in graph.outputs or any(c.op != "DequantizeLinear" or constant_value(c.inputs[2]) is None
                                                            for c in yq.outputs)):
        raise Skip("int8 output read by other ops than DequantizeLinear")
    attrs = node.attrs
    conv = node.op == "Conv"
    if conv:
        if int(attrs.get("group", 1)) != 1:
            raise Skip("grouped / depthwise int8 convs are not protected yet")
        if wq.ndim != 4:
            raise Skip("only 2-D convolutions")
        m, c, kh, kw = wq.shape
        w2d = wq.transpose(0, 2, 3, 1).reshape(m, -1)       # taps (i, j, c): Im2ColNhwc's order
    elif node.op == "Gemm":
        if attrs.get("transA", 0) or float(attrs.get("alpha", 1.0)) != 1.0 or float(attrs.get("beta", 1.0)) != 1.0:
            raise Skip("Gemm with transA, alpha or beta")
        w2d = wq if attrs.get("transB", 0) else wq.T
    else:
        if wq.ndim != 2:
            raise Skip("constant weight is not 2-D")
        w2d = wq.T
    m, k = w2d.shape
    swv = np.broadcast_to(np.asarray(sw, np.float32).ravel(), (m,)) if sw.size in (1, m) else None
    if swv is None:
        raise Skip("weight scale is neither per tensor nor per output channel")
    bias = np.zeros(m, np.int64)
    has_bias = len(node.inputs) > 2 and node.inputs[2].name
    if has_bias:
        bdq = _producer(node.inputs[2], "DequantizeLinear")
        bq = constant_value(bdq.inputs[0]) if bdq is not None else None
        if bq is None or bq.dtype != np.int32 or bq.size != m:
            raise Skip("bias is not DequantizeLinear of an int32 constant")
        sb, _ = _qparams(bdq, "bias")
        if not np.allclose(np.broadcast_to(sb.ravel(), (m,)), np.float32(sx) * swv, rtol=1e-6, atol=0):
            raise Skip("bias scale is not input scale x weight scale")
        bias = bq.astype(np.int64).ravel()
    block, parity = min(options.block, m), options.parity
    if parity > 4:
        raise Skip("int8 layers take at most 4 checks per block")
    digits, planes, g = integer.parity_rows(w2d, block, parity)
    w_aug = np.ascontiguousarray(np.concatenate([w2d, digits]).T.astype(np.int8))   # [K, M + P]
    p = digits.shape[0]
    scale = (np.float32(sx) * swv / np.float32(sy[()] if sy.ndim == 0 else sy.ravel()[0])).astype(np.float32)
    zx_u8, zy_u8 = _u8(zx, xtype), _u8(int(zy.ravel()[0]), zy.dtype)
    name = node.name
    if conv:
        nhwc = gs.Variable(f"{name}__ecc_x_nhwc", dtype=xq.dtype)
        graph.nodes.append(gs.Node("Transpose", f"{name}__ecc_to_nhwc", {"perm": [0, 2, 3, 1]}, [xq], [nhwc]))
        cols = gs.Variable(f"{name}__ecc_im2col", dtype=np.uint8)
        emit_node(graph, ops.IM2COL_NHWC, [nhwc], [cols], f"{name}__ecc_im2col",
                  dict(kernel_shape=[int(kh), int(kw)], strides=list(attrs.get("strides", [1, 1])),
                       pads=list(attrs.get("pads", [0, 0, 0, 0])), dilations=list(attrs.get("dilations", [1, 1])),
                       pad_value=zx_u8))
        a, a_zp = cols, _const(f"{name}__ecc_x_zp", np.uint8(zx_u8))
    else:
        a, a_zp = xq, _const(f"{name}__ecc_x_zp", np.array(zx, xtype))
    acc = gs.Variable(f"{name}__ecc_acc", dtype=np.int32)
    graph.nodes.append(gs.Node("MatMulInteger", name, {}, [a, _const(f"{name}__ecc_w_aug", w_aug), a_zp], [acc]))
    decoded = gs.Variable(f"{name}__ecc_nhwc", dtype=np.uint8) if conv else None
    target = yq
    if zy.dtype == np.int8:  # the uint8 output replaces yq; its DequantizeLinear consumers take the shifted zero point
        target = gs.Variable(f"{yq.name}__ecc_u8", dtype=np.uint8)
        for i, consumer in enumerate(list(yq.outputs)):
            consumer.inputs[0] = target
            zp = constant_value(consumer.inputs[2])
            consumer.inputs[2] = _const(f"{yq.name}__ecc_zp_u8_{i}", (zp.astype(np.int16) + 128).astype(np.uint8))
    q.outputs.clear()
    node.outputs.clear()
    emit_node(graph, ops.INT_DECODE, [acc], [decoded if conv else target], f"{name}__ecc_decode",
              dict(axis=-1, data_channels=int(m), block=int(block), parity=int(parity),
                   generator=[int(v) for v in g.ravel()], planes=[int(v) for v in planes],
                   bias=[int(v) for v in bias], bias_parity=integer.bias_parity(bias, block, parity),
                   scale=[float(v) for v in scale], zero_point=int(zy_u8), mode=options.mode,
                   fail_stop=int(options.fail_stop), layer=name, model_id=model_id))
    if conv:
        graph.nodes.append(gs.Node("Transpose", f"{name}__ecc_to_nchw", {"perm": [0, 3, 1, 2]}, [decoded], [target]))
    checks = parity * ((m + block - 1) // block)
    return Protected(name, node.op, KIND, int(m), int(p), int(block), int(parity), 1,
                     params=int(wq.size + (m if has_bias else 0)), extra_params=int(p * k + (checks if has_bias else 0)),
                     macs_per_vector=int(m * k), extra_macs_per_vector=float(p * k + parity * m), dtype="int8")
