"""--budget: per-layer modes honoured, the choice against a brute-force oracle, the plan recorded and shown.

No timing is asserted (the machine is noisy): the latency targets live in benchmarks/budget.py.
"""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import corrupt_initializer, feeds_for, zoo_model

import onnx_ecc
from onnx_ecc import ops
from onnx_ecc.transform.inspection import format_report
from onnx_ecc.transform.record import read_protection
from onnx_ecc.transform import TransformOptions
from onnx_ecc.transform.budget import attribute_cost, choose, layer_risks

MODEL = "depthwise_separable_cnn"


def _run(model, feeds):
    sess = onnx_ecc.ProtectedSession(model)
    return sess.run(None, feeds)[0], sess.last_report


def _plain(model, feeds):
    return onnx_ecc.ProtectedSession(model).run(None, feeds)[0]


def _layers(model, op="Conv"):
    return [n.name for n in model.graph.node if n.op_type == op]


@pytest.fixture(scope="module")
def budgeted():
    """The zoo model protected within a budget (convs only, so the plan has something to leave out)."""
    model = zoo_model(MODEL)
    return model, onnx_ecc.transform(model, budget=1.5, budget_batch=2, ops=("Conv",))


def test_layer_modes_are_honoured():
    model = zoo_model(MODEL)
    convs = _layers(model)
    none, decode = convs[1], convs[2]
    gemm = _layers(model, "Gemm")[0]
    modes = ((none, "none"), (decode, "decode"), (gemm, "decode"))
    protected = onnx_ecc.transform(model, strategy="rerun", layer_modes=modes)
    record = read_protection(protected)
    fast = {p["name"]: p["fast_path"] for p in record["protected"]}
    assert none not in fast and {s["name"]: s["reason"] for s in record["skipped"]}[none].endswith("'none')")
    assert fast[decode] == "decode" and fast[gemm] == "decode"
    assert all(fast[c] == "check" for c in convs if c not in (none, decode))
    # on the fast path: the 'decode' layers have decoders, the 'none' layer nothing of ours at all
    decoded = {n.name for n in protected.graph.node if n.op_type in (ops.DECODE.name, ops.DEPTHWISE_CHECK.name)}
    assert any(n.startswith(decode) for n in decoded) and any(n.startswith(gemm) for n in decoded)
    assert not any(n.name.startswith(none + "__ecc") for n in protected.graph.node)
    feeds = feeds_for(model, batch=3, seed=1)
    got, report = _run(protected, feeds)
    np.testing.assert_allclose(got, _plain(model, feeds), rtol=1e-5, atol=1e-5)
    assert report.flagged == 0 and report.checks_failed == 0, report.summary()


def _brute_force(costs, risks, allowance):
    names = list(costs)
    best = 0.0
    for choice in itertools.product(*[[None] + list(costs[n]) for n in names]):
        cost = sum(costs[n][m] for n, m in zip(names, choice) if m is not None)
        if cost <= allowance + 1e-9:
            best = max(best, sum(risks[n] for n, m in zip(names, choice) if m is not None))
    return best


@pytest.mark.parametrize("seed", range(12))
def test_the_choice_covers_the_most_risk_within_the_allowance(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 8))
    names = [f"layer{i}" for i in range(n)]
    # costs on the choice's grid (allowance / GRID) make the dynamic programme exact
    allowance, grid = 10.0, 100
    modes = ["check", "decode"] if seed % 2 else ["check"]
    costs = {k: {m: float(rng.integers(1, 60)) * allowance / grid for m in modes} for k in names}
    risks = {k: float(rng.random()) for k in names}
    chosen = choose(costs, risks, allowance, grid=grid)
    cost = sum(costs[k][m] for k, m in chosen.items() if m != "none")
    risk = sum(risks[k] for k, m in chosen.items() if m != "none")
    assert cost <= allowance + 1e-9
    assert risk == pytest.approx(_brute_force(costs, risks, allowance))


def test_the_choice_prefers_risk_per_cost_and_the_cheaper_mode():
    costs = {"big": {"check": 2.0}, "a": {"check": 1.0, "decode": 0.5}, "b": {"check": 1.0}}
    risks = {"big": 0.55, "a": 0.5, "b": 0.1}
    # a + b cover 0.6 for the same cost as big's 0.55; a's decode mode is the cheaper one
    assert choose(costs, risks, 2.0) == {"big": "none", "a": "decode", "b": "check"}
    assert choose(costs, risks, 0.0) == {"big": "none", "a": "none", "b": "none"}
    assert choose({"free": {"check": 0.0}}, {"free": 0.2}, 0.0) == {"free": "check"}


def test_risks_are_shares_of_parameters_and_outputs():
    model = zoo_model(MODEL)
    weights, outputs = layer_risks(model, 1.0), layer_risks(model, 0.0)
    assert sum(outputs.values()) == pytest.approx(1.0)
    assert 0.99 < sum(weights.values()) <= 1.0 + 1e-9  # BatchNorm is folded: almost every weight is a layer's
    mixed = layer_risks(model, 0.5)
    assert all(mixed[k] == pytest.approx(0.5 * weights[k] + 0.5 * outputs[k]) for k in mixed)
    costs = attribute_cost(3.0, {"x": 100, "y": 300}, batch=8)
    assert sum(costs.values()) == pytest.approx(3.0) and costs["y"] > costs["x"]


def test_the_plan_is_recorded_honoured_and_shown(budgeted, tmp_path):
    model, protected = budgeted
    path = tmp_path / "budgeted.onnx"
    onnx.save(protected, str(path))
    record = read_protection(onnx.load(str(path)))
    plan = record["budget"]
    assert plan["ratio"] == 1.5 and plan["batch"] == 2 and plan["measured"] > 0
    modes = {k: v["mode"] for k, v in plan["layers"].items()}
    assert set(modes) == set(_layers(model)) and set(modes.values()) <= {"check", "decode", "none"}
    protected_modes = {p["name"]: p["fast_path"] for p in record["protected"]}
    assert protected_modes == {k: m for k, m in modes.items() if m != "none"}
    skipped = {s["name"] for s in record["skipped"]}
    assert {k for k, m in modes.items() if m == "none"} <= skipped
    covered = sum(v["risk"] for v in plan["layers"].values() if v["mode"] != "none")
    assert plan["covered_risk"] == pytest.approx(covered) and 0 < covered <= 1
    text = format_report(protected)
    assert "budget 1.50x the original at batch 2" in text and "of the risk covered" in text
    assert all(k in text for k in modes)


def test_budgeted_model_is_exact_fault_free_and_corrects_a_weight_flip_in_a_chosen_layer(budgeted):
    model, protected = budgeted
    feeds = feeds_for(model, batch=2, seed=5)
    clean = _plain(model, feeds)
    got, report = _run(protected, feeds)
    np.testing.assert_allclose(got, clean, rtol=1e-5, atol=1e-5)
    assert report.flagged == 0 and report.checks_failed == 0, report.summary()
    chosen = [k for k, v in read_protection(protected)["budget"]["layers"].items() if v["mode"] != "none"]
    assert chosen, "a budget of 1.5x should leave room for some layer"
    weights = {n.name: n.input[1] for n in protected.graph.node if n.op_type == "Conv"}
    values = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    shown = 0
    for layer in chosen:
        # the largest weight: its top exponent bit flipped makes it huge, not a small change a sum check may pass
        w = values[weights[layer]]
        index = tuple(int(i) for i in np.unravel_index(np.argmax(np.abs(w)), w.shape))
        wrong = _plain(corrupt_initializer(model, weights[layer], index, 30), feeds)
        if np.allclose(wrong, clean, rtol=1e-4, atol=1e-4):
            continue  # this flip does not change the outputs: nothing to show
        got, report = _run(corrupt_initializer(protected, weights[layer], index, 30), feeds)
        assert report.corrected > 0 and report.uncorrectable == 0, (layer, report.summary())
        np.testing.assert_allclose(got, clean, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(clean).max()))
        shown += 1
    assert shown


def test_budget_options_are_checked():
    with pytest.raises(ValueError, match="budget"):
        TransformOptions(budget=0.9)
    with pytest.raises(ValueError, match="either a budget or layer_modes"):
        TransformOptions(budget=1.1, layer_modes=(("x", "none"),))


def test_cli_transform_with_a_budget_then_inspect(tmp_path):
    src, out = tmp_path / "cnn.onnx", tmp_path / "budgeted.onnx"
    onnx.save(zoo_model("cnn"), str(src))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "onnx_ecc", *map(str, args)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)

    r = cli("transform", src, "-o", out, "--budget", "1.3", "--budget-batch", "2", "--ops", "Conv")
    assert r.returncode == 0, r.stderr
    r = cli("inspect", out)
    assert r.returncode == 0 and "budget 1.30x" in r.stdout and "of the risk covered" in r.stdout
