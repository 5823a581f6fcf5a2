"""Fault-injection campaign: trials against the original and the protected model, results as JSON/CSV/PNG."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from onnx_ecc.transform.options import CONV_CHECKS, STRATEGIES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="ONNX model path, or a built-in: mnist-cnn, fashion-mlp, bundled")
    parser.add_argument("--protected", help="protected model to use (default: transform MODEL here)")
    parser.add_argument("--data", default="mnist", help="mnist, fashion-mnist, digits, or an .npz with x and y")
    parser.add_argument("--fault", default="weight-bitflip",
                        help="comma-separated: weight-bitflip, weight-random, weight-zero, output-bitflip, "
                             "output-random, output-zero, mixed-bitflip")
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--ber", default=None, help="comma-separated bit error rates, e.g. 1e-7,1e-6,1e-5")
    amount.add_argument("--count", type=int, help="faults per trial (output faults: per layer output)")
    parser.add_argument("--targeted", type=int, metavar="N",
                        help="targeted campaign instead: find N distinct single bit flips that change the "
                             "original's prediction and run them on the protected model (--fault weight-bitflip "
                             "and/or output-bitflip)")
    parser.add_argument("--bits", default="all", help="bit positions (all, sign, exponent, mantissa, '23-30', ...)")
    parser.add_argument("--tensors", default="protected", help="'protected' layer weights or 'all' float initializers")
    parser.add_argument("--trials", type=int, default=20, help="trials per configuration")
    parser.add_argument("--samples", type=int, default=200, help="test samples per trial")
    parser.add_argument("--out", required=True, help="results folder")
    parser.add_argument("--resume", action="store_true", help="skip trials already in OUT/trials.jsonl")
    parser.add_argument("--jobs", type=int, default=None,
                        help="worker processes (default: all cores); with --executor ray and no cluster, "
                             "the CPUs of the local Ray instance started")
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="where trials run: local processes (default), or Ray tasks on a cluster "
                             "(pip install onnx-ecc[ray])")
    parser.add_argument("--address", default=None,
                        help="--executor ray: the cluster's address (default: $RAY_ADDRESS, else a local "
                             "Ray instance is started)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parity", type=int, default=2, help="transform: parity checks per block")
    parser.add_argument("--block", type=int, default=32, help="transform: channels per block")
    parser.add_argument("--strategy", choices=list(STRATEGIES), default="inline",
                        help="transform: inline (decode every run) or rerun (checks on a fast path, a flagged run "
                             "recomputed decoded; output faults then hit the fast path only, as transient faults)")
    parser.add_argument("--conv-check", choices=list(CONV_CHECKS), default="sample",
                        help="transform, rerun strategy: how the fast path checks a conv (see onnx-ecc transform)")
    parser.add_argument("--scrub", action="store_true",
                        help="also run the protected model with weight codes, its stored weights scrubbed with both "
                             "codes (as onnx-ecc scrub) after each trial's weight faults and before inference; under "
                             "--ber its memory, the weight codes' checks included, takes the same flips")
    parser.add_argument("--weight-checks", default="5%",
                        help="--scrub: weight checks per block (1000) or rate of each weight's memory (5%%); a "
                             "--protected model with weight codes keeps its own")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _fail(msg: str) -> int:
    print(f"onnx-ecc campaign: error: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    import onnx

    import onnx_ecc
    from onnx_ecc import campaign as C
    from onnx_ecc.campaign.executors import check_executor
    from onnx_ecc.io import write_bytes

    where = dict(jobs=args.jobs, executor=args.executor, address=args.address)
    try:
        check_executor(args.executor, args.address)
        original = C.resolve_model(args.model)
        if args.protected:
            if not Path(args.protected).is_file():
                return _fail(f"no protected model file {args.protected!r}")
            protected = onnx.load(args.protected)
        else:
            protected = onnx_ecc.transform(original, parity=args.parity, block=args.block, strategy=args.strategy,
                                           conv_check=args.conv_check)
        scrubbed = C.with_weight_checks(protected, args.weight_checks) if args.scrub else None
        x, y = C.load_samples(args.data, args.samples)
        faults = [f.strip() for f in args.fault.split(",") if f.strip()]
        out = Path(args.out)
        if args.targeted:
            out.mkdir(parents=True, exist_ok=True)
            sites = [f.split("-")[0] for f in faults]
            if any(f not in ("weight-bitflip", "output-bitflip") for f in faults):
                return _fail("--targeted takes --fault weight-bitflip and/or output-bitflip")
            for site in sites:
                r = C.targeted_campaign(original, protected, x, y, site=site, n_faults=args.targeted, bits=args.bits,
                                        seed=args.seed, progress=not args.no_progress, **where)
                write_bytes(out / f"targeted_{site}.json", json.dumps(r, indent=1, default=float).encode())
                print(f"{site}: {r['sdc_faults_found']} SDC-causing faults found in {r['trials_searched']} tries; "
                      f"{r['protected_still_corrupt']} still corrupt the protected model "
                      f"(95% upper bound {r['upper95_clopper_pearson']:.2%}); detected {r['detected']}, "
                      f"corrected {r['corrected']}, uncorrectable {r['uncorrectable']}"
                      + (f", recomputed {r['recomputed']}" if r["recomputed"] else ""))
            return 0
        if args.ber is None and args.count is None:
            return _fail("give --ber RATES or --count N (or --targeted N)")
        if args.ber is not None:
            try:
                bers = [float(b) for b in args.ber.split(",") if b.strip()]
            except ValueError:
                return _fail(f"bad --ber list {args.ber!r}")
            configs = [C.Config(f, ber=b, bits=args.bits, tensors=args.tensors) for f in faults for b in bers]
        else:
            configs = [C.Config(f, count=args.count, bits=args.bits, tensors=args.tensors) for f in faults]
        summary = C.run_campaign(original, configs, x, y, args.trials, out, protected=protected, resume=args.resume,
                                 seed=args.seed, progress=not args.no_progress, scrubbed=scrubbed, **where)
    except (C.CampaignError, ValueError, OSError) as e:
        return _fail(str(e))
    print(format_table(summary["rows"]))
    print(f"{summary['trials_run']} trials on {summary['executor']} ({summary['nodes']} node(s), {summary['cpus']} CPUs, "
          f"{summary['workers']} workers)"
          + (f", {summary['trials_per_second']:.1f} trials/s" if summary["trials_per_second"] else ""))
    print(f"results in {out}/ (summary.json, summary.csv, trials.jsonl{', plots' if summary.get('plots') else ''})")
    return 0


def format_table(rows: list[dict]) -> str:
    """A fixed-width text table of the summary rows."""
    head = ("fault", "amount", "model", "acc", "acc 95% CI", "SDC/pred", "corrupt/pred", "trials w/ SDC", "failed", "detected",
            "corrected blk", "uncorr blk", "beyond repair")
    lines = []
    for r in rows:
        amount = f"ber {r['ber']:g}" if r["ber"] is not None else f"count {r['count']}"
        lines.append((r["fault"], amount, r["model"], f"{r['accuracy']:.3f}", f"[{r['accuracy_lo']:.3f}, {r['accuracy_hi']:.3f}]",
                      f"{r['sdc_rate']:.4f}", f"{r['corrupt_rate']:.4f}", f"{r['trials_with_sdc']}/{r['trials']}", str(r["trials_failed"]),
                      str(r["trials_detected"]) if r["model"] != "original" else "-",
                      str(r["corrected_blocks"]) if r["model"] != "original" else "-",
                      str(r["uncorrectable_blocks"]) if r["model"] != "original" else "-",
                      f"{r['trials_scrub_beyond_repair']}/{r['trials']}" if r["model"] == "scrubbed" else "-"))
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(l, widths)) for l in lines]
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="onnx-ecc campaign", description=__doc__)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
