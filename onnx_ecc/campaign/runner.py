"""Sessions whose weights can be faulted in place and restored between trials (the mechanism)."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from onnx_ecc import faults as F
from onnx_ecc.transform.record import read_record

# ---- mechanism: sessions with patchable weights ----------------------------------------------

class Runner:
    """One model's session whose listed weights can be faulted in place, optionally instrumented."""

    def __init__(self, model: onnx.ModelProto, weights: Iterable[str] = (), threads: int = 1,
                 instrument: dict | None = None):
        from onnx_ecc.runtime import ProtectedSession, session_options

        self.sites: list[F.Site] = []
        if instrument is not None:
            model, self.sites = F.instrument(model, **instrument)
        self.protected = read_record(model) is not None
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
