"""What the rules share: the outcome of matching a node, constant lookup, the decoder node."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from onnx_ecc import ops
from onnx_ecc.codes import Layout


class Skip(Exception):
    """A node the rule cannot protect; the message is the reason shown to the user."""


@dataclasses.dataclass
class Protected:
    """Record of one protected layer, for the model metadata and `onnx-ecc inspect`."""

    name: str
    op: str
    kind: str                 # 'code' or 'depthwise-check'
    data_channels: int
    parity_channels: int
    block: int
    parity: int
    groups: int
    params: int               # parameters of the original layer
    extra_params: int
    macs_per_vector: int      # multiply-adds per output vector of the original layer
    extra_macs_per_vector: float
    activation: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def constant_value(tensor) -> np.ndarray | None:
    """The value of a graph tensor if it is a constant (initializer or Constant node)."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if isinstance(tensor, gs.Variable) and len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        attr = tensor.inputs[0].attrs.get("value")
        if isinstance(attr, gs.Constant):
            return np.asarray(attr.values)
    return None


def require_float32(name: str, *arrays: np.ndarray | None) -> None:
    """Refuse layers whose weights are not float32, naming the type found."""
    for a in arrays:
        if a is not None and a.dtype != np.float32:
            if a.dtype == np.float16:
                raise Skip("float16 weights are not supported yet (convert the model to float32)")
            raise Skip(f"weights of type {a.dtype} are not supported (float32 only)")


def single_relu_consumer(out: gs.Variable, graph: gs.Graph) -> gs.Node | None:
    """The Relu that is the only consumer of ``out``, if the decoder may absorb it."""
    if out in graph.outputs or len(out.outputs) != 1:
        return None
    node = out.outputs[0]
    return node if node.op == "Relu" else None


def emit_decoder(graph: gs.Graph, node: gs.Node, x: gs.Variable, layout: Layout, axis: int,
                 gains: list[float], offsets: list[float], options, model_id: str) -> str:
    """Route ``node``'s output through a Decode node; returns the absorbed activation ('' or 'Relu')."""
    out = node.outputs[0]
    aug = gs.Variable(f"{out.name}__ecc_aug", dtype=out.dtype)
    node.outputs[0] = aug
    out.inputs.clear()
    relu = single_relu_consumer(out, graph) if options.absorb_activation else None
    target = out
    if relu is not None:
        target = relu.outputs[0]
        relu.outputs.clear()
        target.inputs.clear()
    attrs = dict(
        axis=axis, data_channels=layout.data_channels, groups=layout.groups, block=layout.block,
        parity=layout.parity, generator=layout.generator_attribute(), noise_gain=gains,
        noise_offset=offsets, tolerance=float(options.tolerance or 64.0), mode=options.mode,
        fail_stop=int(options.fail_stop), activation="Relu" if relu is not None else "",
        layer=node.name, model_id=model_id)
    _append(graph, ops.DECODE, [aug, x], [target], f"{node.name}__ecc_decode", attrs)
    return "Relu" if relu is not None else ""


def _append(graph: gs.Graph, decl: ops.OpDecl, inputs, outputs, name: str, attrs: dict) -> gs.Node:
    decl.check_attrs(attrs)
    node = gs.Node(op=decl.name, name=name, domain=ops.DOMAIN, attrs=attrs, inputs=list(inputs), outputs=list(outputs))
    graph.nodes.append(node)
    return node


def emit_node(graph: gs.Graph, decl: ops.OpDecl, inputs, outputs, name: str, attrs: dict) -> gs.Node:
    """Append a node of one of our ops, its attributes checked against the declaration."""
    return _append(graph, decl, inputs, outputs, name, attrs)


def layout_for(channels: int, options, groups: int = 1) -> Layout:
    """The block layout for a layer with ``channels`` outputs (blocks never exceed a group)."""
    per_group = channels // groups
    return Layout(channels, min(options.block, per_group), options.parity, groups)
