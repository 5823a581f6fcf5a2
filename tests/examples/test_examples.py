"""The examples and the README's code blocks run as written (small settings), so they cannot rot."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnx_ecc
from onnx_ecc import datasets, zoo

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def _blocks(lang: str) -> list[str]:
    """The README's fenced code blocks of one language, in order."""
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def _env() -> dict:
    """The test's own environment: the examples import onnx_ecc as the tests do (installed, or
    through the caller's PYTHONPATH with ONNX_ECC_LIBRARY)."""
    return dict(os.environ)


def _run(argv: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(argv)}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return r


def test_readme_python_api_block_runs_on_the_bundled_model(tmp_path, monkeypatch):
    """The Python API block, on the bundled CNN and real test images: outputs equal the original's."""
    (code,) = [b for b in _blocks("python") if "onnx_ecc.transform(" in b]
    model = onnx.load(str(zoo.bundled_default()))
    onnx.save(model, str(tmp_path / "model.onnx"))
    monkeypatch.chdir(tmp_path)
    x = datasets.load_fashion_mnist_sample().x_test[:16]
    scope = {"x": x}
    exec(compile(code, "README.md (Python API)", "exec"), scope)
    reference = zoo.predict(model, x)
    np.testing.assert_allclose(scope["outputs"][0], reference, rtol=1e-5, atol=1e-5)
    assert scope["sess"].last_report.uncorrectable == 0 and scope["sess"].last_report.flagged == 0


def test_readme_campaign_command_runs_with_small_settings(tmp_path):
    """The README's campaign command, with fewer trials and samples: both models' accuracies are written."""
    line = next(ln for b in _blocks("bash") for ln in b.splitlines()
                if ln.startswith("onnx-ecc campaign mnist-cnn") and "--fault " in ln)
    argv = shlex.split(line)
    small = {"--trials": "2", "--samples": "40", "--ber": "1e-6,1e-4", "--out": str(tmp_path / "mnist")}
    for flag, value in small.items():
        argv[argv.index(flag) + 1] = value
    _run([sys.executable, "-m", "onnx_ecc.cli", *argv[1:]], tmp_path)
    summary = json.loads((tmp_path / "mnist" / "summary.json").read_text())
    clean = summary["clean_accuracy"]
    assert clean["protected"] == clean["original"] > 0.9     # 40 real digits, fault-free
    assert {r["model"] for r in summary["rows"]} == {"original", "protected"} and len(summary["rows"]) == 4


def test_campaign_example_runs_small_and_the_protected_model_keeps_its_predictions(tmp_path):
    """examples/campaign_mnist.py at smoke size: every targeted fault found is corrected."""
    out = tmp_path / "campaign"
    _run([sys.executable, str(ROOT / "examples" / "campaign_mnist.py"), "--out", str(out), "--faults", "4",
          "--targeted-samples", "40", "--bers", "1e-6", "--trials", "2", "--samples", "40", "--jobs", "1",
          "--quick"], tmp_path)
    for site in ("weight", "output"):
        result = json.loads((out / f"targeted_{site}.json").read_text())
        assert result["sdc_faults_found"] > 0
        assert result["protected_still_corrupt"] == 0 and result["corrected"] == result["sdc_faults_found"]
    assert (out / "sweep" / "summary.json").is_file()


@pytest.mark.slow
def test_bundled_model_training_example_writes_an_accurate_model(tmp_path):
    """examples/train_bundled_model.py, one epoch: a model that beats 80% on the bundled real test images."""
    pytest.importorskip("torch")
    try:
        datasets.load_fashion_mnist()
    except datasets.DatasetUnavailable as exc:
        pytest.skip(str(exc))
    out = tmp_path / "fashion_cnn.onnx"
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "train_bundled_model.py"), "--epochs", "1",
                        "--out", str(out)], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert out.is_file(), r.stderr[-2000:]
    sample = datasets.load_fashion_mnist_sample()
    assert zoo.accuracy(out, sample) > 0.8
    protected = onnx_ecc.transform(onnx.load(str(out)))
    x = sample.x_test[:64]
    got = onnx_ecc.ProtectedSession(protected).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, zoo.predict(out, x), rtol=1e-5, atol=1e-5)


def test_dead_units_example_protected_with_learning_keeps_the_clean_accuracy(tmp_path):
    """examples/dead_units.py, small: up to R dead units per block are rebuilt once they are known."""
    out = tmp_path / "dead"
    _run([sys.executable, str(ROOT / "examples" / "dead_units.py"), "--max-dead", "3", "--images", "100",
          "--out", str(out), "--no-figure"], tmp_path)
    rows = json.loads((out / "dead_units.json").read_text())["rows"]
    clean = rows[0]["original"]
    assert rows[0]["protected"] == rows[0]["protected_learning"] == clean
    assert rows[1]["protected"] == clean                      # one per block: the decoder alone corrects it
    assert all(r["protected_learning"] == clean for r in rows[1:])  # known erasures, R = 3 per block
    assert min(r["original"] for r in rows[1:]) < clean       # the units' loss shows in the original
