"""Train the small Fashion-MNIST CNN bundled as onnx_ecc/models/fashion_cnn.onnx.

Reproducible (seeded) and CPU-only: about 30-60 s on 2 cores. Needs torch and the
Debian package dataset-fashion-mnist. Usage:

    python examples/train_bundled_model.py [--epochs 5] [--seed 0] [--out PATH]

Architecture (input [N,1,28,28] in [0,1], output logits [N,10]):
    Conv 1->16 3x3, Relu, MaxPool 2 -> Conv 16->32 3x3, Relu, MaxPool 2 ->
    Flatten (32*5*5) -> Gemm 800->64, Relu -> Gemm 64->10
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnx  # noqa: E402
import torch  # noqa: E402

from onnx_ecc import datasets, zoo  # noqa: E402

CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


def fashion_cnn(seed: int) -> torch.nn.Module:
    """Build the untrained bundled CNN with seeded initial weights."""
    nn = torch.nn
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 5 * 5, 64), nn.ReLU(), nn.Linear(64, 10),
    )


def main(argv: list[str] | None = None) -> int:
    """Train, export to ONNX (opset 17, dynamic batch), report test accuracy."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (fixed for reproducibility)")
    ap.add_argument("--out", type=Path, default=ROOT / "onnx_ecc" / "models" / "fashion_cnn.onnx")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    data = datasets.load_fashion_mnist()
    t0 = time.perf_counter()
    model = zoo.train_classifier(
        fashion_cnn(args.seed), data, epochs=args.epochs, batch_size=128, lr=2e-3,
        seed=args.seed, log=print,
    )
    print(f"trained in {time.perf_counter() - t0:.1f} s")

    proto = zoo.export(
        model, (1, 28, 28), "logits",
        doc=(
            f"Fashion-MNIST CNN trained by examples/train_bundled_model.py (seed {args.seed}, "
            f"{args.epochs} epochs); input [N,1,28,28] in [0,1]; classes: {', '.join(CLASSES)}"
        ),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(args.out))
    acc = zoo.accuracy(args.out, data)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB), test accuracy {acc:.4f}")
    return 0 if acc > 0.85 else 1


if __name__ == "__main__":
    raise SystemExit(main())
