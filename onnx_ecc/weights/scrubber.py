"""Live weight scrubbing: keep a running onnxruntime session's protected weights verified and repaired.

Zero-restart path. ``WeightScrubber`` keeps every tensor a code covers (weights with a weight code,
see ``add_weight_checks`` or a trained-in code, and the weights, biases and parity rows of the layers
``transform`` protected with its layer code) in its own C-contiguous numpy buffer. The
application builds its session with ``scrubber.session_options()``: each buffer is handed to
onnxruntime as an ``OrtValue`` through ``SessionOptions.add_initializer``, which on CPU shares the
numpy memory instead of copying it, and weight pre-packing is switched off
(``session.disable_prepacking=1``) because pre-packing would compute from a private copy. The
session therefore computes from exactly the buffers the scrubber checks, and a repair written in
place into a buffer is seen by the very next ``run`` -- no session rebuild, no restart.

``check_now()`` checks every protected tensor with both codes as ``onnx-ecc scrub`` does (``repair``;
syndromes only when clean: O(n log n) for the dct family, one product per layer) and writes
repaired values back in place; ``start(interval)`` does the same from a
daemon thread every ``interval`` seconds until ``stop()``. ``on_event(report)`` is called
after every check that found something; for sessions built without the shared buffers,
``current_model()`` returns a ModelProto with the repaired weights so the application can rebuild
its session from it instead. A repair writes a few float32 values while inference may be
running; each value is either the corrupted or the restored one, so a concurrent run sees at
worst the fault it would have seen anyway.
"""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from onnx_ecc.ops import DOMAIN

from .model import ScrubReport
from .repair import Scrub


class WeightScrubber:
    """Holds a protected model's weights as shared numpy buffers and checks/repairs them."""

    def __init__(self, model: onnx.ModelProto, on_event: Callable[[ScrubReport], None] | None = None):
        self._model = model
        self._scrub = Scrub(model)
        if self._scrub.empty:
            raise ValueError("model has neither onnx_ecc.weight_codes metadata nor layers protected by a layer code")
        inits = {t.name: t for t in model.graph.initializer}
        self.buffers: dict[str, np.ndarray] = {
            name: np.ascontiguousarray(numpy_helper.to_array(inits[name])).copy() for name in self._scrub.tensors()}
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
        if any(n.domain == DOMAIN for n in self._model.graph.node):  # a protected model: its ops' library
            from onnx_ecc.runtime import session_options

            options = session_options(options)
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
        with self._lock:
            result = self._scrub.run(self.buffers)
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
