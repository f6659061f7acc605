"""The evaluate stage: a tiny trained checkpoint end to end (every section, file and leaderboard),
the submission files reproducing the in-memory numbers, and ground-truth predictions scoring 1."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ground_truth import EVALUATION_SCENES as SCENES
from ground_truth import gt_prediction, training_params
from uniseg3d.benchmarks.evaluate_bench import bench_evaluate
from uniseg3d.benchmarks.leaderboard import TASKS, write_evaluation_leaderboards
from uniseg3d.config import Params
from uniseg3d.datasets.classes import scannet20
from uniseg3d.datasets.loader import evaluation_sample, read_split
from uniseg3d.metrics.scene_stats import first_row, read_evaluation
from uniseg3d.metrics.submission import evaluate_submission
from uniseg3d.metrics.tasks import (
    REPLICA_EXCLUDED, OpenVocabTask, ScanNetTasks, instance_labels, replica_gt, replica_subsets,
    replica_vocabulary, task_scores)
from uniseg3d.model.postprocess import Instances
from uniseg3d.pipelines.evaluate import (
    METRICS_FILE, metric_section, run_evaluate, write_scene_files)
from uniseg3d.pipelines.train import class_prompt_names, train

SECTIONS = {
    "semantic": {"miou"},
    "instance": {"ap", "ap50", "ap25"},
    "panoptic": {f"{m}{g}" for m in ("pq", "sq", "rq") for g in ("", "_things", "_stuff")},
    "interactive": {"miou", "ap", "ap50", "ap25", "click_ap", "click_ap50", "click_ap25"},
    "referring": {"miou", "acc25", "acc50", "unique", "multiple"},
    "open_vocab": {"ap", "ap50", "ap25", "base", "novel", "head", "common", "tail"},
    "replica": {"ap", "ap50", "ap25", "seen", "unseen"},
}


@pytest.fixture(scope="module")
def evaluated(data: Path) -> tuple[dict, Params]:
    """A one-epoch tiny checkpoint evaluated on the two scenes and the Replica scene."""
    params = training_params(data, data)
    train(params, progress=False)
    metrics = run_evaluate(params, progress=False)
    write_evaluation_leaderboards(metrics, params.evaluate.out)  # as `uniseg3d evaluate` does
    return metrics, params


def test_every_section_metric_and_file_is_written(evaluated, data):
    metrics, params = evaluated
    out = Path(params.evaluate.out)
    assert json.loads((out / METRICS_FILE).read_text()) == metrics
    assert metrics["dataset"] == "unit-test"
    assert metrics["counts"]["scannet_scenes"] == 2 and metrics["counts"]["replica_scenes"] == 1
    assert metrics["counts"]["descriptions"] == 4 and metrics["counts"]["clicks"] == 4
    assert metrics["counts"]["replica_unseen_classes"] == 1  # "table lamp"
    assert metrics["timing"]["total_s"] > metrics["timing"]["forward_s"] > 0
    for section, keys in SECTIONS.items():
        assert set(metrics[section]) == keys, section
        values = [v for value in metrics[section].values()
                  for v in (value.values() if isinstance(value, dict) else [value])]
        assert all(v is None or 0.0 <= v <= 1.0 for v in values), (section, values)
    for task in ("semantic", "instance", "panoptic", "open_vocab"):
        table = pd.read_csv(out / f"per_class_{task}.csv")
        assert len(table) and "class" in table.columns
    open_vocab = pd.read_csv(out / "per_class_open_vocab.csv")
    assert set(open_vocab["benchmark"]) == {"scannet200", "replica"}
    assert len(pd.read_csv(out / "per_class_instance.csv")) == 18
    for task in TASKS:
        for suffix in (".md", ".csv", ".tex", ".html"):
            assert (out / "leaderboards" / f"{task}{suffix}").is_file()
        board = pd.read_csv(out / "leaderboards" / f"{task}.csv")
        assert "uniseg3d (ours, unit-test)" in set(board["method"])


def test_the_interactive_protocol_section(evaluated):
    metrics, _ = evaluated
    protocol = metrics["interactive_protocol"]
    assert protocol["max_clicks"] == 20
    single, multi = protocol["single"], protocol["multi"]
    # every clickable object of the two scenes alone, and the two scenes' objects together
    assert single["objects"] == metrics["counts"]["clicks"] == 4 and multi["objects"] == 2
    for mode in (single, multi):
        assert set(mode) == {"noc@50", "noc@65", "noc@80", "noc@85", "noc@90", "iou@1",
                             "iou@3", "iou@5", "iou@10", "iou@15", "objects", "curve",
                             "per_scene"}
        assert 1 <= mode["noc@50"] <= mode["noc@65"] <= mode["noc@90"] <= 20
        assert len(mode["curve"]) == 20 and all(0 <= v <= 1 for v in mode["curve"])
        assert mode["curve"][0] == pytest.approx(mode["iou@1"])
        assert mode["curve"][14] == pytest.approx(mode["iou@15"])
        assert sorted(mode["per_scene"]) == ["scene0000_00", "scene0001_00"]
    assert sum(s["objects"] for s in single["per_scene"].values()) == 4
    assert metrics["timing"]["interactive_protocol_s"] > 0


def assert_section_close(recomputed: dict, written: dict, path: str = "") -> None:
    """Every number of `recomputed` equals `written`'s (1e-9; None = NaN in both)."""
    for key, value in recomputed.items():
        if isinstance(value, dict):
            assert_section_close(value, written[key], f"{path}{key}/")
        elif value is None or written[key] is None:
            assert value is written[key] is None, path + key
        else:
            assert value == pytest.approx(written[key], abs=1e-9, rel=0), path + key


def test_scene_statistics_recompute_metrics_json(evaluated):
    metrics, params = evaluated
    stats = read_evaluation(params.evaluate.out)
    assert set(stats) == set(SECTIONS) | {"interactive_protocol"}
    for task, task_stats in stats.items():
        assert task_stats.meta["dataset"] == "unit-test"
        expected = 1 if task == "replica" else 2  # scenes, masks never read again
        assert task_stats.num_scenes == expected, task
        recomputed = metric_section(first_row(task_scores(task_stats)))
        assert_section_close(recomputed, metrics[task], task + "/")
    assert stats["interactive_protocol"].scene_ids == SCENES


def test_submission_files_reproduce_the_in_memory_numbers(evaluated):
    metrics, params = evaluated
    predictions = Path(params.evaluate.out) / "predictions"
    instance = evaluate_submission("instance", predictions / "gt_instance",
                                   predictions / "instance")
    semantic = evaluate_submission("semantic", predictions / "gt_semantic",
                                   predictions / "semantic")
    assert instance["scenes"] == semantic["scenes"] == 2
    assert {k: instance[k] for k in ("ap", "ap50", "ap25")} == metrics["instance"]
    assert semantic["miou"] == metrics["semantic"]["miou"]


def test_degraded_predictions_through_files_equal_in_memory(data, tmp_path):
    params, tasks = Params(), ScanNetTasks()
    rng = np.random.default_rng(0)
    for index, scene in enumerate(read_split(data / "cache", list(SCENES))):
        sample = evaluation_sample(scene, params, index)
        prediction = gt_prediction(sample, rng)
        tasks.add(sample, prediction)
        write_scene_files(tmp_path, scene, prediction)
    results = tasks.evaluate()
    instance = evaluate_submission("instance", tmp_path / "gt_instance", tmp_path / "instance")
    semantic = evaluate_submission("semantic", tmp_path / "gt_semantic", tmp_path / "semantic")
    assert 0 < results["instance"]["ap"] < 1 and 0 < results["semantic"]["miou"] < 1
    for key in ("ap", "ap50", "ap25"):
        assert instance[key] == results["instance"][key]
    assert semantic["miou"] == results["semantic"]["miou"]
    for name, values in results["instance"]["classes"].items():
        assert instance["classes"][name] == {k: None if np.isnan(v) else v
                                             for k, v in values.items()}


def test_ground_truth_predictions_score_one(data):
    params, tasks = Params(), ScanNetTasks()
    for index, scene in enumerate(read_split(data / "cache", list(SCENES))):
        sample = evaluation_sample(scene, params, index)
        tasks.add(sample, gt_prediction(sample))
    results = tasks.evaluate()
    assert results["semantic"]["miou"] == 1.0
    assert results["instance"]["ap"] == results["instance"]["ap25"] == 1.0
    assert results["panoptic"]["pq"] == pytest.approx(1.0)
    interactive = results["interactive"]
    assert interactive["miou"] == pytest.approx(1.0)
    assert interactive["ap"] == interactive["click_ap"] == interactive["click_ap25"] == 1.0
    referring = results["referring"]
    assert referring["count"] == 4 and referring["unique"]["count"] == 4
    assert referring["miou"] == pytest.approx(1.0) and referring["acc50"] == 1.0
    assert results["open_vocab"]["ap"] == results["open_vocab"]["head"]["ap"] == 1.0

    scenes = read_split(data / "replica")
    names = replica_vocabulary(scenes)
    subsets = replica_subsets(names, class_prompt_names(scannet20().names))
    assert subsets == {"seen": ("floor",), "unseen": ("table lamp",)}
    replica = OpenVocabTask(names, subsets, REPLICA_EXCLUDED)
    for scene in scenes:
        gt = replica_gt(scene, names)
        masks = scene.instance[None, :] == np.arange(scene.num_instances)[:, None]
        labels = instance_labels(gt.labels, gt.instances, scene.num_instances)
        replica.add(gt, Instances(masks, labels, np.ones(len(labels))))
    result = replica.evaluate()
    assert result["ap"] == result["unseen"]["ap"] == 1.0
    assert np.isnan(result["seen"]["ap"])  # floor is background, not evaluated


def test_without_replica_scenes_the_section_is_left_out(evaluated, data):
    _, params = evaluated
    params = dataclasses.replace(params, evaluate=dataclasses.replace(
        params.evaluate, replica_cache=str(data / "missing"), out=str(data / "no_replica")))
    metrics = run_evaluate(params, progress=False)
    assert "replica" not in metrics and metrics["counts"]["replica_scenes"] == 0
    write_evaluation_leaderboards(metrics, params.evaluate.out)
    board = pd.read_csv(data / "no_replica" / "leaderboards" / "open_vocab_replica.csv")
    assert list(board["method"]) == ["UniSeg3D"]


def test_bench_evaluate_leaves_the_stage_outputs_alone(evaluated):
    metrics, params = evaluated
    before = (Path(params.evaluate.out) / METRICS_FILE).read_text()
    result = bench_evaluate(params)
    assert result["scannet_scenes"] == 2 and result["seconds"] >= result["total_s"] > 0
    assert (Path(params.evaluate.out) / METRICS_FILE).read_text() == before


def flat_numbers(section: object, prefix: str = "") -> dict[str, object]:
    """Every leaf of a metrics document by its dotted path."""
    if isinstance(section, dict):
        return {path: value for key, value in section.items()
                for path, value in flat_numbers(value, f"{prefix}{key}.").items()}
    if isinstance(section, list):
        return {path: value for index, value in enumerate(section)
                for path, value in flat_numbers(value, f"{prefix}{index}.").items()}
    return {prefix: section}


def test_workers_give_the_one_process_evaluation(evaluated, data):
    """Two worker processes (one scene and no Replica scene, one scene and the Replica scene)
    give the one-process metrics (protocol included) to 1e-9, and with one thread per process
    on both sides, the same per-scene statistics, prompts and submission files bit for bit
    (a different thread count may round float sums differently in the last bits)."""
    metrics, params = evaluated
    assert metrics["interactive_protocol"]["single"]["curve"]  # the protocol ran

    def evaluation(folder: str, threads: int, workers: int) -> tuple[dict, Path]:
        out = data / folder
        run = dataclasses.replace(
            params, train=dataclasses.replace(params.train, threads=threads),
            evaluate=dataclasses.replace(params.evaluate, out=str(out)))
        return run_evaluate(run, progress=False, workers=workers), out

    parallel, two = evaluation("two_workers", 2, 2)  # 1 thread each
    single, one = evaluation("one_thread", 1, 1)
    assert parallel["timing"]["workers"] == 2 and single["timing"]["workers"] == 1
    for reference in (metrics, single):
        found, expected = (flat_numbers({k: v for k, v in m.items() if k != "timing"})
                           for m in (parallel, reference))
        assert found.keys() == expected.keys()
        for path, value in expected.items():
            if isinstance(value, float):
                assert math.isclose(found[path], value, rel_tol=0, abs_tol=1e-9), path
            else:
                assert found[path] == value, path
    ones, twos = read_evaluation(one), read_evaluation(two)
    assert ones.keys() == twos.keys() and "interactive_protocol" in ones
    for task, stats in ones.items():
        assert twos[task].scene_ids == stats.scene_ids and twos[task].meta == stats.meta
        for name, values in stats.sums.items():
            np.testing.assert_array_equal(twos[task].sums[name], values, err_msg=task)
        for table, columns in stats.tables.items():
            for column, values in columns.items():
                np.testing.assert_array_equal(twos[task].tables[table][column], values,
                                              err_msg=f"{task} {table}.{column}")
    for folder in ("prompts", "predictions/instance", "predictions/semantic"):
        files = sorted(p.relative_to(one) for p in (one / folder).rglob("*") if p.is_file())
        assert files and files == sorted(p.relative_to(two) for p in (two / folder).rglob("*")
                                         if p.is_file())
        for name in files:
            assert (two / name).read_bytes() == (one / name).read_bytes(), name
