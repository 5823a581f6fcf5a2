"""Running zoo models: sessions, batched prediction and top-1 accuracy on a dataset."""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import onnx

from onnx_ecc import datasets as _datasets
from onnx_ecc.zoo.export import ModelLike

def session(model: ModelLike, providers: Sequence[str] | None = None):
    """An onnxruntime InferenceSession for a ModelProto/path/bytes (CPU unless providers given)."""
    import onnxruntime as ort

    if isinstance(model, onnx.ModelProto):
        source = model.SerializeToString()
    elif isinstance(model, (bytes, bytearray)):
        source = bytes(model)
    else:
        source = str(model)
    return ort.InferenceSession(source, providers=list(providers or ["CPUExecutionProvider"]))


def _fit_input(x: np.ndarray, sess) -> np.ndarray:
    """Check images against the model's static input dims, reshaping when only the layout differs (flat MLPs)."""
    fixed = list(sess.get_inputs()[0].shape[1:])
    if not all(isinstance(d, int) for d in fixed) or list(x.shape[1:]) == fixed:
        return x
    if int(np.prod(fixed)) != int(np.prod(x.shape[1:])):
        raise ValueError(f"data of shape {tuple(x.shape[1:])} does not fit model input {tuple(fixed)}")
    return x.reshape(len(x), *fixed)


def predict(model: ModelLike, x: np.ndarray, providers: Sequence[str] | None = None, batch: int = 256) -> np.ndarray:
    """Run a model over x in batches and return the stacked first output."""
    sess = model if hasattr(model, "run") else session(model, providers)
    name = sess.get_inputs()[0].name
    x = _fit_input(np.ascontiguousarray(x, dtype=np.float32), sess)
    outs = [sess.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(outs, axis=0)


def accuracy(
    model: ModelLike,
    dataset: Union[_datasets.Dataset, str],
    providers: Sequence[str] | None = None,
    batch: int = 256,
) -> float:
    """Top-1 accuracy of a classifier on a dataset's test split, run with onnxruntime."""
    data = _datasets.load(dataset) if isinstance(dataset, str) else dataset
    logits = predict(model, data.x_test, providers, batch)
    if logits.ndim != 2 or logits.shape[0] != len(data.y_test):
        raise ValueError(f"model output {logits.shape} is not [N, classes] for {len(data.y_test)} images")
    return float(np.mean(np.argmax(logits, axis=1) == data.y_test))
