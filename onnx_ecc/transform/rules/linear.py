"""Rules for Gemm and MatMul with a constant weight: parity columns appended to the weight."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnx_ecc.transform.common import (QUANTISED, Protected, Skip, constant_value, emit_decoder, is_quantised_weight,
                                       join_parity, layout_for, require_float)


def _separate_parity(graph: gs.Graph, node: gs.Node, layout) -> gs.Node | None:
    """With ``separate_parity``: the layer keeps its weights, a second product computes the parity
    (parity_check.parity_product) and a Concat joins both in the decoder's layout; returns the
    Concat (None when the layer's bias cannot be carried by the parity product)."""
    from onnx_ecc.transform.strategies.parity_check import linear_rows, parity_product

    found = linear_rows(node)
    if found is None:
        return None
    return join_parity(graph, node, parity_product(graph, node, layout, *found))


def protect_gemm(graph: gs.Graph, node: gs.Node, options, model_id: str) -> Protected:
    """Y = alpha * A @ B + beta * C: parity features from B's columns (and C's)."""
    if node.attrs.get("transA", 0):
        raise Skip("transA=1 is not supported")
    a, b_t = node.inputs[0], node.inputs[1]
    c_t = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    b = constant_value(b_t)
    if b is None:
        raise Skip(QUANTISED if is_quantised_weight(b_t) else "weight B is not a constant")
    c = constant_value(c_t) if c_t is not None else None
    if c_t is not None and c is None:
        raise Skip("bias C is not a constant")
    dtype = require_float(node.name, b, c)
    if b.ndim != 2:
        raise Skip(f"weight B has rank {b.ndim}")
    trans_b = int(node.attrs.get("transB", 0))
    rows = b if trans_b else b.T                                  # [N, K]: one row per output feature
    n = rows.shape[0]
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    layout = layout_for(n, options)
    bias_rows = None
    if c is not None:
        cb = np.broadcast_to(c, c.shape[:-1] + (n,)) if c.ndim >= 1 and c.shape[-1] in (1, n) else np.broadcast_to(c, (n,))
        cb = np.moveaxis(np.asarray(cb, dtype=np.float64), -1, 0)  # [N, ...]
        bias_rows = beta * np.abs(cb).reshape(n, -1).max(axis=1)
    bounds = layout.noise_bounds(abs(alpha) * rows, bias_rows)
    joined = _separate_parity(graph, node, layout) if options.separate_parity else None
    if joined is None:
        new_rows = layout.augment_rows(rows).astype(dtype)
        node.inputs[1] = gs.Constant(f"{b_t.name}__ecc_{node.name}", new_rows if trans_b else np.ascontiguousarray(new_rows.T))
        if c is not None:
            new_c = np.moveaxis(layout.augment_rows(cb), 0, -1).astype(dtype)
            node.inputs[2] = gs.Constant(f"{c_t.name}__ecc_{node.name}", np.ascontiguousarray(new_c))
    act = emit_decoder(graph, joined or node, a, layout, -1, bounds, options, model_id, layer=node.name, dtype=dtype)
    k = rows.shape[1]
    return Protected(node.name, "Gemm", "code", n, layout.parity_per_group, layout.block, layout.parity, 1,
                     params=b.size + (c.size if c is not None else 0),
                     extra_params=(layout.total_channels - n) * (k + (1 if c is not None else 0)),
                     macs_per_vector=n * k, extra_macs_per_vector=(layout.total_channels - n) * (k + layout.block),
                     activation=act, dtype=str(dtype))


def protect_matmul(graph: gs.Graph, node: gs.Node, options, model_id: str) -> Protected:
    """Y = A @ B with B a constant matrix [K, N]: parity columns appended to B; a product of two
    activations (attention) gets its parity from its operands at run time (products.py)."""
    from onnx_ecc.transform.rules.products import is_activation_product, protect_product

    if is_activation_product(node):  # also says why a quantised (QDQ) weight is left alone
        return protect_product(graph, node, options, model_id)
    a, b_t = node.inputs
    b = constant_value(b_t)
    if b is None:
        raise Skip("first input is a constant and the second is not (only B constant is protected)")
    dtype = require_float(node.name, b)
    if b.ndim != 2:
        raise Skip(f"constant weight has rank {b.ndim} (only 2-D weights are protected)")
    rows = b.T
    n, k = rows.shape
    layout = layout_for(n, options)
    joined = _separate_parity(graph, node, layout) if options.separate_parity else None
    if joined is None:
        new_b = np.ascontiguousarray(layout.augment_rows(rows).T.astype(dtype))
        node.inputs[1] = gs.Constant(f"{b_t.name}__ecc_{node.name}", new_b)
    bounds = layout.noise_bounds(rows, None)
    act = emit_decoder(graph, joined or node, a, layout, -1, bounds, options, model_id, layer=node.name, dtype=dtype)
    return Protected(node.name, "MatMul", "code", n, layout.parity_per_group, layout.block, layout.parity, 1,
                     params=b.size, extra_params=(layout.total_channels - n) * k,
                     macs_per_vector=n * k, extra_macs_per_vector=(layout.total_channels - n) * (k + layout.block),
                     activation=act, dtype=str(dtype))
