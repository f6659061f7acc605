"""`uniseg3d predict`: six coloured PLYs and a summary from one scan, and clear prompt errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from plyfile import PlyData

from uniseg3d.cli import main
from uniseg3d.datasets.ply import write_scannet_mesh

TASKS = ("semantic", "instance", "panoptic", "interactive", "referring", "open_vocabulary")


@pytest.fixture
def trained(trained_scan):
    return trained_scan


def test_predict_writes_every_task(tmp_path, trained):
    mesh, checkpoint = trained
    out = tmp_path / "out"
    code = main(["predict", str(mesh), "--checkpoint", str(checkpoint), "--click",
                 "0.75,0.75,0.9", "--click", "2.0,1.6,0.75", "--text", "the chair",
                 "--classes", "chair, table ,lamp", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["files"] == sorted([f"{t}.ply" for t in TASKS] + ["predictions.npz"])
    assert len(summary["objects"]) == 2 and len(summary["texts"]) == 1
    assert summary["negative_clicks"] == []
    assert summary["open_vocabulary"]["classes"] == ["chair", "table", "lamp"]
    source = PlyData.read(str(mesh))
    for task in TASKS:
        ply = PlyData.read(str(out / f"{task}.ply"))
        assert ply["vertex"].count == source["vertex"].count
        assert ply["face"].count == source["face"].count
    # a click on the chair box's top lands on a vertex of the chair
    assert summary["objects"][0]["clicks"][0]["point"] >= 0
    interactive = PlyData.read(str(out / "interactive.ply"))["vertex"]["mask"]
    arrays = np.load(out / "predictions.npz")
    for k, obj in enumerate(summary["objects"]):
        assert obj["assigned_points"] == int((interactive == k).sum())
        assert obj["mask_points"] == int(arrays["click_masks"][k].sum())
        # every point assigned to an object lies in that object's own mask
        assert arrays["click_masks"][k][interactive == k].all()


def test_several_clicks_per_object_and_negative_clicks(tmp_path, trained):
    mesh, checkpoint = trained
    out = tmp_path / "out"
    vertex = PlyData.read(str(mesh))["vertex"]
    first, second, third = (",".join(f"{vertex[a][i]:.4f}" for a in "xyz")
                            for i in (0, len(vertex.data) // 2, len(vertex.data) - 1))
    assert main(["predict", str(mesh), "--checkpoint", str(checkpoint), "--click", first,
                 "--negative", second, "--click", f"{third}@0", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["objects"]) == 1
    assert [c["point"] for c in summary["objects"][0]["clicks"]] == [0, len(vertex.data) - 1]
    assert [c["point"] for c in summary["negative_clicks"]] == [len(vertex.data) // 2]
    labels = PlyData.read(str(out / "interactive.ply"))["vertex"]["mask"]
    # a correction's point takes its click's label: the negative one no object, the second
    # click on object 0 object 0; the first click forces nothing (the paper's one-click
    # task): its point is in object 0 exactly where the object's own mask covers it
    assert labels[len(vertex.data) // 2] == -1
    assert labels[len(vertex.data) - 1] == 0
    own = np.load(out / "predictions.npz")["click_masks"][0]
    assert labels[0] == (0 if own[0] else -1)
    np.testing.assert_array_equal(labels == 0, own)  # one object: its mask is its label


def test_point_cloud_without_faces(tmp_path, trained):
    mesh, checkpoint = trained
    ply = PlyData.read(str(mesh))
    vertex = ply["vertex"].data
    cloud = tmp_path / "cloud.ply"
    coords = np.stack([vertex["x"], vertex["y"], vertex["z"]], 1)
    colors = np.stack([vertex["red"], vertex["green"], vertex["blue"]], 1)
    write_scannet_mesh(cloud, coords, colors, np.zeros((0, 3), dtype=np.int64))
    assert main(["predict", str(cloud), "--checkpoint", str(checkpoint), "--out",
                 str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out/summary.json").read_text())["superpoints"] > 1


@pytest.mark.parametrize("arguments, message", [
    (["--click", "9,9,9"], "from the nearest point of the scan"),
    (["--click", "1,2"], "three comma-separated numbers"),
    (["--click", "1,2,3@x"], "with K the object's number"),
    (["--click", "0,0,0@0"], "no object 0 yet"),
    (["--negative", "0,0,0"], "need at least one object"),
    (["--negative", "0,0"], "--negative '0,0': expected three"),
    (["--text", "   "], "is empty"),
    (["--text", "word " * 200], "200 words"),
])
def test_bad_prompts_are_clear_errors(tmp_path, trained, caplog, arguments, message):
    mesh, checkpoint = trained
    code = main(["predict", str(mesh), "--checkpoint", str(checkpoint), "--out",
                 str(tmp_path / "out"), *arguments])
    assert code == 2
    assert any(message in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "out").exists()


def test_missing_checkpoint(tmp_path, trained, caplog):
    mesh, _ = trained
    assert main(["predict", str(mesh), "--checkpoint", str(tmp_path / "nope.pt"), "--out",
                 str(tmp_path / "out")]) == 2
    assert any("no such checkpoint" in r.getMessage() for r in caplog.records)
