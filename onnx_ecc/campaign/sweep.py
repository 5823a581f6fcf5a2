"""The sweep driver: every configuration times every trial on an executor, resumable, with summaries and plots."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from onnx_ecc.campaign.config import CampaignError, Config, trial_seed
from onnx_ecc.campaign.executors import open_executor
from onnx_ecc.campaign.stats import aggregate, breakdown
from onnx_ecc.campaign.trials import Evaluator
from onnx_ecc.io import write_bytes
from onnx_ecc.transform.record import read_protection

# ---- driver -----------------------------------------------------------------------------------

def read_trials(path: Path) -> list[dict]:
    """Finished trials from a trials.jsonl (a torn last line from an interrupted run is ignored)."""
    if not path.exists():
        return []
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return rows


def run_campaign(original: onnx.ModelProto, configs: Sequence[Config], x: np.ndarray, y: np.ndarray, trials: int,
                 out_dir: str | os.PathLike, protected: onnx.ModelProto | None = None, resume: bool = False,
                 jobs: int | None = None, seed: int = 0, progress: bool = True, plot: bool = True,
                 transform_options: dict | None = None, executor: str = "local", address: str | None = None,
                 scrubbed: onnx.ModelProto | None = None) -> dict:
    """Run every configuration ``trials`` times on both models (and ``scrubbed``, the protected
    model with weight codes, scrubbed before each trial's inference: see trials); results under out_dir.

    Writes trials.jsonl (one line per finished trial, keyed by config and trial seed),
    summary.json, summary.csv and (if matplotlib is there) sweep PNGs. Returns the summary.
    Trials run on ``executor`` (see campaign_executors.open_executor: 'local' with ``jobs``
    processes, or 'ray' on the cluster at ``address``); the counts do not depend on it.
    """
    import onnx_ecc

    if trials <= 0:
        raise CampaignError("--trials must be > 0")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if protected is None:
        protected = onnx_ecc.transform(original, **(transform_options or {}))
    if read_protection(protected) is None:
        raise CampaignError("the protected model carries no onnx-ecc protection record")
    write_bytes(out / "original.onnx", original.SerializeToString())
    write_bytes(out / "protected.onnx", protected.SerializeToString())
    if scrubbed is not None:
        write_bytes(out / "scrubbed.onnx", scrubbed.SerializeToString())
    log = out / "trials.jsonl"
    if resume and log.exists():
        data = log.read_bytes()
        if data and not data.endswith(b"\n"):      # drop a line torn by an interrupted run
            write_bytes(log, data[: data.rfind(b"\n") + 1])
    done = {(r["config"], r["seed"]) for r in read_trials(log)} if resume else set()
    if not resume and log.exists():
        log.unlink()
    tasks = [(c, trial_seed(seed, c.key, t)) for c in configs for t in range(trials)]
    todo = [t for t in tasks if (t[0].key, t[1]) not in done]
    spec = (Evaluator, (original, protected, x, y, 1, 256, scrubbed))
    with open_executor(executor, spec, jobs, address, tasks=len(todo)) as ex, open(log, "a") as f:
        bar = _progress(len(tasks), len(tasks) - len(todo), progress)
        t_run = time.time()
        for r in ex.imap(("trial", task) for task in todo):
            f.write(json.dumps(r) + "\n")
            f.flush()
            bar.update(1)
        speed = _speed(ex.info, len(todo), time.time() - t_run)
        bar.close()
    wanted = {(c.key, s) for c, s in tasks}
    records = [r for r in read_trials(log) if (r["config"], r["seed"]) in wanted]
    rows = aggregate(records)
    ev = Evaluator(original, protected, x, y, threads=1, scrubbed=scrubbed)
    clean_acc = {m: float(np.mean(ev.clean(m, Config("weight-bitflip", count=0)) == y)) for m in ev.model_names}
    summary = {
        "samples": int(len(x)), "trials": trials, "seed": seed, "configs": [c.as_dict() for c in configs],
        "clean_accuracy": clean_acc, "rows": rows, "breakdown": breakdown(rows, clean_acc),
        "protection": read_protection(protected), "seconds": time.time() - t0, **speed,
    }
    write_bytes(out / "summary.json", json.dumps(summary, indent=1, default=float).encode())
    write_csv(rows, out / "summary.csv")
    if plot:
        try:
            from onnx_ecc.campaign.plot import plot_sweep

            summary["plots"] = plot_sweep(rows, out, clean_acc)
        except ImportError:
            summary["plots"] = []
    return summary


def write_csv(rows: list[dict], path: Path) -> None:
    import csv
    import io

    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), restval="")
        w.writeheader()
        w.writerows(rows)
    write_bytes(path, buf.getvalue().encode())



def _speed(info: dict, n: int, seconds: float) -> dict:
    """The executor's description (name, nodes, CPUs, workers) and the trials per second it ran."""
    return {**info, "trials_run": n, "trials_per_second": n / seconds if n and seconds > 0 else None}


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="trials", unit="trial", dynamic_ncols=True,
                mininterval=0.5 if os.isatty(2) else 10.0)
