"""Latency overhead of protection under CUDAExecutionProvider.

For a ResNet-style CNN and a small transformer encoder (onnx_ecc.zoo, or minimal stand-ins
when the zoo cannot build them), at batch 1, 8 and 64, prints the median latency of:
  original   the unprotected model
  protected  onnx_ecc.transform's model (Decode / DepthwiseCheck on the GPU)
  dmr        duplicated execution: two copies of the model (own weights) in one graph and an
             on-device comparison of their outputs (CSE disabled so the copies stay apart)
and the ratios protected/original and dmr/original. Inputs and outputs stay on the device
(IOBinding); the variants are timed interleaved, repeat by repeat. TF32 is off (protected
models need it off; the original and dmr are timed the same way for fairness).

Exits 0 with a message where there is no GPU or the library was built without CUDA.

With --scales, the protected model is timed once per threshold scale ('output', the default of
onnx_ecc.transform, and/or 'input', which adds a max|X| pass per decoder).

  PYTHONPATH=. python benchmarks/gpu_overhead.py [--repeats 50] [--batches 1 8 64] [--scales output input]
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import onnx_ecc

CUDA = ("CUDAExecutionProvider", {"use_tf32": "0"})


# ---- models -------------------------------------------------------------------------------

def _fallback_resnet(seed: int = 0) -> onnx.ModelProto:
    """Stem conv + two residual blocks (conv-relu-conv + skip) + pool + Gemm; input [N,3,32,32]."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def w(name, *shape):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32), name))
        return name

    nodes.append(helper.make_node("Conv", ["x", w("Ws", 64, 3, 3, 3), w("Bs", 64)], ["s"], name="stem", pads=[1] * 4))
    nodes.append(helper.make_node("Relu", ["s"], ["h0"]))
    h = "h0"
    for i in range(2):
        nodes.append(helper.make_node("Conv", [h, w(f"Wa{i}", 64, 64, 3, 3), w(f"Ba{i}", 64)], [f"a{i}"], name=f"conv{i}a", pads=[1] * 4))
        nodes.append(helper.make_node("Relu", [f"a{i}"], [f"ra{i}"]))
        nodes.append(helper.make_node("Conv", [f"ra{i}", w(f"Wb{i}", 64, 64, 3, 3), w(f"Bb{i}", 64)], [f"b{i}"], name=f"conv{i}b", pads=[1] * 4))
        nodes.append(helper.make_node("Add", [f"b{i}", h], [f"s{i}"]))
        nodes.append(helper.make_node("Relu", [f"s{i}"], [f"h{i + 1}"]))
        h = f"h{i + 1}"
    nodes.append(helper.make_node("GlobalAveragePool", [h], ["p"]))
    nodes.append(helper.make_node("Flatten", ["p"], ["f"]))
    nodes.append(helper.make_node("Gemm", ["f", w("Wf", 10, 64)], ["logits"], name="fc", transB=1))
    g = helper.make_graph(nodes, "resnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _fallback_transformer(seed: int = 0, d: int = 128, seq: int = 32, layers: int = 2) -> onnx.ModelProto:
    """Attention-free stand-in: per layer Q/K/V/O projections and a 4d FFN with residuals."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def w(name, *shape):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32), name))
        return name

    h = "x"
    for i in range(layers):
        for p in "qkv":
            nodes.append(helper.make_node("MatMul", [h, w(f"W{p}{i}", d, d)], [f"{p}{i}"], name=f"{p}{i}"))
        nodes.append(helper.make_node("Mul", [f"q{i}", f"k{i}"], [f"qk{i}"]))
        nodes.append(helper.make_node("Add", [f"qk{i}", f"v{i}"], [f"at{i}"]))
        nodes.append(helper.make_node("MatMul", [f"at{i}", w(f"Wo{i}", d, d)], [f"o{i}"], name=f"o{i}"))
        nodes.append(helper.make_node("Add", [f"o{i}", h], [f"r{i}"]))
        nodes.append(helper.make_node("MatMul", [f"r{i}", w(f"W1{i}", d, 4 * d)], [f"f{i}"], name=f"ffn1_{i}"))
        nodes.append(helper.make_node("Relu", [f"f{i}"], [f"fr{i}"]))
        nodes.append(helper.make_node("MatMul", [f"fr{i}", w(f"W2{i}", 4 * d, d)], [f"g{i}"], name=f"ffn2_{i}"))
        nodes.append(helper.make_node("Add", [f"g{i}", f"r{i}"], [f"h{i}"]))
        h = f"h{i}"
    nodes.append(helper.make_node("Identity", [h], ["hidden"]))
    g = helper.make_graph(nodes, "encoder", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", seq, d])],
                          [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["N", seq, d])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def load_models() -> dict[str, onnx.ModelProto]:
    out = {}
    for name, fallback in (("resnet_style", _fallback_resnet), ("transformer_encoder", _fallback_transformer)):
        try:
            from onnx_ecc import zoo

            out[name] = getattr(zoo, name)()
        except Exception as e:  # no torch, or the zoo lacks the model
            print(f"# {name}: zoo unavailable ({type(e).__name__}: {e}); using a minimal stand-in", file=sys.stderr)
            out[name] = fallback()
    return out


def duplicated(model: onnx.ModelProto) -> onnx.ModelProto:
    """Two copies of the graph (the second with its own copy of the weights) and an on-device
    comparison: outputs of copy 1 plus one 'mismatch' = max |y1 - y2| per output."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inputs = {i.name for i in g.input}
    rename = {}
    for init in list(g.initializer):
        dup = onnx.TensorProto()
        dup.CopyFrom(init)
        dup.name = rename[init.name] = "dmr2_" + init.name
        g.initializer.append(dup)
    for idx, node in enumerate(list(g.node)):
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = f"dmr2_{node.name or idx}"
        for i, t in enumerate(copy.input):
            if t and t not in inputs:
                copy.input[i] = rename.setdefault(t, "dmr2_" + t)
        for i, t in enumerate(copy.output):
            copy.output[i] = rename.setdefault(t, "dmr2_" + t)
        g.node.append(copy)
    for k, out in enumerate(list(g.output)):
        a, b = out.name, rename[out.name]
        g.node.extend([helper.make_node("Sub", [a, b], [f"dmr_d{k}"]), helper.make_node("Abs", [f"dmr_d{k}"], [f"dmr_a{k}"]),
                       helper.make_node("ReduceMax", [f"dmr_a{k}"], [f"mismatch{k}"], keepdims=0)])
        g.output.append(helper.make_tensor_value_info(f"mismatch{k}", TensorProto.FLOAT, []))
    return m


# ---- timing -------------------------------------------------------------------------------

class Runner:
    """One session with inputs and outputs bound on the GPU."""

    def __init__(self, model: onnx.ModelProto, x: np.ndarray, options: ort.SessionOptions, disabled=()):
        self.sess = ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=[CUDA],
                                         disabled_optimizers=list(disabled))
        self.binding = self.sess.io_binding()
        self.x = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
        self.binding.bind_ortvalue_input(self.sess.get_inputs()[0].name, self.x)
        for o in self.sess.get_outputs():
            self.binding.bind_output(o.name, "cuda", 0)

    def __call__(self) -> float:
        t0 = time.perf_counter()
        self.sess.run_with_iobinding(self.binding)
        self.binding.synchronize_outputs()
        return time.perf_counter() - t0

    def outputs(self):
        return [o.numpy() for o in self.binding.get_outputs()]


def bench(name: str, model: onnx.ModelProto, protected: onnx.ModelProto, batch: int, repeats: int, warmup: int = 5):
    shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else batch
             for d in model.graph.input[0].type.tensor_type.shape.dim]
    shape[0] = batch
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    runners = {
        "original": Runner(model, x, ort.SessionOptions()),
        "protected": Runner(protected, x, onnx_ecc.session_options()),
        "dmr": Runner(duplicated(model), x, ort.SessionOptions(), disabled=["CommonSubexpressionElimination"]),
    }
    before = onnx_ecc.read_counters()
    for r in runners.values():
        for _ in range(warmup):
            r()
    times = {k: [] for k in runners}
    order = list(runners)
    for rep in range(repeats):
        for k in order[rep % 3:] + order[:rep % 3]:  # interleaved, rotating which goes first
            times[k].append(runners[k]())
    after = onnx_ecc.read_counters()
    flagged = sum(v.flagged - (before[k].flagged if k in before else 0) for k, v in after.items())
    ref = runners["original"].outputs()[0]
    got = runners["protected"].outputs()[0]
    err = float(np.max(np.abs(got - ref))) / (float(np.max(np.abs(ref))) + 1e-30)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"{name:20s} {batch:5d} {med['original']:10.3f} {med['protected']:10.3f} {med['dmr']:10.3f} "
          f"{med['protected'] / med['original']:9.3f} {med['dmr'] / med['original']:9.3f} {flagged:8d} {err:9.2e}",
          flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--scales", nargs="+", choices=["output", "input"], default=["output"],
                    help="threshold scale(s) of the protected model (onnx_ecc.transform's scale)")
    args = ap.parse_args(argv)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print("no GPU: CUDAExecutionProvider is not available in this onnxruntime; nothing to measure")
        return 0
    try:
        if not hasattr(ctypes.CDLL(onnx_ecc.library_path()), "OnnxEcc_HasCuda"):
            print("the onnx-ecc library was built without CUDA (build with ONNX_ECC_CUDA=ON); nothing to measure")
            return 0
    except (OSError, FileNotFoundError) as e:
        print(f"onnx-ecc library unavailable: {e}")
        return 0
    models = load_models()
    print(f"# onnxruntime {ort.__version__}, {ort.get_device()}; median ms over {args.repeats} interleaved repeats")
    print(f"{'model':20s} {'batch':>5s} {'original':>10s} {'protected':>10s} {'dmr':>10s} "
          f"{'prot/orig':>9s} {'dmr/orig':>9s} {'flagged':>8s} {'rel.err':>9s}")
    for (name, model), scale in [(m, s) for m in models.items() for s in args.scales]:
        protected = onnx_ecc.transform(model, scale=scale)
        label = name if args.scales == ["output"] else f"{name}/{scale}"
        for batch in args.batches:
            try:
                bench(label, model, protected, batch, args.repeats)
            except Exception as e:  # e.g. a CUDA provider that cannot start (no device)
                msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                print(f"{label:20s} {batch:5d} failed: {msg}")
                if "CUDA" in msg and ("no CUDA-capable device" in msg or "cudaGetDeviceCount" in msg):
                    print("no usable GPU; nothing to measure")
                    return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
