"""The rerun strategy: original convolutions plus cheap sum checks; decode only on a flagged run.

Why: onnxruntime runs convolution chains in a blocked channel layout (NCHWc) and fuses their
activations; any node of ours on the data path converts the layout back and forth around
every protected layer, which costs more than decoding. Here the fast path keeps the original
convolutions and adds, per conv, only layout-friendly standard ops (a 1x1 projection of the
input on the check-weighted filters, a one-hot depthwise conv for the filter taps, global
average pools) and one SumCheck on their tiny outputs; two convs that meet in a residual Add
are checked as one, on the Add's output (int8 layers of QDQ models keep onnxruntime's fused
integer kernels and get exact sample checks: int_sample_check.py). The flags of all checks are chained
into the condition of an ``If`` whose then-branch is the fully decoded model, sharing the
weights: a run whose checks all pass returns the fast outputs, a flagged run is recomputed
with every protected layer decoded, so the user's plain InferenceSession still gets
corrected outputs.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper

from onnx_ecc import ops
from onnx_ecc.transform.common import absorbable_residual, constant_value, emit_node, order_checks

FAST_SUFFIX = "__ecc_fast"
RERUN_SUFFIX = "__ecc_rerun"
CHANNEL_ALIGN = 16  # projections keep a channel count the blocked layout takes without padding


@dataclasses.dataclass
class PlacedSumCheck:
    """One sum check: the convs it covers, the tensors its SumCheck reads and the node, for calibration."""

    layers: tuple[str, ...]
    y_means: str
    x_means: str
    node: str
    r_means: str | None = None

    @property
    def layer(self) -> str:
        """The name counters and errors give this check: its conv, or its convs joined by '+'."""
        return "+".join(self.layers)


def protect_rerun(model: onnx.ModelProto, options, model_id: str) -> tuple[onnx.ModelProto, dict]:
    """Fast path with checks, and an If that recomputes through the decoding graph.

    Layers in mode 'check' (the default) run as in the original on the fast path: convolutions
    with a sum check, Gemm / MatMul with a separate parity product and a ParityCheck, int8 QDQ
    layers (and operator forms, as QDQ) fused as in the original with an exact sample check
    (IntSampleCheck; grouped / depthwise ones recomputed from a weight copy: int_recompute.py); layers in
    mode 'decode' are decoded inline on the fast path too; every protected layer is decoded in
    the recomputation.
    """
    from onnx_ecc.transform import calibration_feeds, protect_inline
    from onnx_ecc.transform.strategies.parity_check import (add_parity_checks, calibrate_parity_checks, joint_products,
                                                             merge_parity_products)
    from onnx_ecc.transform.rules import operator_format
    from onnx_ecc.transform.rules.quantised import KIND as INT_KIND
    from onnx_ecc.transform.strategies.int_recompute import KIND as RECOMPUTE_KIND
    from onnx_ecc.transform.strategies.int_sample_check import add_int_sample_checks, fused_qdq_layers
    from onnx_ecc.transform.strategies.sample_check import add_sample_checks, calibrate_sample_checks, needs_sampling, samplable
    from onnx_ecc.transform.flops import layer_macs

    from onnx_ecc.transform.strategies.int_recompute import grouped_int8_convs, recompute_from_own_weights

    # operator forms (QLinearConv, QGemm, QLinearMatMul) as QDQ, which onnxruntime fuses back into the
    # same kernels: their layers then keep the fused kernel on the fast path like QDQ ones
    model, user_ops = operator_format.as_qdq_model(model)
    full_options = dataclasses.replace(options, strategy="inline", separate_parity=True)
    full, record = protect_inline(model, full_options, model_id)
    fused = fused_qdq_layers(model)
    left = {s["name"] for s in record["skipped"] if options.mode_of(s["name"]) != "none"}  # depthwise: no inline code
    full = recompute_from_own_weights(full, [c for c in grouped_int8_convs(model, fused) if c in left],
                                      record)  # int_recompute.py
    checked = [p for p in record["protected"] if options.mode_of(p["name"]) == "check"]
    # QDQ layers (int8 weights, products of two int8 activations, operator forms expressed as QDQ above,
    # grouped / depthwise convs) keep their fused kernels with exact sample checks (int_sample_check.py);
    # MatMulInteger / ConvInteger layers are decoded inline on the fast path
    int8 = [p["name"] for p in checked if p["name"] in fused]
    inline8 = tuple((p["name"], "decode") for p in checked if p["kind"] == INT_KIND and p["name"] not in fused)
    if inline8:
        options = dataclasses.replace(options, layer_modes=options.layer_modes + inline8)
    checked = [p for p in checked if p["kind"] != INT_KIND and p["name"] not in fused]
    regrouped = {p["name"] for p in record["protected"] if p["kind"] == RECOMPUTE_KIND}
    if any(options.mode_of(c) == "decode" for c in regrouped):
        raise ValueError("grouped / depthwise int8 convs have no inline decoding: layer mode 'decode' is not possible")
    convs = [p["name"] for p in checked if p["op"] == "Conv"]
    try:  # shapes let fused_chain see a residual Add before the activation
        graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
    except Exception:
        graph = gs.import_onnx(model)
    nodes = {n.name: n for n in graph.nodes}

    def sample_it(c: str) -> bool:
        """Whether conv ``c`` gets a sample check rather than a sum check (float16 convs always:
        the sum checks' pooled means are float32 only)."""
        if not samplable(nodes[c]):
            return False
        if constant_value(nodes[c].inputs[1]).dtype == np.float16 or options.conv_check == "sample":
            return True
        return options.conv_check == "auto" and needs_sampling(nodes[c], graph)

    sampled = [c for c in convs if sample_it(c)]
    convs = [c for c in convs if c not in sampled]
    linears = [p["name"] for p in checked if p["op"] != "Conv"]
    main, _ = protect_inline(model, dataclasses.replace(options, separate_parity=True), model_id, modes=("decode",))
    # the checks' flags are chained in the layers' order (convs, then the Gemm / MatMul layers
    # that usually follow them), which order_checks relies on
    main, int_checks, flag = add_int_sample_checks(main, int8, options, model_id, None)
    main, sample_checks, flag = add_sample_checks(main, sampled, options, model_id, flag)
    main, checks, flag = add_sum_checks(main, convs, options, model_id, flag)
    main, parity_checks, flag = add_parity_checks(main, linears, options, model_id, flag)
    main = merge_parity_products(main)
    # the decoding graph joins the same parity products as the fast path (whose LinearChecks read
    # each layer's own parity weights), so that every parity weight is stored once
    full = merge_parity_products(full, only=joint_products(main))
    feeds = calibration_feeds(model)
    tolerances = calibrate_parity_checks(main, parity_checks, feeds, options) if parity_checks else {}
    sample_tolerances = calibrate_sample_checks(main, sample_checks, feeds, options) if sample_checks else {}
    if checks:
        tolerances.update(calibrate_sum_checks(main, checks, feeds, options))
    order_checks(main)
    out = wrap_with_rerun(main, full if options.mode == "correct" else None, flag)
    record["options"]["strategy"] = "rerun"
    macs = layer_macs(model)
    product_checked = {c.layer for c in parity_checks if c.kind == "product"}
    for p in record["protected"]:
        p["op"] = user_ops.get(p["name"], p["op"])  # the op in the user's model (its operator form)
        p["vectors_per_sample"] = p.get("vectors_per_sample") or macs.get(p["name"], 0) // max(p["macs_per_vector"], 1)
        p["fast_path"] = options.mode_of(p["name"])
        for check in checks:
            if p["name"] in check.layers:
                p["sum_check_tolerance"] = tolerances[check.layer]
        if p["name"] in tolerances:
            p["parity_check_tolerance"] = tolerances[p["name"]]
        if p["name"] in product_checked:  # one ProductCheck (parity_check.py: fused_product)
            p["product_check_stride"] = int(options.sample_stride)
        for check in int_checks:
            if p["name"] == check.layer:  # exact: no tolerance
                p["sample_check_tolerance"], p["sample_stride"] = 0.0, list(check.strides)
        if p["name"] in sample_tolerances:
            p["sample_check_tolerance"] = sample_tolerances[p["name"]]
            p["sample_stride"] = options.sample_stride
    return out, record


def check_weights(channels: int, seed: int) -> np.ndarray:
    """Random signs, so that no error pattern of a few channels cancels by construction."""
    return np.random.default_rng(seed).choice(np.array([-1.0, 1.0]), size=channels).astype(np.float32)


def projected_taps(w: np.ndarray, a: np.ndarray, groups: int) -> np.ndarray:
    """V[ci, kh, kw] = sum of a_c * W[c, ci, kh, kw] over the output channels c that read input ci."""
    c_out, cin_g = w.shape[:2]
    per_group = c_out // groups
    v = np.zeros((cin_g * groups,) + w.shape[2:], np.float64)
    for g in range(groups):
        rows = slice(g * per_group, (g + 1) * per_group)
        v[g * cin_g:(g + 1) * cin_g] = np.tensordot(a[rows].astype(np.float64), w[rows].astype(np.float64), axes=1)
    return v


def joint_residual_partners(graph: gs.Graph, wanted: set[str]) -> dict[str, gs.Node]:
    """Pairs of wanted convs whose outputs only meet in one residual Add, each mapped to the other.

    Such a pair is checked as one linear layer on the Add's output, so neither conv output is
    read by a check and onnxruntime keeps fusing the Add into a conv as in the original.
    """
    partners: dict[str, gs.Node] = {}
    for node in graph.nodes:
        if node.op != "Conv" or node.name not in wanted or node.name in partners:
            continue
        residual = absorbable_residual(node.outputs[0], graph)
        if residual is None or len(residual[1].inputs) != 1:
            continue
        other = residual[1].inputs[0]
        if other.op == "Conv" and other.name in wanted and other.name not in partners and other is not node \
                and absorbable_residual(residual[1], graph) is not None:
            partners[node.name], partners[other.name] = other, node
    return partners


def _aligned(channels: int) -> int:
    """``channels`` rounded up to a multiple of CHANNEL_ALIGN."""
    return -(-channels // CHANNEL_ALIGN) * CHANNEL_ALIGN


def _tap_means(graph: gs.Graph, node: gs.Node, a: np.ndarray, mean_of) -> tuple[gs.Variable, int]:
    """Per sample, what the check of ``node`` predicts from its input: the means of the input
    windows each filter tap reads, projected on the check-weighted filters ``V = sum_c a_c W_c``.
    Returns a tensor [N, channels, 1, 1] whose channels sum to the prediction, and that count.

    Stride-1 convs with a known input size pool first and project the pooled windows
    (``_pooled_tap_means``: one cheap pass over the input); others project first
    (``_projected_tap_means``: a 1x1 conv onto one channel per tap and a one-hot depthwise conv
    with the layer's strides and pads, then a pool)."""
    w = constant_value(node.inputs[1])
    v = projected_taps(w, a, int(node.attrs.get("group", 1)))
    if _poolable(node, w):
        return _pooled_tap_means(graph, node, v, mean_of), 1
    return _projected_tap_means(graph, node, w, v, mean_of)


def _poolable(node: gs.Node, w: np.ndarray) -> bool:
    """True for a 2-D conv with unit strides, explicit pads and a static input size."""
    shape = node.inputs[0].shape
    return (w.ndim == 4 and all(int(s) == 1 for s in node.attrs.get("strides", [1, 1]))
            and node.attrs.get("auto_pad", "NOTSET") in ("NOTSET", b"NOTSET")
            and shape is not None and len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[2:]))


def _pooled_tap_means(graph: gs.Graph, node: gs.Node, v: np.ndarray, mean_of) -> gs.Variable:
    """Window means of a stride-1 conv's input from two AveragePools (rows, then columns), whose
    kernels span the output size and whose strides are the dilations, so that pool output (i, j)
    is the mean of the window tap (i, j) reads (pads count as zeros); then one tiny conv with V.
    A 1x1 conv without pads reads its whole input: its window means are the global pool's."""
    name, (kh, kw) = node.name, v.shape[1:]
    h, w_in = node.inputs[0].shape[2:]
    pt, pl, pb, pr = [int(p) for p in node.attrs.get("pads", [0, 0, 0, 0])]
    dh, dw = [int(d) for d in node.attrs.get("dilations", [1, 1])]
    if (kh, kw) == (1, 1) and not any((pt, pl, pb, pr)):
        windows = mean_of(node.inputs[0])
    else:
        out_h, out_w = h + pt + pb - dh * (kh - 1), w_in + pl + pr - dw * (kw - 1)
        rows = gs.Variable(f"{name}__ecc_row_windows", dtype=np.float32)
        windows = gs.Variable(f"{name}__ecc_windows", dtype=np.float32)
        graph.nodes += [
            gs.Node("AveragePool", f"{name}__ecc_pool_rows",
                    {"kernel_shape": [out_h, 1], "strides": [dh, 1], "pads": [pt, 0, pb, 0], "count_include_pad": 1},
                    [node.inputs[0]], [rows]),
            gs.Node("AveragePool", f"{name}__ecc_pool_cols",
                    {"kernel_shape": [1, out_w], "strides": [1, dw], "pads": [0, pl, 0, pr], "count_include_pad": 1},
                    [rows], [windows]),
        ]
    prediction = gs.Variable(f"{name}__ecc_tap_means", dtype=np.float32)
    graph.nodes.append(gs.Node("Conv", f"{name}__ecc_project", {},
                               [windows, gs.Constant(f"{name}__ecc_proj_w", v[None].astype(np.float32))], [prediction]))
    return prediction


def _projected_tap_means(graph: gs.Graph, node: gs.Node, w: np.ndarray, v: np.ndarray, mean_of):
    """Project the input on one channel per tap (padded with zero channels to a count the blocked
    layout likes), sum the taps with a one-hot depthwise conv with the layer's strides and pads,
    pool; returns the pooled tensor and its channel count."""
    taps = int(np.prod(w.shape[2:]))
    aligned = _aligned(taps)
    ones = (1,) * (w.ndim - 2)
    proj_w = np.zeros((aligned, v.shape[0]) + ones, np.float32)
    proj_w[:taps] = v.reshape(v.shape[0], taps).T.reshape((taps, v.shape[0]) + ones)
    one_hot = np.zeros((aligned, 1) + w.shape[2:], np.float32)
    one_hot.reshape(aligned, taps)[np.arange(taps), np.arange(taps)] = 1.0
    spatial = {k: node.attrs[k] for k in ("strides", "pads", "dilations", "auto_pad") if k in node.attrs}
    name = node.name
    proj = gs.Variable(f"{name}__ecc_proj", dtype=np.float32)
    taps_out = gs.Variable(f"{name}__ecc_taps", dtype=np.float32)
    graph.nodes += [
        gs.Node("Conv", f"{name}__ecc_project", {}, [node.inputs[0], gs.Constant(f"{name}__ecc_proj_w", proj_w)],
                [proj]),
        gs.Node("Conv", f"{name}__ecc_tap_sums", dict(spatial, group=aligned),
                [proj, gs.Constant(f"{name}__ecc_one_hot", one_hot)], [taps_out]),
    ]
    return mean_of(taps_out), aligned


def _bias_dot(node: gs.Node, a: np.ndarray) -> float:
    """a . bias of a conv (0 without a bias), the constant its check must add."""
    bias = constant_value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
    return float(np.dot(a.astype(np.float64), bias.astype(np.float64))) if bias is not None else 0.0


def add_sum_checks(model: onnx.ModelProto, convs: list[str], options, model_id: str, flag_name: str | None = None):
    """Add a sum check to each named Conv; returns the model, the placed checks and the final flag name.

    ``flag_name``: the flag of earlier checks, which the first sum check passes on."""
    from onnx_ecc.transform.strategies import with_checks

    try:
        graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
    except Exception:  # shapes only enable checking after a residual Add
        graph = gs.import_onnx(model)
    checks: list[PlacedSumCheck] = []
    flag = graph.tensors()[flag_name] if flag_name else None
    wanted = set(convs)
    means: dict[str, gs.Variable] = {}
    residual_adds: set[str] = set()
    partners = joint_residual_partners(graph, wanted)
    checked: set[str] = set()

    def mean_of(t: gs.Variable) -> gs.Variable:
        """Spatial means of a tensor, pooled once however many checks read them."""
        if t.name not in means:
            means[t.name] = gs.Variable(f"{t.name}__ecc_means", dtype=np.float32)
            graph.nodes.append(gs.Node("GlobalAveragePool", f"{t.name}__ecc_pool", {}, [t], [means[t.name]]))
        return means[t.name]

    for node in list(graph.nodes):
        if node.op != "Conv" or node.name not in wanted or node.name in checked:
            continue
        group = [node] + ([partners[node.name]] if node.name in partners else [])
        checked.update(n.name for n in group)
        name = "+".join(n.name for n in group)
        a = check_weights(constant_value(node.inputs[1]).shape[0], options.seed + len(checks))
        y, r_means = node.outputs[0], None
        residual = absorbable_residual(y, graph)
        if len(group) == 2:  # both Add inputs are checked: the Add's output is their joint output
            y_means = mean_of(residual[0].outputs[0])
        elif residual is not None and residual[0].name not in residual_adds:
            # After a residual Add, pool the sum and subtract the residual's means: onnxruntime then
            # still fuses the Add into the conv (a residual that is itself a checked conv's output is
            # pooled once for both checks).
            residual_adds.add(residual[0].name)
            y_means, r_means = mean_of(residual[0].outputs[0]), mean_of(residual[1])
        else:
            y_means = mean_of(y)
        tap_means = [_tap_means(graph, n, a, mean_of) for n in group]
        if len(tap_means) == 1:
            x_means, taps = tap_means[0]
        else:  # every channel of both sums into the prediction (padding channels are exact zeros)
            x_means = gs.Variable(f"{name}__ecc_tap_means", dtype=np.float32)
            graph.nodes.append(gs.Node("Concat", f"{name}__ecc_join", {"axis": 1}, [t for t, _ in tap_means],
                                       [x_means]))
            taps = sum(k for _, k in tap_means)
        raised = gs.Variable(f"{name}__ecc_raised", dtype=np.bool_, shape=[1])
        attrs = dict(weights=[float(t) for t in a], taps=taps, offset=sum(_bias_dot(n, a) for n in group),
                     tolerance=float(options.tolerance or ops.DEFAULT_TOLERANCE),
                     fail_stop=int(options.fail_stop and options.mode == "detect"), layer=name, model_id=model_id)
        inputs = [y_means, x_means, flag if flag is not None else gs.Variable.empty()]
        if r_means is not None:
            inputs.append(r_means)
        emit_node(graph, ops.SUM_CHECK, inputs, [raised], f"{name}__ecc_sum_check", attrs)
        checks.append(PlacedSumCheck(tuple(n.name for n in group), y_means.name, x_means.name,
                                  f"{name}__ecc_sum_check", r_means.name if r_means is not None else None))
        flag = raised
    return with_checks(model, graph, checks, flag)


def calibrate_sum_checks(model: onnx.ModelProto, checks: list[PlacedSumCheck], feeds_list: list[dict],
                         options) -> dict[str, float]:
    """Set each SumCheck's tolerance to margin x the largest clean ratio seen (or the given tolerance)."""
    from onnx_ecc.transform.calibration import calibrate_checks
    from onnx_ecc.ops.oracles import sum_check_ratios

    def ratios(v, attrs):
        return {"sum": sum_check_ratios(v[0], v[1], v[2], weights=attrs["weights"], taps=attrs["taps"],
                                        offset=attrs["offset"])}

    return calibrate_checks(model, {s.node: (s.layer, (s.y_means, s.x_means, s.r_means or "")) for s in checks},
                            feeds_list, options, ratios)


def wrap_with_rerun(main: onnx.ModelProto, full: onnx.ModelProto | None, flag: str | None) -> onnx.ModelProto:
    """``main`` whose outputs go through If(flag): then the decoded ``full`` graph (or, in detect
    mode, the fast outputs again), else the fast outputs. Weights stay in the outer graph."""
    if flag is None:
        return main
    out = onnx.ModelProto()
    out.CopyFrom(main)
    graph = out.graph
    outputs = list(graph.output)
    fast = {o.name: o.name + FAST_SUFFIX for o in outputs}
    for node in graph.node:
        node.output[:] = [fast.get(t, t) for t in node.output]
        node.input[:] = [fast.get(t, t) for t in node.input]
    produced = {t for n in graph.node for t in n.output}
    for name, renamed in fast.items():
        if renamed not in produced:  # an output that is a graph input or initializer
            graph.node.append(helper.make_node("Identity", [name], [renamed], name=f"{renamed}__identity"))
    else_branch = _identity_branch("fast_path", outputs, fast, "__ecc_else")
    then_branch = (_rerun_branch(full, graph) if full is not None
                   else _identity_branch("flagged_detect_only", outputs, fast, "__ecc_then"))
    graph.node.append(helper.make_node("If", [flag], [o.name for o in outputs], name="ecc_rerun_if",
                                       then_branch=then_branch, else_branch=else_branch))
    return out


def _identity_branch(name: str, outputs, sources: dict[str, str], suffix: str) -> onnx.GraphProto:
    """A branch that passes on the outer values ``sources[output]`` as its outputs."""
    nodes = [helper.make_node("Identity", [sources[o.name]], [o.name + suffix], name=o.name + suffix) for o in outputs]
    return helper.make_graph(nodes, name, [], [helper.make_value_info(o.name + suffix, o.type) for o in outputs])


def _same_tensor(a: onnx.TensorProto, b: onnx.TensorProto) -> bool:
    """Equal type, shape and bytes (one graph may store a value as raw_data, the other not)."""
    if a.SerializeToString() == b.SerializeToString():
        return True
    x, y = numpy_helper.to_array(a), numpy_helper.to_array(b)
    return x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


def _rerun_branch(full: onnx.ModelProto, outer: onnx.GraphProto) -> onnx.GraphProto:
    """The decoded graph as a subgraph: its values renamed apart, its initializers moved to ``outer``."""
    inner = {t for n in full.graph.node for t in n.output}

    def rename(t: str) -> str:
        return t + RERUN_SUFFIX if t in inner else t

    nodes = []
    for n in full.graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(n)
        copy.name = n.name + RERUN_SUFFIX
        copy.input[:] = [rename(t) for t in n.input]
        copy.output[:] = [rename(t) for t in n.output]
        nodes.append(copy)
    outputs = []
    for o in full.graph.output:
        name = rename(o.name)
        if name == o.name:  # an output that is an outer value: the branch must produce its own
            name = o.name + RERUN_SUFFIX
            nodes.append(helper.make_node("Identity", [o.name], [name], name=f"{name}__identity"))
        outputs.append(helper.make_value_info(name, o.type))
    known = {t.name: t for t in outer.initializer}
    for t in full.graph.initializer:
        if t.name in known:
            if not _same_tensor(known[t.name], t):
                raise ValueError(f"initializer {t.name} differs between the fast and the decoding graph")
            continue
        outer.initializer.append(t)
    return helper.make_graph(nodes, "decode_rerun", [], outputs)

