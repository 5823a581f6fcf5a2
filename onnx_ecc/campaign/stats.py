"""Confidence intervals and per-configuration aggregation of campaign trials.

Why: a campaign's numbers are estimates; every rate carries a 95% interval (Wilson for counts,
Clopper-Pearson / rule of three when nothing was observed, bootstrap over trials for means).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k/n."""
    if n <= 0:
        return (math.nan, math.nan)
    if not 0 <= k <= n:
        raise ValueError(f"k={k} not in [0, n={n}]")
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval of k/n."""
    from scipy.stats import beta

    if n <= 0:
        return (math.nan, math.nan)
    a = 1 - confidence
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return (lo, hi)


def upper_bound(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided exact upper bound of a rate after k events in n trials (k=0: 1-(0.05)^(1/n) ~ 3/n)."""
    from scipy.stats import beta

    if n <= 0:
        return math.nan
    return 1.0 if k >= n else float(beta.ppf(confidence, k + 1, n - k))


def rule_of_three(n: int) -> float:
    """Approximate 95% upper bound of a rate never observed in n trials."""
    return 3.0 / n if n > 0 else math.nan


def bootstrap_mean(values: Sequence[float], n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap 95% interval (resampling the values, e.g. trials)."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return (math.nan, math.nan, math.nan)
    if v.size == 1 or np.all(v == v[0]):
        return (float(v.mean()), float(v.mean()), float(v.mean()))
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    return (float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


MODELS = ("original", "protected", "scrubbed")   # "scrubbed": with weight codes, scrubbed before inference


def aggregate(records: Iterable[dict]) -> list[dict]:
    """One row per (configuration, model) from trial records (see campaign.evaluate_trial)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    configs: dict[str, dict] = {}
    for r in records:
        configs[r["config"]] = r["settings"]
        for m in MODELS:
            if m in r:
                groups.setdefault((r["config"], m), []).append(r[m])
    rows = []
    def order(kv):
        s = configs[kv[0][0]]
        return (s["fault"], s.get("ber") if s.get("ber") is not None else -1.0, s.get("count") or 0, kv[0][0], kv[0][1])

    for (key, model), trials in sorted(groups.items(), key=order):
        n_tr = len(trials)
        samples = sum(t["samples"] for t in trials)
        acc = bootstrap_mean([t["correct"] / t["samples"] for t in trials])
        sdc = bootstrap_mean([t["sdc"] / t["samples"] for t in trials])
        corrupt = bootstrap_mean([(t["sdc"] + t["nonfinite"] + (t["samples"] if t.get("error") else 0)) / t["samples"]
                                  for t in trials])
        any_corrupt = sum(1 for t in trials if t["sdc"] > 0 or t["nonfinite"] > 0 or t.get("error"))
        any_sdc = sum(1 for t in trials if t["sdc"] > 0)
        failed = sum(1 for t in trials if t["nonfinite"] > 0 or t.get("error"))
        detected = sum(1 for t in trials if t.get("flagged", 0) > 0)
        unc = sum(1 for t in trials if t.get("uncorrectable", 0) > 0)
        s = configs[key]
        rows.append({
            "config": key, "model": model, "fault": s["fault"], "ber": s.get("ber"), "count": s.get("count"),
            "bits": s.get("bits"), "trials": n_tr, "samples": samples,
            "accuracy": acc[0], "accuracy_lo": acc[1], "accuracy_hi": acc[2],
            "sdc_rate": sdc[0], "sdc_rate_lo": sdc[1], "sdc_rate_hi": sdc[2],
            "sdc_predictions": sum(t["sdc"] for t in trials),
            "trials_with_sdc": any_sdc,
            "trial_sdc_rate": any_sdc / n_tr, "trial_sdc_lo": wilson(any_sdc, n_tr)[0], "trial_sdc_hi": wilson(any_sdc, n_tr)[1],
            "corrupt_rate": corrupt[0], "corrupt_rate_lo": corrupt[1], "corrupt_rate_hi": corrupt[2],
            "trials_corrupt": any_corrupt, "trial_corrupt_rate": any_corrupt / n_tr,
            "trial_corrupt_lo": wilson(any_corrupt, n_tr)[0], "trial_corrupt_hi": wilson(any_corrupt, n_tr)[1],
            "nonfinite_predictions": sum(t["nonfinite"] for t in trials),
            "exceptions": sum(1 for t in trials if t.get("error")),
            "trials_failed": failed, "trial_fail_lo": wilson(failed, n_tr)[0], "trial_fail_hi": wilson(failed, n_tr)[1],
            "mean_faults": float(np.mean([t["faults"] for t in trials])),
            "trials_detected": detected, "trials_uncorrectable": unc,
            "flagged_blocks": sum(t.get("flagged", 0) for t in trials),
            "corrected_blocks": sum(t.get("corrected", 0) for t in trials),
            "uncorrectable_blocks": sum(t.get("uncorrectable", 0) for t in trials),
            **({"trials_scrub_beyond_repair": sum(1 for t in trials if t["scrub_beyond_repair"]),
                "mean_scrub_seconds": float(np.mean([t["scrub_seconds"] for t in trials]))}
               if model == "scrubbed" else {}),
        })
    return rows


def breakdown(rows: list[dict], clean_accuracy: float, max_drop: float = 0.01) -> dict:
    """Per fault type: the smallest rate at which the protected model shows SDCs, and at which its
    accuracy falls more than ``max_drop`` below the fault-free accuracy (same for the original)."""
    out = {}
    for fault in sorted({r["fault"] for r in rows}):
        for model in MODELS:
            rs = sorted((r for r in rows if r["fault"] == fault and r["model"] == model and r["ber"] is not None),
                        key=lambda r: r["ber"])
            first_sdc = next((r["ber"] for r in rs if r["sdc_predictions"] > 0), None)
            first_drop = next((r["ber"] for r in rs if r["accuracy"] < clean_accuracy.get(model, 1.0) - max_drop), None) \
                if isinstance(clean_accuracy, dict) else next((r["ber"] for r in rs if r["accuracy"] < clean_accuracy - max_drop), None)
            out.setdefault(fault, {})[model] = {"first_ber_with_sdc": first_sdc, "first_ber_accuracy_drop": first_drop}
    return out
