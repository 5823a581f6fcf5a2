"""Repair from the layer code, measured on the pretrained MNIST CNN with real MNIST digits.

(a) Dead units: k units of one block of 32 (weights and bias zeroed) in the fully connected
    layer and in the widest conv, recorded (`onnx-ecc prune`) or not: how often `scrub` rebuilds
    every weight within 1e-4 of the largest weight of its tensor (oracle: the original weights).
(b) Bit error rate over everything stored (weights, biases, parity rows, and the weight codes'
    checks): values still wrong after scrubbing (off by more than 1e-4 of their tensor's largest
    weight, against the original weights), tensors reported beyond repair, and accuracy on real
    digits through the run-time decoder, for the layer code alone, the weight codes alone, and both
    (layer code first, or weight codes first), with the time each took.

Run:  PYTHONPATH=. python benchmarks/layer_repair.py [--parity 2,3] [--weight-checks 5%,1000]
      [--bers 1e-4,3e-4] [--seeds 3] [--dead-trials 20] [--parts a,b]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from onnx import numpy_helper

import onnx_ecc
from onnx_ecc.faults.weight_flips import (
    WeightFaultSpec,
    apply_weight_faults,
    draw_weight_faults,
    target_names,
    weight_maps,
)
from onnx_ecc.weights.layer_code import layer_views, prune_units
from onnx_ecc.weights.repair import scrub_model

LAYERS = ("/1/fc_layers/fc_layers.0/Gemm", "/1/conv_layers/conv_layers.6/Conv")
SOLVER = {"max_iter": 300}
VARIANTS = (("layer code", {"weight_code": False}), ("weight codes", {"layer_code": False}),
            ("both, layer first", {}), ("both, weights first", {"order": "weight-first"}))


def wrong_values(model, reference: dict) -> int:
    """Data values off by more than 1e-4 of their tensor's largest weight (NaN counts as off)."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    count = 0
    for name, m in weight_maps(model).items():
        got = np.take(inits[name], [m.to_protected(i) for i in range(m.data_channels)], axis=m.axis)
        ref = reference[m.original]
        count += int(np.sum(~(np.abs(got.astype(np.float64) - ref) <= 1e-4 * np.abs(ref).max())))
    return count


def accuracy(model, x, y) -> float:
    sess = onnx_ecc.ProtectedSession(model)
    return float(np.mean(sess.run(None, {model.graph.input[0].name: x})[0].argmax(1) == y))


def dead_units(protected, reference, k: int, trials: int, record: bool, seed: int = 0) -> int:
    """Trials (random k units of one random block per layer) after which every weight is rebuilt."""
    rng = np.random.default_rng(seed)
    views = {v.name: v for v in layer_views(protected)}
    ok = 0
    for _ in range(trials):
        units = {}
        for name in LAYERS:
            block = int(rng.integers(views[name].layout.data_channels // 32))
            units[name] = sorted(int(u) for u in 32 * block + rng.choice(32, k, replace=False))
        pruned, _ = prune_units(protected, units)
        if not record:
            from onnx_ecc.transform.record import write_erasures

            write_erasures(pruned, {})
        fixed, report = scrub_model(pruned)
        ok += report.status == "repaired" and wrong_values(fixed, reference) == 0
    return ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parity", default="2,3")
    p.add_argument("--weight-checks", default="5%,1000")
    p.add_argument("--bers", default="1e-4,2e-4,3e-4")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--dead-trials", type=int, default=20)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--parts", default="a,b", help="which parts to run: a (dead units), b (bit error rates)")
    args = p.parse_args(argv)
    from onnx_ecc import datasets, zoo

    original = zoo.mnist_cnn()
    data = datasets.load("mnist")
    x, y = data.x_test[:args.samples], data.y_test[:args.samples]
    reference = {t.name: numpy_helper.to_array(t) for t in original.graph.initializer}
    print(f"fault-free accuracy on {len(x)} digits: {accuracy(original, x, y):.3f}")
    parities = [int(r) for r in args.parity.split(",")]
    parts = set(args.parts.split(","))
    print("\n== (a) k dead units in one block of 32 (FC layer and widest conv), scrubbed ==")
    for r in parities if "a" in parts else []:
        protected = onnx_ecc.transform(original, parity=r)
        for k in range(1, r + 2):
            for record in (True, False):
                ok = dead_units(protected, reference, k, args.dead_trials, record)
                print(f"R={r} k={k} {'recorded' if record else 'not recorded'}: rebuilt in {ok}/{args.dead_trials}")
    print("\n== (b) bit error rate over everything stored, scrubbed ==")
    for r in parities if "b" in parts else []:
        for checks in args.weight_checks.split(","):
            protected = onnx_ecc.transform(original, parity=r, weight_checks=checks)
            names = tuple(n for n in target_names(protected, "all") if n not in ("0.mean", "0.std"))
            for ber in (float(b) for b in args.bers.split(",")):
                for seed in range(args.seeds):
                    bad = apply_weight_faults(protected, draw_weight_faults(
                        protected, WeightFaultSpec(ber=ber, tensors=names), seed=seed))
                    line = (f"R={r} checks={checks} ber={ber:g} seed={seed}: wrong {wrong_values(bad, reference)}, "
                            f"acc {accuracy(bad, x, y):.3f}")
                    for label, kw in VARIANTS:
                        start = time.perf_counter()
                        fixed, report = scrub_model(bad, **kw, **SOLVER)
                        line += (f" | {label}: wrong {wrong_values(fixed, reference)}, beyond "
                                 f"{len(report.beyond_repair)}, acc {accuracy(fixed, x, y):.3f}, "
                                 f"{time.perf_counter() - start:.1f} s")
                    print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
