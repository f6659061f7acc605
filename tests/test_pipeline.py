"""The DVC pipeline: the stage graph is the documented order, and the whole `dvc repro` runs in a
temporary copy of the repository on a tiny parameter set (a few scenes, one epoch, a two-trial
sweep), leaving every output that dvc.yaml declares, so a broken stage fails CI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = ["synth", "prepare", "train", "evaluate", "bench", "sweep", "report"]
# (section, key) -> value: the smallest run that still exercises every stage
TINY = {("synth", "train"): 2, ("synth", "val"): 1, ("synth", "replica"): 1,
        ("synth", "spacing"): 0.1, ("synth", "jobs"): 1, ("prepare", "jobs"): 1,
        ("train", "epochs"): 1, ("sweep", "lambdas"): [0.1, 0.3], ("sweep", "epochs"): 1,
        ("sweep", "train_clicks"): ["random"], ("sweep", "eval_clicks"): ["center"],
        ("bench", "points"): 20_000, ("bench", "repeats"): 1}


def dvc(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the venv's dvc (the pipeline's `uniseg3d` commands resolve from the same folder)."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    return subprocess.run([str(Path(bin_dir) / "dvc"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_dag_has_every_stage_in_order():
    result = dvc("dag", "--dot", cwd=REPO)
    assert result.returncode == 0, result.stderr
    nodes = re.findall(r'^"(\w+)";$', result.stdout, re.M)
    edges = re.findall(r'^"(\w+)" -> "(\w+)";$', result.stdout, re.M)
    assert sorted(nodes) == sorted(STAGES)
    for before, after in zip(STAGES, STAGES[1:4]):  # the chain synth -> ... -> evaluate
        assert (before, after) in edges
    assert {("evaluate", "report"), ("bench", "report"), ("sweep", "report"),
            ("prepare", "sweep")} <= set(edges)
    assert all(STAGES.index(a) < STAGES.index(b) for a, b in edges)  # no edge goes backwards


def tracked_files() -> list[str]:
    result = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                            text=True, check=True)
    return [name for name in result.stdout.split("\0") if name]


@pytest.fixture(scope="module")
def repro(tmp_path_factory) -> Path:
    """A copy of the repository's tracked files, with tiny params, after `dvc repro`."""
    root = tmp_path_factory.mktemp("repro")
    for name in tracked_files():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, root / name)
    with (root / ".dvc" / "config").open("a") as handle:
        handle.write("    no_scm = true\n")  # the copy is not a git checkout
    params = yaml.safe_load((root / "params.yaml").read_text())
    for (section, key), value in TINY.items():
        params[section][key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = dvc("repro", cwd=root, timeout=1200)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return root


def test_repro_writes_every_declared_output(repro):
    lock = yaml.safe_load((repro / "dvc.lock").read_text())["stages"]
    assert sorted(lock) == sorted(STAGES)  # every stage ran and was recorded
    for stage, entry in lock.items():
        assert entry["outs"], stage
        for out in entry["outs"]:
            path = repro / out["path"]
            assert path.exists(), f"{stage}: {out['path']} missing"
            if path.is_dir():
                assert any(path.iterdir()), f"{stage}: {out['path']} is empty"
            else:
                assert path.stat().st_size > 0, f"{stage}: {out['path']} is empty"


def test_repro_outputs_hold_real_results(repro):
    metrics = json.loads((repro / "reports" / "metrics.json").read_text())
    assert 0.0 <= metrics["semantic"]["miou"] <= 1.0
    history = json.loads((repro / "runs" / "train" / "history.json").read_text())
    assert [record["epoch"] for record in history] == [0]
    sweep = pd.read_csv(repro / "reports" / "sweep" / "results.csv")
    assert sorted(sweep["lambda_inter"]) == [0.1, 0.3]
    assert (sweep["status"] == "completed").all()
    latency = json.loads((repro / "benchmarks" / "latency.json").read_text())
    # the generated room has the requested size within 10 % (`benchmark_scene`)
    assert abs(latency["points"] - 20_000) <= 2_000 and latency["config"] == "tiny"
    html = (repro / "reports" / "index.html").read_text()
    for image in re.findall(r'<img src="([^"]+)"', html):
        assert (repro / "reports" / image).is_file(), image
    status = dvc("status", cwd=repro)  # nothing is stale after a full run
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout


def test_dvc_metrics_show_reads_the_metrics(repro):
    result = dvc("metrics", "show", "--json", cwd=repro)
    assert result.returncode == 0, result.stderr
    assert "semantic" in result.stdout


def test_dvc_plots_show_renders_training_curves_and_the_sweep(repro):
    result = dvc("plots", "show", "--json", cwd=repro)
    assert result.returncode == 0, result.stderr
    plots = json.loads(result.stdout)["data"]
    curves = plots["training_curves"][0]["content"]["data"]["values"]
    assert len(curves) == 2  # one epoch: its training and validation loss
    assert all(float(row["dvc_inferred_y_value"]) > 0 for row in curves)
    sweep = plots["sweep_by_lambda"][0]["content"]["data"]["values"]
    assert sorted({row["lambda_inter"] for row in sweep}) == ["0.1", "0.3"]
