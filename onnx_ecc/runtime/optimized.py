"""What onnxruntime makes of a model: the op counts of its optimized graph, and the fusions lost.

Protection is only cheap while onnxruntime still fuses and lays out the protected model as it
does the original (blocked NCHWc convolutions with their activations, FusedMatMul, BiasGelu,
SkipLayerNormalization, ...). Comparing the optimized graphs of both shows what was lost.
"""

from __future__ import annotations

import collections
import os
import tempfile

import onnx
import onnxruntime as ort

from onnx_ecc import ops

# Layout conversions onnxruntime inserts around ops that cannot read its blocked layout.
REORDERS = ("ReorderInput", "ReorderOutput")
# Op types that only exist as onnxruntime fusions of several original nodes.
FUSED_DOMAINS = ("com.microsoft",)


def optimized_graph(model: onnx.ModelProto, level: ort.GraphOptimizationLevel | None = None) -> onnx.GraphProto:
    """The main graph onnxruntime runs for ``model`` on the CPU provider (default optimisation level)."""
    from onnx_ecc.runtime import session_options

    opts = session_options()
    opts.log_severity_level = 3
    if level is not None:
        opts.graph_optimization_level = level
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        opts.optimized_model_filepath = path
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return onnx.load(path, load_external_data=False).graph


def _kind(node: onnx.NodeProto) -> str:
    """The op type, with the activation an NCHWc or fused conv carries (Conv+Relu is not Conv)."""
    act = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "activation"), b"")
    act = act.decode() if isinstance(act, bytes) else act
    return f"{node.op_type}+{act}" if act else node.op_type


def op_counts(graph: onnx.GraphProto) -> collections.Counter:
    """Counts of (domain, op type[+fused activation]) over the graph's nodes, our own ops left out.

    A layout conversion of what a check reads (a pool's few values per sample, a sampled or
    strided copy of an activation: tensors onnx-ecc names ``*__ecc_*``) counts as
    'ReorderOutput(check)': it converts no activation of the original."""
    pooled = {o for n in graph.node if n.op_type == "GlobalAveragePool" for o in n.output}
    producer = {o: n for n in graph.node for o in n.output}
    counts = collections.Counter()
    for n in graph.node:
        if n.domain == ops.DOMAIN:
            continue
        kind = _kind(n)
        source = producer.get(n.input[0]) if n.input else None
        if kind in REORDERS and (n.input[0] in pooled or "__ecc_" in n.input[0]
                                 or (source is not None and "__ecc_" in source.name)):
            kind += "(check)"
        counts[(n.domain or "ai.onnx", kind)] += 1
    return counts


def lost_fusions(original: onnx.ModelProto, protected: onnx.ModelProto) -> dict[str, int]:
    """Fused ops (and convs with a fused activation) the original's optimized graph has more of, and
    layout conversions the protected one adds: {op: how many}. Empty when nothing was lost."""
    before, after = op_counts(optimized_graph(original)), op_counts(optimized_graph(protected))
    lost = {}
    for (domain, kind), n in before.items():
        if (domain in FUSED_DOMAINS or "+" in kind) and after[(domain, kind)] < n:
            lost[kind] = n - after[(domain, kind)]
    for (domain, kind), n in after.items():
        if kind in REORDERS and n > before[(domain, kind)]:
            lost[f"extra {kind}"] = n - before[(domain, kind)]
    return lost
