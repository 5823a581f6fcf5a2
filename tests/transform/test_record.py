"""The typed protection record: every strategy's record reads back as it was written, and bad
metadata is a one-line error."""

from __future__ import annotations

import onnx
import pytest
from conftest import zoo_model

import onnx_ecc
from onnx_ecc.transform.record import (PROTECTION_KEY, LayerRecord, ProtectionRecord, read_protection, read_record,
                                       write_record)


@pytest.mark.parametrize("kwargs", [{}, {"strategy": "rerun"}, {"mode": "detect", "parity": 3}])
def test_the_typed_record_round_trips_the_stored_json(kwargs):
    protected = onnx_ecc.transform(zoo_model("cnn"), **kwargs)
    raw, record = read_protection(protected), read_record(protected)
    assert record.to_dict() == raw                                   # nothing lost or added
    assert ProtectionRecord.from_json(record.to_json()) == record
    assert {p.name for p in record.protected} == {n["name"] for n in raw["protected"]}
    assert record.strategy == kwargs.get("strategy", "inline") and record.options["parity"] == kwargs.get("parity", 2)
    first = raw["protected"][0]
    layer = record.layer(first["name"])
    assert (layer.data_channels, layer.parity_channels, layer.block) == (
        first["data_channels"], first["parity_channels"], first["block"])


def test_a_written_record_is_read_back_and_unknown_layers_are_named():
    protected = onnx_ecc.transform(zoo_model("mlp"))
    record = read_record(protected)
    record.protected[0].extra["note"] = "kept"
    write_record(protected, record)
    again = read_record(protected)
    assert again.protected[0].extra["note"] == "kept" and again == record
    with pytest.raises(KeyError, match="no protected layer 'nope'"):
        record.layer("nope")
    assert read_record(zoo_model("mlp")) is None
    assert isinstance(again.protected[0], LayerRecord)


def test_malformed_protection_metadata_is_a_clear_error():
    model = onnx.ModelProto()
    model.CopyFrom(zoo_model("mlp"))
    onnx.helper.set_model_props(model, {PROTECTION_KEY: '{"model_id": "x"}'})
    with pytest.raises(ValueError, match=f"malformed {PROTECTION_KEY} metadata"):
        read_record(model)
    onnx.helper.set_model_props(model, {PROTECTION_KEY: "{not json"})
    with pytest.raises(ValueError, match=f"malformed {PROTECTION_KEY} metadata"):
        ProtectionRecord.from_json(model.metadata_props[0].value)
