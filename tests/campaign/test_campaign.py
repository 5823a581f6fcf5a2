"""Campaign numbers on a 2-class linear model where every outcome can be counted by hand; resume; stats."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnx_ecc
from onnx_ecc import campaign as C
from onnx_ecc import faults as F
from onnx_ecc.campaign.stats import aggregate, clopper_pearson, rule_of_three, upper_bound, wilson

# logits = x @ W.T with W = I: class 0 iff x0 > x1. Flipping the sign bit of W[0,0] (W[1,1]) makes
# logit 0 (1) negative, so every sample of class 0 (1) flips; W[0,1] and W[1,0] are 0, whose sign
# flip (-0) changes nothing.
X = np.array([[2, 1], [1, 2], [3, 0.5], [0.5, 3], [4, 1]], dtype=np.float32)
Y = np.array([0, 1, 0, 1, 1])          # sample 4 deliberately mislabelled: accuracy 4/5 fault-free
SDC_IF_FLIPPED = {(0, 0): 3, (1, 1): 2, (0, 1): 0, (1, 0): 0}


def linear_model() -> onnx.ModelProto:
    g = helper.make_graph([helper.make_node("Gemm", ["x", "W"], ["y"], name="fc", transB=1)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
                          [numpy_helper.from_array(np.eye(2, dtype=np.float32), "W")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture(scope="module")
def models():
    m = linear_model()
    return m, onnx_ecc.transform(m, parity=2, block=2)


def hand_counts(cfg: C.Config, trials: int, seed: int = 0):
    """Expected per-trial SDC counts from the drawn fault alone (no inference)."""
    out = []
    for t in range(trials):
        s = C.trial_seed(seed, cfg.key, t)
        [f] = F.draw_weight_faults(linear_model(), F.WeightFaultSpec(count=1, bits=cfg.bits, tensors=("W",)), s)
        out.append((f.index, SDC_IF_FLIPPED[f.index]))
    return out


def test_counts_match_hand_count(models, tmp_path):
    m, p = models
    cfg = C.Config("weight-bitflip", count=1, bits="31")
    trials = 16
    s = C.run_campaign(m, [cfg], X, Y, trials, tmp_path, protected=p, jobs=1, progress=False, plot=False)
    expect = hand_counts(cfg, trials)
    rows = {r["model"]: r for r in s["rows"]}
    o, q = rows["original"], rows["protected"]
    assert o["trials"] == q["trials"] == trials and o["samples"] == trials * len(X)
    assert o["sdc_predictions"] == sum(n for _, n in expect)
    assert o["trials_with_sdc"] == sum(1 for _, n in expect if n)
    # accuracy: W[0,0] flip -> all predict 1 -> 2 correct (samples 1, 3) + sample 4 now "correct" = 3/5;
    # W[1,1] flip -> all predict 0 -> samples 0, 2 correct = 2/5; zero flips -> 4/5
    acc = {(0, 0): 3 / 5, (1, 1): 2 / 5, (0, 1): 4 / 5, (1, 0): 4 / 5}
    assert math.isclose(o["accuracy"], np.mean([acc[i] for i, _ in expect]))
    # the protected model corrects every one of them; a -0 flip is invisible to the checks
    assert q["sdc_predictions"] == 0 and math.isclose(q["accuracy"], 4 / 5)
    assert q["trials_detected"] == sum(1 for i, _ in expect if i in ((0, 0), (1, 1)))
    assert q["uncorrectable_blocks"] == 0 and q["trials_failed"] == 0
    assert (tmp_path / "summary.csv").read_text().count("\n") == 3
    assert json.loads((tmp_path / "summary.json").read_text())["clean_accuracy"] == {"original": 0.8, "protected": 0.8}


def test_resume_skips_finished_trials(models, tmp_path):
    m, p = models
    cfg = C.Config("weight-bitflip", count=1, bits="30,31")
    C.run_campaign(m, [cfg], X, Y, 3, tmp_path, protected=p, jobs=1, progress=False, plot=False)
    first = (tmp_path / "trials.jsonl").read_text().splitlines()
    assert len(first) == 3
    with open(tmp_path / "trials.jsonl", "a") as f:
        f.write('{"torn": ')                                  # an interrupted write
    s = C.run_campaign(m, [cfg], X, Y, 5, tmp_path, protected=p, jobs=1, progress=False, plot=False, resume=True)
    lines = [l for l in (tmp_path / "trials.jsonl").read_text().splitlines() if l.startswith('{"config"')]
    assert lines[:3] == first and len(lines) == 5
    assert len({json.loads(l)["seed"] for l in lines}) == 5
    assert all(r["trials"] == 5 for r in s["rows"])
    C.run_campaign(m, [cfg], X, Y, 2, tmp_path, protected=p, jobs=1, progress=False, plot=False)
    assert len((tmp_path / "trials.jsonl").read_text().splitlines()) == 2   # no --resume: a fresh log


def test_parallel_equals_serial_and_mixed_faults(models, tmp_path):
    m, p = models
    cfgs = [C.Config("weight-bitflip", ber=0.05, bits="30"), C.Config("mixed-bitflip", ber=0.02)]
    a = C.run_campaign(m, cfgs, X, Y, 4, tmp_path / "a", protected=p, jobs=1, progress=False, plot=False)
    b = C.run_campaign(m, cfgs, X, Y, 4, tmp_path / "b", protected=p, jobs=2, progress=False, plot=False)
    key = lambda r: (r["config"], r["seed"])
    ta = sorted(C.read_trials(tmp_path / "a" / "trials.jsonl"), key=key)
    tb = sorted(C.read_trials(tmp_path / "b" / "trials.jsonl"), key=key)
    assert ta == tb
    assert [r["sdc_predictions"] for r in a["rows"]] == [r["sdc_predictions"] for r in b["rows"]]
    mixed = [t for t in ta if t["settings"]["fault"] == "mixed-bitflip"]
    assert all(t["original"]["error"] is None and t["protected"]["error"] is None for t in mixed)
    assert sum(t["original"]["faults"] for t in mixed) > 0


def test_targeted_finds_exactly_the_known_faults(models):
    m, p = models
    r = C.targeted_campaign(m, p, X, Y, site="weight", n_faults=2, bits="31", seed=1, max_trials=500,
                            progress=False, verify=2, jobs=1)
    assert sorted(tuple(f["fault"]["index"]) for f in r["faults"]) == [(0, 0), (1, 1)]
    assert r["protected_still_corrupt"] == 0 and r["corrected"] == 2
    assert all(c["original_same_top1"] and c["protected_same_top1"] for c in r["patching_checks"])
    out = C.targeted_campaign(m, p, X, Y, site="output", n_faults=3, bits="31", seed=1, max_trials=2000,
                              progress=False, jobs=1)
    # sign flip of one logit changes the top-1 whenever that logit is the larger (positive) one
    assert out["sdc_faults_found"] == 3 and out["protected_still_corrupt"] == 0


def test_stats_against_known_values():
    lo, hi = wilson(0, 10)
    assert lo == 0 and math.isclose(hi, 0.2775, abs_tol=1e-4)
    lo, hi = wilson(5, 10)
    assert math.isclose(lo, 0.2366, abs_tol=1e-4) and math.isclose(hi, 0.7634, abs_tol=1e-4)
    assert math.isclose(upper_bound(0, 1000), 1 - 0.05 ** (1 / 1000), rel_tol=1e-9)
    assert rule_of_three(1000) == 0.003
    lo, hi = clopper_pearson(1, 10)
    assert math.isclose(lo, 0.00253, abs_tol=1e-5) and math.isclose(hi, 0.44502, abs_tol=1e-5)
    rec = {"config": "k", "settings": {"fault": "weight-bitflip", "ber": 1e-6},
           "original": {"samples": 10, "correct": 7, "sdc": 2, "nonfinite": 1, "error": None, "faults": 3}}
    [row] = aggregate([rec, {**rec, "original": {**rec["original"], "correct": 9, "sdc": 0, "nonfinite": 0}}])
    assert row["accuracy"] == 0.8 and row["sdc_rate"] == 0.1 and row["trials_with_sdc"] == 1
    assert row["trials_failed"] == 1 and row["nonfinite_predictions"] == 1


def test_bad_inputs_raise():
    with pytest.raises(C.CampaignError):
        C.Config("weight-flip", ber=1e-6)
    with pytest.raises(C.CampaignError):
        C.Config("weight-bitflip")
    with pytest.raises(C.CampaignError):
        C.resolve_model("/nonexistent.onnx")
