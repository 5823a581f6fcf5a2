"""Plots of a bit-error-rate sweep: accuracy and corruption rates vs rate, protected vs unprotected, with 95% CIs.

Why: the sweep's message (where protection helps, where it breaks down) is a picture.
"""

from __future__ import annotations

from pathlib import Path

COLORS = {"original": "tab:red", "protected": "tab:blue", "scrubbed": "tab:green"}
LABELS = {"original": "original", "protected": "layer code (decoded at run time)",
          "scrubbed": "+ weight codes, scrubbed before inference"}


def plot_sweep(rows: list[dict], out_dir, clean_accuracy: dict | None = None, dpi: int = 72) -> list[str]:
    """One PNG per fault type with a bit-error-rate sweep; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    paths = []
    for fault in sorted({r["fault"] for r in rows if r.get("ber") is not None}):
        fig, axes = plt.subplots(1, 3, figsize=(13, 4.0))
        for model in COLORS:
            rs = sorted((r for r in rows if r["fault"] == fault and r["model"] == model and r.get("ber") is not None),
                        key=lambda r: r["ber"])
            if not rs:
                continue
            b = [r["ber"] for r in rs]
            for ax, key, lo, hi in ((axes[0], "accuracy", "accuracy_lo", "accuracy_hi"),
                                    (axes[1], "corrupt_rate", "corrupt_rate_lo", "corrupt_rate_hi"),
                                    (axes[2], "trial_corrupt_rate", "trial_corrupt_lo", "trial_corrupt_hi")):
                v = [r[key] for r in rs]
                ax.plot(b, v, "o-", color=COLORS[model], label=LABELS[model], ms=4)
                ax.fill_between(b, [r[lo] for r in rs], [r[hi] for r in rs], color=COLORS[model], alpha=0.2)
            if clean_accuracy and model in clean_accuracy:
                axes[0].axhline(clean_accuracy[model], color=COLORS[model], ls=":", lw=1)
        titles = ("top-1 accuracy (bootstrap 95% CI over trials)",
                  "corrupted predictions: top-1 changed or NaN/inf\n(bootstrap 95% CI over trials)",
                  "trials with >= 1 corrupted prediction (Wilson 95% CI)")
        for ax, t in zip(axes, titles):
            ax.set_xscale("log")
            ax.set_xlabel("bit error rate")
            ax.set_title(t, fontsize=9)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{fault}: {rows[0]['trials']} trials x {rows[0]['samples'] // max(rows[0]['trials'], 1)} samples per point",
                     fontsize=10)
        fig.tight_layout()
        path = out_dir / f"sweep_{fault}.png"
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
        paths.append(str(path))
    return paths
