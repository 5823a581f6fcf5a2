"""Campaigns on Ray (a local 2-CPU instance) give the same counts as the local executor; resume,
retry of a dead worker, and one-line errors for bad executor input."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from test_campaign import X, Y, linear_model

import onnx_ecc
from onnx_ecc import campaign as C
from onnx_ecc.campaign.executors import ExecutorError, open_executor
from onnx_ecc.cli.campaign import main as campaign_cli

NO_RAY = "ray is not installed (pip install onnx-ecc[ray]): the Ray executor tests need it"
WHERE = ("executor", "nodes", "cpus", "workers", "trials_run", "trials_per_second", "seconds")


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason=NO_RAY)
    ray.init(num_cpus=2, object_store_memory=150 * 2**20, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def models():
    m = linear_model()
    return m, onnx_ecc.transform(m, parity=2, block=2)


def trials_of(folder: Path) -> list[dict]:
    return sorted(C.read_trials(folder / "trials.jsonl"), key=lambda r: (r["config"], r["seed"]))


def test_ber_sweep_on_ray_equals_local(ray_cluster, models, tmp_path):
    m, p = models
    cfgs = [C.Config("weight-bitflip", ber=0.05, bits="30"), C.Config("mixed-bitflip", ber=0.02)]
    a = C.run_campaign(m, cfgs, X, Y, 4, tmp_path / "a", protected=p, jobs=1, progress=False, plot=False)
    b = C.run_campaign(m, cfgs, X, Y, 4, tmp_path / "b", protected=p, progress=False, plot=False, executor="ray")
    assert trials_of(tmp_path / "a") == trials_of(tmp_path / "b")
    assert a["rows"] == b["rows"] and sum(r["sdc_predictions"] for r in a["rows"]) > 0
    saved = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert (saved["executor"], saved["nodes"], saved["cpus"], saved["trials_run"]) == ("ray", 1, 2, 8)
    assert saved["trials_per_second"] > 0 and a["executor"] == "local"


def test_targeted_on_ray_equals_local(ray_cluster, models):
    m, p = models
    for site, n, jobs in (("weight", 2, 1), ("output", 3, 2)):     # 2: local processes too
        kw = dict(site=site, n_faults=n, bits="31", seed=1, max_trials=2000, progress=False)
        a = C.targeted_campaign(m, p, X, Y, jobs=jobs, **kw)
        b = C.targeted_campaign(m, p, X, Y, executor="ray", **kw)
        assert b["executor"] == "ray" and b["trials_per_second"] > 0 and a["workers"] == jobs
        assert {k: v for k, v in a.items() if k not in WHERE} == {k: v for k, v in b.items() if k not in WHERE}
        assert b["sdc_faults_found"] == n and b["protected_still_corrupt"] == 0


def test_resume_on_ray(ray_cluster, models, tmp_path):
    m, p = models
    cfg = C.Config("weight-bitflip", count=1, bits="30,31")
    C.run_campaign(m, [cfg], X, Y, 3, tmp_path, protected=p, progress=False, plot=False, executor="ray")
    first = (tmp_path / "trials.jsonl").read_text().splitlines()
    s = C.run_campaign(m, [cfg], X, Y, 5, tmp_path, protected=p, progress=False, plot=False, executor="ray",
                       resume=True)
    lines = (tmp_path / "trials.jsonl").read_text().splitlines()
    assert lines[:3] == first and len(lines) == 5 and s["trials_run"] == 2
    assert all(r["trials"] == 5 for r in s["rows"])


class DiesOnce:
    """A worker whose process exits on its first call (a marker file tells later attempts)."""

    def __init__(self, marker: str):
        self.marker = Path(marker)

    def square(self, i: int) -> tuple[int, int, int]:
        if i == 0 and not self.marker.exists():
            self.marker.touch()
            os._exit(1)
        return i * i, os.getpid(), id(self)


def test_a_dead_worker_loses_only_its_call(ray_cluster, tmp_path):
    ray_cluster.cloudpickle.register_pickle_by_value(sys.modules[__name__])   # workers need not import tests/
    with open_executor("ray", (DiesOnce, (str(tmp_path / "died"),))) as ex:
        out = list(ex.imap((("square", (i,)) for i in range(20)), ordered=True))
    assert (tmp_path / "died").exists() and [o[0] for o in out] == [i * i for i in range(20)]
    assert len({o[1:] for o in out}) == len({o[1] for o in out})     # one worker per process, not per task


def test_bad_executor_input(monkeypatch, capsys, tmp_path):
    with pytest.raises(ExecutorError, match="--executor ray"):
        with open_executor("local", (DiesOnce, ("x",)), address="ray://head:10001"):
            pass
    with pytest.raises(ExecutorError, match="unknown executor"):
        with open_executor("dask", (DiesOnce, ("x",))):
            pass
    monkeypatch.setitem(sys.modules, "ray", None)          # as if ray were not installed
    assert campaign_cli(["mnist-cnn", "--count", "1", "--out", str(tmp_path), "--executor", "ray"]) == 2
    assert "pip install onnx-ecc[ray]" in capsys.readouterr().err
    assert campaign_cli(["mnist-cnn", "--count", "1", "--out", str(tmp_path), "--address", "head:6379"]) == 2
    assert "--executor ray" in capsys.readouterr().err
