"""Decode's known erasures against the numpy oracle: erasures solved first and one transient error
per block located beyond them, learned after ``learn_after`` runs, released when the unit reads
right again, and bad erasure attributes refused with an error status."""

from __future__ import annotations

import numpy as np
import pytest
from test_ops import _decode_attrs, _encoded, _session, _single_op_model

import onnx_ecc
from onnx_ecc import ops
from onnx_ecc.codes import Layout
from onnx_ecc.ops.oracles import ErasureLearner, decode

# rows (inner 1: the row sweeps, four blocks at once with parity 2) and planar layouts
CASES = [(Layout(128, 32, 2), ()), (Layout(96, 32, 3), ()), (Layout(70, 32, 3), (5, 3)),
         (Layout(48, 8, 3, groups=2), (6,)), (Layout(40, 20, 4), (9,))]


def _channel(layout: Layout, group: int, block: int, pos: int) -> int:
    tpg = layout.total_channels // layout.groups
    if pos < layout.block_sizes[block]:
        return group * tpg + block * layout.block + pos
    return group * tpg + layout.data_per_group + block * layout.parity + pos - layout.block_sizes[block]


def _attrs(layout, rest, **extra):
    return {**_decode_attrs(layout), "axis": 1 if rest else -1, **extra}


def _model(layout, rest, **extra):
    return _single_op_model(ops.DECODE, ["Y"], _attrs(layout, rest, model_id="erasures-test",
                                                      layer=f"{layout}{rest}{sorted(extra.items())}", **extra))


def _data(layout, rest, seed):
    rng = np.random.default_rng(seed)
    if rest:
        return _encoded(rng, layout, rest, outer=3)
    y, clean = _encoded(rng, layout, (), outer=64)
    return y.reshape(64, -1), clean.reshape(64, -1)


def _counts(layer):
    return onnx_ecc.read_counters("erasures-test")[layer]


@pytest.mark.parametrize("layout,rest", CASES, ids=str)
def test_known_erasures_and_one_transient_error_per_block_equal_the_oracle_and_the_truth(layout, rest):
    y, clean = _data(layout, rest, layout.total_channels)
    rng = np.random.default_rng(1)
    dead = [_channel(layout, g, k, 2) for g in range(layout.groups) for k in range(len(layout.block_sizes))]
    dead += [_channel(layout, 0, 0, layout.block_sizes[0])]  # a dead parity channel too
    y = y.copy()
    ax = 1 if rest else -1
    np.moveaxis(y, ax, 0)[dead] = 0.0
    # one transient error per block and vector, at a live position (parity >= 3 leaves room for one)
    yv = np.moveaxis(y, ax, 0)
    for g in range(layout.groups):
        for k, b in enumerate(layout.block_sizes):
            erased = 2 if (g, k) == (0, 0) else 1
            if layout.parity - erased >= 2:
                for vec in range(0, yv[0].size, 3):
                    pos = 3 + (vec + k) % (b - 3)
                    idx = np.unravel_index(vec, yv[0].shape)
                    yv[(_channel(layout, g, k, pos),) + idx] += 7.0
    attrs = _attrs(layout, rest, erasures=dead)
    session = _session(_model(layout, rest, erasures=dead))
    got = session.run(None, {"Y": y})[0]
    want, counts = decode(y, **attrs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, clean, rtol=1e-4, atol=1e-4)
    kernel = _counts(f"{layout}{rest}{[('erasures', dead)]}")
    assert (kernel.flagged, kernel.corrected_blocks, kernel.corrected_values, kernel.uncorrectable) == \
        (counts["flagged"], counts["corrected_blocks"], counts["corrected_values"], counts["uncorrectable"])
    assert counts["uncorrectable"] == 0 and (counts["flagged"] > 0) == (layout.parity >= 3)
    assert kernel.erasures == tuple(sorted(dead)) and kernel.dead_units == len(dead)


@pytest.mark.parametrize("layout,rest", CASES, ids=str)
def test_a_dead_channel_is_learned_after_three_runs_and_released_when_it_reads_right(layout, rest):
    y, clean = _data(layout, rest, 7)
    ax = 1 if rest else -1
    dead = _channel(layout, layout.groups - 1, 0, 1)
    broken = y.copy()
    np.moveaxis(broken, ax, 0)[dead] = 0.0
    session = _session(_model(layout, rest))
    layer = f"{layout}{rest}[]"
    learner = ErasureLearner(layout)
    attrs = _attrs(layout, rest)
    for run, feed in enumerate([broken] * 4 + [y] * 4):
        got = session.run(None, {"Y": feed})[0]
        marks = {}
        want, counts = decode(feed, **attrs, erasures=learner.channels, marks=marks)
        learner.update(marks)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got, clean, rtol=1e-4, atol=1e-4)
        assert _counts(layer).erasures == tuple(learner.channels), run
        assert learner.channels == ([dead] if 2 <= run <= 5 else []), run
        if run == 3:  # decoded with the erasure: nothing is flagged any more
            assert counts["flagged"] == 0


def test_no_erasure_is_learned_from_clean_data_or_one_off_errors():
    layout = Layout(96, 32, 3)
    session = _session(_model(layout, ()))
    for run in range(6):
        y, _ = _data(layout, (), 100 + run)
        y[run % 64, (run * 5) % 96] += 9.0  # a transient error, elsewhere each run
        session.run(None, {"Y": y})
    assert _counts(f"{layout}()[]").erasures == ()


def test_learn_after_zero_keeps_the_erasures_as_given():
    layout = Layout(64, 32, 2)
    y, clean = _data(layout, (), 3)
    session = _session(_model(layout, (), erasures=[4], learn_after=0))
    for _ in range(4):
        np.testing.assert_allclose(session.run(None, {"Y": y})[0], clean, rtol=1e-4, atol=1e-4)
    assert _counts(f"{layout}()[('erasures', [4]), ('learn_after', 0)]").erasures == (4,)


@pytest.mark.parametrize("erasures,message", [([70], "erasure channel 70 out of range"), ([-1], "out of range"),
                                              ([0, 1, 2], "more than its parity 2")])
def test_bad_erasures_are_an_error_status_naming_the_layer(erasures, message):
    layout = Layout(64, 32, 2)
    with pytest.raises(Exception, match=message) as info:
        _session(_model(layout, (), erasures=erasures))
    assert "Decode(" in str(info.value)
