"""Which layout a protected ConvInteger (quantize_dynamic's convs) is cheaper in, measured in one run.

For every ConvInteger of the zoo CNN and the pretrained MNIST CNN under quantize_dynamic, at its input
shape: the original ConvInteger alone; NCHW, as rules/integer_ops.py emits it (ConvInteger with the
parity filters appended -> Int32Decode on axis 1); and channels last as the QDQ rule runs convs
(Transpose -> Im2ColNhwc -> MatMulInteger with the parity columns -> Int32Decode -> Transpose back to
NCHW int32). The channels-last variant pads with a fixed zero point here (a protected model would need
the run-time zero point of DynamicQuantizeLinear as an input of Im2ColNhwc), which does not change its
cost. Prints median ms and the ratios to the original, interleaved repeats.

    python benchmarks/conv_integer_layout.py [--batches 1,8] [--repeats 50]
"""

from __future__ import annotations

import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import onnx_ecc
from onnx_ecc import ops, zoo
from onnx_ecc.codes import integer
from onnx_ecc.transform.calibration import probe
from onnx_ecc.zoo.quantised import quantize_dynamic_int8
from overhead import _session, time_interleaved

ZP = 3  # the input zero point of every variant (fixed: see the module docstring)


def _model(nodes, inits, y_type=TensorProto.INT32):
    g = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.UINT8, None)],
                          [helper.make_tensor_value_info("y", y_type, None)],
                          initializer=inits + [numpy_helper.from_array(np.array(ZP, np.uint8), "zp")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.DOMAIN, 1),
                                            helper.make_opsetid("com.microsoft", 1)], ir_version=9)
    return m


def variants(w: np.ndarray, attrs: dict) -> dict[str, onnx.ModelProto]:
    """The original, NCHW and channels-last protected single-layer models of one int8 conv weight."""
    m = w.shape[0]
    digits, planes, g = integer.parity_rows(w.reshape(m, -1), min(32, m), 2)
    code = dict(data_channels=m, block=min(32, m), parity=2, generator=[int(v) for v in g.ravel()], planes=planes)
    original = _model([helper.make_node("ConvInteger", ["x", "w", "zp"], ["y"], **attrs)],
                      [numpy_helper.from_array(w, "w")])
    w_aug = np.concatenate([w, digits.reshape((-1,) + w.shape[1:])])
    nchw = _model([helper.make_node("ConvInteger", ["x", "w", "zp"], ["acc"], **attrs),
                   ops.INT32_DECODE.make_node(["acc"], ["y"], "decode", axis=1, **code)],
                  [numpy_helper.from_array(w_aug, "w")])
    taps = np.concatenate([w, digits.reshape((-1,) + w.shape[1:])]).transpose(0, 2, 3, 1).reshape(len(w_aug), -1)
    kh, kw = w.shape[2:]
    nhwc = _model([helper.make_node("Transpose", ["x"], ["x_nhwc"], perm=[0, 2, 3, 1]),
                   ops.IM2COL_NHWC.make_node(["x_nhwc"], ["cols"], "im2col", kernel_shape=[int(kh), int(kw)],
                                             strides=attrs.get("strides", [1, 1]), pads=attrs.get("pads", [0] * 4),
                                             dilations=attrs.get("dilations", [1, 1]), pad_value=ZP),
                   helper.make_node("MatMulInteger", ["cols", "w", "zp"], ["acc"]),
                   ops.INT32_DECODE.make_node(["acc"], ["z"], "decode", axis=-1, **code),
                   helper.make_node("Transpose", ["z"], ["y"], perm=[0, 3, 1, 2])],
                  [numpy_helper.from_array(np.ascontiguousarray(taps.T.astype(np.int8)), "w")])
    return {"original": original, "nchw": nchw, "channels_last": nhwc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    print(f"{'model':10s} {'layer':40s} {'batch':>5s} {'orig ms':>8s} {'nchw':>7s} {'ch.last':>7s}")
    for name in ("cnn", "mnist_cnn"):
        model = quantize_dynamic_int8(getattr(zoo, name)())
        inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        convs = [n for n in model.graph.node if n.op_type == "ConvInteger"]
        for batch in (int(b) for b in args.batches.split(",")):
            shape = [batch] + list(zoo.input_shape(model))[1:]
            feeds = {model.graph.input[0].name: np.random.default_rng(0).random(shape, dtype=np.float32)}
            xs = probe(model, [n.input[0] for n in convs])(feeds)
            for n in convs:
                attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
                sessions = {k: _session(m, "default", 0) for k, m in variants(inits[n.input[1]], attrs).items()}
                x = {"x": xs[n.input[0]]}
                want = sessions["original"].run(None, x)[0]
                for k in ("nchw", "channels_last"):  # the same int32 output (checked before timing)
                    np.testing.assert_array_equal(sessions[k].run(None, x)[0], want)
                med = time_interleaved(sessions, x, args.repeats)
                print(f"{name:10s} {n.name[-40:]:40s} {batch:5d} {1e3 * med['original']:8.3f} "
                      f"{med['nchw'] / med['original']:7.2f} {med['channels_last'] / med['original']:7.2f}", flush=True)


if __name__ == "__main__":
    onnx_ecc.session_options()  # the library is found (and loaded) before any session is made
    main()
