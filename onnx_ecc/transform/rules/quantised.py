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

A grouped conv (more than one input and output channel per group) is coded group by group: a Slice of
the group's input channels -> Im2ColNhwc -> MatMulInteger -> IntDecode each, joined by a Concat (channels
last). Depthwise convs have no dense product to code and are left alone (the rerun strategy checks them:
strategies/int_recompute.py).

Convs keep activations channels last from one to the next: a conv whose input is the NCHW
Transpose of a channels-last tensor (the output of a rewritten conv) reads that tensor directly,
and a MaxPool on a rewritten conv's output (DequantizeLinear -> MaxPool -> QuantizeLinear with the
same scale and zero point, which onnxruntime runs on the quantised values) runs channels last as
onnxruntime's `com.microsoft:NhwcMaxPool` before the Transpose back, so the Transpose to NCHW moves
past it and one Transpose is left where a consumer that is not a rewritten conv (Flatten, a graph
output, anything else) reads the tensor (max commutes with the monotone dequantisation: exact). Where
NhwcMaxPool is not available or the pool does not fit, the layer keeps its own Transposes.
"""

from __future__ import annotations

import functools

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


# ops that move or select quantised values without arithmetic: on x + 128 they give their output + 128
# (MaxPool: the shift is monotone), so an int8 tensor may reach its DequantizeLinear through them
_VALUE_PRESERVING = ("Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "MaxPool")
# com.microsoft ops of one quantised input (x, x_scale, x_zp, y_scale, y_zp) that compute on x - x_zp and add y_zp
# before saturating: shifting both zero points by 128 shifts their output by 128 (operator-format models)
_SHIFTABLE = ("QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearLeakyRelu", "QLinearSigmoid")


def dequantised_through(graph: gs.Graph, t: gs.Variable):
    """(the (node, input index) of each int8 zero point that reads ``t``: DequantizeLinear nodes, directly or
    through value-preserving and shiftable ops, and the tensors on the way), or None where anything else (or a
    graph output) reads one of them."""
    if t in graph.outputs or not t.outputs:
        return None
    zero_points, tensors = [], [t]
    for c in t.outputs:
        if c.op == "DequantizeLinear" and c.inputs[0] is t and int8_zero_point_at(c, 2) is not None:
            zero_points.append((c, 2))
            continue
        shiftable = (c.op in _SHIFTABLE and c.domain == "com.microsoft" and len(c.inputs) == 5
                     and all(int8_zero_point_at(c, i) is not None for i in (2, 4)))
        if c.inputs[0] is not t or len(c.outputs) != 1 or not (c.op in _VALUE_PRESERVING or shiftable):
            return None
        below = dequantised_through(graph, c.outputs[0])
        if below is None:
            return None
        zero_points += ([(c, 2), (c, 4)] if shiftable else []) + below[0]
        tensors += below[1]
    return zero_points, tensors


def int8_zero_point_at(node: gs.Node, i: int):
    """The per-tensor int8 zero point at input ``i`` of a node, or None."""
    zp = constant_value(node.inputs[i]) if len(node.inputs) > i and node.inputs[i].name else None
    return zp if zp is not None and zp.dtype == np.int8 and zp.size == 1 else None


def _u8_target(graph: gs.Graph, t: gs.Variable) -> gs.Variable | None:
    """A uint8 tensor to replace the int8 tensor ``t`` (values + 128): the int8 zero points that read it
    (dequantised_through) are shifted, the tensors on the way made uint8; None where ``t`` is a graph output
    or read by anything else."""
    found = dequantised_through(graph, t)
    if found is None:
        return None
    zero_points, tensors = found
    target = gs.Variable(f"{t.name}__ecc_u8", dtype=np.uint8)
    for consumer in list(t.outputs):
        consumer.inputs[0] = target
    for i, (node, k) in enumerate(zero_points):
        zp = int8_zero_point_at(node, k)
        node.inputs[k] = _const(f"{t.name}__ecc_zp_u8_{i}", (zp.astype(np.int16) + 128).astype(np.uint8))
    for x in tensors[1:]:
        x.dtype = np.uint8
    return target


def _channels_last_source(t) -> gs.Variable | None:
    """The channels-last tensor whose NCHW Transpose ``t`` is (a rewritten conv's output), or None."""
    tr = _producer(t, "Transpose")
    if tr is not None and [int(v) for v in tr.attrs.get("perm", [])] == [0, 3, 1, 2]:
        return tr.inputs[0]
    return None


@functools.lru_cache(maxsize=None)
def nhwc_max_pool_available() -> bool:
    """Whether onnxruntime runs com.microsoft:NhwcMaxPool on uint8 (its contrib op of QDQ models)."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper

        node = helper.make_node("NhwcMaxPool", ["x"], ["y"], domain="com.microsoft", kernel_shape=[2, 2], strides=[2, 2])
        g = helper.make_graph([node], "probe", [helper.make_tensor_value_info("x", TensorProto.UINT8, None)],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, None)])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        x = np.arange(16, dtype=np.uint8).reshape(1, 2, 2, 4)
        return bool(np.array_equal(sess.run(None, {"x": x})[0], x.max(axis=(1, 2), keepdims=True)))
    except Exception:  # onnxruntime without the contrib op: per-layer Transposes
        return False


_POOL_ATTRS = ("auto_pad", "kernel_shape", "strides", "pads", "dilations", "ceil_mode")


def _pool_channels_last(graph: gs.Graph, nhwc: gs.Variable, nchw: gs.Variable) -> None:
    """Move each MaxPool that reads ``nchw`` (= Transpose of the uint8 channels-last ``nhwc``) through
    DequantizeLinear -> MaxPool -> QuantizeLinear with equal parameters into the channels-last domain:
    NhwcMaxPool(nhwc) -> Transpose back, which produces the pool's quantised output (exact)."""
    while nhwc_max_pool_available():
        if nchw in graph.outputs or len(nchw.outputs) != 1 or nchw.outputs[0].op != "DequantizeLinear":
            return
        dq = nchw.outputs[0]
        x = dq.outputs[0]
        if x in graph.outputs or len(x.outputs) != 1 or x.outputs[0].op != "MaxPool":
            return
        pool = x.outputs[0]
        pooled_f = pool.outputs[0]
        if (len(pool.outputs) != 1 or pooled_f in graph.outputs or len(pooled_f.outputs) != 1
                or pooled_f.outputs[0].op != "QuantizeLinear" or int(pool.attrs.get("storage_order", 0))
                or len(pool.attrs.get("kernel_shape", [])) != 2):
            return
        q = pooled_f.outputs[0]
        try:
            s_in, z_in = _qparams(dq, "pool input")
            s_out, z_out = _qparams(q, "pool output")
        except Skip:
            return
        if (s_in.size != 1 or s_out.size != 1 or z_in.size != 1 or z_out.size != 1 or z_in.dtype != np.uint8
                or z_out.dtype not in (np.uint8, np.int8) or np.float32(s_in.ravel()[0]) != np.float32(s_out.ravel()[0])
                or int(z_in.ravel()[0]) != _u8(int(z_out.ravel()[0]), z_out.dtype)):
            return
        out = q.outputs[0]
        target = out if z_out.dtype == np.uint8 else _u8_target(graph, out)
        if target is None:
            return
        attrs = {k: pool.attrs[k] for k in _POOL_ATTRS if k in pool.attrs}
        if attrs.get("auto_pad") in ("NOTSET", b"NOTSET"):
            del attrs["auto_pad"]
        pooled = gs.Variable(f"{pool.name}__ecc_nhwc", dtype=np.uint8)
        graph.nodes.append(gs.Node("NhwcMaxPool", f"{pool.name}__ecc_nhwc", attrs, [nhwc], [pooled], domain="com.microsoft"))
        q.outputs.clear()
        graph.nodes.append(gs.Node("Transpose", f"{pool.name}__ecc_to_nchw", {"perm": [0, 3, 1, 2]}, [pooled], [target]))
        _import_domain(graph, "com.microsoft", 1)
        nhwc, nchw = pooled, target


def _import_domain(graph: gs.Graph, domain: str, version: int) -> None:
    import onnx

    if graph.import_domains is None:
        graph.import_domains = [onnx.helper.make_opsetid("", graph.opset)]
    if not any(d.domain == domain for d in graph.import_domains):
        graph.import_domains.append(onnx.helper.make_opsetid(domain, version))


def protect_quantised(graph: gs.Graph, node: gs.Node, options, model_id: str) -> Protected:
    """Protect one QDQ Conv / Gemm / MatMul layer (see the module docstring)."""
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
    if zy.dtype == np.int8 and dequantised_through(graph, yq) is None:
        raise Skip("int8 output read by other ops than DequantizeLinear (directly or through value-preserving ops)")
    attrs = node.attrs
    conv = node.op == "Conv"
    if conv:
        groups = int(attrs.get("group", 1))
        if groups > 1 and (wq.shape[1] == 1 or wq.shape[0] // groups == 1):  # no dense product to code per group
            raise Skip("depthwise int8 conv: checked under --strategy rerun only (strategies/int_recompute.py)")
        if wq.ndim != 4:
            raise Skip("only 2-D convolutions")
        if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
            raise Skip("auto_pad: only explicit pads (Im2ColNhwc and the strided sample copies take pads)")
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
    groups = int(attrs.get("group", 1)) if conv else 1
    mg = m // groups  # output channels per group: a grouped conv is coded group by group
    block, parity = min(options.block, mg), options.parity
    if parity > 4:
        raise Skip("int8 layers take at most 4 checks per block")
    scale = (np.float32(sx) * swv / np.float32(sy[()] if sy.ndim == 0 else sy.ravel()[0])).astype(np.float32)
    zx_u8, zy_u8 = _u8(zx, xtype), _u8(int(zy.ravel()[0]), zy.dtype)
    name = node.name
    if conv:
        nhwc = _channels_last_source(xq)  # the previous conv's channels-last output: no Transpose pair
        if nhwc is None:
            nhwc = gs.Variable(f"{name}__ecc_x_nhwc", dtype=xq.dtype)
            graph.nodes.append(gs.Node("Transpose", f"{name}__ecc_to_nhwc", {"perm": [0, 2, 3, 1]}, [xq], [nhwc]))
    target = yq
    if zy.dtype == np.int8:  # the uint8 output replaces yq; its DequantizeLinear consumers take the shifted zero point
        target = _u8_target(graph, yq)
    q.outputs.clear()
    node.outputs.clear()
    decoded = gs.Variable(f"{name}__ecc_nhwc", dtype=np.uint8) if conv else None
    parts, p = [], 0
    for gi in range(groups):
        tag, rows = ("" if groups == 1 else f"__ecc_group{gi}"), slice(gi * mg, (gi + 1) * mg)
        digits, planes, g = integer.parity_rows(w2d[rows], block, parity)
        w_aug = np.ascontiguousarray(np.concatenate([w2d[rows], digits]).T.astype(np.int8))   # [K, M + P]
        p += digits.shape[0]
        if conv:
            x_g = nhwc
            if groups > 1:  # this group's input channels (channels last)
                cg = wq.shape[1]
                x_g = gs.Variable(f"{name}{tag}__ecc_x", dtype=nhwc.dtype)
                graph.nodes.append(gs.Node("Slice", f"{name}{tag}__ecc_x", {}, [nhwc] + [
                    _const(f"{name}{tag}__ecc_x_{k}", np.array([v], np.int64))
                    for k, v in (("starts", gi * cg), ("ends", (gi + 1) * cg), ("axes", 3))], [x_g]))
            cols = gs.Variable(f"{name}{tag}__ecc_im2col", dtype=np.uint8)
            emit_node(graph, ops.IM2COL_NHWC, [x_g], [cols], f"{name}{tag}__ecc_im2col",
                      dict(kernel_shape=[int(kh), int(kw)], strides=list(attrs.get("strides", [1, 1])),
                           pads=list(attrs.get("pads", [0, 0, 0, 0])), dilations=list(attrs.get("dilations", [1, 1])),
                           pad_value=zx_u8))
            a, a_zp = cols, _const(f"{name}{tag}__ecc_x_zp", np.uint8(zx_u8))
        else:
            a, a_zp = xq, _const(f"{name}__ecc_x_zp", np.array(zx, xtype))
        acc = gs.Variable(f"{name}{tag}__ecc_acc", dtype=np.int32)
        graph.nodes.append(gs.Node("MatMulInteger", f"{name}{tag}" if gi else name, {},
                                   [a, _const(f"{name}{tag}__ecc_w_aug", w_aug), a_zp], [acc]))
        out = gs.Variable(f"{name}{tag}__ecc_nhwc", dtype=np.uint8) if groups > 1 else (decoded if conv else target)
        emit_node(graph, ops.INT_DECODE, [acc], [out], f"{name}{tag}__ecc_decode",
                  dict(axis=-1, data_channels=int(mg), block=int(block), parity=int(parity),
                       generator=[int(v) for v in g.ravel()], planes=[int(v) for v in planes],
                       bias=[int(v) for v in bias[rows]], bias_parity=integer.bias_parity(bias[rows], block, parity),
                       scale=[float(v) for v in scale[rows]], zero_point=int(zy_u8), mode=options.mode,
                       fail_stop=int(options.fail_stop), layer=name, model_id=model_id))
        parts.append(out)
    if groups > 1:  # the groups' outputs side by side, channels last
        graph.nodes.append(gs.Node("Concat", f"{name}__ecc_join", {"axis": -1}, parts, [decoded]))
    if conv:
        graph.nodes.append(gs.Node("Transpose", f"{name}__ecc_to_nchw", {"perm": [0, 3, 1, 2]}, [decoded], [target]))
        _pool_channels_last(graph, decoded, target)  # MaxPools after the conv run channels last
    checks = parity * groups * ((mg + block - 1) // block)
    return Protected(name, node.op, KIND, int(m), int(p), int(block), int(parity), int(groups),
                     params=int(wq.size + (m if has_bias else 0)), extra_params=int(p * k + (checks if has_bias else 0)),
                     macs_per_vector=int(m * k), extra_macs_per_vector=float(p * k + parity * m), dtype="int8")
