"""How many weight checks a tensor gets: a count per block, or a rate of the tensor's memory.

Two forms of ``weight_checks`` (``--weight-checks``):

* a count ``M`` (an int, or a string like ``"1000"``): ``M`` checks in every block of at most
  ``block_size`` values (capped at the block size minus one), whatever the tensor's size;
* a rate ``r`` (a float in (0, 1), or a string like ``"5%"``): the tensor's *extra bytes* are
  limited to ``r`` times the bytes of the original tensor (``original_values`` x the weights'
  itemsize; for a protected layer the data rows only). The extra bytes counted are

  - the layer code's parity rows for that weight (the output channels a protected layer adds,
    whether stored in the same initializer or, under the rerun strategy, in their own),
  - the weight code's stored checks (``check_bytes`` each: 4 for the default float32 parity),
  - a share of the codes' bookkeeping: the metadata entries and the framing of the parity
    initializers (``model.entry_bytes``, about 0.4 KB + 40 bytes per block and tensor), shared by
    all protected tensors in proportion to their original bytes (so that small tensors, whose
    own entry would eat their whole budget, still get checks);

  so ``checks = floor((r * original_bytes - layer_parity_bytes - share) / check_bytes)``,
  spread over the blocks in proportion to their size, with at least ``MIN_CHECKS`` per block (so
  that a small tensor, or one whose layer code already spends the rate, can still repair a few
  values). The extra bytes exceed the rate only by that minimum, and where the layer code's
  parity rows alone exceed it (2 parity rows per block of 32: 6.25%).

``0`` (or ``"0"``, ``"0%"``) means no weight checks.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .check_matrices import DEFAULT_FRACTION, checks_for

MIN_CHECKS = 32
_FORMS = "a count of checks per block (e.g. 1000) or a rate of the tensor's memory (e.g. 5% or 0.05)"


def parse_weight_checks(value) -> int | float:
    """The validated form of a weight-checks setting: an int count, a float rate in (0, 1), or 0."""
    if isinstance(value, str):
        return _parse_text(value.strip())
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"weight checks must be {_FORMS}, got {value!r}")
    if isinstance(value, (int, np.integer)):
        if value < 0:
            raise ValueError(f"weight checks count must be >= 0, got {value}")
        return int(value)
    return _checked_rate(float(value), repr(value))


def _parse_text(text: str) -> int | float:
    """'1000' -> 1000, '5%' -> 0.05, '0.05' -> 0.05."""
    number = text[:-1] if text.endswith("%") else text
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"weight checks must be {_FORMS}, got {text!r}") from None
    if text.endswith("%"):
        return _checked_rate(value / 100.0, repr(text))
    if number.lstrip("+-").isdigit():
        return parse_weight_checks(int(number))
    return _checked_rate(value, repr(text))


def _checked_rate(rate: float, shown: str) -> float | int:
    """A rate in (0, 1) as given, 0 for none; anything else is an error."""
    if rate == 0.0:
        return 0
    if not 0.0 < rate < 1.0:
        raise ValueError(f"weight checks rate must be between 0 and 1 (0% and 100%), got {shown}")
    return rate


def count_or_rate(checks, fraction: float | None = None) -> tuple[int | None, float | None]:
    """A setting split into (count per block, rate); None for both means the default rate."""
    if checks is None:
        return None, None if fraction is None else rate_of(fraction)
    if fraction is not None:
        raise ValueError("give checks or fraction, not both")
    value = parse_weight_checks(checks)
    if not value:
        raise ValueError("weight checks must be > 0 (0 means no weight code: do not add one)")
    return (value, None) if isinstance(value, int) else (None, value)


def rate_of(fraction: float | None) -> float:
    """A rate validated to lie in (0, 1); DEFAULT_FRACTION when None."""
    rate = parse_weight_checks(float(DEFAULT_FRACTION if fraction is None else fraction))
    if not rate:
        raise ValueError("weight checks rate must be > 0")
    return rate


def describe(checks: int | float) -> str:
    """A short label of a weight-checks setting: '1000/block' or '5%'."""
    return f"{checks * 100:g}%" if isinstance(checks, float) else f"{checks}/block"


class LayerRows(NamedTuple):
    """What a weight tensor holds of the original layer, and the layer code's parity values for it."""

    original_values: int
    parity_values: int


def rate_total(rows: LayerRows, rate: float, value_bytes: int, check_bytes: int, overhead: int = 0) -> int:
    """Checks a rate leaves a tensor once the layer code's parity rows and ``overhead`` bytes are paid."""
    budget = (rate * rows.original_values - rows.parity_values) * value_bytes - overhead
    return max(0, math.floor(budget / check_bytes + 1e-9))


def split_checks(bounds: list[tuple[int, int]], total: int) -> list[int]:
    """Spread ``total`` checks over the blocks in proportion to their size (>= MIN_CHECKS each)."""
    n = bounds[-1][1]
    edges = [0] + [(total * hi + n // 2) // n for _, hi in bounds]
    return [checks_for(hi - lo, max(b - a, MIN_CHECKS), None)
            for (lo, hi), a, b in zip(bounds, edges[:-1], edges[1:])]


def bookkeeping_shares(entry_bytes: list[int], original_values: list[int]) -> list[float]:
    """Each tensor's share of all codes' bookkeeping bytes, in proportion to its original size."""
    total = sum(original_values)
    return [sum(entry_bytes) * n / total for n in original_values]


def block_checks(bounds: list[tuple[int, int]], checks: int | None, fraction: float | None,
                 rows: LayerRows, value_bytes: int, check_bytes: int, overhead: int = 0) -> list[int]:
    """Checks per block: a count as given in every block, or a rate of the tensor's memory."""
    if checks is not None:
        return [checks_for(hi - lo, checks, fraction) for lo, hi in bounds]
    return split_checks(bounds, rate_total(rows, rate_of(fraction), value_bytes, check_bytes, overhead))


def layer_rows(model, protected: list[dict]) -> dict[str, LayerRows]:
    """For each protected layer's float32 weight initializer: its original values and parity values.

    A layer protected by a code has ``data_channels`` output channels and ``parity_channels``
    parity channels. Its weight either holds both (inline: a dimension of size data + parity) or
    only the data rows (separate parity: the parity rows live in their own initializer); either
    way the parity rows cost ``parity_channels`` x (values per channel). Depthwise checks add no
    parity rows (0).
    """
    from onnx import TensorProto

    inits = {t.name: t for t in model.graph.initializer}
    records = {p["name"]: p for p in protected}
    out: dict[str, LayerRows] = {}
    for node in model.graph.node:
        record = records.get(node.name)
        if record is None or len(node.input) < 2 or node.input[1] not in inits:
            continue
        tensor = inits[node.input[1]]
        if tensor.data_type != TensorProto.FLOAT:  # weight codes cover float32 weights
            continue
        out[tensor.name] = _rows_of(list(tensor.dims), record["data_channels"], record["parity_channels"])
    return out


def _rows_of(dims: list[int], data: int, parity: int) -> LayerRows:
    """Original and parity values of a weight of shape ``dims`` (see layer_rows)."""
    n = int(np.prod(dims))
    if parity and data + parity in dims:
        per = n // (data + parity)
        return LayerRows(per * data, per * parity)
    if parity and data in dims:
        return LayerRows(n, n // data * parity)
    return LayerRows(n, 0)


def tensor_memory(entry: dict) -> dict:
    """Bytes of one protected tensor: original, layer-code parity rows, weight-code checks, extra ratio."""
    value_bytes = np.dtype(entry["dtype"]).itemsize
    original = entry.get("original_values", entry["n"]) * value_bytes
    layer = entry.get("layer_parity_values", 0) * value_bytes
    code = entry["m"] * np.dtype(entry["parity_dtype"]).itemsize if entry["mode"] == "parity" else 0
    return {"tensor": entry["tensor"], "original_bytes": original, "layer_bytes": layer,
            "code_bytes": code, "extra_ratio": (layer + code) / original}
