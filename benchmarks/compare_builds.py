"""Two builds of onnx-ecc on the same models, timed interleaved in one process, with the
optimized graphs' Reorder nodes and fusions counted (a before/after table for a change).

Protect each model with both versions first, into DIR as NAME.onnx (the original),
NAME_old_inline.onnx, NAME_old_rerun.onnx (transformed by the old checkout with its library) and
NAME_new_inline.onnx, NAME_new_rerun.onnx; then

    python benchmarks/compare_builds.py --dir DIR --old-lib OLD.so --new-lib NEW.so --models mobilenet_v2,bert_encoder

Both custom-op libraries are registered side by side (each session its own); the new build's
sessions use onnxruntime's priority-based execution order, as onnx_ecc.session_options() does.
"""
import argparse
import collections
import os
import statistics
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort

def session(path, lib, priority):
    o = ort.SessionOptions(); o.log_severity_level = 3
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if lib: o.register_custom_ops_library(lib)
    if priority: o.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    return ort.InferenceSession(path, o, providers=['CPUExecutionProvider'])
def counts(path, lib, priority):
    o = ort.SessionOptions(); o.log_severity_level = 3
    if lib: o.register_custom_ops_library(lib)
    if priority: o.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    f = tempfile.mktemp(suffix='.onnx'); o.optimized_model_filepath = f
    ort.InferenceSession(path, o, providers=['CPUExecutionProvider'])
    g = onnx.load(f).graph; os.remove(f)
    act = lambda n: next((a.s.decode() for a in n.attribute if a.name == 'activation'), '')
    c = collections.Counter()
    for n in g.node:
        if n.op_type in ('ReorderInput', 'ReorderOutput'): c[n.op_type] += 1
        if n.op_type == 'Conv' and act(n): c['Conv+act'] += 1
        if n.domain == 'com.microsoft' and n.op_type in ('FusedMatMul', 'BiasGelu', 'SkipLayerNormalization'):
            c[n.op_type] += 1
    return dict(c)
ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--dir", required=True)
ap.add_argument("--old-lib", required=True)
ap.add_argument("--new-lib", required=True)
ap.add_argument("--models", default="mobilenet_v2,efficientnet_lite,resnet18,bert_encoder")
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--repeats", type=int, default=12)
args = ap.parse_args()
OLD, NEW = args.old_lib, args.new_lib
for name in args.models.split(','):
    d = os.path.join(args.dir, name)
    variants = {'original': (d + '.onnx', None, False), 'old inline': (d + '_old_inline.onnx', OLD, False),
                'old rerun': (d + '_old_rerun.onnx', OLD, False), 'new inline': (d + '_new_inline.onnx', NEW, True),
                'new rerun': (d + '_new_rerun.onnx', NEW, True)}
    S = {k: session(*v) for k, v in variants.items()}
    m = onnx.load(d + '.onnx'); shape = [args.batch] + [x.dim_value for x in m.graph.input[0].type.tensor_type.shape.dim][1:]
    feeds = {m.graph.input[0].name: np.random.default_rng(0).random(shape, dtype=np.float32)}
    for s in S.values():
        for _ in range(3): s.run(None, feeds)
    t = {k: [] for k in S}
    for _ in range(args.repeats):
        for k, s in S.items():
            t0 = time.perf_counter(); s.run(None, feeds); t[k].append(time.perf_counter() - t0)
    base = statistics.median(t['original'])
    print(f"{name} batch {args.batch}, original {base*1e3:.1f} ms: " + ", ".join(f"{k} {statistics.median(v)/base:.3f}" for k, v in t.items() if k != 'original'), flush=True)
    for k, v in variants.items():
        print(f"   optimized graph {k}: {counts(*v)}", flush=True)
