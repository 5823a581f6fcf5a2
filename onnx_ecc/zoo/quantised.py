"""int8 copies of float models as onnxruntime.quantization makes them: quantize_static in QDQ or
operator format (QLinearConv, QLinearMatMul, QGemm; int8 weights, activations calibrated on real
data) and quantize_dynamic (MatMulInteger / ConvInteger fed by DynamicQuantizeLinear): the models
int8 protection is tested and measured on."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

# (activations, per-channel weights) of the variants quantize_static offers for QDQ
VARIANTS = {"u8s8": ("uint8", False), "u8s8_pc": ("uint8", True), "s8s8": ("int8", False), "s8s8_pc": ("int8", True)}


def quantize_qdq(model: onnx.ModelProto, calibration: np.ndarray, variant: str = "u8s8",
                 batch: int = 32) -> onnx.ModelProto:
    """``model`` quantised by quantize_static in QDQ format with int8 weights, calibrated on
    ``calibration`` (inputs of the model's first input, MinMax)."""
    return _quantize_static(model, calibration, variant, batch, "qdq")


def quantize_operator(model: onnx.ModelProto, calibration: np.ndarray, variant: str = "u8s8",
                      batch: int = 32) -> onnx.ModelProto:
    """The same in operator format (QuantFormat.QOperator: QLinearConv, QLinearMatMul, com.microsoft:QGemm)."""
    return _quantize_static(model, calibration, variant, batch, "qoperator")


def quantize_dynamic_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` quantised by quantize_dynamic with int8 weights (MatMulInteger, and ConvInteger for convs)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        src, pre, out = (str(Path(tmp) / f) for f in ("float.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(model, src)
        quant_pre_process(src, pre)
        quantize_dynamic(pre, out, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv", "MatMul", "Gemm"])
        return onnx.load(out)


def _quantize_static(model: onnx.ModelProto, calibration: np.ndarray, variant: str, batch: int,
                     fmt: str) -> onnx.ModelProto:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    activations, per_channel = VARIANTS[variant]
    name = model.graph.input[0].name
    x = np.asarray(calibration, np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{name: x[i:i + batch]} for i in range(0, len(x), batch)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, pre, out = (str(Path(tmp) / f) for f in ("float.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(model, src)
        quant_pre_process(src, pre)
        quantize_static(pre, out, Reader(), quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
                        per_channel=per_channel,
                        activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
        return onnx.load(out)
