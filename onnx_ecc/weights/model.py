"""Model-level weight codes: add stored-parity checks to ONNX initializers and scrub (check/repair) them.

Everything needed to regenerate the codes lives in ``model.metadata_props["onnx_ecc.weight_codes"]``
as JSON::

    {"version": 1, "tensors": [{
        "tensor": "fc.weight", "mode": "parity" | "trained", "family": "dct", "seed": 0,
        "dtype": "float32", "shape": [10, 512], "layout": "row-major", "n": 5120, "m": 1024,
        "block_size": 8192, "parity_tensor": "fc.weight__ecc_weight_parity", "parity_dtype": "float64",
        "blocks": [{"start": 0, "stop": 5120, "m": 1024, "stream": 0,
                    "w_norm": 1.83, "w_absmax": 0.0441}],
        "threshold": {...}}]}

A tensor is flattened row-major and split into contiguous blocks of at most ``block_size``
values; block b uses ``CheckMatrix(family, n_b, m_b, seed, stream=b)``. In "parity" mode the
block parities H_b w_b are concatenated in one initializer ``<tensor>__ecc_weight_parity`` that no
node consumes; in "trained" mode nothing is stored (H_b w_b = 0 by construction). ``w_norm``
(||w_b||_2) scales the rounding thresholds and ``w_absmax`` (max |w_b|) marks impossible values as
erasures (see ``decode``).
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import onnx
from onnx import numpy_helper

from . import decode as _decode
from .codes import FAMILIES, block_bounds, check_matrix, checks_for

METADATA_KEY = "onnx_ecc.weight_codes"
PARITY_SUFFIX = "__ecc_weight_parity"
DEFAULT_BLOCK_SIZE = 8192
DEFAULT_FRACTION = 0.2
MIN_SIZE = 64
_WEIGHT_INPUTS = {"Gemm": (0, 1), "MatMul": (0, 1), "Conv": (1,), "ConvTranspose": (1,)}


# ----------------------------------------------------------------------------- metadata
def read_weight_codes(model: onnx.ModelProto) -> list[dict]:
    """The weight-code entries stored in the model metadata (empty list when none)."""
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            try:
                doc = json.loads(prop.value)
                return list(doc["tensors"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"malformed {METADATA_KEY} metadata: {exc}") from exc
    return []


def write_weight_codes(model: onnx.ModelProto, entries: list[dict]) -> None:
    """Store the entries in the model metadata (in place), replacing any previous value."""
    value = json.dumps({"version": 1, "tensors": entries}, sort_keys=True)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            prop.value = value
            return
    model.metadata_props.add(key=METADATA_KEY, value=value)


def default_weight_tensors(model: onnx.ModelProto, min_size: int = MIN_SIZE) -> list[str]:
    """Float32 initializers with >= min_size values consumed as weights by Gemm/MatMul/Conv."""
    inits = {t.name: t for t in model.graph.initializer}
    names: list[str] = []
    for node in model.graph.node:
        for idx in _WEIGHT_INPUTS.get(node.op_type, ()):
            if idx < len(node.input) and node.input[idx] in inits and node.input[idx] not in names:
                t = inits[node.input[idx]]
                if t.data_type == onnx.TensorProto.FLOAT and int(np.prod(t.dims)) >= min_size:
                    names.append(t.name)
    return names


def make_entry(
    name: str,
    weights: np.ndarray,
    *,
    mode: str = "parity",
    family: str = "dct",
    seed: int = 0,
    checks: int | None = None,
    fraction: float | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    parity_dtype: str = "float64",
) -> dict:
    """The metadata entry describing a code for one float32 tensor (weights as stored)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")
    w = np.asarray(weights)
    if w.dtype != np.float32:
        raise ValueError(f"tensor {name!r} is {w.dtype}, only float32 weights are supported")
    flat = w.reshape(-1).astype(np.float64)
    if not np.all(np.isfinite(flat)):
        raise ValueError(f"tensor {name!r} has non-finite values; cannot protect it")
    blocks = []
    for b, (lo, hi) in enumerate(block_bounds(flat.size, block_size)):
        part = flat[lo:hi]
        blocks.append({
            "start": lo, "stop": hi, "stream": b, "m": checks_for(hi - lo, checks, fraction),
            "w_norm": float(np.linalg.norm(part)), "w_absmax": float(np.abs(part).max()),
        })
    rule = {
        "parity": f"t_i = rtol ||H_i||_2 ||w_block||_2, rtol from parity dtype {parity_dtype}",
        "trained": "t_i = 2^-24 ||H_i||_2 ||w_block||_2 (float32 rounding, Cauchy-Schwarz)",
    }
    if mode not in rule:
        raise ValueError(f"mode must be 'parity' or 'trained', got {mode!r}")
    entry = {
        "tensor": name, "mode": mode, "family": family, "seed": int(seed), "dtype": "float32",
        "shape": list(w.shape), "layout": "row-major", "n": int(flat.size),
        "m": int(sum(b["m"] for b in blocks)), "block_size": int(block_size), "blocks": blocks,
        "threshold": {"rule": rule[mode], "verify_factor": _decode.VERIFY_FACTOR,
                      "rtol_float64": _decode.RTOL_FLOAT64},
    }
    if mode == "parity":
        entry["parity_tensor"] = name + PARITY_SUFFIX
        entry["parity_dtype"] = parity_dtype
    return entry


def _block_code(entry: dict, block: dict):
    return check_matrix(entry["family"], block["stop"] - block["start"], block["m"],
                        entry["seed"], block["stream"])


def compute_parity(flat: np.ndarray, entry: dict) -> np.ndarray:
    """Concatenated block parities H_b w_b (float64) of a flattened tensor."""
    flat = np.asarray(flat, dtype=np.float64)
    return np.concatenate([
        _block_code(entry, b).apply(flat[b["start"]:b["stop"]]) for b in entry["blocks"]
    ])


def project_weights(flat: np.ndarray, entry: dict) -> np.ndarray:
    """Nearest vector (float64) with H_b w_b = 0 in every block: the trained-in constraint."""
    out = np.asarray(flat, dtype=np.float64).copy()
    for b in entry["blocks"]:
        out[b["start"]:b["stop"]] = _block_code(entry, b).project_null(out[b["start"]:b["stop"]])
    return out


# ----------------------------------------------------------------------------- adding codes
def add_weight_checks(
    model: onnx.ModelProto,
    tensor_names: list[str] | None = None,
    checks: int | None = None,
    fraction: float | None = None,
    family: str = "dct",
    seed: int = 0,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    parity_dtype: str = "float64",
) -> onnx.ModelProto:
    """A copy of the model whose chosen float32 initializers carry stored-parity weight codes."""
    if parity_dtype not in ("float32", "float64"):
        raise ValueError(f"parity_dtype must be float32 or float64, got {parity_dtype!r}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in out.graph.initializer}
    names = default_weight_tensors(out) if tensor_names is None else list(tensor_names)
    missing = [n for n in names if n not in inits]
    if missing:
        raise ValueError(f"no initializer named {missing}")
    entries = [e for e in read_weight_codes(out) if e["tensor"] not in names]
    np_dtype = np.float64 if parity_dtype == "float64" else np.float32
    for name in names:
        w = numpy_helper.to_array(inits[name])
        entry = make_entry(name, w, family=family, seed=seed, checks=checks, fraction=fraction,
                           block_size=block_size, parity_dtype=parity_dtype)
        parity = compute_parity(w.reshape(-1), entry).astype(np_dtype)
        tensor = numpy_helper.from_array(parity, entry["parity_tensor"])
        if entry["parity_tensor"] in inits:
            inits[entry["parity_tensor"]].CopyFrom(tensor)
        else:
            out.graph.initializer.append(tensor)
        entries.append(entry)
    write_weight_codes(out, entries)
    return out


# ----------------------------------------------------------------------------- checking
@dataclasses.dataclass
class TensorReport:
    """Scrub outcome for one protected tensor."""

    name: str
    n: int
    m: int
    status: str = "clean"
    blocks: int = 0
    flagged_blocks: int = 0
    corrected: int = 0
    erasures: int = 0
    uncorrectable_blocks: int = 0
    seconds: float = 0.0
    positions: list[int] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ScrubReport:
    """Scrub outcome for a model: overall status and one TensorReport per protected tensor."""

    status: str
    tensors: list[TensorReport]
    seconds: float

    def table(self) -> str:
        """A fixed-width per-tensor table."""
        head = f"{'tensor':<32} {'n':>8} {'m':>7} {'status':>13} {'flagged':>7} " \
               f"{'fixed':>6} {'erased':>6} {'bad':>4} {'sec':>7}"
        rows = [head, "-" * len(head)]
        for t in self.tensors:
            rows.append(f"{t.name[:32]:<32} {t.n:>8} {t.m:>7} {t.status:>13} {t.flagged_blocks:>7} "
                        f"{t.corrected:>6} {t.erasures:>6} {t.uncorrectable_blocks:>4} {t.seconds:>7.3f}")
        rows.append(f"overall: {self.status} ({self.seconds:.3f} s)")
        return "\n".join(rows)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"status": self.status, "seconds": self.seconds,
                "tensors": [dataclasses.asdict(t) for t in self.tensors]}


def check_tensor(
    flat: np.ndarray, entry: dict, parity: np.ndarray | None = None, **solver_options
) -> tuple[TensorReport, np.ndarray | None]:
    """Check a flattened float32 tensor block by block; returns (report, repaired copy or None).

    The repaired copy holds every block that was repaired; blocks that could not be repaired
    keep their (corrupted) values and make the report "uncorrectable".
    """
    start = time.perf_counter()
    flat = np.asarray(flat)
    if flat.size != entry["n"]:
        raise ValueError(f"tensor {entry['tensor']!r} has {flat.size} values, code expects {entry['n']}")
    if entry["mode"] == "parity" and parity is None:
        raise ValueError(f"tensor {entry['tensor']!r} needs its stored parity")
    report = TensorReport(entry["tensor"], entry["n"], entry["m"], blocks=len(entry["blocks"]))
    fixed = None
    offset = 0
    for b in entry["blocks"]:
        h = _block_code(entry, b)
        ref = None
        if entry["mode"] == "parity":
            ref = np.asarray(parity[offset:offset + h.m], dtype=np.float64)
            if ref.size != h.m:
                raise ValueError(f"parity of {entry['tensor']!r} is too short")
        offset += h.m
        tol = _decode.syndrome_tolerance(h, b["w_norm"], entry["mode"],
                                         entry.get("parity_dtype", "float64"))
        res = _decode.decode_block(h, flat[b["start"]:b["stop"]], ref, tol, b["w_absmax"],
                                   **solver_options)
        if res.status == "clean":
            continue
        report.flagged_blocks += 1
        report.erasures += res.erasures
        if res.status == "repaired":
            if fixed is None:
                fixed = flat.copy()
            fixed[b["start"]:b["stop"]] = res.corrected
            report.corrected += res.errors
            report.positions.extend(int(p) + b["start"] for p in res.positions)
        else:
            report.uncorrectable_blocks += 1
    if report.uncorrectable_blocks:
        report.status = "uncorrectable"
    elif report.flagged_blocks:
        report.status = "repaired"
    report.seconds = time.perf_counter() - start
    return report, fixed


def overall_status(reports: list[TensorReport]) -> str:
    """uncorrectable if any tensor is, else repaired if any is, else clean."""
    statuses = {r.status for r in reports}
    for s in ("uncorrectable", "repaired"):
        if s in statuses:
            return s
    return "clean"


def scrub_model(model: onnx.ModelProto, **solver_options) -> tuple[onnx.ModelProto, ScrubReport]:
    """Check every protected tensor and repair what can be repaired.

    Returns (model, report). A clean model is returned unchanged (identical serialisation);
    otherwise a copy with the repaired tensors replaced. Tensors (blocks) that are beyond repair
    are left as they were and the report status is "uncorrectable".
    """
    start = time.perf_counter()
    entries = read_weight_codes(model)
    inits = {t.name: t for t in model.graph.initializer}
    reports, repaired = [], {}
    for entry in entries:
        name = entry["tensor"]
        if name not in inits:
            raise ValueError(f"protected tensor {name!r} is missing from the model")
        w = numpy_helper.to_array(inits[name])
        if w.dtype != np.float32 or list(w.shape) != list(entry["shape"]):
            raise ValueError(f"tensor {name!r} does not match its code (dtype/shape)")
        parity = None
        if entry["mode"] == "parity":
            pname = entry.get("parity_tensor", name + PARITY_SUFFIX)
            if pname not in inits:
                raise ValueError(f"parity initializer {pname!r} is missing")
            parity = numpy_helper.to_array(inits[pname]).reshape(-1)
        report, fixed = check_tensor(w.reshape(-1), entry, parity, **solver_options)
        reports.append(report)
        if fixed is not None:
            repaired[name] = fixed.reshape(w.shape)
    if not repaired:
        return model, ScrubReport(overall_status(reports), reports, time.perf_counter() - start)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.name in repaired:
            t.CopyFrom(numpy_helper.from_array(repaired[t.name], t.name))
    return out, ScrubReport(overall_status(reports), reports, time.perf_counter() - start)
