"""ProductCheck (C = A B of two activations, its parity computed in the kernel) against its numpy
oracle; bad shapes give error statuses, not crashes."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import onnx_ecc
from onnx_ecc import ops
from onnx_ecc.codes import Layout
from onnx_ecc.ops.oracles import product_check, product_check_ratios

TOLERANCE = 64.0


def _model(attrs, with_flag=False):
    inputs = ["A", "B", "C"] + (["Flag"] if with_flag else [])
    types = [TensorProto.FLOAT] * 3 + [TensorProto.BOOL]
    node = ops.PRODUCT_CHECK.make_node(inputs, ["Raised"], "op", **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, t, None) for n, t in zip(inputs, types)],
                          [helper.make_tensor_value_info("Raised", TensorProto.BOOL, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.DOMAIN, 1)],
                             ir_version=9)


def _session(attrs, with_flag=False):
    return ort.InferenceSession(_model(attrs, with_flag).SerializeToString(), sess_options=onnx_ecc.session_options(),
                                providers=["CPUExecutionProvider"])


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


def _run(attrs, a, b, c, flag=None):
    """(Raised, this run's counts) of one ProductCheck."""
    before = _counts(attrs["model_id"], attrs["layer"])
    feeds = {"A": a, "B": b, "C": c} | ({"Flag": np.array([flag])} if flag is not None else {})
    raised = _session(attrs, flag is not None).run(None, feeds)[0]
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
