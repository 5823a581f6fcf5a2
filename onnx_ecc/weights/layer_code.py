"""Repair stored weights from the layer code: a protected layer's parity rows are P = G W, row by row.

``transform`` gives each block of ``b`` output channels ``R`` parity channels whose weights (and
bias) are fixed combinations of the block's own: stacked, the block's rows ``V = [W_b; P]``
(``b + R`` rows; one column per input weight, plus one for the bias) satisfy ``H V = 0`` with
``H = [G, -I]``, up to the rounding of P to the weights' type. Each column of V is a codeword of
the channel code the Decode op uses on every output vector, so stored weights are checked and
repaired column by column:

* the syndrome ``S = H V`` is compared, per check and column, with the rounding of P:
  ``VERIFY_FACTOR * u * sum_j |H_qj| |V_jk|`` (u the unit roundoff of the weights' type; the stored
  data rows are exact and P was computed in float64 and rounded once), so a clean layer is never
  flagged;
* known positions (erasures) are the layer's recorded erasures (``transform.record.read_erasures``)
  and the block's dead-looking rows (no finite non-zero value: a unit stuck at zero, pruned or
  overwritten with NaN), plus, per column, any non-finite value or one beyond the layer's
  recorded range (``record_ranges``: a flipped high exponent bit). Up to R of them are re-solved
  exactly by least squares on their columns of H, verified with the checks left over;
* beyond them each column locates up to floor((R - e)/2) wrong values itself (the smallest set
  that leaves every remaining check within its rounding, as the Decode op does), which repairs
  scattered faults; up to R - 1 - e when exactly one set comes near explaining the column
  (``UNIQUE_MARGIN``: no guarantee beyond floor((R - e)/2), so it must be unique);
* a corrupted row shows in many columns at the same position: a position located in a quarter
  of the flagged columns (``ROW_SHARE``) is tried as an erasure of the whole block, and where
  columns still fail, sets of up to R - 1 - e rows whose columns of H span the syndromes of half
  the failed columns (``SPAN_SHARE``; at that rank the set is unique) are searched; a set is kept
  only when it leaves fewer columns failing;
* a repaired column gets its parity re-encoded from the repaired data rows, so that the written
  layer is as consistent as a freshly transformed one (the repair is within the checks' rounding
  of the original, a few ulps, not bit-exact).

A block whose failing columns remain is "uncorrectable" and those columns are left as stored.
``LayerView`` finds each protected layer's rows wherever the transform put them: in one
initializer with the parity rows appended (inline strategy), or the data rows in the layer's own
initializer and the parity rows in ``<layer>__ecc_parity_w`` / ``_b`` (rerun strategy).
``prune_units`` zeroes chosen units and records them as erasures.
"""

from __future__ import annotations

import dataclasses
import itertools
import time

import numpy as np
import onnx
from onnx import numpy_helper

from onnx_ecc.codes import generator
from onnx_ecc.transform.record import (
    channel_block,
    layer_layout,
    read_erasures,
    read_protection,
    separate_parity_name,
    unit_channel,
    write_erasures,
)

VERIFY_FACTOR = 4.0
UNIT_ROUNDOFF = {np.dtype(np.float32): 2.0 ** -24, np.dtype(np.float16): 2.0 ** -11}
SMALLEST = {np.dtype(np.float32): 2.0 ** -149, np.dtype(np.float16): 2.0 ** -24}  # subnormal steps
LAYER_OPS = ("Gemm", "MatMul", "Conv")
MAX_CANDIDATE_ROWS = 4   # positions located in most columns tried as erasures of the whole block
ROW_SHARE = 0.25         # ... when located in at least this share of the flagged columns
SPAN_SHARE = 0.5         # a set of rows found from syndromes must explain this share of the failed columns
MAX_SUBSPACE_SETS = 20000  # row sets tried by the subspace search of one block
UNIQUE_MARGIN = 10.0     # beyond floor((R - e)/2) errors, no other set may come within 10x the noise
RANGE_SLACK = 1e-6
FLOAT64_ROUNDING = 2.0 ** -45   # relative rounding of a residual computed in float64 (a few hundred ulps)       # a rebuilt value may exceed the recorded range by its rounding


# ----------------------------------------------------------------------------- where the rows are
@dataclasses.dataclass(frozen=True)
class Source:
    """Rows of a layer held by one initializer: index ``i`` along ``axis`` is channel ``channels[i]``."""

    tensor: str
    axis: int
    channels: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class LayerView:
    """A protected layer's stored rows in its decoded-output channel order (data and parity per group)."""

    layer: dict
    weights: tuple[Source, ...]
    bias: tuple[Source, ...]   # empty: no per-channel bias
    dtype: np.dtype

    @property
    def name(self) -> str:
        return self.layer["name"]

    @property
    def layout(self):
        return layer_layout(self.layer)

    @property
    def tensors(self) -> list[str]:
        return [s.tensor for s in self.weights + self.bias]

    def columns(self, arrays: dict[str, np.ndarray]) -> tuple[int, int]:
        """Columns of the weight part and of the bias part."""
        def width(sources):
            return int(arrays[sources[0].tensor].size // len(sources[0].channels)) if sources else 0
        return width(self.weights), width(self.bias)

    def gather(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """The rows [channels, weight columns + bias columns] as float64 (the stored values)."""
        kw, kb = self.columns(arrays)
        out = np.empty((self.layout.total_channels, kw + kb))
        for sources, cols in ((self.weights, slice(0, kw)), (self.bias, slice(kw, kw + kb))):
            for s in sources:
                out[list(s.channels), cols] = _rows(arrays[s.tensor], s.axis)
        return out

    def scatter(self, arrays: dict[str, np.ndarray], rows: np.ndarray, changed: np.ndarray) -> list[str]:
        """Write the entries ``changed`` (mask like ``rows``) of ``rows`` into ``arrays``, in place (cast
        to each array's type); returns the tensors written."""
        kw, kb = self.columns(arrays)
        written = []
        for sources, cols in ((self.weights, slice(0, kw)), (self.bias, slice(kw, kw + kb))):
            for s in sources:
                mask = changed[list(s.channels), cols]
                if not mask.any():
                    continue
                a = arrays[s.tensor]
                moved = np.moveaxis(a, s.axis, 0)           # a view: writes go to ``a``
                flat_rows = moved.reshape(moved.shape[0], -1) if moved.flags.c_contiguous else None
                new = rows[list(s.channels), cols].astype(a.dtype)
                if flat_rows is not None:
                    flat_rows[mask] = new[mask]
                else:
                    block = moved.reshape(moved.shape[0], -1).copy()
                    block[mask] = new[mask]
                    moved[...] = block.reshape(moved.shape)
                written.append(s.tensor)
        return written

    def blocks(self):
        """(group, block, channels of its b data and R parity rows, generator G) for every block."""
        layout = self.layout
        tpg, dpg = layout.total_channels // layout.groups, layout.data_per_group
        for g in range(layout.groups):
            start = 0
            for k, b in enumerate(layout.block_sizes):
                data = np.arange(g * tpg + start, g * tpg + start + b)
                parity = g * tpg + dpg + k * layout.parity + np.arange(layout.parity)
                yield g, k, np.concatenate([data, parity]), generator(b, layout.parity)
                start += b

    def limits(self, arrays: dict[str, np.ndarray]) -> np.ndarray | None:
        """Per channel and column, the largest magnitude a stored value can have (the layer's
        recorded ranges, data and parity rows apart; a larger one is known to be wrong), or None
        for a model transformed before ranges were recorded."""
        ranges = self.layer.get("ranges")
        if not ranges:
            return None
        kw, kb = self.columns(arrays)
        parity = np.ones(self.layout.total_channels, bool)
        parity[[unit_channel(self.layer, i) for i in range(self.layout.data_channels)]] = False
        out = np.empty((self.layout.total_channels, kw + kb))
        for part, cols in (("weights", slice(0, kw)), ("bias", slice(kw, kw + kb))):
            if part in ranges:
                data_max, parity_max = ranges[part]
                out[:, cols] = np.where(parity, parity_max, data_max)[:, None] * (1 + RANGE_SLACK)
        return out

    def unit_of(self, channel: int) -> int | None:
        """The original data unit of a channel (None for a parity channel)."""
        layout = self.layout
        tpg, dpg = layout.total_channels // layout.groups, layout.data_per_group
        g, r = divmod(int(channel), tpg)
        return g * dpg + r if r < dpg else None


def _rows(a: np.ndarray, axis: int) -> np.ndarray:
    moved = np.moveaxis(np.asarray(a), axis, 0)
    return moved.reshape(moved.shape[0], -1).astype(np.float64)


def output_axis(node: onnx.NodeProto, rank: int, position: int) -> int:
    """The output-channel axis of a Gemm / MatMul / Conv's weight (position 1) or bias (position 2)."""
    if node.op_type == "Conv":
        return 0
    if position == 2 or node.op_type == "MatMul":
        return rank - 1
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    return 0 if trans_b else 1


def _sources(node, position: int, inits: dict, layer: dict) -> tuple[Source, ...] | None:
    """The rows of the layer's weight (position 1) or bias (2): one augmented initializer, or the
    data rows and the separate parity initializer; None when they cannot be found."""
    if len(node.input) <= position or node.input[position] not in inits:
        return None
    layout = layer_layout(layer)
    t = inits[node.input[position]]
    dims = list(t.dims)
    if not dims:
        return None
    axis = output_axis(node, len(dims), position)
    data = tuple(unit_channel(layer, i) for i in range(layout.data_channels))
    parity = tuple(sorted(set(range(layout.total_channels)) - set(data)))
    if dims[axis] == layout.total_channels:
        return (Source(t.name, axis, tuple(range(layout.total_channels))),)
    if dims[axis] != layout.data_channels:
        return None
    pname = separate_parity_name(layer["name"], "w" if position == 1 else "b")
    if pname not in inits:
        return None
    p = inits[pname]
    pdims = list(p.dims)
    paxis = 0 if node.op_type == "Conv" or position == 2 else len(pdims) - 1
    if not pdims or pdims[paxis] != len(parity) or np.prod(pdims) // len(parity) != np.prod(dims) // dims[axis]:
        return None
    return Source(t.name, axis, data), Source(p.name, paxis, parity)


def layer_views(model: onnx.ModelProto) -> list[LayerView]:
    """Every protected layer whose stored rows carry the layer code (Gemm / MatMul / Conv with a
    constant float weight; not depthwise checks or products of two activations)."""
    record = read_protection(model)
    if record is None:
        return []
    inits = {t.name: t for t in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    views = []
    for layer in record["protected"]:
        node = nodes.get(layer["name"])
        if layer.get("kind") != "code" or node is None or node.op_type not in LAYER_OPS:
            continue
        weights = _sources(node, 1, inits, layer)
        if weights is None:
            continue
        bias = _sources(node, 2, inits, layer) or ()
        types = {onnx.helper.tensor_dtype_to_np_dtype(inits[s.tensor].data_type) for s in weights + bias}
        if len(types) != 1 or next(iter(types)) not in UNIT_ROUNDOFF:
            continue
        views.append(LayerView(layer, weights, bias, next(iter(types))))
    return views


def record_ranges(model: onnx.ModelProto) -> None:
    """Store, in place, each code layer's largest |value| of its data and parity rows (weights and
    bias apart) in its protection record entry as ``"ranges"``, rounded up: a stored value beyond
    its range is known to be wrong (a flipped high exponent bit), an erasure for ``repair_block``."""
    from onnx_ecc.transform.record import write_protection

    from .model import _round_up

    record = read_protection(model)
    views = {v.name: v for v in layer_views(model)}
    inits = {t.name: t for t in model.graph.initializer}
    for layer in record["protected"] if record else []:
        view = views.get(layer["name"])
        if view is None:
            continue
        data = {unit_channel(layer, i) for i in range(view.layout.data_channels)}
        ranges = {}
        for part, sources in (("weights", view.weights), ("bias", view.bias)):
            if not sources:
                continue
            top = [0.0, 0.0]
            for s in sources:
                rows = np.abs(_rows(numpy_helper.to_array(inits[s.tensor]), s.axis)).max(axis=1)
                for c, v in zip(s.channels, rows):
                    top[c not in data] = max(top[c not in data], float(v))
            ranges[part] = [_round_up(v) for v in top]
        layer["ranges"] = ranges
    if record:
        write_protection(model, record)


# ----------------------------------------------------------------------------- one block
@dataclasses.dataclass
class BlockOutcome:
    """What repairing one block found: status "clean", "repaired" or "uncorrectable"."""

    status: str = "clean"
    rows: list[int] = dataclasses.field(default_factory=list)   # rows rebuilt (changed in most columns)
    changed: np.ndarray | None = None                           # mask [b + R, K] of values written
    failed_columns: list[int] = dataclasses.field(default_factory=list)
    fixes: int = 0                                              # values repaired outside those rows
    reason: str = ""


def check_matrix(g: np.ndarray) -> np.ndarray:
    """H = [G, -I] of a block's generator."""
    return np.concatenate([g, -np.eye(g.shape[0])], axis=1)


def flagged_columns(h: np.ndarray, values: np.ndarray, u: float, tiny: float,
                    limit: np.ndarray | None = None) -> np.ndarray:
    """Columns whose syndrome exceeds the rounding of the parity (or that hold a non-finite value,
    or one beyond ``limit``)."""
    finite = np.isfinite(values)
    if limit is not None:
        with np.errstate(invalid="ignore"):
            finite &= np.abs(values) <= limit
    v = np.where(finite, values, 0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        s = h @ v
        t = VERIFY_FACTOR * (u * (np.abs(h) @ np.abs(v)) + tiny)
        return ~finite.all(axis=0) | ~np.all(np.abs(s) <= t, axis=0)


class _Columns:
    """Per-column decoding of one block: each column a codeword [data; parity] of H = [G, -I]."""

    def __init__(self, h: np.ndarray, values: np.ndarray, u: float, tiny: float, limit: np.ndarray | None = None):
        self.h, self.u, self.tiny = h, u, tiny
        self.r, self.n = h.shape
        self.finite = np.isfinite(values)   # "possible": finite and within the recorded range
        if limit is not None:
            with np.errstate(invalid="ignore"):
                self.finite &= np.abs(values) <= limit
        self.v = np.where(self.finite, values, 0.0)
        self.absv = np.abs(self.v)
        self.absh = np.abs(h)

    def solve(self, unknown: list[int], cols: np.ndarray):
        """Least squares of the ``unknown`` positions of columns ``cols`` from the checks.

        Returns (values [|U|, c], passes [c], normalised residual [c], keep bound [|U|, c]): a
        column passes when every check is met within the rounding the fit leaves of it."""
        known = np.setdiff1d(np.arange(self.n), unknown)
        a = self.h[:, unknown]
        with np.errstate(over="ignore", invalid="ignore"):
            rhs = -(self.h[:, known] @ self.v[np.ix_(known, cols)])
            pinv = np.linalg.pinv(a) if unknown else np.zeros((0, self.r))
            z = pinv @ rhs
            res = rhs - a @ z
            t = self.u * (self.absh[:, known] @ self.absv[np.ix_(known, cols)] + np.abs(a) @ np.abs(z)) + self.tiny
            t[[q for q in range(self.r) if self.n - self.r + q in unknown]] = 0.0  # checks used up
            perp = np.abs(np.eye(self.r) - a @ pinv)
            # the fit's rounding, and the float64 rounding of the residual itself (cond(A) times it)
            sv = np.linalg.svd(a, compute_uv=False) if unknown else np.ones(1)
            cond = float(sv[0] / sv[-1]) if sv[-1] > 0 else np.inf
            allowed = VERIFY_FACTOR * (perp @ t) + FLOAT64_ROUNDING * max(cond, 1.0) * (
                np.abs(rhs) + np.abs(a) @ np.abs(z)) + self.tiny
            passes = np.all(np.abs(res) <= allowed, axis=0) & np.all(np.isfinite(z), axis=0)
            norm = np.sum((res / allowed) ** 2, axis=0)
            keep = VERIFY_FACTOR * (np.abs(pinv) @ t) + self.tiny
        return z, passes, np.where(passes, norm, np.inf), keep

    def decode(self, rows: list[int], cols: np.ndarray):
        """Decode columns ``cols`` with ``rows`` (and each column's non-finite values) erased.

        Returns (unknown positions per column or None where it fails, solved values per column)."""
        found: dict[int, tuple[list[int], np.ndarray, np.ndarray]] = {}
        cols = np.asarray(cols, np.int64)
        whole = self.finite[:, cols].all(axis=0)
        patterns: dict[tuple[int, ...], list[int]] = {(): [int(k) for k in cols[whole]]}
        for k in cols[~whole]:
            extra = tuple(int(j) for j in np.flatnonzero(~self.finite[:, k]) if j not in rows)
            patterns.setdefault(extra, []).append(int(k))
        for extra, members in patterns.items():
            erased = sorted(set(rows) | set(extra))
            if len(erased) > self.r or not members:
                continue
            pending = np.array(members)
            free = [j for j in range(self.n) if j not in erased]
            for t in range(self.r - len(erased)):
                if not len(pending):
                    break
                guaranteed = 2 * t <= self.r - len(erased)
                best = np.full(len(pending), np.inf)
                near = np.zeros(len(pending), np.int64)
                choice: list[tuple | None] = [None] * len(pending)
                for more in itertools.combinations(free, t):
                    unknown = sorted(erased + list(more))
                    z, passes, norm, keep = self.solve(unknown, pending)
                    near += norm < UNIQUE_MARGIN ** 2
                    for i in np.flatnonzero(passes & (norm < best)):
                        best[i] = norm[i]
                        choice[i] = (unknown, z[:, i], keep[:, i])
                # within floor((R - e)/2) the smallest set is unique (the code's distance); beyond
                # it, a set is taken only when no other comes near explaining the column
                done = np.isfinite(best) & (guaranteed | (near == 1))
                for i in np.flatnonzero(done):
                    found[int(pending[i])] = choice[i]
                pending = pending[~done]
            if len(erased) == self.r:  # no check left over: the erasures alone, solved exactly
                z, passes, _, keep = self.solve(erased, pending)
                for i in np.flatnonzero(passes):
                    found[int(pending[i])] = (erased, z[:, i], keep[:, i])
        return found


def repair_block(values: np.ndarray, g: np.ndarray, dtype, known: list[int] = (),
                 limit: np.ndarray | None = None) -> tuple[np.ndarray, BlockOutcome]:
    """Check and repair one block's stored rows ``values`` [b + R, K] (data rows, then parity rows).

    ``known``: positions known to be wrong (recorded erasures); ``limit`` (like ``values``): the
    largest magnitude each value can have, beyond which it is an erasure. Returns the repaired
    rows (float64, already rounded to ``dtype``) and the outcome; failing columns are left as
    they are.
    """
    dtype = np.dtype(dtype)
    u, tiny = UNIT_ROUNDOFF[dtype], SMALLEST[dtype]
    h = check_matrix(g)
    r, n = h.shape
    flagged = flagged_columns(h, values, u, tiny, limit)
    if not flagged.any():
        return values, BlockOutcome()
    cols = _Columns(h, values, u, tiny, limit)
    dead = np.flatnonzero(~np.any(cols.finite & (values != 0.0), axis=1))
    rows = sorted({int(j) for j in known} | {int(j) for j in dead})
    if len(rows) > r:
        return values, BlockOutcome("uncorrectable", rows, None, np.flatnonzero(flagged).tolist(),
                                    reason=f"{len(rows)} known erasures, more than the {r} checks")
    everything = np.arange(values.shape[1])

    def attempt(rows):
        todo = everything if rows else np.flatnonzero(flagged)
        found = cols.decode(rows, todo)
        return found, [int(k) for k in todo if int(k) not in found]

    found, failed = attempt(rows)
    if failed:
        rows, found, failed = _rows_by_consensus(cols, rows, found, failed, attempt)
    fixed = values.copy()
    changed = np.zeros(values.shape, bool)
    fixes = 0
    for k, (unknown, z, keep) in found.items():
        old = values[unknown, k]
        with np.errstate(invalid="ignore"):
            stays = cols.finite[unknown, k] & (np.abs(z - old) <= keep + u * np.abs(old))
        if stays.all():
            continue
        fixed[unknown, k] = np.where(stays, old, z).astype(dtype)
        fixed[n - r:, k] = (g @ fixed[:n - r, k]).astype(dtype)   # the repaired column's parity, re-encoded
        changed[:, k] = (fixed[:, k] != values[:, k]) | np.isnan(values[:, k])
        fixes += sum(1 for j, s in zip(unknown, stays) if not s)
    status = "uncorrectable" if failed else ("repaired" if changed.any() else "clean")
    solved_rows = [j for j in range(n) if 2 * changed[j].sum() > changed.shape[1]]   # rebuilt as a whole
    fixes -= int(sum(changed[j].sum() for j in solved_rows))
    return fixed, BlockOutcome(status, solved_rows, changed, failed, fixes,
                               reason=f"{len(failed)} column(s) beyond the code's power" if failed else "")


def _rows_by_consensus(cols: _Columns, rows, found, failed, attempt):
    """Whole wrong rows found from many columns: a row located in a large share of the columns is
    tried as an erasure of the block; then sets of rows whose columns of H span the syndromes of
    most failed columns. Either is kept only when it leaves fewer columns failing."""
    counts: dict[int, int] = {}
    for unknown, _, _ in found.values():
        for j in unknown:
            if j not in rows:
                counts[j] = counts.get(j, 0) + 1
    least = max(2, ROW_SHARE * (len(found) + len(failed)))
    for j, c in sorted(counts.items(), key=lambda kv: -kv[1])[:MAX_CANDIDATE_ROWS]:
        if c < least or len(rows) + 1 > cols.r - 1 or not failed:
            break
        trial = sorted(rows + [j])
        found2, failed2 = attempt(trial)
        if len(failed2) < len(failed):
            rows, found, failed = trial, found2, failed2
    free = [j for j in range(cols.n) if j not in rows]
    for size in range(2, cols.r - len(rows)):
        if not failed:
            break
        target = np.array([k for k in failed if cols.finite[:, k].all()])
        if len(target) < max(size, 2):
            break
        best, best_count = None, max(1, int(np.ceil(SPAN_SHARE * len(target)))) - 1
        for tried, extra in enumerate(itertools.combinations(free, size)):
            if tried >= MAX_SUBSPACE_SETS:
                break
            _, passes, _, _ = cols.solve(sorted(rows + list(extra)), target)
            if passes.sum() > best_count and _spans(cols, rows, target[passes], size):
                best, best_count = extra, int(passes.sum())
        if best is None:
            continue
        trial = sorted(rows + list(best))
        found2, failed2 = attempt(trial)
        if len(failed2) < len(failed):
            rows, found, failed = trial, found2, failed2
    return rows, found, failed


def _spans(cols: _Columns, rows: list[int], members: np.ndarray, size: int) -> bool:
    """True when the syndromes of columns ``members``, less what the erased ``rows`` explain, span
    ``size`` dimensions: then the set of ``size`` more rows whose columns of H span them is unique."""
    if len(members) < size:
        return False
    s = cols.h @ cols.v[:, members]
    if rows:
        a = cols.h[:, rows]
        s = s - a @ (np.linalg.pinv(a) @ s)
    s = s / np.maximum(np.linalg.norm(s, axis=0), 1e-300)
    sv = np.linalg.svd(s, compute_uv=False)
    return bool(sv[size - 1] > 1e-3 * sv[0])


# ----------------------------------------------------------------------------- one layer
@dataclasses.dataclass
class LayerReport:
    """Outcome of checking one protected layer's rows against its layer code."""

    name: str
    blocks: int = 0
    status: str = "clean"
    flagged_blocks: int = 0
    uncorrectable_blocks: int = 0
    rebuilt_units: list[int] = dataclasses.field(default_factory=list)   # data units solved as whole rows
    rebuilt_parity: int = 0                                               # parity rows solved as whole rows
    values_fixed: int = 0
    failed_columns: int = 0
    erasures: int = 0                  # recorded erasures among the known positions
    unresolved: list[int] = dataclasses.field(default_factory=list)      # recorded channels still unrepaired
    tensors: list[str] = dataclasses.field(default_factory=list)
    unverified: list[str] = dataclasses.field(default_factory=list)      # tensors holding failing columns
    seconds: float = 0.0

    def merge(self, later: LayerReport) -> None:
        """Fold a later check of the same layer (a second round) into this report."""
        self.flagged_blocks = max(self.flagged_blocks, later.flagged_blocks)
        self.rebuilt_units = sorted(set(self.rebuilt_units) | set(later.rebuilt_units))
        self.rebuilt_parity += later.rebuilt_parity
        self.values_fixed += later.values_fixed
        self.uncorrectable_blocks, self.failed_columns = later.uncorrectable_blocks, later.failed_columns
        self.unresolved, self.unverified = later.unresolved, later.unverified
        self.status = "uncorrectable" if later.status == "uncorrectable" else (
            "repaired" if "repaired" in (self.status, later.status) else "clean")
        self.seconds += later.seconds


def repair_layer(view: LayerView, arrays: dict[str, np.ndarray], erased: list[int] = (),
                 verified: dict[str, np.ndarray] | None = None, state: dict | None = None) -> tuple[LayerReport, list[str]]:
    """Check every block of a layer and repair what the code allows, in place in ``arrays``.

    ``erased``: the layer's recorded erasures (decoded-output channels). Returns the report and
    the names of the tensors written. ``verified``, if given, receives per tensor a mask of the
    values the code verified (every column but those beyond repair). ``state``, if given, is kept
    by the caller between passes: a later pass decodes only the columns that changed since (the
    others keep their verdict)."""
    start = time.perf_counter()
    report = LayerReport(view.name, tensors=view.tensors)
    rows = view.gather(arrays)
    kw, _ = view.columns(arrays)
    changed = np.zeros(rows.shape, bool)
    by_block: dict[tuple[int, int], list[int]] = {}
    for c in erased:
        g, k, pos = channel_block(view.layer, c)
        by_block.setdefault((g, k), []).append(pos)
    unverified = set()
    failing = np.zeros(rows.shape, bool)
    limits = view.limits(arrays)
    before = state.get("rows") if state is not None else None
    for g, k, channels, gen in view.blocks():
        report.blocks += 1
        known = by_block.get((g, k), [])
        cols = np.arange(rows.shape[1])
        if before is not None:   # only the columns that changed since the last pass
            now, then = rows[channels], before[channels]
            cols = np.flatnonzero(~np.all((now == then) | (np.isnan(now) & np.isnan(then)), axis=0))
        kept = np.flatnonzero(state["failing"][channels[0]]) if before is not None else np.zeros(0, np.int64)
        kept = np.setdiff1d(kept, cols)
        fixed, outcome = repair_block(rows[np.ix_(channels, cols)], gen, view.dtype, known,
                                      None if limits is None else limits[np.ix_(channels, cols)])
        outcome = _in_block(outcome, cols, rows.shape[1], kept)
        if outcome.status == "clean":
            continue
        report.flagged_blocks += 1
        report.erasures += len(known)
        if outcome.changed is not None:
            rows[np.ix_(channels, cols)] = fixed
            changed[channels] |= outcome.changed
            report.values_fixed += outcome.fixes
            for j in outcome.rows:
                unit = view.unit_of(channels[j])
                if unit is None:
                    report.rebuilt_parity += 1
                else:
                    report.rebuilt_units.append(unit)
        if outcome.status == "uncorrectable":
            report.uncorrectable_blocks += 1
            report.failed_columns += len(outcome.failed_columns)
            report.unresolved += [int(channels[p]) for p in known]
            failing[np.ix_(channels, outcome.failed_columns)] = True
            for col in outcome.failed_columns:
                unverified.update(s.tensor for s in (view.weights if col < kw else view.bias))
    report.rebuilt_units.sort()
    report.unverified = sorted(unverified)
    report.status = "uncorrectable" if report.uncorrectable_blocks else ("repaired" if changed.any() else "clean")
    written = view.scatter(arrays, rows, changed) if changed.any() else []
    if state is not None:
        state.update(rows=rows, failing=failing)
    if verified is not None:
        masks = {t: np.zeros(arrays[t].shape, bool) for t in view.tensors}
        view.scatter(masks, ~failing, np.ones(rows.shape, bool))
        verified.update(masks)
    report.seconds = time.perf_counter() - start
    return report, written


def _in_block(outcome: BlockOutcome, cols: np.ndarray, width: int, kept: np.ndarray) -> BlockOutcome:
    """A block's outcome on columns ``cols`` as an outcome of the whole block: column indices
    mapped back, and the columns ``kept`` from an earlier pass still failing."""
    failed = sorted({int(c) for c in cols[outcome.failed_columns]} | {int(c) for c in kept})
    changed = None
    if outcome.changed is not None:
        changed = np.zeros((outcome.changed.shape[0], width), bool)
        changed[:, cols] = outcome.changed
    status = "uncorrectable" if failed else outcome.status
    return dataclasses.replace(outcome, status=status, changed=changed, failed_columns=failed)


# ----------------------------------------------------------------------------- pruning
def parse_units(specs: list[str]) -> dict[str, list[int]]:
    """``LAYER:i,j,k-l`` (repeatable) -> {layer: sorted units}; ValueError with a one-line reason."""
    out: dict[str, set[int]] = {}
    for spec in specs:
        layer, sep, units = spec.rpartition(":")
        if not sep or not layer or not units:
            raise ValueError(f"--units takes LAYER:i,j (the layer's node name, then its output units), got {spec!r}")
        for part in units.split(","):
            lo, dash, hi = part.strip().partition("-")
            try:
                first, last = int(lo), int(hi if dash else lo)
            except ValueError:
                raise ValueError(f"bad unit {part!r} in {spec!r} (units are integers or ranges i-j)") from None
            if first < 0 or last < first:
                raise ValueError(f"bad unit range {part!r} in {spec!r}")
            out.setdefault(layer, set()).update(range(first, last + 1))
    return {k: sorted(v) for k, v in out.items()}


def prune_units(model: onnx.ModelProto, units: dict[str, list[int]]) -> tuple[onnx.ModelProto, dict[str, list[int]]]:
    """A copy of ``model`` whose named output units have zero weights and bias.

    ``units``: {layer (original node name): [output units]}. In a protected model, units of
    layers with a layer code are recorded as erasures (their decoded-output channels, merged with
    any recorded before); the returned dict holds what was recorded per layer (empty lists for
    layers without a code, whose units are only zeroed). Unknown layers or units raise ValueError.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in out.graph.initializer}
    nodes = {n.name: n for n in out.graph.node}
    views = {v.name: v for v in layer_views(out)}
    erasures = read_erasures(out) if views else {}
    recorded: dict[str, list[int]] = {}
    arrays: dict[str, np.ndarray] = {}
    for layer, chosen in units.items():
        node = nodes.get(layer)
        if node is None or node.op_type not in LAYER_OPS:
            known = ", ".join(n.name for n in out.graph.node if n.op_type in LAYER_OPS) or "none"
            raise ValueError(f"no Gemm/MatMul/Conv layer named {layer!r} (layers: {known})")
        view = views.get(layer)
        if view is not None:
            count = view.layout.data_channels
            targets = [(s, [c for c in (unit_channel(view.layer, i) for i in chosen) if c in s.channels])
                       for s in view.weights + view.bias]
            targets = [(s.tensor, s.axis, [s.channels.index(c) for c in cs]) for s, cs in targets]
        else:
            targets = []
            for position in (1, 2):
                if len(node.input) > position and node.input[position] in inits:
                    name = node.input[position]
                    targets.append((name, output_axis(node, len(inits[name].dims), position), list(chosen)))
            if not targets:
                raise ValueError(f"layer {layer!r} has no constant weight to prune")
            count = int(inits[targets[0][0]].dims[targets[0][1]])
        bad = [i for i in chosen if not 0 <= i < count]
        if bad:
            raise ValueError(f"layer {layer!r} has units 0..{count - 1}, not {bad}")
        for name, axis, index in targets:
            if name not in arrays:
                arrays[name] = np.array(numpy_helper.to_array(inits[name]), copy=True)
            if int(arrays[name].shape[axis]) <= max(index, default=-1):
                raise ValueError(f"layer {layer!r}: tensor {name!r} has no output unit {max(index)}")
            np.moveaxis(arrays[name], axis, 0)[index] = 0
        if view is not None:
            channels = sorted(set(erasures.get(layer, [])) | {unit_channel(view.layer, i) for i in chosen})
            erasures[layer] = recorded[layer] = channels
        else:
            recorded[layer] = []
    for name, a in arrays.items():
        inits[name].CopyFrom(numpy_helper.from_array(a, name))
    if views:
        write_erasures(out, erasures)
    return out, recorded
