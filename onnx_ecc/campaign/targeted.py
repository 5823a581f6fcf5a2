"""Targeted campaigns: faults known to change the original's prediction, and how many the protected model keeps."""

from __future__ import annotations

import collections
import contextlib
import itertools
import math
import time
from typing import Iterable, Iterator, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from onnx_ecc import faults as F
from onnx_ecc.campaign.config import CampaignError
from onnx_ecc.campaign.executors import open_executor
from onnx_ecc.campaign.runner import Runner
from onnx_ecc.campaign.stats import rule_of_three, upper_bound, wilson
from onnx_ecc.campaign.sweep import _progress, _speed

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
            names = {"original": F.original_names(maps), "protected": list(maps)}
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
    names = F.original_names(F.weight_maps(protected))
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
        "recomputed": sum(r["recomputed"] for r in results),
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
            "uncorrectable": rep.uncorrectable if rep else 0, "recomputed": bool(rep and rep.checks_failed)}


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
