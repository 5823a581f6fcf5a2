"""Fast-path checks of convolutions that leave onnxruntime's fused conv chains as they are.

Why: any exact check of a conv's whole output must read it before its activation, which stops
onnxruntime fusing the activation into the conv (and ReLU6, a Clip, cannot even run in its
blocked layout, so the tensor is converted there and back): on a mobile CNN that costs more
than the convs. Here the conv, its residual Add and its activation stay fused and untouched; a
strided copy of the conv computes only every s-th row and column (1/s^2 of the work, sharing
the weights; s is smaller on small outputs, see sample_strides), and one SampleCheck node
compares, on these small tensors:

- the original's fused output, subsampled in the blocked layout, with the copy put through the
  same residual Add and activation (onnxruntime computes both bit for bit alike; a small
  tolerance covers other kernels) - a wrong value of the original's computation at a sampled
  position is caught exactly;
- the conv's own filters and bias (the initializers it reads, no copy): each output channel's
  sum against the one stored at transform time (``filter_checks='sums'``, the default, and
  always for depthwise convs, whose parity filters would be a dense conv) - this sees a
  corrupted weight even where its inputs are zero at every sampled position; or, with
  ``filter_checks='parity'``, the copy against parity channels computed in the same conv from
  parity filters ``V = G W``, which see a corrupted weight where its inputs are non-zero at a
  sampled position.

A flag routes the run through the decoding graph (rerun.py), as for every fast-path check.
What this does not see: a transient error of the original's computation at a position that is
not sampled (all but 1/s^2 of them); ``conv_check='sum'`` sees those above its threshold.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnx_ecc import ops
from onnx_ecc.codes import Layout
from onnx_ecc.transform.common import (FLOAT16_NOISE, FLOAT16_TOLERANCE_FLOOR, absorbable_residual, cast,
                                       constant_value, emit_node, own_copy, single_consumer)

# Activations onnxruntime fuses into a conv and SampleCheck applies to the copy as onnxruntime does.
ACTIVATIONS = ("Relu", "Clip", "LeakyRelu")
SAMPLE_FLOOR = 16.0  # least SampleCheck tolerance (eps32 x the sample's largest value)
MIN_SAMPLES = 2      # sampled rows (and columns) of a small output at least
PARITY_FILTERS = 16  # parity filters per sampled conv: onnxruntime's blocked layout takes 16 channels


@dataclasses.dataclass
class PlacedSampleCheck:
    """One SampleCheck: its layer, node and the tensors it reads (A, Y, W, R, Bias; '' if absent)."""

    layer: str
    node: str
    inputs: tuple[str, str, str, str, str]
    half: bool = False  # a float16 conv (checked in float32, its tolerance in float16 steps)


def samplable(node: gs.Node) -> bool:
    """A 2-D conv with constant weights and explicit pads (its copy can then be strided)."""
    w = constant_value(node.inputs[1])
    return (w is not None and w.ndim == 4 and node.attrs.get("auto_pad", "NOTSET") in ("NOTSET", b"NOTSET")
            and (len(node.inputs) < 3 or not node.inputs[2].name or constant_value(node.inputs[2]) is not None))


def needs_sampling(node: gs.Node, graph: gs.Graph) -> bool:
    """For conv_check='auto': whether a conv's sum check would cost more than sampling it. A sum
    check reads the conv's output before its activation: cheap where that activation runs in
    onnxruntime's blocked layout (Relu, or none), costly where it does not (Clip, i.e. ReLU6, and
    LeakyRelu are then converted out of it and back) and for depthwise convs, whose sum check's
    input projection costs as much as the conv."""
    chain, _ = fused_chain(node, graph)
    w = constant_value(node.inputs[1])
    depthwise = w is not None and int(node.attrs.get("group", 1)) == w.shape[0] > 1 and w.shape[1] == 1
    return depthwise or any(link.op in ("Clip", "LeakyRelu") for link in chain)


def fused_chain(node: gs.Node, graph: gs.Graph) -> tuple[list[gs.Node], gs.Variable]:
    """The residual Add and activation onnxruntime fuses after ``node``, and the tensor they end in."""
    chain, out = [], node.outputs[0]
    found = absorbable_residual(out, graph)
    if found is not None:
        chain.append(found[0])
        out = found[0].outputs[0]
    for op in ACTIVATIONS:
        act = single_consumer(out, graph, op)
        if act is not None and all(isinstance(t, gs.Constant) or constant_value(t) is not None for t in act.inputs[1:]):
            chain.append(act)
            out = act.outputs[0]
            break
    return chain, out


def parity_filters(w: np.ndarray, groups: int, layout: Layout) -> np.ndarray:
    """Filters V [checks, C_in, kh, kw] with conv(x, V)_q = sum_c G[q, c] conv(x, W)_c, grouped or not."""
    c_out, cin_g = w.shape[:2]
    per_group = c_out // groups
    m = layout.parity_matrix()
    v = np.zeros((m.shape[0], cin_g * groups) + w.shape[2:])
    for g in range(groups):
        rows = slice(g * per_group, (g + 1) * per_group)
        v[:, g * cin_g:(g + 1) * cin_g] = np.tensordot(m[:, rows], w[rows].astype(np.float64), axes=1)
    return v


def _subsample(graph: gs.Graph, t: gs.Variable, stride: tuple[int, int], offset: tuple[int, int], name: str,
               channels: int, dtype=np.float32) -> gs.Variable:
    """Rows offset[0] + stride[0] * i and columns offset[1] + stride[1] * j of ``t``, read in onnxruntime's
    blocked layout: a 1x1 MaxPool, or (at an offset, or where the channel count is no multiple of
    the layout's block of 16, which its pools do not take) a strided depthwise conv whose one-hot
    filter picks the value at the offset (exact copies too)."""
    out = gs.Variable(f"{name}__ecc_sampled", dtype=dtype)
    if channels % 16 == 0 and offset == (0, 0):
        graph.nodes.append(gs.Node("MaxPool", f"{name}__ecc_sample_pool",
                                   {"kernel_shape": [1, 1], "strides": list(stride)}, [t], [out]))
        return out
    pick = np.zeros((channels, 1, offset[0] + 1, offset[1] + 1), dtype)
    pick[:, :, offset[0], offset[1]] = 1.0
    graph.nodes.append(gs.Node("Conv", f"{name}__ecc_sample_pool", {"strides": list(stride), "group": channels},
                               [t, gs.Constant(f"{name}__ecc_sample_pick", pick)], [out]))
    return out


def _output_size(node: gs.Node):
    """(rows, columns) of a conv's output when shape inference knows them, else None."""
    shape = node.outputs[0].shape
    if shape is not None and len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[2:]):
        return tuple(shape[2:])
    return None


def sample_strides(node: gs.Node, stride: int) -> tuple[int, int]:
    """Rows and columns between samples: ``stride``, or less on small outputs, so that each axis
    has at least MIN_SAMPLES samples where it can (a stride of 8 would sample one position of a
    7x7 map, and a corrupted weight whose input is zero there would go unseen), but at least 2:
    a copy with the original's own strides would be merged with it by onnxruntime."""
    stride = max(2, stride)
    out = _output_size(node)
    if out is None:
        return stride, stride
    return tuple(max(2, min(stride, -(-n // MIN_SAMPLES))) for n in out)


def sample_offsets(node: gs.Node) -> tuple[int, int]:
    """The first sampled row and column: past the rows and columns whose windows reach into the
    leading padding, where a filter's border taps read zeros, so that every tap of every filter
    is used at a sampled position (else a corrupted border tap could change the output unseen).
    On outputs of a row or two every position may touch the padding: some taps stay unseen; where
    the output size is unknown (dynamic spatial dimensions) sampling starts at 0."""
    strides = [int(v) for v in node.attrs.get("strides", [1, 1])]
    pads = [int(v) for v in node.attrs.get("pads", [0, 0, 0, 0])]
    out = _output_size(node)
    if out is None:
        return 0, 0
    # whole strides only, so that the copy's first pad stays >= 0
    offs = [max(0, min(pads[axis] // strides[axis], out[axis] - 1)) for axis in range(2)]
    return offs[0], offs[1]


def _activation(chain: list[gs.Node]) -> tuple[str, list[float]]:
    """SampleCheck's activation attributes for the end of a fused chain."""
    act = chain[-1] if chain and chain[-1].op in ACTIVATIONS else None
    if act is None:
        return "", []
    if act.op == "Clip":
        bounds = [constant_value(t) if t.name else None for t in act.inputs[1:3]] + [None, None]
        lo = float(bounds[0]) if bounds[0] is not None else -np.inf
        hi = float(bounds[1]) if bounds[1] is not None else np.inf
        return "Clip", [lo, hi]
    if act.op == "LeakyRelu":
        return "LeakyRelu", [float(act.attrs.get("alpha", 0.01))]
    return act.op, []


def add_sample_check(graph: gs.Graph, node: gs.Node, options, model_id: str, flag):
    """The strided copy of one conv (with its parity channels, or for a depthwise conv its filter
    sums) and its SampleCheck; returns (the placed check, its flag)."""
    name = node.name
    s = sample_strides(node, int(options.sample_stride))
    w = constant_value(node.inputs[1])
    bias = constant_value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
    groups, c = int(node.attrs.get("group", 1)), w.shape[0]
    chain, observed = fused_chain(node, graph)
    depthwise = groups > 1 and groups == c and w.shape[1] == 1
    half = w.dtype == np.float16
    by_sums = depthwise or half or options.filter_checks == "sums"
    # filter sums see every tap: the samples need not avoid the padding, and at offset 0 the
    # output is subsampled by a pool instead of a conv
    offset = (0, 0) if by_sums else sample_offsets(node)
    strides = [int(v) for v in node.attrs.get("strides", [1, 1])]
    pads = [int(v) for v in node.attrs.get("pads", [0, 0, 0, 0])]
    # output row offset + s * i reads input rows from (offset + s * i) * stride - pad: the copy's
    # first pad shrinks by offset * stride (>= 0, see sample_offsets); its last pad is unchanged
    copy_pads = [pads[0] - offset[0] * strides[0], pads[1] - offset[1] * strides[1], pads[2], pads[3]]
    strided = dict(node.attrs, strides=[s[0] * strides[0], s[1] * strides[1]], pads=copy_pads)
    copy_out = gs.Variable(f"{name}__ecc_copy", dtype=w.dtype)
    attrs: dict = {}
    filters, bias_in = gs.Variable.empty(), gs.Variable.empty()
    if by_sums:
        copy_in = list(node.inputs)
        if half:  # weights of its own, so that onnxruntime casts both convs' weights once, at load
            copy_in[1:] = [own_copy(graph, t, f"{t.name}__ecc_copy_of") if isinstance(t, gs.Constant) else t
                           for t in copy_in[1:]]
        graph.nodes.append(gs.Node("Conv", f"{name}__ecc_copy", strided, copy_in, [copy_out]))
        filters = node.inputs[1]
        if bias is not None:
            bias_in = node.inputs[2]
        attrs = {"filter_sums": filter_sums(w, bias)}
    else:
        attrs = _copy_with_parity(graph, node, strided, w, bias, groups, copy_out, options)
    residual = gs.Variable.empty()
    if chain and chain[0].op == "Add":
        add = chain[0]
        other = add.inputs[1] if add.inputs[0] is node.outputs[0] else add.inputs[0]
        residual = _subsample(graph, other, s, offset, f"{name}_residual", c, w.dtype)
    activation, params = _activation(chain)
    sampled = _subsample(graph, observed, s, offset, name, c, w.dtype)
    if half:  # SampleCheck reads float32: cast the samples (small) and the filters (folded at load)
        sampled, copy_out, filters, residual, bias_in = (
            cast(graph, t, np.float32, f"{t.name}__ecc_f32") if t.name else t
            for t in (sampled, copy_out, filters, residual, bias_in))
    raised = gs.Variable(f"{name}__ecc_sample_raised", dtype=np.bool_, shape=[1])
    inputs = [sampled, copy_out, filters, residual, flag if flag is not None else gs.Variable.empty(), bias_in]
    emit_node(graph, ops.SAMPLE_CHECK, inputs, [raised], f"{name}__ecc_sample_check",
              dict(attrs, data_channels=c, activation=activation, tolerance=SAMPLE_FLOOR,
                   fail_stop=int(options.fail_stop and options.mode == "detect"), layer=name, model_id=model_id,
                   **({"activation_params": params} if params else {})))
    placed = PlacedSampleCheck(name, f"{name}__ecc_sample_check", tuple(t.name for t in inputs[:4]) + (bias_in.name,),
                           half)
    return placed, raised


def _copy_with_parity(graph, node, strided, w, bias, groups, copy_out, options) -> dict:
    """The strided copy of a (grouped or not) conv followed by its parity channels from parity
    filters V = G W, in one conv where the conv has no groups: its weights are the layer's own,
    joined to V by a Concat onnxruntime folds when it loads the model, so a corrupted stored weight
    reaches the copy but not V. Returns the SampleCheck attributes of the parity code. The output
    channels are split into as many blocks as make 16 parity filters: a conv with a channel count
    off the blocked layout's 16 runs outside it, converting its input there and back."""
    name, c = node.name, w.shape[0]
    layout = Layout(c, max(1, -(-c // max(1, PARITY_FILTERS // options.parity))), options.parity)
    v = parity_filters(w, groups, layout).astype(np.float32)
    v_const = gs.Constant(f"{name}__ecc_sample_parity_w", v)
    pb = None
    if bias is not None:
        pb = gs.Constant(f"{name}__ecc_sample_parity_b",
                         (layout.parity_matrix() @ bias.astype(np.float64)).astype(np.float32))
    if groups == 1:
        weights = gs.Variable(f"{name}__ecc_copy_w", dtype=np.float32)
        graph.nodes.append(gs.Node("Concat", f"{name}__ecc_copy_w", {"axis": 0}, [node.inputs[1], v_const], [weights]))
        inputs = [node.inputs[0], weights]
        if bias is not None:
            joined_b = gs.Variable(f"{name}__ecc_copy_b", dtype=np.float32)
            graph.nodes.append(gs.Node("Concat", f"{name}__ecc_copy_b", {"axis": 0}, [node.inputs[2], pb], [joined_b]))
            inputs.append(joined_b)
        graph.nodes.append(gs.Node("Conv", f"{name}__ecc_copy", strided, inputs, [copy_out]))
    else:  # grouped: the parity filters span every input channel, so they need a conv of their own
        data = gs.Variable(f"{name}__ecc_copy_data", dtype=np.float32)
        parity = gs.Variable(f"{name}__ecc_copy_parity", dtype=np.float32)
        graph.nodes += [
            gs.Node("Conv", f"{name}__ecc_copy_data", strided, list(node.inputs), [data]),
            gs.Node("Conv", f"{name}__ecc_copy_parity", {k: a for k, a in strided.items() if k != "group"},
                    [node.inputs[0], v_const] + ([pb] if pb is not None else []), [parity]),
            gs.Node("Concat", f"{name}__ecc_copy", {"axis": 1}, [data, parity], [copy_out]),
        ]
    _, offsets = layout.noise_bounds(w.reshape(c, -1), None if bias is None else np.abs(bias))
    return dict(block=layout.block, parity=layout.parity, generator=layout.generator_attribute(),
                noise_gain=layout.output_noise_gains(), noise_offset=offsets,
                parity_tolerance=float(options.tolerance or ops.DEFAULT_TOLERANCE))


def filter_sums(w: np.ndarray, bias: np.ndarray | None) -> list[float]:
    """Per output channel: the sum of its filter and bias, as SampleCheck compares them."""
    sums = w.reshape(w.shape[0], -1).astype(np.float64).sum(axis=1)
    if bias is not None:
        sums += bias.astype(np.float64)
    return [float(v) for v in sums.astype(np.float32)]


def add_sample_checks(model: onnx.ModelProto, convs: list[str], options, model_id: str, flag_name: str | None):
    """Give each named conv its sampled copy and checks; returns the model, the checks and the last flag."""
    from onnx_ecc.transform.strategies import with_checks

    if not convs:
        return model, [], flag_name
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
    flag = graph.tensors()[flag_name] if flag_name else None
    wanted, checks = set(convs), []
    for node in list(graph.nodes):
        if node.op == "Conv" and node.name in wanted:
            placed, flag = add_sample_check(graph, node, options, model_id, flag)
            checks.append(placed)
    return with_checks(model, graph, checks, flag)


def calibrate_sample_checks(model: onnx.ModelProto, checks: list[PlacedSampleCheck], feeds_list: list[dict],
                            options) -> dict[str, float]:
    """Set each SampleCheck's tolerances to margin x the largest clean ratio of each part (sample
    comparison: at least SAMPLE_FLOOR; parity: the given tolerance if any); returns them per layer."""
    from onnx_ecc.transform.calibration import clean_ratio_maxima, set_attribute
    from onnx_ecc.ops.oracles import sample_check_parts

    nodes = {n.name: n for n in model.graph.node}
    worst = clean_ratio_maxima(model, {s.node: s.inputs for s in checks}, feeds_list,
                               lambda v, attrs: sample_check_parts(*v, **attrs))
    chosen: dict[str, float] = {}
    for s in checks:
        w = worst[s.node]
        if not all(np.isfinite(v) for v in w.values()):
            raise ValueError(f"{s.layer}: its strided copy does not reproduce it on clean inputs "
                             "(use conv_check='sum')")
        if w.get("filters", 0.0) > ops.FILTER_TOLERANCE:
            raise ValueError(f"{s.layer}: its filter sums do not match its weights")
        # a float16 conv's original and copy may round their outputs to float16 or not
        floor = FLOAT16_TOLERANCE_FLOOR * FLOAT16_NOISE if s.half else SAMPLE_FLOOR
        tol = max(floor, options.margin * w.get("sample", 0.0))
        set_attribute(nodes[s.node], "tolerance", float(tol))
        if "parity" in w:
            ptol = float(options.tolerance) if options.tolerance is not None else max(0.05, options.margin * w["parity"])
            set_attribute(nodes[s.node], "parity_tolerance", float(ptol))
        chosen[s.layer] = tol
    return chosen
