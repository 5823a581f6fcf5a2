"""Latency of protected models relative to the originals, measured in one run (CPU).

For each model and batch size: original, protected (correct and detect modes, inline
decoding; correct mode with the rerun strategy, whose fast path only checks, with its default
sample checks of convs and with sum checks; the rerun strategy with the products of two
activations - attention - left alone, in models that have them) and duplicated
execution (the original run twice and compared, what users would otherwise do), with
interleaved repeats and medians, at onnxruntime's default optimisation level unless
--level says otherwise. Prints ratios to the original. ``--format float16`` converts each model
to float16 first (onnxconverter-common, inputs and outputs kept in float32). ``--format int8``
quantises it with quantize_static (QDQ, uint8 activations, int8 weights, calibrated on the random
inputs): the original is then the fused QDQ model (QLinearConv / QGemm), the protected models use
the exact integer checks (IntDecode; under the rerun strategy the fused layers with exact sample
checks, IntSampleCheck, decoding only a flagged run), and the float32 column is the float model
before quantisation.

``--format int8-qoperator`` quantises it in onnxruntime's operator format (quantize_static with
QuantFormat.QOperator: QLinearConv, com.microsoft:QGemm, QLinearMatMul, the same calibration) and
``--format int8-dynamic`` with quantize_dynamic (MatMulInteger / ConvInteger with int32 outputs; the
protected layers end in Int32Decode): the original is then that model as onnxruntime runs it.

    python benchmarks/overhead.py [--models resnet_style,...] [--batches 1,32] [--repeats 30]
        [--format float16|int8|int8-qoperator|int8-dynamic]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import onnxruntime as ort

import onnx_ecc
from onnx_ecc import zoo

VARIANTS = ("correct", "detect", "rerun", "rerun_sum", "rerun_no_attn", "duplicated", "float32")
LEVELS = {"default": None, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def _session(model, level, threads):
    opts = onnx_ecc.session_options()
    # Sessions are timed in turns; spinning worker threads of one would steal the cores of the next.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if LEVELS[level] is not None:
        opts.graph_optimization_level = LEVELS[level]
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])


def _feeds(model, batch, seed=0):
    rng = np.random.default_rng(seed)
    shape = [batch] + list(zoo.input_shape(model))[1:]
    return {model.graph.input[0].name: rng.random(shape, dtype=np.float32)}


def time_interleaved(sessions: dict, feeds: dict, repeats: int, duplicate: str | None = None) -> dict:
    """Median seconds per run of each session, timed in interleaved rounds after a warm-up.

    With ``duplicate``, also times that session run twice and compared (key "duplicated").
    """
    for s in sessions.values():
        for _ in range(3):
            s.run(None, feeds)
    times = {k: [] for k in list(sessions) + (["duplicated"] if duplicate else [])}
    for _ in range(repeats):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feeds)
            times[k].append(time.perf_counter() - t0)
        if duplicate:
            t0 = time.perf_counter()
            a = sessions[duplicate].run(None, feeds)
            b = sessions[duplicate].run(None, feeds)
            _ = all(np.array_equal(x, y) for x, y in zip(a, b))
            times["duplicated"].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _products(model) -> tuple[str, ...]:
    """Names of the model's products of two activations (attention's scores and context)."""
    import onnx_graphsurgeon as gs

    from onnx_ecc.transform.rules.products import is_activation_product

    return tuple(n.name for n in gs.import_onnx(model).nodes if is_activation_product(n))


def _converted(model, fmt: str):
    if fmt == "float32":
        return model
    import warnings

    from onnxconverter_common import float16

    with warnings.catch_warnings():  # one warning per weight below float16's smallest normal
        warnings.simplefilter("ignore")
        return float16.convert_float_to_float16(model, keep_io_types=True)


def measure(model_name: str, batch: int, repeats: int, level: str, threads: int, extra: dict,
            fmt: str = "float32") -> dict:
    """Median latency of each variant, timed in interleaved rounds."""
    if fmt == "int8":
        return _measure_int8(model_name, batch, repeats, level, threads, extra)
    if fmt in OPERATOR_FORMATS:
        return _measure_operator_format(model_name, batch, repeats, level, threads, extra, fmt)
    model = _converted(getattr(zoo, model_name)(), fmt)
    variants = {"original": model,
                "correct": onnx_ecc.transform(model, mode="correct", **extra),
                "detect": onnx_ecc.transform(model, mode="detect", **extra),
                "rerun": onnx_ecc.transform(model, mode="correct", strategy="rerun", **extra),
                "rerun_sum": onnx_ecc.transform(model, mode="correct", strategy="rerun", conv_check="sum", **extra)}
    products = _products(model)
    if products:
        variants["rerun_no_attn"] = onnx_ecc.transform(model, mode="correct", strategy="rerun",
                                                       layer_modes=tuple((p, "none") for p in products), **extra)
    sessions = {k: _session(m, level, threads) for k, m in variants.items()}
    med = time_interleaved(sessions, _feeds(model, batch), repeats, duplicate="original")
    return {"model": model_name, "batch": batch, "level": level, "format": fmt,
            "original_ms": 1e3 * med["original"],
            **{f"{k}/original": med[k] / med["original"] if k in med else float("nan") for k in VARIANTS}}


def _measure_int8(model_name: str, batch: int, repeats: int, level: str, threads: int, extra: dict) -> dict:
    """int8: the fused QDQ original, the protected model in both modes and under the rerun strategy
    (fused layers, exact sample checks), the float32 model."""
    from onnx_ecc.zoo.quantised import quantize_qdq

    float_model = getattr(zoo, model_name)()
    calibration = np.concatenate([_feeds(float_model, 32, seed=s)[float_model.graph.input[0].name] for s in (1, 2)])
    model = quantize_qdq(float_model, calibration)
    variants = {"original": model, "correct": onnx_ecc.transform(model, mode="correct", **extra),
                "detect": onnx_ecc.transform(model, mode="detect", **extra),
                "rerun": onnx_ecc.transform(model, mode="correct", strategy="rerun", **extra), "float32": float_model}
    sessions = {k: _session(m, level, threads) for k, m in variants.items()}
    med = time_interleaved(sessions, _feeds(model, batch), repeats, duplicate="original")
    return {"model": model_name, "batch": batch, "level": level, "format": "int8",
            "original_ms": 1e3 * med["original"],
            **{f"{k}/original": med[k] / med["original"] if k in med else float("nan") for k in VARIANTS}}


OPERATOR_FORMATS = ("int8-qoperator", "int8-dynamic")


def _measure_operator_format(model_name: str, batch: int, repeats: int, level: str, threads: int, extra: dict,
                             fmt: str) -> dict:
    """int8 in an operator format: the quantised original, the protected model in both modes (and, for
    QOperator, under the rerun strategy), the float32 model."""
    from onnx_ecc.zoo.quantised import quantize_dynamic_int8, quantize_operator

    float_model = getattr(zoo, model_name)()
    if fmt == "int8-dynamic":
        model = quantize_dynamic_int8(float_model)
    else:
        calibration = np.concatenate([_feeds(float_model, 32, seed=s)[float_model.graph.input[0].name] for s in (1, 2)])
        model = quantize_operator(float_model, calibration)
    variants = {"original": model, "correct": onnx_ecc.transform(model, mode="correct", **extra),
                "detect": onnx_ecc.transform(model, mode="detect", **extra), "float32": float_model}
    if fmt == "int8-qoperator":  # operator forms keep their fused kernels on the rerun fast path
        variants["rerun"] = onnx_ecc.transform(model, mode="correct", strategy="rerun", **extra)
    sessions = {k: _session(m, level, threads) for k, m in variants.items()}
    med = time_interleaved(sessions, _feeds(model, batch), repeats, duplicate="original")
    return {"model": model_name, "batch": batch, "level": level, "format": fmt, "original_ms": 1e3 * med["original"],
            **{f"{k}/original": med[k] / med["original"] if k in med else float("nan") for k in VARIANTS}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mlp,cnn,resnet_style,depthwise_separable_cnn,transformer_encoder")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--level", choices=list(LEVELS), default="default")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: onnxruntime's default)")
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--parity", type=int, default=2)
    ap.add_argument("--format", choices=("float32", "float16", "int8") + OPERATOR_FORMATS, default="float32")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args()
    rows = []
    print(f"{'model':26s} {'batch':>5s} {'orig ms':>8s} " + " ".join(f"{k:>13s}" for k in VARIANTS))
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            row = measure(name, batch, args.repeats, args.level, args.threads,
                          {"block": args.block, "parity": args.parity}, args.format)
            rows.append(row)
            print(f"{name:26s} {batch:5d} {row['original_ms']:8.2f} "
                  + " ".join(f"{row[k + '/original']:13.3f}" for k in VARIANTS), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
