"""What a campaign runs: its configurations, inputs (models, real samples) and trial seeds."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np
import onnx

from onnx_ecc import faults as F

FAULT_TYPES = ("weight-bitflip", "weight-random", "weight-zero", "output-bitflip", "output-random", "output-zero",
               "mixed-bitflip")
BUILTIN_MODELS = ("mnist-cnn", "fashion-mlp", "bundled")


class CampaignError(ValueError):
    """Bad campaign input (the message says what)."""


# ---- inputs ---------------------------------------------------------------------------------

def resolve_model(spec: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    """A ModelProto from a built-in name (mnist-cnn, fashion-mlp, bundled) or a path."""
    if isinstance(spec, onnx.ModelProto):
        return spec
    from onnx_ecc import zoo

    if spec == "mnist-cnn":
        return zoo.mnist_cnn()
    if spec == "fashion-mlp":
        return zoo.fashion_mlp()
    if spec == "bundled":
        return onnx.load(str(zoo.bundled_default()))
    if not Path(spec).is_file():
        raise CampaignError(f"no model file {spec!r} (built-in models: {', '.join(BUILTIN_MODELS)})")
    return onnx.load(str(spec))


def load_samples(data: str, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``samples`` test images and labels of a dataset name or an .npz (x, y arrays)."""
    if samples <= 0:
        raise CampaignError("--samples must be > 0")
    if str(data).endswith(".npz"):
        if not Path(data).is_file():
            raise CampaignError(f"no data file {data!r}")
        with np.load(data) as z:
            xk = "x" if "x" in z else "x_test"
            yk = "y" if "y" in z else "y_test"
            if xk not in z or yk not in z:
                raise CampaignError(f"{data}: expected arrays x and y (or x_test and y_test)")
            x, y = z[xk], z[yk]
    else:
        from onnx_ecc import datasets

        d = datasets.load(data)
        x, y = d.x_test, d.y_test
    x = np.ascontiguousarray(x[:samples], dtype=np.float32)
    return x, np.asarray(y[:samples]).astype(np.int64)


def with_weight_checks(protected: onnx.ModelProto, checks: int | float | str = "5%") -> onnx.ModelProto:
    """The protected model with weight codes on its protected layers' weights, as ``transform
    --weight-checks`` adds them (the layer code's parity rows count toward a rate): the campaign's
    "scrubbed" model. A model that has weight codes already is returned as it is."""
    from onnx_ecc.transform.record import read_protection
    from onnx_ecc.weights import add_weight_checks, layer_rows, read_weight_codes

    if read_weight_codes(protected):
        return protected
    record = read_protection(protected)
    if record is None:
        raise CampaignError("the protected model carries no onnx-ecc protection record")
    rows = layer_rows(protected, record["protected"])
    if not rows:
        raise CampaignError("the protected model has no float32 layer weights for weight codes")
    return add_weight_checks(protected, tensor_names=list(rows), checks=checks, layer_rows=rows)


@dataclasses.dataclass(frozen=True)
class Config:
    """One campaign configuration: fault type, amount (bit error rate or count), bits, tensors."""

    fault: str
    ber: float | None = None
    count: int | None = None
    bits: str = "all"
    tensors: str = "protected"

    def __post_init__(self):
        if self.fault not in FAULT_TYPES:
            raise CampaignError(f"unknown fault type {self.fault!r}; choose from {', '.join(FAULT_TYPES)}")
        if (self.ber is None) == (self.count is None):
            raise CampaignError("give exactly one of a bit error rate and a count")
        F.parse_bits(self.bits)

    @property
    def key(self) -> str:
        amount = f"ber={self.ber:g}" if self.ber is not None else f"count={self.count}"
        return f"{self.fault}|{amount}|bits={self.bits}|tensors={self.tensors}"

    @property
    def site(self) -> str:
        return self.fault.split("-", 1)[0]

    @property
    def kind(self) -> str:
        return self.fault.split("-", 1)[1]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def trial_seed(base: int, key: str, trial: int) -> int:
    """A 63-bit seed per (campaign seed, configuration, trial), stable across runs and machines."""
    h = hashlib.sha256(f"{base}/{key}/{trial}".encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1
