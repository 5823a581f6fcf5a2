"""The custom-op library's per-layer counters (process-wide): read, reset, and per-layer counts."""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import json


from onnx_ecc.runtime.library import library_path


@functools.lru_cache(maxsize=None)
def _lib() -> ctypes.CDLL:
    """The library, held loaded for the life of the process: onnxruntime unloads a custom-op
    library with the last session that registered it, which would drop its counters."""
    lib = ctypes.CDLL(library_path())
    lib.OnnxEcc_CountersJson.restype = ctypes.c_size_t
    lib.OnnxEcc_CountersJson.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    lib.OnnxEcc_ResetCounters.restype = None
    return lib


@dataclasses.dataclass(frozen=True)
class LayerCounts:
    """Error counts of one protected layer (code blocks x output vectors).

    ``dead_units`` and ``erasures`` are a state, not counts: the layer's known erasures now
    (Decode: channels of its decoded output, learned at run time or given, see
    transform.record), which a difference of two readings keeps from the later one."""

    layer: str
    op: str
    runs: int = 0
    vectors: int = 0
    flagged: int = 0
    corrected_blocks: int = 0
    corrected_values: int = 0
    uncorrectable: int = 0
    dead_units: int = 0
    erasures: tuple[int, ...] = ()

    def __sub__(self, other: "LayerCounts") -> "LayerCounts":
        fields = ("runs", "vectors", "flagged", "corrected_blocks", "corrected_values", "uncorrectable")
        return dataclasses.replace(self, **{f: getattr(self, f) - getattr(other, f) for f in fields})


# Ops of the rerun strategy's fast path, which only check (a failure makes the run decode), and
# the suffix their counters get next to the same layer's decoder.
FAST_PATH_CHECKS = {"SumCheck": " (sum check)", "ParityCheck": " (parity check)", "SampleCheck": " (sample check)",
                    "ProductCheck": " (parity check)", "LinearCheck": " (parity check)",
                    "IntSampleCheck": " (sample check)"}


def read_counters(model_id: str | None = None) -> dict[str, LayerCounts]:
    """Cumulative counts per layer since load or reset, for one model id (or all)."""
    lib = _lib()
    size = lib.OnnxEcc_CountersJson(None, 0)
    buf = ctypes.create_string_buffer(size + 256)
    lib.OnnxEcc_CountersJson(buf, len(buf))
    out = {}
    for row in json.loads(buf.value.decode()):
        if model_id is not None and row["model_id"] != model_id:
            continue
        key = row["layer"] if model_id is not None else f'{row["model_id"]}/{row["layer"]}'
        if row["op"] in FAST_PATH_CHECKS:  # the rerun strategy's fast-path check of a layer that also decodes
            key += FAST_PATH_CHECKS[row["op"]]
        row["erasures"] = tuple(row.get("erasures", ()))
        out[key] = LayerCounts(**{k: v for k, v in row.items() if k != "model_id"})
    return out


def reset_counters() -> None:
    """Set every counter of the library back to zero."""
    _lib().OnnxEcc_ResetCounters()
