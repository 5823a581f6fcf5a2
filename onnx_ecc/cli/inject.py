"""Write a copy of a model with seeded weight faults (bit flips, random values or zeros) and list them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="ONNX model to corrupt (never modified)")
    parser.add_argument("-o", "--output", required=True, help="where to write the faulty copy (must differ from MODEL)")
    amount = parser.add_mutually_exclusive_group(required=True)
    amount.add_argument("--count", type=int, help="exactly this many faults")
    amount.add_argument("--ber", type=float, help="bit error rate over the chosen bits (per element for random/zero)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw (same seed, same faults)")
    parser.add_argument("--kind", choices=("bitflip", "random", "zero"), default="bitflip")
    parser.add_argument("--bits", default="all",
                        help="bit positions: all, sign, exponent, mantissa, high-exponent, or e.g. '30,31' / '23-30'")
    parser.add_argument("--tensors", default="protected",
                        help="'protected' (weights of the protected layers, or of every Gemm/MatMul/Conv of an "
                             "unprotected model), 'all' (every float32 initializer), or comma-separated names")
    parser.add_argument("--faults-json", help="also write the fault records to this JSON file")
    parser.add_argument("--limit", type=int, default=50, help="faults listed in the table (default 50; 0: all)")


def _fail(msg: str) -> int:
    print(f"onnx-ecc inject: error: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from onnx import numpy_helper

    from onnx_ecc import faults as F

    from onnx_ecc.io import ModelFileError, check_output_path, load_model, save_model

    src, dst = Path(args.model), Path(args.output)
    try:
        check_output_path(dst, inputs=[src])
        model = load_model(src)
    except ModelFileError as e:
        return _fail(str(e))
    tensors = args.tensors if args.tensors in ("protected", "all") else tuple(t for t in args.tensors.split(",") if t)
    try:
        spec = F.WeightFaultSpec(kind=args.kind, count=args.count, ber=args.ber, bits=args.bits, tensors=tensors)
        faults = F.draw_weight_faults(model, spec, args.seed)
        faulty = F.apply_weight_faults(model, faults)
    except ValueError as e:
        return _fail(str(e))
    try:
        save_model(faulty, dst, inputs=[src])
    except (OSError, ModelFileError) as e:
        return _fail(f"cannot write {str(dst)!r}: {e}")
    if args.faults_json:
        with open(args.faults_json, "w") as f:
            json.dump({"model": str(src), "seed": args.seed, "spec": {"kind": args.kind, "count": args.count,
                       "ber": args.ber, "bits": list(spec.bits), "tensors": args.tensors},
                       "faults": F.faults_to_json(faults)}, f, indent=1)
    inits = {t.name: t for t in model.graph.initializer}
    before = {}
    print(f"{len(faults)} fault(s), seed {args.seed}, written to {dst}")
    shown = faults if args.limit <= 0 else faults[: args.limit]
    if shown:
        rows = []
        for f in shown:
            if f.target not in before:
                before[f.target] = numpy_helper.to_array(inits[f.target]).reshape(-1)
            old = np.float32(before[f.target][f.flat_index(tuple(inits[f.target].dims))])
            what = f"bit {f.bit}" if f.kind == "bitflip" else f.kind
            rows.append((f.target, str(list(f.index)), what, f"{old:.6g}", f"{F.corrupt(old, f):.6g}"))
        head = ("tensor", "index", "fault", "before", "after")
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
        print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
        if len(shown) < len(faults):
            print(f"... {len(faults) - len(shown)} more (--limit 0 lists all)")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="onnx-ecc inject", description=__doc__)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
