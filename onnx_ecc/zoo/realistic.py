"""Real-size architectures for the overhead benchmarks: ImageNet-shaped CNNs and a BERT-style encoder.

Random seeded weights (BatchNorm folded with non-trivial statistics), exported like every zoo
model. They have the layer shapes, fusable patterns (Conv+ReLU6, inverted residuals, residual
Adds, LayerNorm, GELU, attention) and cost profile of the published networks, which is what
protection overhead depends on; their predictions are meaningless.

* ``mobilenet_v2``        MobileNetV2 (width 1.0): inverted residuals, depthwise 3x3, ReLU6, 224x224.
* ``efficientnet_lite``   EfficientNet-Lite0: MBConv blocks, depthwise 3x3 and 5x5, ReLU6, 224x224.
* ``resnet18``            ResNet-18: BasicBlocks 64-128-256-512, 224x224.
* ``bert_encoder``        6 layers, hidden 384, 12 heads, FFN 1536, 32 tokens (``bert_encoder_128``: 128).
"""

from __future__ import annotations

import functools

from onnx_ecc.zoo.models import _make_transformer_encoder
from onnx_ecc.zoo.torch_modules import _nn, _randomize_norms, _seeded, _torch


def _modules():
    """The torch building blocks, defined once torch is imported."""

    torch = _torch()
    nn = torch.nn

    def conv_bn(cin, cout, k, stride, groups=1, act=True):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return layers + ([nn.ReLU6()] if act else [])

    class InvertedResidual(nn.Module):
        """Expand 1x1 (ReLU6), depthwise kxk (ReLU6), project 1x1 (linear); skip when shapes match."""

        def __init__(self, cin, cout, stride, expand, k=3):
            super().__init__()
            hidden = cin * expand
            layers = conv_bn(cin, hidden, 1, 1) if expand != 1 else []
            layers += conv_bn(hidden, hidden, k, stride, groups=hidden) + conv_bn(hidden, cout, 1, 1, act=False)
            self.body = nn.Sequential(*layers)
            self.skip = stride == 1 and cin == cout

        def forward(self, x):
            y = self.body(x)
            return x + y if self.skip else y

    return torch, nn, conv_bn, InvertedResidual


def _inverted_residual_net(stages, stem: int, head: int, seed: int):
    """Stem conv, inverted-residual stages (expand, channels, repeats, stride, kernel), 1x1 head, classifier."""

    torch, nn, conv_bn, block = _modules()
    with _seeded(seed):
        layers = conv_bn(3, stem, 3, 2)
        cin = stem
        for expand, cout, repeats, stride, k in stages:
            for i in range(repeats):
                layers.append(block(cin, cout, stride if i == 0 else 1, expand, k))
                cin = cout
        layers += conv_bn(cin, head, 1, 1) + [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(head, 1000)]
        m = nn.Sequential(*layers)
        _randomize_norms(m, seed)
    return m.eval()


def make_mobilenet_v2(seed: int = 0):
    """MobileNetV2 1.0 at 224x224 (3.4M parameters, 300M multiply-adds)."""
    stages = [(1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 32, 3, 2, 3), (6, 64, 4, 2, 3), (6, 96, 3, 1, 3),
              (6, 160, 3, 2, 3), (6, 320, 1, 1, 3)]
    return (_inverted_residual_net(stages, 32, 1280, seed), (3, 224, 224), "logits",
            f"random MobileNetV2-style (width 1.0, 224x224, ReLU6), seed {seed}")


def make_efficientnet_lite(seed: int = 0):
    """EfficientNet-Lite0 at 224x224: MBConv with 3x3 and 5x5 depthwise convs, ReLU6, no squeeze-excite."""
    stages = [(1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3), (6, 112, 3, 1, 5),
              (6, 192, 4, 2, 5), (6, 320, 1, 1, 3)]
    return (_inverted_residual_net(stages, 32, 1280, seed), (3, 224, 224), "logits",
            f"random EfficientNet-Lite0-style (224x224, depthwise 3x3/5x5, ReLU6), seed {seed}")


def make_resnet18(seed: int = 0):
    """ResNet-18 at 224x224: 7x7 stem, max pool, two BasicBlocks per stage of 64-128-256-512."""

    torch = _torch()
    nn, ns = torch.nn, _nn()
    with _seeded(seed):
        layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
        cin = 64
        for i, w in enumerate((64, 128, 256, 512)):
            layers += [ns.BasicBlock(cin, w, 1 if i == 0 else 2), ns.BasicBlock(w, w, 1)]
            cin = w
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000)]
        m = nn.Sequential(*layers)
        _randomize_norms(m, seed)
    return m.eval(), (3, 224, 224), "logits", f"random ResNet-18-style (224x224, BN folded), seed {seed}"


def make_bert_encoder(seed: int = 0, seq_len: int = 32):
    """BERT-style encoder: 6 post-LN layers, hidden 384, 12 heads, FFN 1536, on embeddings [N, seq, 384]."""

    m, shape, out, _ = _make_transformer_encoder(seed, layers=6, d_model=384, heads=12, seq_len=seq_len)
    return m, shape, out, f"random BERT-style encoder (6 layers, hidden 384, 12 heads, {seq_len} tokens), seed {seed}"


MAKERS = {
    "mobilenet_v2": make_mobilenet_v2,
    "efficientnet_lite": make_efficientnet_lite,
    "resnet18": make_resnet18,
    "bert_encoder": make_bert_encoder,
    "bert_encoder_128": functools.partial(make_bert_encoder, seq_len=128),
}
