"""The records a transformed model carries in its metadata: how it is protected, and its known erasures.

``onnx_ecc.protection`` (``read_protection``): the transform's record, one entry per protected layer
(name, op, code: data and parity channels, block, parity, groups; costs; tolerance).

``onnx_ecc.erasures`` (``read_erasures``): the output units known to be dead, per protected layer,
so that a decoder can treat them as erasures (known positions: up to R of them per block are
rebuilt exactly, against floor(R/2) wrong values at unknown positions). Stored as compact JSON::

    {"version": 1, "layers": {"/1/fc_layers/fc_layers.0/Gemm": [3, 17]}}

Each number is a *channel of the layer's decoded output*: the index along the channel axis of the
tensor its Decode op reads (the layer's output with its parity channels), laid out per group as
[data channels of the group, parity channels of the group]. Data unit ``i`` of the original layer
is channel ``unit_channel(layer, i)``; channels that are no data unit are parity channels.
Channels are sorted and distinct; a layer with none is left out, and a model with none has no key.
Written by ``onnx-ecc prune`` (units removed on purpose) and kept up to date by ``onnx-ecc scrub``
(a rebuilt unit leaves the list); a run-time learner of persistent faults writes the same key.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import onnx

PROTECTION_KEY = "onnx_ecc.protection"
ERASURES_KEY = "onnx_ecc.erasures"
ERASURES_VERSION = 1


FORMAT_VERSION = 1


def separate_parity_name(layer: str, part: str) -> str:
    """The initializer of a layer's parity weights (part 'w') or bias ('b') where they are kept
    apart from the layer's own (the rerun strategy's checks and recomputation read them)."""
    return f"{layer}__ecc_parity_{part}"


@dataclasses.dataclass
class LayerRecord:
    """One protected layer: its code (data and parity channels, block, parity, groups), costs and
    tolerance; ``fast_path`` is the rerun strategy's mode of it ('' under the inline strategy) and
    ``extra`` what a strategy adds (its checks' tolerances, sample stride, value ranges)."""

    name: str
    op: str
    kind: str                     # 'code', 'depthwise-check' (or another rule's kind)
    data_channels: int
    parity_channels: int
    block: int
    parity: int
    groups: int = 1
    params: int = 0
    extra_params: int = 0
    macs_per_vector: int = 0
    extra_macs_per_vector: float = 0.0
    activation: str = ""
    vectors_per_sample: int = 0
    dtype: str = "float32"
    tolerance: float | None = None
    fast_path: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "LayerRecord":
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in known}, extra={k: v for k, v in d.items() if k not in known})

    def to_dict(self) -> dict:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "extra"}
        if not self.fast_path:
            del d["fast_path"]
        return {**d, **self.extra}


@dataclasses.dataclass
class SkippedLayer:
    """A layer left as it is, with the reason shown to the user and its share of the MACs."""

    name: str
    op: str
    reason: str
    macs: int = 0


@dataclasses.dataclass
class ProtectionRecord:
    """How a model is protected (its ``onnx_ecc.protection`` metadata): the transform's options,
    the protected and the skipped layers, the original's cost, and the ``--budget`` plan if any."""

    model_id: str
    options: dict[str, Any]
    protected: list[LayerRecord]
    skipped: list[SkippedLayer]
    original: dict[str, Any] = dataclasses.field(default_factory=dict)
    budget: dict[str, Any] | None = None
    domain: str = "ai.onnx_ecc"
    format: int = FORMAT_VERSION

    @property
    def strategy(self) -> str:
        return self.options.get("strategy", "inline")

    def layer(self, name: str) -> LayerRecord:
        """The record of protected layer ``name`` (KeyError naming the layers if there is none)."""
        for p in self.protected:
            if p.name == name:
                return p
        raise KeyError(f"no protected layer {name!r}; protected: {', '.join(p.name for p in self.protected)}")

    @classmethod
    def from_dict(cls, d: dict) -> "ProtectionRecord":
        try:
            return cls(model_id=d["model_id"], options=dict(d["options"]),
                       protected=[LayerRecord.from_dict(p) for p in d["protected"]],
                       skipped=[SkippedLayer(**s) for s in d.get("skipped", [])], original=d.get("original") or {},
                       budget=d.get("budget"), domain=d.get("domain", "ai.onnx_ecc"), format=int(d.get("format", 1)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed {PROTECTION_KEY} metadata: {exc!r}") from None

    def to_dict(self) -> dict:
        d = {"format": self.format, "model_id": self.model_id, "domain": self.domain, "options": self.options,
             "original": self.original, "protected": [p.to_dict() for p in self.protected],
             "skipped": [dataclasses.asdict(s) for s in self.skipped]}
        if self.budget is not None:
            d["budget"] = self.budget
        return d

    @classmethod
    def from_json(cls, text: str) -> "ProtectionRecord":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ValueError(f"malformed {PROTECTION_KEY} metadata: {exc}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def read_record(model: onnx.ModelProto) -> ProtectionRecord | None:
    """The typed protection record of a model, or None if onnx-ecc did not transform it."""
    raw = read_protection(model)
    return None if raw is None else ProtectionRecord.from_dict(raw)


def write_record(model: onnx.ModelProto, record: ProtectionRecord) -> None:
    """Store (or replace) the protection record in the model's metadata."""
    _set_property(model, PROTECTION_KEY, record.to_json())


def read_protection(model: onnx.ModelProto) -> dict | None:
    """The protection record of a model as its JSON dict (``read_record`` gives it typed), or None."""
    for prop in model.metadata_props:
        if prop.key == PROTECTION_KEY:
            return json.loads(prop.value)
    return None


def write_protection(model: onnx.ModelProto, record: dict) -> None:
    """Store (or replace) the protection record in the model's metadata."""
    _set_property(model, PROTECTION_KEY, json.dumps(record, sort_keys=True))


def _set_property(model: onnx.ModelProto, key: str, value: str | None) -> None:
    """Replace metadata property ``key`` (in place); None removes it."""
    kept = {p.key: p.value for p in model.metadata_props if p.key != key}
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, kept if value is None else {**kept, key: value})


def read_erasures(model: onnx.ModelProto) -> dict[str, list[int]]:
    """The known erasures per layer (channels of its decoded output, see the module doc); {} when none."""
    for prop in model.metadata_props:
        if prop.key == ERASURES_KEY:
            try:
                doc = json.loads(prop.value)
                if doc.get("version") != ERASURES_VERSION:
                    raise ValueError(f"version {doc.get('version')!r}, expected {ERASURES_VERSION}")
                return {str(name): sorted({int(c) for c in channels}) for name, channels in doc["layers"].items()}
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"malformed {ERASURES_KEY} metadata: {exc}") from None
    return {}


def write_erasures(model: onnx.ModelProto, erasures: dict[str, list[int]]) -> None:
    """Store the known erasures (in place); layers without any are left out, no key when none are left."""
    layers = {name: sorted({int(c) for c in channels}) for name, channels in sorted(erasures.items()) if channels}
    value = json.dumps({"version": ERASURES_VERSION, "layers": layers}, separators=(",", ":")) if layers else None
    _set_property(model, ERASURES_KEY, value)


def layer_layout(layer: dict):
    """The channel layout (codes.Layout) of a protected layer's record entry with a code."""
    from onnx_ecc.codes import Layout

    if layer.get("kind") != "code":
        raise ValueError(f"layer {layer['name']!r} has no channel code ({layer.get('kind')})")
    return Layout(int(layer["data_channels"]), int(layer["block"]), int(layer["parity"]), int(layer.get("groups", 1)))


def unit_channel(layer: dict, unit: int) -> int:
    """The decoded-output channel of data unit ``unit`` (0 .. data_channels-1) of a layer's record entry."""
    layout = layer_layout(layer)
    if not 0 <= unit < layout.data_channels:
        raise ValueError(f"layer {layer['name']!r} has units 0..{layout.data_channels - 1}, not {unit}")
    dpg = layout.data_per_group
    return (unit // dpg) * (layout.total_channels // layout.groups) + unit % dpg


def channel_block(layer: dict, channel: int) -> tuple[int, int, int]:
    """(group, block, position) of a decoded-output channel: position < block size for a data
    channel, block size + check index for a parity channel."""
    layout = layer_layout(layer)
    tpg, dpg = layout.total_channels // layout.groups, layout.data_per_group
    if not 0 <= channel < layout.total_channels:
        raise ValueError(f"layer {layer['name']!r} has channels 0..{layout.total_channels - 1}, not {channel}")
    group, local = divmod(channel, tpg)
    if local < dpg:
        block, pos = divmod(local, layout.block)
        return group, block, pos
    block, check = divmod(local - dpg, layout.parity)
    return group, block, layout.block_sizes[block] + check
