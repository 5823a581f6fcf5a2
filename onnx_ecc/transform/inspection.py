"""Tabulate a protected model's record: code per layer and what protection costs."""

from __future__ import annotations

import onnx

from onnx_ecc.transform.record import channel_block, read_erasures, read_protection


def cost_summary(record: dict) -> dict[str, float]:
    """Extra parameters and multiply-adds of the protection, in % of the original model
    (its parameters, and the multiply-adds of its Conv/Gemm/MatMul layers per sample)."""
    layers = record.get("protected", [])
    original = record.get("original") or {}
    params = original.get("params") or sum(p["params"] for p in layers) or 1
    extra_macs = sum(p["extra_macs_per_vector"] * max(p.get("vectors_per_sample", 1), 1) for p in layers)
    macs = original.get("macs") or sum(p["macs_per_vector"] * max(p.get("vectors_per_sample", 1), 1) for p in layers) or 1
    return {"extra_params_pct": 100.0 * sum(p["extra_params"] for p in layers) / params,
            "extra_macs_pct": 100.0 * extra_macs / macs}


def format_budget(plan: dict) -> list[str]:
    """Lines of a ``--budget`` plan: the mode chosen per layer, its estimated cost and risk share."""
    rows = [("layer", "op", "mode", "cost ms", "risk %")]
    for name, p in sorted(plan["layers"].items(), key=lambda kv: kv[1].get("index", 0)):
        rows.append((name, p["op"], p["mode"], f"{p['cost_ms']:.3f}", f"{100.0 * p['risk']:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"budget {plan['ratio']:.2f}x the original at batch {plan['batch']} "
             f"(original {plan['original_ms']:.2f} ms): measured {plan['measured']:.3f}x, "
             f"{100.0 * plan['covered_risk']:.1f}% of the risk covered (cost: estimated extra ms per run; "
             f"for a layer left alone, what protecting it would cost)"]
    for i, r in enumerate(rows):
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)))
        if i == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return lines


CHECK_NAMES = {"decode": "decoded inline", "check": ""}


def coverage_summary(record: dict) -> list[str]:
    """What is not covered, by op type: layers left alone, their count and share of the multiply-adds."""
    total = (record.get("original") or {}).get("macs") or 0
    alone: dict[str, list[int]] = {}
    for s in record.get("skipped", []):
        alone.setdefault(s["op"], [0, 0])
        alone[s["op"]][0] += 1
        alone[s["op"]][1] += int(s.get("macs", 0))
    n_protected = len(record.get("protected", []))
    left = sum(v[1] for v in alone.values())
    share = (f", {100.0 * (1 - left / total):.1f}% of the linear layers' multiply-adds" if total else "")
    lines = [f"coverage: {n_protected} of {n_protected + sum(v[0] for v in alone.values())} linear layer(s) "
             f"protected{share}"]
    for op, (count, macs) in sorted(alone.items(), key=lambda kv: -kv[1][1]):
        pct = f", {100.0 * macs / total:.1f}% of the multiply-adds" if total else ""
        lines.append(f"  not covered: {op} x{count}{pct}")
    return lines


def _conv_check(layer: dict) -> str:
    """The kind of fast-path check a layer of the rerun strategy has, from its record."""
    if layer.get("fast_path") != "check":
        return ""
    if "sample_check_tolerance" in layer:
        stride = layer.get("sample_stride", "?")
        exact = "exact " if layer.get("kind") in ("int-code", "int-recompute") else ""  # int8 layers: bit for bit
        if isinstance(stride, list) and len(stride) == 1:  # a Gemm / MatMul: rows only
            return f"{exact}sample check every {stride[0]} rows"
        return f"{exact}sample check every {stride} rows/columns"
    if "sum_check_tolerance" in layer:
        return "sum check"
    if "product_check_stride" in layer:  # a product of two activations: its parity computed in the check
        return f"product check every {layer['product_check_stride']} rows"
    return "parity check"


def correction_left(layer: dict, erased: list[int]) -> dict:
    """A code layer's correction power left with its known erasures: per block, R minus the
    erasures in it; the worst block's erasures and errors (floor of half) still correctable."""
    per_block: dict[tuple[int, int], list[int]] = {}
    for c in erased:
        g, k, _ = channel_block(layer, c)
        per_block.setdefault((g, k), []).append(c)
    r = int(layer["parity"])
    worst = max((len(v) for v in per_block.values()), default=0)
    left = max(r - worst, 0)
    return {"parity": r, "erasures": len(erased), "worst_block_erasures": worst, "erasures_left": left,
            "errors_left": left // 2, "beyond": worst > r,
            "blocks": {(f"group {g} block {k}" if int(layer.get("groups", 1)) > 1 else f"block {k}"): v
                       for (g, k), v in sorted(per_block.items())}}


def _power(layer: dict, erased: list[int]) -> str:
    if layer.get("kind") != "code":
        return "-"
    left = correction_left(layer, erased)
    if left["beyond"]:
        return f"none ({left['worst_block_erasures']} dead > R)"
    return f"{left['erasures_left']} / {left['errors_left']}"


def format_erasures(record: dict, erasures: dict[str, list[int]]) -> list[str]:
    """Lines naming each layer's known dead units and what they leave of its code, block by block."""
    from onnx_ecc.transform.record import layer_layout

    lines = []
    for p in record["protected"]:
        erased = erasures.get(p["name"], [])
        if not erased or p.get("kind") != "code":
            continue
        layout = layer_layout(p)
        tpg, dpg = layout.total_channels // layout.groups, layout.data_per_group
        units = [f"{(c // tpg) * dpg + c % tpg}" if c % tpg < dpg else f"parity channel {c}" for c in erased]
        left = correction_left(p, erased)
        blocks = "; ".join(f"{b}: {len(v)} of R={left['parity']} used" for b, v in left["blocks"].items())
        lines.append(f"  {p['name']}: dead units {', '.join(units)} ({blocks}); worst block: "
                     f"{left['erasures_left']} erasure(s) or {left['errors_left']} error(s) left")
    return lines


def format_report(model: onnx.ModelProto) -> str:
    """A plain-text table of the protection record (or a note that there is none)."""
    record = read_protection(model)
    if record is None:
        return "not protected by onnx-ecc (no protection record in the metadata)"
    erasures = read_erasures(model)
    opts = record["options"]
    rows = [("layer", "op", "code", "act", "extra params %", "extra FLOPs %", "tolerance", "dead",
             "left: erasures / errors")]
    for p in record["protected"]:
        if p["kind"] == "code":
            code = f"R={p['parity']} per {p['block']}" + (f" x{p['groups']} groups" if p["groups"] > 1 else "")
        elif p["kind"] == "int-code":  # int8 layers (rules/quantised.py): exact integer checks
            groups = f" x{p['groups']} groups" if p["groups"] > 1 else ""
            code = f"int8 R={p['parity']} per {p['block']}{groups}, exact"
        elif p["kind"] == "int-recompute":  # grouped / depthwise int8 convs (strategies/int_recompute.py)
            code = f"int8 x{p['groups']} groups: rerun from a weight copy"
        else:
            code = "row sums + recompute"
        tol = p.get("tolerance")
        rows.append((p["name"], p["op"], code, p.get("activation") or "-",
                     f"{100.0 * p['extra_params'] / max(p['params'], 1):.1f}",
                     f"{100.0 * p['extra_macs_per_vector'] / max(p['macs_per_vector'], 1):.1f}",
                     f"{tol:.3g}" if tol else "-", str(len(erasures.get(p["name"], []))),
                     _power(p, erasures.get(p["name"], []))))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = [f"onnx-ecc protection (model id {record['model_id']}): mode={opts['mode']}, "
             f"parity={opts['parity']}, block={opts['block']}, strategy={opts.get('strategy', 'inline')}"]
    for i, r in enumerate(rows):
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    if opts.get("strategy") == "rerun":
        checks = sorted({CHECK_NAMES.get(p.get("fast_path", ""), "") + _conv_check(p) for p in record["protected"]} - {""})
        lines.append("rerun strategy: layers run as in the original with a fast-path check each ("
                     + ", ".join(checks) + "); extra FLOPs are those of the decoding branch, which runs only "
                     "when a check fails")
    if any(erasures.get(p["name"]) for p in record["protected"]):
        lines.append("known erasures (onnx_ecc.erasures; left: per block of R checks, R minus its dead units are "
                     "still rebuilt as erasures, half of that as errors at unknown positions):")
        lines += format_erasures(record, erasures)
    if record.get("budget"):
        lines += format_budget(record["budget"])
    cost = cost_summary(record)
    lines.append(f"{len(record['protected'])} layer(s) protected: +{cost['extra_params_pct']:.1f}% parameters, "
                 f"+{cost['extra_macs_pct']:.1f}% multiply-adds of the original model (Conv/Gemm/MatMul, per sample)")
    lines += coverage_summary(record)
    if record["skipped"]:
        lines.append(f"{len(record['skipped'])} layer(s) left alone:")
        for s in record["skipped"]:
            lines.append(f"  {s['name']} ({s['op']}): {s['reason']}")
    return "\n".join(lines)
