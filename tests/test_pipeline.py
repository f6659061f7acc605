"""The DVC pipeline: the stage graph is the documented order, and the whole `dvc repro` runs in a
temporary copy of the repository on a tiny parameter set (a few scenes, one epoch, a two-trial
sweep), leaving every output that dvc.yaml declares, so a broken stage fails CI."""

from __future__ import annotations

import ast
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


# the modules each stage's command runs (what `uniseg3d.cli` imports for that verb)
STAGE_ENTRIES = {"synth": ["uniseg3d.pipelines.synth"], "prepare": ["uniseg3d.pipelines.prepare"],
                 "train": ["uniseg3d.pipelines.ray_train"],
                 "evaluate": ["uniseg3d.pipelines.evaluate", "uniseg3d.benchmarks.leaderboard"],
                 "bench": ["uniseg3d.benchmarks.latency"], "sweep": ["uniseg3d.pipelines.sweep"],
                 "report": ["uniseg3d.reports.report"]}
# a fresh interpreter imports the heavy libraries once, then each stage's entries in a fork of
# its own; prints {stage: [file of every uniseg3d module then loaded]}
IMPORTED = """
import importlib, json, os, sys
import numpy, pandas, ray, scipy, torch
found = {}
for stage, entries in json.loads(sys.argv[1]).items():
    read, write = os.pipe()
    if os.fork() == 0:
        for entry in entries:
            importlib.import_module(entry)
        files = [m.__file__ for n, m in list(sys.modules.items())
                 if n.split('.')[0] == 'uniseg3d' and getattr(m, '__file__', None)]
        os.write(write, json.dumps(files).encode())
        os._exit(0)
    os.close(write)
    found[stage] = json.loads(b''.join(iter(lambda: os.read(read, 1 << 16), b'')))
    os.close(read)
    os.wait()
print(json.dumps(found))
"""


def docstring_only(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
               for node in body)


def test_each_stage_depends_on_the_code_it_runs():
    """A change to any module a stage's command imports reruns the stage: every such module is
    one of the stage's deps or lies in a folder that is (a package's `__init__.py`, which holds
    only its docstring, apart)."""
    result = subprocess.run([sys.executable, "-c", IMPORTED, json.dumps(STAGE_ENTRIES)],
                            cwd=REPO, capture_output=True, text=True, check=True, timeout=300)
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for stage, files in json.loads(result.stdout.splitlines()[-1]).items():
        paths = {Path(f).resolve().relative_to(REPO) for f in files}
        assert len(paths) > len(STAGE_ENTRIES[stage])  # the entries and what they import
        packages = {p for p in paths if p.name == "__init__.py"}
        assert all(docstring_only(REPO / p) for p in packages)
        deps = [Path(d) for d in stages[stage]["deps"] if d.startswith("uniseg3d")]
        missing = sorted(p.as_posix() for p in paths - packages
                         if not any(p == d or d in p.parents for d in deps))
        assert not missing, f"stage {stage} runs code it does not depend on: {missing}"


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
