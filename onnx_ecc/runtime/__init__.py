"""Running protected models: sessions with the library registered, and per-layer error counts."""

from onnx_ecc.runtime.counters import LayerCounts, read_counters, reset_counters
from onnx_ecc.runtime.library import library_path
from onnx_ecc.runtime.session import (ProtectedSession, RunReport, all_graphs, all_nodes, inference_session,
                                      session_options, set_fail_stop)

__all__ = ["LayerCounts", "ProtectedSession", "RunReport", "all_graphs", "all_nodes", "inference_session",
           "library_path", "read_counters", "reset_counters", "session_options", "set_fail_stop"]
