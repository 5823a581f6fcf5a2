"""How the calibrated thresholds sit between rounding noise and errors, per protected layer.

For each model: threshold / RMS clean syndrome (how many times the rounding noise an error must
be to be flagged) and threshold / largest clean syndrome on data not used for calibration (the
safety margin against false alarms; real MNIST digits for the pretrained CNN).

    python benchmarks/threshold_margin.py
"""

from __future__ import annotations

import numpy as np

import onnx_ecc
from onnx_ecc import datasets, zoo
from onnx_ecc.transform.record import read_protection
from onnx_ecc.transform.calibration import syndrome_ratios
from onnx_ecc.transform.verification import random_feeds


def main() -> None:
    for name in ["resnet_style", "transformer_encoder", "mnist_cnn"]:
        model = getattr(zoo, name)()
        protected = onnx_ecc.transform(model)
        tol = {p["name"]: p["tolerance"] for p in read_protection(protected)["protected"] if p.get("tolerance")}
        if name == "mnist_cnn":
            feeds, source = {model.graph.input[0].name: datasets.load("mnist").x_test[:200]}, "200 real MNIST digits"
        else:
            feeds, source = random_feeds(model, batch=8, seed=77, positive=True), "fresh random inputs"
        ratios = syndrome_ratios(protected, feeds)
        over_rms = [tol[k] / v["rms"] for k, v in ratios.items() if k in tol]
        margin = [tol[k] / v["max"] for k, v in ratios.items() if k in tol]
        print(f"{name:20s} threshold / RMS noise: median {np.median(over_rms):5.0f} "
              f"(layers {min(over_rms):.0f}-{max(over_rms):.0f}); "
              f"threshold / largest clean syndrome on {source}: min {min(margin):.1f}")


if __name__ == "__main__":
    main()
