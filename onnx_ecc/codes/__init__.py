"""The real-number channel code over a layer's output channels: generators and layouts
(``channel``) and the numpy block decoder (``decoder``), the oracle of the C++ and CUDA kernels."""

from onnx_ecc.codes.channel import EPS32, ROUNDING_FLOOR, Layout, generator
from onnx_ecc.codes.decoder import BlockNoise, BlockResult, decode_block

__all__ = ["EPS32", "ROUNDING_FLOOR", "BlockNoise", "BlockResult", "Layout", "decode_block", "generator"]
