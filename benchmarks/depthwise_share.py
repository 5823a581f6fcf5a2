"""What a depthwise conv's fast-path check costs next to the conv itself (onnxruntime profiler, CPU).

For each model: the rerun strategy's protected model is profiled (kernel time per node, averaged
over the runs), and the nodes of its optimized graph are split into the depthwise convs of the
original and the nodes that check them (the strided copy, the subsampling pool, SampleCheck and
any layout conversion of what they read: every node that reads or writes a tensor onnx-ecc named
after a depthwise layer). Prints both totals and their ratio, and the split by op type.

    python benchmarks/depthwise_share.py [--models mobilenet_v2,efficientnet_lite] [--batch 8] [--runs 20]
"""

from __future__ import annotations

import argparse
import collections
import json
import os

import numpy as np
import onnx
import onnxruntime as ort

import onnx_ecc
from onnx_ecc import zoo
from onnx_ecc.runtime import optimized


def depthwise_layers(model: onnx.ModelProto) -> set[str]:
    """Names of the depthwise convs (group = channels, one input channel per group)."""
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    out = set()
    for n in model.graph.node:
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        w = weights.get(n.input[1]) if n.op_type == "Conv" and len(n.input) > 1 else None
        if w is not None and group > 1 and w[0] == group and w[1] == 1:
            out.add(n.name)
    return out


def classify(graph: onnx.GraphProto, layers: set[str]) -> dict[str, str]:
    """Optimized node name -> 'conv' (a depthwise conv of the original), 'check' (a node of its
    check) or '' (anything else)."""
    weights = {t.name: list(t.dims) for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    kinds = {}
    for n in graph.node:
        tensors = list(n.input) + list(n.output)
        owners = {t.split("__ecc")[0] for t in tensors if "__ecc" in t}
        if owners & layers:
            kinds[n.name] = "check"
            continue
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        w = weights.get(n.input[1]) if n.op_type == "Conv" and len(n.input) > 1 else None
        depthwise = w is not None and group > 1 and w[0] == group and w[1] == 1
        kinds[n.name] = "conv" if depthwise and "__ecc" not in n.name else ""
    for n in graph.node:  # layout conversions of a check's tensors belong to the check
        if n.op_type in optimized.REORDERS and kinds.get(n.name) == "" and n.input:
            source = producer.get(n.input[0])
            if source is not None and kinds.get(source.name) == "check":
                kinds[n.name] = "check"
    return kinds


def profile(model: onnx.ModelProto, feeds: dict, runs: int, warmup: int = 3) -> dict[str, tuple[str, float]]:
    """Mean kernel milliseconds per run of each node after ``warmup`` runs: name -> (op type, ms)."""
    opts = onnx_ecc.session_options()
    opts.enable_profiling = True
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    for _ in range(warmup + runs):
        sess.run(None, feeds)
    path = sess.end_profiling()
    with open(path) as f:
        events = json.load(f)
    os.remove(path)
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    first = starts[warmup] if len(starts) > warmup else 0
    times: dict[str, list] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= first:
            entry = times.setdefault(e["name"][: -len("_kernel_time")], [e["args"]["op_name"], 0.0])
            entry[1] += e["dur"] / 1e3 / runs
    return {k: (v[0], v[1]) for k, v in times.items()}


def measure(name: str, batch: int, runs: int) -> dict:
    """Depthwise conv and check kernel times of one model's rerun protection."""
    model = zoo.build(name)
    protected = onnx_ecc.transform(model, strategy="rerun")
    rng = np.random.default_rng(0)
    feeds = {model.graph.input[0].name: rng.random([batch] + list(zoo.input_shape(model))[1:], dtype=np.float32)}
    kinds = classify(optimized.optimized_graph(protected), depthwise_layers(model))
    totals, by_op = collections.Counter(), collections.Counter()
    for node, (op, ms) in profile(protected, feeds, runs).items():
        kind = kinds.get(node, "")
        if kind:
            totals[kind] += ms
        if kind == "check":
            by_op[op] += ms
    return {"model": name, "batch": batch, "conv_ms": totals["conv"], "check_ms": totals["check"],
            "ratio": totals["check"] / max(totals["conv"], 1e-9), "check_by_op": dict(by_op)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mobilenet_v2,efficientnet_lite")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    print(f"{'model':18s} {'batch':>5s} {'depthwise ms':>12s} {'checks ms':>9s} {'ratio':>6s}  checks by op type")
    for name in args.models.split(","):
        r = measure(name, args.batch, args.runs)
        ops = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["check_by_op"].items(), key=lambda kv: -kv[1]))
        print(f"{name:18s} {r['batch']:5d} {r['conv_ms']:12.2f} {r['check_ms']:9.2f} {r['ratio']:6.2f}  {ops}",
              flush=True)


if __name__ == "__main__":
    main()
