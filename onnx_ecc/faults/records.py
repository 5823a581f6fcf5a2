"""Typed fault records: one Fault says where (tensor/layer, element), what (kind, bit/value), and in which memory.

Why: every campaign result must be reproducible and auditable, so faults are plain frozen
records that serialise to JSON and can be re-applied exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any

KINDS = ("bitflip", "random", "zero", "value")
SITES = ("weight", "output")


@dataclasses.dataclass(frozen=True)
class Fault:
    """One fault: ``target`` is a tensor name (weight faults) or a layer/tensor name (output faults);
    ``index`` the element (tuple of coordinates, or a flat int); ``bit`` for bit flips (0 = mantissa
    LSB, 31 = sign); ``value`` the value written for 'random' and 'value' faults."""

    target: str
    index: tuple[int, ...] | int
    kind: str = "bitflip"
    bit: int | None = None
    value: float | None = None
    site: str = "weight"

    def __post_init__(self):
        if not isinstance(self.target, str) or not self.target:
            raise ValueError("fault target must be a non-empty tensor or layer name")
        if self.kind not in KINDS:
            raise ValueError(f"fault kind must be one of {KINDS}, got {self.kind!r}")
        if self.site not in SITES:
            raise ValueError(f"fault site must be one of {SITES}, got {self.site!r}")
        idx = self.index
        if isinstance(idx, (list, tuple)):
            idx = tuple(int(i) for i in idx)
            if any(i < 0 for i in idx):
                raise ValueError(f"fault index {idx} has a negative coordinate")
        else:
            idx = int(idx)
            if idx < 0:
                raise ValueError(f"fault index {idx} is negative")
        object.__setattr__(self, "index", idx)
        if self.kind == "bitflip":
            if self.bit is None or not 0 <= int(self.bit) <= 31:
                raise ValueError(f"a bitflip fault needs a bit in [0, 31], got {self.bit!r}")
            object.__setattr__(self, "bit", int(self.bit))
        elif self.bit is not None:
            raise ValueError(f"a {self.kind} fault takes no bit")
        if self.kind in ("random", "value") and self.value is None:
            raise ValueError(f"a {self.kind} fault needs a value")
        if self.value is not None:
            object.__setattr__(self, "value", float(self.value))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["index"] = list(self.index) if isinstance(self.index, tuple) else self.index
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Fault":
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown fault field(s) {sorted(unknown)}")
        index = d.get("index")
        return cls(**{**d, "index": tuple(index) if isinstance(index, list) else index})

    def flat_index(self, shape: tuple[int, ...]) -> int:
        """The element's flat (row-major) position in a tensor of ``shape``."""
        import numpy as np

        if isinstance(self.index, int):
            if self.index >= int(np.prod(shape, dtype=np.int64)):
                raise ValueError(f"fault index {self.index} out of range for {self.target} of shape {tuple(shape)}")
            return self.index
        if len(self.index) != len(shape) or any(i >= s for i, s in zip(self.index, shape)):
            raise ValueError(f"fault index {self.index} out of range for {self.target} of shape {tuple(shape)}")
        return int(np.ravel_multi_index(self.index, shape))

    def describe(self) -> str:
        what = f"bit {self.bit}" if self.kind == "bitflip" else (self.kind if self.value is None else f"{self.kind}={self.value:.6g}")
        return f"{self.site} {self.target}{list(self.index) if isinstance(self.index, tuple) else [self.index]} {what}"


def corrupt(value, fault: Fault):
    """The float32 value after ``fault`` hits it (bit flip, random/value write, or zero)."""
    import numpy as np

    v = np.float32(value)
    if fault.kind == "bitflip":
        return (np.array([v]).view(np.uint32) ^ np.uint32(1 << fault.bit)).view(np.float32)[0]
    if fault.kind == "zero":
        return np.float32(0.0)
    return np.float32(fault.value)


def faults_to_json(faults) -> list[dict]:
    return [f.to_dict() for f in faults]


def faults_from_json(rows) -> list[Fault]:
    return [Fault.from_dict(r) for r in rows]
