"""The benchmark scripts' model builders: they add only what they claim to, and run end to end."""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

from onnx_ecc.transform.calibration import probe
from onnx_ecc.runtime import inference_session, session_options

from conftest import zoo_model

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))
check_floor = pytest.importorskip("check_floor")
overhead = pytest.importorskip("overhead")

SUFFIX = "__floor_mean"
# resnet_style: 9 convs; a shortcut conv shares its Add (and Relu) with the block's second conv.
POOLED = {
    "post": {"/2/Relu_output_0", "/3/Relu_output_0", "/3/Relu_1_output_0", "/4/Relu_output_0",
             "/4/Relu_1_output_0", "/5/Relu_output_0", "/5/Relu_1_output_0"},
    "pre": {"/0/Conv_output_0", "/3/conv1/Conv_output_0", "/3/Add_output_0", "/4/conv1/Conv_output_0",
            "/4/Add_output_0", "/5/conv1/Conv_output_0", "/5/Add_output_0"},
}
POOLED["pre+input"] = POOLED["pre"] | {"input"} | (POOLED["post"] - {"/5/Relu_1_output_0"})


@pytest.mark.parametrize("place", [p for p in check_floor.PLACES if p in POOLED])
def test_with_pools_pools_exactly_the_tensors_of_its_place(place):
    model = zoo_model("resnet_style")
    pooled = check_floor.with_pools(model, place)
    extra = [o.name for o in pooled.graph.output[1:]]
    assert {name[: -len(SUFFIX)] for name in extra} == POOLED[place]

    feeds = {"input": np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)}
    got = dict(zip([o.name for o in pooled.graph.output],
                   inference_session(pooled, session_options()).run(None, feeds)))
    want = probe(model, sorted(POOLED[place]) + ["logits"])(feeds)
    np.testing.assert_array_equal(got["logits"], want["logits"])
    for name in extra:
        np.testing.assert_allclose(got[name].reshape(2, -1), want[name[: -len(SUFFIX)]].mean(axis=(2, 3)),
                                   rtol=1e-5, atol=1e-6)


def test_the_in_line_floor_copies_every_conv_output_and_changes_nothing():
    model = zoo_model("resnet_style")
    floor = check_floor.with_pools(model, "in-line")
    copies = [n for n in floor.graph.node if n.name.endswith("__floor_inline")]
    assert len(copies) == sum(n.op_type == "Conv" for n in model.graph.node)
    feeds = {"input": np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)}
    got = inference_session(floor, session_options()).run(None, feeds)[0]
    # the copy stops onnxruntime fusing a residual Add into the conv, which may round differently
    np.testing.assert_allclose(got, probe(model, ["logits"])(feeds)["logits"], rtol=1e-5, atol=1e-6)


def test_overhead_measure_runs_every_variant():
    row = overhead.measure("mlp", batch=2, repeats=2, level="default", threads=1, extra={})
    ratios = [row[f"{k}/original"] for k in ("correct", "detect", "rerun", "duplicated")]
    assert all(np.isfinite(r) and r > 0 for r in ratios)
