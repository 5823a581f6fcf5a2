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
    vectors_per_sample: int = 0   # output vectors per sample (spatial positions, tokens), from shapes
    dtype: str = "float32"        # the layer's weights and outputs; its decoder works in float32

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


FLOAT_TYPES = (np.float32, np.float16)
# The rounding unit of float16 over float32's: a float16 layer's noise bounds are scaled by it, so
# that its tolerances count float16 rounding steps (calibration then works as for float32).
FLOAT16_NOISE = float(np.finfo(np.float16).eps / np.finfo(np.float32).eps)
FLOAT16_TOLERANCE_FLOOR = 2.0  # least tolerance of a float16 layer: twice the rounding of its outputs


QUANTISED = ("quantised weight (DequantizeLinear of a constant, as in QDQ models): int8 models are not "
             "protected yet")


def is_quantised_weight(tensor) -> bool:
    """A tensor that a DequantizeLinear makes from a constant (a QDQ model's int8 weight)."""
    return (isinstance(tensor, gs.Variable) and len(tensor.inputs) == 1 and tensor.inputs[0].op == "DequantizeLinear"
            and constant_value(tensor.inputs[0].inputs[0]) is not None)


def require_float(name: str, *arrays: np.ndarray | None) -> np.dtype:
    """The weights' type (float32 or float16, all alike); Skip names any other type found."""
    kinds = {a.dtype for a in arrays if a is not None}
    for kind in kinds:
        if kind not in FLOAT_TYPES:
            raise Skip(f"weights of type {kind} are not supported (float32 and float16 only)")
    if len(kinds) > 1:
        raise Skip(f"weights of mixed types {sorted(str(k) for k in kinds)}")
    return np.dtype(kinds.pop() if kinds else np.float32)


def cast(graph: gs.Graph, t: gs.Variable, dtype, name: str) -> gs.Variable:
    """``t`` cast to ``dtype`` by a new Cast node named ``name``."""
    out = gs.Variable(name, dtype=np.dtype(dtype))
    graph.nodes.append(gs.Node("Cast", name, {"to": int(onnx_dtype(dtype))}, [t], [out]))
    return out


def own_copy(graph: gs.Graph, t: gs.Constant, name: str) -> gs.Variable:
    """``t`` through a Reshape to its own shape, which onnxruntime folds into a copy when it loads
    the model. Why: a float16 initializer read by two convs is cast to float32 at every run instead
    of once at load, and both convs then leave the blocked (NCHWc) layout; with a copy each conv
    has weights of its own (the file stays the same size)."""
    shape = gs.Constant(f"{name}_shape", np.asarray(t.values.shape, dtype=np.int64))
    out = gs.Variable(name, dtype=t.values.dtype)
    graph.nodes.append(gs.Node("Reshape", name, {}, [t, shape], [out]))
    return out


def written_as_half(graph: gs.Graph, target: gs.Variable, name: str) -> gs.Variable:
    """A float32 tensor for a float32 op to write where float16 ``target`` was: a Cast named
    ``name`` turns it into ``target``."""
    wide = gs.Variable(f"{target.name}__ecc_f32", dtype=np.float32)
    graph.nodes.append(gs.Node("Cast", name, {"to": onnx_dtype(np.float16)}, [wide], [target]))
    return wide


def onnx_dtype(dtype) -> int:
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def single_consumer(out: gs.Variable, graph: gs.Graph, op: str) -> gs.Node | None:
    """The node of type ``op`` that is the only consumer of ``out`` (never a graph output)."""
    if out in graph.outputs or len(out.outputs) != 1:
        return None
    node = out.outputs[0]
    return node if node.op == op else None


def single_relu_consumer(out: gs.Variable, graph: gs.Graph) -> gs.Node | None:
    """The Relu that is the only consumer of ``out``, if the decoder may absorb it."""
    return single_consumer(out, graph, "Relu")


def _same_static_shape(a: gs.Variable, b: gs.Variable) -> bool:
    return a.shape is not None and b.shape is not None and len(a.shape) > 0 and list(a.shape) == list(b.shape) \
        and all(d is not None and d != "" for d in a.shape)


def absorbable_residual(out: gs.Variable, graph: gs.Graph):
    """(Add node, its other input) when ``out`` only feeds an elementwise Add of the same shape."""
    add = single_consumer(out, graph, "Add")
    if add is None or len(add.inputs) != 2:
        return None
    other = add.inputs[1] if add.inputs[0] is out else add.inputs[0]
    if other is out or isinstance(other, gs.Constant) or not _same_static_shape(out, other) \
            or not _same_static_shape(out, add.outputs[0]):
        return None
    return add, other


def emit_decoder(graph: gs.Graph, node: gs.Node, x: gs.Variable, layout: Layout, axis: int,
                 bounds: tuple[list[float], list[float]], options, model_id: str, layer: str | None = None,
                 dtype=np.float32) -> str:
    """Route ``node``'s output through a Decode node; returns what it absorbed ('', 'Relu', 'Add', 'Add+Relu').

    The decoder absorbs a following residual Add and/or Relu when they are the only consumers,
    so that the protected graph makes no more passes over memory than the original.
    ``layer`` names the protected layer when ``node`` is not the layer itself. A float16 layer
    (``dtype``) is decoded in float32 between two Casts, its noise bounds in float16 rounding
    steps, and absorbs no residual (which stays in float16).
    """
    layer = layer or node.name
    half = np.dtype(dtype) == np.float16
    out = node.outputs[0]
    aug = gs.Variable(f"{out.name}__ecc_aug", dtype=out.dtype)
    node.outputs[0] = aug
    out.inputs.clear()
    target, absorbed, residual = out, [], None
    if options.absorb_activation:
        found = None if half else absorbable_residual(out, graph)
        if found is not None:
            add, residual = found
            target = add.outputs[0]
            add.inputs.clear()
            add.outputs.clear()
            absorbed.append("Add")
        relu = single_relu_consumer(target, graph)
        if relu is not None:
            new_target = relu.outputs[0]
            relu.inputs.clear()
            relu.outputs.clear()
            target = new_target
            absorbed.append("Relu")
    if options.scale == "output":
        gains, offsets = layout.output_noise_gains(), bounds[1]
    else:
        gains, offsets = bounds
    decoded_in, decoded_out = aug, target
    if half:
        gains, offsets = [g * FLOAT16_NOISE for g in gains], [o * FLOAT16_NOISE for o in offsets]
        decoded_in = cast(graph, aug, np.float32, f"{out.name}__ecc_aug32")
        decoded_out = written_as_half(graph, target, f"{layer}__ecc_to_half")
        if options.scale == "input":
            x = cast(graph, x, np.float32, f"{layer}__ecc_x32")
    attrs = dict(
        axis=axis, scale=options.scale, data_channels=layout.data_channels, groups=layout.groups, block=layout.block,
        parity=layout.parity, generator=layout.generator_attribute(), noise_gain=gains,
        noise_offset=offsets, tolerance=float(options.tolerance or ops.DEFAULT_TOLERANCE), mode=options.mode,
        fail_stop=int(options.fail_stop), activation="Relu" if "Relu" in absorbed else "",
        layer=layer, model_id=model_id)
    inputs = [decoded_in, x if options.scale == "input" else gs.Variable.empty()]
    if residual is not None:
        inputs.append(residual)
    _append(graph, ops.DECODE, inputs, [decoded_out], f"{layer}__ecc_decode", attrs)
    return "+".join(absorbed)


def join_parity(graph: gs.Graph, node: gs.Node, parity: gs.Variable, axis: int = -1) -> gs.Node:
    """Route ``node``'s output into a Concat with its separately computed ``parity`` along
    ``axis`` (the decoder's layout: data, then checks); returns the Concat, which takes over the
    output's name and consumers."""
    out = node.outputs[0]
    data = gs.Variable(f"{out.name}__ecc_data", dtype=out.dtype)
    node.outputs[0] = data
    out.inputs.clear()
    concat = gs.Node("Concat", f"{node.name}__ecc_join", {"axis": axis}, [data, parity], [out])
    graph.nodes.append(concat)
    return concat


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



# Checks that read a Gemm / MatMul output (rows, no blocked layout): placed right after their layer.
EARLY_CHECKS = ("ParityCheck", "ProductCheck", "LinearCheck")


def _check_rank(node) -> int:
    """-1 for the checks of Gemm / MatMul layers and products, 0 for the original's nodes, 1 for
    the standard nodes a check adds, 2 for onnx-ecc's other ops."""
    if node.domain == ops.DOMAIN:
        return -1 if node.op_type in EARLY_CHECKS else 2
    return 1 if "__ecc_" in node.name else 0


def order_checks(model, rank=_check_rank) -> None:
    """Reorder ``model.graph.node`` in place: a topological order by ``rank`` among the nodes ready
    at each step. onnxruntime's priority-based order runs the ready node of lowest index first.

    A Gemm / MatMul check then runs right after its layer, while the output is in cache, and the
    output's buffer is freed as early as in the original (BERT-style encoder, 128 tokens:
    ProductCheck 220 -> 80 µs, the rerun ratio 1.07-1.10 -> 1.03-1.04). Conv checks come after
    the original's nodes as far as their inputs allow: onnxruntime's blocked-layout pass gives the
    convs it rewrites new (last) indices, and conv checks placed first made every activation stay
    alive to the end (MobileNetV2 batch 8: 1.28 -> 1.43)."""
    import heapq

    graph = model.graph
    nodes = list(graph.node)
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    producers = {o: i for i, n in enumerate(nodes) for o in n.output}
    waiting = [len({t for t in n.input if t not in available and t in producers}) for n in nodes]
    consumers: dict[int, list[int]] = {}
    for i, n in enumerate(nodes):
        for t in {t for t in n.input if t not in available and t in producers}:
            consumers.setdefault(producers[t], []).append(i)
    ready = [(rank(n), i) for i, n in enumerate(nodes) if waiting[i] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, i = heapq.heappop(ready)
        order.append(nodes[i])
        for j in consumers.get(i, []):
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, (rank(nodes[j]), j))
    if len(order) != len(nodes):
        raise ValueError("the protected graph has a cycle")
    del graph.node[:]
    graph.node.extend(order)
