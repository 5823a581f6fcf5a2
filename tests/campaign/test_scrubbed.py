"""The campaign's third model: weight codes + scrub before inference, its checks exposed to the same flips."""

from __future__ import annotations

import math

import numpy as np
from onnx import numpy_helper
from test_campaign import SDC_IF_FLIPPED, X, Y, hand_counts, linear_model

import onnx_ecc
from onnx_ecc import campaign as C
from onnx_ecc import faults as F
from onnx_ecc.weights import read_weight_codes


def _models():
    m = linear_model()
    p = onnx_ecc.transform(m, parity=2, block=2)
    return m, p, C.with_weight_checks(p, "50%")


def test_scrubbed_model_repairs_every_counted_flip(tmp_path):
    m, p, s = _models()
    assert read_weight_codes(s) and C.with_weight_checks(s) is s
    cfg = C.Config("weight-bitflip", count=1, bits="31")
    summary = C.run_campaign(m, [cfg], X, Y, 16, tmp_path, protected=p, scrubbed=s, jobs=1, progress=False, plot=False)
    rows = {r["model"]: r for r in summary["rows"]}
    expect = hand_counts(cfg, 16)
    assert rows["original"]["sdc_predictions"] == sum(n for _, n in expect)
    q = rows["scrubbed"]
    assert q["sdc_predictions"] == 0 and math.isclose(q["accuracy"], 4 / 5) and q["trials_scrub_beyond_repair"] == 0
    trials = C.read_trials(tmp_path / "trials.jsonl")
    for t, (index, _) in zip(sorted(trials, key=lambda t: [C.trial_seed(0, cfg.key, i) for i in range(16)].index(t["seed"])),
                             expect):
        # a sign flip of a zero weight (-0) is no error; the others are repaired before inference
        assert t["scrubbed"]["scrub_status"] == ("repaired" if SDC_IF_FLIPPED[index] else "clean")
        assert t["scrubbed"]["flagged"] == 0          # nothing left for the run-time decoder
    assert summary["clean_accuracy"] == {"original": 0.8, "protected": 0.8, "scrubbed": 0.8}
    assert (tmp_path / "scrubbed.onnx").exists()


def test_the_same_flips_reach_all_three_models_and_the_checks():
    m, p, s = _models()
    ev = C.Evaluator(m, p, X, Y, scrubbed=s)
    cfg = C.Config("weight-bitflip", ber=0.05)
    on_checks = 0
    for seed in range(30):
        wf = ev.weight_faults(cfg, seed)
        assert set(wf["protected"]) <= set(wf["scrubbed"])
        rest = [f for f in wf["scrubbed"] if f not in wf["protected"]]
        assert all(f.target in ev.check_names for f in rest)
        on_checks += len(rest)
        assert wf["original"] == F.to_original(wf["protected"], p)
    assert on_checks > 0


def test_a_trial_leaves_the_scrubbed_model_as_it_was():
    m, p, s = _models()
    ev = C.Evaluator(m, p, X, Y, scrubbed=s)
    cfg = C.Config("weight-bitflip", ber=0.05)
    def trial(seed):
        t = ev.trial(cfg, seed)
        t["scrubbed"].pop("scrub_seconds")             # the only thing that may differ: time
        return t

    first = [trial(seed) for seed in range(6)]
    assert first == [trial(seed) for seed in range(6)]
    runner = ev.runner("scrubbed", cfg)
    inits = {t.name: numpy_helper.to_array(t) for t in s.graph.initializer}
    for name, a in runner.arrays.items():
        np.testing.assert_array_equal(a, inits[name])
    for entry in read_weight_codes(s):
        np.testing.assert_array_equal(ev.scrub.parities[entry["tensor"]], inits[entry["parity_tensor"]].reshape(-1))
