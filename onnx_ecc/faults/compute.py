"""Computational faults: InjectFault nodes on layer outputs, and the exact faults a (seed, site) injects.

Why: one instrumented model (seed and rate are graph inputs) serves every trial without
rebuilding sessions, and the Python mirror of the kernel's draws turns each trial into
auditable Fault records; inverting the generator makes the kernel inject a chosen fault.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Iterable, Sequence

import numpy as np
import onnx
from onnx import helper

from onnx_ecc import ops
from onnx_ecc.faults.records import Fault
from onnx_ecc.faults.rng import SplitMix64, geometric_gap, seed_for_first_draws
from onnx_ecc.faults.weight_flips import LAYER_OPS, ChannelMap, parse_bits
from onnx_ecc.transform.record import read_record

SEED_INPUT = "ecc_fault_seed"
RATE_INPUT = "ecc_fault_rate"
SITES_KEY = "onnx_ecc.fault_sites"


@dataclasses.dataclass(frozen=True)
class Site:
    """One injection point: the layer, the tensor corrupted, and its channel layout (for mapping
    faults between the original and the protected model)."""

    site: int
    layer: str
    op: str
    tensor: str
    axis: int
    data_channels: int
    total_channels: int
    groups: int = 1

    def channel_map(self) -> ChannelMap:
        return ChannelMap(self.layer, self.layer, self.axis, self.data_channels, self.total_channels, self.groups)


def layer_names(model: onnx.ModelProto) -> list[str]:
    """Names of the Gemm/MatMul/Conv nodes, in graph order (the default injection sites)."""
    return [n.name for n in model.graph.node if n.op_type in LAYER_OPS and (n.domain or "") in ("", "ai.onnx")]


def instrument(model: onnx.ModelProto, layers: Sequence[str] | None = None, kind: str = "bitflip",
               bits: str | Iterable[int] | None = None, count: int = 0,
               sites: dict[str, int] | None = None) -> tuple[onnx.ModelProto, list[Site]]:
    """A copy of ``model`` with an InjectFault node after each chosen layer's output.

    For a protected layer the fault goes between the layer and its decoder (the ``__ecc_aug`` /
    ``__ecc_raw`` tensor, parity channels included); a layer the rerun strategy runs as the
    original on its fast path gets it in that output, which its checks read (a transient fault:
    the recomputation of a flagged run is not instrumented). ``sites`` fixes each layer's site number
    (pass the original's numbering to the protected model so both draw alike); by default the
    layers are numbered in ``layers`` order. Two new graph inputs, ``ecc_fault_seed`` (int64 scalar)
    and ``ecc_fault_rate`` (float scalar, per-element rate; ignored when ``count`` > 0), drive every
    trial (see ``fault_feeds``).
    """
    if kind not in ("bitflip", "random", "zero"):
        raise ValueError(f"kind must be bitflip, random or zero, got {kind!r}")
    if count < 0:
        raise ValueError("count must be >= 0")
    bits = parse_bits(bits)
    all_layers = layer_names(model)
    layers = list(all_layers if layers is None else layers)
    missing = [l for l in layers if l not in all_layers]
    if missing:
        raise ValueError(f"no Gemm/MatMul/Conv layer named {missing}")
    if sites is None:
        sites = {l: i for i, l in enumerate(layers)}
    record = read_record(model)
    prot = {p.name: p for p in record.protected} if record else {}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    if any(i.name in (SEED_INPUT, RATE_INPUT) for i in g.input):
        raise ValueError("the model is already instrumented")
    nodes = list(g.node)
    new_nodes, placed = [], []
    for node in nodes:
        new_nodes.append(node)
        if node.name not in layers:
            continue
        tensor = node.output[0]
        site = int(sites[node.name])
        pre = f"{tensor}__fault_in"
        node.output[0] = pre
        new_nodes.append(ops.INJECT_FAULT.make_node([pre, SEED_INPUT, RATE_INPUT], [tensor],
                                                    name=f"{node.name}__fault", kind=kind, bits=list(bits),
                                                    count=int(count), site=site))
        axis = 1 if node.op_type == "Conv" else -1
        p = prot.get(node.name)
        if p is not None and p.kind == "code" and p.fast_path == "check":   # rerun fast path: as the original
            data, total, groups = p.data_channels, p.data_channels, 1
        elif p is not None and p.kind == "code":
            data, total, groups = p.data_channels, p.data_channels + p.parity_channels, p.groups
        else:
            data, total, groups = -1, -1, 1   # filled from the runtime shape when needed
        placed.append(Site(site, node.name, node.op_type, tensor, axis, data, total, groups))
    del g.node[:]
    g.node.extend(new_nodes)
    g.input.append(helper.make_tensor_value_info(SEED_INPUT, onnx.TensorProto.INT64, []))
    g.input.append(helper.make_tensor_value_info(RATE_INPUT, onnx.TensorProto.FLOAT, []))
    ops.import_opset(out)
    if out.ir_version < 4:
        out.ir_version = 4
    props = {p.key: p.value for p in out.metadata_props}
    props[SITES_KEY] = json.dumps([dataclasses.asdict(s) for s in placed])
    del out.metadata_props[:]
    helper.set_model_props(out, props)
    return out, placed


def read_sites(model: onnx.ModelProto) -> list[Site]:
    """The injection sites an instrumented model carries in its metadata."""
    for p in model.metadata_props:
        if p.key == SITES_KEY:
            return [Site(**s) for s in json.loads(p.value)]
    return []


def fault_feeds(seed: int, rate: float = 0.0) -> dict[str, np.ndarray]:
    """The two extra feeds of an instrumented model."""
    return {SEED_INPUT: np.array(seed, dtype=np.int64), RATE_INPUT: np.array(rate, dtype=np.float32)}


def compute_faults(seed: int, site: int, n: int, kind: str = "bitflip", bits: str | Iterable[int] | None = None,
                   count: int = 0, rate: float = 0.0, target: str = "", shape: Sequence[int] | None = None,
                   value_range: float | None = None) -> list[Fault]:
    """The faults the InjectFault kernel injects into an n-element tensor for (seed, site), in order.

    ``rate`` is rounded to float32 as the graph input carries it. For 'random' faults the value
    needs ``value_range`` (max finite |x| of the clean tensor, 1 if zero), else value is left None
    and the record says 'random' with the unit draw in [-1, 1] as value.
    """
    bits = parse_bits(bits)
    rng = SplitMix64.for_site(int(seed), int(site))
    target = target or f"site{site}"
    out: list[Fault] = []

    def corrupt(i: int) -> None:
        index = tuple(int(v) for v in np.unravel_index(i, tuple(shape))) if shape is not None else i
        if kind == "bitflip":
            out.append(Fault(target, index, "bitflip", bit=bits[rng.next() % len(bits)], site="output"))
        elif kind == "random":
            u = 2.0 * rng.uniform01() - 1.0
            value = float(np.float32(u * value_range)) if value_range is not None else u
            out.append(Fault(target, index, "random", value=value, site="output"))
        elif kind == "zero":
            out.append(Fault(target, index, "zero", site="output"))
        else:
            raise ValueError(f"kind must be bitflip, random or zero, got {kind!r}")

    if n <= 0:
        return out
    if count > 0:
        for _ in range(count):
            corrupt(rng.next() % n)
        return out
    rate = float(np.float32(rate))
    if not rate > 0:
        return out
    if rate >= 1:
        for i in range(n):
            corrupt(i)
        return out
    i = -1
    while True:
        u = 1.0 - rng.uniform01()
        gap = geometric_gap(u, rate)
        if gap >= n - i - 1:
            break
        i += int(gap) + 1
        corrupt(i)
    return out


def seed_for_fault(site: int, n: int, index: int, bit: int | None = None,
                   bits: str | Iterable[int] | None = None) -> int:
    """A seed that makes a count=1 InjectFault at ``site`` hit flat element ``index`` of n
    (with bit ``bit`` among ``bits`` for bit flips)."""
    if bit is None:
        return seed_for_first_draws(site, n, index)
    bits = parse_bits(bits)
    if bit not in bits:
        raise ValueError(f"bit {bit} is not among the site's bits {bits}")
    return seed_for_first_draws(site, n, index, lambda z: bits[z % len(bits)] == bit)


def map_output_index(flat: int, shape: Sequence[int], axis: int, cmap: ChannelMap,
                     to_protected: bool = True) -> tuple[int, tuple[int, ...]] | None:
    """A flat element of one layer output moved to the other model's output (same data channel):
    returns (flat index, new shape), or None for a parity channel with no original counterpart."""
    shape = tuple(int(s) for s in shape)
    idx = list(np.unravel_index(int(flat), shape))
    ax = axis % len(shape)
    c = cmap.to_protected(int(idx[ax])) if to_protected else cmap.to_original(int(idx[ax]))
    if c is None:
        return None
    new_shape = list(shape)
    new_shape[ax] = cmap.total_channels if to_protected else cmap.data_channels
    idx[ax] = c
    return int(np.ravel_multi_index(tuple(idx), tuple(new_shape))), tuple(new_shape)


def injected_counts() -> dict[int, int]:
    """Faults injected so far per site (the library's counters, process-wide)."""
    from onnx_ecc.runtime import read_counters

    return {int(k[4:]): c.flagged for k, c in read_counters("").items() if k.startswith("site") and c.op == "InjectFault"}
