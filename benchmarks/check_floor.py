"""What the least a per-layer output check reads costs, before any checking logic (CPU).

Every exact check of a conv must read the conv's output before its activation (a spatial
pool is the cheapest such read) and, to predict that output, the conv's input. This script
adds only those reads to a model, as GlobalAveragePools whose results become extra graph
outputs, and prints their latency next to the original's and the rerun strategy's, measured
in one run with interleaved repeats at onnxruntime's default optimisation level:

- ``post``: pool every conv's activation output (onnxruntime keeps Conv+Add+Relu fused);
- ``pre``: pool every conv's output before its activation (after a residual Add), which
  stops onnxruntime fusing the Relu into the conv;
- ``pre+input``: ``pre`` plus a pool of every conv's input;
- ``in-line``: every conv's output, before its activation, through a custom op that only
  copies it (InjectFault with rate 0): the least any decoder on the data path costs, since
  onnxruntime converts a tensor out of its blocked layout for a custom op and back after it;
- ``inline`` and ``rerun``: the full transform with either strategy (the default checks);
- ``duplicated``: the original run twice and compared.

    python benchmarks/check_floor.py [--models resnet_style,resnet_style_wide] [--batch 32] [--repeats 40]
"""

from __future__ import annotations

import argparse

import numpy as np
import onnx
import onnx_graphsurgeon as gs

import onnx_ecc
from onnx_ecc import ops, zoo
from onnx_ecc.transform.common import absorbable_residual, single_consumer
from overhead import _feeds, _session, time_interleaved

PLACES = ("post", "pre", "pre+input", "in-line")


def _activation_output(y: gs.Variable, graph: gs.Graph) -> gs.Variable:
    """The tensor after the residual Add and activation (Relu, Clip) that only ``y`` feeds, as far as they go."""
    for op in ("Add", "Relu", "Clip"):
        node = single_consumer(y, graph, op)
        if node is not None:
            y = node.outputs[0]
    return y


def with_pools(model: onnx.ModelProto, place: str) -> onnx.ModelProto:
    """``model`` plus a GlobalAveragePool, exposed as a graph output, on each conv's tensors at ``place``."""
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
    pooled: set[str] = set()

    def pool(t: gs.Variable) -> None:
        if t.name in pooled:
            return
        pooled.add(t.name)
        mean = gs.Variable(f"{t.name}__floor_mean", dtype=np.float32)
        graph.nodes.append(gs.Node("GlobalAveragePool", f"{t.name}__floor_pool", {}, [t], [mean]))
        graph.outputs.append(mean)

    def pass_through(y: gs.Variable) -> None:
        """Route ``y`` through a copying custom op (as a decoder on the data path would be)."""
        copy = gs.Variable(f"{y.name}__floor_copy", dtype=np.float32)
        for consumer in list(y.outputs):
            consumer.inputs[consumer.inputs.index(y)] = copy
        seed, rate = gs.Constant(f"{y.name}__floor_seed", np.zeros(1, np.int64)), \
            gs.Constant(f"{y.name}__floor_rate", np.zeros(1, np.float32))
        graph.nodes.append(gs.Node(ops.INJECT_FAULT.name, f"{y.name}__floor_inline", {}, [y, seed, rate], [copy],
                                   domain=ops.DOMAIN))

    for node in [n for n in graph.nodes if n.op == "Conv"]:
        y = node.outputs[0]
        if place == "in-line":
            if y not in graph.outputs:
                pass_through(y)
            continue
        if place == "post":
            pool(_activation_output(y, graph))
            continue
        residual = absorbable_residual(y, graph)
        pool(residual[0].outputs[0] if residual else y)
        if place == "pre+input":
            pool(node.inputs[0])
    graph.toposort()
    out = gs.export_onnx(graph, do_type_check=False)
    if place == "in-line":
        out.opset_import.append(onnx.helper.make_opsetid(ops.DOMAIN, ops.OPSET_VERSION))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet_style,resnet_style_wide")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=40)
    args = ap.parse_args()
    columns = PLACES + ("inline", "rerun", "duplicated")
    print(f"{'model':20s} {'batch':>5s} {'orig ms':>8s} " + " ".join(f"{k:>10s}" for k in columns))
    for name in args.models.split(","):
        model = getattr(zoo, name)()
        variants = {"original": model, **{p: with_pools(model, p) for p in PLACES},
                    "inline": onnx_ecc.transform(model, mode="correct"),
                    "rerun": onnx_ecc.transform(model, mode="correct", strategy="rerun")}
        sessions = {k: _session(m, "default", 0) for k, m in variants.items()}
        med = time_interleaved(sessions, _feeds(model, args.batch), args.repeats, duplicate="original")
        print(f"{name:20s} {args.batch:5d} {1e3 * med['original']:8.2f} "
              + " ".join(f"{med[k] / med['original']:10.3f}" for k in columns), flush=True)


if __name__ == "__main__":
    main()
