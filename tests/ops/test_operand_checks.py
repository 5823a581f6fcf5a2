"""The checks that compute a product's parity from its operands in the kernel, against their numpy
oracles: ProductCheck (C = alpha A B of two activations) and LinearCheck (Y = X W + bias of a weight
layer, from X and the parity weights W Gᵀ); bad shapes give error statuses, not crashes."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import onnx_ecc
from onnx_ecc import ops
from onnx_ecc.codes import Layout
from onnx_ecc.ops.oracles import linear_check, linear_check_ratios, product_check, product_check_ratios

TOLERANCE = 64.0


def _model(attrs, with_flag=False, decl=ops.PRODUCT_CHECK, with_bias=False):
    inputs = [n for n, _ in decl.inputs[:3]] + (["Flag"] if with_flag or with_bias else []) + (["PB"] if with_bias else [])
    node = decl.make_node(inputs if with_flag or not with_bias else inputs[:3] + ["", "PB"], ["Raised"], "op", **attrs)
    graph_inputs = [n for n in node.input if n]
    types = {"Flag": TensorProto.BOOL}
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, types.get(n, TensorProto.FLOAT), None)
                                        for n in graph_inputs],
                          [helper.make_tensor_value_info("Raised", TensorProto.BOOL, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.DOMAIN, 1)],
                             ir_version=9)


def _session(attrs, with_flag=False, decl=ops.PRODUCT_CHECK, with_bias=False):
    return ort.InferenceSession(_model(attrs, with_flag, decl, with_bias).SerializeToString(),
                                sess_options=onnx_ecc.session_options(), providers=["CPUExecutionProvider"])


def _attrs(layout: Layout, **extra):
    n = len(layout.block_sizes) * layout.parity
    return dict(data_channels=layout.data_channels, block=layout.block, parity=layout.parity,
                generator=layout.generator_attribute(), noise_gain=layout.output_noise_gains(),
                noise_offset=[0.0] * n, tolerance=TOLERANCE, **extra)


def _operands(rng, batch, m, k, n):
    """A, B and their product C (computed in float64, then rounded: a fault-free output)."""
    a = rng.standard_normal(batch + (m, k)).astype(np.float32)
    b = rng.standard_normal(batch + (k, n)).astype(np.float32)
    c = (a.astype(np.float64) @ b.astype(np.float64)).astype(np.float32)
    return a, b, c


def _counts(model_id, layer):
    return onnx_ecc.read_counters(model_id).get(f"{layer} (parity check)")


def _run(attrs, a, b, c, flag=None, decl=ops.PRODUCT_CHECK, pb=None):
    """(Raised, this run's counts) of one ProductCheck (or LinearCheck: X, WG, Y and PB)."""
    before = _counts(attrs["model_id"], attrs["layer"])
    names = [n for n, _ in decl.inputs[:3]]
    feeds = dict(zip(names, (a, b, c))) | ({"Flag": np.array([flag])} if flag is not None else {}) \
        | ({"PB": pb} if pb is not None else {})
    raised = _session(attrs, flag is not None, decl, pb is not None).run(None, feeds)[0]
    after = _counts(attrs["model_id"], attrs["layer"])
    assert raised.shape == (1,) and raised.dtype == np.bool_
    return bool(raised[0]), (after - before if before else after)


CASES = [  # layout, batch axes, M, K, N = data_channels, stride
    (Layout(32, 32, 2), (2, 3), 32, 64, 8),
    (Layout(64, 32, 2), (4,), 32, 32, 8),
    (Layout(40, 16, 3), (2, 2), 20, 16, 3),  # a short last block; M not a multiple of the stride
    (Layout(24, 32, 2), (3,), 9, 12, 1),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_product_check_matches_the_oracle(case):
    layout, batch, m, k, stride = CASES[case]
    rng = np.random.default_rng(100 + case)
    a, b, c = _operands(rng, batch, m, k, layout.data_channels)
    attrs = _attrs(layout, stride=stride, layer=f"prod{case}", model_id="product-test")
    # clean: no flag, well below the threshold (the test below is not on a knife's edge)
    assert product_check_ratios(a, b, c, **attrs).max() < TOLERANCE / 4
    raised, counts = _run(attrs, a, b, c)
    rows = -(-m // stride)
    assert not raised and product_check(a, b, c, **attrs) == (False, 0)
    assert (counts.vectors, counts.flagged) == (int(np.prod(batch)) * rows * len(layout.block_sizes), 0)
    assert _run(attrs, a, b, c, flag=True)[0]  # the previous check's flag goes on
    # one wrong value in a sampled row of C: flagged (its block), as the oracle says
    bad = c.copy()
    index = tuple(int(rng.integers(0, d)) for d in batch) + (stride * int(rng.integers(0, rows)), layout.data_channels - 1)
    bad[index] += 8.0
    raised, counts = _run(attrs, a, b, bad)
    assert raised and counts.flagged == 1 and product_check(a, b, bad, **attrs) == (True, 1)
    if stride > 1:  # in an unsampled row: not seen
        bad = c.copy()
        bad[index[:-2] + (1, 0)] += 8.0
        raised, counts = _run(attrs, a, b, bad)
        assert not raised and counts.flagged == 0 and product_check(a, b, bad, **attrs) == (False, 0)
    # a wrong operand: the parity of the sampled rows no longer matches C (B: every row; A: its row)
    for name, t in (("A", a), ("B", b)):
        wrong = t.copy()
        wrong[(0,) * len(batch) + (0, 0)] = np.nan if name == "A" else t[(0,) * len(batch) + (0, 0)] + 16.0
        args = (wrong, b, c) if name == "A" else (a, wrong, c)
        raised, counts = _run(attrs, *args)
        want = product_check(*args, **attrs)
        assert raised and want[0] and counts.flagged == want[1] > 0, name


def test_product_check_scales_the_parity_by_alpha():
    """C = alpha A B (attention's scale fused into the product): checked against alpha A (B Gᵀ)."""
    layout = Layout(64, 32, 2)
    rng = np.random.default_rng(11)
    a, b, c = _operands(rng, (2, 3), 16, 32, layout.data_channels)
    alpha = 1 / np.sqrt(32)
    c = (np.float64(alpha) * (a.astype(np.float64) @ b.astype(np.float64))).astype(np.float32)
    attrs = _attrs(layout, stride=4, alpha=float(alpha), layer="scaled", model_id="product-test")
    assert product_check_ratios(a, b, c, **attrs).max() < TOLERANCE / 4
    raised, counts = _run(attrs, a, b, c)
    assert not raised and counts.flagged == 0 and product_check(a, b, c, **attrs) == (False, 0)
    unscaled = dict(attrs, alpha=1.0, layer="unscaled")  # without alpha every checked block fails
    raised, counts = _run(unscaled, a, b, c)
    assert raised and counts.flagged == product_check(a, b, c, **unscaled)[1] == 6 * 4 * 2


def test_product_check_fail_stop_names_the_layer():
    layout = Layout(32, 32, 2)
    a, b, c = _operands(np.random.default_rng(7), (2,), 16, 8, 32)
    c[1, 8, 3] = np.inf
    sess = _session(_attrs(layout, stride=8, fail_stop=1, layer="scores3"))
    with pytest.raises(Exception, match=r"ProductCheck\(scores3\).*1 block"):
        sess.run(None, {"A": a, "B": b, "C": c})


@pytest.mark.parametrize("shapes, message", [
    (((2, 4, 8), (3, 8, 32), (2, 4, 32)), "same leading"),      # batch axes differ (no broadcasting)
    (((4, 8), (2, 8, 32), (2, 4, 32)), "same rank"),            # broadcast A
    (((2, 4, 8), (2, 7, 32), (2, 4, 32)), r"need A \[..., M, K\]"),  # K differs
    (((2, 4, 8), (2, 8, 32), (2, 5, 32)), r"need A \[..., M, K\]"),  # C's rows differ
    (((2, 4, 8), (2, 8, 16), (2, 4, 16)), "16 columns, the code expects 32"),
    (((8,), (8, 32), (1, 32)), "same rank"),
])
def test_product_check_rejects_bad_shapes_with_an_error(shapes, message):
    sess = _session(_attrs(Layout(32, 32, 2), layer="bad"))
    feeds = {n: np.zeros(s, np.float32) for n, s in zip("ABC", shapes)}
    with pytest.raises(Exception, match=rf"ProductCheck\(bad\).*{message}"):
        sess.run(None, feeds)
    with pytest.raises(ValueError):
        product_check(*feeds.values(), **_attrs(Layout(32, 32, 2)))


def test_product_check_rejects_a_bad_flag_and_bad_attributes():
    layout = Layout(32, 32, 2)
    a, b, c = _operands(np.random.default_rng(8), (2,), 4, 8, 32)
    with pytest.raises(Exception, match=r"ProductCheck"):
        _session(_attrs(layout), with_flag=True).run(None, {"A": a, "B": b, "C": c, "Flag": np.array([True, False])})
    with pytest.raises(Exception, match=r"ProductCheck.*stride"):
        _session(_attrs(layout, stride=0))


def _linear_operands(rng, lead, k, layout: Layout, with_bias: bool):
    """X, the layer's parity weights WG = W Gᵀ [K, checks], its bias parity PB (or None) and the
    fault-free output Y = X W + bias (computed in float64, then rounded)."""
    n = layout.data_channels
    x = rng.standard_normal(lead + (k,)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32) if with_bias else np.zeros(n, np.float32)
    y = (x.astype(np.float64) @ w.astype(np.float64) + bias).astype(np.float32)
    m = layout.parity_matrix()  # [checks, N]
    wg = (m @ w.T.astype(np.float64)).T.astype(np.float32)
    pb = (m @ bias.astype(np.float64)).astype(np.float32) if with_bias else None
    return x, wg, y, pb


LINEAR_CASES = [  # layout, leading axes, K, stride, bias
    (Layout(384, 32, 2), (2, 32), 64, 8, False),   # BERT-like: 24 checks (a tile of 16, one of 8)
    (Layout(64, 32, 2), (37,), 40, 1, True),       # every row; 37 rows (tiles of 4 rows, then 1)
    (Layout(40, 16, 3), (3, 7), 24, 3, True),      # a short last block, 9 checks (8 and one more)
    (Layout(1536, 32, 2), (50,), 16, 8, False),    # 96 checks
]


@pytest.mark.parametrize("case", range(len(LINEAR_CASES)))
def test_linear_check_matches_the_oracle(case):
    layout, lead, k, stride, with_bias = LINEAR_CASES[case]
    rng = np.random.default_rng(300 + case)
    x, wg, y, pb = _linear_operands(rng, lead, k, layout, with_bias)
    attrs = _attrs(layout, stride=stride, layer=f"lin{case}", model_id="linear-test")
    decl = ops.LINEAR_CHECK

    def run(x_, wg_, y_, flag=None):
        return _run(attrs, x_, wg_, y_, flag, decl, pb)

    def oracle(x_, wg_, y_):
        return linear_check(x_, wg_, y_, False, pb, **attrs)

    assert linear_check_ratios(x, wg, y, pb, **attrs).max() < TOLERANCE / 4  # clean, far from the threshold
    rows = -(-int(np.prod(lead)) // stride)
    raised, counts = run(x, wg, y)
    assert not raised and oracle(x, wg, y) == (False, 0)
    assert (counts.vectors, counts.flagged) == (rows * len(layout.block_sizes), 0)
    assert run(x, wg, y, flag=True)[0]
    flat = y.reshape(-1, y.shape[-1])
    # one wrong value in a checked row: its block flagged; in an unchecked row: not seen
    row = stride * int(rng.integers(0, rows))
    bad = flat.copy()
    bad[row, layout.data_channels - 1] += 8.0
    raised, counts = run(x, wg, bad.reshape(y.shape))
    assert raised and counts.flagged == 1 and oracle(x, wg, bad.reshape(y.shape)) == (True, 1)
    if stride > 1:
        bad = flat.copy()
        bad[1, 0] += 8.0
        raised, counts = run(x, wg, bad.reshape(y.shape))
        assert not raised and counts.flagged == 0
    # a wrong input feature of a checked row, or a wrong parity weight: every block it feeds fails
    wrong_x = x.reshape(-1, k).copy()
    wrong_x[row, 0] += 16.0
    wrong_wg = wg.copy()
    wrong_wg[k - 1, wg.shape[1] - 1] = np.nan
    for args in ((wrong_x.reshape(x.shape), wg, y), (x, wrong_wg, y)):
        raised, counts = run(*args)
        want = oracle(*args)
        assert raised and want[0] and counts.flagged == want[1] > 0


def test_linear_check_fail_stop_names_the_layer():
    layout = Layout(32, 32, 2)
    x, wg, y, _ = _linear_operands(np.random.default_rng(9), (16,), 8, layout, False)
    y[8, 3] = np.inf
    sess = _session(_attrs(layout, stride=8, fail_stop=1, layer="ff3"), decl=ops.LINEAR_CHECK)
    with pytest.raises(Exception, match=r"LinearCheck\(ff3\).*1 block"):
        sess.run(None, {"X": x, "WG": wg, "Y": y})


@pytest.mark.parametrize("shapes, message", [
    (((4, 8), (8, 2), (5, 32)), "same leading axes"),
    (((4, 8), (8, 2), (32,)), "same rank"),
    (((4, 8), (7, 2), (4, 32)), r"WG must be \[8, 2\]"),
    (((4, 8), (8, 3), (4, 32)), r"WG must be \[8, 2\]"),
    (((4, 8), (8, 2), (4, 16)), "16 columns, the code expects 32"),
])
def test_linear_check_rejects_bad_shapes_with_an_error(shapes, message):
    sess = _session(_attrs(Layout(32, 32, 2), layer="badlin"), decl=ops.LINEAR_CHECK)
    feeds = {n: np.zeros(s, np.float32) for n, s in zip(("X", "WG", "Y"), shapes)}
    with pytest.raises(Exception, match=rf"LinearCheck\(badlin\).*{message}"):
        sess.run(None, feeds)
    with pytest.raises(ValueError):
        linear_check(*feeds.values(), **_attrs(Layout(32, 32, 2)))


def test_linear_check_rejects_a_bad_bias_parity():
    layout = Layout(32, 32, 2)
    x, wg, y, _ = _linear_operands(np.random.default_rng(10), (4,), 8, layout, False)
    sess = _session(_attrs(layout, layer="pb"), decl=ops.LINEAR_CHECK, with_bias=True)
    with pytest.raises(Exception, match=r"LinearCheck\(pb\).*PB must hold 2"):
        sess.run(None, {"X": x, "WG": wg, "Y": y, "PB": np.zeros(3, np.float32)})
