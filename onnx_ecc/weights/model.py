"""Model-level weight codes: add stored-parity checks to ONNX initializers and scrub (check/repair) them.

Everything needed to regenerate the codes lives in ``model.metadata_props["onnx_ecc.weight_codes"]``
as JSON; in memory (``read_weight_codes``) each entry reads::

    {"tensor": "fc.weight", "mode": "parity" | "trained", "family": "dct", "seed": 0,
     "dtype": "float32", "shape": [10, 512], "layout": "row-major", "n": 5120, "m": 1024,
     "block_size": 8192, "parity_tensor": "fc.weight__ecc_weight_parity", "parity_dtype": "float32",
     "checks": "20%", "original_values": 5120, "layer_parity_values": 0,
     "blocks": [{"start": 0, "stop": 5120, "m": 1024, "stream": 0,
                 "w_norm": 1.83, "w_absmax": 0.0441}],
     "threshold": {...}}

Stored (version 2) as ``{"version": 2, "tensors": [...]}`` with each entry's blocks as columns,
``"blocks": {"m": [...], "w_norm": [...], "w_absmax": [...]}`` (bounds and streams follow from n
and block_size), in compact JSON: a few tens of bytes per block. Version 1 (one dict per block)
is still read.

A tensor is flattened row-major and split into contiguous blocks of at most ``block_size``
values; block b uses ``CheckMatrix(family, n_b, m_b, seed, stream=b)``. In "parity" mode the
block parities H_b w_b are concatenated in one initializer ``<tensor>__ecc_weight_parity`` that no
node consumes; in "trained" mode nothing is stored (H_b w_b = 0 by construction). ``w_norm``
(||w_b||_2) scales the rounding thresholds and ``w_absmax`` (max |w_b|) marks impossible values as
erasures (see ``decode``); both are rounded up to 8 significant digits, which keeps them bounds.
How many checks each block gets (a count per block, or a rate of the
tensor's memory that the layer code's parity rows count toward) is decided in ``sizing``.
"""

from __future__ import annotations

import dataclasses
import decimal
import functools
import json
import time

import numpy as np
import onnx
from onnx import numpy_helper

from . import decode as _decode
from . import sizing
from .check_matrices import FAMILIES, block_bounds, check_matrix

METADATA_KEY = "onnx_ecc.weight_codes"
PARITY_SUFFIX = "__ecc_weight_parity"
DEFAULT_BLOCK_SIZE = 8192
DEFAULT_PARITY_DTYPE = "float32"
MIN_SIZE = 64
METADATA_VERSION = 2  # 2: per-block values stored as columns (1: one dict per block; still read)
_BLOCK_COLUMNS = ("m", "w_norm", "w_absmax")
FRAMING_BYTES = 24  # protobuf tags, lengths, dims and type of one added initializer (upper estimate)
_WEIGHT_INPUTS = {"Gemm": (0, 1), "MatMul": (0, 1), "Conv": (1,), "ConvTranspose": (1,)}


# ----------------------------------------------------------------------------- metadata
def read_weight_codes(model: onnx.ModelProto) -> list[dict]:
    """The weight-code entries stored in the model metadata (empty list when none)."""
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            try:
                doc = json.loads(prop.value)
                return [_expand(e) if doc.get("version", 1) >= 2 else e for e in doc["tensors"]]
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"malformed {METADATA_KEY} metadata: {exc}") from exc
    return []


def write_weight_codes(model: onnx.ModelProto, entries: list[dict]) -> None:
    """Store the entries in the model metadata (in place), replacing any previous value."""
    value = json.dumps({"version": METADATA_VERSION, "tensors": [_compact(e) for e in entries]},
                       sort_keys=True, separators=(",", ":"))
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            prop.value = value
            return
    model.metadata_props.add(key=METADATA_KEY, value=value)


def _compact(entry: dict) -> dict:
    """The stored form of an entry: per-block values as columns; bounds and streams are implied."""
    blocks = entry["blocks"]
    implied = [(lo, hi) for lo, hi in block_bounds(entry["n"], entry["block_size"])]
    if [(b["start"], b["stop"]) for b in blocks] != implied or [b["stream"] for b in blocks] != list(range(len(blocks))):
        raise ValueError(f"tensor {entry['tensor']!r}: blocks are not the standard split of {entry['n']} values")
    return dict(entry, blocks={key: [b[key] for b in blocks] for key in _BLOCK_COLUMNS})


def _expand(entry: dict) -> dict:
    """The in-memory form of a stored entry: one dict per block (see _compact)."""
    columns = entry["blocks"]
    bounds = block_bounds(entry["n"], entry["block_size"])
    blocks = [dict({key: columns[key][b] for key in _BLOCK_COLUMNS}, start=lo, stop=hi, stream=b)
              for b, (lo, hi) in enumerate(bounds)]
    return dict(entry, blocks=blocks)


def entry_bytes(entry: dict) -> int:
    """Bytes an entry adds to the model file besides its checks: metadata and initializer framing."""
    stored = json.dumps(_compact(entry), sort_keys=True, separators=(",", ":"))
    separator = 1  # the comma between entries
    return len(stored) + separator + (len(entry["parity_tensor"]) + FRAMING_BYTES if "parity_tensor" in entry else 0)


def _round_up(x: float, digits: int = 8) -> float:
    """``x`` rounded up to ``digits`` significant digits: still a bound on what it bounds, in fewer bytes."""
    d = decimal.Decimal(x)
    if d == 0:
        return 0.0
    quantum = decimal.Decimal(1).scaleb(d.adjusted() - digits + 1)
    return float(d.quantize(quantum, rounding=decimal.ROUND_CEILING))  # rounding is monotonic: >= x


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
    parity_dtype: str = DEFAULT_PARITY_DTYPE,
    rows: sizing.LayerRows | None = None,
    overhead: float = 0.0,
) -> dict:
    """The metadata entry describing a code for one float32 tensor (weights as stored).

    ``checks`` is a count per block; otherwise ``fraction`` (default ``DEFAULT_FRACTION``) is the
    rate of the tensor's memory, with the layer code's parity values of ``rows`` and ``overhead``
    bytes (its share of the codes' bookkeeping) counted toward it.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")
    _decode.parity_rtol(mode, parity_dtype)  # validates both
    w = np.asarray(weights)
    if w.dtype != np.float32:
        raise ValueError(f"tensor {name!r} is {w.dtype}, only float32 weights are supported")
    flat = w.reshape(-1).astype(np.float64)
    if not np.all(np.isfinite(flat)):
        raise ValueError(f"tensor {name!r} has non-finite values; cannot protect it")
    rows = sizing.LayerRows(flat.size, 0) if rows is None else rows
    bounds = block_bounds(flat.size, block_size)
    check_dtype = parity_dtype if mode == "parity" else w.dtype  # trained-in checks store nothing
    sized = functools.partial(sizing.block_checks, bounds, checks, fraction, rows, w.dtype.itemsize,
                              np.dtype(check_dtype).itemsize)
    header = {
        "tensor": name, "mode": mode, "family": family, "seed": int(seed), "dtype": "float32",
        "shape": list(w.shape), "layout": "row-major", "n": int(flat.size), "block_size": int(block_size),
        "checks": sizing.describe(checks if checks is not None else sizing.rate_of(fraction)),
        "original_values": int(rows.original_values), "layer_parity_values": int(rows.parity_values),
        "threshold": _threshold_doc(mode, parity_dtype),
    }
    if mode == "parity":
        header.update(parity_tensor=name + PARITY_SUFFIX, parity_dtype=parity_dtype)
    return _with_blocks(header, flat, bounds, sized(overhead))


def _threshold_doc(mode: str, parity_dtype: str) -> dict:
    """The detection rule, written into the entry so that a reader can check it."""
    rule = {
        "parity": f"t_i = rtol ||H_i||_2 ||w_block||_2, rtol from parity dtype {parity_dtype}",
        "trained": "t_i = 2^-24 ||H_i||_2 ||w_block||_2 (float32 rounding, Cauchy-Schwarz)",
    }
    return {"rule": rule[mode], "verify_factor": _decode.VERIFY_FACTOR, "rtol_float64": _decode.RTOL_FLOAT64}


def _with_blocks(header: dict, flat: np.ndarray, bounds: list[tuple[int, int]], ms: list[int]) -> dict:
    """The entry: header plus one record per block (checks, norm and max |w| rounded up)."""
    blocks = [{"start": lo, "stop": hi, "stream": b, "m": int(m),
               "w_norm": _round_up(float(np.linalg.norm(flat[lo:hi]))),
               "w_absmax": _round_up(float(np.abs(flat[lo:hi]).max()))}
              for b, ((lo, hi), m) in enumerate(zip(bounds, ms))]
    return dict(header, m=int(sum(ms)), blocks=blocks)


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


def repair_tolerance(entry: dict, parity: np.ndarray | None, positions: np.ndarray,
                     repaired: np.ndarray) -> np.ndarray:
    """How far each scrubbed value at ``positions`` may lie from the original by rounding alone.

    Per block, the larger of ``decode.repair_bound`` over the block's positions (the checks'
    rounding through the least-squares fit) and ``decode.unseen_change``: the checks' resolution,
    a change they cannot see (left as stored, or traded by the fit for changes as small
    elsewhere); plus ``KEEP_ULPS`` eps of the value (the decoder keeps a stored value that a fit
    moves by less, and the repaired value is rounded to float32). ``positions`` must hold every
    corrupted and every changed position; ``repaired`` is the scrubbed flat tensor.
    """
    if entry["mode"] != "parity":
        raise ValueError(f"tensor {entry['tensor']!r}: repair_tolerance is for stored-parity codes")
    positions = np.asarray(positions, np.int64)
    keep = _decode.KEEP_ULPS * _decode.EPS32
    allowed = keep * np.abs(repaired[positions].astype(np.float64)) / (1.0 - keep)
    offset = 0
    for b in entry["blocks"]:
        inside = (positions >= b["start"]) & (positions < b["stop"])
        if inside.any():
            h, local = _block_code(entry, b), positions[inside] - b["start"]
            check_norm = float(np.linalg.norm(np.asarray(parity[offset:offset + h.m], np.float64)))
            fit = _decode.repair_bound(h, local, check_norm, b["w_norm"], entry["parity_dtype"])
            tol = _decode.syndrome_tolerance(h, b["w_norm"], "parity", entry["parity_dtype"])
            allowed[inside] += np.maximum(fit, _decode.unseen_change(h, local, tol))
        offset += b["m"]
    return allowed


# ----------------------------------------------------------------------------- adding codes
def add_weight_checks(
    model: onnx.ModelProto,
    tensor_names: list[str] | None = None,
    checks: int | float | str | None = None,
    fraction: float | None = None,
    family: str = "dct",
    seed: int = 0,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    parity_dtype: str = DEFAULT_PARITY_DTYPE,
    layer_rows: dict[str, sizing.LayerRows] | None = None,
) -> onnx.ModelProto:
    """A copy of the model whose chosen float32 initializers carry stored-parity weight codes.

    ``checks``: a count per block (1000, "1000") or a rate of each tensor's memory (0.05, "5%"),
    see ``sizing``; ``fraction`` is the older spelling of a rate. ``layer_rows`` gives, per tensor,
    the layer code's parity values that count toward a rate (``sizing.layer_rows``).
    """
    count, fraction = sizing.count_or_rate(checks, fraction)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in out.graph.initializer}
    names = default_weight_tensors(out) if tensor_names is None else list(tensor_names)
    missing = [n for n in names if n not in inits]
    if missing:
        raise ValueError(f"no initializer named {missing}")
    weights = {name: numpy_helper.to_array(inits[name]) for name in names}
    rows = {name: (layer_rows or {}).get(name) or sizing.LayerRows(w.size, 0) for name, w in weights.items()}

    def entry_of(name: str, overhead: float = 0.0) -> dict:
        return make_entry(name, weights[name], family=family, seed=seed, checks=count, fraction=fraction,
                          block_size=block_size, parity_dtype=parity_dtype, rows=rows[name], overhead=overhead)

    new = [entry_of(name) for name in names]
    if count is None:  # a rate: the codes' bookkeeping is paid from it, by each tensor's share of the bytes
        share = sizing.bookkeeping_shares([entry_bytes(e) for e in new], [rows[n].original_values for n in names])
        new = [entry_of(name, cost) for name, cost in zip(names, share)]
    for entry in new:
        parity = compute_parity(weights[entry["tensor"]].reshape(-1), entry).astype(parity_dtype)
        tensor = numpy_helper.from_array(parity, entry["parity_tensor"])
        if entry["parity_tensor"] in inits:
            inits[entry["parity_tensor"]].CopyFrom(tensor)
        else:
            out.graph.initializer.append(tensor)
    write_weight_codes(out, [e for e in read_weight_codes(out) if e["tensor"] not in names] + new)
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
    failing: list[int] = dataclasses.field(default_factory=list)   # indices of the blocks beyond repair


_TENSOR_COLUMNS = (("tensor", -32), ("n", 8), ("m", 7), ("status", 13), ("flagged", 7), ("fixed", 6),
                   ("erased", 6), ("bad", 4), ("sec", 7))
_LAYER_COLUMNS = (("layer", -40), ("blocks", 6), ("status", 13), ("flagged", 7), ("rows", 5), ("values", 7),
                  ("bad", 4), ("sec", 7))


def _fixed_width(title: str | None, columns, rows) -> list[str]:
    """Lines of a table: ``title``, header and rule (when a title is given), then ``rows``; a
    column's width is negative for left-aligned text."""
    def line(cells):
        return " ".join(f"{str(c):<{-w}}" if w < 0 else f"{str(c):>{w}}" for c, (_, w) in zip(cells, columns))

    head = line([name for name, _ in columns])
    return ([title, head, "-" * len(head)] if title else []) + [line(r) for r in rows]


@dataclasses.dataclass
class ScrubReport:
    """Scrub outcome for a model: overall status, one TensorReport per tensor with a weight code,
    one ``layer_code.LayerReport`` per layer checked against its parity rows, and the tensors
    beyond repair (everything else was repaired, also when the status is "uncorrectable")."""

    status: str
    tensors: list[TensorReport]
    seconds: float
    layers: list = dataclasses.field(default_factory=list)
    beyond_repair: list[str] = dataclasses.field(default_factory=list)
    checks_reencoded: int = 0   # weight-code checks found wrong and re-encoded from verified weights
    rounds: int = 1             # turns the two codes took

    def table(self) -> str:
        """Fixed-width tables: per tensor (weight codes), per layer (layer code), then the verdict."""
        rows = []
        if self.tensors:
            rows += _fixed_width("weight codes:", _TENSOR_COLUMNS, [
                (t.name[:32], t.n, t.m, t.status, t.flagged_blocks, t.corrected, t.erasures,
                 t.uncorrectable_blocks, f"{t.seconds:.3f}") for t in self.tensors])
        if self.layers:
            for r in self.layers:
                rows += _fixed_width("layer code (parity rows):" if r is self.layers[0] else None, _LAYER_COLUMNS, [
                    (r.name[-40:], r.blocks, r.status, r.flagged_blocks, len(r.rebuilt_units) + r.rebuilt_parity,
                     r.values_fixed, r.uncorrectable_blocks, f"{r.seconds:.3f}")])
                if r.rebuilt_units:
                    rows.append(f"  rebuilt units: {', '.join(map(str, r.rebuilt_units))}")
        if self.checks_reencoded:
            rows.append(f"{self.checks_reencoded} weight-code check(s) found wrong, re-encoded from verified weights")
        if self.beyond_repair:
            rows.append(f"beyond repair: {', '.join(self.beyond_repair)}")
        rows.append(f"overall: {self.status} ({self.seconds:.3f} s)")
        return "\n".join(rows)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"status": self.status, "seconds": self.seconds, "rounds": self.rounds,
                "tensors": [dataclasses.asdict(t) for t in self.tensors],
                "layers": [dataclasses.asdict(r) for r in self.layers],
                "beyond_repair": list(self.beyond_repair), "checks_reencoded": self.checks_reencoded}


def check_tensor(
    flat: np.ndarray, entry: dict, parity: np.ndarray | None = None, only=None, **solver_options
) -> tuple[TensorReport, np.ndarray | None]:
    """Check a flattened float32 tensor block by block; returns (report, repaired copy or None).

    The repaired copy holds every block that was repaired; blocks that could not be repaired
    keep their (corrupted) values and make the report "uncorrectable" (``report.failing`` lists
    them). ``only``: the indices of the blocks to check (default all); the others are skipped.
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
    for index, b in enumerate(entry["blocks"]):
        h = _block_code(entry, b)
        if only is not None and index not in only:
            offset += h.m
            continue
        ref = None
        if entry["mode"] == "parity":
            ref = np.asarray(parity[offset:offset + h.m], dtype=np.float64)
            if ref.size != h.m:
                raise ValueError(f"parity of {entry['tensor']!r} is too short")
        offset += h.m
        tol = _decode.syndrome_tolerance(h, b["w_norm"], entry["mode"],
                                         entry.get("parity_dtype", "float64"))
        res = _decode.decode_weight_block(h, flat[b["start"]:b["stop"]], ref, tol, b["w_absmax"],
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
            report.failing.append(index)
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
