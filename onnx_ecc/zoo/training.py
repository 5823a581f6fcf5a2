"""The zoo's training loop (Adam + cross-entropy), shared by every model trained here."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from onnx_ecc import datasets as _datasets
from onnx_ecc.zoo.torch_modules import _torch


def fit(module, x: np.ndarray, y: np.ndarray, epochs: int = 3, batch_size: int = 128, lr: float = 1e-3,
        seed: int = 0, log: Callable[[str], None] | None = None, after_step: Callable[[], None] | None = None):
    """Train a torch classifier on (x, y) with Adam + cross-entropy, seeded batches; ``after_step``
    runs after every optimizer step (projections of trained-in codes); returns it in eval mode."""
    torch = _torch()
    x = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    y = torch.from_numpy(np.asarray(y, np.int64))
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
            if after_step is not None:
                after_step()
            total += loss.item() * len(idx)
        if log:
            log(f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f} ({time.perf_counter() - t0:.1f} s)")
    return module.eval()


def train_classifier(module, data: _datasets.Dataset, epochs: int = 3, batch_size: int = 128, lr: float = 1e-3,
                     seed: int = 0, log: Callable[[str], None] | None = None):
    """Train a torch classifier on a dataset's training split (see ``fit``)."""
    return fit(module, data.x_train, data.y_train, epochs, batch_size, lr, seed, log)
