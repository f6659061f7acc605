"""`uniseg3d bench scale`: vertex counts drawn like ScanNet's, N-scene caches hard-linked from a
pool of rooms, and the whole bench end to end at a tiny size (its figures present and sane; no
timing is asserted)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from uniseg3d.benchmarks.scale_bench import (
    CONFIGS, LOADER_WORKERS, ScaleSettings, VertexCounts, linked_cache)
from uniseg3d.cli import main
from uniseg3d.config import DEFAULT_PARAMS
from uniseg3d.datasets.cache import read_scene
from uniseg3d.datasets.streaming import SceneSet


def test_scannet_like_vertex_counts():
    counts = VertexCounts.scannet_like()
    assert (counts.low, counts.high) == (30_000, 550_000)
    drawn = counts.draw(20_000, np.random.default_rng(0))
    assert drawn.min() >= 30_000 and drawn.max() <= 550_000
    assert 140_000 < drawn.mean() < 155_000  # the clipping pulls the mean down a little
    assert np.percentile(drawn, 10) < 80_000 and np.percentile(drawn, 90) > 240_000
    with pytest.raises(ValueError, match="low <= mean <= high"):
        VertexCounts(mean=10, low=20, high=30)


def test_settings_that_cannot_be_measured_are_refused():
    with pytest.raises(ValueError, match="positive scene counts"):
        ScaleSettings(memory_scenes=(100, 0)).check(2)
    with pytest.raises(ValueError, match="5 rooms make 3 batches of 2; 4 timed steps need 5"):
        ScaleSettings(rooms=5, steps=4).check(2)
    assert main(["bench", "scale", "--rooms", "3", "--train-steps", "4"]) == 2
    with pytest.raises(SystemExit):
        main(["bench", "scale", "--memory-scenes", "100,x"])


def test_linked_cache_reads_back_as_the_pool_scenes_under_new_ids(data, tmp_path):
    pool = SceneSet.listed(str(data / "cache"), str(data / "val.txt"))
    scenes, linked = linked_cache(pool, 5, tmp_path / "cache_5")
    assert linked and len(scenes) == 5
    for index in range(5):
        scene = scenes.scene(index)
        original = read_scene(Path(pool.cache) / pool.ids[index % len(pool)])
        assert scene.scene_id == scenes.ids[index] == f"scene{index:04d}_00"
        np.testing.assert_array_equal(scene.coords, original.coords)
        np.testing.assert_array_equal(scene.instance, original.instance)
        assert scene.referring == original.referring
        linked_file = Path(scenes.cache) / scene.scene_id / "coord.npy"
        assert os.path.samefile(linked_file, Path(pool.cache) / original.scene_id / "coord.npy")


def positive(section: dict, *keys: str) -> None:
    for key in keys:
        value = section[key]
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, value)


def test_bench_scale_end_to_end_at_a_tiny_size(tmp_path):
    """3 rooms of a few thousand vertices, a small stand-in for the paper model (the plumbing
    is what is tested), one timed step, memory epochs over 4 and 8 scenes."""
    params = yaml.safe_load(DEFAULT_PARAMS.read_text())
    params["model"]["paper"] = {**params["model"]["tiny"], "voxel_size": 0.08}
    params["model"]["tiny"]["voxel_size"] = 0.1
    params["prompts"].update(corrective_rounds=1, max_clicks=4, max_texts=4)
    params["train"].update(batch_size=1, threads=1)
    params["evaluate"]["protocol_clicks"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    work, out = tmp_path / "work", tmp_path / "scale.json"
    work.mkdir()
    assert main(["bench", "scale", "--params", str(tmp_path / "params.yaml"), "--rooms", "3",
                 "--mean-vertices", "8000", "--memory-scenes", "4,8", "--sleep-ms", "20",
                 "--train-steps", "1", "--eval-scenes", "2", "--protocol-scenes", "1",
                 "--jobs", "1", "--work", str(work), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert not list(work.iterdir())  # the temporary folder is gone

    vertices = result["vertices"]
    assert (vertices["low"], vertices["high"]) == (1600, 29333)
    assert 1600 <= vertices["drawn"]["min"] <= vertices["drawn"]["max"] <= 29333
    generated = vertices["generated"]
    assert 0.9 * 1600 <= generated["min"] and generated["max"] <= 1.1 * 29333
    assert result["prepare"]["points_per_scene"] == generated
    positive(result["prepare"], "scenes_per_second", "seconds_per_scene", "cache_bytes_per_point")
    positive(result["prepare"]["cache_bytes_per_scene"], "mean", "min", "max")
    assert result["prepare"]["scenes"] == result["distinct_rooms"] == 3

    assert result["loader"]["samples"] == 3
    positive(result["loader"], "samples_per_second_per_worker", "seconds_per_sample_mean")

    rows = result["training"]["rows"]
    assert [(row["step"], row["loader_workers"]) for row in rows] == [
        (step, workers) for step in (*CONFIGS, "stand-in") for workers in LOADER_WORKERS]
    for row in rows:
        assert row["batches"] == (2 if row["step"] in CONFIGS else 3)
        assert 0 <= row["wait_fraction"] <= 1
        positive(row, "first_wait_s", "first_step_s", "step_s", "steps_per_second")
    assert all(row["step_s"] >= 0.02 * 2 for row in rows if row["step"] == "stand-in")

    memory = result["memory"]
    assert memory["distinct_rooms"] == 3 and memory["linked"] is True
    assert [row["scenes"] for row in memory["rows"]] == [4, 8]
    assert [row["batches"] for row in memory["rows"]] == [4, 8]  # one scene per batch
    for row in memory["rows"]:
        assert row["loader_workers"] == memory["loader_workers"]
        positive(row, "peak_rss_mb", "rss_after_epoch_mb", "seconds")
        assert row["rss_after_epoch_mb"] <= row["peak_rss_mb"] * 1.01
    positive(memory["real_epoch_hours"], "scenes", *CONFIGS)

    evaluation = result["evaluation"]
    assert evaluation["scenes"] == 2 and evaluation["protocol_scenes"] == 1
    positive(evaluation, "forward_s_per_scene", "protocol_s_per_scene")

    targets = result["targets"]
    assert targets["memory_scenes"] == [4, 8]
    positive(targets, "memory_peak_ratio")
    assert 0 <= targets["stand_in_wait_fraction"] <= 1
    assert targets["machine_loader_workers"] in LOADER_WORKERS
