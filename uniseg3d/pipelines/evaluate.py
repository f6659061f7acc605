"""The `evaluate` stage: a trained checkpoint on the validation scenes, all six tasks at once.

One forward per ScanNet-layout validation scene (`predict_scene`, with the ScanNet200 class names
as the open-vocabulary list) feeds `ScanNetTasks`: semantic mIoU, instance AP, panoptic PQ,
interactive mIoU / AP, referring mIoU / Acc and ScanNet200 open-vocabulary AP. Then, when the
Replica cache holds scenes, the zero-shot Replica evaluation: open-vocabulary instances against
the Replica class names as free text, also over the classes never seen in training (names that
are not a ScanNet20 training class). Outputs under `evaluate.out`:

* `metrics.json`: one section per task (fractions in [0, 1], NaN as null), `dataset`, `counts`,
  `timing`;
* `per_class_{semantic,instance,panoptic,open_vocab}.csv`;
* `scene_stats/<task>.npz`: every metric's per-scene sufficient statistics
  (`uniseg3d.metrics.scene_stats`), from which `uniseg3d compare` rescores any resample of the
  scenes; `metrics.json` is their reduction over all scenes;
* `predictions/`: ScanNet submission files (`instance/`, `semantic/`) with the matching ground
  truth (`gt_instance/`, `gt_semantic/`), so `evaluate_submission` reproduces the instance and
  semantic numbers.

The `evaluate` command then writes the leaderboards from `metrics.json` beside them
(`uniseg3d.benchmarks.leaderboard.write_evaluation_leaderboards`).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from uniseg3d.config import EvaluateConfig, Params
from uniseg3d.datasets.cache import cached_scene_ids, read_scene
from uniseg3d.datasets.classes import scannet20, scannet200
from uniseg3d.datasets.loader import Sample, evaluation_sample, read_scene_list, read_split
from uniseg3d.datasets.scene import Scene
from uniseg3d.metrics.instance import InstancePredictions
from uniseg3d.metrics.scene_stats import SCENE_STATS_DIR, SceneStats, first_row, write_stats
from uniseg3d.metrics.submission import (
    write_ids, write_instance_submission, write_semantic_submission)
from uniseg3d.metrics.tasks import (
    REPLICA_EXCLUDED, OpenVocabTask, ScanNetTasks, free_text, instance_gt_ids, replica_gt,
    replica_subsets, replica_vocabulary, task_scores)
from uniseg3d.model.inference import ScenePrediction, predict_scene
from uniseg3d.model.inputs import scene_input
from uniseg3d.model.precision import set_precision
from uniseg3d.model.text_encoder import CachedTextEncoder, class_embeddings
from uniseg3d.model.uniseg3d import UniSeg3D
from uniseg3d.pipelines.interactive import protocol_section, protocol_statistics
from uniseg3d.pipelines.train import class_prompt_names, load_trained_model

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
PREDICTIONS_DIR = "predictions"
PER_CLASS_FILE = "per_class_{}.csv"
PROTOCOL = "interactive_protocol"
COUNT_KEYS = ("classes", "count", "clicks")  # per-class tables and counts: not metric sections


@dataclass
class Predictor:
    """A trained model with its text encoder and ScanNet20 class embeddings."""

    model: UniSeg3D
    encoder: CachedTextEncoder
    classes: torch.Tensor
    device: str = "cpu"
    seconds: float = 0.0  # time spent in forward passes

    def vocabulary(self, names: list[str]) -> torch.Tensor:
        """Class embeddings of free-text class names."""
        return class_embeddings(self.encoder, names).to(self.device)

    def __call__(self, sample: Sample, open_vocabulary: torch.Tensor) -> ScenePrediction:
        start = time.perf_counter()
        inputs = scene_input(sample, self.encoder.encode_texts(sample.texts), self.device)
        prediction = predict_scene(self.model, inputs, self.classes, open_vocabulary)
        self.seconds += time.perf_counter() - start
        return prediction


def write_scene_files(root: str | Path, scene: Scene, prediction: ScenePrediction) -> None:
    """The scene's instance and semantic submission files and the matching ground truth."""
    root = Path(root)
    found = prediction.instances
    write_instance_submission(root / "instance", scene.scene_id,
                              InstancePredictions(found.masks, found.labels, found.scores))
    write_semantic_submission(root / "semantic", scene.scene_id, prediction.semantic)
    write_semantic_submission(root / "gt_semantic", scene.scene_id, scene.semantic20)
    (root / "gt_instance").mkdir(parents=True, exist_ok=True)
    write_ids(root / "gt_instance" / f"{scene.scene_id}.txt", instance_gt_ids(scene))


def metric_section(result: dict) -> dict:
    """A task's result without per-class tables and counts, NaN as None (JSON null)."""
    return {key: metric_section(value) if isinstance(value, dict)
            else None if isinstance(value, float) and math.isnan(value) else value
            for key, value in result.items() if key not in COUNT_KEYS}


def per_class_table(result: dict, subsets: dict | None = None) -> pd.DataFrame:
    """One row per class of a task's result; `subsets` adds a column of the subsets holding
    each class."""
    rows = []
    for name, values in result["classes"].items():
        row = {"class": name}
        if subsets is not None:
            row["subsets"] = " ".join(key for key, members in subsets.items() if name in members)
        rows.append({**row, **values})
    return pd.DataFrame(rows)


def validation_ids(cfg: EvaluateConfig) -> list[str]:
    scene_ids = read_scene_list(cfg.scenes) if cfg.scenes else cached_scene_ids(cfg.cache)
    if not scene_ids:
        raise ValueError(f"no validation scenes: {cfg.scenes or cfg.cache} lists none")
    return scene_ids


def evaluate_scannet(predictor: Predictor, params: Params, out: Path, progress: bool
                     ) -> ScanNetTasks:
    """Every ScanNet-layout validation scene through the model; submission files on the way."""
    cfg = params.evaluate
    scene_ids = validation_ids(cfg)
    vocabulary = predictor.vocabulary(class_prompt_names(scannet200().names))
    tasks = ScanNetTasks()
    for index, scene_id in enumerate(tqdm(scene_ids, desc="evaluate", unit="scene",
                                          disable=not progress)):
        sample = evaluation_sample(read_scene(Path(cfg.cache) / scene_id), params, index)
        prediction = predictor(sample, vocabulary)
        tasks.add(sample, prediction)
        write_scene_files(out / PREDICTIONS_DIR, sample.scene, prediction)
    return tasks


def evaluate_replica(predictor: Predictor, params: Params, progress: bool
                     ) -> OpenVocabTask | None:
    """Zero-shot open-vocabulary instances on the Replica cache (None: no Replica scenes)."""
    cache = params.evaluate.replica_cache
    scenes = read_split(cache) if cache is not None else []
    if not scenes:
        log.info("no Replica scenes in %s: zero-shot evaluation skipped", cache)
        return None
    names = replica_vocabulary(scenes)
    evaluated = [name for name in names if name not in REPLICA_EXCLUDED]
    task = OpenVocabTask(names, replica_subsets(evaluated, class_prompt_names(scannet20().names)),
                         REPLICA_EXCLUDED)
    vocabulary = predictor.vocabulary([free_text(name) for name in names])
    for index, scene in enumerate(tqdm(scenes, desc="evaluate replica", unit="scene",
                                       disable=not progress)):
        prediction = predictor(evaluation_sample(scene, params, index), vocabulary)
        task.add(replica_gt(scene, names), prediction.open_vocab, scene.scene_id)
    return task


def write_outputs(out: Path, metrics: dict, results: dict[str, dict],
                  vocabularies: dict[str, tuple[str, OpenVocabTask]]) -> None:
    """`metrics.json` and the per-class CSVs; `vocabularies`: benchmark name
    -> (its task key in `results`, the open-vocabulary task that produced it)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n",
                                    encoding="utf-8")
    for task in ("semantic", "instance", "panoptic"):
        per_class_table(results[task]).to_csv(out / PER_CLASS_FILE.format(task), index=False)
    tables = [per_class_table(results[key], task.subsets).assign(benchmark=benchmark)
              for benchmark, (key, task) in vocabularies.items()]
    table = pd.concat(tables, ignore_index=True)
    table.insert(0, "benchmark", table.pop("benchmark"))
    table.to_csv(out / PER_CLASS_FILE.format("open_vocab"), index=False)


def write_scene_stats(out: Path, stats: dict[str, SceneStats], dataset: str) -> None:
    """`out/scene_stats/<task>.npz` for each task, the dataset's label in each; the folder is
    written beside and renamed into place, so it never holds a mix of two evaluations."""
    partial = out / (SCENE_STATS_DIR + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for task, task_stats in stats.items():
        write_stats(partial / f"{task}.npz",
                    replace(task_stats, meta={**task_stats.meta, "dataset": dataset}))
    shutil.rmtree(out / SCENE_STATS_DIR, ignore_errors=True)
    partial.rename(out / SCENE_STATS_DIR)


def run_evaluate(params: Params, progress: bool = True, device: str = "cpu",
                 precision: str = "fp32") -> dict:
    """Evaluate `evaluate.checkpoint` on every task (`precision`: the backbone's,
    `uniseg3d.model.precision`); write the stage outputs; return the metrics (the content of
    `metrics.json`)."""
    cfg = params.evaluate
    start = time.perf_counter()
    torch.set_num_threads(params.train.threads)
    out = Path(cfg.out)
    shutil.rmtree(out / PREDICTIONS_DIR, ignore_errors=True)  # no stale scenes in the folders
    predictor = Predictor(*load_trained_model(cfg.checkpoint, device), device=device)
    set_precision(predictor.model, precision, device)
    tasks = evaluate_scannet(predictor, params, out, progress)
    scannet_seconds = predictor.seconds
    stats = tasks.scene_stats()
    vocabularies = {"scannet200": ("open_vocab", tasks.open_vocab)}
    replica = evaluate_replica(predictor, params, progress)
    if replica is not None:
        stats["replica"] = replica.scene_stats()
        vocabularies["replica"] = ("replica", replica)
    results = {task: first_row(task_scores(task_stats)) for task, task_stats in stats.items()}
    protocol_start = time.perf_counter()
    scene_ids = validation_ids(cfg)
    if cfg.protocol_clicks:
        stats[PROTOCOL] = protocol_statistics(
            predictor.model, (read_scene(Path(cfg.cache) / scene_id) for scene_id in scene_ids),
            predictor.encoder.dim, params.prompts.min_points, cfg.protocol_clicks, device,
            progress, len(scene_ids))
    protocol = protocol_section(stats[PROTOCOL]) if PROTOCOL in stats else None
    protocol_seconds = time.perf_counter() - protocol_start
    referring = results["referring"]
    counts = {"scannet_scenes": len(tasks), "replica_scenes": 0, "replica_classes": 0,
              "replica_unseen_classes": 0, "clicks": results["interactive"]["clicks"],
              "descriptions": referring["count"],
              "descriptions_unique": referring["unique"]["count"],
              "descriptions_multiple": referring["multiple"]["count"]}
    if replica is not None:
        counts.update(replica_scenes=len(replica), replica_classes=len(replica.evaluated_classes),
                      replica_unseen_classes=len(replica.subsets["unseen"]))
    metrics = {
        "dataset": cfg.dataset_label,
        **{task: metric_section(result) for task, result in results.items()},
        **({PROTOCOL: metric_section(protocol)} if protocol else {}),
        "counts": counts,
        "timing": {"forward_s": predictor.seconds, "scannet_forward_s": scannet_seconds,
                   "forward_s_per_scene": predictor.seconds
                   / (counts["scannet_scenes"] + counts["replica_scenes"]),
                   "interactive_protocol_s": protocol_seconds,
                   "total_s": time.perf_counter() - start},
    }
    write_outputs(out, metrics, results, vocabularies)
    write_scene_stats(out, stats, cfg.dataset_label)
    log.info("semantic mIoU %.3f, instance AP %.3f, PQ %.3f, interactive mIoU %.3f, referring "
             "mIoU %.3f, ScanNet200 AP %.3f (%d scenes, %.1f s) -> %s",
             results["semantic"]["miou"], results["instance"]["ap"], results["panoptic"]["pq"],
             results["interactive"]["miou"], results["referring"]["miou"],
             results["open_vocab"]["ap"], len(tasks), metrics["timing"]["total_s"], out)
    return metrics
