"""Numpy reference implementations of onnx-ecc's ops: the oracle for the C++ and CUDA kernels.

They follow the op declarations in ``onnx_ecc.ops`` and run inside
``onnx.reference.ReferenceEvaluator(model, new_ops=REFERENCE_OPS)``.
"""

from __future__ import annotations

import numpy as np
from onnx.reference.op_run import OpRun

from onnx_ecc import ops
from onnx_ecc.codes import EPS32, BlockNoise, BlockResult, Layout, decode_block

Counts = dict


def _empty_counts() -> Counts:
    return {"vectors": 0, "flagged": 0, "corrected_blocks": 0, "corrected_values": 0, "uncorrectable": 0}


def _add(counts: Counts, result: BlockResult) -> None:
    counts["flagged"] += int(result.flagged)
    counts["uncorrectable"] += int(result.uncorrectable)
    if result.flagged and not result.uncorrectable:
        counts["corrected_blocks"] += 1
        counts["corrected_values"] += result.corrected


def chunk_max_abs(x: np.ndarray | None, outer: int) -> np.ndarray:
    """max|x| per outer index (x split into ``outer`` equal chunks, else over all of x)."""
    if x is None:
        return np.ones(outer)
    flat = np.abs(np.asarray(x, dtype=np.float32).ravel())
    flat = np.where(np.isfinite(flat), flat, 0.0)
    if outer > 0 and flat.size % outer == 0 and flat.size:
        return flat.reshape(outer, -1).max(axis=1).astype(np.float64)
    return np.full(outer, flat.max(initial=0.0), dtype=np.float64)


def decode(y: np.ndarray, x: np.ndarray | None = None, residual: np.ndarray | None = None, *, axis=1,
           data_channels, groups=1, block, parity, generator, noise_gain, noise_offset, tolerance=ops.DEFAULT_TOLERANCE,
           scale="output", mode="correct", activation="", erasures=(), marks: dict | None = None, **_ignored):
    """Reference Decode: returns (act(corrected data channels + residual), counts).

    ``erasures``: known erased channels of Y (as the op's attribute): their blocks are decoded in
    every vector with them as known positions. ``marks`` (a dict, if given) receives this run's
    learning marks, as the kernel's learner sees them: ``located`` (channels located wrong in some
    vector) and ``disagree`` (known erasures that read wrong in some vector)."""
    layout = Layout(int(data_channels), int(block), int(parity), int(groups))
    erased = {int(c) for c in (erasures or ())}
    if any(not 0 <= c < layout.total_channels for c in erased):
        raise ValueError(f"erasure channel out of range: Y has channels 0..{layout.total_channels - 1}")
    located, disagree = set(), set()
    y = np.asarray(y, dtype=np.float32)
    ax = axis % y.ndim
    if y.shape[ax] != layout.total_channels:
        raise ValueError(f"Y has {y.shape[ax]} channels, the code expects {layout.total_channels}")
    outer = int(np.prod(y.shape[:ax]))
    inner = int(np.prod(y.shape[ax + 1:]))
    y3 = y.reshape(outer, layout.total_channels, inner)
    xmax = chunk_max_abs(x, outer) if scale == "input" else None
    z = np.empty((outer, layout.data_channels, inner), dtype=np.float32)
    keep_nan = np.zeros(z.shape, dtype=bool)          # values of uncorrectable blocks
    counts = _empty_counts()
    gens = np.asarray(generator, dtype=np.float32).astype(np.float64)
    gain = np.asarray(noise_gain, dtype=np.float64)
    offset = np.asarray(noise_offset, dtype=np.float64)
    tol_eps = float(tolerance) * EPS32
    r, nb = layout.parity, len(layout.block_sizes)
    dpg, ppg = layout.data_per_group, layout.parity_per_group
    for g in range(layout.groups):
        ybase, zbase, goff, start = g * (dpg + ppg), g * dpg, 0, 0
        for k, b in enumerate(layout.block_sizes):
            gen = gens[goff:goff + r * b].reshape(r, b)
            goff += r * b
            a = (g * nb + k) * r
            data = y3[:, ybase + start: ybase + start + b, :].astype(np.float64)          # [outer, b, inner]
            par = y3[:, ybase + dpg + k * r: ybase + dpg + (k + 1) * r, :].astype(np.float64)
            with np.errstate(invalid="ignore", over="ignore"):
                syn = np.einsum("rb,obi->ori", gen, data) - par
                if xmax is None:
                    mags = np.concatenate([np.abs(data), np.abs(par)], axis=1)
                    mags = np.where(np.isfinite(mags), mags, 0.0).max(axis=1)              # [outer, inner]
                else:
                    mags = np.broadcast_to(xmax[:, None], (outer, inner))
                thr = tol_eps * (gain[a:a + r][None, :, None] * mags[:, None, :] + offset[a:a + r][None, :, None])
                bad = ~(np.abs(syn) <= thr)
            counts["vectors"] += outer * inner
            zd = data.copy()
            channel = [ybase + start + j for j in range(b)] + [ybase + dpg + k * r + q for q in range(r)]
            known = [pos for pos, c in enumerate(channel) if c in erased]
            flagged_vectors = np.argwhere(np.ones(bad.shape[::2], bool) if known else bad.any(axis=1))
            for o, i in flagged_vectors:
                noise = BlockNoise(gain[a:a + r], offset[a:a + r], tol_eps, None if xmax is None else float(xmax[o]))
                fixed, result = decode_block(data[o, :, i], par[o, :, i], gen, noise, correct=(mode == "correct"),
                                             known=known)
                located.update(channel[pos] for pos in result.located)
                disagree.update(channel[pos] for pos in known if pos not in result.agree)
                _add(counts, result)
                zd[o, :, i] = fixed
                keep_nan[o, zbase + start: zbase + start + b, i] = result.uncorrectable
            z[:, zbase + start: zbase + start + b, :] = zd.astype(np.float32)
            start += b
    if residual is not None:
        z = z + np.asarray(residual, dtype=np.float32).reshape(outer, layout.data_channels, inner)
    if activation == "Relu":
        # like the kernels: NaN becomes 0, except in blocks beyond correction, where it stays visible
        z = np.where((z > 0) | (keep_nan & np.isnan(z)), z, np.float32(0))
    out_shape = list(y.shape)
    out_shape[ax] = layout.data_channels
    if marks is not None:
        marks["located"], marks["disagree"] = located, disagree
    return z.reshape(out_shape), counts


class ErasureLearner:
    """Mirror of the kernels' learner (custom_ops/include/onnx_ecc/erasures.h): a channel located
    wrong in ``learn_after`` runs in a row becomes a known erasure (at most ``parity`` per block),
    a known erasure that reads right (no vector disagrees) as many runs in a row leaves the list."""

    def __init__(self, layout: Layout, erasures=(), learn_after: int = 3):
        self.layout, self.learn_after = layout, int(learn_after)
        self.erased = {int(c) for c in erasures}
        self.located_streak: dict[int, int] = {}
        self.right_streak: dict[int, int] = {}

    def update(self, marks: dict) -> None:
        """One run's marks (``decode(..., marks=...)``)."""
        if self.learn_after <= 0:
            return
        changed = False
        for c in range(self.layout.total_channels):
            if c not in self.erased:
                if c in marks["located"]:
                    self.located_streak[c] = self.located_streak.get(c, 0) + 1
                    if self.located_streak[c] >= self.learn_after:
                        self.erased.add(c)
                        changed = True
                        self.located_streak[c] = self.right_streak[c] = 0
                else:
                    self.located_streak[c] = 0
            elif c not in marks["disagree"]:
                self.right_streak[c] = self.right_streak.get(c, 0) + 1
                if self.right_streak[c] >= self.learn_after:
                    self.erased.discard(c)
                    changed = True
                    self.located_streak[c] = self.right_streak[c] = 0
            else:
                self.right_streak[c] = 0
        if changed:  # at most parity per block, in channel order within the block (data, then checks)
            lay = self.layout
            tpg, dpg = lay.total_channels // lay.groups, lay.data_per_group
            for g in range(lay.groups):
                start = 0
                for k, b in enumerate(lay.block_sizes):
                    chans = [g * tpg + start + j for j in range(b)] + [g * tpg + dpg + k * lay.parity + q
                                                                      for q in range(lay.parity)]
                    kept = [c for c in chans if c in self.erased]
                    for c in kept[lay.parity:]:
                        self.erased.discard(c)
                    start += b

    @property
    def channels(self) -> list[int]:
        return sorted(self.erased)


def depthwise_check(x: np.ndarray, y: np.ndarray, *, weights, bias, weight_sums, strides=(1, 1), pads=(0, 0, 0, 0),
                    dilations=(1, 1), tolerance=ops.DEFAULT_TOLERANCE, mode="correct", activation="", **_ignored):
    """Reference DepthwiseCheck: per (sample, channel, output row) spatial-sum check and row recompute."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float32)
    w = np.asarray(weights, dtype=np.float64)
    bvec = np.asarray(bias, dtype=np.float64)
    n, c, h, wd = x.shape
    _, _, kh, kw = w.shape
    sh, sw = strides
    dh, dw = dilations
    pt, pl, pb, pr = pads
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    ho, wo = y.shape[2], y.shape[3]
    # exact per-position recompute (the oracle), then the same row test as the kernel
    cols = np.zeros((n, c, ho, wo))
    cols_abs = np.zeros((n, c, ho, wo))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i * dh: i * dh + (ho - 1) * sh + 1: sh, j * dw: j * dw + (wo - 1) * sw + 1: sw]
            cols += w[None, :, 0, i, j, None, None] * patch
            cols_abs += np.abs(w[None, :, 0, i, j, None, None] * patch)
    exact = cols + bvec[None, :, None, None]
    bound = (cols_abs + np.abs(bvec)[None, :, None, None]).sum(axis=3)
    with np.errstate(invalid="ignore", over="ignore"):
        actual = y.astype(np.float64).sum(axis=3)
        bad = ~(np.abs(actual - exact.sum(axis=3)) <= tolerance * EPS32 * bound)
    verified = np.isclose(w.reshape(c, -1).sum(axis=1) + bvec, np.asarray(weight_sums, dtype=np.float64), rtol=1e-6, atol=1e-30)
    z = y.copy()
    counts = _empty_counts()
    counts["vectors"] = n * c * ho
    for s, ch, row in np.argwhere(bad):
        counts["flagged"] += 1
        if mode != "correct" or not verified[ch]:
            counts["uncorrectable"] += 1
            continue
        z[s, ch, row] = exact[s, ch, row].astype(np.float32)
        counts["corrected_blocks"] += 1
        counts["corrected_values"] += wo
    if activation == "Relu":
        z = np.where(z > 0, z, np.float32(0))
    return z, counts


class Decode(OpRun):
    op_domain = ops.DOMAIN

    def _run(self, Y, X=None, R=None, **attrs):  # noqa: N803 (ONNX input names)
        attrs = {k: v for k, v in attrs.items() if v is not None}
        for key in ("mode", "activation", "scale"):
            if isinstance(attrs.get(key), bytes):
                attrs[key] = attrs[key].decode()
        z, _ = decode(Y, X, R, **attrs)
        return (z,)


class DepthwiseCheck(OpRun):
    op_domain = ops.DOMAIN

    def _run(self, X, Y, **attrs):  # noqa: N803
        attrs = {k: v for k, v in attrs.items() if v is not None}
        for key in ("mode", "activation"):
            if isinstance(attrs.get(key), bytes):
                attrs[key] = attrs[key].decode()
        z, _ = depthwise_check(X, Y, **attrs)
        return (z,)


def sum_check_ratios(y_means: np.ndarray, x_means: np.ndarray, r_means: np.ndarray | None = None, *, weights,
                     taps: int, offset: float = 0.0) -> np.ndarray:
    """Per sample: |sum_c w_c (y_c - r_c) - sum_{j<taps} x_j - offset| / (eps32 * sum of |terms|), inf if not finite."""
    n = y_means.shape[0]
    w = np.asarray(weights, np.float64)[None, :]
    y = y_means.reshape(n, -1).astype(np.float64) * w
    r = r_means.reshape(n, -1).astype(np.float64) * w if r_means is not None else np.zeros_like(y)
    x = x_means.reshape(n, -1)[:, :taps].astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        syndrome = np.abs((y - r).sum(axis=1) - x.sum(axis=1) - offset)
        scale = np.abs(y).sum(axis=1) + np.abs(r).sum(axis=1) + np.abs(x).sum(axis=1) + abs(offset)
        ratio = syndrome / (EPS32 * scale + np.finfo(np.float64).tiny)
    return np.where(np.isfinite(syndrome) & np.isfinite(scale), ratio, np.inf)


def sum_check(y_means: np.ndarray, x_means: np.ndarray, flag: bool = False, r_means: np.ndarray | None = None, *,
              weights, taps: int, offset: float = 0.0, tolerance: float = ops.DEFAULT_TOLERANCE) -> tuple[bool, int]:
    """Oracle of SumCheck: (raised, number of samples that fail)."""
    ratios = sum_check_ratios(y_means, x_means, r_means, weights=weights, taps=taps, offset=offset)
    failed = int(np.count_nonzero(~(ratios <= tolerance)))
    return bool(flag) or failed > 0, failed


class SumCheck(OpRun):
    op_domain = ops.DOMAIN

    def _run(self, Y, X, Flag=None, R=None, **attrs):  # noqa: N803
        keep = ("weights", "taps", "offset", "tolerance")
        raised, _ = sum_check(Y, X, bool(Flag is not None and np.asarray(Flag).ravel()[0]), R,
                              **{k: v for k, v in attrs.items() if k in keep and v is not None})
        return (np.array([raised]),)


def parity_check_ratios(y: np.ndarray, p: np.ndarray, *, block, parity, generator, noise_gain, noise_offset,
                        data_channels=None, axis=-1, stride=1, **_ignored) -> np.ndarray:
    """|syndrome| / (eps32 * (gain * scale + offset)) of every vector, block and check, as an array
    [vectors, blocks, parity] (channels last): a ParityCheck with tolerance T flags a block of a
    vector where one exceeds T (or is not a number: a value was not finite)."""
    y, p = np.moveaxis(np.asarray(y), int(axis), -1), np.moveaxis(np.asarray(p), int(axis), -1)
    y = np.asarray(y, np.float64).reshape(-1, np.shape(y)[-1])[::int(stride)]
    p = np.asarray(p, np.float64).reshape(y.shape[0], -1)
    layout = Layout(int(data_channels or y.shape[1]), int(block), int(parity))
    gens, gains, offsets = np.asarray(generator), np.asarray(noise_gain), np.asarray(noise_offset)
    out, start, goff = [], 0, 0
    for k, b in enumerate(layout.block_sizes):
        r = layout.parity
        g = gens[goff:goff + r * b].reshape(r, b)
        data, checks = y[:, start:start + b], p[:, k * r:(k + 1) * r]
        values = np.abs(np.concatenate([data, checks], axis=1))
        scale = np.where(np.isfinite(values), values, 0.0).max(axis=1, keepdims=True)
        bound = EPS32 * (gains[k * r:(k + 1) * r][None, :] * scale + offsets[k * r:(k + 1) * r][None, :])
        with np.errstate(invalid="ignore", over="ignore"):
            out.append(np.abs(data @ g.T - checks) / bound)
        start, goff = start + b, goff + r * b
    return np.stack(out, axis=1)


def parity_check(y: np.ndarray, p: np.ndarray, flag: bool = False, *, tolerance=ops.DEFAULT_TOLERANCE, **attrs) -> tuple[bool, int]:
    """Oracle of ParityCheck: (raised, number of blocks of vectors that fail)."""
    ratios = parity_check_ratios(y, p, **attrs)
    failed = int(np.count_nonzero(~(ratios <= float(tolerance)).all(axis=2)))
    return bool(flag) or failed > 0, failed


class ParityCheck(OpRun):
    op_domain = ops.DOMAIN

    def _run(self, Y, P, Flag=None, **attrs):  # noqa: N803
        attrs = {k: v for k, v in attrs.items() if v is not None}
        raised, _ = parity_check(Y, P, bool(Flag is not None and np.asarray(Flag).ravel()[0]), **attrs)
        return (np.array([raised]),)


def product_check_parity(a: np.ndarray, b: np.ndarray, *, block, parity, generator, data_channels=None, stride=1,
                         alpha=1.0, **_ignored) -> np.ndarray:
    """The parity ProductCheck compares C's checked rows with, computed as its kernel does
    (float32): P = alpha A_rows (B Gᵀ) as [vectors, checks] for A [..., M, K] and B [..., K, N];
    the rows are every stride-th row of each product."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    n = int(data_channels or b.shape[-1])
    layout, r = Layout(n, int(block), int(parity)), int(parity)
    g, gens, start, goff = np.zeros((r * len(layout.block_sizes), n), np.float32), np.asarray(generator), 0, 0
    for k, size in enumerate(layout.block_sizes):  # [checks, N]: block k's rows of the generator
        g[k * r:(k + 1) * r, start:start + size] = gens[goff:goff + r * size].reshape(r, size)
        start, goff = start + size, goff + r * size
    p = a[..., ::int(stride), :] @ (b @ g.T)
    if float(alpha) != 1.0:
        p = p * np.float32(alpha)
    return p.reshape(-1, p.shape[-1])


def product_check_ratios(a: np.ndarray, b: np.ndarray, c: np.ndarray, *, stride=1, **attrs) -> np.ndarray:
    """parity_check_ratios of a ProductCheck: C's checked rows against their parity."""
    c = np.asarray(c)
    rows = c[..., ::int(stride), :].reshape(-1, c.shape[-1])
    return parity_check_ratios(rows, product_check_parity(a, b, stride=stride, **attrs), **attrs)


def product_check(a, b, c, flag: bool = False, *, tolerance=ops.DEFAULT_TOLERANCE, **attrs) -> tuple[bool, int]:
    """Oracle of ProductCheck: (raised, number of blocks of checked rows that fail)."""
    a, b, c = np.asarray(a), np.asarray(b), np.asarray(c)
    if not (a.ndim == b.ndim == c.ndim >= 2 and a.shape[:-2] == b.shape[:-2] == c.shape[:-2]
            and a.shape[-1] == b.shape[-2] and c.shape[-2:] == (a.shape[-2], b.shape[-1])):
        raise ValueError(f"ProductCheck needs A [..., M, K], B [..., K, N], C [..., M, N]: {a.shape}, {b.shape}, {c.shape}")
    ratios = product_check_ratios(a, b, c, **attrs)
    failed = int(np.count_nonzero(~(ratios <= float(tolerance)).all(axis=2)))
    return bool(flag) or failed > 0, failed


class ProductCheck(OpRun):
    op_domain = ops.DOMAIN

    def _run(self, A, B, C, Flag=None, **attrs):  # noqa: N803
        attrs = {k: v for k, v in attrs.items() if v is not None}
        raised, _ = product_check(A, B, C, bool(Flag is not None and np.asarray(Flag).ravel()[0]), **attrs)
        return (np.array([raised]),)


def linear_check_parity(x: np.ndarray, wg: np.ndarray, pb: np.ndarray | None = None, *, stride=1,
                        **_ignored) -> np.ndarray:
    """The parity LinearCheck compares Y's checked rows with, bit for bit as its kernel computes it:
    P = X_rows WG (+ PB) as [vectors, checks], X's rows being every stride-th row of X [..., K]
    flattened to [rows, K]; per check, PB (or 0) plus the products of k = 0, 1, ... in order, each
    product and sum rounded to float32 (the kernel's multiply and add, no fused multiply-add)."""
    x, wg = np.asarray(x, np.float32), np.asarray(wg, np.float32)
    rows = x.reshape(-1, x.shape[-1])[::int(stride)]
    p = np.zeros((rows.shape[0], wg.shape[1]), np.float32)
    if pb is not None:
        p += np.asarray(pb, np.float32).ravel()
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(rows.shape[1]):
            p += rows[:, k:k + 1] * wg[k]
    return p


def linear_check_ratios(x: np.ndarray, wg: np.ndarray, y: np.ndarray, pb: np.ndarray | None = None, *, stride=1,
                        **attrs) -> np.ndarray:
    """parity_check_ratios of a LinearCheck: Y's checked rows against their parity."""
    y = np.asarray(y)
    rows = y.reshape(-1, y.shape[-1])[::int(stride)]
    return parity_check_ratios(rows, linear_check_parity(x, wg, pb, stride=stride), **attrs)


def linear_check(x, wg, y, flag: bool = False, pb=None, *, tolerance=ops.DEFAULT_TOLERANCE, **attrs) -> tuple[bool, int]:
    """Oracle of LinearCheck: (raised, number of blocks of checked rows that fail)."""
    x, wg, y = np.asarray(x), np.asarray(wg), np.asarray(y)
    n = int(attrs.get("data_channels") or y.shape[-1])
    layout = Layout(n, int(attrs["block"]), int(attrs["parity"]))
    checks = layout.parity * len(layout.block_sizes)
    if not (x.ndim == y.ndim >= 1 and x.shape[:-1] == y.shape[:-1] and y.shape[-1] == n
            and wg.shape == (x.shape[-1], checks)):
        raise ValueError(f"LinearCheck needs X [..., K], WG [K, checks], Y [..., N]: {x.shape}, {wg.shape}, {y.shape}")
    ratios = linear_check_ratios(x, wg, y, pb, **attrs)
    failed = int(np.count_nonzero(~(ratios <= float(tolerance)).all(axis=2)))
    return bool(flag) or failed > 0, failed


class LinearCheck(OpRun):
    op_domain = ops.DOMAIN

    def _run(self, X, WG, Y, Flag=None, PB=None, **attrs):  # noqa: N803
        attrs = {k: v for k, v in attrs.items() if v is not None}
        raised, _ = linear_check(X, WG, Y, bool(Flag is not None and np.asarray(Flag).ravel()[0]), PB, **attrs)
        return (np.array([raised]),)


def _activate(x: np.ndarray, activation: str, params) -> np.ndarray:
    """The conv activations SampleCheck knows, in float32 as onnxruntime applies them."""
    if activation == "Relu":
        return np.where(x > 0, x, np.float32(0))
    if activation == "Clip":
        return np.minimum(np.maximum(x, np.float32(params[0])), np.float32(params[1]))
    if activation == "LeakyRelu":
        return np.where(x >= 0, x, np.float32(params[0]) * x)
    return x


def sample_check_ratios(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per sample (first axis): the largest |a - b| / (eps32 * largest finite |value|); values
    equal (or both NaN) differ by 0, a non-finite value matched by another value by inf."""
    n = a.shape[0] if a.ndim else 1
    a64, b64 = a.reshape(n, -1).astype(np.float64), b.reshape(n, -1).astype(np.float64)
    both = np.concatenate([np.abs(a64), np.abs(b64)], axis=1)
    scale = np.where(np.isfinite(both), both, 0.0).max(axis=1, initial=0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(a64 - b64)
    same = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))
    diff = np.where(same, 0.0, np.where(np.isfinite(diff), diff, np.inf))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = diff.max(axis=1, initial=0.0) / (EPS32 * scale)
    return np.where(np.isnan(ratio), np.where(diff.max(axis=1, initial=0.0) > 0, np.inf, 0.0), ratio)


def filter_sum_ratios(w, bias, filter_sums) -> np.ndarray:
    """Per output channel: |sum of its filter and bias - its stored sum| / (eps32 * the sum of
    their magnitudes); inf where a value is not finite."""
    rows = np.asarray(w, np.float64).reshape(len(filter_sums), -1)
    if bias is not None:
        rows = np.concatenate([rows, np.asarray(bias, np.float64).reshape(-1, 1)], axis=1)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        diff = np.abs(rows.sum(axis=1) - np.asarray(filter_sums, np.float32).astype(np.float64))
        ratio = diff / (EPS32 * np.abs(rows).sum(axis=1))
    return np.where(np.isfinite(diff), np.nan_to_num(ratio, nan=0.0), np.inf)


def sample_check_parts(a, y, w=None, r=None, bias=None, *, data_channels, activation="", activation_params=(),
                       parity=0, filter_sums=(), **code) -> dict[str, np.ndarray]:
    """Per sample, the ratios each part of a SampleCheck compares with its tolerance: 'sample'
    (A against act(Y + R)), 'parity' (the largest parity ratio) and 'filters' (with W: the largest
    filter-sum ratio, the same for every sample)."""
    c = int(data_channels)
    data = np.asarray(y, np.float32)[:, :c]
    recomputed = data if r is None else (data + np.asarray(r, np.float32)).astype(np.float32)
    if isinstance(activation, bytes):
        activation = activation.decode()
    parts = {"sample": sample_check_ratios(np.asarray(a, np.float32), _activate(recomputed, activation,
                                                                                 activation_params))}
    if w is not None:
        worst = filter_sum_ratios(w, bias, filter_sums).max(initial=0.0)
        parts["filters"] = np.full(data.shape[0], worst)
    if int(parity) > 0:
        code = {k: v for k, v in code.items() if k in ("block", "generator", "noise_gain", "noise_offset")}
        ratios = parity_check_ratios(data, np.asarray(y, np.float32)[:, c:], parity=parity, axis=1,
                                     data_channels=c, **code)
        parts["parity"] = np.nan_to_num(ratios, nan=np.inf).reshape(data.shape[0], -1).max(axis=1)
    return parts


def sample_check(a, y, w=None, r=None, flag: bool = False, bias=None, *, tolerance=16.0,
                 parity_tolerance=ops.DEFAULT_TOLERANCE, filter_tolerance=ops.FILTER_TOLERANCE,
                 **attrs) -> tuple[bool, int]:
    """Oracle of SampleCheck: (raised, number of samples that fail)."""
    parts = sample_check_parts(a, y, w, r, bias, **attrs)
    limits = {"sample": float(tolerance), "filters": float(filter_tolerance), "parity": float(parity_tolerance)}
    failed = np.zeros(np.shape(a)[0], bool)
    for part, ratios in parts.items():
        failed |= ~(ratios <= limits[part])
    return bool(flag) or bool(failed.any()), int(failed.sum())


class SampleCheck(OpRun):
    op_domain = ops.DOMAIN

    def _run(self, A, Y, W=None, R=None, Flag=None, Bias=None, **attrs):  # noqa: N803
        keep = {k: v for k, v in attrs.items() if v is not None and k not in ("fail_stop", "layer", "model_id")}
        raised, _ = sample_check(A, Y, W, R, bool(Flag is not None and np.asarray(Flag).ravel()[0]), Bias, **keep)
        return (np.array([raised]),)


REFERENCE_OPS = [Decode, DepthwiseCheck, SumCheck, ParityCheck, SampleCheck, ProductCheck, LinearCheck]


def requantize_u8(acc, bias, scale, zero_point: int) -> np.ndarray:
    """onnxruntime's requantisation to uint8 (QLinearConv / QGemm, MLAS), channels last:
    float32(acc + bias) * scale, round half to even, + zero_point, saturated."""
    v = (np.asarray(acc, np.int64) + np.asarray(bias, np.int64)).astype(np.int32).astype(np.float32)
    f = v * np.asarray(scale, np.float32)
    f = np.clip(f, np.float32(-zero_point), np.float32(255 - zero_point))
    return (np.rint(f).astype(np.int32) + zero_point).astype(np.uint8)


def int_decode(y, *, data_channels, block, parity, generator, planes, scale, bias=None, bias_parity=None,
               zero_point=0, mode="correct", plane_base=256, axis=-1, **_) -> tuple[np.ndarray, dict]:
    """Oracle of IntDecode: (Z uint8, counts {flagged, corrected_blocks, corrected_values,
    uncorrectable}); the bias's check counts too. Channels last."""
    y = np.asarray(y, np.int64)
    m = int(data_channels)
    data, bias, counts = _int_corrected(y, m, block, parity, generator, planes, bias, bias_parity, mode, plane_base)
    sc = np.broadcast_to(np.asarray(scale, np.float32), (m,))
    z = requantize_u8(data, bias, sc, int(zero_point))
    return z.reshape(y.shape[:-1] + (m,)), counts


def int32_decode(y, *, data_channels, block, parity, generator, planes, bias=None, bias_parity=None, mode="correct",
                 plane_base=256, axis=-1, **_) -> tuple[np.ndarray, dict]:
    """Oracle of Int32Decode: (Z int32 = corrected accumulators + bias, wrapping; counts as int_decode's),
    channels on ``axis``."""
    y = np.moveaxis(np.asarray(y, np.int64), axis, -1)
    m = int(data_channels)
    data, bias, counts = _int_corrected(y, m, block, parity, generator, planes, bias, bias_parity, mode, plane_base)
    z = ((data + bias[None, :]) & 0xFFFFFFFF).astype(np.uint32).view(np.int32)
    return np.moveaxis(z.reshape(y.shape[:-1] + (m,)), -1, axis), counts


def _int_corrected(y, m, block, parity, generator, planes, bias, bias_parity, mode, plane_base):
    """The int8 code's check (channels last, int64 y): (corrected data [rows, m], checked bias, counts)."""
    b, r = int(block), int(parity)
    g = np.asarray(generator, np.int64).reshape(r, b)
    rows = y.reshape(-1, y.shape[-1])
    data = rows[:, :m].copy()
    bias = np.zeros(m, np.int64) if bias is None else np.asarray(bias, np.int64).copy()
    counts = dict(flagged=0, corrected_blocks=0, corrected_values=0, uncorrectable=0)

    def locate(s, n):
        nz = np.count_nonzero(s)
        if nz == 0:
            return "clean", None
        if nz == 1:
            return "parity", None
        e = s[0]
        hits = [i for i in range(n) if e != 0 and all(s[q] == g[q, i] * e for q in range(1, r))]
        return ("fixed", hits[0]) if hits and mode == "correct" else ("bad", None)

    def count(verdict):
        if verdict != "clean":
            counts["flagged"] += 1
            if verdict in ("parity", "fixed"):
                counts["corrected_blocks"] += 1
            if verdict == "fixed":
                counts["corrected_values"] += 1
            if verdict == "bad":
                counts["uncorrectable"] += 1

    if bias_parity is not None and len(bias_parity):
        for k, c0 in enumerate(range(0, m, b)):
            n = min(b, m - c0)
            s = g[:, :n] @ bias[c0:c0 + n] - np.asarray(bias_parity[k * r:(k + 1) * r], np.int64)
            verdict, i = locate(s, n)
            count(verdict)
            if verdict == "fixed":
                bias[c0 + i] -= s[0]
    off = m
    for k, c0 in enumerate(range(0, m, b)):
        n = min(b, m - c0)
        p = []
        for q in range(r):
            cnt = int(planes[k * r + q])
            p.append(sum(plane_base ** j * rows[:, off + j] for j in range(cnt)))
            off += cnt
        s = data[:, c0:c0 + n] @ g[:, :n].T - np.stack(p, -1)
        for row in np.nonzero(s.any(-1))[0]:
            verdict, i = locate(s[row], n)
            count(verdict)
            if verdict == "fixed":
                data[row, c0 + i] -= s[row, 0]
    return data, bias, counts


def im2col_nhwc(x, *, kernel_shape, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), pad_value=0) -> np.ndarray:
    """Oracle of Im2ColNhwc: [N, H, W, C] -> [N, Ho, Wo, kh*kw*C] uint8, taps (i, j, c)."""
    x = np.asarray(x)
    xu = (x.astype(np.int16) + 128).astype(np.uint8) if x.dtype == np.int8 else x.astype(np.uint8)
    (kh, kw), (sh, sw), (dh, dw) = kernel_shape, strides, dilations
    n, h, w, c = xu.shape
    xp = np.full((n, h + pads[0] + pads[2], w + pads[1] + pads[3], c), pad_value, np.uint8)
    xp[:, pads[0]:pads[0] + h, pads[1]:pads[1] + w] = xu
    ho = (xp.shape[1] - dh * (kh - 1) - 1) // sh + 1
    wo = (xp.shape[2] - dw * (kw - 1) - 1) // sw + 1
    taps = [xp[:, i * dh:i * dh + (ho - 1) * sh + 1:sh, j * dw:j * dw + (wo - 1) * sw + 1:sw]
            for i in range(kh) for j in range(kw)]
    return np.concatenate(taps, axis=-1)


def int_sample_check(a, y, w=None, bias=None, flag: bool = False, *, data_channels, row_stride=1, weight_axis=0,
                     filter_sums=(), **_) -> tuple[bool, int]:
    """Oracle of IntSampleCheck: (Raised, rows failed): a row (last axis) of Y fails where it differs
    from A's row (every row_stride-th on axis -2), every row where a channel's int8 weights plus
    int32 bias do not sum to filter_sums."""
    a, y = np.asarray(a), np.asarray(y)
    failed = (a[..., ::int(row_stride), :] != y).any(axis=-1).ravel()
    if w is not None:
        w = np.asarray(w, np.int64)
        sums = (w if weight_axis == 0 else w.T).reshape(int(data_channels), -1).sum(axis=1)
        if bias is not None:
            sums = sums + np.asarray(bias, np.int64)
        if np.any(sums != np.asarray(filter_sums, np.int64)):
            failed[:] = True
    return bool(flag) or bool(failed.any()), int(failed.sum())
