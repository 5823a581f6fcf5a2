"""Where the compiled custom-op library lives."""

from __future__ import annotations

import os
from pathlib import Path

LIBRARY_NAME = "libonnx_ecc_ops.so"


def library_path() -> str:
    """Path of the onnxruntime custom-op library (``ONNX_ECC_LIBRARY`` overrides it)."""
    override = os.environ.get("ONNX_ECC_LIBRARY")
    if override:
        if not Path(override).is_file():
            raise FileNotFoundError(f"ONNX_ECC_LIBRARY={override} does not exist")
        return override
    path = Path(__file__).resolve().parents[1] / "_lib" / LIBRARY_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"onnx-ecc's custom-op library is missing ({path}); reinstall with `pip install .` "
            "so that the C++ library is built")
    return str(path)
