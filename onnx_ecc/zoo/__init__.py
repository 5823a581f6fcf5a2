"""Model zoo: small ONNX models for demos, tests and fault-injection campaigns.

Every builder returns a fresh ``onnx.ModelProto`` (opset 17, float32, dynamic batch
dimension named ``"batch"``, input ``"input"``, output ``"logits"`` or ``"hidden"``),
exported from a torch module with the TorchScript exporter (``dynamo=False``) in eval
mode with constant folding, so Conv/Gemm/MatMul weights are initializers and
BatchNorm is folded into the preceding Conv. Shape inference is run on the result.

Models
------
* ``mnist_cnn()``              pretrained MNIST CNN from PyPI ``digit-recognizer-py``;
  takes [N,1,28,28] in [0,1]: its normalisation (x-0.1307)/0.3081 is baked in as the
  first two ops (Sub, Div).
* ``fashion_mlp(seed)``        784-256-10 MLP trained on Fashion-MNIST, cached on disk.
* ``mlp``, ``cnn``, ``resnet_style``, ``depthwise_separable_cnn``, ``grouped_cnn``,
  ``transformer_encoder``      seeded random-weight test models (no training).
* ``bundled_default()``        path of the committed pretrained Fashion-MNIST CNN.

``torch_model(name, seed)`` returns the eval-mode torch module each ONNX model was
exported from, so tests can compare onnxruntime against torch as an oracle.
torch is imported lazily: only the builders need it, not ``accuracy`` or
``bundled_default``.
"""

from __future__ import annotations

import functools
from typing import Callable

import onnx

from onnx_ecc.zoo.evaluation import accuracy, predict, session
from onnx_ecc.zoo.export import OPSET, ModelLike, export, input_shape
from onnx_ecc.zoo.models import (_make_cnn, _make_depthwise_separable_cnn, _make_grouped_cnn, _make_mlp,
                                 _make_resnet_style, _make_transformer_encoder)
from onnx_ecc.zoo.pretrained import (BUNDLED_PATH, MNIST_MEAN, MNIST_STD, _make_mnist_cnn, bundled_default, cache_dir,
                                     fashion_mlp, mnist_cnn_preprocess, mnist_cnn_weights_path)
from onnx_ecc.zoo.torch_modules import ModelUnavailable
from onnx_ecc.zoo.training import train_classifier

__all__ = [
    "OPSET",
    "BUNDLED_PATH",
    "ModelLike",
    "MNIST_MEAN",
    "MNIST_STD",
    "ModelUnavailable",
    "accuracy",
    "build",
    "bundled_default",
    "cache_dir",
    "cnn",
    "depthwise_separable_cnn",
    "export",
    "fashion_mlp",
    "grouped_cnn",
    "input_shape",
    "mlp",
    "mnist_cnn",
    "mnist_cnn_preprocess",
    "mnist_cnn_weights_path",
    "predict",
    "resnet_style",
    "session",
    "torch_model",
    "train_classifier",
    "transformer_encoder",
    "mobilenet_v2",
    "efficientnet_lite",
    "resnet18",
    "bert_encoder",
    "bert_encoder_128",
    "MODELS",
]


# --------------------------------------------------------------------------- public builders

_MAKERS: dict[str, Callable] = {
    "mlp": _make_mlp,
    "cnn": _make_cnn,
    "resnet_style": _make_resnet_style,
    "resnet_style_wide": lambda seed: _make_resnet_style(seed, widths=(128, 256, 512)),
    "depthwise_separable_cnn": _make_depthwise_separable_cnn,
    "grouped_cnn": _make_grouped_cnn,
    "transformer_encoder": _make_transformer_encoder,
    "mnist_cnn": _make_mnist_cnn,
}


def _register_realistic() -> None:
    """Add the real-size architectures of zoo_realistic to the builders (names in MODELS too)."""
    from onnx_ecc.zoo import realistic as zoo_realistic

    for name, maker in zoo_realistic.MAKERS.items():
        _MAKERS[name] = maker


def torch_model(name: str, seed: int = 0):
    """The eval-mode torch module that zoo model `name` is exported from (a test oracle)."""
    if name == "fashion_mlp":
        raise ValueError("fashion_mlp is trained; compare against its cached ONNX instead")
    if name not in _MAKERS:
        raise ValueError(f"unknown zoo model {name!r}; choose one of {', '.join(_MAKERS)}")
    return _MAKERS[name](seed)[0]


@functools.lru_cache(maxsize=32)
def _exported_bytes(name: str, seed: int) -> bytes:
    """Serialized export of a zoo model, memoised so repeated builds are cheap."""
    return export(*_MAKERS[name](seed)).SerializeToString()


def _built(name: str, seed: int) -> onnx.ModelProto:
    """A fresh (caller-owned, mutable) ModelProto of a zoo model."""
    return onnx.load_from_string(_exported_bytes(name, seed))


def mlp(seed: int = 0) -> onnx.ModelProto:
    """Random seeded MLP 784-128-64-10: Flatten, Gemm x3, Relu x2; input [N,1,28,28]."""
    return _built("mlp", seed)


def cnn(seed: int = 0) -> onnx.ModelProto:
    """Random seeded small CNN: Conv, Relu, MaxPool x2, Flatten, Gemm x2; input [N,1,28,28]."""
    return _built("cnn", seed)


def resnet_style(seed: int = 0) -> onnx.ModelProto:
    """Random seeded CIFAR-like ResNet (64-128-256, BN folded, residual Add); input [N,3,32,32]."""
    return _built("resnet_style", seed)


def depthwise_separable_cnn(seed: int = 0) -> onnx.ModelProto:
    """Random seeded MobileNet-like CNN (depthwise 3x3 + pointwise 1x1); input [N,3,32,32]."""
    return _built("depthwise_separable_cnn", seed)


def grouped_cnn(seed: int = 0) -> onnx.ModelProto:
    """Random seeded CNN with a groups=4 Conv (not depthwise); input [N,3,32,32]."""
    return _built("grouped_cnn", seed)


def resnet_style_wide(seed: int = 0) -> onnx.ModelProto:
    """The same ResNet with stages 128-256-512: real-size layers, for the overhead benchmark."""
    return _built("resnet_style_wide", seed)


def transformer_encoder(seed: int = 0) -> onnx.ModelProto:
    """Random seeded 2-layer BERT-style encoder (d 128, 4 heads); input/output [N,32,128]."""
    return _built("transformer_encoder", seed)


def mnist_cnn() -> onnx.ModelProto:
    """Pretrained digit-recognizer-py MNIST CNN; input [N,1,28,28] in [0,1], normalisation baked in."""
    return _built("mnist_cnn", 0)


MODELS: dict[str, Callable[[], onnx.ModelProto]] = {
    "mlp": mlp,
    "cnn": cnn,
    "resnet_style": resnet_style,
    "resnet_style_wide": resnet_style_wide,
    "depthwise_separable_cnn": depthwise_separable_cnn,
    "grouped_cnn": grouped_cnn,
    "transformer_encoder": transformer_encoder,
    "mnist_cnn": mnist_cnn,
    "fashion_mlp": fashion_mlp,
    "fashion_cnn": lambda: onnx.load(str(bundled_default())),
}
_register_realistic()


def mobilenet_v2(seed: int = 0) -> onnx.ModelProto:
    """Random seeded MobileNetV2 1.0 (inverted residuals, depthwise 3x3, ReLU6); input [N,3,224,224]."""
    return _built("mobilenet_v2", seed)


def efficientnet_lite(seed: int = 0) -> onnx.ModelProto:
    """Random seeded EfficientNet-Lite0 (depthwise 3x3 and 5x5, ReLU6); input [N,3,224,224]."""
    return _built("efficientnet_lite", seed)


def resnet18(seed: int = 0) -> onnx.ModelProto:
    """Random seeded ResNet-18 (64-128-256-512, BN folded); input [N,3,224,224]."""
    return _built("resnet18", seed)


def bert_encoder(seed: int = 0) -> onnx.ModelProto:
    """Random seeded BERT-style encoder (6 layers, hidden 384, 12 heads); input/output [N,32,384]."""
    return _built("bert_encoder", seed)


def bert_encoder_128(seed: int = 0) -> onnx.ModelProto:
    """The BERT-style encoder on 128 tokens; input/output [N,128,384]."""
    return _built("bert_encoder_128", seed)


MODELS.update(mobilenet_v2=mobilenet_v2, efficientnet_lite=efficientnet_lite, resnet18=resnet18,
              bert_encoder=bert_encoder, bert_encoder_128=bert_encoder_128)


def build(name: str) -> onnx.ModelProto:
    """Build a zoo model by name (see MODELS)."""
    if name not in MODELS:
        raise ValueError(f"unknown zoo model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name]()
