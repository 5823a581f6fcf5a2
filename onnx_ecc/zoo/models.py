"""Seeded random-weight test models (no training): MLP, CNNs, ResNet-style, transformer encoder.

Each _make_* returns (eval-mode torch module, input shape without batch, output name, doc).
"""

from __future__ import annotations

from typing import Sequence

from onnx_ecc.zoo.torch_modules import _nn, _randomize_norms, _seeded, _torch



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
