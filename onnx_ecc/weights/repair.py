"""Scrubbing with both codes: the layer code's parity rows and the weight codes' stored checks.

The two codes see different faults. The layer code (``layer_code``) checks each column of a
protected layer's rows against its R parity rows: it rebuilds whole rows (dead or pruned units,
recorded erasures) and single wrong values per column, at the resolution of float rounding, but
fails on a column with more than floor(R/2) wrong values. The weight code (``model``, l1
decoding) checks each block of up to 8192 values of a tensor: scattered errors anywhere in the
block, up to its number of checks, at a coarser resolution; a whole wrong row is hundreds of
errors in one block, beyond it. So they take turns on the same arrays, layer code first:

1. the layer code on every layer (whole rows first, then single values per column);
2. the weight code on every tensor (what the layer code left: columns with several errors);
3. the layer code again on the layers whose tensors the weight code changed, the weight code
   again on those the layer code changed, ... until a round changes nothing (at most
   ``MAX_ROUNDS``).

Starting with the weight code instead repairs less: a dead row puts its block beyond the weight
code, and the columns' single errors would be handed to the slower l1 decoder (``order``).

The weight code's own decoder assumes its stored checks are right; a flipped bit in one of them
puts the whole block beyond it. Where the layer code covers the tensor, a block the weight code
cannot repair is decoded again with the support restricted to the values the layer code did not
verify (its failing columns, and erasures), and with errors allowed in the checks too: the l1
problem min ||x||_1 + ||c||_1 subject to H_U x + c = s is small (a few hundred unknowns) and is
solved exactly (scipy's HiGHS), its support refitted by least squares on the checks left over and
verified; the checks found wrong are re-encoded from the repaired weights.
A tensor is *beyond repair* when its weight code still fails, or when it holds columns the layer
code could not repair and no weight code verifies it (the weight code's resolution is coarser: a
column it verified may keep changes below it that the layer code sees). Everything else is still
repaired and written.
"""

from __future__ import annotations

import time

import numpy as np
import onnx
from onnx import numpy_helper

from onnx_ecc.transform.record import read_erasures, write_erasures

from . import decode as _decode
from .layer_code import LayerReport, LayerView, layer_views, repair_layer
from .model import (
    PARITY_SUFFIX,
    ScrubReport,
    TensorReport,
    _block_code,
    check_tensor,
    read_weight_codes,
)

MAX_ROUNDS = 6
RESTRICTED_MARGIN = 4   # checks left over beyond twice the errors found (the restricted decode's uniqueness)
VERIFY_FACTOR = _decode.VERIFY_FACTOR
ORDERS = ("layer-first", "weight-first")


class Scrub:
    """Both codes of one model over a dict of arrays (repaired in place).

    ``arrays`` must hold every tensor the codes cover (``Scrub.tensors_of(model)``); the weight
    codes' checks are read into ``parities`` (also repaired in place when they are the ones found
    wrong). Used by ``scrub_model`` on copies and by the live ``WeightScrubber`` on its buffers.
    """

    def __init__(self, model: onnx.ModelProto, *, layer_code: bool = True, weight_code: bool = True):
        self.entries = read_weight_codes(model) if weight_code else []
        self.views: list[LayerView] = layer_views(model) if layer_code else []
        self.erasures = read_erasures(model) if self.views else {}
        inits = {t.name: t for t in model.graph.initializer}
        for name in self.tensors():
            if name not in inits:
                raise ValueError(f"protected tensor {name!r} is missing from the model")
        for entry in self.entries:
            t = inits[entry["tensor"]]
            if t.data_type != onnx.TensorProto.FLOAT or list(t.dims) != list(entry["shape"]):
                raise ValueError(f"tensor {entry['tensor']!r} does not match its code (dtype/shape)")
        self.parities: dict[str, np.ndarray | None] = {}
        for entry in self.entries:
            parity = None
            if entry["mode"] == "parity":
                pname = entry.get("parity_tensor", entry["tensor"] + PARITY_SUFFIX)
                if pname not in inits:
                    raise ValueError(f"parity initializer {pname!r} is missing")
                parity = numpy_helper.to_array(inits[pname]).reshape(-1).copy()
            self.parities[entry["tensor"]] = parity

    def tensors(self) -> list[str]:
        """Every tensor either code covers, in a stable order."""
        names: list[str] = []
        for name in [e["tensor"] for e in self.entries] + [t for v in self.views for t in v.tensors]:
            if name not in names:
                names.append(name)
        return names

    @property
    def empty(self) -> bool:
        return not self.entries and not self.views

    def run(self, arrays: dict[str, np.ndarray], order: str = "layer-first", **solver_options) -> ScrubReport:
        """Check and repair ``arrays`` in place with both codes in turn; returns the report."""
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        start = time.perf_counter()
        self._seen: dict[str, np.ndarray] = {}   # each tensor as its weight code last saw it
        self._verified: dict[str, np.ndarray] = {}   # per tensor, the values the layer code verified
        self._layer_state: dict[str, dict] = {}       # per layer, its rows after its last pass
        self.checks_reencoded = 0
        layers: dict[str, LayerReport] = {}
        tensors: dict[str, TensorReport] = {}
        by_tensor = {e["tensor"]: e for e in self.entries}
        views_of: dict[str, list[LayerView]] = {}
        for v in self.views:
            for t in v.tensors:
                views_of.setdefault(t, []).append(v)
        pending = {"layer": {v.name for v in self.views}, "weight": set(by_tensor)}
        steps = ("weight", "layer") if order == "weight-first" else ("layer", "weight")
        rounds, touched = 0, False
        while (pending["layer"] or pending["weight"]) and rounds < MAX_ROUNDS:
            rounds += 1
            for step in steps:
                changed: set[str] = set()
                if step == "layer":
                    for view in self.views:
                        if view.name in pending["layer"]:
                            report, written = repair_layer(view, arrays, self.erasures.get(view.name, []),
                                                           self._verified, self._layer_state.setdefault(view.name, {}))
                            _fold(layers, view.name, report)
                            changed.update(written)
                    pending["weight"] |= {t for t in changed if t in by_tensor}
                else:
                    for name in sorted(pending["weight"]):
                        if self._weight_pass(by_tensor[name], arrays, tensors, solver_options):
                            changed.add(name)
                    pending["layer"] |= {v.name for t in changed for v in views_of.get(t, [])}
                pending[step] = set()
                touched |= bool(changed)
        reencoded = self.checks_reencoded
        layer_list = [layers[v.name] for v in self.views if v.name in layers]
        beyond = self._beyond_repair(layer_list, tensors)
        status = "uncorrectable" if beyond else ("repaired" if touched or reencoded else "clean")
        report = ScrubReport(status, [tensors[e["tensor"]] for e in self.entries if e["tensor"] in tensors],
                             time.perf_counter() - start, layers=layer_list, beyond_repair=beyond,
                             checks_reencoded=reencoded, rounds=rounds)
        self.erasures = {v.name: layers[v.name].unresolved for v in self.views if v.name in layers} \
            if report.status != "clean" else self.erasures
        return report

    def _weight_pass(self, entry: dict, arrays, tensors: dict[str, TensorReport], solver_options) -> bool:
        """Check one tensor with its weight code and repair it in place; True when it changed.

        A tensor checked before is checked again only in the blocks that changed since (a block
        beyond repair that nothing touched stays so: the l1 decoder would fail on it again). Where
        the layer code covers the tensor, a flagged block is first decoded on the values it did not
        verify (``restricted_repair``: cheap, and it survives wrong checks); the l1 decoder gets
        the blocks that this leaves."""
        name = entry["tensor"]
        flat = arrays[name].reshape(-1)
        previous = tensors.get(name)
        blocks = set(range(len(entry["blocks"])))
        if previous is not None:
            seen = self._seen[name]
            blocks = {i for i, b in enumerate(entry["blocks"])
                      if not np.array_equal(seen[b["start"]:b["stop"]].view(np.uint32),
                                            flat[b["start"]:b["stop"]].view(np.uint32))}
            if not blocks:
                return False
        changed, restricted = np.zeros(0, np.int64), (set(), 0)
        if name in self._verified:
            changed, *restricted = self._restricted(entry, flat, sorted(blocks))
            blocks -= restricted[0]
        report, fixed = check_tensor(np.array(flat, copy=True), entry, self.parities[name], only=blocks,
                                     **solver_options)
        report.flagged_blocks += len(restricted[0])
        report.corrected += restricted[1]
        if restricted[0] and report.status == "clean":
            report.status = "repaired"
        if previous is not None:
            done = blocks | restricted[0]
            report.failing = sorted((set(previous.failing) - done) | set(report.failing))
            report.uncorrectable_blocks = len(report.failing)
            report.flagged_blocks = max(report.flagged_blocks, previous.flagged_blocks)
            report.corrected += previous.corrected
            report.erasures += previous.erasures
            report.positions = previous.positions + report.positions
            report.seconds += previous.seconds
            report.status = "uncorrectable" if report.failing else (
                "repaired" if "repaired" in (report.status, previous.status) or previous.failing else "clean")
        tensors[name] = report
        if fixed is not None:
            moved = np.flatnonzero(fixed.view(np.uint32) != flat.view(np.uint32))
            if name in self._verified:  # the layer code's verified values stand (the checks may be wrong)
                moved = moved[~self._verified[name].reshape(-1)[moved]]
            flat[moved] = fixed[moved]   # in place (a shared buffer stays shared)
            changed = np.union1d(changed, moved)
        self._seen[name] = np.array(flat, copy=True)
        return bool(len(changed))

    def _restricted(self, entry: dict, flat: np.ndarray, indices: list[int]):
        """Flagged blocks of a tensor the layer code covers, decoded on the values it did not verify,
        with errors allowed in the checks (``restricted_repair``); repaired in place, the checks
        found wrong re-encoded. Returns (positions changed, blocks repaired, values corrected)."""
        parity, verified = self.parities[entry["tensor"]], self._verified[entry["tensor"]].reshape(-1)
        offsets = np.concatenate([[0], np.cumsum([b["m"] for b in entry["blocks"]])])
        changed, repaired_blocks, corrected = [], set(), 0
        for index in indices:
            b = entry["blocks"][index]
            h, lo, hi = _block_code(entry, b), b["start"], b["stop"]
            tol = _decode.syndrome_tolerance(h, b["w_norm"], "parity", entry.get("parity_dtype", "float64"))
            erased = np.flatnonzero(_decode.find_erasures(flat[lo:hi], b["w_absmax"]))
            checks = parity[offsets[index]:offsets[index + 1]]
            values = np.where(np.isin(np.arange(hi - lo), erased), 0.0, flat[lo:hi].astype(np.float64))
            if not len(erased) and np.all(np.abs(h.apply(values) - checks) <= tol):
                continue   # clean
            found = restricted_repair(h, flat[lo:hi], checks.astype(np.float64), tol,
                                      np.flatnonzero(~verified[lo:hi]), erased, b["w_norm"])
            if found is None:
                continue
            fixed, bad = found
            moved = np.flatnonzero(fixed.view(np.uint32) != flat[lo:hi].view(np.uint32))
            flat[lo + moved] = fixed[moved]
            checks[bad] = h.apply(fixed.astype(np.float64))[bad].astype(checks.dtype)   # in place
            changed.append(lo + moved)
            repaired_blocks.add(index)
            corrected += len(moved)
            self.checks_reencoded += len(bad)
        return (np.concatenate(changed) if changed else np.zeros(0, np.int64)), repaired_blocks, corrected

    @staticmethod
    def _beyond_repair(layers: list[LayerReport], tensors: dict[str, TensorReport]) -> list[str]:
        """Tensors beyond repair: those whose weight code still fails (its checks disagree with the
        weights in many places), and those holding columns the layer code could not repair that
        no weight code verifies."""
        out = [n for n, r in tensors.items() if r.status == "uncorrectable"]
        verified = {n for n, r in tensors.items() if r.status != "uncorrectable"}
        for r in layers:
            out += [t for t in r.unverified if t not in verified and t not in out]
        return out


def _fold(layers: dict[str, LayerReport], name: str, report: LayerReport) -> None:
    if name in layers:
        layers[name].merge(report)
    else:
        layers[name] = report


def restricted_repair(h, values: np.ndarray, stored: np.ndarray, tol: np.ndarray, unknown: np.ndarray,
                      erased: np.ndarray, w_norm: float, margin: int = RESTRICTED_MARGIN):
    """Decode one weight-code block whose errors lie in ``unknown`` (block positions) or in its
    stored checks: min ||x||_1 + ||c||_1 s.t. H_U x + c = s (erasures free), then a least-squares
    refit on the support found, verified on the checks it trusts.

    Returns (repaired values, indices of the checks found wrong) or None. ``values`` are the
    block's stored weights, ``stored`` its stored checks, ``tol`` the checks' thresholds,
    ``w_norm`` the block's recorded ||w||: a stored check beyond ||H_i|| ||w|| (Cauchy-Schwarz),
    or not finite, cannot be right and is left out of the fit (an erasure of the check).
    """
    import scipy.optimize

    unknown = np.union1d(np.asarray(unknown, np.int64), np.asarray(erased, np.int64))
    x = np.asarray(values, np.float64).copy()
    x[erased] = 0.0
    if not np.all(np.isfinite(x)):
        return None
    with np.errstate(invalid="ignore", over="ignore"):
        s = h.apply(x) - stored
    m, k = h.m, len(unknown)
    with np.errstate(invalid="ignore"):
        broken = np.flatnonzero(~np.isfinite(s) | ~(np.abs(stored) <= h.row_norms * w_norm * (1 + 1e-6)))
    rows = np.setdiff1d(np.arange(m), broken)
    if 2 * (k + len(broken)) >= m:
        return None
    a = h.columns(unknown) if k else np.zeros((m, 0))
    free = np.isin(unknown, erased)
    n_rows = len(rows)
    cost = np.concatenate([np.where(free, 0.0, 1.0)] * 2 + [np.ones(2 * n_rows)])
    eq = np.hstack([a[rows], -a[rows], np.eye(n_rows), -np.eye(n_rows)])
    res = scipy.optimize.linprog(cost, A_eq=eq, b_eq=s[rows], bounds=(0, None), method="highs")
    if res.status != 0:
        return None
    e_w = res.x[:k] - res.x[k:2 * k]
    e_c = np.zeros(m)
    e_c[rows] = res.x[2 * k:2 * k + n_rows] - res.x[2 * k + n_rows:]
    colmax = np.abs(a).max(axis=0) if k else np.zeros(0)
    support = free | (np.abs(e_w) * colmax > 1e-3 * float(tol.min()))
    bad = np.union1d(np.flatnonzero(np.abs(e_c) > VERIFY_FACTOR * tol), broken)
    if len(erased) + 2 * (int(support.sum() - free.sum()) + len(bad)) > m - margin:
        return None
    good = np.setdiff1d(np.arange(m), bad)
    fit = np.zeros(0)
    if support.any():
        fit, *_ = np.linalg.lstsq(a[np.ix_(good, np.flatnonzero(support))], s[good], rcond=None)
    repaired = x.copy()
    repaired[unknown[support]] -= fit
    repaired = repaired.astype(np.asarray(values).dtype)
    residual = h.apply(repaired.astype(np.float64)) - stored
    if not np.all(np.isfinite(repaired)) or np.any(np.abs(residual[good]) > VERIFY_FACTOR * tol[good]):
        return None
    return repaired, bad


def scrub_model(model: onnx.ModelProto, *, layer_code: bool = True, weight_code: bool = True,
                order: str = "layer-first", **solver_options) -> tuple[onnx.ModelProto, ScrubReport]:
    """Check every protected tensor with the layer code and the weight codes; repair what can be.

    Returns (model, report). A clean model is returned unchanged (identical serialisation);
    otherwise a copy with every repaired tensor replaced, also when some are beyond repair
    (``report.beyond_repair`` names them, and the status is "uncorrectable"). The copy's recorded
    erasures keep only the units still unrepaired.
    """
    scrub = Scrub(model, layer_code=layer_code, weight_code=weight_code)
    inits = {t.name: t for t in model.graph.initializer}
    arrays = {name: np.array(numpy_helper.to_array(inits[name]), copy=True) for name in scrub.tensors()}
    before = {name: a.tobytes() for name, a in arrays.items()}
    parities_before = {name: None if p is None else p.tobytes() for name, p in scrub.parities.items()}
    report = scrub.run(arrays, order=order, **solver_options)
    changed = {name for name, a in arrays.items() if a.tobytes() != before[name]}
    changed_checks = {name for name, p in scrub.parities.items() if p is not None and p.tobytes() != parities_before[name]}
    if not changed and not changed_checks:
        return model, report
    out = onnx.ModelProto()
    out.CopyFrom(model)
    parity_names = {e.get("parity_tensor", e["tensor"] + PARITY_SUFFIX): e["tensor"] for e in scrub.entries}
    for t in out.graph.initializer:
        if t.name in changed:
            t.CopyFrom(numpy_helper.from_array(arrays[t.name], t.name))
        elif parity_names.get(t.name) in changed_checks:
            shape = list(t.dims)
            t.CopyFrom(numpy_helper.from_array(scrub.parities[parity_names[t.name]].reshape(shape), t.name))
    if scrub.views:
        write_erasures(out, scrub.erasures)
    return out, report
