"""The torch side of the zoo: lazy torch import, seeded builds, the custom modules, norm statistics."""

from __future__ import annotations

import contextlib
import functools
import types


class ModelUnavailable(RuntimeError):
    """Raised when a pretrained model's files or its training dependencies are missing."""


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
