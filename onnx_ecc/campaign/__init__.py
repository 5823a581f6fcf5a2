"""Fault-injection campaigns: many seeded trials against the original and the protected model.

Why: protection is only worth its cost if, under the same faults, the protected model keeps
its predictions where the original loses them; this module measures exactly that (sweeps over
bit error rates, and a targeted campaign over faults known to corrupt the original).
Mechanism: a Runner holds one onnxruntime session per model whose weights live in numpy
buffers registered with ``SessionOptions.add_initializer`` (prepacking off), so weight faults
are applied in place and undone between trials without rebuilding sessions; output faults use
the InjectFault op driven by seed/rate graph inputs. Trials run on an executor (this process,
local processes or Ray tasks, see campaign_executors) and their counts do not depend on which.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import os
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from onnx_ecc import faults as F
from onnx_ecc.campaign.executors import open_executor
from onnx_ecc.campaign.stats import aggregate, breakdown, rule_of_three, upper_bound, wilson
from onnx_ecc.transform.record import read_protection

FAULT_TYPES = ("weight-bitflip", "weight-random", "weight-zero", "output-bitflip", "output-random", "output-zero",
               "mixed-bitflip")
BUILTIN_MODELS = ("mnist-cnn", "fashion-mlp", "bundled")


class CampaignError(ValueError):
    """Bad campaign input (the message says what)."""


# ---- inputs ---------------------------------------------------------------------------------

def resolve_model(spec: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    """A ModelProto from a built-in name (mnist-cnn, fashion-mlp, bundled) or a path."""
    if isinstance(spec, onnx.ModelProto):
        return spec
    from onnx_ecc import zoo

    if spec == "mnist-cnn":
        return zoo.mnist_cnn()
    if spec == "fashion-mlp":
        return zoo.fashion_mlp()
    if spec == "bundled":
        return onnx.load(str(zoo.bundled_default()))
    if not Path(spec).is_file():
        raise CampaignError(f"no model file {spec!r} (built-in models: {', '.join(BUILTIN_MODELS)})")
    return onnx.load(str(spec))


def load_samples(data: str, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``samples`` test images and labels of a dataset name or an .npz (x, y arrays)."""
    if samples <= 0:
        raise CampaignError("--samples must be > 0")
    if str(data).endswith(".npz"):
        if not Path(data).is_file():
            raise CampaignError(f"no data file {data!r}")
        with np.load(data) as z:
            xk = "x" if "x" in z else "x_test"
            yk = "y" if "y" in z else "y_test"
            if xk not in z or yk not in z:
                raise CampaignError(f"{data}: expected arrays x and y (or x_test and y_test)")
            x, y = z[xk], z[yk]
    else:
        from onnx_ecc import datasets

        d = datasets.load(data)
        x, y = d.x_test, d.y_test
    x = np.ascontiguousarray(x[:samples], dtype=np.float32)
    return x, np.asarray(y[:samples]).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class Config:
    """One campaign configuration: fault type, amount (bit error rate or count), bits, tensors."""

    fault: str
    ber: float | None = None
    count: int | None = None
    bits: str = "all"
    tensors: str = "protected"

    def __post_init__(self):
        if self.fault not in FAULT_TYPES:
            raise CampaignError(f"unknown fault type {self.fault!r}; choose from {', '.join(FAULT_TYPES)}")
        if (self.ber is None) == (self.count is None):
            raise CampaignError("give exactly one of a bit error rate and a count")
        F.parse_bits(self.bits)

    @property
    def key(self) -> str:
        amount = f"ber={self.ber:g}" if self.ber is not None else f"count={self.count}"
        return f"{self.fault}|{amount}|bits={self.bits}|tensors={self.tensors}"

    @property
    def site(self) -> str:
        return self.fault.split("-", 1)[0]

    @property
    def kind(self) -> str:
        return self.fault.split("-", 1)[1]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def trial_seed(base: int, key: str, trial: int) -> int:
    """A 63-bit seed per (campaign seed, configuration, trial), stable across runs and machines."""
    h = hashlib.sha256(f"{base}/{key}/{trial}".encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


# ---- mechanism: sessions with patchable weights ----------------------------------------------

class Runner:
    """One model's session whose listed weights can be faulted in place, optionally instrumented."""

    def __init__(self, model: onnx.ModelProto, weights: Iterable[str] = (), threads: int = 1,
                 instrument: dict | None = None):
        from onnx_ecc.runtime import ProtectedSession, session_options

        self.sites: list[F.Site] = []
        if instrument is not None:
            model, self.sites = F.instrument(model, **instrument)
        self.protected = read_protection(model) is not None
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        # Layout transforms (level ALL) and prepacking copy weights at load; without them the
        # kernels read the registered buffers at every run, so in-place faults take effect.
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.add_session_config_entry("session.disable_prepacking", "1")
        inits = {t.name: t for t in model.graph.initializer}
        self.arrays: dict[str, np.ndarray] = {}
        self._values = []
        for name in weights:
            a = np.array(numpy_helper.to_array(inits[name]), dtype=np.float32, order="C", copy=True)
            self.arrays[name] = a
            v = ort.OrtValue.ortvalue_from_numpy(a)
            self._values.append(v)   # the session reads this buffer: keep it alive
            so.add_initializer(name, v)
        self._options = so
        if self.protected:
            self.session = ProtectedSession(model, options=so)
        else:
            self.session = ort.InferenceSession(model.SerializeToString(), session_options(so),
                                                providers=["CPUExecutionProvider"])
        self.input_name = next(i.name for i in self.session.get_inputs() if i.name not in (F.compute.SEED_INPUT, F.compute.RATE_INPUT))
        self.output_name = self.session.get_outputs()[0].name

    def run(self, x: np.ndarray, weight_faults: Sequence[F.Fault] = (), seed: int = 0, rate: float = 0.0):
        """(logits, RunReport or None): one run with the weight faults in place, then restored."""
        feeds = {self.input_name: x}
        if self.sites:
            feeds.update(F.fault_feeds(seed, rate))
        undo = F.apply_in_place(self.arrays, weight_faults)
        try:
            out = self.session.run([self.output_name], feeds)[0]
        finally:
            F.restore(self.arrays, undo)
        return out, (self.session.last_report if self.protected else None)


def _outcome(logits: np.ndarray | None, clean: np.ndarray, y: np.ndarray, report=None, error: str | None = None,
             faults: int = 0) -> dict:
    """Counts for one model in one trial."""
    n = len(clean)
    if logits is None:
        d = {"samples": n, "correct": 0, "sdc": 0, "nonfinite": 0, "error": error, "faults": faults}
    else:
        logits = logits.reshape(n, -1)
        finite = np.isfinite(logits).all(axis=1)
        pred = np.argmax(np.where(np.isfinite(logits), logits, -np.inf), axis=1)
        d = {"samples": n, "correct": int(np.sum(finite & (pred == y))), "sdc": int(np.sum(finite & (pred != clean))),
             "nonfinite": int(np.sum(~finite)), "error": None, "faults": faults}
    if report is not None:
        d.update(flagged=report.flagged, corrected=report.corrected, uncorrectable=report.uncorrectable)
    return d


# ---- worker side ------------------------------------------------------------------------------

class Evaluator:
    """Everything one worker needs: both models, their runners (built once, lazily) and clean predictions."""

    def __init__(self, original: onnx.ModelProto, protected: onnx.ModelProto, x: np.ndarray, y: np.ndarray,
                 threads: int = 1, batch: int = 256):
        self.models = {"original": original, "protected": protected}
        self.x, self.y, self.threads, self.batch = x, y, threads, batch
        self.maps = F.weight_maps(protected)
        self.weight_names = {"protected": list(self.maps),
                             "original": [m.original for m in self.maps.values()]}
        self._runners: dict[tuple, Runner] = {}
        self._clean: dict[tuple, np.ndarray] = {}
        self._all_names: dict[str, list[str]] = {}

    def _names(self, model: str, tensors: str) -> list[str]:
        if tensors == "protected":
            return self.weight_names[model]
        k = f"{model}/{tensors}"
        if k not in self._all_names:
            self._all_names[k] = F.target_names(self.models[model], tensors)
        return self._all_names[k]

    def runner(self, model: str, cfg: Config) -> Runner:
        out_kind = cfg.kind if cfg.site in ("output", "mixed") else None
        key = (model, cfg.tensors if cfg.site in ("weight", "mixed") else "protected", out_kind,
               F.parse_bits(cfg.bits) if out_kind else None)
        if key not in self._runners:
            names = self._names(model, key[1])
            inst = None
            if out_kind:
                layers = F.layer_names(self.models["original"])
                inst = dict(layers=layers, kind=out_kind, bits=cfg.bits, count=int(cfg.count or 0),
                            sites={l: i for i, l in enumerate(layers)})
            r = Runner(self.models[model], names, self.threads, inst)
            self._runners[key] = r
            self._clean[key] = self._predict(r)[0]
        return self._runners[key]

    def clean(self, model: str, cfg: Config) -> np.ndarray:
        self.runner(model, cfg)
        out_kind = cfg.kind if cfg.site in ("output", "mixed") else None
        key = (model, cfg.tensors if cfg.site in ("weight", "mixed") else "protected", out_kind,
               F.parse_bits(cfg.bits) if out_kind else None)
        return self._clean[key]

    def _predict(self, r: Runner, weight_faults=(), seed=0, rate=0.0):
        outs, reports = [], []
        for s in range(0, len(self.x), self.batch):
            o, rep = r.run(self.x[s:s + self.batch], weight_faults, seed, rate)
            outs.append(o.reshape(len(o), -1))
            reports.append(rep)
        logits = np.concatenate(outs)
        if reports[0] is None:
            return np.argmax(logits, axis=1), logits, None
        from onnx_ecc.runtime import RunReport

        merged: dict = {}
        for rep in reports:
            for k, v in rep.layers.items():
                merged[k] = v if k not in merged else dataclasses.replace(
                    v, **{f: getattr(merged[k], f) + getattr(v, f) for f in
                          ("runs", "vectors", "flagged", "corrected_blocks", "corrected_values", "uncorrectable")})
        return np.argmax(logits, axis=1), logits, RunReport(merged)

    def weight_faults(self, cfg: Config, seed: int) -> dict[str, list[F.Fault]]:
        """The weight faults of one trial for both models (same elements where both have them)."""
        if cfg.site not in ("weight", "mixed"):
            return {"original": [], "protected": []}
        kind = cfg.kind
        if cfg.count is not None:
            # a fixed number of faults: drawn on the original, moved to the same elements of the protected model
            spec = F.WeightFaultSpec(kind=kind, count=cfg.count, bits=cfg.bits, tensors=self._names("original", cfg.tensors))
            fo = F.draw_weight_faults(self.models["original"], spec, seed)
            return {"original": fo, "protected": F.to_protected(fo, self.models["protected"])}
        # a bit error rate: drawn over the protected model's memory (parity rows included),
        # the original gets the faults that fall on its data
        ber = cfg.ber
        spec = F.WeightFaultSpec(kind=kind, ber=ber, bits=cfg.bits, tensors=self._names("protected", cfg.tensors))
        fp = F.draw_weight_faults(self.models["protected"], spec, seed)
        return {"original": F.to_original(fp, self.models["protected"]), "protected": fp}

    def output_rate(self, cfg: Config) -> float:
        if cfg.site not in ("output", "mixed") or cfg.ber is None:
            return 0.0
        k = len(F.parse_bits(cfg.bits)) if cfg.kind == "bitflip" else 1
        return float(1.0 - (1.0 - cfg.ber) ** k)

    def trial(self, cfg: Config, seed: int) -> dict:
        """Run one trial on both models: counts per model, plus the trial's identity."""
        wf = self.weight_faults(cfg, seed)
        rate = self.output_rate(cfg)
        out = {"config": cfg.key, "seed": seed, "settings": cfg.as_dict()}
        for model in ("original", "protected"):
            r = self.runner(model, cfg)
            clean = self.clean(model, cfg)
            before = F.injected_counts() if r.sites else {}
            try:
                _, logits, rep = self._predict(r, wf[model], seed & ((1 << 63) - 1), rate)
                injected = sum(F.injected_counts().values()) - sum(before.values()) if r.sites else 0
                out[model] = _outcome(logits, clean, self.y, rep, faults=len(wf[model]) + injected)
            except Exception as e:  # a failing run is a campaign outcome, not a crash
                out[model] = _outcome(None, clean, self.y, None, error=f"{type(e).__name__}: {e}",
                                      faults=len(wf[model]))
                if model == "protected":
                    out[model].update(flagged=0, corrected=0, uncorrectable=0)
        return out


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
                 transform_options: dict | None = None, executor: str = "local", address: str | None = None) -> dict:
    """Run every configuration ``trials`` times on both models; results under out_dir.

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
    _atomic_write(out / "original.onnx", original.SerializeToString())
    _atomic_write(out / "protected.onnx", protected.SerializeToString())
    log = out / "trials.jsonl"
    if resume and log.exists():
        data = log.read_bytes()
        if data and not data.endswith(b"\n"):      # drop a line torn by an interrupted run
            _atomic_write(log, data[: data.rfind(b"\n") + 1])
    done = {(r["config"], r["seed"]) for r in read_trials(log)} if resume else set()
    if not resume and log.exists():
        log.unlink()
    tasks = [(c, trial_seed(seed, c.key, t)) for c in configs for t in range(trials)]
    todo = [t for t in tasks if (t[0].key, t[1]) not in done]
    spec = (Evaluator, (original, protected, x, y, 1))
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
    ev = Evaluator(original, protected, x, y, threads=1)
    clean_acc = {m: float(np.mean(ev.clean(m, Config("weight-bitflip", count=0)) == y)) for m in ("original", "protected")}
    summary = {
        "samples": int(len(x)), "trials": trials, "seed": seed, "configs": [c.as_dict() for c in configs],
        "clean_accuracy": clean_acc, "rows": rows, "breakdown": breakdown(rows, clean_acc),
        "protection": read_protection(protected), "seconds": time.time() - t0, **speed,
    }
    _atomic_write(out / "summary.json", json.dumps(summary, indent=1, default=float).encode())
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
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    _atomic_write(path, buf.getvalue().encode())


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = Path(str(path) + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _speed(info: dict, n: int, seconds: float) -> dict:
    """The executor's description (name, nodes, CPUs, workers) and the trials per second it ran."""
    return {**info, "trials_run": n, "trials_per_second": n / seconds if n and seconds > 0 else None}


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="trials", unit="trial", dynamic_ncols=True,
                mininterval=0.5 if os.isatty(2) else 10.0)


# ---- targeted campaign ----------------------------------------------------------------------------

def _tensor_shapes(model: onnx.ModelProto, names: Sequence[str], x: np.ndarray) -> dict[str, tuple]:
    """Runtime shapes of intermediate tensors (run once with them exposed as outputs)."""
    from onnx_ecc.runtime import session_options

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(m.SerializeToString(), session_options(so), providers=["CPUExecutionProvider"])
    outs = s.run(list(names), {s.get_inputs()[0].name: x})
    return {n: tuple(o.shape) for n, o in zip(names, outs)}


TARGETED_CHUNK = 64      # single-sample runs per call of a targeted campaign (calls cost ~1 ms on Ray)


class TargetedEvaluator:
    """A targeted campaign's worker: single-sample runs of either model with one fault, judged
    against that model's fault-free top-1 (runners built once per worker process)."""

    def __init__(self, original: onnx.ModelProto, protected: onnx.ModelProto, x: np.ndarray, y: np.ndarray,
                 site: str, bits: Sequence[int]):
        self.models = {"original": original, "protected": protected}
        self.x, self.y, self.bits = x, y, tuple(bits)
        self._runners: dict[tuple, Runner] = {}
        if site == "weight":
            maps = F.weight_maps(protected)
            names = {"original": [m.original for m in maps.values()], "protected": list(maps)}
            for m in names:
                self._runners[(m, None)] = Runner(self.models[m], names[m])
            self.clean = {m: np.argmax(self._runners[(m, None)].run(x)[0].reshape(len(x), -1), axis=1) for m in names}
        else:
            layers = F.layer_names(original)
            self.sites = {l: s for s, l in enumerate(layers)}
            self.clean = {m: np.argmax(_batched(self.runner(m, layers[0]), x, rate=0.0), axis=1) for m in self.models}

    def runner(self, model: str, layer: str | None) -> Runner:
        """The weight-patchable runner (layer None) or the one injecting into ``layer``'s output."""
        key = (model, layer)
        if key not in self._runners:
            self._runners[key] = Runner(self.models[model], (), instrument=dict(
                layers=[layer], bits=self.bits, count=1, sites=self.sites))
        return self._runners[key]

    def _run(self, model: str, i: int, layer: str | None, faults: Sequence[F.Fault], seed: int):
        out, rep = self.runner(model, layer).run(self.x[i:i + 1], faults, seed)
        return out.reshape(-1), rep

    def probe(self, calls: Sequence[tuple]) -> list[tuple[bool, bool]]:
        """(finite, corrupt) of the original for each (sample, layer, weight faults, seed)."""
        verdicts = []
        for i, layer, faults, seed in calls:
            out, _ = self._run("original", i, layer, faults, seed)
            finite = bool(np.isfinite(out).all())
            verdicts.append((finite, not finite or int(np.argmax(out)) != self.clean["original"][i]))
        return verdicts

    def confirm(self, calls: Sequence[tuple]) -> list[dict]:
        """One targeted row per (found item, layer, protected faults, seed, protected fault)."""
        rows = []
        for item, layer, faults, seed, fp in calls:
            i = item["sample"]
            out, rep = self._run("protected", i, layer, faults, seed)
            rows.append(_targeted_row(item, fp, out, self.clean["protected"][i], self.y[i], rep))
        return rows

    def verify(self, items: list[dict]) -> list[dict]:
        """See _verify_weight_patching (weight site only)."""
        return _verify_weight_patching(self.models["original"], self.models["protected"], self.x, items,
                                       self.runner("original", None), self.runner("protected", None))


def _chunks(items: Iterable, size: int = TARGETED_CHUNK) -> Iterator[list]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _weight_plan(original: onnx.ModelProto, protected: onnx.ModelProto, bits: tuple, rng: np.random.Generator):
    """Weight site, driver side: ``draw(sample)`` gives (key, fault, probe call) for one bit of a
    protected layer's weight; ``confirm(item)`` the call running it on the same element of ``W__ecc_L``."""
    names = [m.original for m in F.weight_maps(protected).values()]
    spec = F.WeightFaultSpec(count=1, bits=bits, tensors=tuple(names))

    def draw(i):
        f = F.draw_weight_faults(original, spec, int(rng.integers(1 << 62)))[0]
        return (f.target, f.index, f.bit), f, (i, None, [f], 0)

    def confirm(item):
        fp = F.to_protected([item["fault"]], protected)
        return item, None, fp, 0, fp[0]

    return draw, confirm


def _output_plan(original: onnx.ModelProto, protected: onnx.ModelProto, x: np.ndarray, bits: tuple,
                 rng: np.random.Generator):
    """Output site, driver side: ``draw(sample)`` gives (key, fault, probe call) for one bit of a
    layer output element (layers weighted by size); ``confirm(item)`` the call whose inverted seed
    makes the protected model's InjectFault kernel flip the same data element of ``__ecc_aug``."""
    layers = F.layer_names(original)
    sites = {l: s for s, l in enumerate(layers)}
    so = {s.layer: s for s in F.instrument(original, layers, bits=bits, count=1, sites=sites)[1]}
    sp = {s.layer: s for s in F.instrument(protected, layers, bits=bits, count=1, sites=sites)[1]}
    shape_o = _tensor_shapes(original, [so[l].tensor for l in layers], x[:1])
    shape_p = _tensor_shapes(protected, [sp[l].tensor for l in layers], x[:1])
    sizes = np.array([int(np.prod(shape_o[so[l].tensor])) for l in layers], dtype=np.float64)
    probs = sizes / sizes.sum()

    def draw(i):
        li = int(rng.choice(len(layers), p=probs))
        l, s = layers[li], int(rng.integers(1 << 62))
        f = F.compute_faults(s, sites[l], int(sizes[li]), bits=bits, count=1, target=l)[0]
        return (l, f.index, f.bit, i), f, (i, l, [], s)

    def confirm(item):
        f = item["fault"]
        l = f.target
        cm = sp[l].channel_map() if sp[l].data_channels > 0 else \
            F.ChannelMap(l, l, sp[l].axis, shape_o[so[l].tensor][sp[l].axis], shape_p[sp[l].tensor][sp[l].axis])
        j, _ = F.map_output_index(f.index, shape_o[so[l].tensor], sp[l].axis, cm)
        n_p = int(np.prod(shape_p[sp[l].tensor]))
        s = F.seed_for_fault(sites[l], n_p, j, f.bit, bits)
        expect = F.compute_faults(s, sites[l], n_p, bits=bits, count=1, target=l)
        if [(e.index, e.bit) for e in expect] != [(j, f.bit)]:
            raise RuntimeError(f"seed inversion failed for {f.describe()}")
        return item, l, [], s, expect[0]

    return draw, confirm


def _find_corrupting(ex, draw, n_samples: int, n_faults: int, max_trials: int, rng: np.random.Generator,
                     bar) -> tuple[list[dict], int]:
    """Draw single faults until ``n_faults`` distinct ones corrupt the original's output
    (non-finite, or top-1 changed); returns them and the number of draws.

    Candidates come from ``rng`` in one sequence and are probed in chunks on the executor's
    workers, but judged in draw order, so the faults found and the draws counted are the same
    on any executor (the draws past the last fault found are dropped). ``draw(sample)`` gives
    (key, fault, probe call); ``key`` tells faults apart.
    """
    found: list[dict] = []
    seen: set = set()
    tried = 0
    in_flight: collections.deque = collections.deque()    # the candidates of the chunks submitted

    def calls():
        candidates = (draw(int(rng.integers(n_samples))) for _ in range(max_trials if n_faults > 0 else 0))
        for chunk in _chunks(candidates):
            in_flight.append(chunk)
            yield "probe", ([c[2] for c in chunk],)

    with contextlib.closing(ex.imap(calls(), ordered=True)) as verdicts:
        for (key, fault, call), (finite, corrupt) in itertools.chain.from_iterable(
                zip(in_flight.popleft(), v) for v in verdicts):
            tried += 1
            if corrupt and key not in seen:
                seen.add(key)
                found.append({"sample": call[0], "fault": fault, "original_finite": finite})
                bar.update(1)
                if len(found) == n_faults:
                    break
    bar.close()
    return found, tried


def targeted_campaign(original: onnx.ModelProto, protected: onnx.ModelProto, x: np.ndarray, y: np.ndarray,
                      site: str = "weight", n_faults: int = 1000, bits: str = "all", seed: int = 0,
                      max_trials: int = 500_000, progress: bool = True, verify: int = 3, jobs: int | None = None,
                      executor: str = "local", address: str | None = None) -> dict:
    """Find ``n_faults`` distinct single bit flips that change the original's top-1 on a sample,
    then run exactly those faults on the protected model and count what still gets through.

    site 'weight': a bit of a protected layer's weight/bias (same element of ``W__ecc_L`` in the
    protected model); site 'output': a bit of a layer output element (the same data element of
    the ``__ecc_aug`` tensor, injected by the InjectFault kernel via an inverted seed). The runs
    go to ``executor`` (as in run_campaign); the faults found do not depend on it.
    """
    if site not in ("weight", "output"):
        raise CampaignError("site must be 'weight' or 'output'")
    t0 = time.time()
    bits_t = F.parse_bits(bits)
    rng = np.random.default_rng(seed)
    draw, confirm = _weight_plan(original, protected, bits_t, rng) if site == "weight" else \
        _output_plan(original, protected, x, bits_t, rng)
    spec = (TargetedEvaluator, (original, protected, x, y, site, bits_t))
    with open_executor(executor, spec, jobs, address) as ex:
        t_search = time.time()
        found, tried = _find_corrupting(ex, draw, len(x), n_faults, max_trials, rng, _progress(n_faults, 0, progress))
        speed = _speed(ex.info, tried, time.time() - t_search)
        calls = (("confirm", (c,)) for c in _chunks(map(confirm, found)))
        results = [row for rows in ex.imap(calls, ordered=True) for row in rows]
        [checks] = ex.imap([("verify", (found[:verify],))]) if site == "weight" else [[]]
    n = len(results)
    still = sum(r["protected_corrupt"] for r in results)
    summary = {
        "site": site, "bits": list(bits_t), "seed": seed, "samples": int(len(x)), "trials_searched": tried,
        "sdc_faults_found": len(found), "search_yield": len(found) / tried if tried else math.nan,
        "original_nonfinite": sum(1 for r in results if not r["original_finite"]),
        "protected_still_corrupt": still, "protected_still_sdc": sum(r["protected_sdc"] for r in results),
        "protected_nonfinite": sum(1 for r in results if not r["protected_finite"]),
        "still_corrupt_rate": still / n if n else math.nan,
        "upper95_clopper_pearson": upper_bound(still, n), "upper95_rule_of_three": rule_of_three(n) if still == 0 else None,
        "wilson95": wilson(still, n) if n else None,
        "detected": sum(r["flagged"] > 0 for r in results), "corrected": sum(r["corrected"] > 0 and r["uncorrectable"] == 0 for r in results),
        "uncorrectable": sum(r["uncorrectable"] > 0 for r in results),
        "protected_correct_label": sum(r["protected_label_ok"] for r in results),
        "by_bit": _count_by(results, "bit"), "by_target": _count_by(results, "target"),
        "patching_checks": checks, "seconds": time.time() - t0, **speed, "faults": results,
    }
    return summary


def _batched(r: Runner, x: np.ndarray, batch: int = 256, **kw) -> np.ndarray:
    return np.concatenate([r.run(x[s:s + batch], **kw)[0].reshape(len(x[s:s + batch]), -1) for s in range(0, len(x), batch)])


def _targeted_row(item: dict, fp: F.Fault, out: np.ndarray, clean_p: int, label: int, rep) -> dict:
    finite = bool(np.isfinite(out).all())
    pred = int(np.argmax(np.where(np.isfinite(out), out, -np.inf)))
    f = item["fault"]
    return {"sample": item["sample"], "fault": f.to_dict(), "protected_fault": fp.to_dict(), "bit": f.bit,
            "target": f.target, "original_finite": item["original_finite"], "protected_finite": finite,
            "protected_pred": pred, "protected_clean_pred": int(clean_p),
            "protected_sdc": bool(finite and pred != clean_p), "protected_corrupt": bool(not finite or pred != clean_p),
            "protected_label_ok": bool(finite and pred == label),
            "flagged": rep.flagged if rep else 0, "corrected": rep.corrected if rep else 0,
            "uncorrectable": rep.uncorrectable if rep else 0}


def _count_by(rows: list[dict], key: str) -> dict:
    out: dict = {}
    for r in rows:
        k = str(r[key])
        c = out.setdefault(k, {"faults": 0, "still_corrupt": 0})
        c["faults"] += 1
        c["still_corrupt"] += int(r["protected_corrupt"])
    return out


def _verify_weight_patching(original, protected, x, items, ro: Runner, rp: Runner) -> list[dict]:
    """Oracle check of the in-place mechanism: fresh sessions of apply_weight_faults copies must
    give the same logits as the patched sessions."""
    from onnx_ecc.runtime import ProtectedSession

    checks = []
    for item in items:
        i, f = item["sample"], item["fault"]
        fp = F.to_protected([f], protected)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        a = ort.InferenceSession(F.apply_weight_faults(original, [f]).SerializeToString(), so).run(None, {ro.input_name: x[i:i + 1]})[0]
        b = ProtectedSession(F.apply_weight_faults(protected, fp)).run(None, {rp.input_name: x[i:i + 1]})[0]
        a2, b2 = ro.run(x[i:i + 1], [f])[0], rp.run(x[i:i + 1], fp)[0]
        checks.append({"fault": f.describe(), "original_same_top1": int(np.argmax(a)) == int(np.argmax(a2)),
                       "protected_same_top1": int(np.argmax(b)) == int(np.argmax(b2)),
                       "original_rel_diff": _maxdiff(a, a2), "protected_rel_diff": _maxdiff(b, b2)})
    return checks


def _maxdiff(a, b) -> float:
    """Largest difference relative to the largest finite |value| (faulty logits can be ~1e30)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    same = (np.isnan(a) & np.isnan(b)) | (a == b)
    d = np.where(same, 0.0, np.abs(a - b))
    scale = max(1.0, float(np.max(np.abs(np.where(np.isfinite(a), a, 0.0)))))
    return float(np.nan_to_num(d.max(), nan=np.inf)) / scale if d.size else 0.0
