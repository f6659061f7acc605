"""The `prepare` stage: caches, reruns, failures and interruptions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from scannet_files import (write_label_map, write_replica_scene, write_scanrefer,
                           write_scannet_scene)
from uniseg3d.cli import main
from uniseg3d.datasets import cache
from uniseg3d.datasets.cache import ARRAYS, cached_scene_ids, read_scene
from uniseg3d.datasets.labels import read_label_map
from uniseg3d.datasets.primitives import box_surface
from uniseg3d.datasets.scannet import read_scannet_scene, scene_files
from uniseg3d.pipelines.prepare import prepare_dataset


def assert_complete(scene_dir):
    names = {p.name for p in scene_dir.iterdir()}
    assert {f"{stem}.npy" for stem in ARRAYS} | {"instance_name.npy", "meta.json",
                                                 "referring.json"} <= names
    read_scene(scene_dir)


def test_cache_round_trip_equals_reader(scannet_raw, tmp_path):
    write_scanrefer(scannet_raw / "ScanRefer_filtered_train.json",
                    [("scene0000_00", 2, "chair", 0, "the chair."),
                     ("scene0000_00", 9, "bed", 0, "no such object.")])
    out = tmp_path / "cache"
    summary = prepare_dataset("scannet", scannet_raw, out, jobs=1, progress=False)
    assert [r.status for r in summary.results] == ["written", "written"]
    assert summary.results[0].dropped_descriptions == 1
    expected = read_scannet_scene(scannet_raw / "scans/scene0000_00",
                                  read_label_map(scannet_raw / "scannetv2-labels.combined.tsv"))
    loaded = read_scene(out / "scene0000_00", mmap=True)
    for field_name in ARRAYS.values():
        np.testing.assert_array_equal(getattr(loaded, field_name), getattr(expected, field_name))
        assert getattr(loaded, field_name).dtype == getattr(expected, field_name).dtype
    assert loaded.instance_names == expected.instance_names
    assert [d.object_id for d in loaded.referring] == [2]
    meta = json.loads((out / "scene0000_00/meta.json").read_text())
    assert meta["format_version"] == cache.FORMAT_VERSION
    assert set(meta["sources"]) == {"mesh", "segs", "aggregation", "label_map", "scanrefer"}
    assert meta["params"] == {"k_thresh": 0.01, "min_verts": 20, "recompute_superpoints": False}


def test_rerun_skips_unchanged_and_redoes_changed(scannet_raw, tmp_path):
    out = tmp_path / "cache"
    prepare_dataset("scannet", scannet_raw, out, jobs=1, progress=False)
    again = prepare_dataset("scannet", scannet_raw, out, jobs=1, progress=False)
    assert [r.status for r in again.results] == ["skipped", "skipped"]
    # a changed source file, and changed parameters, each force a rewrite
    aggregation = scene_files(scannet_raw / "scans/scene0001_00")["aggregation"]
    document = json.loads(aggregation.read_text())
    document["segGroups"][2]["label"] = "office chair"
    aggregation.write_text(json.dumps(document))
    third = prepare_dataset("scannet", scannet_raw, out, jobs=1, progress=False)
    assert [r.status for r in third.results] == ["skipped", "written"]
    assert read_scene(out / "scene0001_00").instance_names[2] == "office chair"
    fourth = prepare_dataset("scannet", scannet_raw, out, jobs=1, min_verts=5, progress=False)
    assert [r.status for r in fourth.results] == ["written", "written"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_failed_scene_is_listed_and_good_scenes_kept(scannet_raw, tmp_path, caplog):
    mesh = scene_files(scannet_raw / "scans/scene0001_00")["mesh"]
    mesh.write_bytes(mesh.read_bytes()[:300])
    out = tmp_path / "cache"
    code = main(["prepare", "--raw", str(scannet_raw), "--out", str(out), "--jobs", "2",
                 "--params", str(tmp_path / "none.yaml")])
    assert code == 1
    assert cached_scene_ids(out) == ["scene0000_00"]
    assert not (out / "scene0001_00").exists()
    assert any("scene0001_00" in r.getMessage() and "_vh_clean_2.ply" in r.getMessage()
               for r in caplog.records if r.levelname == "ERROR")


def test_scene_list_file_and_missing_scene(scannet_raw, tmp_path):
    scenes = tmp_path / "scannetv2_val.txt"
    scenes.write_text("scene0001_00\nscene0042_00\n")
    summary = prepare_dataset("scannet", scannet_raw, tmp_path / "cache", scenes=str(scenes),
                              jobs=1, progress=False)
    assert [(r.scene_id, r.status) for r in summary.results] == [
        ("scene0001_00", "written"), ("scene0042_00", "failed")]
    assert "no such file" in summary.results[1].error


def test_write_interrupted_midway_leaves_nothing(scannet_raw, tmp_path, monkeypatch):
    out = tmp_path / "cache"
    calls = {"n": 0}
    real_save = np.save

    def failing_save(path, array, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-scene
        return real_save(path, array, *args, **kwargs)

    monkeypatch.setattr(cache.np, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset("scannet", scannet_raw, out, jobs=1, progress=False)
    assert list(out.iterdir()) == []


def test_killed_process_leaves_no_partial_folder(tmp_path):
    raw = tmp_path / "raw"
    # ~40k-vertex scenes, so that each takes tens of milliseconds and the kill lands mid-run
    vertices, faces = box_surface([0, 0, 0], [3, 3, 2], 0.035)
    objects = [("wall", slice(0, len(vertices)))]
    for i in range(12):
        write_scannet_scene(raw, f"scene{i:04d}_00", vertices=vertices.astype(np.float32),
                            faces=faces, objects=objects, seed=i)
    write_label_map(raw / "scannetv2-labels.combined.tsv")
    out = tmp_path / "cache"
    command = [sys.executable, "-m", "uniseg3d.cli", "prepare", "--raw", str(raw), "--out",
               str(out), "--jobs", "1", "--recompute-superpoints", "--params",
               str(tmp_path / "none.yaml")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(cached_scene_ids(out)) < 2:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = cached_scene_ids(out)
    assert 2 <= len(done) < 12, "the kill should land mid-run"
    for path in out.iterdir():
        if not path.name.startswith("."):
            assert_complete(path)
    # the rerun cleans hidden leftovers, keeps finished scenes and completes the rest
    summary = prepare_dataset("scannet", raw, out, jobs=1, recompute_superpoints=True,
                              progress=False)
    statuses = {r.scene_id: r.status for r in summary.results}
    assert all(statuses[s] == "skipped" for s in done)
    assert sorted(p.name for p in out.iterdir()) == [f"scene{i:04d}_00" for i in range(12)]


def test_replica_dataset(tmp_path):
    raw = tmp_path / "replica"
    write_replica_scene(raw, "room_0")
    write_replica_scene(raw, "office_1")
    summary = prepare_dataset("replica", raw, tmp_path / "cache", jobs=2, progress=False)
    assert [(r.scene_id, r.status) for r in summary.results] == [("office_1", "written"),
                                                                  ("room_0", "written")]
    assert read_scene(tmp_path / "cache/room_0").instance_names == ("floor", "table lamp")


def test_missing_raw_folder_is_a_clear_cli_error(tmp_path, caplog):
    code = main(["prepare", "--raw", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c"),
                 "--params", str(tmp_path / "none.yaml")])
    assert code == 2
    assert any("nowhere/scans" in r.getMessage() for r in caplog.records)
