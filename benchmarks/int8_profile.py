"""Where an int8 model's time goes, original against protected (onnxruntime profiler, CPU).

For each model: the fused QDQ original (quantize_static, as overhead.py --format int8 makes it)
and its protection (``--strategy rerun``: fused layers with exact sample checks; or ``inline``)
are profiled at one batch size; prints the mean kernel milliseconds per run by op type of each,
their totals, and the whole run's wall time (kernels plus onnxruntime's per-node overhead), so
that small models show what the extra nodes cost beyond their kernels.

    python benchmarks/int8_profile.py [--models cnn,mlp] [--batch 8] [--runs 50] [--strategy rerun|inline]
"""

from __future__ import annotations

import argparse
import collections
import time

import numpy as np

import onnx_ecc
from depthwise_share import profile
from overhead import _feeds, _session


def by_op_type(model, feeds: dict, runs: int) -> collections.Counter:
    """Mean kernel ms per run of each op type (If: its own time, branches included)."""
    out = collections.Counter()
    for op, ms in profile(model, feeds, runs).values():
        out[op] += ms
    return out


def wall_ms(model, feeds: dict, runs: int) -> float:
    """Median wall milliseconds per run."""
    sess = _session(model, "default", 0)
    for _ in range(5):
        sess.run(None, feeds)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="cnn,mlp")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--strategy", choices=("rerun", "inline"), default="rerun")
    args = ap.parse_args()
    from onnx_ecc import zoo
    from onnx_ecc.zoo.quantised import quantize_qdq

    for name in args.models.split(","):
        float_model = getattr(zoo, name)()
        calibration = np.concatenate([_feeds(float_model, 32, seed=s)[float_model.graph.input[0].name] for s in (1, 2)])
        original = quantize_qdq(float_model, calibration)
        protected = onnx_ecc.transform(original, strategy=args.strategy)
        feeds = _feeds(original, args.batch)
        rows = {k: by_op_type(m, feeds, args.runs) for k, m in (("original", original), ("protected", protected))}
        walls = {k: wall_ms(m, feeds, args.runs) for k, m in (("original", original), ("protected", protected))}
        print(f"{name} batch {args.batch}, {args.strategy} strategy: kernel ms per run by op type")
        for op in sorted(set(rows["original"]) | set(rows["protected"]), key=lambda o: -rows["protected"][o]):
            print(f"  {op:22s} {rows['original'][op]:8.4f} {rows['protected'][op]:8.4f}")
        print(f"  {'kernels total':22s} {sum(rows['original'].values()):8.4f} {sum(rows['protected'].values()):8.4f}")
        print(f"  {'wall (median)':22s} {walls['original']:8.4f} {walls['protected']:8.4f}", flush=True)


if __name__ == "__main__":
    main()
