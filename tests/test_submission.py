"""ScanNet submission format: writer/reader round trips, the official algorithm end to end on
files, and malformed inputs (the error names the file, the line and the field)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from test_metrics_instance import random_scene, reference_table
from uniseg3d.datasets.classes import scannet20
from uniseg3d.datasets.scene import InputError
from uniseg3d.metrics.instance import (
    InstanceGT, InstancePredictions, evaluate_scannet20_instances, summarize_ap)
from uniseg3d.metrics.semantic import evaluate_semantic
from uniseg3d.metrics.submission import (
    evaluate_submission, format_table, read_instance_predictions, write_ids,
    write_instance_submission, write_semantic_submission)

THINGS = [int(i) for i in scannet20().source_ids[2:]]  # nyu40 ids of the 18 thing classes
SEM20_OF_NYU40 = {int(nyu): k for k, nyu in enumerate(scannet20().source_ids)}


def write_gt(folder: Path, scene: str, values: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_ids(folder / f"{scene}.txt", values)


def instance_folders(tmp_path: Path, seed: int = 0, scenes: int = 3):
    """GT and prediction folders from random scenes (nyu40 encoded GT, our writer for the
    predictions, whose labels are ScanNet20 class indices)."""
    rng = np.random.default_rng(seed)
    data = [random_scene(rng, THINGS[:4] + THINGS[10:12]) for _ in range(scenes)]
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    for s, (gt_ids, masks, labels, confs) in enumerate(data):
        write_gt(gt_dir, f"scene{s:04d}_00", gt_ids)
        sem20 = np.array([SEM20_OF_NYU40.get(label, -1) for label in labels])
        write_instance_submission(pred_dir, f"scene{s:04d}_00",
                                  InstancePredictions(masks, sem20, np.array(confs)))
    return data, gt_dir, pred_dir


def test_instance_files_reproduce_the_official_algorithm(tmp_path):
    data, gt_dir, pred_dir = instance_folders(tmp_path)
    result = evaluate_submission("instance", gt_dir, pred_dir)
    expected = summarize_ap(reference_table(data, THINGS), scannet20().names[2:])
    assert result["task"] == "instance" and result["scenes"] == 3
    assert (result["ap"], result["ap50"], result["ap25"]) == \
        (expected["ap"], expected["ap50"], expected["ap25"])
    for name, values in expected["classes"].items():
        assert result["classes"][name] == {k: None if np.isnan(v) else v
                                           for k, v in values.items()}
    json.dumps(result, allow_nan=False)


def test_instance_round_trip_equals_in_memory(tmp_path):
    n = 600
    semantic = np.select([np.arange(n) < 300, np.arange(n) < 500], [4, 6], 0)  # chair, table
    instance = np.select([np.arange(n) < 150, np.arange(n) < 300, np.arange(n) < 500], [0, 1, 2],
                         -1)
    masks = np.array([np.arange(n) < 140, (np.arange(n) >= 150) & (np.arange(n) < 320),
                      (np.arange(n) >= 300) & (np.arange(n) < 500)])
    pred = InstancePredictions(masks, np.array([4, 4, 6]), np.array([0.3, 0.1 + 0.2, 1 / 3]))
    gt_ids = np.where(instance >= 0, scannet20().source_ids[semantic] * 1000 + instance + 1, 0)
    write_gt(tmp_path / "gt", "scene0000_00", gt_ids)
    write_instance_submission(tmp_path / "pred", "scene0000_00", pred)
    on_disk = evaluate_submission("instance", tmp_path / "gt", tmp_path / "pred")
    in_memory = evaluate_scannet20_instances([InstanceGT(semantic, instance)], [pred])
    assert on_disk["ap"] == in_memory["ap"] and on_disk["ap25"] == in_memory["ap25"]
    back = read_instance_predictions(tmp_path / "pred" / "scene0000_00.txt", tmp_path / "pred", n)
    np.testing.assert_array_equal(back.masks, masks)
    np.testing.assert_array_equal(back.scores, pred.scores)  # confidences written exactly
    np.testing.assert_array_equal(back.labels, [5, 5, 7])  # nyu40 chair, table


def test_semantic_round_trip_and_table(tmp_path):
    rng = np.random.default_rng(0)
    gt20 = rng.integers(-1, 20, 1000)
    pred20 = np.where(rng.random(1000) < 0.8, gt20, rng.integers(0, 20, 1000))
    nyu = scannet20().source_ids
    write_gt(tmp_path / "gt", "scene0000_00", np.where(gt20 >= 0, nyu[gt20], 0))
    write_semantic_submission(tmp_path / "pred", "scene0000_00", pred20)
    result = evaluate_submission("semantic", tmp_path / "gt", tmp_path / "pred")
    expected = evaluate_semantic([gt20], [pred20], range(20), scannet20().names)
    assert result["miou"] == expected["miou"]
    assert result["classes"]["sofa"]["iou"] == expected["classes"]["sofa"]["iou"]
    table = format_table(result)
    assert "semantic segmentation, 1 scenes" in table
    assert "shower curtain" in table and "average" in table
    assert f"{expected['miou']:.4f}" in table.splitlines()[-1]
    assert "AP50" in format_table(evaluate_submission(
        "instance", *instance_folders(tmp_path / "inst", scenes=1)[1:]))


def test_missing_and_extra_scenes(tmp_path):
    write_gt(tmp_path / "gt", "scene0000_00", np.ones(5, dtype=int))
    write_gt(tmp_path / "gt", "scene0001_00", np.ones(5, dtype=int))
    write_semantic_submission(tmp_path / "pred", "scene0000_00", np.ones(5, dtype=int))
    with pytest.raises(InputError, match="scene0001_00"):
        evaluate_submission("semantic", tmp_path / "gt", tmp_path / "pred")
    write_semantic_submission(tmp_path / "pred", "scene0001_00", np.ones(5, dtype=int))
    write_semantic_submission(tmp_path / "pred", "scene0002_00", np.ones(5, dtype=int))
    with pytest.raises(InputError, match="scene0002_00"):
        evaluate_submission("semantic", tmp_path / "gt", tmp_path / "pred")
    with pytest.raises(ValueError):
        evaluate_submission("panoptic", tmp_path / "gt", tmp_path / "pred")


def test_semantic_length_mismatch(tmp_path):
    write_gt(tmp_path / "gt", "scene0000_00", np.ones(5, dtype=int))
    write_semantic_submission(tmp_path / "pred", "scene0000_00", np.ones(4, dtype=int))
    with pytest.raises(InputError) as error:
        evaluate_submission("semantic", tmp_path / "gt", tmp_path / "pred")
    assert error.value.field == "vertices" and error.value.path.endswith("scene0000_00.txt")
    assert "5 lines" in error.value.expected and error.value.found == "4 lines"


@pytest.mark.parametrize("line, field", [
    ("pred_mask/m.txt 5", "fields"),
    ("pred_mask/m.txt 5 0.5 extra", "fields"),
    ("pred_mask/m.txt chair 0.5", "label_id"),
    ("pred_mask/m.txt 5 high", "confidence"),
    ("pred_mask/missing.txt 5 0.5", "mask_file"),
    ("../outside.txt 5 0.5", "mask_file"),
    ("/etc/hostname 5 0.5", "mask_file"),
])
def test_malformed_prediction_lines_name_file_line_and_field(tmp_path, line, field):
    pred_dir = tmp_path / "pred"
    (pred_dir / "pred_mask").mkdir(parents=True)
    write_ids(pred_dir / "pred_mask" / "m.txt", np.ones(4, dtype=int))
    (tmp_path / "outside.txt").write_text("1\n1\n1\n1\n")
    path = pred_dir / "scene0000_00.txt"
    path.write_text(f"pred_mask/m.txt 5 0.9\n\n{line}\n")
    with pytest.raises(InputError) as error:
        read_instance_predictions(path, pred_dir, 4)
    assert error.value.path == f"{path}:3" and error.value.field == field
    assert str(path) in str(error.value)


def test_malformed_mask_and_gt_files(tmp_path):
    pred_dir = tmp_path / "pred"
    (pred_dir / "pred_mask").mkdir(parents=True)
    path = pred_dir / "scene0000_00.txt"
    path.write_text("pred_mask/m.txt 5 0.9\n")
    mask = pred_dir / "pred_mask" / "m.txt"
    mask.write_text("0\n1\n1\n")
    with pytest.raises(InputError) as error:  # 3 lines for a 4-vertex scene
        read_instance_predictions(path, pred_dir, 4)
    assert error.value.path == str(mask) and error.value.field == "vertices"
    mask.write_text("0\n1\nyes\n1\n")
    with pytest.raises(InputError) as error:
        read_instance_predictions(path, pred_dir, 4)
    assert error.value.path == f"{mask}:3" and error.value.found == "'yes'"
    write_gt(tmp_path / "gt", "scene0000_00", np.ones(4, dtype=int))
    (tmp_path / "gt" / "scene0000_00.txt").write_text("5001\n5001\n5001.5\n0\n")
    with pytest.raises(InputError) as error:
        evaluate_submission("instance", tmp_path / "gt", pred_dir)
    assert error.value.path.endswith("scene0000_00.txt:3") and error.value.field == "instance id"


def test_repeated_mask_path_keeps_the_last_line(tmp_path):
    pred_dir = tmp_path / "pred"
    (pred_dir / "pred_mask").mkdir(parents=True)
    write_ids(pred_dir / "pred_mask" / "m.txt", np.array([1, 0, 1]))
    write_ids(pred_dir / "pred_mask" / "n.txt", np.array([0, 1, 0]))
    path = pred_dir / "s.txt"
    path.write_text("pred_mask/m.txt 5 0.9\npred_mask/n.txt 7 0.1\npred_mask/m.txt 3 0.4\n")
    pred = read_instance_predictions(path, pred_dir, 3)
    np.testing.assert_array_equal(pred.labels, [3, 7])
    np.testing.assert_array_equal(pred.scores, [0.4, 0.1])
    np.testing.assert_array_equal(pred.masks, [[1, 0, 1], [0, 1, 0]])


def test_a_scene_without_predictions_writes_an_empty_list(tmp_path):
    from uniseg3d.metrics.instance import InstancePredictions
    from uniseg3d.metrics.submission import write_instance_submission

    path = write_instance_submission(tmp_path, "scene0000_00", InstancePredictions(
        np.zeros((0, 50), dtype=bool), np.zeros(0, dtype=np.int64), np.zeros(0)))
    assert path.read_text() == ""
