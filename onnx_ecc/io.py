"""Loading and saving models without ever losing anything: clear errors, atomic writes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

TWO_GB = 2**31


class ModelFileError(ValueError):
    """A model file that cannot be read or written (the message says why, in one line)."""


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load an ONNX model (with its external data), or raise ModelFileError saying why not."""
    p = Path(path)
    if not p.exists():
        raise ModelFileError(f"{p}: no such file")
    if p.is_dir():
        raise ModelFileError(f"{p}: is a directory, not an ONNX file")
    if p.stat().st_size == 0:
        raise ModelFileError(f"{p}: empty file, not an ONNX model")
    try:
        model = onnx.load(str(p), load_external_data=True)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelFileError(f"{p}: not a valid ONNX model (truncated or another format): {str(e).splitlines()[0][:120]}") from None
    except FileNotFoundError as e:
        raise ModelFileError(f"{p}: external data file missing: {e.filename}") from None
    if not model.graph.node:
        raise ModelFileError(f"{p}: not a valid ONNX model (no graph nodes)")
    return model


def check_output_path(out: str | os.PathLike, inputs: list[str | os.PathLike] = ()) -> Path:
    """Refuse an output path that is one of the inputs or lies in a missing directory."""
    out = Path(out)
    for src in inputs:
        same = Path(src).exists() and out.exists() and os.path.samefile(src, out)
        if same or Path(src).resolve() == out.resolve():
            raise ModelFileError(f"{out}: refusing to overwrite the input model; choose another output path")
    if not out.parent.exists():
        raise ModelFileError(f"{out.parent}: output directory does not exist")
    return out


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_model(model: onnx.ModelProto, out: str | os.PathLike, inputs: list[str | os.PathLike] = ()) -> Path:
    """Write ``model`` to ``out`` atomically; refuse to overwrite any of ``inputs``.

    Models over 2 GB are written with their tensors in one external data file beside ``out``.
    A failure leaves no partial file behind.
    """
    out = check_output_path(out, inputs)
    large = is_large(model)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    data_name = f"{out.name}.data"
    tmp_data = out.parent / f".{data_name}.tmp"
    try:
        if large:
            copy = onnx.ModelProto()      # saving with external data rewrites the proto in place
            copy.CopyFrom(model)
            onnx.save_model(copy, tmp, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=tmp_data.name, size_threshold=1024)
            _rename_external_location(tmp, tmp_data.name, data_name)
            os.replace(tmp_data, out.parent / data_name)
        else:
            onnx.save_model(model, tmp)
        os.replace(tmp, out)
    except BaseException:
        for f in (tmp, tmp_data):
            try:
                os.unlink(f)
            except FileNotFoundError:
                pass
        raise
    return out


def is_large(model: onnx.ModelProto) -> bool:
    """True when the model cannot be serialised into one protobuf buffer (2 GB)."""
    return not _can_measure(model) or model.ByteSize() >= TWO_GB


def _can_measure(model: onnx.ModelProto) -> bool:
    try:
        model.ByteSize()
        return True
    except Exception:  # protobuf refuses to size messages over 2 GB
        return False


def _rename_external_location(model_path: str, old: str, new: str) -> None:
    """Point the external-data entries of a saved model from ``old`` to ``new``."""
    m = onnx.load(model_path, load_external_data=False)
    for t in m.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location" and entry.value == old:
                entry.value = new
    onnx.save_model(m, model_path)
