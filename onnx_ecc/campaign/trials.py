"""One worker's side of a campaign: both models' runners, clean predictions, and one trial's counts."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx

from onnx_ecc import faults as F
from onnx_ecc.campaign.config import Config
from onnx_ecc.campaign.runner import Runner, _outcome

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
