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
* `prompts/<scene>.json`: the exact clicks, descriptions and open-vocabulary class list each
  scene was given (`uniseg3d.datasets.prompt_files`), so that another method run on them is
  scored the same way by `uniseg3d evaluate-predictions --task all`
  (`uniseg3d.pipelines.score_predictions`);
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

import copy
import functools
import json
import logging
import math
import multiprocessing
import shutil
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from uniseg3d.config import EvaluateConfig, Params
from uniseg3d.datasets.cache import cached_scene_ids, read_scene
from uniseg3d.datasets.classes import scannet20, scannet200
from uniseg3d.datasets.loader import Sample, evaluation_sample, read_scene_list
from uniseg3d.datasets.prompt_files import PROMPTS_DIR, prompts_document, write_prompts
from uniseg3d.datasets.scene import Scene
from uniseg3d.metrics.instance import InstancePredictions
from uniseg3d.metrics.interactive import protocol_stats
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
from uniseg3d.pipelines.interactive import protocol_section, scene_protocol
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


def scannet_classes() -> list[str]:
    """The open-vocabulary class list of the ScanNet-layout scenes (ScanNet200, as text)."""
    return class_prompt_names(scannet200().names)


def replica_task(scenes: list[Scene]) -> OpenVocabTask:
    """The zero-shot open-vocabulary task of the Replica scenes (their instance names); its
    class list as text is `[free_text(name) for name in task.class_names]`."""
    names = replica_vocabulary(scenes)
    evaluated = [name for name in names if name not in REPLICA_EXCLUDED]
    return OpenVocabTask(names, replica_subsets(evaluated, class_prompt_names(scannet20().names)),
                         REPLICA_EXCLUDED)


@dataclass(frozen=True)
class Share:
    """The scenes one evaluation worker runs: a contiguous slice of the ScanNet-layout
    validation ids and one of the Replica ids, each with its first scene's position in the
    whole list (a scene's position seeds its prompts, so a scene gets the same prompts whichever
    worker runs it)."""

    scannet: tuple[str, ...]
    scannet_start: int
    replica: tuple[str, ...]
    replica_start: int
    device: str
    threads: int


@dataclass
class ShareResult:
    """What one share's scenes gave: the tasks' records (joined across shares in order), the
    protocol's per-scene click curves, the prompts and the seconds spent."""

    tasks: ScanNetTasks
    replica: OpenVocabTask | None
    protocol: list[SceneStats] = field(default_factory=list)
    scannet_prompts: list[dict] = field(default_factory=list)
    replica_prompts: list[dict] = field(default_factory=list)
    scannet_seconds: float = 0.0
    forward_seconds: float = 0.0
    protocol_seconds: float = 0.0


def split_scenes(scannet: list[str], replica: list[str], workers: int, device: str,
                 threads: int) -> list[Share]:
    """`workers` shares of contiguous, near-equal slices of both scene lists (never more
    shares than ScanNet-layout scenes); on CUDA the shares take the devices in turn; the
    threads are divided among the shares."""
    workers = max(1, min(workers, len(scannet)))
    cuda = torch.device(device).type == "cuda" and workers > 1
    devices = [f"cuda:{i % torch.cuda.device_count()}" if cuda else device
               for i in range(workers)]
    a, b = (np.linspace(0, len(ids), workers + 1).round().astype(int) for ids in (scannet, replica))
    return [Share(tuple(scannet[a[i]:a[i + 1]]), int(a[i]), tuple(replica[b[i]:b[i + 1]]),
                  int(b[i]), devices[i], max(1, threads // workers)) for i in range(workers)]


def evaluate_share(params: Params, share: Share, precision: str, replica: OpenVocabTask | None,
                   tick: Callable[[], object]) -> ShareResult:
    """Every scene of `share` through the checkpoint: the ScanNet-layout scenes' six tasks
    (submission files written on the way), the Replica scenes' zero-shot instances against
    `replica`'s class list (an empty task: its class names), then AGILE3D's protocol on the
    ScanNet-layout scenes; `tick()` after each scene of each part."""
    cfg = params.evaluate
    torch.set_num_threads(share.threads)
    predictor = Predictor(*load_trained_model(cfg.checkpoint, share.device), device=share.device)
    set_precision(predictor.model, precision, share.device)
    result = ShareResult(ScanNetTasks(), copy.deepcopy(replica) if share.replica else None)
    classes = scannet_classes()
    vocabulary = predictor.vocabulary(classes)
    for index, scene_id in enumerate(share.scannet, share.scannet_start):
        sample = evaluation_sample(read_scene(Path(cfg.cache) / scene_id), params, index)
        prediction = predictor(sample, vocabulary)
        result.tasks.add(sample, prediction)
        write_scene_files(Path(cfg.out) / PREDICTIONS_DIR, sample.scene, prediction)
        result.scannet_prompts.append(prompts_document(sample, "scannet", index, classes))
        tick()
    result.scannet_seconds = predictor.seconds
    if result.replica is not None:
        classes = [free_text(name) for name in result.replica.class_names]
        vocabulary = predictor.vocabulary(classes)
        for index, scene_id in enumerate(share.replica, share.replica_start):
            scene = read_scene(Path(cfg.replica_cache) / scene_id)
            sample = evaluation_sample(scene, params, index)
            prediction = predictor(sample, vocabulary)
            result.replica.add(replica_gt(scene, result.replica.class_names),
                               prediction.open_vocab, scene.scene_id)
            result.replica_prompts.append(prompts_document(sample, "replica", index, classes))
            tick()
    result.forward_seconds = predictor.seconds
    start = time.perf_counter()
    for scene_id in share.scannet if cfg.protocol_clicks else ():
        result.protocol.append(scene_protocol(
            predictor.model, read_scene(Path(cfg.cache) / scene_id), predictor.encoder.dim,
            params.prompts.min_points, cfg.protocol_clicks, share.device))
        tick()
    result.protocol_seconds = time.perf_counter() - start
    return result


def run_shares(params: Params, shares: list[Share], precision: str,
               replica: OpenVocabTask | None, progress: bool) -> list[ShareResult]:
    """Every share's result, in order: one share in this process, several each in a process of
    its own (spawned: CUDA and torch's threads do not survive a fork), with one progress bar
    over all of them."""
    per_scene = 1 + bool(params.evaluate.protocol_clicks)
    total = sum(len(s.scannet) * per_scene + len(s.replica) for s in shares)
    with tqdm(total=total, desc="evaluate", unit="scene", disable=not progress) as bar:
        if len(shares) == 1:
            return [evaluate_share(params, shares[0], precision, replica, bar.update)]
        context = multiprocessing.get_context("spawn")
        with context.Manager() as manager, ProcessPoolExecutor(
                len(shares), mp_context=context) as pool:
            ticks = manager.Queue()
            futures = [pool.submit(evaluate_share, params, share, precision, replica,
                                   functools.partial(ticks.put, 1)) for share in shares]
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
                while not ticks.empty():
                    bar.update(ticks.get())
                for future in done:
                    future.result()  # a worker's error, raised here
            return [future.result() for future in futures]


def task_statistics(tasks: ScanNetTasks, replica: OpenVocabTask | None
                    ) -> tuple[dict[str, SceneStats], dict[str, dict], dict]:
    """Every task's per-scene statistics, its result (per-class tables included) and the
    open-vocabulary benchmarks for `write_outputs`."""
    stats = tasks.scene_stats()
    vocabularies = {"scannet200": ("open_vocab", tasks.open_vocab)}
    if replica is not None:
        stats["replica"] = replica.scene_stats()
        vocabularies["replica"] = ("replica", replica)
    results = {task: first_row(task_scores(task_stats)) for task, task_stats in stats.items()}
    return stats, results, vocabularies


def counts_section(tasks: ScanNetTasks, replica: OpenVocabTask | None, results: dict) -> dict:
    """`metrics.json`'s `counts`: scenes, classes, clicks and descriptions evaluated."""
    referring = results["referring"]
    counts = {"scannet_scenes": len(tasks), "replica_scenes": 0, "replica_classes": 0,
              "replica_unseen_classes": 0, "clicks": results["interactive"]["clicks"],
              "descriptions": referring["count"],
              "descriptions_unique": referring["unique"]["count"],
              "descriptions_multiple": referring["multiple"]["count"]}
    if replica is not None:
        counts.update(replica_scenes=len(replica), replica_classes=len(replica.evaluated_classes),
                      replica_unseen_classes=len(replica.subsets["unseen"]))
    return counts


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
                 precision: str = "fp32", workers: int = 1) -> dict:
    """Evaluate `evaluate.checkpoint` on every task (`precision`: the backbone's,
    `uniseg3d.model.precision`), the scenes split among `workers` processes (`split_scenes`;
    the records are joined in scene order, so the metrics do not depend on how many, up to
    the last bits of float sums that another thread count per process rounds otherwise);
    write the stage outputs; return the metrics (the content of `metrics.json`; its `timing`
    sums each part's seconds over the workers, and `total_s` is the wall time)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    cfg = params.evaluate
    start = time.perf_counter()
    out = Path(cfg.out)
    shutil.rmtree(out / PREDICTIONS_DIR, ignore_errors=True)  # no stale scenes in the folders
    replica_ids = cached_scene_ids(cfg.replica_cache) if cfg.replica_cache is not None else []
    # the class list: the scenes' instance names (their arrays mapped, not read; the workers
    # read their share's)
    replica = replica_task([read_scene(Path(cfg.replica_cache) / scene_id, mmap=True)
                            for scene_id in replica_ids]) if replica_ids else None
    if replica is None:
        log.info("no Replica scenes in %s: zero-shot evaluation skipped", cfg.replica_cache)
    shares = split_scenes(validation_ids(cfg), replica_ids, workers, device, params.train.threads)
    results = run_shares(params, shares, precision, replica, progress)
    tasks = ScanNetTasks()
    for result in results:
        tasks.extend(result.tasks)
        if result.replica is not None:
            replica.extend(result.replica)
    stats, results_by_task, vocabularies = task_statistics(tasks, replica)
    if cfg.protocol_clicks:
        stats[PROTOCOL] = protocol_stats([s for r in results for s in r.protocol],
                                         cfg.protocol_clicks)
    protocol = protocol_section(stats[PROTOCOL]) if PROTOCOL in stats else None
    counts = counts_section(tasks, replica, results_by_task)
    forward = sum(r.forward_seconds for r in results)
    metrics = {
        "dataset": cfg.dataset_label,
        **{task: metric_section(result) for task, result in results_by_task.items()},
        **({PROTOCOL: metric_section(protocol)} if protocol else {}),
        "counts": counts,
        "timing": {"workers": len(shares), "forward_s": forward,
                   "scannet_forward_s": sum(r.scannet_seconds for r in results),
                   "forward_s_per_scene": forward
                   / (counts["scannet_scenes"] + counts["replica_scenes"]),
                   "interactive_protocol_s": sum(r.protocol_seconds for r in results),
                   "total_s": time.perf_counter() - start},
    }
    write_outputs(out, metrics, results_by_task, vocabularies)
    write_scene_stats(out, stats, cfg.dataset_label)
    write_prompts(out / PROMPTS_DIR, [p for r in results for p in r.scannet_prompts]
                  + [p for r in results for p in r.replica_prompts])
    log.info("semantic mIoU %.3f, instance AP %.3f, PQ %.3f, interactive mIoU %.3f, referring "
             "mIoU %.3f, ScanNet200 AP %.3f (%d scenes, %d worker(s), %.1f s) -> %s",
             results_by_task["semantic"]["miou"], results_by_task["instance"]["ap"],
             results_by_task["panoptic"]["pq"], results_by_task["interactive"]["miou"],
             results_by_task["referring"]["miou"], results_by_task["open_vocab"]["ap"],
             len(tasks), len(shares), metrics["timing"]["total_s"], out)
    return metrics
