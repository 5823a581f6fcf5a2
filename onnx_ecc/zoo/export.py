"""Export of torch modules to the zoo's ONNX form (opset 17, dynamic batch, shapes inferred)."""

from __future__ import annotations

import io
import os
import warnings
from typing import Sequence, Union

import onnx

from onnx_ecc.zoo.torch_modules import _torch

OPSET = 17
ModelLike = Union[onnx.ModelProto, str, os.PathLike, bytes]


def export(
    module,
    input_shape: Sequence[int],
    output_name: str = "logits",
    doc: str = "",
) -> onnx.ModelProto:
    """Export an eval-mode torch module to opset-17 ONNX with a dynamic batch dimension."""
    torch = _torch()
    module = module.eval()
    example = torch.zeros((2, *input_shape), dtype=torch.float32)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            buf,
            dynamo=False,
            export_params=True,
            opset_version=OPSET,
            do_constant_folding=True,
            training=torch.onnx.TrainingMode.EVAL,
            input_names=["input"],
            output_names=[output_name],
            dynamic_axes={"input": {0: "batch"}, output_name: {0: "batch"}},
        )
    model = onnx.load_from_string(buf.getvalue())
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    model.producer_name = "onnx_ecc.zoo"
    if doc:
        model.doc_string = doc
    onnx.checker.check_model(model, full_check=True)
    return model


def input_shape(model: ModelLike) -> tuple:
    """Input shape of a model's first graph input, batch as its symbolic name (or None)."""
    model = _as_model(model)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims)


def _as_model(model: ModelLike) -> onnx.ModelProto:
    """Accept a ModelProto, serialized bytes or a path and return a ModelProto."""
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model))
    return onnx.load(str(model))
