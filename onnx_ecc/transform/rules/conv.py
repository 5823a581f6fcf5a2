"""Rules for Conv: parity output channels (plain and grouped), and a spatial check for depthwise."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnx_ecc import ops
from onnx_ecc.transform.common import (FLOAT16_NOISE, QUANTISED, Protected, Skip, cast, constant_value, emit_decoder,
                                       emit_node, is_quantised_weight, layout_for, require_float, single_relu_consumer,
                                       written_as_half)
from onnx_ecc.transform.record import separate_parity_name


def _weights(node: gs.Node):
    w = constant_value(node.inputs[1])
    if w is None:
        raise Skip(QUANTISED if is_quantised_weight(node.inputs[1]) else "weight is not a constant")
    bias_t = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    bias = constant_value(bias_t) if bias_t is not None else None
    if bias_t is not None and bias is None:
        raise Skip("bias is not a constant")
    require_float(node.name, w, bias)
    return w, bias, bias_t


def is_depthwise(node: gs.Node) -> bool:
    w = constant_value(node.inputs[1])
    g = int(node.attrs.get("group", 1))
    return w is not None and g > 1 and w.shape[1] == 1 and w.shape[0] == g


def protect_conv(graph: gs.Graph, node: gs.Node, options, model_id: str) -> Protected:
    """Dispatch: depthwise convolutions get the spatial check, all others parity channels."""
    if is_depthwise(node):
        if not options.depthwise:
            raise Skip("depthwise convolution left alone (--no-depthwise)")
        return protect_depthwise(graph, node, options, model_id)
    w, bias, bias_t = _weights(node)
    groups = int(node.attrs.get("group", 1))
    c_out = w.shape[0]
    layout = layout_for(c_out, options, groups)
    bounds = layout.noise_bounds(w, bias)
    if options.separate_parity:
        act = emit_decoder(graph, _parity_conv(graph, node, layout, w, bias), node.inputs[0], layout, 1, bounds,
                           options, model_id, layer=node.name, dtype=w.dtype)
    else:
        node.inputs[1] = gs.Constant(f"{node.inputs[1].name}__ecc_{node.name}", layout.augment_rows(w).astype(w.dtype))
        if bias is not None:
            node.inputs[2] = gs.Constant(f"{bias_t.name}__ecc_{node.name}", layout.augment_rows(bias).astype(w.dtype))
        act = emit_decoder(graph, node, node.inputs[0], layout, 1, bounds, options, model_id, dtype=w.dtype)
    per_out = int(np.prod(w.shape[1:]))
    extra = layout.total_channels - c_out
    return Protected(node.name, "Conv", "code", c_out, extra, layout.block, layout.parity, groups,
                     params=w.size + (bias.size if bias is not None else 0),
                     extra_params=extra * (per_out + (1 if bias is not None else 0)),
                     macs_per_vector=c_out * per_out, extra_macs_per_vector=extra * (per_out + layout.block),
                     activation=act, dtype=str(w.dtype))


def _parity_conv(graph: gs.Graph, node: gs.Node, layout, w: np.ndarray, bias: np.ndarray | None) -> gs.Node:
    """Parity channels from a second Conv, joined to the untouched data channels in the decoder's
    layout by a Concat (per group); returns the Concat, whose output the layer's consumers read."""
    aug_w = layout.augment_rows(w)
    per_group = layout.total_channels // layout.groups
    parity_rows = np.concatenate([aug_w[g * per_group + layout.data_per_group:(g + 1) * per_group]
                                  for g in range(layout.groups)]).astype(w.dtype)
    inputs = [node.inputs[0], gs.Constant(separate_parity_name(node.name, "w"), parity_rows)]
    if bias is not None:
        aug_b = layout.augment_rows(bias)
        inputs.append(gs.Constant(separate_parity_name(node.name, "b"), np.concatenate(
            [aug_b[g * per_group + layout.data_per_group:(g + 1) * per_group] for g in range(layout.groups)])
            .astype(w.dtype)))
    out = node.outputs[0]
    data = gs.Variable(f"{out.name}__ecc_data", dtype=out.dtype)
    parity = gs.Variable(f"{out.name}__ecc_parity", dtype=out.dtype)
    node.outputs[0] = data
    out.inputs.clear()
    graph.nodes.append(gs.Node("Conv", f"{node.name}__ecc_parity", dict(node.attrs), inputs, [parity]))
    concat = gs.Node("Concat", f"{node.name}__ecc_join", {"axis": 1}, [data, parity], [out])
    graph.nodes.append(concat)
    if layout.groups > 1:  # the decoder wants [data, parity] per group: reorder the channels
        joined = gs.Variable(f"{out.name}__ecc_joined", dtype=out.dtype)
        concat.outputs[0] = joined
        d, p, c = layout.data_per_group, layout.parity_per_group, layout.data_channels
        order = np.concatenate([np.r_[g * d:(g + 1) * d, c + g * p:c + (g + 1) * p] for g in range(layout.groups)])
        concat = gs.Node("Gather", f"{node.name}__ecc_order", {"axis": 1},
                         [joined, gs.Constant(f"{node.name}__ecc_order_idx", order.astype(np.int64))], [out])
        graph.nodes.append(concat)
    return concat


def protect_depthwise(graph: gs.Graph, node: gs.Node, options, model_id: str) -> Protected:
    """Depthwise conv: per-row spatial-sum checks; a wrong row is recomputed (DepthwiseCheck)."""
    w, bias, _ = _weights(node)
    if w.ndim != 4:
        raise Skip("only 2-D depthwise convolutions are checked")
    if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        raise Skip("auto_pad is not supported for depthwise convolutions (use explicit pads)")
    c = w.shape[0]
    half = w.dtype == np.float16
    w = w.astype(np.float32)  # the check works in float32 (exact for float16 weights)
    bias = np.zeros(c, np.float32) if bias is None else bias.astype(np.float32)
    sums = (w.reshape(c, -1).astype(np.float64).sum(axis=1) + bias.astype(np.float64)).tolist()
    out = node.outputs[0]
    checked = gs.Variable(f"{out.name}__ecc_raw", dtype=out.dtype)
    node.outputs[0] = checked
    out.inputs.clear()
    relu = single_relu_consumer(out, graph) if options.absorb_activation else None
    target = out
    if relu is not None:
        target = relu.outputs[0]
        relu.outputs.clear()
        target.inputs.clear()
    attrs = dict(
        weights=gs.Constant(f"{node.name}__ecc_w", np.ascontiguousarray(w)),
        bias=gs.Constant(f"{node.name}__ecc_b", bias),
        weight_sums=[float(s) for s in sums],
        strides=[int(v) for v in node.attrs.get("strides", [1, 1])],
        pads=[int(v) for v in node.attrs.get("pads", [0, 0, 0, 0])],
        dilations=[int(v) for v in node.attrs.get("dilations", [1, 1])],
        tolerance=float(options.depthwise_tolerance), mode=options.mode, fail_stop=int(options.fail_stop),
        activation="Relu" if relu is not None else "", layer=node.name, model_id=model_id)
    x, y = node.inputs[0], checked
    if half:  # checked in float32 between Casts, its tolerance in float16 rounding steps
        x, y = cast(graph, x, np.float32, f"{node.name}__ecc_x32"), cast(graph, y, np.float32, f"{node.name}__ecc_y32")
        attrs["tolerance"] = float(options.depthwise_tolerance) * FLOAT16_NOISE
        target = written_as_half(graph, target, f"{node.name}__ecc_to_half")
    emit_node(graph, ops.DEPTHWISE_CHECK, [x, y], [target], f"{node.name}__ecc_check", attrs)
    k = w.shape[2] * w.shape[3]
    return Protected(node.name, "Conv", "depthwise-check", c, 0, 0, 0, c, params=w.size + bias.size,
                     extra_params=w.size + bias.size + c, macs_per_vector=c * k,
                     extra_macs_per_vector=float(c * 3), activation="Relu" if relu is not None else "",
                     dtype="float16" if half else "float32")
