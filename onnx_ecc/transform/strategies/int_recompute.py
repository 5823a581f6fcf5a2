"""Depthwise int8 QDQ convs (any grouped conv the inline rule leaves alone) under the rerun strategy: fused on
the fast path with the exact sample check, recomputed in the rerun from a weight copy of their own. Grouped
convs with several channels per group have the inline rule's code group by group (rules/quantised.py).

Why: an int8 depthwise conv's output channel c reads only input channel c, so a parity channel over a
block of them is no conv of the same input, and its int32 accumulators are only visible if the layer
runs outside onnxruntime's fused QLinearConv (an integer recomputation costs what the layer costs; the
inline rule, rules/quantised.py, leaves these convs alone). What is exact on the fused path is what
int_sample_check.py does for dense convs, and it holds for any group count: a strided copy of the layer
(the same group attribute, fused into the same kernel) recomputed bit for bit at every s-th row and
column, and each output channel's int8 weights plus its int32 bias summed in int64 against the sums
stored at transform time. A flagged run is recomputed through the inline-decoded graph, where such a
conv is the plain QDQ layer reading its own copy of the weight and bias (renamed constants), so a
corrupted fast-path weight (flagged by its sums in every row) is not read again by the recomputation.

What this does not see or repair, beyond int_sample_check.py's list: the recomputation of these layers
is not itself checked, and a fault in both weight copies is flagged but not corrected.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnx_ecc.transform.common import Protected, constant_value

KIND = "int-recompute"


def grouped_int8_convs(model: onnx.ModelProto, fused: set[str]) -> list[str]:
    """The fused-able QDQ convs (``fused``: int_sample_check.fused_qdq_layers) with group > 1 (those the inline rule
    did not protect are this module's)."""
    return [n.name for n in model.graph.node if n.op_type == "Conv" and n.name in fused
            and any(a.name == "group" and a.i > 1 for a in n.attribute)]


def _weight(node: gs.Node, i: int) -> gs.Constant | None:
    """The int constant a QDQ layer's input ``i`` dequantises (weight, bias), or None."""
    t = node.inputs[i] if len(node.inputs) > i and node.inputs[i].name else None
    dq = t.inputs[0] if t is not None and len(t.inputs) == 1 and t.inputs[0].op == "DequantizeLinear" else None
    return dq.inputs[0] if dq is not None and isinstance(dq.inputs[0], gs.Constant) else None


def recompute_from_own_weights(full: onnx.ModelProto, names: list[str], record: dict) -> onnx.ModelProto:
    """``full`` (the rerun's decoded graph) whose named QDQ convs read renamed copies of their int8 weight
    and int32 bias; ``record`` gets them as protected layers (kind KIND) instead of skipped ones."""
    if not names:
        return full
    graph = gs.import_onnx(full)
    wanted = set(names)
    for node in graph.nodes:
        if node.name not in wanted:
            continue
        dq_w = node.inputs[1].inputs[0]
        w = _weight(node, 1)
        dq_w.inputs[0] = gs.Constant(f"{w.name}__ecc_rerun_{node.name}", np.array(w.values, copy=True))
        b = _weight(node, 2)
        if b is not None:
            node.inputs[2].inputs[0].inputs[0] = gs.Constant(f"{b.name}__ecc_rerun_{node.name}",
                                                             np.array(b.values, copy=True))
        record["protected"].append(dict(_protected(node, w, b).as_dict(), tolerance=None))
    record["skipped"] = [s for s in record["skipped"] if s["name"] not in wanted]
    order = {n.name: i for i, n in enumerate(graph.nodes)}  # the layers in the graph's order
    record["protected"].sort(key=lambda p: order.get(p["name"], len(order)))
    out = gs.export_onnx(graph, do_type_check=False)
    out.ir_version = full.ir_version
    out.metadata_props.extend(full.metadata_props)
    return out


def _protected(node: gs.Node, w: gs.Constant, b: gs.Constant | None) -> Protected:
    """The record of one such conv: no parity channels, its weights stored twice."""
    wv = np.asarray(constant_value(w))
    c_out, per_out = wv.shape[0], int(np.prod(wv.shape[1:]))
    params = int(wv.size + (b.values.size if b is not None else 0))
    return Protected(node.name, "Conv", KIND, int(c_out), 0, 0, 0, int(node.attrs.get("group", 1)), params=params,
                     extra_params=params, macs_per_vector=int(c_out * per_out), extra_macs_per_vector=0.0, dtype="int8")
