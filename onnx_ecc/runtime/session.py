"""Sessions for protected models: options that register the library, ProtectedSession and its per-run report."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

import onnx
import onnxruntime as ort

from onnx_ecc import ops
from onnx_ecc.runtime.counters import FAST_PATH_CHECKS, LayerCounts, _lib, read_counters
from onnx_ecc.runtime.library import library_path
from onnx_ecc.transform.record import read_erasures, read_record, write_erasures


def inference_session(model: onnx.ModelProto, options: ort.SessionOptions | None = None,
                      providers: Iterable[str] | None = None) -> ort.InferenceSession:
    """An InferenceSession of an in-memory model; models over 2 GB go through a temporary
    file with external data, since protobuf cannot serialise them into one buffer."""
    from onnx_ecc.io import is_large

    providers = list(providers or ["CPUExecutionProvider"])
    if not is_large(model):
        return ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=providers)
    import tempfile
    from pathlib import Path

    from onnx_ecc.io import save_model

    with tempfile.TemporaryDirectory(prefix="onnx_ecc_") as tmp:
        path = save_model(model, Path(tmp) / "model.onnx")
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def session_options(options: ort.SessionOptions | None = None) -> ort.SessionOptions:
    """SessionOptions with onnx-ecc's custom-op library registered and onnxruntime's
    priority-based execution order (unless another was chosen): with it, the rerun strategy's
    checks read each layer's output right after the layer instead of after the whole network
    (see transform.common.order_checks); unprotected models run as fast with it."""
    options = options or ort.SessionOptions()
    _lib()  # keep the library (and its counters) loaded after this session ends
    options.register_custom_ops_library(library_path())
    if options.execution_order == ort.ExecutionOrder.DEFAULT:
        options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    return options


@dataclasses.dataclass
class RunReport:
    """What the protected layers saw during one run."""

    layers: dict[str, LayerCounts]

    @property
    def flagged(self) -> int:
        return sum(c.flagged for c in self.layers.values())

    @property
    def corrected(self) -> int:
        return sum(c.corrected_blocks for c in self.layers.values())

    @property
    def uncorrectable(self) -> int:
        return sum(c.uncorrectable for c in self.layers.values())

    @property
    def clean(self) -> bool:
        return self.flagged == 0

    @property
    def dead_units(self) -> dict[str, int]:
        """Per protected layer with any, its known erasures after this run (dead units: channels of
        its decoded output, learned at run time or known at load, see ProtectedSession)."""
        return {name: c.dead_units for name, c in self.layers.items() if c.op == ops.DECODE.name and c.dead_units}

    @property
    def checks_failed(self) -> int:
        """Samples (sum checks) and blocks (parity checks) that failed a fast-path check of the rerun
        strategy (each one makes the run decode)."""
        return sum(c.flagged for c in self.layers.values() if c.op in FAST_PATH_CHECKS)

    def summary(self) -> str:
        text = (f"{self.flagged - self.checks_failed} block(s) flagged, {self.corrected} corrected, "
                f"{self.uncorrectable} uncorrectable")
        if self.dead_units:
            text += f"; {sum(self.dead_units.values())} dead unit(s) known in {len(self.dead_units)} layer(s)"
        return text + (f"; {self.checks_failed} failed fast-path check(s) made the run decode" if self.checks_failed else "")


class ProtectedSession:
    """An onnxruntime InferenceSession of a protected model, reporting errors per run.

    ``fail_stop=True`` turns on every decoder's fail-stop attribute, so a run with an
    uncorrectable block raises instead of returning outputs. Counters are process-wide per
    (model id, layer); runs of one model from several threads at once share them.

    Known erasures (dead units): each Decode node starts with those of the model's
    ``onnx_ecc.erasures`` metadata, the units its weights show dead (all zero with a zero bias,
    or non-finite; ``find_dead``) and ``erasures`` (per layer, channels of its decoded output),
    passed as its ``erasures`` attribute; it then learns more at run time (``erasures`` of the
    session: the current lists). ``save_erasures`` stores them in a model's metadata for the next
    session. Malformed metadata or a channel out of range raises ValueError.
    """

    def __init__(self, model: onnx.ModelProto | str, providers: Iterable[str] | None = None,
                 fail_stop: bool | None = None, options: ort.SessionOptions | None = None,
                 erasures: dict[str, list[int]] | None = None, find_dead: bool = True):
        from onnx_ecc.runtime.erasures import dead_channels, with_erasures

        if isinstance(model, (str, bytes)) and not isinstance(model, onnx.ModelProto):
            model = onnx.load(model)
        self.protection = read_record(model)
        self.model_id = self.protection.model_id if self.protection else ""
        self.model = model
        known: dict[str, set[int]] = {}
        for source in (read_erasures(model), dead_channels(model) if find_dead else {}, erasures or {}):
            for layer, channels in source.items():
                known.setdefault(layer, set()).update(int(c) for c in channels)
        self.initial_erasures = {layer: sorted(c) for layer, c in sorted(known.items()) if c}
        if self.initial_erasures:
            model = with_erasures(model, self.initial_erasures)
        if fail_stop is not None:
            model = set_fail_stop(model, fail_stop)
        self.session = inference_session(model, session_options(options), providers)
        self.last_report: RunReport | None = None

    @property
    def erasures(self) -> dict[str, list[int]]:
        """The known erasures of each decoded layer now (channels of its decoded output)."""
        return {name: list(c.erasures) for name, c in read_counters(self.model_id).items()
                if c.op == ops.DECODE.name and c.erasures}

    def save_erasures(self, target):
        """Store the current known erasures in a model's ``onnx_ecc.erasures`` metadata and its
        Decode nodes' ``erasures`` attribute, so that a new session (a plain InferenceSession too)
        decodes with them from its first run. ``target``: a ModelProto (changed in place and
        returned) or a path, where this session's model is written with them (atomically)."""
        from onnx_ecc.io import save_model
        from onnx_ecc.runtime.erasures import with_erasures

        erasures = self.erasures
        model = target if isinstance(target, onnx.ModelProto) else self.model
        updated = with_erasures(model, erasures)
        write_erasures(updated, erasures)
        if isinstance(target, onnx.ModelProto):
            target.CopyFrom(updated)
            return target
        return save_model(updated, target)

    def run(self, output_names, feeds: dict[str, Any], run_options=None):
        before = read_counters(self.model_id)
        try:
            return self.session.run(output_names, feeds, run_options)
        finally:
            after = read_counters(self.model_id)
            self.last_report = RunReport({k: v - before.get(k, LayerCounts(v.layer, v.op)) for k, v in after.items()})

    def get_inputs(self):
        return self.session.get_inputs()

    def get_outputs(self):
        return self.session.get_outputs()


def set_fail_stop(model: onnx.ModelProto, enabled: bool) -> onnx.ModelProto:
    """A copy of the model whose decoders all have fail_stop set to ``enabled``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for node in all_nodes(out.graph):
        if node.domain == ops.DOMAIN and node.op_type in (ops.DECODE.name, ops.DEPTHWISE_CHECK.name):
            for a in node.attribute:
                if a.name == "fail_stop":
                    node.attribute.remove(a)
                    break
            node.attribute.append(onnx.helper.make_attribute("fail_stop", int(enabled)))
    return out


def all_graphs(graph: onnx.GraphProto):
    """A graph and, recursively, its subgraphs (the rerun strategy's decoding branch)."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from all_graphs(attr.g)
            for g in attr.graphs:
                yield from all_graphs(g)


def all_nodes(graph: onnx.GraphProto):
    """Every node of a graph and of its subgraphs."""
    for g in all_graphs(graph):
        yield from g.node
