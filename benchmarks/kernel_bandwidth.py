"""Memory bandwidth of each custom op's CPU kernel against a plain copy, in one run.

Every op is timed as a one-node ONNX model in onnxruntime (CPU, intra-op spinning off as in
overhead.py), on fault-free inputs of realistic shapes, so that only the fast path runs:

- ``Decode`` on NCHW conv outputs (8, C, H, W) and on rows [rows, C] (block 32, parity 2);
- ``DepthwiseCheck`` of a 3x3, stride-1, pad-1 depthwise conv on (8, C, H, W);
- ``ParityCheck`` of Y (8, C, H, W) or [rows, C] against its separately computed parity P, and
  of every 8th row of [1024, 384] (``/8``: stride 8, as the BERT encoder's rerun fast path);
- ``SumCheck`` (a few hundred bytes: only its latency is printed).

An op's bytes are what it must at least move: Decode reads Y and writes Z; DepthwiseCheck reads
X and Y and writes Z; ParityCheck reads Y (its sampled rows) and P. GB/s = those bytes / median seconds per run.

The reference is a plain copy of as many bytes, timed in the same rounds: a one-node
``Add(x, zero)`` whose float32 input holds half the op's bytes and whose zero is a graph input
(a broadcast scalar, so that no optimiser removes the node), i.e. one read and one write of
every element, by onnxruntime's own vectorised, multi-threaded elementwise kernel. Ratio = op
GB/s / copy GB/s; the target is >= 0.5 for every op.

``--libraries OLD.so,NEW.so`` times each op with every listed build of the custom-op library
(one session each) in the same interleaved rounds as the copy: a before/after table from one run.
``OPENBLAS_NUM_THREADS`` is set to 1 before numpy loads: the inputs are encoded with a matmul,
and OpenBLAS's threads would otherwise keep spinning on the shared cores while the ops are timed.

    python benchmarks/kernel_bandwidth.py [--repeats 15] [--ops Decode,DepthwiseCheck,...] [--quick]
                                          [--libraries OLD.so,NEW.so]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: see the docstring

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import onnx_ecc
from onnx_ecc import ops
from onnx_ecc.codes import Layout

NCHW = [(8, 32, 112, 112), (8, 144, 56, 56), (8, 192, 28, 28), (8, 576, 14, 14), (8, 1280, 7, 7)]
ROWS = [(256, 384), (256, 1536), (1024, 1024), (4096, 4096)]
# ParityCheck with stride: the BERT encoder's rerun fast path checks every 8th row of a MatMul output.
STRIDED_ROWS = [((1024, 384), 8)]
BLOCK, PARITY = 32, 2


def _model(nodes, inputs, outputs, initializers=()):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, t, None) for n, t in inputs],
                          [helper.make_tensor_value_info(n, t, None) for n, t in outputs], list(initializers))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.DOMAIN, 1)],
                             ir_version=9)


def _session(model, threads=0, library=None):
    """A session of model; library: a build of the custom-op library, None onnx_ecc's, False none."""
    opts = ort.SessionOptions()
    opts.execution_order = ort.ExecutionOrder.PRIORITY_BASED  # as onnx_ecc.session_options() sets
    if library:
        opts.register_custom_ops_library(library)
    elif library is None:
        opts = onnx_ecc.session_options(opts)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])


def _copy_case(nbytes: int):
    """The reference: Add(x, zero) over nbytes / 2 bytes of float32 (one read, one write)."""
    n = max(nbytes // 8, 1)
    model = _model([helper.make_node("Add", ["x", "zero"], ["y"])], [("x", TensorProto.FLOAT), ("zero", TensorProto.FLOAT)],
                   [("y", TensorProto.FLOAT)])
    return model, {"x": np.random.default_rng(0).random(n, dtype=np.float32), "zero": np.zeros(1, np.float32)}


def _encoded(rng, layout: Layout, data: np.ndarray, axis: int) -> np.ndarray:
    """data (channels on axis) with its parity channels, as a protected layer would output it."""
    moved = np.moveaxis(data, axis, 0)
    aug = layout.augment_rows(moved.reshape(layout.data_channels, -1))
    return np.ascontiguousarray(np.moveaxis(aug.reshape((layout.total_channels,) + moved.shape[1:]), 0, axis),
                                dtype=np.float32)


def _code_attrs(layout: Layout, layer: str):
    n = len(layout.block_sizes) * layout.parity
    return dict(data_channels=layout.data_channels, block=layout.block, parity=layout.parity,
                generator=layout.generator_attribute(), noise_gain=layout.output_noise_gains(), noise_offset=[1.0] * n,
                tolerance=64.0, layer=layer, model_id="kernel_bandwidth")


def decode_case(shape, rows: bool):
    rng = np.random.default_rng(1)
    layout = Layout(shape[1], BLOCK, PARITY)
    y = _encoded(rng, layout, rng.standard_normal(shape, dtype=np.float32), 1)
    node = ops.DECODE.make_node(["Y"], ["Z"], "op", axis=1 if not rows else -1, **_code_attrs(layout, "decode"))
    model = _model([node], [("Y", TensorProto.FLOAT)], [("Z", TensorProto.FLOAT)])
    return model, {"Y": y}, y.nbytes + y.nbytes * layout.data_channels // layout.total_channels


def depthwise_case(shape):
    rng = np.random.default_rng(2)
    c = shape[1]
    w = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    x = rng.standard_normal(shape, dtype=np.float32)
    conv = _model([helper.make_node("Conv", ["x", "w", "b"], ["y"], group=c, pads=[1, 1, 1, 1])],
                  [("x", TensorProto.FLOAT)], [("y", TensorProto.FLOAT)],
                  [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    y = _session(conv, library=False).run(None, {"x": x})[0]
    node = ops.DEPTHWISE_CHECK.make_node(["X", "Y"], ["Z"], "op", weights=numpy_helper.from_array(w),
                                         bias=numpy_helper.from_array(b),
                                         weight_sums=(w.reshape(c, -1).astype(np.float64).sum(1) + b).tolist(),
                                         pads=[1, 1, 1, 1], layer="depthwise", model_id="kernel_bandwidth")
    model = _model([node], [("X", TensorProto.FLOAT), ("Y", TensorProto.FLOAT)], [("Z", TensorProto.FLOAT)])
    return model, {"X": x, "Y": y}, x.nbytes + 2 * y.nbytes


def parity_case(shape, rows: bool, stride: int = 1):
    """ParityCheck of Y against P; stride > 1 (rows only): P holds the checks of every stride-th
    row, and the bytes are those rows' and P's (what the op reads)."""
    rng = np.random.default_rng(3)
    layout = Layout(shape[1], BLOCK, PARITY)
    y = _encoded(rng, layout, rng.standard_normal(shape, dtype=np.float32), 1)
    data = np.ascontiguousarray(np.take(y, range(layout.data_channels), axis=1))
    par = np.ascontiguousarray(np.take(y, range(layout.data_channels, layout.total_channels), axis=1)[::stride])
    extra = {"stride": stride} if stride > 1 else {}
    node = ops.PARITY_CHECK.make_node(["Y", "P"], ["Raised"], "op", axis=1 if not rows else -1,
                                      **_code_attrs(layout, "parity"), **extra)
    model = _model([node], [("Y", TensorProto.FLOAT), ("P", TensorProto.FLOAT)], [("Raised", TensorProto.BOOL)])
    return model, {"Y": data, "P": par}, data[::stride].nbytes + par.nbytes


def sum_check_case(batch=8, channels=1280, taps=9):
    rng = np.random.default_rng(4)
    w = rng.standard_normal(channels)
    y = rng.standard_normal((batch, channels, 1, 1)).astype(np.float32)
    x = np.zeros((batch, taps, 1, 1), np.float32)
    x[:, 0, 0, 0] = (y.reshape(batch, -1).astype(np.float64) @ w).astype(np.float32)
    node = ops.SUM_CHECK.make_node(["Y", "X"], ["Raised"], "op", weights=w.tolist(), taps=taps, layer="sum",
                                   model_id="kernel_bandwidth")
    model = _model([node], [("Y", TensorProto.FLOAT), ("X", TensorProto.FLOAT)], [("Raised", TensorProto.BOOL)])
    return model, {"Y": y, "X": x}, y.nbytes + x.nbytes


def time_rounds(op_runs, copy_sess, copy_feeds, repeats: int) -> tuple[list[float], float]:
    """Median seconds per run of each (session, feeds) in op_runs and of the copy, timed in
    interleaved rounds after a warm-up."""
    runs = list(op_runs) + [(copy_sess, copy_feeds)]
    for _ in range(3):
        for sess, feeds in runs:
            sess.run(None, feeds)
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for t, (sess, feeds) in zip(times, runs):
            t0 = time.perf_counter()
            sess.run(None, feeds)
            t.append(time.perf_counter() - t0)
    medians = [statistics.median(t) for t in times]
    return medians[:-1], medians[-1]


def cases(selected: set[str], quick: bool):
    nchw = NCHW[1::2] if quick else NCHW
    rows = ROWS[::2] if quick else ROWS
    if "Decode" in selected:
        for s in nchw:
            yield "Decode", "x".join(map(str, s)), lambda s=s: decode_case(s, rows=False)
        for s in rows:
            yield "Decode", "x".join(map(str, s)), lambda s=s: decode_case(s, rows=True)
    if "DepthwiseCheck" in selected:
        for s in nchw:
            yield "DepthwiseCheck", "x".join(map(str, s)), lambda s=s: depthwise_case(s)
    if "ParityCheck" in selected:
        for s in nchw:
            yield "ParityCheck", "x".join(map(str, s)), lambda s=s: parity_case(s, rows=False)
        for s in rows:
            yield "ParityCheck", "x".join(map(str, s)), lambda s=s: parity_case(s, rows=True)
        for s, stride in STRIDED_ROWS:
            yield "ParityCheck", "x".join(map(str, s)) + f" /{stride}", lambda s=s, k=stride: parity_case(s, True, k)
    if "SumCheck" in selected:
        yield "SumCheck", "8x1280 means", sum_check_case


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", default="Decode,DepthwiseCheck,ParityCheck,SumCheck")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: onnxruntime's default)")
    ap.add_argument("--quick", action="store_true", help="every other shape")
    ap.add_argument("--libraries", default="",
                    help="comma-separated builds of the library, each timed in the same rounds (default: onnx_ecc's)")
    args = ap.parse_args()
    libraries = [p for p in args.libraries.split(",") if p] or [None]
    lib_col = len(libraries) > 1
    print(f"{'op':15s} {'shape':>18s} {'MB':>7s} {'op ms':>8s} {'op GB/s':>8s} {'copy GB/s':>9s} {'ratio':>6s}"
          + ("  library" if lib_col else ""))
    for op, label, make in cases(set(args.ops.split(",")), args.quick):
        try:
            model, feeds, nbytes = make()
            sessions = [_session(model, args.threads, lib) for lib in libraries]
        except Exception as e:  # an op this library build does not have yet
            print(f"{op:15s} {label:>18s}  n/a ({str(e).splitlines()[0][:60]})")
            continue
        copy_model, copy_feeds = _copy_case(nbytes)
        copy_sess = _session(copy_model, args.threads, library=False)
        t_ops, t_copy = time_rounds([(s, feeds) for s in sessions], copy_sess, copy_feeds, args.repeats)
        copy_bytes = 2 * copy_feeds["x"].nbytes
        copy_gbs = copy_bytes / t_copy / 1e9
        for lib, t_op in zip(libraries, t_ops):
            suffix = f"  {lib}" if lib_col else ""
            if op == "SumCheck":
                print(f"{op:15s} {label:>18s} {nbytes / 1e6:7.3f} {1e3 * t_op:8.3f} {'(latency only)':>26s}{suffix}",
                      flush=True)
                continue
            op_gbs = nbytes / t_op / 1e9
            print(f"{op:15s} {label:>18s} {nbytes / 1e6:7.1f} {1e3 * t_op:8.3f} {op_gbs:8.2f} {copy_gbs:9.2f} "
                  f"{op_gbs / copy_gbs:6.2f}{suffix}", flush=True)
    if libraries == [None]:
        flagged = sum(c.flagged for c in onnx_ecc.read_counters("kernel_bandwidth").values())
        if flagged:
            print(f"warning: {flagged} block(s) flagged on fault-free inputs: the timings include repairs")


if __name__ == "__main__":
    main()
