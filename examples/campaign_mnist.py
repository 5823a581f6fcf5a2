"""Fault-injection evidence on the pretrained MNIST CNN (digit-recognizer-py) with real MNIST digits.

(a) Targeted campaign: >= 1000 distinct single bit flips (weights of protected layers, and layer
    outputs) that each change the original model's top-1 on a test digit, re-run on the
    protected model: how many still corrupt it (95% upper bound), how many were corrected.
(b) Bit-error-rate sweep over all weights (and biases) of the protected layers, 1e-7 .. 1e-3:
    accuracy and SDC rate of original vs protected (the layer code, decoded at run time) vs the
    protected model with weight codes, scrubbed with both codes before inference (its memory,
    the weight codes' checks included, takes the same flips), and the rate where each breaks down.

Run:  PYTHONPATH=. python examples/campaign_mnist.py [--quick]   (~10 min on 2 cores)
Results: results/campaign/mnist/ (JSON, CSV, PNG); the sweep plot is copied to
examples/campaign_mnist.png (not by a --quick run).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import onnx_ecc
from onnx_ecc import campaign as C
from onnx_ecc import zoo
from onnx_ecc.cli.campaign import format_table
from onnx_ecc.transform.record import read_protection

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(HERE.parent / "results" / "campaign" / "mnist"))
    p.add_argument("--faults", type=int, default=1000, help="SDC-causing faults to find per site")
    p.add_argument("--targeted-samples", type=int, default=1000, help="test digits the targeted search draws from")
    p.add_argument("--bers", default="1e-7,3e-7,1e-6,3e-6,1e-5,3e-5,1e-4,2e-4,3e-4,1e-3")
    p.add_argument("--weight-checks", default="5%", help="weight codes of the scrubbed model (count or rate)")
    p.add_argument("--trials", type=int, default=48, help="sweep trials per bit error rate")
    p.add_argument("--samples", type=int, default=250, help="sweep test digits per trial")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--resume", action="store_true", help="keep finished sweep trials")
    args = p.parse_args(argv)
    if args.quick:
        args.faults, args.trials, args.samples, args.targeted_samples = 50, 6, 100, 300
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    original = zoo.mnist_cnn()
    protected = onnx_ecc.transform(original)               # parity 2 per block of 32 channels
    rec = read_protection(protected)
    print(f"model: pretrained MNIST CNN, {len(rec['protected'])} protected layers (parity 2, block 32); "
          f"scrubbed: with weight checks {args.weight_checks}")
    print(f"chosen: targeted {args.faults} faults/site from {args.targeted_samples} digits; sweep BER {args.bers}, "
          f"{args.trials} trials x {args.samples} digits, {args.jobs} jobs, seed {args.seed}")

    # (a) targeted
    x, y = C.load_samples("mnist", args.targeted_samples)
    targeted = {}
    for site in ("weight", "output"):
        t = time.time()
        r = C.targeted_campaign(original, protected, x, y, site=site, n_faults=args.faults, seed=args.seed)
        faults = r.pop("faults")
        with open(out / f"targeted_{site}_faults.jsonl", "w") as f:
            for row in faults:
                f.write(json.dumps(row) + "\n")
        (out / f"targeted_{site}.json").write_text(json.dumps(r, indent=1, default=float))
        targeted[site] = r
        print(f"[targeted/{site}] {time.time() - t:.0f} s")

    # (b) sweep
    bers = [float(b) for b in args.bers.split(",")]
    xs, ys = C.load_samples("mnist", args.samples)
    configs = [C.Config("weight-bitflip", ber=b) for b in bers]
    t = time.time()
    scrubbed = C.with_weight_checks(protected, args.weight_checks)
    summary = C.run_campaign(original, configs, xs, ys, args.trials, out / "sweep", protected=protected,
                             jobs=args.jobs, seed=args.seed, resume=args.resume, scrubbed=scrubbed)
    print(f"[sweep] {time.time() - t:.0f} s")
    for path in summary.get("plots", []) if not args.quick else []:  # a smoke run keeps the committed figure
        if path.endswith("sweep_weight-bitflip.png"):
            shutil.copy(path, HERE / "campaign_mnist.png")

    print("\n== (a) targeted single bit flips that change the original's top-1 ==")
    print(f"{'site':7} {'found':>6} {'tries':>8} {'still corrupt':>14} {'95% upper':>10} {'detected':>9} "
          f"{'corrected':>10} {'uncorr.':>8} {'label ok':>9}")
    for site, r in targeted.items():
        print(f"{site:7} {r['sdc_faults_found']:>6} {r['trials_searched']:>8} {r['protected_still_corrupt']:>14} "
              f"{r['upper95_clopper_pearson']:>10.2%} {r['detected']:>9} {r['corrected']:>10} {r['uncorrectable']:>8} "
              f"{r['protected_correct_label']:>9}")
        print(f"        by bit: {r['by_bit']}")
    print("\n== (b) BER sweep over the weights of the protected layers ==")
    print(format_table(summary["rows"]))
    print(f"fault-free accuracy: {summary['clean_accuracy']}")
    print(f"breakdown: {json.dumps(summary['breakdown'])}")
    print(f"\ntotal {time.time() - t0:.0f} s; results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
