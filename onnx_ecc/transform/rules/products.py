"""Rule for products of two activations (attention's scores Q·Kᵀ and context P·V): parity at run time.

A product C = A · B with no constant operand (a batched MatMul, or a two-operand Einsum whose
output's last index comes from one operand only) has no weights to add parity columns to, so
its parity is computed from the operands on every run: ``B' = B · Gᵀ`` combines B's N output
columns into R checks per block (a thin product), and ``P = A · B'`` is what C's check columns
must be. From there C and P are a layer's output and parity like any other: the decoder locates
and corrects wrong values of C per output vector (inline strategy), or a ParityCheck compares
``G c`` with P (rerun strategy's fast path). Both products cost 2R/N of the original's
multiply-adds per block (about 12% at R=2, N=32).
"""

from __future__ import annotations

import dataclasses
import string

import numpy as np
import onnx_graphsurgeon as gs

from onnx_ecc.codes import Layout
from onnx_ecc.transform.common import (FLOAT_TYPES, QUANTISED, Protected, Skip, constant_value, emit_decoder,
                                       is_quantised_weight, join_parity, layout_for)

PRODUCT_OPS = ("MatMul", "Einsum")


@dataclasses.dataclass(frozen=True)
class ProductForm:
    """How a product's parity is computed: which operand carries the output columns, and how."""

    a: gs.Variable               # the other operand
    b: gs.Variable               # the operand whose last output index the code runs over
    columns: int                 # N: size of the output's last axis (the code's channels)
    inner: int                   # K: the contracted size, for the cost
    to_checks: str | None = None  # Einsum: B, Gᵀ -> B'
    parity: str | None = None     # Einsum: A, B' -> P (operands in the node's order)
    b_first: bool = False         # Einsum: B is the node's first operand


def _static(dim) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def is_activation_product(node: gs.Node) -> bool:
    """A MatMul / Einsum of two tensors neither of which is a constant."""
    return (node.op in PRODUCT_OPS and len(node.inputs) == 2
            and all(constant_value(t) is None for t in node.inputs))


def product_form(node: gs.Node) -> ProductForm:
    """The parity form of an activation product, or Skip with the reason it has none."""
    if node.op == "MatMul":
        a, b = node.inputs
        if a.shape is None or b.shape is None or len(a.shape) < 2 or len(b.shape) < 2:
            raise Skip("product of two activations with unknown or 1-D shapes")
        n = _static(b.shape[-1])
        if n is None:
            raise Skip("product of two activations whose output columns are not a static size")
        return ProductForm(a, b, n, _static(b.shape[-2]) or _static(a.shape[-1]) or 1)
    return _einsum_form(node)


def _einsum_form(node: gs.Node) -> ProductForm:
    """An Einsum 'x,y->z' whose last output letter occurs once, in one operand only."""
    equation = str(node.attrs.get("equation", "")).replace(" ", "")
    if len(node.inputs) != 2 or "->" not in equation or "." in equation:
        raise Skip("Einsum without two operands and an explicit output (or with an ellipsis)")
    lhs, out = equation.split("->")
    terms = lhs.split(",")
    if len(terms) != 2 or not out:
        raise Skip("Einsum without two operands and an explicit output")
    last = out[-1]
    owners = [i for i, t in enumerate(terms) if last in t]
    if len(owners) != 1 or terms[owners[0]].count(last) != 1 or out.count(last) != 1:
        raise Skip(f"Einsum '{equation}': its last output index is not one operand's own")
    ib = owners[0]
    b, a = node.inputs[ib], node.inputs[1 - ib]
    if b.shape is None or len(b.shape) != len(terms[ib]):
        raise Skip(f"Einsum '{equation}': operand shapes unknown")
    n = _static(b.shape[terms[ib].index(last)])
    if n is None:
        raise Skip(f"Einsum '{equation}': its output columns are not a static size")
    check = next(c for c in string.ascii_letters if c not in equation)
    b_checks = terms[ib].replace(last, check)
    to_checks = f"{terms[ib]},{last}{check}->{b_checks}"
    new_terms = list(terms)
    new_terms[ib] = b_checks
    parity = f"{new_terms[0]},{new_terms[1]}->{out.replace(last, check)}"
    contracted = [c for c in terms[ib] if c in terms[1 - ib] and c not in out]
    inner = int(np.prod([_static(b.shape[terms[ib].index(c)]) or 1 for c in contracted])) if contracted else 1
    return ProductForm(a, b, n, inner, to_checks, parity, ib == 0)


def operand_type(form: ProductForm) -> np.dtype:
    """The operands' type (float32 when shapes do not say)."""
    kinds = {np.dtype(t.dtype) for t in (form.a, form.b) if t.dtype is not None}
    return kinds.pop() if len(kinds) == 1 else np.dtype(np.float32)


def product_parity(graph: gs.Graph, node: gs.Node, form: ProductForm, layout: Layout) -> gs.Variable:
    """Append B' = B · Gᵀ and P = A · B' for ``node``; returns P (its checks on the last axis)."""
    name, dtype = node.name, operand_type(form)
    g_t = gs.Constant(f"{name}__ecc_checks_g", np.ascontiguousarray(layout.parity_matrix().T.astype(dtype)))
    b_checks = gs.Variable(f"{name}__ecc_b_checks", dtype=dtype)
    p = gs.Variable(f"{node.outputs[0].name}__ecc_parity", dtype=dtype)
    if form.parity is None:
        graph.nodes += [gs.Node("MatMul", f"{name}__ecc_b_checks", {}, [form.b, g_t], [b_checks]),
                        gs.Node("MatMul", f"{name}__ecc_parity", {}, [form.a, b_checks], [p])]
    else:
        operands = [b_checks, form.a] if form.b_first else [form.a, b_checks]
        graph.nodes += [gs.Node("Einsum", f"{name}__ecc_b_checks", {"equation": form.to_checks}, [form.b, g_t],
                                [b_checks]),
                        gs.Node("Einsum", f"{name}__ecc_parity", {"equation": form.parity}, operands, [p])]
    return p


def protect_product(graph: gs.Graph, node: gs.Node, options, model_id: str) -> Protected:
    """C = A · B of two activations: parity columns from the operands, C decoded with them."""
    if any(is_quantised_weight(t) for t in node.inputs):
        raise Skip(QUANTISED)
    if not is_activation_product(node):
        raise Skip("an Einsum with a constant operand is not protected yet")
    form = product_form(node)
    if options.scale == "input":
        raise Skip("scale='input' bounds the noise by constant weights; a product of two activations "
                   "needs scale='output'")
    for t in (form.a, form.b):
        if t.dtype is not None and np.dtype(t.dtype) not in FLOAT_TYPES:
            raise Skip(f"operands of type {np.dtype(t.dtype)} are not supported (float32 and float16 only)")
    dtype = operand_type(form)
    layout = layout_for(form.columns, options)
    concat = join_parity(graph, node, product_parity(graph, node, form, layout))
    gains = layout.output_noise_gains()
    act = emit_decoder(graph, concat, form.a, layout, -1, (gains, [0.0] * len(gains)), options, model_id,
                       layer=node.name, dtype=dtype)
    checks = layout.total_channels - form.columns
    return Protected(node.name, node.op, "code", form.columns, layout.parity_per_group, layout.block, layout.parity,
                     1, params=0, extra_params=0, macs_per_vector=form.columns * form.inner,
                     extra_macs_per_vector=checks * 2 * form.inner, activation=act, dtype=str(dtype))
