"""Measure how close the clean syndromes of a protected model come to their thresholds."""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from onnx_ecc import ops
from onnx_ecc.codes import EPS32, Layout
from onnx_ecc.ops.oracles import chunk_max_abs


def _attrs(node: onnx.NodeProto) -> dict:
    values = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


def probe(model: onnx.ModelProto, tensors) -> Callable[[dict], dict[str, np.ndarray]]:
    """A function from feeds to the values of ``tensors`` (intermediate or not) in one run of ``model``."""
    from onnx_ecc.runtime import inference_session, session_options

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    known = {o.name for o in copy.graph.output}
    copy.graph.output.extend(onnx.ValueInfoProto(name=t) for t in dict.fromkeys(tensors) if t not in known)
    sess = inference_session(copy, session_options())
    names = [o.name for o in sess.get_outputs()]
    return lambda feeds: dict(zip(names, sess.run(None, feeds)))


def syndrome_ratios(protected: onnx.ModelProto, feeds: dict) -> dict[str, dict[str, float]]:
    """Per Decode layer: the largest and the median clean |syndrome| / (eps32 * bound).

    A decoder flags a check when this ratio exceeds its ``tolerance``; the margin between
    the two is the safety factor against false alarms, and tolerance * median is roughly how
    many times the typical rounding noise an error must be to be noticed.
    """
    decoders = [n for n in protected.graph.node if n.domain == ops.DOMAIN and n.op_type == ops.DECODE.name]
    values = probe(protected, [t for n in decoders for t in n.input if t])(feeds)
    out = {}
    for n in decoders:
        a = _attrs(n)
        layout = Layout(a["data_channels"], a["block"], a["parity"], a.get("groups", 1))
        y = values[n.input[0]].astype(np.float64)
        ax = a.get("axis", 1) % y.ndim
        outer = int(np.prod(y.shape[:ax]))
        y3 = y.reshape(outer, layout.total_channels, -1)
        scale_input = a.get("scale", "output") == "input"
        xmax = chunk_max_abs(values[n.input[1]], outer) if scale_input else None
        gains, offsets = np.array(a["noise_gain"]), np.array(a["noise_offset"])
        gens = np.array(a["generator"])
        ratios = []
        r, nb = layout.parity, len(layout.block_sizes)
        dpg, ppg = layout.data_per_group, layout.parity_per_group
        for g in range(layout.groups):
            base, goff, start = g * (dpg + ppg), 0, 0
            for k, b in enumerate(layout.block_sizes):
                gen = gens[goff:goff + r * b].reshape(r, b)
                goff += r * b
                idx = (g * nb + k) * r
                data = y3[:, base + start:base + start + b]
                par = y3[:, base + dpg + k * r: base + dpg + (k + 1) * r]
                syn = np.einsum("rb,obi->ori", gen, data) - par
                if scale_input:
                    scale = xmax[:, None, None]
                else:
                    scale = np.concatenate([np.abs(data), np.abs(par)], axis=1).max(axis=1)[:, None, :]
                bound = EPS32 * (gains[idx:idx + r][None, :, None] * scale + offsets[idx:idx + r][None, :, None])
                ratios.append((np.abs(syn) / bound).ravel())
                start += b
        allr = np.concatenate(ratios)
        out[a.get("layer", n.name)] = {"max": float(allr.max()), "median": float(np.median(allr)),
                                       "rms": float(np.sqrt(np.mean(allr ** 2))),
                                       "p99": float(np.quantile(allr, 0.99))}
    return out


def calibrate_tolerances(protected: onnx.ModelProto, feeds_list: list[dict], margin: float,
                         floor: float = 0.05, floors: dict[str, float] | None = None) -> dict[str, float]:
    """Set each Decode's tolerance to ``margin`` x the largest clean ratio seen (at least ``floor``,
    or the layer's entry in ``floors``).

    Rounding noise depends on the data, so the bound in the attributes is deliberately
    generous; calibrating on clean inputs brings the threshold down to a fixed safety
    margin above the noise actually seen, which is what lets small errors be located.
    """
    worst: dict[str, float] = {}
    for feeds in feeds_list:
        for layer, stats in syndrome_ratios(protected, feeds).items():
            worst[layer] = max(worst.get(layer, 0.0), stats["max"])
    chosen = {}
    for node in protected.graph.node:
        if node.domain != ops.DOMAIN or node.op_type != ops.DECODE.name:
            continue
        layer = _attrs(node).get("layer", node.name)
        tol = max((floors or {}).get(layer, floor), margin * worst.get(layer, 0.0))
        chosen[layer] = tol
        set_attribute(node, "tolerance", float(tol))
    return chosen


def clean_ratio_maxima(model: onnx.ModelProto, checks: dict[str, tuple[str, ...]], feeds_list: list[dict],
                       ratios: Callable) -> dict[str, dict[str, float]]:
    """Per check node (name -> the tensors it reads, '' for an absent one): the largest clean ratio
    of each of its parts over ``feeds_list``; ``ratios(values, attrs)`` gives {part: ratios}.
    Initializers among the tensors are read from the model, the others probed at run time."""
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer
                 if any(t.name in ts for ts in checks.values())}
    nodes = {n.name: n for n in model.graph.node}
    values_of = probe(model, [t for ts in checks.values() for t in ts if t and t not in constants])
    worst: dict[str, dict[str, float]] = {name: {} for name in checks}
    for feeds in feeds_list:
        values = values_of(feeds)
        for name, tensors in checks.items():
            found = ratios([constants[t] if t in constants else values[t] if t else None for t in tensors],
                           _attrs(nodes[name]))
            for part, r in found.items():
                worst[name][part] = max(worst[name].get(part, 0.0), float(np.max(r, initial=0.0)))
    return worst


def calibrate_checks(model: onnx.ModelProto, checks: dict[str, tuple[str, str, tuple[str, ...]]], feeds_list: list[dict],
                     options, ratios: Callable, floor: float = 0.05,
                     floors: dict[str, float] | None = None) -> dict[str, float]:
    """Set each fast-path check's tolerance to margin x its largest clean ratio (at least ``floor``,
    or the layer's entry in ``floors``),
    or to the given tolerance; ``checks``: node name -> (layer, the tensors it reads). Returns the
    tolerance per layer."""
    nodes = {n.name: n for n in model.graph.node}
    if options.tolerance is not None:
        return {layer: float(options.tolerance) for layer, _ in checks.values()}
    worst = clean_ratio_maxima(model, {n: ts for n, (_, ts) in checks.items()}, feeds_list, ratios)
    chosen = {}
    for name, (layer, _) in checks.items():
        tol = max((floors or {}).get(layer, floor), options.margin * max(worst[name].values(), default=0.0))
        set_attribute(nodes[name], "tolerance", float(tol))
        chosen[layer] = tol
    return chosen


def set_attribute(node: onnx.NodeProto, name: str, value) -> None:
    """Set (add or replace) one attribute of a node."""
    for attr in node.attribute:
        if attr.name == name:
            node.attribute.remove(attr)
            break
    node.attribute.append(onnx.helper.make_attribute(name, value))
