"""Protect the bundled Fashion-MNIST CNN, corrupt it, and show the errors corrected.

Transforms the bundled model, checks it against the original on real test images, then
flips an exponent bit in a stored weight and corrupts a layer output during inference, and
prints what the unprotected and the protected model make of it.
"""

from __future__ import annotations

import sys

import numpy as np


def add_arguments(parser) -> None:
    parser.add_argument("--model", help="ONNX model to use instead of the bundled one")
    parser.add_argument("--images", type=int, default=512, help="test images to run (default 512)")
    parser.add_argument("--bit", type=int, default=30, help="bit to flip in the stored weight (default 30: exponent MSB)")
    parser.add_argument("--seed", type=int, default=0)


def _images(model, n: int, seed: int):
    from onnx_ecc import datasets, zoo

    if list(zoo.input_shape(model))[1:] != [1, 28, 28]:  # another model: random inputs of its shape
        shape = [n] + list(zoo.input_shape(model))[1:]
        return np.random.default_rng(seed).random(shape, dtype=np.float32), None, "random inputs"
    try:
        data = datasets.load("fashion-mnist")
        return data.x_test[:n], data.y_test[:n], "Fashion-MNIST test images"
    except datasets.DatasetUnavailable:  # the Debian package is not installed: the bundled sample
        data = datasets.load_fashion_mnist_sample()
        return data.x_test[:n], data.y_test[:n], f"Fashion-MNIST test images (the {len(data.y_test)} bundled ones)"


def run(args) -> int:
    import onnx

    import onnx_ecc
    from onnx_ecc import ops, zoo
    from onnx_ecc.faults.single import flip_weight_bit, with_output_fault
    from onnx_ecc.transform.inspection import format_report
    from onnx_ecc.io import ModelFileError, load_model
    from onnx_ecc.transform.options import WEIGHT_LAYER_OPS

    try:
        model = load_model(args.model or zoo.bundled_default())
    except ModelFileError as e:
        print(f"onnx-ecc demo: error: {e}", file=sys.stderr)
        return 2
    protected = onnx_ecc.transform(model)
    print(format_report(protected))
    x, y, source = _images(model, args.images, args.seed)
    feed = {model.graph.input[0].name: x}
    print(f"\ninputs: {len(x)} {source}")

    def predict(m):
        sess = onnx_ecc.ProtectedSession(m)
        out = sess.run(None, feed)[0]
        return out, sess.last_report

    ref, _ = predict(model)
    clean, report = predict(protected)
    acc = (lambda o: f"{100 * (o.argmax(1) == y).mean():.2f}%") if y is not None else (lambda o: "n/a")
    print(f"fault-free: original accuracy {acc(ref)}, protected {acc(clean)}, "
          f"max |difference| {np.abs(clean - ref).max():.2e}, {report.summary()}")

    rng = np.random.default_rng(args.seed)
    layer = next(n for n in protected.graph.node if n.op_type in WEIGHT_LAYER_OPS and "__ecc_" in n.input[1])
    original_layer = next(n for n in model.graph.node if n.name == layer.name)
    w = onnx.numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == original_layer.input[1]))
    index = tuple(int(rng.integers(s)) for s in w.shape)
    bad_original, before, after = flip_weight_bit(model, original_layer.input[1], index, args.bit)
    bad_protected, _, _ = flip_weight_bit(protected, layer.input[1], index, args.bit)
    out_o, _ = predict(bad_original)
    out_p, rep = predict(bad_protected)
    print(f"\nmemory fault: bit {args.bit} of weight {original_layer.input[1]}{list(index)} flipped "
          f"({before:.4g} -> {after:.4g})")
    print(f"  original : accuracy {acc(out_o)}, {int((out_o.argmax(1) != ref.argmax(1)).sum())} predictions changed")
    print(f"  protected: accuracy {acc(out_p)}, {int((out_p.argmax(1) != ref.argmax(1)).sum())} predictions changed, "
          f"{rep.summary()}")

    decode = next(n for n in protected.graph.node if n.domain == ops.DOMAIN and n.op_type == ops.DECODE.name)
    out_p2, rep2 = predict(with_output_fault(protected, decode.input[0], seed=args.seed, count=8, bits=(30,)))
    print(f"\ncompute faults: 8 exponent-bit flips in the output of layer {layer.name}")
    print(f"  protected: accuracy {acc(out_p2)}, {int((out_p2.argmax(1) != ref.argmax(1)).sum())} predictions changed, "
          f"{rep2.summary()}")
    ok = np.allclose(out_p, clean, atol=1e-4 * np.abs(clean).max()) and np.allclose(out_p2, clean, atol=1e-4 * np.abs(clean).max())
    print("\nall faults corrected: protected outputs equal the fault-free ones" if ok else "\nSOME FAULTS WERE NOT CORRECTED")
    return 0 if ok else 1
