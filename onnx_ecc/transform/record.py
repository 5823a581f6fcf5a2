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

import json

import onnx

PROTECTION_KEY = "onnx_ecc.protection"
ERASURES_KEY = "onnx_ecc.erasures"
ERASURES_VERSION = 1


def read_protection(model: onnx.ModelProto) -> dict | None:
    """The protection record of a model, or None if it was not transformed by onnx-ecc."""
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
