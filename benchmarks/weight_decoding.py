"""Weight-code decoding benchmark: the paper's 512x10 layer, and every weight of a mobile CNN.

Default mode, the paper's setting: one 512x10 layer (5120 float32 weights).

Weights: Kaiming-uniform init, U(-1/sqrt(512), 1/sqrt(512)), stored float32, seeded.
Codes: stored float64 parity, dct family (and gaussian with --families), m checks.
Error models (random positions, k errors per trial):
  gross   e_j ~ N(0, 1) added to w_j; decoded WITHOUT the max|w| erasure hint, i.e. every
          position unknown (pure l1, comparable with the paper's 210 errors / 5120 weights).
  bitflip one random exponent bit (bits 23..30) of each chosen float32 weight flipped; decoded
          WITH the erasure hint (non-finite or |w'| > stored max|w| = known position).
Success = decoder says "repaired" and the repaired weights equal the originals to 1e-6 * max|w|
(bit-exact count reported too). Also times the decoder and compares with scipy HiGHS on the
standard LP (min 1^T(u+v), H(u-v) = s, u,v >= 0).

Mobile-CNN mode (``--mobile mobilenet_v2``): memory and per-tensor repair of weight codes sized by
a rate. Memory: the model file's extra bytes over the original with ``--weight-checks 5%`` and
with the count form (1000 per block, float32 and float64 checks), on the weight codes alone and
on top of the layer code (``transform``, whose parity rows count toward a rate). Repair: for each
protected tensor of the 5% weight-code model (or a fixed sample, ``--mobile-tensors``), trials
that corrupt ceil(5/1000 of its values) at random positions and scrub it (``check_tensor``, erasure
hint on, as ``onnx-ecc scrub`` does). Error models:
  random  the value replaced by U(-max|w|, max|w|): a plausible wrong weight, no hint applies
  anybit  one random bit of the 32 flipped (mantissa, exponent or sign)
Success = every scrubbed value within ``repair_tolerance`` of the original (the float32 checks'
rounding through the fit, or a change too small for the checks to see).

    python benchmarks/weight_decoding.py                 # default: ~5-10 min on 2 cores
    python benchmarks/weight_decoding.py --trials 5 --lp-full 0   # quick look
    python benchmarks/weight_decoding.py --mobile mobilenet_v2 --mobile-trials 20
"""

from __future__ import annotations

import os

# One BLAS thread per worker process: the decoder's least-squares fits are small, and
# oversubscribed OpenBLAS threads slow them down by 100x on a busy 2-core machine.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from onnx_ecc.weights.check_matrices import check_matrix  # noqa: E402
from onnx_ecc.weights.decode import decode_weight_block, l1_decode_lp, syndrome_tolerance  # noqa: E402

N_IN, N_OUT = 512, 10
MOBILE_RATE = "5%"
MOBILE_COUNT = 1000
PER_1000 = 5


def layer(seed: int = 0) -> np.ndarray:
    """The float32 weights of a freshly initialised 512x10 layer, flattened."""
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(N_IN)
    return rng.uniform(-bound, bound, N_IN * N_OUT).astype(np.float32)


def corrupt(w: np.ndarray, k: int, model: str, rng: np.random.Generator) -> np.ndarray:
    """A copy of w with k errors of the given model at random positions."""
    bad = w.copy()
    pos = rng.choice(w.size, k, replace=False)
    if model == "gross":
        bad[pos] = (bad[pos].astype(np.float64) + rng.standard_normal(k)).astype(np.float32)
    elif model in ("bitflip", "anybit"):
        low = 23 if model == "bitflip" else 0
        bits = rng.integers(low, 32 if model == "anybit" else 31, size=k).astype(np.uint32)
        bad.view(np.uint32)[pos] ^= np.left_shift(np.uint32(1), bits)
    elif model == "random":
        amax = float(np.abs(w).max())
        bad[pos] = rng.uniform(-amax, amax, k).astype(np.float32)
    else:
        raise ValueError(f"unknown error model {model!r}")
    return bad


def one_trial(task: tuple) -> dict:
    """Run one corrupted decode; returns success flags and timing."""
    family, m, k, model, trial, seed = task
    w = layer(seed)
    h = check_matrix(family, w.size, m, seed)
    wd = w.astype(np.float64)
    ref = h.apply(wd)
    tol = syndrome_tolerance(h, float(np.linalg.norm(wd)), "parity", "float64")
    amax = float(np.abs(wd).max())
    rng = np.random.default_rng([seed, m, k, trial, 0 if model == "gross" else 1])
    bad = corrupt(w, k, model, rng)
    res = decode_weight_block(h, bad, ref, tol, None if model == "gross" else amax)
    ok = res.status == "repaired" and bool(np.max(np.abs(res.corrected - w)) <= 1e-6 * amax)
    exact = ok and bool(np.array_equal(res.corrected, w))
    wrong = res.status == "repaired" and not ok
    return {"family": family, "m": m, "k": k, "model": model, "ok": ok, "exact": exact,
            "miscorrected": wrong, "seconds": res.seconds, "erasures": res.erasures,
            "iterations": res.iterations}


def sweep(families, ms, ks, models, trials, seed, workers) -> list[dict]:
    """All trials, in parallel processes."""
    tasks = [(f, m, k, mod, t, seed) for f in families for mod in models for m in ms for k in ks
             for t in range(trials)]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(one_trial, tasks, chunksize=4))


def summarise(rows: list[dict]) -> dict:
    """Success rate per (family, model, m, k) and the largest k at >= 95% per (family, model, m)."""
    table: dict = {}
    for r in rows:
        key = (r["family"], r["model"], r["m"], r["k"])
        cell = table.setdefault(key, {"ok": 0, "exact": 0, "miscorrected": 0, "n": 0, "t": []})
        cell["ok"] += r["ok"]
        cell["exact"] += r["exact"]
        cell["miscorrected"] += r["miscorrected"]
        cell["n"] += 1
        cell["t"].append(r["seconds"])
    out = {"cells": [], "capacity95": []}
    for (fam, mod, m, k), c in sorted(table.items()):
        out["cells"].append({"family": fam, "model": mod, "m": m, "k": k, "trials": c["n"],
                             "success": c["ok"] / c["n"], "bit_exact": c["exact"] / c["n"],
                             "miscorrected": c["miscorrected"],
                             "median_s": float(np.median(c["t"])), "max_s": float(np.max(c["t"]))})
    for fam, mod, m in sorted({(c["family"], c["model"], c["m"]) for c in out["cells"]}):
        cells = [c for c in out["cells"] if (c["family"], c["model"], c["m"]) == (fam, mod, m)]
        good = [c["k"] for c in cells if c["success"] >= 0.95]
        out["capacity95"].append({"family": fam, "model": mod, "m": m,
                                  "max_k_at_95": max(good) if good else 0})
    return out


def lp_comparison(cases, seed) -> list[dict]:
    """Our decoder vs scipy HiGHS on the same syndromes: time and agreement of the error vector."""
    out = []
    for n, m, k in cases:
        rng = np.random.default_rng([seed, n, m, k])
        h = check_matrix("dct", n, m, seed)
        w = rng.uniform(-0.05, 0.05, n).astype(np.float32)
        wd = w.astype(np.float64)
        bad = w.copy()
        pos = rng.choice(n, k, replace=False)
        bad[pos] = (wd[pos] + rng.standard_normal(k)).astype(np.float32)
        ref = h.apply(wd)
        tol = syndrome_tolerance(h, float(np.linalg.norm(wd)))
        res = decode_weight_block(h, bad, ref, tol, None)
        e_true = bad.astype(np.float64) - wd
        s = h.apply(bad.astype(np.float64)) - ref
        e_lp, lp_s = l1_decode_lp(h.dense(), s)
        ours = np.zeros(n)
        if res.corrected is not None:
            ours = bad.astype(np.float64) - res.corrected.astype(np.float64)
        out.append({
            "n": n, "m": m, "k": k, "ours_status": res.status, "ours_s": res.seconds,
            "highs_s": lp_s, "speedup": lp_s / res.seconds,
            "max_abs_diff_ours_vs_lp": None if e_lp is None else float(np.abs(ours - e_lp).max()),
            "lp_error_vs_truth": None if e_lp is None else float(np.abs(e_lp - e_true).max()),
            "ours_error_vs_truth": float(np.abs(ours - e_true).max()),
        })
        print(f"  LP n={n} m={m} k={k}: ours {res.status} {res.seconds:.3f} s, HiGHS {lp_s:.2f} s "
              f"(x{lp_s / res.seconds:.0f}), max|e_ours - e_lp| = {out[-1]['max_abs_diff_ours_vs_lp']}")
    return out


def plot(summary: dict, path: Path) -> None:
    """Success rate vs number of errors, one panel per (family, error model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(c["family"], c["model"]) for c in summary["cells"]})
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (fam, mod) in zip(axes[0], panels):
        for m in sorted({c["m"] for c in summary["cells"]}):
            cells = [c for c in summary["cells"] if (c["family"], c["model"], c["m"]) == (fam, mod, m)]
            ax.plot([c["k"] for c in cells], [c["success"] for c in cells], "o-", label=f"m={m}")
        ax.axhline(0.95, color="gray", lw=0.8, ls="--")
        ax.axvline(210, color="red", lw=0.8, ls=":", label="paper: 210")
        ax.set(title=f"{fam} checks, {mod} errors, n=5120", xlabel="errors per layer",
               ylabel="repair success rate", ylim=(-0.02, 1.02))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ----------------------------------------------------------------------------- mobile CNN mode
def file_bytes(model) -> int:
    """Serialized size of a model."""
    return model.ByteSize()


def mobile_memory(original) -> list[dict]:
    """Model-file extra bytes of weight codes (rate and count forms), alone and on the layer code."""
    from onnx_ecc.transform import transform
    from onnx_ecc.weights import add_weight_checks, read_weight_codes, tensor_memory

    base = file_bytes(original)
    layer = transform(original, verify=False)
    configs = [("weight code", MOBILE_RATE, "float32", None), ("weight code", MOBILE_COUNT, "float32", None),
               ("weight code", MOBILE_COUNT, "float64", None), ("layer code", None, None, layer),
               ("layer + weight code", MOBILE_RATE, "float32", layer),
               ("layer + weight code", MOBILE_COUNT, "float32", layer)]
    rows = [{"config": "original", "checks": "-", "parity": "-", "bytes": base, "extra_vs_original": 0.0,
             "tensors": 0, "max_tensor_extra": 0.0, "tensors_over_rate": 0}]
    for what, checks, dtype, coded in configs:
        if coded is None:
            model = add_weight_checks(original, checks=checks, parity_dtype=dtype)
        elif checks is None:
            model = coded
        else:
            model = transform(original, verify=False, weight_checks=checks)
        entries = read_weight_codes(model)
        ratios = [tensor_memory(e)["extra_ratio"] for e in entries]
        rows.append({"config": what, "checks": "-" if checks is None else str(checks), "parity": dtype or "-",
                     "bytes": file_bytes(model), "extra_vs_original": file_bytes(model) / base - 1,
                     "tensors": len(entries), "max_tensor_extra": max(ratios, default=0.0),
                     "tensors_over_rate": sum(r > 0.05 + 1e-9 for r in ratios)})
    return rows


@functools.lru_cache(maxsize=2)
def _protected_tensors(path: str) -> dict:
    """name -> (entry, float32 weights, stored checks) of a saved protected model (per worker)."""
    import onnx
    from onnx import numpy_helper

    from onnx_ecc.weights import read_weight_codes

    model = onnx.load(path)
    inits = {t.name: t for t in model.graph.initializer}
    return {e["tensor"]: (e, numpy_helper.to_array(inits[e["tensor"]]).reshape(-1),
                          numpy_helper.to_array(inits[e["parity_tensor"]]).reshape(-1))
            for e in read_weight_codes(model)}


def tensor_trial(task: tuple) -> dict:
    """Corrupt one tensor with ceil(5/1000 n) errors, scrub it, compare with the original (oracle)."""
    from onnx_ecc.weights.model import check_tensor, repair_tolerance

    path, name, error_model, trial, seed = task
    entry, w, parity = _protected_tensors(path)[name]
    rng = np.random.default_rng([seed, trial, sum(map(ord, name)), 0 if error_model == "random" else 1])
    bad = corrupt(w, max(1, -(-PER_1000 * w.size // 1000)), error_model, rng)
    report, fixed = check_tensor(bad, entry, parity)
    got = bad if fixed is None else fixed
    touched = np.flatnonzero((got.view(np.uint32) != w.view(np.uint32)) | (bad.view(np.uint32) != w.view(np.uint32)))
    with np.errstate(invalid="ignore"):
        within = bool(np.all(np.abs(got[touched].astype(np.float64) - w[touched])
                             <= repair_tolerance(entry, parity, touched, got)))
    return {"tensor": name, "model": error_model, "status": report.status, "ok": within,
            "miscorrected": report.status == "repaired" and not within, "seconds": report.seconds}


def sample_tensors(entries: list[dict], count: int) -> list[str]:
    """All tensors (count 0), or ``count`` spread evenly over the size order (smallest and largest in)."""
    names = [e["tensor"] for e in sorted(entries, key=lambda e: e["n"])]
    if not count or count >= len(names):
        return names
    return [names[i] for i in np.unique(np.linspace(0, len(names) - 1, count).round().astype(int))]


def mobile_repairs(original, args) -> list[dict]:
    """Per-tensor repair success of the rate-sized weight code, in parallel over (tensor, trial)."""
    import onnx

    from onnx_ecc.weights import add_weight_checks, read_weight_codes

    model = add_weight_checks(original, checks=MOBILE_RATE)
    entries = {e["tensor"]: e for e in read_weight_codes(model)}
    names = sample_tensors(list(entries.values()), args.mobile_tensors)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "protected.onnx")
        onnx.save(model, path)
        tasks = [(path, n, mod, t, args.seed) for mod in args.mobile_models for n in names
                 for t in range(args.mobile_trials)]
        tasks.sort(key=lambda t: -entries[t[1]]["n"])  # big tensors first: better packing
        with ProcessPoolExecutor(args.workers) as pool:
            rows = list(pool.map(tensor_trial, tasks, chunksize=1))
    table = []
    for mod in args.mobile_models:
        for n in names:
            cell = [r for r in rows if r["tensor"] == n and r["model"] == mod]
            e = entries[n]
            table.append({"tensor": n, "model": mod, "n": e["n"], "m": e["m"], "blocks": len(e["blocks"]),
                          "errors": max(1, -(-PER_1000 * e["n"] // 1000)), "trials": len(cell),
                          "success": sum(r["ok"] for r in cell) / len(cell),
                          "miscorrected": sum(r["miscorrected"] for r in cell),
                          "median_s": float(np.median([r["seconds"] for r in cell]))})
    return table


def print_mobile(name: str, memory: list[dict], table: list[dict], args) -> None:
    """The memory table and the per-tensor repair table."""
    print(f"\n{name}: model-file bytes over the original (a rate counts the layer code's parity rows "
          f"and the code's metadata toward it)")
    print(f"{'config':<22} {'checks':>7} {'parity':>8} {'MB':>7} {'extra':>7} {'max/tensor':>10} {'over 5%':>7}")
    for r in memory:
        print(f"{r['config']:<22} {r['checks']:>7} {r['parity']:>8} {r['bytes'] / 1e6:>7.2f} "
              f"{r['extra_vs_original'] * 100:>6.2f}% {r['max_tensor_extra'] * 100:>9.1f}% {r['tensors_over_rate']:>7}")
    print(f"\nrepair of {PER_1000} corrupted weights per 1000, weight code {MOBILE_RATE} (float32 checks), "
          f"{args.mobile_trials} trials per tensor")
    print(f"{'tensor':<34} {'n':>8} {'m':>6} {'errors':>6} " + "".join(f"{m:>8}" for m in args.mobile_models)
          + f" {'sec':>6}")
    for n in dict.fromkeys(r["tensor"] for r in table):
        cells = {r["model"]: r for r in table if r["tensor"] == n}
        c0 = next(iter(cells.values()))
        print(f"{n[-34:]:<34} {c0['n']:>8} {c0['m']:>6} {c0['errors']:>6} "
              + "".join(f"{cells[m]['success']:>8.2f}" for m in args.mobile_models) + f" {c0['median_s']:>6.2f}")
    for mod in args.mobile_models:
        cells = [r for r in table if r["model"] == mod]
        print(f"{mod}: lowest success {min(c['success'] for c in cells):.2f}, tensors below 0.95: "
              f"{sum(c['success'] < 0.95 for c in cells)} of {len(cells)}, "
              f"miscorrections {sum(c['miscorrected'] for c in cells)}")


def mobile_main(args) -> int:
    """Mobile-CNN mode: memory table, per-tensor repair table, JSON."""
    from onnx_ecc import zoo

    start = time.time()
    original = zoo.build(args.mobile)
    memory = mobile_memory(original)
    table = mobile_repairs(original, args)
    print_mobile(args.mobile, memory, table, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"weight_decoding_{args.mobile}.json"
    path.write_text(json.dumps({"model": args.mobile, "rate": MOBILE_RATE, "errors_per_1000": PER_1000,
                                "trials": args.mobile_trials, "sampled_tensors": args.mobile_tensors,
                                "memory": memory, "repair": table, "seconds": time.time() - start}, indent=2))
    print(f"\nwrote {path} ({time.time() - start:.0f} s)")
    return 0


def main(argv=None) -> int:
    """Run the sweep, print the tables, write JSON and PNG."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--checks", type=int, nargs="+", default=[600, 800, 1000, 1200])
    p.add_argument("--errors", type=int, nargs="+", default=list(range(50, 401, 50)))
    p.add_argument("--models", nargs="+", default=["gross", "bitflip"])
    p.add_argument("--families", nargs="+", default=["dct"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--lp-small", type=int, default=3, help="HiGHS comparisons at n=1280, m=250")
    p.add_argument("--lp-full", type=int, default=1, help="HiGHS comparisons at n=5120, m=1000, k=210")
    p.add_argument("--out", default="results/weights")
    p.add_argument("--mobile", default=None, metavar="ZOO_MODEL",
                   help="mobile-CNN mode on this zoo model (e.g. mobilenet_v2) instead of the 512x10 sweep")
    p.add_argument("--mobile-trials", type=int, default=20, help="trials per tensor and error model")
    p.add_argument("--mobile-tensors", type=int, default=0, help="a fixed sample of this many tensors (0: all)")
    p.add_argument("--mobile-models", nargs="+", default=["random", "anybit"])
    args = p.parse_args(argv)
    if args.mobile:
        return mobile_main(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    start = time.time()
    rows = sweep(args.families, args.checks, args.errors, args.models, args.trials, args.seed,
                 args.workers)
    summary = summarise(rows)
    for fam, mod in sorted({(c["family"], c["model"]) for c in summary["cells"]}):
        print(f"\nsuccess rate, {fam} checks, {mod} errors, n=5120, {args.trials} trials per cell")
        print("m \\ k " + "".join(f"{k:>7}" for k in args.errors))
        for m in args.checks:
            cells = {c["k"]: c for c in summary["cells"]
                     if (c["family"], c["model"], c["m"]) == (fam, mod, m)}
            print(f"{m:<6}" + "".join(f"{cells[k]['success']:>7.2f}" for k in args.errors))
    print("\nlargest error count with >= 95% success:")
    for c in summary["capacity95"]:
        print(f"  {c['family']:<8} {c['model']:<8} m={c['m']:<5} k={c['max_k_at_95']}")
    mis = sum(c["miscorrected"] for c in summary["cells"])
    print(f"miscorrections (repaired but wrong): {mis}")
    k_ref = min(args.errors, key=lambda k: abs(k - 210))
    ref_cells = [r for r in rows if r["m"] == 1000 and r["k"] == k_ref and r["model"] == "gross"]
    timing = {}
    if ref_cells:
        t = np.array([r["seconds"] for r in ref_cells])
        timing = {"median_s": float(np.median(t)), "mean_s": float(t.mean()),
                  "p95_s": float(np.percentile(t, 95)), "max_s": float(t.max())}
        print(f"decode time per layer (m=1000, k={k_ref} gross, {args.workers} workers busy): "
              f"median {timing['median_s']:.3f} s, p95 {timing['p95_s']:.3f} s, max {timing['max_s']:.3f} s")
    sweep_s = time.time() - start
    print("\nHiGHS LP baseline (same syndromes):")
    cases = [(1280, 250, 40 + 10 * i) for i in range(args.lp_small)]
    cases += [(5120, 1000, 210)] * args.lp_full
    lp = lp_comparison(cases, args.seed)
    result = {"setting": {"n": N_IN * N_OUT, "weights": "U(-1/sqrt(512), 1/sqrt(512)) float32",
                          "parity": "float64", "trials": args.trials, "seed": args.seed,
                          "models": {"gross": "w += N(0,1), no erasure hint",
                                     "bitflip": "flip exponent bit 23..30, erasure hint on"}},
              "summary": summary, "timing_m1000_k_near_210": timing, "lp": lp, "sweep_seconds": sweep_s}
    (out / "weight_decoding.json").write_text(json.dumps(result, indent=2))
    plot(summary, out / "weight_decoding.png")
    print(f"\nwrote {out / 'weight_decoding.json'} and {out / 'weight_decoding.png'} "
          f"(sweep {sweep_s:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
