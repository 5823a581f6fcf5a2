"""onnx-ecc: real-number error correction for ONNX models."""

from onnx_ecc import ops  # registers the ONNX schemas of our ops
from onnx_ecc.runtime.library import library_path
from onnx_ecc.runtime import ProtectedSession, read_counters, reset_counters, session_options
from onnx_ecc.transform import TransformError, TransformOptions, transform

__version__ = "0.1.0"

__all__ = ["transform", "TransformOptions", "TransformError", "library_path", "session_options",
           "ProtectedSession", "read_counters", "reset_counters", "ops", "__version__"]
