"""The int8 CUDA kernels (IntDecode, Int32Decode, Im2ColNhwc, IntSampleCheck) on protected int8 models.

Two steps, so that the GPU machine needs neither torch nor the datasets:

  prepare DIR   (any machine with torch and the MNIST data) writes the pretrained MNIST CNN quantised
                three ways (u8s8 and s8s8_pc QDQ, quantize_dynamic), each protected by duplication,
                the u8s8 one also by the rerun strategy, and 64 real test images, to DIR
  run DIR       (the GPU machine) for each model: a CUDA session (CPU fallback allowed for the
                integer matmuls onnxruntime has no CUDA kernel for) against a CPU session on the
                images: outputs bit for bit, which provider each of our int8 ops ran on (session
                profile), checks failed, and the median latency of each (interleaved repeats)

Exit status of run: 0 when every output is bit-identical, every int8 op of ours ran on the CUDA
provider and no check failed; 1 otherwise; 0 with a message where there is no GPU.

  PYTHONPATH=. python benchmarks/gpu_int8_check.py prepare build/gpu_int8
  PYTHONPATH=. ONNX_ECC_LIBRARY=build/cuda/libonnx_ecc_ops.so python benchmarks/gpu_int8_check.py run build/gpu_int8
"""

from __future__ import annotations

import argparse
import ctypes
import json
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort

import onnx_ecc

CUDA = ("CUDAExecutionProvider", {"use_tf32": "0"})
OUR_INT8_OPS = {"IntDecode", "Int32Decode", "Im2ColNhwc", "IntSampleCheck"}
CASES = [("u8s8", "duplication"), ("s8s8_pc", "duplication"), ("dynamic", "duplication"), ("u8s8", "rerun")]


def prepare(out: pathlib.Path) -> int:
    from onnx_ecc import datasets, zoo
    from onnx_ecc.zoo.quantised import quantize_dynamic_int8, quantize_qdq

    out.mkdir(parents=True, exist_ok=True)
    model, data = zoo.mnist_cnn(), datasets.load("mnist")
    np.save(out / "images.npy", data.x_test[:64].reshape(-1, 1, 28, 28).astype(np.float32))
    calibration = data.x_train[:128].reshape(-1, 1, 28, 28)
    for fmt, strategy in CASES:
        q = quantize_dynamic_int8(model) if fmt == "dynamic" else quantize_qdq(model, calibration, fmt)
        protected = onnx_ecc.transform(q) if strategy == "duplication" else onnx_ecc.transform(q, strategy=strategy)
        onnx.save(protected, str(out / f"mnist_cnn_{fmt}_{strategy}.onnx"))
        ops = sorted({n.op_type for n in protected.graph.node} & OUR_INT8_OPS)
        print(f"wrote mnist_cnn_{fmt}_{strategy}.onnx ({', '.join(ops)})")
    return 0


def _session(model: onnx.ModelProto, gpu: bool, profile: str | None = None) -> ort.InferenceSession:
    so = onnx_ecc.session_options()
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = profile
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=[CUDA, "CPUExecutionProvider"] if gpu else ["CPUExecutionProvider"])


def _placements(sess: ort.InferenceSession) -> dict[str, set[str]]:
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    out: dict[str, set[str]] = {}
    for e in events:
        args = e.get("args", {})
        if e.get("cat") == "Node" and "provider" in args:
            out.setdefault(args.get("op_name", ""), set()).add(args["provider"])
    return out


def _median_ms(sessions: dict, feeds: dict, repeats: int) -> dict[str, float]:
    times = {k: [] for k in sessions}
    order = list(sessions)
    for rep in range(repeats):  # interleaved, rotating which goes first
        for k in order[rep % len(order):] + order[:rep % len(order)]:
            t0 = time.perf_counter()
            sessions[k].run(None, feeds)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def run(folder: pathlib.Path, repeats: int) -> int:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print("no GPU: CUDAExecutionProvider is not available in this onnxruntime; nothing to check")
        return 0
    if not hasattr(ctypes.CDLL(onnx_ecc.library_path()), "OnnxEcc_HasCuda"):
        print("the onnx-ecc library was built without CUDA (ONNX_ECC_CUDA=ON); nothing to check")
        return 0
    from onnx_ecc.transform.record import read_protection

    x = np.load(folder / "images.npy")
    ok = True
    print(f"# onnxruntime {ort.__version__}; {x.shape[0]} MNIST test images a run; median ms over {repeats} repeats")
    print(f"{'model':32s} {'identical':>9s} {'flagged':>7s} {'cpu ms':>8s} {'cuda ms':>8s}  placement of our int8 ops")
    for fmt, strategy in CASES:
        name = f"mnist_cnn_{fmt}_{strategy}"
        model = onnx.load(str(folder / f"{name}.onnx"))
        model_id = read_protection(model)["model_id"]
        try:
            with tempfile.TemporaryDirectory() as tmp:
                before = {k: v.flagged for k, v in onnx_ecc.read_counters(model_id).items()}
                gpu = _session(model, True, str(pathlib.Path(tmp) / name))
                feeds = {gpu.get_inputs()[0].name: x}
                got = gpu.run(None, feeds)[0]
                placed = _placements(gpu)
                flagged = sum(v.flagged - before.get(k, 0) for k, v in onnx_ecc.read_counters(model_id).items())
            cpu = _session(model, False)
            want = cpu.run(None, feeds)[0]
            med = _median_ms({"cpu": cpu, "cuda": _session(model, True)}, feeds, repeats)
        except Exception as e:  # a CUDA provider that cannot start, a kernel error status: say which
            print(f"{name:32s} failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            ok = False
            continue
        identical = got.shape == want.shape and np.array_equal(got.view(np.uint8), want.view(np.uint8))
        ours = {op: sorted(p) for op, p in placed.items() if op in OUR_INT8_OPS}
        on_cuda = bool(ours) and all(p == ["CUDAExecutionProvider"] for p in ours.values())
        ok &= identical and on_cuda and flagged == 0
        print(f"{name:32s} {str(identical):>9s} {flagged:7d} {med['cpu']:8.3f} {med['cuda']:8.3f}  {ours}", flush=True)
    print("all outputs bit-identical, our int8 ops on CUDA, no check failed" if ok else "MISMATCH: see above")
    return 0 if ok else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="step", required=True)
    sub.add_parser("prepare").add_argument("folder", type=pathlib.Path)
    r = sub.add_parser("run")
    r.add_argument("folder", type=pathlib.Path)
    r.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args(argv)
    return prepare(args.folder) if args.step == "prepare" else run(args.folder, args.repeats)


if __name__ == "__main__":
    sys.exit(main())
