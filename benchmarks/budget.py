"""What ``--budget`` buys on real-size mobile CNNs: measured latency ratio, covered risk, flips corrected.

For each zoo model (224x224, random weights) and budget: the model protected with
``transform(model, budget=B)`` (rerun strategy, layer modes chosen by onnx_ecc.transform.budget at
batch 8); then, in one run, every budgeted model timed interleaved with the original (medians,
benchmarks/overhead.py's timer and session options) and a short targeted campaign: single weight
bit flips of the Conv/Gemm/MatMul weights, drawn at random until ``--flips`` of them change the
original's top-1 on a random input, each then run on every budgeted
model; "corrected" counts the flips after which the protected model's top-1 is the fault-free one
(and finite). Flips are drawn among the exponent and sign bits by default (``--bits``): nearly
every prediction-changing flip is one of those, and skipping mantissa flips makes the search
several times shorter.

    python benchmarks/budget.py [--models mobilenet_v2,efficientnet_lite,resnet18] [--budgets 1.05,1.10,1.20]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import onnx_ecc
from onnx_ecc import faults as F
from onnx_ecc import zoo
from onnx_ecc.campaign import Runner
from onnx_ecc.transform.record import read_protection

try:
    from overhead import _feeds, _session, time_interleaved
except ImportError:  # run from the repository root
    from benchmarks.overhead import _feeds, _session, time_interleaved


def corrected_share(original, protected: dict, n_flips: int, bits, seed: int, samples: int = 8) -> dict:
    """Share of prediction-changing single weight bit flips each protected model still corrects."""
    names = F.layer_weight_names(original)
    rng = np.random.default_rng(seed)
    x = _feeds(original, samples, seed=seed)[original.graph.input[0].name]
    ro = Runner(original, names)
    clean = np.argmax(ro.run(x)[0].reshape(len(x), -1), axis=1)
    spec = F.WeightFaultSpec(count=1, bits=bits, tensors=tuple(names))

    found, tried, seen = [], 0, set()
    while len(found) < n_flips and tried < 100 * n_flips:  # random flips until enough change a top-1
        i = int(rng.integers(len(x)))
        f = F.draw_weight_faults(original, spec, int(rng.integers(1 << 62)))[0]
        tried += 1
        if (f.target, f.index, f.bit) in seen:
            continue
        y = ro.run(x[i:i + 1], [f])[0].reshape(-1)
        if not np.isfinite(y).all() or int(np.argmax(y)) != int(clean[i]):
            seen.add((f.target, f.index, f.bit))
            found.append({"sample": i, "fault": f})
    layer_of = {t: n.name for n in original.graph.node for t in n.input[1:3]}
    out = {"found": len(found), "tried": tried}
    for key, model in protected.items():
        modes = {k: v["mode"] for k, v in read_protection(model)["budget"]["layers"].items()}
        maps = F.weight_maps(model)
        rp = Runner(model, sorted({m.protected for m in maps.values()} | set(names)))
        ok = {"covered": [0, 0], "left alone": [0, 0]}
        for item in found:
            i, f = item["sample"], item["fault"]
            y = rp.run(x[i:i + 1], F.to_protected([f], model))[0].reshape(-1)
            good = bool(np.isfinite(y).all()) and int(np.argmax(y)) == int(clean[i])
            where = "covered" if modes.get(layer_of[f.target], "none") != "none" else "left alone"
            ok[where][0] += good
            ok[where][1] += 1
        out[key] = {"corrected": sum(v[0] for v in ok.values()) / max(len(found), 1),
                    **{f"{k} (corrected/flips)": v for k, v in ok.items()}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mobilenet_v2,efficientnet_lite,resnet18")
    ap.add_argument("--budgets", default="1.05,1.10,1.20")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--flips", type=int, default=200, help="prediction-changing flips per model")
    ap.add_argument("--bits", default="exponent,sign")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args()
    budgets = [float(b) for b in args.budgets.split(",")]
    rows = []
    print(f"{'model':18s} {'budget':>6s} {'measured':>8s} {'covered risk':>12s} {'flips corrected':>15s} "
          f"{'layers (check/decode/none)':>26s} {'plan s':>6s}", flush=True)
    for name in args.models.split(","):
        model = zoo.build(name)
        protected, seconds = {}, {}
        for b in budgets:
            t0 = time.perf_counter()
            protected[b] = onnx_ecc.transform(model, budget=b, budget_batch=args.batch)
            seconds[b] = time.perf_counter() - t0
        sessions = {"original": _session(model, "default", 0), **{b: _session(m, "default", 0)
                                                                   for b, m in protected.items()}}
        med = time_interleaved(sessions, _feeds(model, args.batch), args.repeats)
        flips = corrected_share(model, protected, args.flips, F.parse_bits(args.bits), seed=1)
        for b in budgets:
            plan = read_protection(protected[b])["budget"]
            modes = [v["mode"] for v in plan["layers"].values()]
            row = {"model": name, "batch": args.batch, "budget": b, "original_ms": 1e3 * med["original"],
                   "measured": med[b] / med["original"], "planned": plan["measured"],
                   "covered_risk": plan["covered_risk"], "flips_found": flips["found"], **flips[b],
                   "modes": {m: modes.count(m) for m in ("check", "decode", "none")}, "plan_seconds": seconds[b]}
            rows.append(row)
            counts = "/".join(str(row["modes"][m]) for m in ("check", "decode", "none"))
            print(f"{name:18s} {b:6.2f} {row['measured']:8.3f} {row['covered_risk']:12.3f} "
                  f"{row['corrected']:15.3f} {counts:>26s} {seconds[b]:6.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
