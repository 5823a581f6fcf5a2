"""Live weight scrubbing: keep a running onnxruntime session's protected weights verified and repaired.

Zero-restart path. ``WeightScrubber`` keeps every protected weight of a model (see
``add_weight_checks`` or a trained-in code) in its own C-contiguous float32 numpy buffer. The
application builds its session with ``scrubber.session_options()``: each buffer is handed to
onnxruntime as an ``OrtValue`` through ``SessionOptions.add_initializer``, which on CPU shares the
numpy memory instead of copying it, and weight pre-packing is switched off
(``session.disable_prepacking=1``) because pre-packing would compute from a private copy. The
session therefore computes from exactly the buffers the scrubber checks, and a repair written in
place into a buffer is seen by the very next ``run`` -- no session rebuild, no restart.

``check_now()`` checks every protected tensor (syndrome only when clean: O(n log n) for the dct
family) and writes repaired blocks back in place; ``start(interval)`` does the same from a
daemon thread every ``interval`` seconds until ``stop()``. ``on_event(report)`` is called
after every check that found something; for sessions built without the shared buffers,
``current_model()`` returns a ModelProto with the repaired weights so the application can rebuild
its session from it instead. A repair writes a few float32 values while inference may be
running; each value is either the corrupted or the restored one, so a concurrent run sees at
worst the fault it would have seen anyway.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from .model import PARITY_SUFFIX, ScrubReport, check_tensor, overall_status, read_weight_codes


class WeightScrubber:
    """Holds a protected model's weights as shared numpy buffers and checks/repairs them."""

    def __init__(self, model: onnx.ModelProto, on_event: Callable[[ScrubReport], None] | None = None):
        self._model = model
        self._entries = read_weight_codes(model)
        if not self._entries:
            raise ValueError("model has no onnx_ecc.weight_codes metadata")
        inits = {t.name: t for t in model.graph.initializer}
        self.buffers: dict[str, np.ndarray] = {}
        self._parity: dict[str, np.ndarray | None] = {}
        for entry in self._entries:
            name = entry["tensor"]
            if name not in inits:
                raise ValueError(f"protected tensor {name!r} is missing from the model")
            self.buffers[name] = np.ascontiguousarray(numpy_helper.to_array(inits[name])).copy()
            parity = None
            if entry["mode"] == "parity":
                pname = entry.get("parity_tensor", name + PARITY_SUFFIX)
                if pname not in inits:
                    raise ValueError(f"parity initializer {pname!r} is missing")
                parity = numpy_helper.to_array(inits[pname]).reshape(-1).copy()
            self._parity[name] = parity
        self._ortvalues: dict = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_event = on_event
        self.last_report: ScrubReport | None = None
        self.history: list[ScrubReport] = []

    # -- onnxruntime wiring ------------------------------------------------------------------
    def session_options(self, options=None):
        """SessionOptions whose protected initializers are the scrubber's buffers (shared memory)."""
        import onnxruntime as ort

        options = ort.SessionOptions() if options is None else options
        options.add_session_config_entry("session.disable_prepacking", "1")
        for name, buf in self.buffers.items():
            value = ort.OrtValue.ortvalue_from_numpy(buf)
            self._ortvalues[name] = value  # must outlive the session
            options.add_initializer(name, value)
        return options

    def make_session(self, providers=("CPUExecutionProvider",), options=None):
        """An InferenceSession on the model that computes from the scrubbed buffers."""
        import onnxruntime as ort

        return ort.InferenceSession(self._model.SerializeToString(), self.session_options(options),
                                    providers=list(providers))

    def current_model(self) -> onnx.ModelProto:
        """A copy of the model holding the buffers' current weights (for a session rebuild)."""
        out = onnx.ModelProto()
        out.CopyFrom(self._model)
        with self._lock:
            for t in out.graph.initializer:
                if t.name in self.buffers:
                    t.CopyFrom(numpy_helper.from_array(self.buffers[t.name], t.name))
        return out

    # -- checking ----------------------------------------------------------------------------
    def check_now(self) -> ScrubReport:
        """Check every protected buffer now and repair blocks in place; returns the report."""
        start = time.perf_counter()
        reports = []
        with self._lock:
            for entry in self._entries:
                name = entry["tensor"]
                flat = self.buffers[name].reshape(-1)
                report, fixed = check_tensor(flat.copy(), entry, self._parity[name])
                if fixed is not None:
                    changed = np.flatnonzero(fixed.view(np.uint32) != flat.view(np.uint32))
                    flat[changed] = fixed[changed]  # in place: the session sees it
                reports.append(report)
        result = ScrubReport(overall_status(reports), reports, time.perf_counter() - start)
        self.last_report = result
        if result.status != "clean":
            self.history.append(result)
            if self.on_event is not None:
                self.on_event(result)
        return result

    def start(self, interval: float) -> None:
        """Check every `interval` seconds in a daemon thread until stop()."""
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("scrubber already running")
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(interval):
                self.check_now()

        self._thread = threading.Thread(target=loop, name="onnx-ecc-scrubber", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the background thread (if running) and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> "WeightScrubber":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
