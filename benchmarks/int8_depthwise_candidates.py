"""What an inline exact check of an int8 depthwise conv would cost, against the fused layer (CPU, one run).

An exact integer check needs the layer's int32 accumulators, which onnxruntime's fused QLinearConv never
gives out; the candidates are timed on MobileNetV2's depthwise 3x3 shapes against that QLinearConv
(QDQ, fused by onnxruntime): ``convinteger`` computes the accumulators with ConvInteger(group=C) (a lower
bound: the check and the requantisation would come on top), ``twice`` runs the fused layer twice (bit-for-bit
duplication, which detects but cannot tell which copy is wrong). Ratios to the fused layer, medians of
interleaved runs.

    python benchmarks/int8_depthwise_candidates.py [--batches 1,8] [--repeats 50]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

# (channels, input size, stride) of MobileNetV2's depthwise 3x3 convs (one per distinct shape)
SHAPES = [(32, 112, 1), (96, 112, 2), (144, 56, 1), (144, 56, 2), (192, 28, 1), (384, 14, 1), (576, 14, 2),
          (960, 7, 1)]


def _models(c: int, stride: int, seed: int = 0):
    """(fused QDQ depthwise conv, ConvInteger(group=C) of the same weights) on a uint8 input."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-127, 128, (c, 1, 3, 3), dtype=np.int8)
    conv = dict(group=c, kernel_shape=[3, 3], strides=[stride, stride], pads=[1, 1, 1, 1])
    inits = [numpy_helper.from_array(v, k) for k, v in (
        ("w", w), ("s", np.array(0.01, np.float32)), ("sw", np.array(0.002, np.float32)), ("z", np.array(3, np.uint8)),
        ("zw", np.array(0, np.int8)), ("sy", np.array(0.05, np.float32)))]
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, None)
    nodes = [helper.make_node("DequantizeLinear", ["x", "s", "z"], ["xf"]),
             helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wf"]),
             helper.make_node("Conv", ["xf", "wf"], ["yf"], **conv),
             helper.make_node("QuantizeLinear", ["yf", "sy", "z"], ["y"])]
    y = helper.make_tensor_value_info("y", TensorProto.UINT8, None)
    qdq = helper.make_model(helper.make_graph(nodes, "qdq", [x], [y], inits),
                            opset_imports=[helper.make_opsetid("", 17)])
    integer = helper.make_model(helper.make_graph(
        [helper.make_node("ConvInteger", ["x", "w", "z"], ["y"], **conv)], "int", [x],
        [helper.make_tensor_value_info("y", TensorProto.INT32, None)], inits[:1] + inits[3:4]),
        opset_imports=[helper.make_opsetid("", 17)])
    return qdq, integer


def _session(model):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def measure(c: int, size: int, stride: int, batch: int, repeats: int) -> dict:
    qdq, integer = (_session(m) for m in _models(c, stride))
    feeds = {"x": np.random.default_rng(1).integers(0, 256, (batch, c, size, size), dtype=np.uint8)}
    runs = {"fused": lambda: qdq.run(None, feeds), "convinteger": lambda: integer.run(None, feeds),
            "twice": lambda: (qdq.run(None, feeds), qdq.run(None, feeds))}
    for f in runs.values():
        f()
        f()
    times = {k: [] for k in runs}
    for _ in range(repeats):
        for k, f in runs.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {"fused_ms": 1e3 * med["fused"], "convinteger": med["convinteger"] / med["fused"],
            "twice": med["twice"] / med["fused"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    print(" ".join(f"{h:>{n}s}" for h, n in (("channels", 8), ("size", 5), ("stride", 6), ("batch", 5),
                                               ("fused ms", 9), ("convinteger", 12), ("twice", 6))))
    for batch in (int(b) for b in args.batches.split(",")):
        for c, size, stride in SHAPES:
            r = measure(c, size, stride, batch, args.repeats)
            print(f"{c:8d} {size:5d} {stride:6d} {batch:5d} {r['fused_ms']:9.3f} {r['convinteger']:12.2f} "
                  f"{r['twice']:6.2f}", flush=True)


if __name__ == "__main__":
    main()
