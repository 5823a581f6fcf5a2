"""Parameter and multiply-add counts of a model's linear layers (Conv, Gemm, MatMul, Einsum and
their quantised forms) at batch 1."""

from __future__ import annotations

import numpy as np
import onnx


def static_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Static shapes of every tensor, dynamic dimensions taken as 1 (batch 1)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in t.shape.dim]
    for init in inferred.graph.initializer:
        out[init.name] = list(init.dims)
    return out


def layer_macs(model: onnx.ModelProto) -> dict[str, int]:
    """Multiply-adds per sample of each Conv, Gemm and MatMul node (by node name)."""
    shapes = static_shapes(model)
    macs = {}
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        ins = [shapes.get(t) for t in node.input]
        out = shapes.get(node.output[0])
        if out is None or any(s is None for s in ins[:2]):
            continue
        if node.op_type == "Conv":
            w = ins[1]
            macs[name] = int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type == "Gemm":
            trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
            k = ins[0][0] if trans_a else ins[0][-1]
            macs[name] = int(np.prod(out)) * int(k)
        elif node.op_type in ("MatMul", "MatMulInteger"):
            macs[name] = int(np.prod(out)) * int(ins[0][-1])
        elif node.op_type in ("ConvInteger", "ConvTranspose"):
            w = ins[1]
            macs[name] = int(np.prod(out)) * int(np.prod(w[1:])) if node.op_type == "ConvInteger" \
                else int(np.prod(ins[0])) * int(np.prod(w[1:]))
        elif node.op_type == "Einsum":
            macs[name] = _einsum_macs(node, ins, out)
    for i, node in enumerate(model.graph.node):  # the quantised forms: inputs (x, x_scale, x_zp, w, ...)
        name = node.name or f"{node.op_type}_{i}"
        if node.op_type in ("QLinearConv", "QLinearMatMul") and shapes.get(node.output[0]) is not None \
                and shapes.get(node.input[3]) is not None:
            w, out = shapes[node.input[3]], shapes[node.output[0]]
            per = int(np.prod(w[1:])) if node.op_type == "QLinearConv" else int(w[0])
            macs[name] = int(np.prod(out)) * per
        if node.op_type == "QGemm" and shapes.get(node.input[0]) is not None and shapes.get(node.input[3]) is not None:
            a, b = shapes[node.input[0]], shapes[node.input[3]]  # com.microsoft: no inferred output shape
            trans_b = next((x.i for x in node.attribute if x.name == "transB"), 0)
            macs[name] = int(np.prod(a)) * int(b[0] if trans_b else b[1])  # rows x K x N (transA = 0)
    return macs


def _einsum_macs(node: onnx.NodeProto, ins, out) -> int:
    """Output size times the sizes of the indices summed over, for a two-operand Einsum."""
    eq = next((a.s.decode() for a in node.attribute if a.name == "equation"), "").replace(" ", "")
    if "->" not in eq or "." in eq or len(ins) != 2:
        return 0
    lhs, right = eq.split("->")
    sizes = {}
    for term, shape in zip(lhs.split(","), ins):
        if shape is None or len(term) != len(shape):
            return 0
        sizes.update(zip(term, shape))
    return int(np.prod(out)) * int(np.prod([sizes[c] for c in sizes if c not in right] or [1]))


def model_cost(model: onnx.ModelProto) -> dict[str, int]:
    """Parameters (float, and the int8 weights and int32 biases of quantised models) and
    Conv/Gemm/MatMul multiply-adds per sample of the whole model."""
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer
                 if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                                    onnx.TensorProto.INT8, onnx.TensorProto.INT32))
    return {"params": params, "macs": sum(layer_macs(model).values())}
