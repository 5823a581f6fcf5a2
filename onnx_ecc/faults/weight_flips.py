"""Memory faults on a model's float32 initializers: draw them (count or bit error rate, seeded) and apply them.

Why: weights sit in memory for the whole life of a model, so a flipped bit there corrupts every
inference; campaigns compare the original and the protected model under the same faults.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from onnx_ecc.faults.records import Fault, corrupt
from onnx_ecc.transform.record import read_record, separate_parity_name
from onnx_ecc.transform.options import WEIGHT_LAYER_OPS

LAYER_OPS = WEIGHT_LAYER_OPS
BIT_PRESETS: dict[str, tuple[int, ...]] = {
    "all": tuple(range(32)),
    "sign": (31,),
    "exponent": tuple(range(23, 31)),
    "mantissa": tuple(range(23)),
    "high-exponent": (30,),
}


def parse_bits(spec: str | Iterable[int] | None) -> tuple[int, ...]:
    """Bit positions from a preset name ('all', 'sign', 'exponent', 'mantissa', 'high-exponent'),
    a list such as '30,31' or ranges '23-30' (mixable: 'sign,exponent'), or an iterable of ints."""
    if spec is None:
        return BIT_PRESETS["all"]
    if not isinstance(spec, str):
        bits = tuple(sorted({int(b) for b in spec}))
    else:
        out: set[int] = set()
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            if part in BIT_PRESETS:
                out.update(BIT_PRESETS[part])
            elif "-" in part:
                lo, hi = part.split("-", 1)
                try:
                    out.update(range(int(lo), int(hi) + 1))
                except ValueError:
                    raise ValueError(f"bad bit range {part!r}") from None
            else:
                try:
                    out.add(int(part))
                except ValueError:
                    raise ValueError(f"unknown bit preset or position {part!r} "
                                     f"(presets: {', '.join(BIT_PRESETS)})") from None
        bits = tuple(sorted(out))
    if not bits or any(not 0 <= b <= 31 for b in bits):
        raise ValueError(f"bit positions must be a non-empty set within [0, 31], got {spec!r}")
    return bits


@dataclasses.dataclass(frozen=True)
class WeightFaultSpec:
    """Which weight faults to draw: exactly ``count`` of them, or each bit (bitflip) / element
    (random, zero) hit independently with probability ``ber``; among ``bits`` of ``tensors``
    ('protected' = weights and biases of the protected layers, 'all' = every float32 initializer,
    or explicit names)."""

    kind: str = "bitflip"
    count: int | None = None
    ber: float | None = None
    bits: tuple[int, ...] = BIT_PRESETS["all"]
    tensors: str | tuple[str, ...] = "protected"

    def __post_init__(self):
        if self.kind not in ("bitflip", "random", "zero"):
            raise ValueError(f"weight fault kind must be bitflip, random or zero, got {self.kind!r}")
        if (self.count is None) == (self.ber is None):
            raise ValueError("give exactly one of count and ber")
        if self.count is not None and self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")
        if self.ber is not None and not 0.0 <= self.ber <= 1.0:
            raise ValueError(f"ber must be in [0, 1], got {self.ber}")
        object.__setattr__(self, "bits", parse_bits(self.bits))
        if not isinstance(self.tensors, str):
            object.__setattr__(self, "tensors", tuple(self.tensors))


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def layer_weight_names(model: onnx.ModelProto) -> list[str]:
    """Weight and bias initializers of the layers that protection covers.

    Protected model: inputs of the layers its metadata lists (the ``__ecc_`` tensors, parity rows
    included: they are real memory). Original model: weight/bias of every Gemm/MatMul/Conv.
    """
    inits = _initializers(model)
    record = read_record(model)
    names = {p.name for p in record.protected} if record else None
    out: list[str] = []
    for node in model.graph.node:
        if node.op_type not in LAYER_OPS or (names is not None and node.name not in names):
            continue
        for name in list(node.input)[1:3]:
            if name in inits and inits[name].data_type == onnx.TensorProto.FLOAT and name not in out:
                out.append(name)
    return out


def target_names(model: onnx.ModelProto, tensors: str | Sequence[str] = "protected") -> list[str]:
    """Names of the float32 initializers a spec's ``tensors`` selects, in graph order."""
    inits = _initializers(model)
    if tensors == "protected":
        names = layer_weight_names(model)
    elif tensors == "all":
        names = [n for n, t in inits.items() if t.data_type == onnx.TensorProto.FLOAT]
    else:
        names = list(tensors)
        for n in names:
            if n not in inits:
                raise ValueError(f"no initializer named {n!r}")
            if inits[n].data_type != onnx.TensorProto.FLOAT:
                raise ValueError(f"initializer {n!r} is not float32")
    if not names:
        raise ValueError(f"no float32 initializers selected by {tensors!r}")
    return names


def draw_weight_faults(model: onnx.ModelProto, spec: WeightFaultSpec, seed: int) -> list[Fault]:
    """Faults drawn with numpy's Generator(seed): positions distinct, sorted by tensor then element."""
    inits = _initializers(model)
    names = target_names(model, spec.tensors)
    shapes = [tuple(inits[n].dims) for n in names]
    sizes = np.array([int(np.prod(s, dtype=np.int64)) for s in shapes], dtype=np.int64)
    per = len(spec.bits) if spec.kind == "bitflip" else 1
    total = int(sizes.sum()) * per
    rng = np.random.default_rng(seed)
    k = int(spec.count) if spec.count is not None else int(rng.binomial(total, spec.ber))
    if k > total:
        raise ValueError(f"{k} faults requested but only {total} positions exist")
    units = np.sort(rng.choice(total, size=k, replace=False)) if k else np.zeros(0, np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    arrays: dict[str, np.ndarray] = {}
    faults = []
    for u in units.tolist():
        element, b = divmod(u, per)
        t = int(np.searchsorted(starts, element, side="right") - 1)
        name, shape = names[t], shapes[t]
        index = tuple(int(i) for i in np.unravel_index(element - int(starts[t]), shape))
        if spec.kind == "bitflip":
            faults.append(Fault(name, index, "bitflip", bit=spec.bits[b]))
        elif spec.kind == "zero":
            faults.append(Fault(name, index, "zero"))
        else:
            if name not in arrays:
                arrays[name] = numpy_helper.to_array(inits[name])
            finite = np.abs(arrays[name][np.isfinite(arrays[name])])
            r = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
            faults.append(Fault(name, index, "random", value=float(np.float32(rng.uniform(-r, r)))))
    return faults


def apply_in_place(arrays: dict[str, np.ndarray], faults: Iterable[Fault]) -> list[tuple[str, int, np.float32]]:
    """Apply weight faults to float32 arrays in place (in order); returns the undo log for ``restore``."""
    undo = []
    for f in faults:
        if f.site != "weight":
            raise ValueError(f"not a weight fault: {f.describe()}")
        if f.target not in arrays:
            raise ValueError(f"fault targets unknown tensor {f.target!r}")
        a = arrays[f.target]
        if a.dtype != np.float32:
            raise ValueError(f"tensor {f.target!r} is {a.dtype}, not float32")
        flat = a.reshape(-1)
        if not np.shares_memory(flat, a):
            raise ValueError(f"tensor {f.target!r} is not contiguous")
        i = f.flat_index(a.shape)
        undo.append((f.target, i, flat[i].copy()))
        flat[i] = corrupt(flat[i], f)
    return undo


def restore(arrays: dict[str, np.ndarray], undo: list[tuple[str, int, np.float32]]) -> None:
    """Undo ``apply_in_place`` (in reverse order, so repeated hits on one element restore exactly)."""
    for name, i, old in reversed(undo):
        arrays[name].reshape(-1)[i] = old


def apply_weight_faults(model: onnx.ModelProto, faults: Iterable[Fault]) -> onnx.ModelProto:
    """A copy of ``model`` with the weight faults applied; the input model is left untouched."""
    faults = list(faults)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = _initializers(out)
    arrays = {}
    for f in faults:
        if f.target not in inits:
            raise ValueError(f"fault targets unknown tensor {f.target!r}")
        if f.target not in arrays:
            if inits[f.target].data_type != onnx.TensorProto.FLOAT:
                raise ValueError(f"tensor {f.target!r} is not float32")
            arrays[f.target] = np.array(numpy_helper.to_array(inits[f.target]), dtype=np.float32, order="C")
    apply_in_place(arrays, faults)
    for name, a in arrays.items():
        inits[name].CopyFrom(numpy_helper.from_array(a, name))
    return out


# ---- original <-> protected correspondence -------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ChannelMap:
    """Where the data channels of one layer sit in its protected (data + parity) counterpart."""

    original: str                 # '' for a tensor with no original counterpart (parity weights only)
    protected: str
    axis: int
    data_channels: int
    total_channels: int
    groups: int = 1

    def to_protected(self, i: int) -> int:
        dpg = self.data_channels // self.groups
        return (i // dpg) * (self.total_channels // self.groups) + i % dpg

    def to_original(self, j: int) -> int | None:
        """The data channel of protected channel j, or None for a parity channel."""
        dpg, tpg = self.data_channels // self.groups, self.total_channels // self.groups
        g, r = divmod(j, tpg)
        return g * dpg + r if r < dpg else None


def weight_maps(protected: onnx.ModelProto) -> dict[str, ChannelMap]:
    """For each protected weight/bias tensor: its original name, channel axis and layout.

    A layer the rerun strategy runs as the original on its fast path reads the original's own
    weight and bias (identity maps) and keeps its parity weights in separate tensors
    (``<layer>__ecc_parity_w`` / ``_b``, read by its checks and the recomputation): memory too,
    mapped with no original counterpart.
    """
    record = read_record(protected)
    if record is None:
        raise ValueError("the model is not protected by onnx-ecc")
    inits = _initializers(protected)
    nodes = {n.name: n for n in protected.graph.node}
    maps = {}
    for p in record.protected:
        node = nodes.get(p.name)
        if node is None:
            continue
        groups = p.groups if p.kind == "code" else 1
        if p.fast_path == "check":
            maps.update(_rerun_maps(p, node, inits))
            continue
        for pos, name in list(enumerate(node.input))[1:3]:
            if name not in inits:
                continue
            suffix = f"__ecc_{node.name}"
            orig = name[: -len(suffix)] if name.endswith(suffix) else name
            dims = tuple(inits[name].dims)
            if p.kind != "code":      # depthwise: weights kept as they are
                axis, total, data = 0, dims[0], dims[0]
            else:
                if pos == 2:
                    axis = len(dims) - 1 if node.op_type != "Conv" else 0
                elif node.op_type == "Conv":
                    axis = 0
                elif node.op_type == "Gemm":
                    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
                    axis = 0 if trans_b else 1
                else:
                    axis = len(dims) - 1
                total, data = dims[axis], p.data_channels
                if total != data + p.parity_channels and total != data:
                    continue  # broadcast bias: no one-to-one correspondence
                if total == data:  # bias not augmented along this axis
                    continue
            maps[name] = ChannelMap(orig, name, axis, data, total, groups)
    return maps


def _rerun_maps(p, node: onnx.NodeProto, inits: dict) -> dict[str, ChannelMap]:
    """A rerun fast-path layer's memory: its weight and bias as stored in the original (identity)
    and its separate parity weights (no data channels)."""
    maps = {}
    for name in list(node.input)[1:3]:
        if name in inits and inits[name].data_type == onnx.TensorProto.FLOAT:
            dims = tuple(inits[name].dims)
            maps[name] = ChannelMap(name, name, 0, dims[0], dims[0])   # identity: any axis
    for part in ("w", "b"):
        name = separate_parity_name(p.name, part)
        if name in inits and inits[name].data_type == onnx.TensorProto.FLOAT:
            dims = tuple(inits[name].dims)
            maps[name] = ChannelMap("", name, 0, 0, dims[0])          # every channel a parity channel
    return maps


def original_names(maps: dict[str, ChannelMap]) -> list[str]:
    """The original tensors behind ``weight_maps``' entries (parity-only tensors have none)."""
    return [m.original for m in maps.values() if m.original]


def _index_tuple(f: Fault, shape) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(f.flat_index(shape), shape))


def to_protected(faults: Iterable[Fault], protected: onnx.ModelProto) -> list[Fault]:
    """Faults on the original model's weights moved to the same elements (same data row) of the
    protected model's tensors; faults on tensors the protection did not touch keep their names."""
    by_orig = {m.original: m for m in weight_maps(protected).values() if m.original}
    inits = _initializers(protected)
    out = []
    for f in faults:
        m = by_orig.get(f.target)
        if m is None:
            if f.target not in inits:
                raise ValueError(f"tensor {f.target!r} has no counterpart in the protected model")
            out.append(f)
            continue
        shape = list(inits[m.protected].dims)
        shape[m.axis] = m.data_channels
        idx = list(_index_tuple(f, tuple(shape)))
        idx[m.axis] = m.to_protected(idx[m.axis])
        out.append(dataclasses.replace(f, target=m.protected, index=tuple(idx)))
    return out


def to_original(faults: Iterable[Fault], protected: onnx.ModelProto) -> list[Fault]:
    """Faults on the protected model's tensors moved back to the original model; faults on
    parity rows have no counterpart and are dropped."""
    maps = weight_maps(protected)
    inits = _initializers(protected)
    out = []
    for f in faults:
        m = maps.get(f.target)
        if m is None:
            out.append(f)
            continue
        idx = list(_index_tuple(f, tuple(inits[m.protected].dims)))
        j = m.to_original(idx[m.axis])
        if j is None:
            continue
        idx[m.axis] = j
        out.append(dataclasses.replace(f, target=m.original, index=tuple(idx)))
    return out
