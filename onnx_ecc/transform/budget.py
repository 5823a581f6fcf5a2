"""Choose per-layer protection modes that cover the most risk within a latency budget (``--budget``).

Why: on mobile CNNs checking every conv costs far more than users accept (MobileNetV2 at batch 8
runs about 3x the original with every conv checked: unfused ReLU6 activations and extra passes
over large activations), while most of the risk sits in a few cheap layers (the classifier and
the late 7x7 stages hold most of the weights). So the layers are ranked by risk per unit of
measured cost and as many as fit are protected.

Cost, measured on this machine with onnxruntime (the session options of benchmarks/overhead.py:
default optimisation level, no spinning) at ``options.budget_batch``: the original is timed
against the model with every layer in one mode (``check``, and ``decode`` where that mode is a
candidate), interleaved, medians; the extra time is attributed to the layers in proportion to
the data each layer's protection passes over (its input and output elements, as every check
reads its input and output and a checked conv loses its fused activation) plus a fixed per-layer
share for the few small nodes a check adds, scaled so the sum matches the measured extra. The
chosen model is then built and timed; while its measured ratio exceeds the budget, the cost model
is rescaled by measured / predicted extra and the choice redone, as it is when the plan used well
under the allowed extra (``MAX_ROUNDS`` rounds at most, aiming at ``SAFETY`` of the budget's extra for
timing noise; the plan covering the most risk within the
budget is kept, else the cheapest one measured).

Risk: ``weight_share * params share + (1 - weight_share) * output share`` of each layer, over the
whole model's parameters and the outputs (elements per sample) of all its Conv/Gemm/MatMul layers.
Parameters stand for memory faults: an exponent-bit flip of any float32 weight (the flips that
change predictions; mantissa flips rarely do) is about equally likely to corrupt the output
wherever it lands, so a layer's share of such faults is its share of the weights. Output elements
stand for transient compute faults, which land in proportion to the values a layer produces.
Every mode but 'none' counts as covering its layer's risk. The proxy ignores what follows a layer:
a bounded activation (ReLU6) clips the huge outputs of a weight whose exponent flipped, so in
MobileNet-style nets such flips rarely change a prediction and the prediction-changing ones sit in
the unclipped layers (projections, classifier), which the proxy ranks high anyway because they
are cheap to check (benchmarks/budget.py measures the share of those flips corrected).

Choice: a multiple-choice knapsack (each layer: 'none' or one of its candidate modes, each mode with
its cost) solved by dynamic programming over costs rounded up to a grid of the allowance, so the
plan never exceeds the predicted budget and, on the grid, covers the most risk possible.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Mapping

import numpy as np
import onnx

from onnx_ecc.transform.options import WEIGHT_LAYER_OPS

MAX_ROUNDS = 3
SAFETY = 0.75           # plans aim at 1 + SAFETY x (budget - 1): timings here move by about 0.05
FIXED_ELEMENTS = 4096   # per-layer cost of a check's small nodes, in equivalent elements per sample
UNDERUSE = 0.6         # a plan measured under 1 + UNDERUSE x the allowed extra is retried with more layers
GRID = 2000             # cost resolution of the choice, in steps of the allowance


@dataclasses.dataclass
class LayerPlan:
    """One layer's part of a plan: its chosen mode, estimated cost of each candidate mode, risk."""

    name: str
    op: str
    risk: float
    costs_ms: dict[str, float]
    mode: str = "none"

    index: int = 0  # position in the graph

    @property
    def cost_ms(self) -> float:
        """Estimated cost of the chosen mode; for a layer left alone, of its cheapest candidate."""
        return self.costs_ms.get(self.mode, min(self.costs_ms.values(), default=0.0))


@dataclasses.dataclass
class BudgetPlan:
    """The layer modes chosen for a budget, how the choice measured, and the options to transform with."""

    ratio: float
    batch: int
    original_ms: float
    measured: float
    layers: dict[str, LayerPlan]
    rounds: list[dict]
    options: object = None  # TransformOptions with strategy 'rerun' and the chosen layer_modes

    @property
    def covered_risk(self) -> float:
        return sum(p.risk for p in self.layers.values() if p.mode != "none")

    def layer_modes(self) -> tuple[tuple[str, str], ...]:
        return tuple((p.name, p.mode) for p in self.layers.values())

    def as_record(self) -> dict:
        """The plan as the protection record's ``budget`` entry (JSON)."""
        return {"ratio": self.ratio, "batch": self.batch, "original_ms": self.original_ms,
                "measured": self.measured, "covered_risk": self.covered_risk, "rounds": self.rounds,
                "layers": {p.name: {"op": p.op, "mode": p.mode, "cost_ms": p.cost_ms, "risk": p.risk, "index": p.index}
                           for p in self.layers.values()}}


# ---- risk and cost proxies -------------------------------------------------------------------

def _elements(model: onnx.ModelProto) -> dict[str, int]:
    """Elements per sample of every tensor with a static shape (batch taken as 1) or initializer."""
    from onnx_ecc.transform.flops import static_shapes

    return {name: int(np.prod(shape)) for name, shape in static_shapes(model).items()}


def layer_stats(model: onnx.ModelProto) -> dict[str, dict[str, int]]:
    """Per Conv/Gemm/MatMul node (by name): parameters, output elements and input + output elements
    per sample (what a check passes over)."""
    sizes = _elements(model)
    inits = {t.name for t in model.graph.initializer}
    stats = {}
    for i, node in enumerate(model.graph.node):
        if node.op_type not in WEIGHT_LAYER_OPS:
            continue
        name = node.name or f"{node.op_type}_{i}"
        params = sum(sizes.get(t, 0) for t in node.input[1:] if t in inits)
        data_in = sizes.get(node.input[0], 0) if node.input[0] not in inits else 0
        out = sizes.get(node.output[0], 0)
        stats[name] = {"params": params, "outputs": out, "traffic": data_in + out}
    return stats


def layer_risks(model: onnx.ModelProto, weight_share: float = 0.5) -> dict[str, float]:
    """Each layer's share of the model's risk: ``weight_share`` x its share of the parameters plus
    the rest x its share of the Conv/Gemm/MatMul outputs (see the module docstring for why)."""
    from onnx_ecc.transform.flops import model_cost

    stats = layer_stats(model)
    params = max(model_cost(model)["params"], 1)
    outputs = max(sum(s["outputs"] for s in stats.values()), 1)
    return {n: weight_share * s["params"] / params + (1.0 - weight_share) * s["outputs"] / outputs
            for n, s in stats.items()}


def attribute_cost(extra_ms: float, traffic: Mapping[str, float], batch: int) -> dict[str, float]:
    """Split a measured extra time over layers in proportion to batch x traffic + FIXED_ELEMENTS."""
    weights = {n: batch * t + FIXED_ELEMENTS for n, t in traffic.items()}
    total = sum(weights.values()) or 1.0
    extra = max(extra_ms, 1e-6 * len(weights))  # a protection that measured free still costs something
    return {n: extra * w / total for n, w in weights.items()}


# ---- the choice --------------------------------------------------------------------------------

def choose(costs: Mapping[str, Mapping[str, float]], risks: Mapping[str, float], allowance: float,
           grid: int = GRID) -> dict[str, str]:
    """The mode per layer ('none' or one of ``costs[layer]``'s modes) that covers the most risk with
    a total cost <= ``allowance``: multiple-choice knapsack by dynamic programming, costs rounded
    up to multiples of allowance / grid (so a plan never exceeds the allowance). Among plans of
    equal risk the cheaper one wins; a free mode is always taken."""
    names = list(costs)
    modes: dict[str, str] = {n: "none" for n in names}
    if allowance <= 0:
        for n in names:
            free = [m for m, c in costs[n].items() if c <= 0]
            if free and risks.get(n, 0.0) > 0:
                modes[n] = free[0]
        return modes
    step = allowance / grid
    best = np.zeros(grid + 1)        # best[c]: most risk with cost units <= c
    picks = []                       # per layer: the option index chosen at each capacity (-1: none)
    for n in names:
        options = list(costs[n].items())
        new, pick = best.copy(), np.full(grid + 1, -1)
        for k, (_, c) in enumerate(options):
            units = max(int(np.ceil(c / step - 1e-9)), 0)
            if units > grid:
                continue
            cand = np.full(grid + 1, -np.inf)
            cand[units:] = best[:grid + 1 - units] + risks.get(n, 0.0)
            better = cand > new + 1e-15
            new[better], pick[better] = cand[better], k
        best = new
        picks.append((n, options, pick))
    cap = int(np.argmax(best >= best[-1] - 1e-15))  # the cheapest capacity reaching the best risk
    for n, options, pick in reversed(picks):
        k = pick[cap]
        if k >= 0:
            modes[n] = options[k][0]
            cap -= max(int(np.ceil(options[k][1] / step - 1e-9)), 0)
    return modes


# ---- measurement -------------------------------------------------------------------------------

def session(model: onnx.ModelProto):
    """An InferenceSession as benchmarks/overhead.py makes them (default level, no spinning)."""
    import onnxruntime as ort

    import onnx_ecc

    opts = onnx_ecc.session_options()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])


def time_ratios(models: Mapping[str, onnx.ModelProto], feeds: dict, repeats: int) -> dict[str, float]:
    """Median seconds per run of each model, in interleaved rounds after a warm-up."""
    sessions = {k: session(m) for k, m in models.items()}
    for s in sessions.values():
        for _ in range(2):
            s.run(None, feeds)
    times = {k: [] for k in sessions}
    for _ in range(repeats):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feeds)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _build(model: onnx.ModelProto, options, modes: Mapping[str, str]) -> onnx.ModelProto:
    from onnx_ecc.transform import transform

    return transform(model, dataclasses.replace(options, budget=None, strategy="rerun", verify=False,
                                                weight_checks=0, layer_modes=tuple(modes.items())))


def plan_budget(model: onnx.ModelProto, options, modes: tuple[str, ...] = ("check",),
                repeats: int = 15) -> BudgetPlan:
    """Choose layer modes for ``options.budget`` (latency ratio to the original) at
    ``options.budget_batch``; returns the plan, its ``options`` ready for ``transform``.

    ``modes``: the candidate modes of every layer ('check', 'decode'); each is timed on the model
    with every layer in that mode.
    """
    from onnx_ecc.transform.record import read_record
    from onnx_ecc.transform.verification import random_feeds

    target, batch = float(options.budget), int(options.budget_batch)
    aim = 1.0 + SAFETY * (target - 1.0)  # what a plan must measure, leaving room for timing noise
    feeds = random_feeds(model, batch=batch, seed=0, positive=True)
    risks = layer_risks(model, options.budget_weight_share)
    stats = layer_stats(model)
    full = {m: _build(model, options, {}) if m == "check" else None for m in modes}
    protectable = None
    for m in modes:
        if full[m] is None:
            full[m] = _build(model, options, {n: m for n in stats})
        names = {p.name for p in read_record(full[m]).protected}
        protectable = names if protectable is None else protectable & names
    med = time_ratios({"original": model, **full}, feeds, repeats)
    t0 = med["original"] * 1e3
    traffic = {n: stats[n]["traffic"] for n in stats if n in protectable}
    per_mode = {m: attribute_cost(med[m] * 1e3 - t0, traffic, batch) for m in modes}
    costs = {n: {m: per_mode[m][n] for m in modes} for n in traffic}
    ops_of = {x.name: (i, x.op_type) for i, x in enumerate(model.graph.node)}
    layers = {n: LayerPlan(n, ops_of[n][1], risks.get(n, 0.0), costs[n], index=ops_of[n][0]) for n in traffic}
    rounds: list[dict] = [{"models": {m: med[m] / med["original"] for m in modes}}]
    allowance = (aim - 1.0) * t0
    scale, best = 1.0, None
    for _ in range(MAX_ROUNDS):
        chosen = choose({n: {m: c * scale for m, c in cs.items()} for n, cs in costs.items()}, risks, allowance)
        predicted = sum(costs[n][m] for n, m in chosen.items() if m != "none")
        risk = sum(risks[n] for n, m in chosen.items() if m != "none")
        if all(m == "none" for m in chosen.values()):
            ratio = 1.0
        else:
            built = _build(model, options, chosen)
            med = time_ratios({"original": model, "chosen": built}, feeds, repeats)
            ratio = med["chosen"] / med["original"]
            t0 = med["original"] * 1e3
        rounds.append({"scale": scale, "predicted": 1.0 + scale * predicted / t0, "measured": ratio,
                       "covered_risk": risk})
        fits = ratio <= aim
        if best is None or (fits and (not best[2] or risk > best[1])) or (not fits and not best[2] and ratio < best[3]):
            best = (chosen, risk, fits, ratio, scale)
        if predicted <= 0 or (fits and ratio > 1.0 + UNDERUSE * (aim - 1.0)):
            break
        # over the budget (or well under it): rescale the cost model to what was measured
        scale *= min(max((ratio - 1.0) * t0 / (scale * predicted), 0.5), 4.0)
        allowance = (aim - 1.0) * t0
    chosen, _, _, ratio, scale = best
    for n, m in chosen.items():
        layers[n].mode = m
        layers[n].costs_ms = {k: c * scale for k, c in costs[n].items()}
    plan = BudgetPlan(target, batch, t0, ratio, layers, rounds)
    # layers that cannot be protected are left to the transform, which lists them as skipped
    plan.options = dataclasses.replace(options, budget=None, strategy="rerun", layer_modes=plan.layer_modes())
    return plan
