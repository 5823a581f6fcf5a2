"""The real console commands: transform, inspect, demo; nothing is ever lost."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import zoo_model


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "onnx_ecc", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture()
def model_file(tmp_path):
    path = tmp_path / "cnn.onnx"
    onnx.save(zoo_model("cnn"), str(path))
    return path


def test_transform_then_inspect(tmp_path, model_file):
    out = tmp_path / "protected.onnx"
    before = model_file.read_bytes()
    r = _cli("transform", model_file, "-o", out, "--parity", "3", "--block", "16", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert model_file.read_bytes() == before
    assert "R=3 per 16" in r.stdout
    r = _cli("inspect", out, cwd=tmp_path)
    assert r.returncode == 0 and "layer(s) protected" in r.stdout


def test_transform_refuses_to_overwrite_its_input(tmp_path, model_file):
    before = model_file.read_bytes()
    r = _cli("transform", model_file, "-o", model_file, cwd=tmp_path)
    assert r.returncode == 2 and "refusing to overwrite" in r.stderr
    assert model_file.read_bytes() == before


@pytest.mark.parametrize("content", [b"", b"not an onnx model at all", "truncated"])
def test_bad_input_files_give_one_line_errors_and_no_output(tmp_path, model_file, content):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(model_file.read_bytes()[:300] if content == "truncated" else content)
    out = tmp_path / "out.onnx"
    r = _cli("transform", bad, "-o", out, cwd=tmp_path)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "error" in r.stderr
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_missing_output_directory_is_an_error(tmp_path, model_file):
    r = _cli("transform", model_file, "-o", tmp_path / "nowhere" / "p.onnx", cwd=tmp_path)
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_external_data_models_round_trip(tmp_path):
    from onnx_ecc.io import load_model, save_model

    model = zoo_model("cnn")
    src = tmp_path / "ext.onnx"
    onnx.save_model(model, str(src), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.onnx.data", size_threshold=0)
    loaded = load_model(src)
    import onnx_ecc

    out = tmp_path / "p.onnx"
    save_model(onnx_ecc.transform(loaded), out, inputs=[src])
    assert load_model(out).graph.node


def test_demo_runs_and_corrects(tmp_path):
    r = _cli("demo", "--images", "64", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all faults corrected" in r.stdout


def test_demo_without_the_dataset_package_shows_real_accuracy_on_the_bundled_sample(tmp_path, monkeypatch):
    """A fresh machine without Debian's Fashion-MNIST: the demo runs the 512 bundled test images."""
    from onnx_ecc import datasets

    monkeypatch.setattr(datasets, "FASHION_MNIST_DIRS", ())
    monkeypatch.delenv("ONNX_ECC_FASHION_MNIST", raising=False)
    datasets.load_fashion_mnist.cache_clear()  # an earlier test may have loaded it
    with pytest.raises(datasets.DatasetUnavailable):
        datasets.load_fashion_mnist.__wrapped__()
    import argparse

    from onnx_ecc.cli import demo

    args = argparse.Namespace(model=None, images=512, bit=30, seed=0)
    import contextlib
    import io as _io

    out = _io.StringIO()
    with contextlib.redirect_stdout(out):
        assert demo.run(args) == 0
    text = out.getvalue()
    assert "the 512 bundled ones" in text and "accuracy n/a" not in text
    assert "original accuracy 90.23%" in text  # the bundled CNN on those images
    sample = datasets.load_fashion_mnist_sample()
    assert sample.x_test.shape == (512, 1, 28, 28) and set(sample.y_test.tolist()) == set(range(10))


def test_the_bundled_sample_is_the_start_of_the_real_test_set():
    from onnx_ecc import datasets

    try:
        full = datasets.load_fashion_mnist()
    except datasets.DatasetUnavailable as e:
        pytest.skip(str(e))
    sample = datasets.load_fashion_mnist_sample()
    np.testing.assert_array_equal(sample.x_test, full.x_test[:512])
    np.testing.assert_array_equal(sample.y_test, full.y_test[:512])


def test_models_over_the_protobuf_limit_go_through_external_data(tmp_path, monkeypatch):
    """Pretend the 2 GB limit is tiny: transform, verify and sessions must still work."""
    import numpy as np

    import onnx_ecc
    from onnx_ecc import io
    from onnx_ecc.transform.verification import random_feeds, run_model

    monkeypatch.setattr(io, "TWO_GB", 10_000)
    model = zoo_model("cnn")
    assert io.is_large(model)
    protected = onnx_ecc.transform(model)
    out = io.save_model(protected, tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx.data").exists()
    feeds = random_feeds(model, seed=1, positive=True)
    got = onnx_ecc.ProtectedSession(io.load_model(out)).run(None, feeds)[0]
    np.testing.assert_allclose(got, run_model(model, feeds)[0], rtol=1e-4, atol=1e-4)
