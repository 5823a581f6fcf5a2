"""Pretrained models: the digit-recognizer-py MNIST CNN, the cached Fashion-MNIST MLP and depthwise-separable
CNN, the bundled CNN."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import onnx

from onnx_ecc import datasets as _datasets
from onnx_ecc.io import write_bytes
from onnx_ecc.zoo.export import export
from onnx_ecc.zoo.torch_modules import ModelUnavailable, _nn, _seeded, _torch
from onnx_ecc.zoo.training import train_classifier

MNIST_MEAN = 0.1307  # digit_recognizer's transforms.Normalize((0.1307,), (0.3081,))
MNIST_STD = 0.3081
BUNDLED_PATH = Path(__file__).resolve().parents[1] / "models" / "fashion_cnn.onnx"
_FASHION_MLP_VERSION = "v1"
_FASHION_DEPTHWISE_VERSION = "v1"


def mnist_cnn_weights_path() -> Path:
    """Locate digit_recognizer/models/handwriting_model.pth without importing the package."""
    spec = importlib.util.find_spec("digit_recognizer")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "models" / "handwriting_model.pth"
        if path.is_file():
            return path
    raise ModelUnavailable(
        "pretrained MNIST CNN not found: `pip install --no-deps digit-recognizer-py` "
        "(file digit_recognizer/models/handwriting_model.pth)"
    )


def mnist_cnn_preprocess(x: np.ndarray) -> np.ndarray:
    """Normalise [0,1] MNIST images as digit_recognizer does; NOT needed for mnist_cnn() (baked in)."""
    return ((np.asarray(x, dtype=np.float32) - MNIST_MEAN) / MNIST_STD).astype(np.float32)


def _make_mnist_cnn(seed: int = 0):
    """Normalize + digit_recognizer's CNN with its pretrained weights loaded."""
    torch = _torch()
    ns = _nn()
    net = ns.DigitRecognizerCNN()
    state = torch.load(mnist_cnn_weights_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    m = torch.nn.Sequential(ns.Normalize(MNIST_MEAN, MNIST_STD), net)
    doc = (
        "pretrained MNIST CNN from digit-recognizer-py 0.1 (handwriting_model.pth); input [N,1,28,28] "
        f"in [0,1], white digit on black; normalisation (x-{MNIST_MEAN})/{MNIST_STD} is the first ops"
    )
    return m.eval(), (1, 28, 28), "logits", doc


def cache_dir() -> Path:
    """Cache folder for trained models: $ONNX_ECC_CACHE, else $XDG_CACHE_HOME/onnx_ecc, else ~/.cache/onnx_ecc."""
    env = os.environ.get("ONNX_ECC_CACHE")
    if env:
        root = Path(env)
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "onnx_ecc"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _make_fashion_mlp(seed: int = 0):
    """784-256-10 MLP trained 3 epochs on Fashion-MNIST (a few seconds on 2 cores)."""
    torch = _torch()
    nn = torch.nn
    data = _datasets.load_fashion_mnist()
    with _seeded(seed):
        m = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
        train_classifier(m, data, epochs=3, batch_size=128, lr=1e-3, seed=seed)
    return m.eval(), (1, 28, 28), "logits", f"MLP 784-256-10 trained on Fashion-MNIST, seed {seed}"


def fashion_mlp(seed: int = 0, retrain: bool = False) -> onnx.ModelProto:
    """Fashion-MNIST MLP (input [N,1,28,28]), trained once and cached in cache_dir()."""
    path = cache_dir() / f"fashion_mlp_{_FASHION_MLP_VERSION}_seed{seed}.onnx"
    if path.exists() and not retrain:
        return onnx.load(str(path))
    model = export(*_make_fashion_mlp(seed))
    write_bytes(path, model.SerializeToString())  # atomic: concurrent users never read a half-written file
    return model


def fashion_rgb32(x: np.ndarray) -> np.ndarray:
    """Fashion-MNIST images [N, 1, 28, 28] as the zoo's 3 x 32 x 32 input: zero-padded by 2, grey in all channels."""
    x = np.pad(np.asarray(x, np.float32), ((0, 0), (0, 0), (2, 2), (2, 2)))
    return np.ascontiguousarray(np.repeat(x, 3, axis=1))


def fashion_depthwise_cnn(seed: int = 0, retrain: bool = False) -> onnx.ModelProto:
    """The zoo's depthwise-separable CNN (input [N, 3, 32, 32]) trained 1 epoch on 20000 Fashion-MNIST images
    (fashion_rgb32; about a minute on 2 cores), cached in cache_dir(): a MobileNet-style net with real weights."""
    path = cache_dir() / f"fashion_depthwise_cnn_{_FASHION_DEPTHWISE_VERSION}_seed{seed}.onnx"
    if path.exists() and not retrain:
        return onnx.load(str(path))
    from onnx_ecc.zoo.models import _make_depthwise_separable_cnn
    from onnx_ecc.zoo.training import fit

    data = _datasets.load_fashion_mnist()
    module, shape, output, _ = _make_depthwise_separable_cnn(seed)
    fit(module, fashion_rgb32(data.x_train[:20000]), data.y_train[:20000], epochs=1, batch_size=64, lr=2e-3, seed=seed)
    model = export(module, shape, output, f"depthwise-separable CNN trained on Fashion-MNIST (3x32x32), seed {seed}")
    write_bytes(path, model.SerializeToString())  # atomic: concurrent users never read a half-written file
    return model


def bundled_default() -> Path:
    """Path of the committed pretrained Fashion-MNIST CNN used by the quick-start demo."""
    if not BUNDLED_PATH.is_file():
        raise ModelUnavailable(
            f"bundled model missing at {BUNDLED_PATH}; regenerate it with "
            "`python examples/train_bundled_model.py`"
        )
    return BUNDLED_PATH
