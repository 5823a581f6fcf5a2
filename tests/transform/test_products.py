"""Products of two activations (attention's Q·Kᵀ and P·V, MatMul and Einsum): parity from the
operands at run time, errors in their outputs corrected inline or recomputed by the rerun strategy."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import with_wrong_value, zoo_model
from onnx import TensorProto, helper, numpy_helper

import onnx_ecc
from onnx_ecc.runtime import optimized
from onnx_ecc.transform.record import read_protection
from onnx_ecc.transform.calibration import probe
from onnx_ecc.transform.rules.products import is_activation_product

ERRORS = ("x16", "x-16", "inf", "nan")


def _plain(model, feeds):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _products(model) -> list[str]:
    import onnx_graphsurgeon as gs

    return [n.name for n in gs.import_onnx(model).nodes if is_activation_product(n)]


def _product_tensor(protected, layer):
    """The tensor a protected product writes its own result to (before parity joins it)."""
    return next(n for n in protected.graph.node if n.name == layer).output[0]


def _attention_feeds(model, batch=2, seed=0):
    shape = [batch] + [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    return {model.graph.input[0].name: np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


@pytest.mark.parametrize("strategy", ["inline", "rerun"])
def test_every_attention_product_of_an_encoder_is_protected_with_equal_outputs(strategy):
    model = zoo_model("transformer_encoder")
    products = _products(model)
    assert len(products) == 4  # scores and context of each of the two layers
    protected = onnx_ecc.transform(model, strategy=strategy)
    record = read_protection(protected)
    assert set(products) <= {p["name"] for p in record["protected"]}
    assert not [s for s in record["skipped"] if s["name"] in products]
    feeds = _attention_feeds(model)
    session = onnx_ecc.ProtectedSession(protected)
    np.testing.assert_allclose(session.run(None, feeds)[0], _plain(model, feeds), rtol=1e-5, atol=1e-5)
    assert session.last_report.flagged == 0 and session.last_report.checks_failed == 0
    # the checks read the products' operands: onnxruntime's fusions of the original all stay
    assert optimized.lost_fusions(model, protected) == {}


@pytest.mark.parametrize("strategy", ["inline", "rerun"])
@pytest.mark.parametrize("kind", ERRORS)
def test_a_gross_error_in_each_attention_product_is_corrected(strategy, kind):
    model = zoo_model("transformer_encoder")
    protected = onnx_ecc.transform(model, strategy=strategy)
    feeds = _attention_feeds(model, seed=3)
    clean = _plain(model, feeds)
    shapes = {k: v.shape for k, v in probe(model, [n.output[0] for n in model.graph.node
                                                   if n.name in _products(model)])(feeds).items()}
    for i, layer in enumerate(_products(model)):
        original_out = next(n for n in model.graph.node if n.name == layer).output[0]
        shape = shapes[original_out]
        # the rerun strategy's fast path checks every 8th row of each product (as for weight layers)
        where = (7 + 13 * i) % shape[-1] if strategy == "rerun" else 7 + 13 * i
        wrong = _plain(with_wrong_value(model, original_out, shape, kind, where), feeds)
        assert not np.allclose(wrong, clean, rtol=1e-4, atol=1e-4, equal_nan=False), layer  # the error matters
        faulty = with_wrong_value(protected, _product_tensor(protected, layer), shape, kind, where)
        session = onnx_ecc.ProtectedSession(faulty)
        got = session.run(None, feeds)[0]
        report = session.last_report
        assert report.uncorrectable == 0, (layer, report.summary())
        assert report.flagged > 0 or report.checks_failed > 0, (layer, report.summary())
        np.testing.assert_allclose(got, clean, rtol=1e-4, atol=1e-4, err_msg=layer)


def _einsum_attention(batch=2, heads=2, tokens=8, dim=16) -> onnx.ModelProto:
    """softmax(Q Kᵀ) V written with Einsum, as some exporters emit attention."""
    rng = np.random.default_rng(0)
    wq, wk, wv = (rng.standard_normal((dim * heads, dim * heads)).astype(np.float32) * 0.2 for _ in range(3))
    nodes = [helper.make_node("MatMul", ["x", w], [f"{w}_out"], f"{w}_proj") for w in ("wq", "wk", "wv")]
    shape = numpy_helper.from_array(np.array([batch, tokens, heads, dim], np.int64), "split_heads")
    for w in ("wq", "wk", "wv"):
        nodes.append(helper.make_node("Reshape", [f"{w}_out", "split_heads"], [f"{w}_heads"], f"{w}_reshape"))
    nodes += [
        helper.make_node("Einsum", ["wq_heads", "wk_heads"], ["scores"], "scores", equation="bqhd,bkhd->bhqk"),
        helper.make_node("Softmax", ["scores"], ["probs"], "softmax", axis=-1),
        helper.make_node("Einsum", ["probs", "wv_heads"], ["context"], "context", equation="bhqk,bkhd->bqhd"),
    ]
    graph = helper.make_graph(
        nodes, "einsum_attention", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, tokens, dim * heads])],
        [helper.make_tensor_value_info("context", TensorProto.FLOAT, [batch, tokens, heads, dim])],
        [numpy_helper.from_array(wq, "wq"), numpy_helper.from_array(wk, "wk"), numpy_helper.from_array(wv, "wv"), shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize("strategy", ["inline", "rerun"])
def test_einsum_attention_products_are_protected_and_corrected(strategy):
    model = _einsum_attention()
    protected = onnx_ecc.transform(model, strategy=strategy)
    names = {p["name"] for p in read_protection(protected)["protected"]}
    assert {"scores", "context"} <= names
    feeds = _attention_feeds(model, seed=1)
    clean = _plain(model, feeds)
    np.testing.assert_allclose(onnx_ecc.ProtectedSession(protected).run(None, feeds)[0], clean, rtol=1e-5, atol=1e-5)
    # the parity columns are the code's combinations of the product's columns (numpy oracle)
    inline = onnx_ecc.transform(model)
    values = probe(inline, ["scores__ecc_data", "scores__ecc_parity"])(feeds)
    from onnx_ecc.codes import Layout

    layout = Layout(8, 8, 2)
    want = values["scores__ecc_data"].astype(np.float64) @ layout.parity_matrix().T
    np.testing.assert_allclose(values["scores__ecc_parity"], want, rtol=1e-4, atol=1e-4)
    for layer, shape in (("scores", (2, 2, 8, 8)), ("context", (2, 8, 2, 16))):
        faulty = with_wrong_value(protected, _product_tensor(protected, layer), shape, "x16", 5)
        session = onnx_ecc.ProtectedSession(faulty)
        np.testing.assert_allclose(session.run(None, feeds)[0], clean, rtol=1e-4, atol=1e-4, err_msg=layer)
        assert session.last_report.uncorrectable == 0


def test_products_without_a_static_column_count_are_left_alone_with_the_reason():
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"], "dynamic_product")], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 4, 8]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 8, "n"])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2, 4, "n"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    record = read_protection(onnx_ecc.transform(model))
    assert record["protected"] == []
    assert "static size" in record["skipped"][0]["reason"]


def test_bert_attention_products_are_checked_by_product_checks_and_a_gross_error_is_corrected():
    """Under the rerun strategy every attention product of the BERT encoder (MatMul, the same batch
    axes) is checked by one ProductCheck reading its operands and output; a gross error in a
    product's output at a sampled row (row 0 of one head) fails that check and the rerun corrects it."""
    model = zoo_model("bert_encoder")
    products = _products(model)
    assert len(products) == 12  # scores and context of each of the 6 layers
    protected = onnx_ecc.transform(model, strategy="rerun")
    checks = {n.name: n for n in protected.graph.node if n.op_type == "ProductCheck"}
    nodes = {n.name: n for n in model.graph.node}
    by_layer = {}
    for n in checks.values():
        layer = next(a.s.decode() for a in n.attribute if a.name == "layer")
        by_layer[layer] = n
    assert set(by_layer) == set(products)
    producers = {o: n for n in model.graph.node for o in n.output}
    scales = {n.output[0]: float(numpy_helper.to_array(n.attribute[0].t)) for n in model.graph.node
              if n.op_type == "Constant" and n.attribute[0].t.dims == []}
    for layer in products:  # reads A, B and C of its product; a scaled operand unscaled, with alpha
        check, want, alpha = by_layer[layer], [], 1.0
        for t in nodes[layer].input:
            mul = producers.get(t)
            if mul is not None and mul.op_type == "Mul" and mul.input[1] in scales:
                want.append(mul.input[0])
                alpha *= scales[mul.input[1]]
            else:
                want.append(t)
        assert list(check.input[:3]) == want + list(nodes[layer].output)
        got_alpha = next((a.f for a in check.attribute if a.name == "alpha"), 1.0)
        assert got_alpha == pytest.approx(alpha, rel=1e-6)
    assert any(next((a.f for a in n.attribute if a.name == "alpha"), 1.0) != 1.0 for n in checks.values())
    # so that onnxruntime still fuses each scale into its product, as in the original
    fused = [sum(n.op_type == "FusedMatMul" for n in optimized.optimized_graph(m).node) for m in (model, protected)]
    assert fused[1] == fused[0] == 6
    # the products' old fast-path nodes (strided Slice of A, B Gᵀ and A B' MatMuls) are gone
    assert not [n.name for n in protected.graph.node if n.name.endswith(("__ecc_b_checks", "__ecc_parity_rows"))]
    feeds = _attention_feeds(model, seed=4)
    clean = _plain(model, feeds)
    session = onnx_ecc.ProtectedSession(protected)
    np.testing.assert_allclose(session.run(None, feeds)[0], clean, rtol=1e-5, atol=1e-5)
    assert session.last_report.checks_failed == 0 and session.last_report.flagged == 0
    shapes = {k: v.shape for k, v in probe(model, [nodes[p].output[0] for p in products])(feeds).items()}
    for layer in (products[0], products[7]):  # the scores of layer 0, the context of layer 3
        shape = shapes[nodes[layer].output[0]]
        where = int(np.prod(shape[1:])) + 5 * shape[-1] * 8 + 3  # batch 1, head 1, row 8: a sampled row
        assert (where // shape[-1]) % shape[-2] % 8 == 0
        wrong = _plain(with_wrong_value(model, nodes[layer].output[0], shape, "x-16", where), feeds)
        assert not np.allclose(wrong, clean, rtol=1e-4, atol=1e-4), layer  # the error matters
        faulty = with_wrong_value(protected, _product_tensor(protected, layer), shape, "x-16", where)
        session = onnx_ecc.ProtectedSession(faulty)
        model_id = next(a.s.decode() for a in by_layer[layer].attribute if a.name == "model_id")
        before = onnx_ecc.read_counters(model_id).get(f"{layer} (parity check)")
        got = session.run(None, feeds)[0]
        report = session.last_report
        assert report.checks_failed > 0 and report.uncorrectable == 0, (layer, report.summary())
        after = onnx_ecc.read_counters(model_id)[f"{layer} (parity check)"]  # this product's ProductCheck
        assert (after - before if before else after).flagged == 1, layer
        np.testing.assert_allclose(got, clean, rtol=1e-4, atol=1e-4, err_msg=layer)


def test_a_constant_scale_of_a_product_operand_becomes_its_alpha():
    """unscaled_operand: x * s, s * x and x / s give (x, s) or (x, 1/s); a scale that is not a
    constant float32 scalar leaves the operand as it is."""
    import onnx_graphsurgeon as gs

    from onnx_ecc.transform.strategies.parity_check import unscaled_operand

    x, y = gs.Variable("x", np.float32, [2, 4]), gs.Variable("y", np.float32, [2, 4])

    def scaled(op, inputs):
        out = gs.Variable(f"{op}_{len(inputs)}_{id(inputs)}", np.float32, [2, 4])
        gs.Node(op, f"n{id(inputs)}", inputs=inputs, outputs=[out])
        return out

    s = gs.Constant("s", np.array(8.0, np.float32))
    assert unscaled_operand(scaled("Mul", [x, s])) == (x, 8.0)
    assert unscaled_operand(scaled("Mul", [s, x])) == (x, 8.0)
    assert unscaled_operand(scaled("Div", [x, s])) == (x, 0.125)
    for kept in (scaled("Div", [s, x]), scaled("Mul", [x, y]),
                 scaled("Mul", [x, gs.Constant("v", np.ones(4, np.float32))]),
                 scaled("Mul", [x, gs.Constant("d", np.array(8.0, np.float64))]), x):
        assert unscaled_operand(kept) == (kept, 1.0)
