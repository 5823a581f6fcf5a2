"""Weight checks sized by a rate: parsing and validation, memory accounting, layer parity rows counted."""

import argparse
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_ecc.cli import transform as transform_cli
from onnx_ecc.transform import TransformOptions, transform
from onnx_ecc.weights import add_weight_checks, parse_weight_checks, read_weight_codes, tensor_memory
from onnx_ecc.weights.model import entry_bytes, write_weight_codes
from onnx_ecc.weights.sizing import MIN_CHECKS, LayerRows, _rows_of, split_checks


@pytest.mark.parametrize("value, parsed", [
    (0, 0), (1000, 1000), ("1000", 1000), (" 64 ", 64), ("5%", 0.05), ("0.5%", 0.005), (0.05, 0.05),
    ("0.05", 0.05), ("0%", 0), (0.0, 0), (np.int64(7), 7),
])
def test_parse_counts_and_rates(value, parsed):
    got = parse_weight_checks(value)
    assert got == parsed and type(got) is type(parsed)


@pytest.mark.parametrize("value", ["abc", "", "5%%", "-3", -3, 1.0, 1.5, "100%", "150%", "nan", "-1%", True, None,
                                   [5]])
def test_bad_values_give_one_line_errors(value):
    with pytest.raises(ValueError) as err:
        parse_weight_checks(value)
    assert "weight checks" in str(err.value) and "\n" not in str(err.value)


def test_options_normalise_and_cli_reports_bad_value(tmp_path, capsys):
    assert TransformOptions(weight_checks="5%").weight_checks == 0.05
    assert TransformOptions(weight_checks="1000").weight_checks == 1000
    with pytest.raises(ValueError, match="weight checks"):
        TransformOptions(weight_checks="five")
    parser = argparse.ArgumentParser()
    transform_cli.add_arguments(parser)
    args = parser.parse_args([str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx"), "--weight-checks", "5%%"])
    assert transform_cli.run(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("onnx-ecc transform: error: weight checks") and "\n" not in err


def _gemm(rows=128, cols=512, seed=0):
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
    w2 = (rng.standard_normal((10, rows)) * 0.05).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1"], ["h"], transB=1, name="fc1"),
         helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gemm", ["r", "w2"], ["y"], transB=1, name="fc2")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", cols])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_rate_limits_the_file_growth():
    model = _gemm()
    out = add_weight_checks(model, checks="5%")
    entries = read_weight_codes(out)
    inits = {t.name: t for t in out.graph.initializer}
    original = sum(tensor_memory(e)["original_bytes"] for e in entries)
    for e in entries:  # the accounting matches what is stored
        mem = tensor_memory(e)
        assert mem["code_bytes"] == len(inits[e["parity_tensor"]].raw_data) == 4 * e["m"]
        assert inits[e["parity_tensor"]].data_type == TensorProto.FLOAT  # float32 checks by default
        assert mem["layer_bytes"] == 0 and mem["original_bytes"] == 4 * e["n"]
    big = next(e for e in entries if e["tensor"] == "w1")
    assert 0.045 < tensor_memory(big)["extra_ratio"] <= 0.05  # bookkeeping is paid from the rate
    assert all(m >= MIN_CHECKS for b in entries for m in [blk["m"] for blk in b["blocks"]])
    # Whole file: checks, metadata and framing within 5% of the protected weights (the small w2
    # gets MIN_CHECKS, above its own 5%; the key of the metadata entry is not counted).
    growth = out.ByteSize() - model.ByteSize()
    assert growth <= 0.05 * original + 4 * MIN_CHECKS + 64
    assert sum(entry_bytes(e) for e in entries) < growth


def test_count_form_is_per_block_as_before():
    out = add_weight_checks(_gemm(), checks=1000, parity_dtype="float64")
    e = next(e for e in read_weight_codes(out) if e["tensor"] == "w1")
    assert [b["m"] for b in e["blocks"]] == [1000] * 8 and tensor_memory(e)["code_bytes"] == 8 * 8000


@pytest.mark.parametrize("parity, block, at_minimum", [(2, 32, True), (1, 64, False)])
def test_layer_parity_rows_count_toward_the_rate(parity, block, at_minimum):
    out = transform(_gemm(), parity=parity, block=block, weight_checks="5%", verify=False)
    entries = {e["tensor"]: e for e in read_weight_codes(out)}
    e = next(e for e in entries.values() if e["n"] > 60000)  # fc1's weight with its parity rows
    rows = 128 // block * parity
    assert e["shape"] == [128 + rows, 512]
    assert (e["original_values"], e["layer_parity_values"]) == (128 * 512, rows * 512)
    mem = tensor_memory(e)
    assert mem["layer_bytes"] == 4 * rows * 512
    if at_minimum:  # 2 rows per 32 (6.25%) spend the 5%: the code keeps its minimum per block
        assert [b["m"] for b in e["blocks"]] == [MIN_CHECKS] * len(e["blocks"])
    else:  # 1 row per 64 (1.6%) leaves 3.4% for the checks
        assert 0.045 < mem["extra_ratio"] <= 0.05 and mem["code_bytes"] > mem["layer_bytes"]


def test_rows_inline_and_separate_parity():
    assert _rows_of([136, 512], 128, 8) == LayerRows(128 * 512, 8 * 512)  # inline: data + parity rows
    assert _rows_of([512, 136], 128, 8) == LayerRows(128 * 512, 8 * 512)  # MatMul layout (K, N)
    assert _rows_of([128, 512], 128, 8) == LayerRows(128 * 512, 8 * 512)  # rerun: parity rows elsewhere
    assert _rows_of([32, 1, 3, 3], 32, 0) == LayerRows(288, 0)  # depthwise check: no parity rows


def test_split_checks_proportional_with_minimum():
    bounds = [(0, 8000), (8000, 16000), (16000, 16100)]
    ms = split_checks(bounds, 800)
    assert sorted(ms[:2]) == [397, 398] and ms[2] == MIN_CHECKS  # 800 * 8000 / 16100 = 397.5; the minimum
    assert split_checks([(0, 20)], 0) == [19]  # minimum capped at n - 1


def test_metadata_compact_round_trip_and_version_1_still_read():
    out = add_weight_checks(_gemm(), checks="5%")
    entries = read_weight_codes(out)
    assert isinstance(entries[0]["blocks"], list) and entries[0]["blocks"][1]["start"] == 8192
    legacy = onnx.ModelProto()
    legacy.CopyFrom(out)
    legacy.metadata_props[0].value = json.dumps({"version": 1, "tensors": entries})
    assert read_weight_codes(legacy) == entries
    write_weight_codes(legacy, entries)
    assert read_weight_codes(legacy) == entries
