"""Small prepared evaluation data (two ScanNet-layout scenes with ScanRefer descriptions, one
Replica scene), ground-truth predictions on it and evaluation folders of their statistics,
shared by the evaluate, compare, sweep and report tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scannet_files import (write_label_map, write_replica_scene, write_scannet_scene,
                           write_scanrefer)
from uniseg3d.config import Params
from uniseg3d.datasets.labels import LABEL_MAP_FILE
from uniseg3d.datasets.loader import evaluation_sample, read_split
from uniseg3d.metrics.interactive import multi_object_clicks, protocol_scene_stats, protocol_stats
from uniseg3d.metrics.tasks import ScanNetTasks, instance_labels
from uniseg3d.model.inference import ScenePrediction
from uniseg3d.model.postprocess import Instances, PromptMasks
from uniseg3d.pipelines.evaluate import write_scene_stats
from uniseg3d.pipelines.prepare import prepare_dataset

EVALUATION_SCENES = ("scene0000_00", "scene0001_00")


def write_evaluation_data(root: Path) -> Path:
    """Raw files of EVALUATION_SCENES and of one Replica scene, prepared into `root/cache` and
    `root/replica`; `root/val.txt` lists the scenes."""
    raw = root / "raw"
    for seed, scene in enumerate(EVALUATION_SCENES):
        write_scannet_scene(raw, scene, seed=seed)
    write_label_map(raw / LABEL_MAP_FILE)
    write_scanrefer(raw / "ScanRefer_filtered_val.json",
                    [record for scene in EVALUATION_SCENES for record in (
                        (scene, 2, "chair", 0, "the chair next to the table"),
                        (scene, 3, "table", 1, "the large table in the middle"))])
    prepare_dataset("scannet", raw, root / "cache", jobs=1, progress=False)
    write_replica_scene(root / "replica_raw", "room_0")
    prepare_dataset("replica", root / "replica_raw", root / "replica", jobs=1, progress=False)
    (root / "val.txt").write_text("\n".join(EVALUATION_SCENES) + "\n")
    return root


def gt_prediction(sample, rng: np.random.Generator | None = None) -> ScenePrediction:
    """The scene's ground truth as a prediction; with `rng`, degraded (relabelled points, masks
    missing points, random scores, one spurious instance)."""
    scene = sample.scene
    masks = scene.instance[None, :] == np.arange(scene.num_instances)[:, None]
    classes = instance_labels(scene.semantic20, scene.instance, scene.num_instances)
    things = classes >= 2
    semantic = scene.semantic20.copy()
    instance_masks, labels, scores = masks[things], classes[things], np.ones(things.sum())
    if rng is not None:
        relabel = rng.random(scene.num_points) < 0.3
        semantic[relabel] = rng.integers(0, 20, relabel.sum())
        instance_masks = np.concatenate([instance_masks & (rng.random(instance_masks.shape) > 0.4),
                                         rng.random((1, scene.num_points)) < 0.2])
        labels, scores = np.append(labels, labels[0]), rng.random(len(instance_masks))
    stuff = np.isin(scene.semantic20, (0, 1))
    one_hot = np.eye(20)[np.maximum(classes, 0)]
    per_200 = instance_labels(scene.semantic200, scene.instance, scene.num_instances)
    return ScenePrediction(
        semantic=semantic, instances=Instances(instance_masks, labels, scores),
        panoptic_classes=scene.semantic20.copy(),
        panoptic_ids=np.where(stuff, -1, scene.instance),
        clicks=PromptMasks(masks[sample.click_instances], one_hot[sample.click_instances],
                           np.ones(len(sample.click_instances))),
        texts=PromptMasks(masks[sample.text_instances], one_hot[sample.text_instances],
                          np.ones(len(sample.text_instances))),
        open_vocab=Instances(masks[per_200 >= 0], per_200[per_200 >= 0],
                             np.ones((per_200 >= 0).sum())))


def write_evaluation(data: Path, out: Path, seed: int, dataset: str = "unit-test") -> str:
    """An evaluation folder as `evaluate` writes its statistics: degraded ground-truth
    predictions (`seed`) of the evaluation scenes of `data` scored into `out/scene_stats`, with
    synthetic click curves for the interactive protocol."""
    params, tasks, rng = Params(), ScanNetTasks(), np.random.default_rng(seed)
    protocol = []
    for index, scene in enumerate(read_split(data / "cache", list(EVALUATION_SCENES))):
        sample = evaluation_sample(scene, params, index)
        tasks.add(sample, gt_prediction(sample, rng))
        curves = [np.clip(np.cumsum(rng.uniform(0, 0.2, 20)), 0, 1) for _ in range(2)]
        multi = np.clip(np.cumsum(rng.uniform(0, 0.1, len(multi_object_clicks(2)))), 0, 1)
        protocol.append(protocol_scene_stats(scene.scene_id, curves, multi))
    stats = {**tasks.scene_stats(), "interactive_protocol": protocol_stats(protocol)}
    write_scene_stats(out, stats, dataset)
    return str(out)
