"""Check that a protected model reproduces the original: same outputs, no false alarms."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from onnx_ecc.transform.record import read_record

_NP_TYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
             onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.INT64: np.int64,
             onnx.TensorProto.INT32: np.int32, onnx.TensorProto.BOOL: np.bool_}


class VerificationError(RuntimeError):
    """The protected model does not behave like the original."""


def random_feeds(model: onnx.ModelProto, batch: int = 2, seed: int = 0, positive: bool = False) -> dict[str, np.ndarray]:
    """Seeded random inputs for every graph input (dynamic dimensions get ``batch``);
    floats are standard normal, or uniform in [0, 1) with ``positive`` (image-like)."""
    rng = np.random.default_rng(seed)
    inits = {i.name for i in model.graph.initializer}
    feeds = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        t = inp.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else batch for d in t.shape.dim]
        dtype = _NP_TYPES.get(t.elem_type)
        if dtype is None:
            raise VerificationError(f"input {inp.name!r} has an unsupported type ({t.elem_type})")
        if np.issubdtype(dtype, np.floating):
            values = rng.random(shape) if positive else rng.standard_normal(shape)
            feeds[inp.name] = values.astype(dtype)
        elif dtype == np.bool_:
            feeds[inp.name] = rng.integers(0, 2, shape).astype(dtype)
        else:
            feeds[inp.name] = rng.integers(0, 2, shape).astype(dtype)
    return feeds


def run_model(model: onnx.ModelProto, feeds: dict, with_library: bool = False,
              optimization: ort.GraphOptimizationLevel | None = None) -> list[np.ndarray]:
    """Outputs of ``model`` for ``feeds`` on the CPU provider."""
    from onnx_ecc.runtime import inference_session, session_options

    opts = session_options() if with_library else ort.SessionOptions()
    if optimization is not None:
        opts.graph_optimization_level = optimization
    sess = inference_session(model, opts)
    return sess.run(None, feeds)


FLOAT32_RTOL = 1e-3
# 8 float16 rounding steps (2^-10) of an output's largest value: onnxruntime's CPU provider runs a
# float16 model's layers in float32 where it can, and a protected model rounds some of those
# intermediate values to float16 as the model's types say (protected layers' outputs; under the
# rerun strategy a LayerNormalization whose output a check reads runs in float16, unfused).
FLOAT16_RTOL = 2.0 ** -7


def computes_in_float16(model: onnx.ModelProto) -> bool:
    """Whether ``model`` holds or makes float16 tensors (float16 weights, inputs or Casts to float16)."""
    half = onnx.TensorProto.FLOAT16
    g = model.graph
    return (any(i.data_type == half for i in g.initializer)
            or any(v.type.tensor_type.elem_type == half for v in g.input)
            or any(n.op_type == "Cast" and any(a.name == "to" and a.i == half for a in n.attribute) for n in g.node))


def verify_transformed(original: onnx.ModelProto, protected: onnx.ModelProto, trials: int = 2,
                       rtol: float | None = None) -> None:
    """Raise VerificationError unless ``protected`` matches ``original`` on random inputs
    with no block flagged (a flagged block on clean inputs would be a false alarm); outputs
    within ``rtol`` of their largest value (FLOAT16_RTOL for float16 models, else FLOAT32_RTOL)."""
    from onnx_ecc.runtime import read_counters

    if rtol is None:
        rtol = FLOAT16_RTOL if computes_in_float16(original) else FLOAT32_RTOL

    record = read_record(protected)
    model_id = record.model_id if record else ""
    for trial in range(trials):
        feeds = random_feeds(original, seed=trial)
        expected = run_model(original, feeds)
        before = read_counters(model_id)
        got = run_model(protected, feeds, with_library=True)
        after = read_counters(model_id)
        for out, e, g in zip(original.graph.output, expected, got):
            if e.shape != g.shape or e.dtype != g.dtype:
                raise VerificationError(f"output {out.name!r} changed: {g.dtype}{g.shape} instead of {e.dtype}{e.shape}")
            if np.issubdtype(e.dtype, np.floating):
                scale = float(np.max(np.abs(e[np.isfinite(e)]), initial=0.0)) + 1e-30
                if not np.allclose(g, e, rtol=rtol, atol=rtol * scale, equal_nan=True):
                    worst = float(np.max(np.abs(g - e)))
                    raise VerificationError(f"output {out.name!r} differs from the original by up to {worst:.3g}")
            elif not np.array_equal(e, g):
                raise VerificationError(f"output {out.name!r} differs from the original")
        for layer, counts in after.items():
            flagged = counts.flagged - (before[layer].flagged if layer in before else 0)
            if flagged:
                raise VerificationError(f"layer {layer!r} flagged {flagged} block(s) on clean random inputs "
                                        "(false alarm): raise the tolerance")
