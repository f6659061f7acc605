"""`uniseg3d evaluate-predictions --task all`: any method's per-scene `predictions.npz`, made
with the prompts `evaluate` wrote, scored exactly as `evaluate` scores UniSeg3D.

Inputs: the prompts folder (`prompts/<scene>.json`, `uniseg3d.datasets.prompt_files`) and a
predictions folder holding `<scene>/predictions.npz` for each of its scenes (the layout
`uniseg3d predict --out <pred>/<scene>` gives; format: `uniseg3d.pipelines.prediction_files`).
Ground truth comes from the caches `evaluate` reads (`evaluate.cache`, and
`evaluate.replica_cache` for the Replica scenes' zero-shot open vocabulary). Outputs, as
`evaluate` writes them: `metrics.json` (with `method`; no `timing` and no interactive protocol,
which need the model in the loop), the per-class CSVs and `scene_stats/`; the command adds the
leaderboards. Every scene is read and checked before anything is written.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from uniseg3d.config import Params
from uniseg3d.datasets.cache import read_scene
from uniseg3d.datasets.prompt_files import ScenePrompts, read_prompts
from uniseg3d.datasets.scene import InputError
from uniseg3d.metrics.tasks import ScanNetTasks, free_text, replica_gt
from uniseg3d.pipelines.evaluate import (
    counts_section, metric_section, replica_task, scannet_classes, task_statistics,
    write_outputs, write_scene_stats)
from uniseg3d.pipelines.prediction_files import PREDICTIONS_FILE, read_predictions

log = logging.getLogger(__name__)


def read_prompt_folder(folder: str | Path) -> dict[str, list[ScenePrompts]]:
    """Every `<scene>.json` of `folder`, by benchmark, in the order `evaluate` evaluated them."""
    paths = sorted(Path(folder).glob("*.json"))
    if not paths:
        raise InputError(folder, "files", "one <scene>.json per scene (evaluate's prompts/)",
                         "no .json files")
    prompts = [read_prompts(path) for path in paths]
    by_benchmark: dict[str, list[ScenePrompts]] = {}
    for item in sorted(prompts, key=lambda p: (p.benchmark, p.index)):
        by_benchmark.setdefault(item.benchmark, []).append(item)
    if "scannet" not in by_benchmark:
        raise InputError(folder, "benchmark", "at least one scannet scene", "replica only")
    return by_benchmark


def check_scenes(pred_dir: Path, scene_ids: set[str]) -> None:
    """A predictions file for every scene of the prompts, none for another scene."""
    if not pred_dir.is_dir():
        raise InputError(pred_dir, "folder", "a folder of <scene>/predictions.npz", "no folder")
    for scene_id in sorted(scene_ids):
        path = pred_dir / scene_id / PREDICTIONS_FILE
        if not path.is_file():
            raise InputError(path, "file", f"the predictions of scene {scene_id}", "no such file")
    for path in sorted(pred_dir.glob(f"*/{PREDICTIONS_FILE}")):
        if path.parent.name not in scene_ids:
            raise InputError(path, "scene", "a scene of the prompts folder",
                             f"scene {path.parent.name}, which has no prompts")


def _predictions(pred_dir: Path, prompts: ScenePrompts, classes: list[str]):
    if prompts.classes != classes:
        raise InputError(prompts.source, "classes",
                         f"the {len(classes)} {prompts.benchmark} class names evaluate gives",
                         f"{len(prompts.classes)} other names")
    return read_predictions(pred_dir / prompts.scene_id / PREDICTIONS_FILE, prompts.points,
                            len(np.unique(prompts.click_instances)), len(prompts.texts),
                            len(classes))


def score_predictions(params: Params, prompts_dir: str | Path, pred_dir: str | Path,
                      out: str | Path, method: str) -> dict:
    """Score `pred_dir` against the prompts in `prompts_dir` on every task; write `out`'s
    files; return the metrics (`metrics.json`'s content, `method` naming the method)."""
    cfg = params.evaluate
    pred_dir, out = Path(pred_dir), Path(out)
    prompts = read_prompt_folder(prompts_dir)
    check_scenes(pred_dir, {p.scene_id for items in prompts.values() for p in items})
    tasks = ScanNetTasks()
    for item in prompts["scannet"]:
        sample = item.sample(read_scene(Path(cfg.cache) / item.scene_id))
        tasks.add(sample, _predictions(pred_dir, item, scannet_classes()))
    replica = None
    if "replica" in prompts:
        if cfg.replica_cache is None:
            raise InputError(prompts_dir, "benchmark", "no replica scenes "
                             "(evaluate.replica_cache is null)", "replica scenes")
        scenes = [read_scene(Path(cfg.replica_cache) / p.scene_id) for p in prompts["replica"]]
        replica = replica_task(scenes)
        classes = [free_text(name) for name in replica.class_names]
        for item, scene in zip(prompts["replica"], scenes):
            item.sample(scene)  # the prompts are the scene's
            found = _predictions(pred_dir, item, classes).open_vocab
            replica.add(replica_gt(scene, replica.class_names), found, scene.scene_id)
    stats, results, vocabularies = task_statistics(tasks, replica)
    metrics = {"dataset": cfg.dataset_label, "method": method,
               **{task: metric_section(result) for task, result in results.items()},
               "counts": counts_section(tasks, replica, results)}
    write_outputs(out, metrics, results, vocabularies)
    write_scene_stats(out, stats, cfg.dataset_label)
    log.info("%s: %d ScanNet-layout and %d Replica scenes scored -> %s", method, len(tasks),
             metrics["counts"]["replica_scenes"], out)
    return metrics
