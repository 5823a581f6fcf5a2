"""Operator-format quantised layers (quantize_static with QuantFormat.QOperator: QLinearConv,
QLinearMatMul, com.microsoft:QGemm) expressed as their QDQ equivalents, so that the QDQ rule
(rules/quantised.py) protects them with the same code and exactness.

Each such node whose scales, zero points, weight and bias are constants becomes
DequantizeLinear(x) -> Conv / MatMul / Gemm(DequantizeLinear(int8 weight), DequantizeLinear(int32 bias,
scale x_scale * w_scale)) -> QuantizeLinear(y_scale, y_zero_point), the layer under the original
node's name; a MaxPool reading such a node's quantised output becomes DequantizeLinear -> MaxPool ->
QuantizeLinear with that output's parameters (exact: max commutes with the monotone dequantisation,
and quantising a dequantised value gives it back), so the convs stay channels last through it.
What the QDQ rule then leaves alone is put back as it was (``restore``), reading the tensor its QDQ
form read by then; an int8 input that the rule moved to uint8 (a protected neighbour's output) is
moved back to int8 first (exact), since onnxruntime's QLinear kernels take inputs and outputs of
one type.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnx_ecc.transform.common import Skip, constant_value

OPS = ("QLinearConv", "QLinearMatMul", "QGemm")
_LAYER = {"QLinearConv": "Conv", "QLinearMatMul": "MatMul", "QGemm": "Gemm"}
# input positions: x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, bias
_PORTS = {"QLinearConv": (0, 1, 2, 3, 4, 5, 6, 7, 8), "QLinearMatMul": (0, 1, 2, 3, 4, 5, 6, 7, None),
          "QGemm": (0, 1, 2, 3, 4, 5, 7, 8, 6)}


@dataclasses.dataclass
class QdqForm:
    """One operator-format node taken out of the graph and the QDQ nodes that replace it."""

    original: gs.Node
    inputs: list            # the original node's inputs
    dq_x: gs.Node
    layer: gs.Node
    q: gs.Node
    extra: list = dataclasses.field(default_factory=list)  # the weight's and bias's DequantizeLinear


def _port(node: gs.Node, i: int | None):
    return node.inputs[i] if i is not None and len(node.inputs) > i and node.inputs[i].name else None


def _const(node: gs.Node, i: int | None, what: str, required: bool = True) -> np.ndarray | None:
    t = _port(node, i)
    if t is None:
        if required:
            raise Skip(f"{node.op} without {what}")
        return None
    v = constant_value(t)
    if v is None:
        raise Skip(f"{node.op}: {what} must be a constant")
    return v


def _weight_axis(node: gs.Node) -> int:
    """The weight axis of the output channels (per-channel scales and zero points)."""
    if node.op == "QLinearConv":
        return 0
    if node.op == "QGemm":
        return 0 if int(node.attrs.get("transB", 0)) else 1
    return 1


def _to_qdq(node: gs.Node) -> QdqForm:
    """Replace ``node`` by its QDQ form in place (its tensors); Skip before any change when it cannot be."""
    if node.op not in OPS or (node.domain or "") != ("com.microsoft" if node.op == "QGemm" else ""):
        raise Skip(f"{node.op} in domain {node.domain!r}")
    x, xs, xz, w, ws, wz, ys, yz, b = _PORTS[node.op]
    if node.op == "QGemm":
        if _port(node, ys) is None:
            raise Skip("QGemm with a float output (no y_scale): not requantised")
        if int(node.attrs.get("transA", 0)) or float(node.attrs.get("alpha", 1.0)) != 1.0:
            raise Skip("QGemm with transA or alpha != 1")
    for i, what in ((xs, "input scale"), (ws, "weight scale"), (ys, "output scale")):
        _const(node, i, what)
    for i, what in ((xz, "input zero point"), (wz, "weight zero point"), (yz, "output zero point")):
        _const(node, i, what, required=False)
    if constant_value(node.inputs[w]) is None:
        raise Skip(f"{node.op} of two activations (its weight is not a constant)")
    weight = _const(node, w, "weight")
    bias = _const(node, b, "bias", required=False)
    name = node.name
    inputs = list(node.inputs)
    axis = _weight_axis(node)

    def dq(src, scale, zp, tag, attrs=None):
        out = gs.Variable(f"{name}__ecc_{tag}", dtype=np.float32)
        return gs.Node("DequantizeLinear", f"{name}__ecc_{tag}", attrs or {},
                       [src, scale] + ([zp] if zp is not None else []), [out])

    dq_x = dq(inputs[x], inputs[xs], _port(node, xz), "dq_x")
    w_scale = constant_value(inputs[ws])
    dq_w = dq(inputs[w], inputs[ws], _port(node, wz), "dq_w", {"axis": axis} if np.size(w_scale) > 1 else None)
    layer_inputs = [dq_x.outputs[0], dq_w.outputs[0]]
    extra = [dq_w]
    if bias is not None:
        b_scale = np.asarray(np.float32(constant_value(inputs[xs]).ravel()[0]) * np.asarray(w_scale, np.float32), np.float32)
        dq_b = dq(inputs[b], gs.Constant(f"{name}__ecc_b_scale", b_scale),
                  gs.Constant(f"{name}__ecc_b_zp", np.zeros(b_scale.shape, np.int32)), "dq_b",
                  {"axis": 0} if b_scale.size > 1 else None)
        layer_inputs.append(dq_b.outputs[0])
        extra.append(dq_b)
    attrs = {k: v for k, v in node.attrs.items() if k != "alpha"} if node.op == "QGemm" else dict(node.attrs)
    y_f = gs.Variable(f"{name}__ecc_y", dtype=np.float32)
    layer = gs.Node(_LAYER[node.op], name, attrs, layer_inputs, [y_f])
    y = node.outputs[0]
    node.inputs.clear()
    node.outputs.clear()
    q = gs.Node("QuantizeLinear", f"{name}__ecc_q", {}, [y_f, inputs[ys]] + ([inputs[yz]] if _port_in(inputs, yz) else []),
                [y])
    return QdqForm(node, inputs, dq_x, layer, q, extra)


def _port_in(inputs: list, i: int | None) -> bool:
    return i is not None and len(inputs) > i and bool(inputs[i].name)


def _pool_as_qdq(pool: gs.Node, scale, zp) -> list[gs.Node]:
    """DequantizeLinear -> ``pool`` -> QuantizeLinear around a MaxPool on quantised values (exact)."""
    x, y = pool.inputs[0], pool.outputs[0]
    xf = gs.Variable(f"{pool.name}__ecc_dq", dtype=np.float32)
    yf = gs.Variable(f"{pool.name}__ecc_pooled", dtype=np.float32)
    dq = gs.Node("DequantizeLinear", f"{pool.name}__ecc_dq", {}, [x, scale, zp], [xf])
    pool.inputs[0] = xf
    pool.outputs[0] = yf
    q = gs.Node("QuantizeLinear", f"{pool.name}__ecc_q", {}, [yf, scale, zp], [y])
    return [dq, pool, q]


def express_as_qdq(graph: gs.Graph) -> tuple[dict[str, QdqForm], list[dict]]:
    """Rewrite the graph's operator-format layers as QDQ (see the module docstring): (their forms by
    layer name, skipped-layer records of those that cannot be expressed, with the reason)."""
    forms: dict[str, QdqForm] = {}
    skipped: list[dict] = []
    nodes: list[gs.Node] = []
    outputs: dict[str, tuple] = {}  # quantised output tensor name -> (scale, zero point) tensors
    for i, node in enumerate(list(graph.nodes)):
        if node.op in OPS and (node.domain or "") in ("", "ai.onnx", "com.microsoft"):
            if not node.name:
                node.name = f"{node.op}_{i}"
            try:
                form = _to_qdq(node)
            except Skip as why:
                skipped.append({"name": node.name, "op": node.op, "reason": str(why)})
                nodes.append(node)
                continue
            forms[node.name] = form
            nodes += [form.dq_x, *form.extra, form.layer, form.q]
            ys, yz = _PORTS[node.op][6:8]
            if _port_in(form.inputs, yz):
                outputs[form.q.outputs[0].name] = (form.inputs[ys], form.inputs[yz])
            continue
        src = node.inputs[0] if node.op == "MaxPool" and node.inputs else None
        if (src is not None and src.name in outputs and len(node.outputs) == 1 and src not in graph.outputs
                and not int(node.attrs.get("storage_order", 0))):
            nodes += _pool_as_qdq(node, *outputs[src.name])
            continue
        nodes.append(node)
    graph.nodes = nodes
    return forms, skipped


def restore(graph: gs.Graph, forms: dict[str, QdqForm]) -> None:
    """Put back the original node of every QDQ form whose layer no rule rewrote (it still has its output)."""
    for form in forms.values():
        if not form.layer.outputs:
            continue
        x_now = list(form.dq_x.inputs)  # the input, its scale and zero point as the QDQ form reads them now
        y = form.q.outputs[0]
        form.q.outputs.clear()
        form.layer.outputs.clear()
        node = form.original
        if len(x_now) == 3 and _zero_point_type(x_now[2]) != _zero_point_type(form.inputs[2]):
            x_now = [_as_int8(graph, x_now[0], node.name)] + form.inputs[1:3]
        node.inputs.extend(x_now + form.inputs[len(x_now):])
        node.outputs.append(y)
        graph.nodes.append(node)


def _zero_point_type(t):
    v = constant_value(t) if t is not None and t.name else None
    return None if v is None else v.dtype


def _as_int8(graph: gs.Graph, x_u8: gs.Variable, name: str) -> gs.Variable:
    """The int8 values of a tensor the QDQ rule moved to uint8 (x + 128): DequantizeLinear(scale 1, zero point
    128) -> QuantizeLinear(scale 1, int8 zero point 0), exact."""
    one = gs.Constant(f"{name}__ecc_one", np.array(1.0, np.float32))
    f = gs.Variable(f"{name}__ecc_x_centred", dtype=np.float32)
    x = gs.Variable(f"{name}__ecc_x_s8", dtype=np.int8)
    graph.nodes.append(gs.Node("DequantizeLinear", f"{name}__ecc_from_u8", {},
                               [x_u8, one, gs.Constant(f"{name}__ecc_128", np.array(128, np.uint8))], [f]))
    graph.nodes.append(gs.Node("QuantizeLinear", f"{name}__ecc_to_s8", {},
                               [f, one, gs.Constant(f"{name}__ecc_0", np.array(0, np.int8))], [x]))
    return x


def layer_op(name: str, forms: dict[str, QdqForm], op: str) -> str:
    """The op a protected layer had in the user's model (its operator form where it had one)."""
    return forms[name].original.op if name in forms else op


def as_qdq_model(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, str]]:
    """``model`` with every operator-format layer that can be expressed as QDQ so expressed, nothing put back
    (onnxruntime fuses the QDQ form into the same kernel: the rerun strategy's fast path keeps it fused),
    and each such layer's op in the user's model by name; ``model`` itself where it has none."""
    graph = gs.import_onnx(model)
    forms, _ = express_as_qdq(graph)
    if not forms:
        return model, {}
    graph.cleanup().toposort()
    out = gs.export_onnx(graph, do_type_check=False)
    out.ir_version = model.ir_version
    out.metadata_props.extend(model.metadata_props)
    return out, {name: form.original.op for name, form in forms.items()}
