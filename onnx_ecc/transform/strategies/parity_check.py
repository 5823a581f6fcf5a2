"""Fast-path checks of Gemm / MatMul layers: the layer untouched, its parity from a separate product.

Why: widening a MatMul's weight by the parity columns changes the shape onnxruntime's GEMM
kernels see (and the output must then be copied without them), while the product
``P = x · (W Gᵀ)`` is a thin extra GEMM that reads the same input. ``ParityCheck`` compares
``G y`` with ``P`` block by block, writes nothing but a flag, and the flag routes the run through
the decoding graph (see rerun.py). The check reads the MatMul's own output, before any bias,
activation or residual, so the fusions onnxruntime makes after it (BiasGelu,
SkipLayerNormalization, FusedMatMul) stay as in the original.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnx_ecc import ops
from onnx_ecc.codes import Layout
from onnx_ecc.ops.oracles import parity_check_ratios
from onnx_ecc.transform.common import (FLOAT16_NOISE, FLOAT16_TOLERANCE_FLOOR, FLOAT_TYPES, cast, constant_value,
                                       emit_node, layout_for)
from onnx_ecc.transform.record import separate_parity_name
from onnx_ecc.transform.rules.products import is_activation_product, product_form, product_parity


@dataclasses.dataclass
class PlacedParityCheck:
    """One ParityCheck: its layer, the tensors it reads and the node, for calibration."""

    layer: str
    y: str
    p: str
    node: str
    half: bool = False  # a float16 layer (checked in float32, its noise in float16 steps)
    # a ProductCheck's A and B (y is then C; p is ""), or a LinearCheck's X, WG and PB ('' if none)
    operands: tuple[str, ...] | None = None
    kind: str = "parity"  # the node's op: 'parity' (ParityCheck), 'product' or 'linear'


def linear_rows(node: gs.Node):
    """(weight rows [N, K], bias per output [N] or None, alpha, beta) of a Gemm / MatMul, or None
    when its parity cannot be a separate product (no constant 2-D weight, transA, a full bias)."""
    b = constant_value(node.inputs[1])
    if b is None or b.ndim != 2 or b.dtype not in FLOAT_TYPES:
        return None
    if node.op == "MatMul":
        return b.T, None, 1.0, 1.0
    if node.attrs.get("transA", 0):
        return None
    rows = b if int(node.attrs.get("transB", 0)) else b.T
    n = rows.shape[0]
    bias = None
    if len(node.inputs) > 2 and node.inputs[2].name:
        c = constant_value(node.inputs[2])
        if c is None or c.size not in (1, n):
            return None
        bias = np.broadcast_to(np.asarray(c, np.float64).ravel(), (n,))
    return rows, bias, float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))


def sampled_rows(graph: gs.Graph, x: gs.Variable, features: int, stride: int, cache: dict) -> gs.Variable:
    """Every ``stride``-th row of ``x`` flattened to [rows, features] (one Reshape and, for a stride
    above 1, one strided Slice per input, shared by the layers that read it)."""
    if x.name not in cache:
        flat = gs.Variable(f"{x.name}__ecc_flat", dtype=x.dtype)
        graph.nodes.append(gs.Node("Reshape", f"{x.name}__ecc_flat", {}, [x, gs.Constant(
            f"{x.name}__ecc_flat_shape", np.array([-1, features], np.int64))], [flat]))
        rows = flat
        if stride > 1:
            rows = gs.Variable(f"{x.name}__ecc_rows", dtype=x.dtype)
            big = np.iinfo(np.int64).max
            graph.nodes.append(gs.Node("Slice", f"{x.name}__ecc_rows", {},
                                       [flat] + [gs.Constant(f"{x.name}__ecc_rows_{k}", np.array([v], np.int64))
                                                 for k, v in (("start", 0), ("end", big), ("axis", 0),
                                                              ("step", stride))], [rows]))
        cache[x.name] = rows
    return cache[x.name]


# Ops between a Relu and a layer that keep its zeros (a zero input column stays zero).
ZERO_KEEPING = ("Flatten", "Reshape", "MaxPool", "GlobalMaxPool", "AveragePool", "GlobalAveragePool", "Transpose",
                "Identity", "Squeeze", "Unsqueeze", "Dropout")


def may_be_sparse(x) -> bool:
    """Whether a layer input comes from a Relu (or a Clip at 0) through ops that keep its zeros: its
    features are then often zero in whole rows, where a corrupted weight shows in no sampled row."""
    while isinstance(x, gs.Variable) and len(x.inputs) == 1:
        producer = x.inputs[0]
        if producer.op == "Relu":
            return True
        if producer.op == "Clip":
            low = constant_value(producer.inputs[1]) if len(producer.inputs) > 1 and producer.inputs[1].name else None
            low = producer.attrs.get("min") if low is None else low
            return low is not None and float(np.asarray(low)) >= 0
        if producer.op not in ZERO_KEEPING:
            return False
        x = producer.inputs[0]
    return False


def product_row_stride(node: gs.Node, stride: int) -> int:
    """The row stride of a MatMul product's fast-path check: ``stride`` where it divides the
    product's static row count (so that every stride-th vector of the flattened output is every
    stride-th row of each matrix), else 1."""
    rows = node.inputs[0].shape[-2] if node.op == "MatMul" and node.inputs[0].shape is not None \
        and len(node.inputs[0].shape) >= 2 else None
    return stride if isinstance(rows, int) and rows > 0 and stride > 1 and rows % stride == 0 else 1


def symbolic_shapes(model: onnx.ModelProto) -> dict[str, list]:
    """Tensor name -> shape (ints and dim names) from onnxruntime's symbolic shape inference, which,
    unlike onnx's, carries the batch dim's name through attention's Reshapes and Transposes; {}
    where it fails (an op it does not know, for example)."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=False)  # no dims assumed equal
    except Exception:
        return {}
    shapes = {}
    for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
            shapes[v.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                              for d in v.type.tensor_type.shape.dim]
    return shapes


def fused_product(node: gs.Node, form, shapes: dict[str, list]) -> bool:
    """Whether a product of two activations is checked by one ProductCheck node (its parity
    computed in the kernel): a float32 MatMul whose operands have the same rank and provably the
    same leading (batch) axes (equal sizes, or the same dim name in ``shapes``: symbolic_shapes),
    as attention's scores and context do; else by a separate parity product and a ParityCheck."""
    a, b = form.a, form.b
    if node.op != "MatMul" or form.parity is not None:
        return False
    if any(t.dtype is None or np.dtype(t.dtype) != np.float32 for t in (a, b, node.outputs[0])):
        return False
    sa, sb = shapes.get(a.name, a.shape), shapes.get(b.name, b.shape)
    if sa is None or sb is None or len(sa) != len(sb) or len(sa) < 2:
        return False
    # equal sizes or dim names only: a broadcast axis differs, unnamed dims are not known equal
    return all(x is not None and x == y and x != 0 for x, y in zip(sa[:-2], sb[:-2]))


def strided_rows(graph: gs.Graph, a: gs.Variable, stride: int) -> gs.Variable:
    """Every ``stride``-th row (axis -2) of a batched matrix ``a``."""
    rows = gs.Variable(f"{a.name}__ecc_strided_rows", dtype=a.dtype)
    big = np.iinfo(np.int64).max
    graph.nodes.append(gs.Node("Slice", f"{a.name}__ecc_strided_rows", {},
                               [a] + [gs.Constant(f"{a.name}__ecc_strided_{k}", np.array([v], np.int64))
                                      for k, v in (("start", 0), ("end", big), ("axis", -2), ("step", stride))],
                               [rows]))
    return rows


def parity_product(graph: gs.Graph, node: gs.Node, layout: Layout, rows, bias, alpha, beta,
                   x: gs.Variable | None = None) -> gs.Variable:
    """Append the separate parity product of ``node`` (a MatMul or Gemm reading the same input, or
    ``x``: its sampled rows)."""
    w, b = parity_weights(node, layout, rows, bias)
    p = gs.Variable(f"{node.outputs[0].name}__ecc_parity", dtype=w.values.dtype)
    x = node.inputs[0] if x is None else x
    if node.op == "MatMul":
        graph.nodes.append(gs.Node("MatMul", f"{node.name}__ecc_parity", {}, [x, w], [p]))
    else:
        graph.nodes.append(gs.Node("Gemm", f"{node.name}__ecc_parity", {"alpha": alpha, "beta": beta},
                                   [x, w] + ([b] if b is not None else []), [p]))
    return p


def parity_weights(node: gs.Node, layout: Layout, rows, bias) -> tuple[gs.Constant, gs.Constant | None]:
    """A layer's parity weights W Gᵀ [K, checks] and its bias's parity G bias (None without a bias),
    in the weights' own type, under the names the fast path and the decoding graph share."""
    m = layout.parity_matrix()
    dtype = rows.dtype if rows.dtype in FLOAT_TYPES else np.float32
    weight = np.ascontiguousarray((m @ np.asarray(rows, np.float64)).T.astype(dtype))
    b = None if bias is None else gs.Constant(separate_parity_name(node.name, "b"), (m @ bias).astype(dtype))
    return gs.Constant(separate_parity_name(node.name, "w"), weight), b


def unscaled_operand(t: gs.Variable) -> tuple[gs.Variable, float]:
    """(x, s) where ``t`` is x times (or divided by) a constant float32 scalar, s the factor
    (attention's 1/sqrt(d) on Q, which onnxruntime fuses into the product when nothing else reads
    the scaled tensor), else (t, 1)."""
    if not isinstance(t, gs.Variable) or len(t.inputs) != 1 or t.inputs[0].op not in ("Mul", "Div"):
        return t, 1.0
    op = t.inputs[0]
    for i in ((0, 1) if op.op == "Mul" else (1,)):  # x * s, s * x or x / s
        value, other = constant_value(op.inputs[i]), op.inputs[1 - i]
        if (value is not None and value.size == 1 and value.dtype == np.float32 and isinstance(other, gs.Variable)
                and constant_value(other) is None and np.isfinite(value).all() and value.ravel()[0] != 0):
            factor = float(value.ravel()[0])
            return other, factor if op.op == "Mul" else float(np.float32(1.0) / np.float32(factor))
    return t, 1.0


def _check_attrs(layout: Layout, options, stride: int, gains, offsets, layer: str, model_id: str) -> dict:
    """The attributes ParityCheck, ProductCheck and LinearCheck share."""
    return dict(axis=-1, stride=stride, data_channels=layout.data_channels, block=layout.block, parity=layout.parity,
                generator=layout.generator_attribute(), noise_gain=gains, noise_offset=offsets,
                tolerance=float(options.tolerance or ops.DEFAULT_TOLERANCE),
                fail_stop=int(options.fail_stop and options.mode == "detect"), layer=layer, model_id=model_id)


def add_parity_checks(model: onnx.ModelProto, layers: list[str], options, model_id: str,
                      flag_name: str | None = None):
    """Give each named Gemm / MatMul a separate parity product and a ParityCheck, chained after
    the flag ``flag_name`` of earlier checks.

    Returns the model, the placed checks and the name of the last check's flag (None if none).
    """
    from onnx_ecc.transform.strategies import with_checks

    wanted = set(layers)
    if not wanted:
        return model, [], flag_name
    try:  # types tell a float16 product of activations
        graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
    except Exception:
        graph = gs.import_onnx(model)
    checks: list[PlacedParityCheck] = []
    flag = graph.tensors()[flag_name] if flag_name else None
    stride, cache = max(1, int(options.sample_stride)), {}
    products = [n for n in graph.nodes if n.name in wanted and n.op == "MatMul" and is_activation_product(n)]
    shapes = symbolic_shapes(model) if products else {}
    for node in list(graph.nodes):
        if node.name not in wanted or node.op not in ("Gemm", "MatMul", "Einsum"):
            continue
        if options.device == "cpu" and is_activation_product(node) and fused_product(node, product_form(node), shapes):
            # one ProductCheck: every stride-th row of each product, its parity from A and B in the
            # kernel; a constant scale of an operand becomes alpha (so that it stays fused)
            form = product_form(node)
            layout = layout_for(form.columns, options)
            (a, sa), (b, sb) = unscaled_operand(form.a), unscaled_operand(form.b)
            raised = gs.Variable(f"{node.name}__ecc_raised", dtype=np.bool_, shape=[1])
            gains = layout.output_noise_gains()
            attrs = _check_attrs(layout, options, stride, gains, [0.0] * len(gains), node.name, model_id)
            if sa * sb != 1.0:
                attrs["alpha"] = float(np.float32(sa * sb))
            inputs = [a, b, node.outputs[0], flag if flag is not None else gs.Variable.empty()]
            emit_node(graph, ops.PRODUCT_CHECK, inputs, [raised], f"{node.name}__ecc_product_check", attrs)
            checks.append(PlacedParityCheck(node.name, node.outputs[0].name, "", f"{node.name}__ecc_product_check",
                                            operands=(a.name, b.name), kind="product"))
            flag = raised
            continue
        if is_activation_product(node):
            # as for a weight layer, every stride-th output row is checked (a MatMul whose row count
            # the stride divides), its parity computed from the operands (products.py)
            form = product_form(node)
            layout = layout_for(form.columns, options)
            node_stride = product_row_stride(node, stride)
            if node_stride > 1:
                form = dataclasses.replace(form, a=strided_rows(graph, form.a, node_stride))
            p = product_parity(graph, node, form, layout)
            offsets = [0.0] * len(layout.output_noise_gains())  # no bias
            if node_stride > 1:  # ParityCheck takes a strided check's parity as [vectors / stride, checks]
                flat = gs.Variable(f"{p.name}_rows", dtype=p.dtype)
                n_checks = layout.total_channels - layout.data_channels
                graph.nodes.append(gs.Node("Reshape", f"{node.name}__ecc_parity_rows", {},
                                           [p, gs.Constant(f"{node.name}__ecc_parity_rows_shape",
                                                           np.array([-1, n_checks], np.int64))], [flat]))
                p = flat
        else:
            found = linear_rows(node)
            if found is None:
                raise ValueError(f"{node.name}: no separate parity product for this layer (use layer mode 'decode')")
            rows, bias, alpha, beta = found
            layout = layout_for(rows.shape[0], options)
            # the check reads every stride-th output row: a corrupted weight W[i, k] changes output i
            # in every row whose input k is non-zero, so sampled rows see it unless the input is
            # sparse (after a Relu) - then every row is checked; a transient error is seen in a sampled row
            node_stride = 1 if may_be_sparse(node.inputs[0]) else stride
            if options.device == "cpu" and (alpha, beta) == (1.0, 1.0):
                # one LinearCheck: the sampled rows' parity from X and W Gᵀ in the kernel (a float16
                # layer read through Casts to float32, its noise bounds in float16 rounding steps)
                w, b = parity_weights(node, layout, rows, bias)
                _, offsets = layout.noise_bounds(rows, None if bias is None else np.abs(bias))
                gains, half = layout.output_noise_gains(), _is_half(node)
                if half:
                    gains, offsets = [g * FLOAT16_NOISE for g in gains], [o * FLOAT16_NOISE for o in offsets]
                raised = gs.Variable(f"{node.name}__ecc_raised", dtype=np.bool_, shape=[1])
                attrs = _check_attrs(layout, options, node_stride, gains, offsets, node.name, model_id)
                x, w32, y, b32 = node.inputs[0], w, node.outputs[0], b
                if half:  # onnxruntime runs float16 Gemm / MatMul in float32 on the CPU and merges these
                    # Casts with its own: the check reads the float32 values, and adds no pass
                    x = cast(graph, x, np.float32, f"{node.name}__ecc_x32")
                    y = cast(graph, y, np.float32, f"{node.name}__ecc_y32")
                    w32 = cast(graph, w, np.float32, f"{node.name}__ecc_wg32")  # folded at load
                    b32 = None if b is None else cast(graph, b, np.float32, f"{node.name}__ecc_pb32")
                inputs = [x, w32, y, flag if flag is not None else gs.Variable.empty()]
                emit_node(graph, ops.LINEAR_CHECK, inputs + ([b32] if b32 is not None else []), [raised],
                          f"{node.name}__ecc_linear_check", attrs)
                checks.append(PlacedParityCheck(node.name, node.outputs[0].name, "", f"{node.name}__ecc_linear_check",
                                                half, (node.inputs[0].name, w.name, b.name if b is not None else ""),
                                                "linear"))
                flag = raised
                continue
            x = sampled_rows(graph, node.inputs[0], rows.shape[1], node_stride, cache)
            p = parity_product(graph, node, layout, rows, bias, alpha, beta, x)
            _, offsets = layout.noise_bounds(abs(alpha) * rows, None if bias is None else abs(beta) * np.abs(bias))
        gains, y, half = layout.output_noise_gains(), node.outputs[0], _is_half(node)
        if half:  # checked in float32, the noise bounds in float16 rounding steps
            gains, offsets = [g * FLOAT16_NOISE for g in gains], [o * FLOAT16_NOISE for o in offsets]
            y = cast(graph, y, np.float32, f"{node.name}__ecc_y32")
            p = cast(graph, p, np.float32, f"{node.name}__ecc_p32")
        raised = gs.Variable(f"{node.name}__ecc_raised", dtype=np.bool_, shape=[1])
        attrs = _check_attrs(layout, options, node_stride, gains, offsets, node.name, model_id)
        inputs = [y, p, flag if flag is not None else gs.Variable.empty()]
        emit_node(graph, ops.PARITY_CHECK, inputs, [raised], f"{node.name}__ecc_parity_check", attrs)
        checks.append(PlacedParityCheck(node.name, y.name, p.name, f"{node.name}__ecc_parity_check", half))
        flag = raised
    return with_checks(model, graph, checks, flag)


def calibrate_parity_checks(model: onnx.ModelProto, checks: list[PlacedParityCheck], feeds_list: list[dict],
                            options) -> dict[str, float]:
    """Set each ParityCheck's tolerance to margin x the largest clean ratio seen (or the given tolerance)."""
    from onnx_ecc.transform.calibration import calibrate_checks

    from onnx_ecc.ops.oracles import linear_check_ratios, product_check_ratios

    def ratios(v, attrs):  # a ProductCheck reads (A, B, C), a LinearCheck (X, WG, PB, Y), a ParityCheck (Y, P)
        if len(v) == 3:
            return {"parity": product_check_ratios(*v, **attrs)}
        if len(v) == 4:
            return {"parity": linear_check_ratios(v[0], v[1], v[3], v[2], **attrs)}
        return {"parity": parity_check_ratios(v[0], v[1], **attrs)}

    return calibrate_checks(model, {s.node: (s.layer, s.operands + (s.y,) if s.operands else (s.y, s.p)) for s in checks}, feeds_list, options, ratios,
                            floors={s.layer: FLOAT16_TOLERANCE_FLOOR for s in checks if s.half})


def _is_half(node: gs.Node) -> bool:
    """Whether a Gemm / MatMul / Einsum works in float16 (its weight, or else its output, says so)."""
    w = constant_value(node.inputs[1]) if len(node.inputs) > 1 else None
    if w is not None:
        return w.dtype == np.float16
    return node.outputs[0].dtype is not None and np.dtype(node.outputs[0].dtype) == np.float16


JOINT = "__joint"  # suffix of a joined parity product's name (its first layer's product + JOINT)


def joint_products(model: onnx.ModelProto) -> set[str]:
    """Names of the joined parity products (merge_parity_products) in ``model``."""
    return {n.name for n in model.graph.node if n.op_type == "MatMul" and n.name.endswith(JOINT)}


def merge_parity_products(model: onnx.ModelProto, only: set[str] | None = None) -> onnx.ModelProto:
    """One MatMul for the parity products of all layers that read the same input (the query, key
    and value projections of attention), split per layer: each thin product would read the input
    once more. Deterministic names, so the fast path and the decoding graph share the weights;
    ``only``: join just the groups of these joined names (those of the fast path)."""
    from onnx_ecc.transform import _restore_model_fields

    graph = gs.import_onnx(model)
    by_input: dict[str, list[gs.Node]] = {}
    for node in graph.nodes:
        if node.op == "MatMul" and node.name.endswith("__ecc_parity") and isinstance(node.inputs[1], gs.Constant):
            by_input.setdefault(node.inputs[0].name, []).append(node)
    merged = False
    for group in by_input.values():
        if len(group) < 2:
            continue
        group.sort(key=lambda n: n.name)
        name = f"{group[0].name}{JOINT}"
        if only is not None and name not in only:
            continue
        widths = [int(n.inputs[1].values.shape[1]) for n in group]
        weight = np.concatenate([n.inputs[1].values for n in group], axis=1)
        joint = gs.Variable(f"{name}_out", dtype=weight.dtype)
        graph.nodes.append(gs.Node("MatMul", name, {}, [group[0].inputs[0], gs.Constant(f"{name}_w", weight)], [joint]))
        outputs = [n.outputs[0] for n in group]
        for n in group:
            n.inputs.clear()
            n.outputs.clear()
        graph.nodes.append(gs.Node("Split", f"{name}_split", {"axis": -1},
                                   [joint, gs.Constant(f"{name}_widths", np.array(widths, np.int64))], outputs))
        merged = True
    if not merged:
        return model
    # drop only the merged products (a graph cleanup would also drop the checks, whose flags
    # reach the outputs only once the If is added)
    graph.nodes = [n for n in graph.nodes if n.outputs]
    graph.toposort()
    out = gs.export_onnx(graph, do_type_check=False)
    _restore_model_fields(model, out)
    return out
