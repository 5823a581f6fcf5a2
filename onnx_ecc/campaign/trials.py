"""One worker's side of a campaign: the models' runners, clean predictions, and one trial's counts.

The models are the original, the protected one (decoded at run time), and optionally the
"scrubbed" one: the protected model with weight codes, whose stored weights are scrubbed with both
codes (``weights.repair.Scrub``, as ``onnx-ecc scrub`` does) after each trial's weight faults and
before its inference. Under a bit error rate its memory (weights, parity rows and the weight codes'
checks) takes the faults; the protected model gets those that fall on its tensors and the original
those that fall on its data, so all three see the same flips.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx

from onnx_ecc import faults as F
from onnx_ecc.campaign.config import Config
from onnx_ecc.campaign.runner import Runner, _outcome

MODELS = ("original", "protected", "scrubbed")
SCRUB_SOLVER = {"max_iter": 300}   # the weight codes' l1 decoder per block, capped for campaign speed

# ---- worker side ------------------------------------------------------------------------------

class Evaluator:
    """Everything one worker needs: the models, their runners (built once, lazily) and clean predictions."""

    def __init__(self, original: onnx.ModelProto, protected: onnx.ModelProto, x: np.ndarray, y: np.ndarray,
                 threads: int = 1, batch: int = 256, scrubbed: onnx.ModelProto | None = None):
        self.models = {"original": original, "protected": protected}
        self.x, self.y, self.threads, self.batch = x, y, threads, batch
        self.maps = F.weight_maps(protected)
        self.weight_names = {"protected": list(self.maps),
                             "original": F.original_names(self.maps)}
        self.scrub = None
        if scrubbed is not None:
            from onnx_ecc.weights.repair import Scrub

            self.models["scrubbed"] = scrubbed
            self.scrub = Scrub(scrubbed)
            checks = [e["parity_tensor"] for e in self.scrub.entries if "parity_tensor" in e]
            covered = [n for n in self.scrub.tensors() if n not in self.weight_names["protected"]]
            self.weight_names["scrubbed"] = self.weight_names["protected"] + covered
            self.check_names = checks               # the weight codes' checks: memory the faults reach too
            self._clean_checks = {t: p.copy() for t, p in self.scrub.parities.items() if p is not None}
            self._erasures = dict(self.scrub.erasures)
        self._runners: dict[tuple, Runner] = {}
        self._clean: dict[tuple, np.ndarray] = {}
        self._all_names: dict[str, list[str]] = {}

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(m for m in MODELS if m in self.models)

    def _names(self, model: str, tensors: str) -> list[str]:
        if tensors == "protected":
            return self.weight_names[model]
        if model == "scrubbed":   # the runner's arrays: what the faults reach besides the checks
            return [n for n in F.target_names(self.models[model], tensors) if n not in self.check_names]
        k = f"{model}/{tensors}"
        if k not in self._all_names:
            self._all_names[k] = F.target_names(self.models[model], tensors)
        return self._all_names[k]

    @staticmethod
    def _key(model: str, cfg: Config) -> tuple:
        """Which runner serves ``cfg`` on ``model``: its patchable tensors and its output faults."""
        out_kind = cfg.kind if cfg.site in ("output", "mixed") else None
        return (model, cfg.tensors if cfg.site in ("weight", "mixed") else "protected", out_kind,
                F.parse_bits(cfg.bits) if out_kind else None)

    def runner(self, model: str, cfg: Config) -> Runner:
        key = self._key(model, cfg)
        out_kind = key[2]
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
        return self._clean[self._key(model, cfg)]

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
            return {m: [] for m in self.model_names}
        kind = cfg.kind
        if cfg.count is not None:
            # a fixed number of faults: drawn on the original, moved to the same elements of the protected model
            spec = F.WeightFaultSpec(kind=kind, count=cfg.count, bits=cfg.bits, tensors=self._names("original", cfg.tensors))
            fo = F.draw_weight_faults(self.models["original"], spec, seed)
            fp = F.to_protected(fo, self.models["protected"])
            return {"original": fo, "protected": fp, **({"scrubbed": fp} if self.scrub else {})}
        # a bit error rate: drawn over the protected model's memory (parity rows included; with a
        # scrubbed model, over its memory: the weight codes' checks too), the protected model gets
        # the faults on its tensors, the original those on its data
        ber = cfg.ber
        if self.scrub is not None:
            names = self._names("scrubbed", cfg.tensors) + self.check_names
            spec = F.WeightFaultSpec(kind=kind, ber=ber, bits=cfg.bits, tensors=names)
            fs = F.draw_weight_faults(self.models["scrubbed"], spec, seed)
            own = set(self._names("protected", cfg.tensors))
            fp = [f for f in fs if f.target in own]
            return {"original": F.to_original(fp, self.models["protected"]), "protected": fp, "scrubbed": fs}
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
        for model in self.model_names:
            r = self.runner(model, cfg)
            clean = self.clean(model, cfg)
            before = F.injected_counts() if r.sites else {}
            if model == "scrubbed":
                out[model] = self._scrubbed_trial(r, clean, wf[model], seed, rate)
                continue
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

    def _scrubbed_trial(self, r: Runner, clean: np.ndarray, faults: list[F.Fault], seed: int, rate: float) -> dict:
        """The scrubbed model's trial: its memory faulted (checks included), scrubbed with both codes,
        then run; everything restored afterwards (the scrub writes more than the faulted values)."""
        import time

        on_checks = [f for f in faults if f.target in self.check_names]
        by_check = {e["parity_tensor"]: e["tensor"] for e in self.scrub.entries if "parity_tensor" in e}
        checks = {name: self.scrub.parities[by_check[name]].reshape(
            [int(d) for d in next(t.dims for t in self.models["scrubbed"].graph.initializer if t.name == name)])
                  for name in {f.target for f in on_checks}}
        arrays = {n: r.arrays[n] for n in self.scrub.tensors()}
        saved = {n: a.copy() for n, a in arrays.items()}
        stats = {"scrub_status": "clean", "scrub_beyond_repair": 0, "scrub_seconds": 0.0}
        try:
            F.apply_in_place(r.arrays, [f for f in faults if f.target not in self.check_names])
            F.apply_in_place(checks, on_checks)
            if faults:
                start = time.perf_counter()
                try:
                    report = self.scrub.run(arrays, **SCRUB_SOLVER)
                    stats = {"scrub_status": report.status, "scrub_beyond_repair": len(report.beyond_repair),
                             "scrub_seconds": time.perf_counter() - start}
                except Exception as e:  # noqa: BLE001 - a failing scrub is an outcome (the weights stay as faulted)
                    stats = {"scrub_status": f"error: {type(e).__name__}: {e}", "scrub_beyond_repair": -1,
                             "scrub_seconds": time.perf_counter() - start}
            try:
                _, logits, rep = self._predict(r, (), seed & ((1 << 63) - 1), rate)
                result = _outcome(logits, clean, self.y, rep, faults=len(faults))
            except Exception as e:  # noqa: BLE001 - a failing run is a campaign outcome, not a crash
                result = _outcome(None, clean, self.y, None, error=f"{type(e).__name__}: {e}", faults=len(faults))
                result.update(flagged=0, corrected=0, uncorrectable=0)
        finally:
            for n, a in saved.items():
                np.copyto(r.arrays[n], a)
            for tensor, p in self._clean_checks.items():
                np.copyto(self.scrub.parities[tensor], p)
            self.scrub.erasures = dict(self._erasures)
        return {**result, **stats}
