"""Known erasures of a protected model's layers at session creation: dead units found in the
weights, the ``onnx_ecc.erasures`` metadata (transform.record), and passing them to the Decode
nodes (their ``erasures`` attribute, which each Decode kernel starts with and then keeps
learning from: channels located wrong ``learn_after`` runs in a row join it, channels that read
right as long leave it)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from onnx_ecc import ops


def decode_nodes(model: onnx.ModelProto):
    """(layer name, Decode node) of every Decode node of the model and of its subgraphs."""
    from onnx_ecc.runtime.session import all_nodes

    for node in all_nodes(model.graph):
        if node.domain == ops.DOMAIN and node.op_type == ops.DECODE.name:
            layer = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "layer"), b"")
            yield (layer.decode() if isinstance(layer, bytes) else str(layer)), node


def _output_rows(node: onnx.NodeProto, weights: np.ndarray) -> np.ndarray | None:
    """The layer's weights as [output channels, ...] (Conv, Gemm, MatMul with constant weights)."""
    if node.op_type == "Conv":
        return weights.reshape(weights.shape[0], -1)
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return weights if trans_b else weights.T
    if node.op_type == "MatMul" and weights.ndim >= 2:
        return np.moveaxis(weights, -1, 0).reshape(weights.shape[-1], -1)
    return None


def dead_channels(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Per protected layer, the output channels (of its decoded output, parity included) whose
    weights show the unit dead: every weight and the bias zero, or any of them non-finite."""
    from onnx_ecc.runtime.session import all_nodes

    inits = {i.name: i for i in model.graph.initializer}
    layers = {n.name: n for n in all_nodes(model.graph) if n.op_type in ("Conv", "Gemm", "MatMul")}
    found: dict[str, list[int]] = {}
    for layer, decode in decode_nodes(model):
        src = layers.get(layer)  # the protected layer keeps its node's name
        if src is None or len(src.input) < 2 or src.input[1] not in inits:
            continue
        rows = _output_rows(src, numpy_helper.to_array(inits[src.input[1]]).astype(np.float64))
        if rows is None:
            continue
        bias = np.zeros(rows.shape[0])
        if len(src.input) > 2 and src.input[2] in inits:
            b = numpy_helper.to_array(inits[src.input[2]]).astype(np.float64).ravel()
            if b.size in (1, rows.shape[0]):
                bias = np.broadcast_to(b, rows.shape[0])
        with np.errstate(invalid="ignore"):
            zero = (rows == 0).all(axis=1) & (bias == 0)
            bad = ~np.isfinite(rows).all(axis=1) | ~np.isfinite(bias)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in decode.attribute}
        layout = _layout(attrs)
        per_block: dict[tuple[int, int], int] = {}
        channels = []
        for c in np.flatnonzero(zero | bad).tolist():
            if c < layout.total_channels:  # beyond parity dead units per block, the code cannot rebuild any
                key = _block_of(layout, c)
                per_block[key] = per_block.get(key, 0) + 1
                if per_block[key] <= layout.parity:
                    channels.append(c)
        if channels:
            found[layer] = channels
    return found


def _layout(attrs: dict):
    from onnx_ecc.codes import Layout

    return Layout(int(attrs["data_channels"]), int(attrs["block"]), int(attrs["parity"]), int(attrs.get("groups", 1)))


def _block_of(layout, channel: int) -> tuple[int, int]:
    """(group, block) of a channel of the decoded output."""
    tpg, dpg = layout.total_channels // layout.groups, layout.data_per_group
    g, local = divmod(channel, tpg)
    return g, (local // layout.block if local < dpg else (local - dpg) // layout.parity)


def with_erasures(model: onnx.ModelProto, erasures: dict[str, list[int]]) -> onnx.ModelProto:
    """A copy of the model whose Decode nodes start with ``erasures`` (per layer name; every other
    Decode node with none). Channels are checked against each layer's code: one out of range, or
    more than parity in a block, raises ValueError naming the layer."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    unknown = set(erasures) - {layer for layer, _ in decode_nodes(out)}
    if unknown:
        raise ValueError(f"erasures for layer(s) {sorted(unknown)} that the model does not decode")
    for layer, node in decode_nodes(out):
        channels = sorted({int(c) for c in erasures.get(layer, ())})
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        _check(layer, attrs, channels)
        for a in list(node.attribute):
            if a.name == "erasures":
                node.attribute.remove(a)
        if channels:
            node.attribute.append(onnx.helper.make_attribute("erasures", channels))
    return out


def _check(layer: str, attrs: dict, channels: list[int]) -> None:
    layout = _layout(attrs)
    per_block: dict[tuple[int, int], int] = {}
    for c in channels:
        if not 0 <= c < layout.total_channels:
            raise ValueError(f"layer {layer!r}: erasure channel {c} out of range (channels 0..{layout.total_channels - 1})")
        key = _block_of(layout, c)
        per_block[key] = per_block.get(key, 0) + 1
        if per_block[key] > layout.parity:
            raise ValueError(f"layer {layer!r}: more than {layout.parity} (parity) erasures in block {key[1]} "
                             f"of group {key[0]}")
