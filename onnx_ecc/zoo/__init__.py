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

import contextlib
import functools
import importlib.util
import io
import os
import time
import types
import warnings
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np
import onnx

from .. import datasets as _datasets

__all__ = [
    "OPSET",
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

OPSET = 17
MNIST_MEAN = 0.1307  # digit_recognizer's transforms.Normalize((0.1307,), (0.3081,))
MNIST_STD = 0.3081
BUNDLED_PATH = Path(__file__).resolve().parents[1] / "models" / "fashion_cnn.onnx"
_FASHION_MLP_VERSION = "v1"

ModelLike = Union[onnx.ModelProto, str, os.PathLike, bytes]


class ModelUnavailable(RuntimeError):
    """Raised when a pretrained model's files or its training dependencies are missing."""


# --------------------------------------------------------------------------- torch


def _torch():
    """Import torch lazily with a clear message, since only builders need it."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on environment
        raise ModelUnavailable(
            "building zoo models needs torch: `pip install torch` (CPU build is enough)"
        ) from exc
    return torch


@contextlib.contextmanager
def _seeded(seed: int):
    """Seed torch's global RNG inside the block without disturbing the caller's RNG state."""
    torch = _torch()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@functools.lru_cache(maxsize=None)
def _nn() -> types.SimpleNamespace:
    """Define the custom torch modules once torch is importable (kept out of import time)."""
    torch = _torch()
    nn = torch.nn

    class Normalize(nn.Module):
        """(x - mean) / std as explicit ops so preprocessing lives inside the graph."""

        def __init__(self, mean: float, std: float):
            super().__init__()
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

        def forward(self, x):
            return (x - self.mean) / self.std

    class DigitRecognizerCNN(nn.Module):
        """Same layout as digit_recognizer.model.CNN so its state dict loads unchanged."""

        def __init__(self):
            super().__init__()
            self.conv_layers = nn.Sequential(
                nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
                nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
            )
            self.fc_layers = nn.Sequential(
                nn.Linear(128 * 3 * 3, 256), nn.ReLU(), nn.Linear(256, 10)
            )

        def forward(self, x):
            x = self.conv_layers(x)
            x = torch.flatten(x, 1)
            return self.fc_layers(x)

    class BasicBlock(nn.Module):
        """ResNet BasicBlock: conv-bn-relu-conv-bn + (projected) shortcut, then relu."""

        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Identity()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return torch.relu(y + self.shortcut(x))

    class SelfAttention(nn.Module):
        """Multi-head self-attention with explicit Linear projections (exports as MatMul)."""

        def __init__(self, d_model: int, heads: int, seq_len: int):
            super().__init__()
            self.h, self.d, self.s = heads, d_model // heads, seq_len
            self.q = nn.Linear(d_model, d_model)
            self.k = nn.Linear(d_model, d_model)
            self.v = nn.Linear(d_model, d_model)
            self.o = nn.Linear(d_model, d_model)

        def forward(self, x):
            def heads(t):
                return t.reshape(-1, self.s, self.h, self.d).transpose(1, 2)

            q = heads(self.q(x)) * (1.0 / float(self.d) ** 0.5)
            k, v = heads(self.k(x)), heads(self.v(x))
            att = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
            y = (att @ v).transpose(1, 2).reshape(-1, self.s, self.h * self.d)
            return self.o(y)

    class EncoderLayer(nn.Module):
        """BERT-style post-LN encoder layer: LN(x + MHA(x)), LN(x + FFN(x)) with GELU."""

        def __init__(self, d_model: int, heads: int, seq_len: int, ffn: int):
            super().__init__()
            self.attn = SelfAttention(d_model, heads, seq_len)
            self.ln1 = nn.LayerNorm(d_model)
            self.ff1 = nn.Linear(d_model, ffn)
            self.ff2 = nn.Linear(ffn, d_model)
            self.ln2 = nn.LayerNorm(d_model)

        def forward(self, x):
            x = self.ln1(x + self.attn(x))
            return self.ln2(x + self.ff2(torch.nn.functional.gelu(self.ff1(x))))

    return types.SimpleNamespace(
        Normalize=Normalize,
        DigitRecognizerCNN=DigitRecognizerCNN,
        BasicBlock=BasicBlock,
        SelfAttention=SelfAttention,
        EncoderLayer=EncoderLayer,
    )


def _randomize_norms(module, seed: int) -> None:
    """Give BatchNorm/LayerNorm seeded non-trivial stats and affine params.

    Why: default ones/zeros make BN folding a no-op and make the exporter deduplicate
    identical LayerNorm weights into Identity nodes, hiding real per-layer parameters.
    """
    torch = _torch()
    g = torch.Generator().manual_seed(seed + 7919)
    for m in module.modules():
        with torch.no_grad():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm)):
                n = m.weight.numel()
                m.weight.copy_((0.8 + 0.4 * torch.rand(n, generator=g)).reshape(m.weight.shape))
                m.bias.copy_((0.1 * torch.randn(n, generator=g)).reshape(m.bias.shape))


# --------------------------------------------------------------------------- export


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


# --------------------------------------------------------------------------- random test models
#
# Each _make_* returns (eval-mode torch module, input shape without batch, output name, doc).


def _make_mlp(seed: int):
    """784-128-64-10 MLP with Flatten inside; input [N,1,28,28]."""
    nn = _torch().nn
    with _seeded(seed):
        m = nn.Sequential(
            nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
            nn.Linear(64, 10),
        )
    return m.eval(), (1, 28, 28), "logits", f"random MLP 784-128-64-10, seed {seed}"


def _make_cnn(seed: int):
    """LeNet-like Conv+Relu+MaxPool x2 + Gemm x2 on [N,1,28,28]."""
    nn = _torch().nn
    with _seeded(seed):
        m = nn.Sequential(
            nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(16 * 5 * 5, 32), nn.ReLU(), nn.Linear(32, 10),
        )
    return m.eval(), (1, 28, 28), "logits", f"random CNN conv8-conv16-fc32-fc10, seed {seed}"


def _make_resnet_style(seed: int, widths: Sequence[int] = (64, 128, 256)):
    """CIFAR-style ResNet: stem conv, one BasicBlock per stage (stride 2 after the first)."""
    torch = _torch()
    nn, ns = torch.nn, _nn()
    with _seeded(seed):
        layers = [nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()]
        cin = widths[0]
        for i, w in enumerate(widths):
            layers.append(ns.BasicBlock(cin, w, 1 if i == 0 else 2))
            cin = w
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10)]
        m = nn.Sequential(*layers)
        _randomize_norms(m, seed)
    doc = f"random ResNet-style, stages {tuple(widths)}, BN folded, seed {seed}"
    return m.eval(), (3, 32, 32), "logits", doc


def _make_depthwise_separable_cnn(seed: int):
    """MobileNet-like: stem conv, then depthwise 3x3 (groups=C) + pointwise 1x1 blocks."""
    nn = _torch().nn

    def block(cin, cout, stride):
        return [
            nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(),
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
        ]

    with _seeded(seed):
        m = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            *block(16, 32, 1), *block(32, 64, 2), *block(64, 64, 1), *block(64, 128, 2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10),
        )
        _randomize_norms(m, seed)
    return m.eval(), (3, 32, 32), "logits", f"random depthwise-separable CNN, seed {seed}"


def _make_grouped_cnn(seed: int):
    """CNN with a groups=4 (not depthwise) 3x3 conv between ordinary convs."""
    nn = _torch().nn
    with _seeded(seed):
        m = nn.Sequential(
            nn.Conv2d(3, 32, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, 1, 1, groups=4), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
        )
    return m.eval(), (3, 32, 32), "logits", f"random CNN with a groups=4 conv, seed {seed}"


def _make_transformer_encoder(
    seed: int, layers: int = 2, d_model: int = 128, heads: int = 4, seq_len: int = 32
):
    """BERT-style encoder stack on float embeddings [N, seq_len, d_model]."""
    nn = _torch().nn
    ns = _nn()
    with _seeded(seed):
        m = nn.Sequential(*[ns.EncoderLayer(d_model, heads, seq_len, 4 * d_model) for _ in range(layers)])
        _randomize_norms(m, seed)
    doc = f"random BERT-style encoder, {layers} layers, d={d_model}, {heads} heads, seq {seq_len}, seed {seed}"
    return m.eval(), (seq_len, d_model), "hidden", doc


# --------------------------------------------------------------------------- pretrained MNIST CNN


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


# --------------------------------------------------------------------------- training


def train_classifier(
    module,
    data: _datasets.Dataset,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
):
    """Train a torch classifier with Adam + cross-entropy on data.x_train; returns it in eval mode."""
    torch = _torch()
    x = torch.from_numpy(data.x_train)
    y = torch.from_numpy(data.y_train)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    module.train()
    for epoch in range(epochs):
        t0, total = time.perf_counter(), 0.0
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(module(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        if log:
            log(f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f} ({time.perf_counter() - t0:.1f} s)")
    return module.eval()


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
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)  # atomic so concurrent users never read a half-written file
    return model


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


def bundled_default() -> Path:
    """Path of the committed pretrained Fashion-MNIST CNN used by the quick-start demo."""
    if not BUNDLED_PATH.is_file():
        raise ModelUnavailable(
            f"bundled model missing at {BUNDLED_PATH}; regenerate it with "
            "`python examples/train_bundled_model.py`"
        )
    return BUNDLED_PATH


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


# --------------------------------------------------------------------------- evaluation


def _as_model(model: ModelLike) -> onnx.ModelProto:
    """Accept a ModelProto, serialized bytes or a path and return a ModelProto."""
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model))
    return onnx.load(str(model))


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
