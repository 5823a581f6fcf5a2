"""The protection record a transformed model carries in its metadata."""

from __future__ import annotations

import json

import onnx

PROTECTION_KEY = "onnx_ecc.protection"


def read_protection(model: onnx.ModelProto) -> dict | None:
    """The protection record of a model, or None if it was not transformed by onnx-ecc."""
    for prop in model.metadata_props:
        if prop.key == PROTECTION_KEY:
            return json.loads(prop.value)
    return None


def write_protection(model: onnx.ModelProto, record: dict) -> None:
    """Store (or replace) the protection record in the model's metadata."""
    for prop in list(model.metadata_props):
        if prop.key == PROTECTION_KEY:
            model.metadata_props.remove(prop)
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                        PROTECTION_KEY: json.dumps(record, sort_keys=True)})
