"""The protecting transform: rewrite Gemm / MatMul / Conv so that their outputs are decoded."""

from __future__ import annotations

import dataclasses
import uuid

import onnx
import onnx_graphsurgeon as gs

from onnx_ecc import ops
from onnx_ecc.transform.record import write_protection
from onnx_ecc.transform.common import FLOAT16_TOLERANCE_FLOOR, Protected, Skip, is_quantised_weight
from onnx_ecc.transform.rules.conv import protect_conv
from onnx_ecc.transform.rules.linear import protect_gemm, protect_matmul
from onnx_ecc.transform.options import TransformOptions
from onnx_ecc.transform.rules.products import protect_product
from onnx_ecc.transform.rules import operator_format
from onnx_ecc.transform.rules.integer_ops import protect_integer
from onnx_ecc.transform.rules.quantised import protect_quantised

QUANTISED_OPS = ("Conv", "Gemm", "MatMul")  # with a DequantizeLinear'd int8 weight: rules/quantised.py
RULES = {"Gemm": protect_gemm, "MatMul": protect_matmul, "Conv": protect_conv, "Einsum": protect_product,
         "MatMulInteger": protect_integer, "ConvInteger": protect_integer}  # int32 outputs: rules/integer_ops.py
# The op type --ops selects each quantised operator form by (QLinearConv, QGemm, ...: rules/operator_format.py
# expresses them as QDQ first).
OP_FAMILY = {"QLinearConv": "Conv", "ConvInteger": "Conv", "QLinearMatMul": "MatMul", "MatMulInteger": "MatMul",
             "QGemm": "Gemm"}
# Linear ops no rule protects yet: listed as left alone, so that `inspect` shows what is not covered.
UNCOVERED_OPS = ("ConvTranspose", "Attention", "MultiHeadAttention")
FORMAT_VERSION = 1


class TransformError(ValueError):
    """The model cannot be transformed (the message says why)."""


def transform(model: onnx.ModelProto, options: TransformOptions | None = None, **kwargs) -> onnx.ModelProto:
    """A protected copy of ``model``; options as a TransformOptions or as keyword arguments.

    The model's inputs and outputs keep their names, shapes and types. Layers that cannot be
    protected are left as they are and listed, with the reason, in the model's metadata.
    """
    from onnx_ecc.transform.record import read_protection
    from onnx_ecc.transform.verification import verify_transformed

    if options is None:
        options = TransformOptions(**kwargs)
    elif kwargs:
        raise TypeError("pass either a TransformOptions or keyword options, not both")
    if read_protection(model) is not None:
        raise TransformError("the model is already protected by onnx-ecc")
    if any(n.domain == ops.DOMAIN for n in model.graph.node):
        raise TransformError(f"the model already uses the {ops.DOMAIN} domain")
    plan = None
    if options.budget is not None:  # choose the layer modes, then transform with them (rerun strategy)
        from onnx_ecc.transform.budget import plan_budget

        plan = plan_budget(model, options)
        options = plan.options
    model_id = uuid.uuid4().hex[:12]
    if options.strategy == "rerun":
        from onnx_ecc.transform.strategies.rerun import protect_rerun

        out, record = protect_rerun(model, options, model_id)
    else:
        out, record = protect_inline(model, options, model_id)
    write_protection(out, record)
    from onnx_ecc.weights.layer_code import record_ranges

    record_ranges(out)  # each layer's value ranges: a stored value beyond them is known to be wrong (scrub)
    if options.weight_checks:
        from onnx_ecc.weights import add_weight_checks, layer_rows

        rows = layer_rows(out, record["protected"])
        out = add_weight_checks(out, tensor_names=list(rows), checks=options.weight_checks, seed=options.seed,
                                layer_rows=rows)
    if options.verify:
        verify_transformed(model, out)
    if plan is not None:
        write_protection(out, dict(read_protection(out), budget=plan.as_record()))
    return out


def protect_inline(model: onnx.ModelProto, options: TransformOptions, model_id: str,
                   modes: tuple[str, ...] = ("check", "decode")) -> tuple[onnx.ModelProto, dict]:
    """The model with every selected layer decoded inline, and its protection record (calibrated).

    Only layers whose ``options.mode_of`` is in ``modes`` are decoded; the others stay as they are.
    """
    try:
        shaped = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shapes only enable absorbing residual Adds; go on without them
        shaped = model
    graph = gs.import_onnx(shaped)
    protected: list[Protected] = []
    forms, skipped = operator_format.express_as_qdq(graph)  # QLinearConv / QLinearMatMul / QGemm as QDQ
    for node in list(graph.nodes):
        if node.op in UNCOVERED_OPS:
            skipped.append({"name": node.name, "op": node.op, "reason": f"op type {node.op} is not protected yet"})
            continue
        rule = RULES.get(node.op)
        if node.op in QUANTISED_OPS and len(node.inputs) > 1 and is_quantised_weight(node.inputs[1]):
            rule = protect_quantised  # int8 layers of QDQ models
        if rule is None or (node.domain or "") not in ("", "ai.onnx"):
            continue
        user_op = operator_format.layer_op(node.name, forms, node.op)  # the op in the user's model
        if OP_FAMILY.get(user_op, node.op) not in options.ops:
            skipped.append({"name": node.name, "op": user_op, "reason": "op type not selected (--ops)"})
            continue
        if not node.name:
            node.name = f"{node.op}_{len(protected) + len(skipped)}"
        mode = options.mode_of(node.name)
        if mode == "none":
            skipped.append({"name": node.name, "op": user_op, "reason": "left unprotected (layer mode 'none')"})
            continue
        if mode not in modes:
            continue
        try:
            protected.append(dataclasses.replace(rule(graph, node, options, model_id), op=user_op))
        except Skip as why:
            skipped.append({"name": node.name, "op": user_op, "reason": str(why)})
    operator_format.restore(graph, forms)  # operator forms no rule rewrote: back as they were
    graph.cleanup().toposort()
    out = gs.export_onnx(graph, do_type_check=False)
    _restore_model_fields(model, out)
    tolerances = {}
    if options.tolerance is None and any(p.kind != "int-code" for p in protected):  # int8 checks: no threshold
        from onnx_ecc.transform.calibration import calibrate_tolerances

        # float16 layers: rounding may differ between kernels (accumulation in float16 or float32),
        # so their tolerance never goes below a few float16 rounding steps
        floors = {p.name: FLOAT16_TOLERANCE_FLOOR for p in protected if p.dtype == "float16"}
        tolerances = calibrate_tolerances(out, calibration_feeds(model), options.margin, floors=floors)
    from onnx_ecc.transform.flops import layer_macs, model_cost

    macs = layer_macs(model)
    for p in protected:
        # per sample: the layer's multiply-adds scale to the cost of its extra channels
        p.vectors_per_sample = macs.get(p.name, 0) // max(p.macs_per_vector, 1)
    for s in skipped:
        s["macs"] = int(macs.get(s["name"], 0))
    record = {
        "format": FORMAT_VERSION, "model_id": model_id, "domain": ops.DOMAIN,
        "original": model_cost(model),
        "options": {"parity": options.parity, "block": options.block, "mode": options.mode, "scale": options.scale,
                    "tolerance": options.tolerance, "margin": options.margin, "ops": list(options.ops),
                    "strategy": options.strategy},
        "protected": [dict(p.as_dict(), tolerance=tolerances.get(p.name)) for p in protected], "skipped": skipped,
    }
    return out, record


def calibration_feeds(model: onnx.ModelProto) -> list[dict]:
    """The clean inputs thresholds are calibrated on: seeded random batches, half of them non-negative."""
    from onnx_ecc.transform.verification import random_feeds

    return [random_feeds(model, batch=4, seed=100 + i, positive=bool(i % 2)) for i in range(4)]


def _restore_model_fields(original: onnx.ModelProto, out: onnx.ModelProto) -> None:
    """Carry over what graph export drops: metadata, docs, producer, and the custom opset."""
    out.ir_version = original.ir_version
    out.producer_name, out.producer_version = original.producer_name, original.producer_version
    out.doc_string, out.model_version, out.domain = original.doc_string, original.model_version, original.domain
    del out.metadata_props[:]
    out.metadata_props.extend(original.metadata_props)
    ops.import_opset(out)
    known = {vi.name for vi in out.graph.value_info}
    for vi in original.graph.value_info:
        if vi.name not in known and any(vi.name in n.output for n in out.graph.node):
            out.graph.value_info.append(vi)


__all__ = ["transform", "TransformOptions", "TransformError", "RULES"]
