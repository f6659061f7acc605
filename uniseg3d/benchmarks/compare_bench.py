"""Speed of `uniseg3d compare`: two evaluations of generated scenes (every task's per-scene
statistics, extracted from synthetic ground truth and predictions by the metric modules and
written as `evaluate` writes them), compared with 1,000 paired bootstrap resamples; the command
runs in a process of its own (the benchmarks sit below the reports that write its output)."""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from uniseg3d.benchmarks.data_bench import machine
from uniseg3d.benchmarks.metrics_bench import synthetic_instance_scene
from uniseg3d.datasets.classes import scannet20, scannet200
from uniseg3d.metrics.instance import InstanceGT, InstancePredictions, instance_stats
from uniseg3d.metrics.interactive import protocol_scene_stats, protocol_stats
from uniseg3d.metrics.open_vocab import SCANNET200_EXCLUDED, open_vocab_stats, scannet200_subsets
from uniseg3d.metrics.panoptic import PanopticSegmentation, panoptic_stats
from uniseg3d.metrics.prompt import Clicks, interactive_stats, referring_stats
from uniseg3d.metrics.scene_stats import SceneStats
from uniseg3d.metrics.semantic import semantic_stats
from uniseg3d.pipelines.compare import compare_evaluations
from uniseg3d.pipelines.evaluate import write_scene_stats

log = logging.getLogger(__name__)

POINTS, PREDICTIONS, INSTANCES, DESCRIPTIONS, CLICKS = 20_000, 100, 30, 10, 20


def _curve(rng: np.random.Generator, length: int) -> np.ndarray:
    """An IoU curve that mostly rises with the clicks."""
    return np.clip(np.cumsum(rng.uniform(-0.05, 0.2, length)) + rng.uniform(0, 0.5), 0, 1)


def synthetic_evaluation(scenes: int, seed: int) -> dict[str, SceneStats]:
    """Every task's statistics of `scenes` generated scenes (the scene ids depend on the count
    only, the predictions on `seed`)."""
    rng = np.random.default_rng(seed)
    ids = [f"scene{i:04d}_00" for i in range(scenes)]
    data = [synthetic_instance_scene(rng, POINTS, PREDICTIONS, INSTANCES) for _ in ids]
    names20, names200 = scannet20().names, scannet200().names
    gts = [gt for gt, _ in data]
    semantic = [np.where(rng.random(POINTS) < 0.2, rng.integers(0, 20, POINTS), gt.labels)
                for gt in gts]
    clicked = [np.unique(gt.instances[gt.instances >= 0]) for gt in gts]
    click_masks = [(gt.instances[None] == c[:, None]) & (rng.random((len(c), POINTS)) > 0.3)
                   for gt, c in zip(gts, clicked)]
    described = [rng.choice(c, DESCRIPTIONS) for c in clicked]
    to200 = [rng.choice(len(names200), len(names20)) for _ in ids]
    single = [[_curve(rng, CLICKS) for _ in range(8)] for _ in ids]
    return {
        "semantic": semantic_stats((gt.labels for gt in gts), semantic, range(20), names20, ids),
        "instance": instance_stats(gts, (p for _, p in data), range(2, 20), names20[2:],
                                   scene_ids=ids),
        "panoptic": panoptic_stats(
            (PanopticSegmentation(gt.labels, gt.instances) for gt in gts),
            (PanopticSegmentation(s, gt.instances) for s, gt in zip(semantic, gts)), names20,
            scene_ids=ids),
        "interactive": interactive_stats(
            (Clicks(gt, c, m, rng.random(len(c))) for gt, c, m in zip(gts, clicked, click_masks)),
            range(2, 20), names20[2:], ids),
        "referring": referring_stats(
            (gt.instances[None] == d[:, None] for gt, d in zip(gts, described)),
            ((gt.instances[None] == d[:, None]) & (rng.random((len(d), POINTS)) > 0.5)
             for gt, d in zip(gts, described)),
            (rng.random(len(d)) < 0.3 for d in described), ids),
        "open_vocab": open_vocab_stats(
            (InstanceGT(np.where(gt.labels >= 0, m[gt.labels], -1), gt.instances)
             for gt, m in zip(gts, to200)),
            (InstancePredictions(p.masks, m[p.labels], p.scores)
             for (_, p), m in zip(data, to200)),
            names200, scannet200_subsets(), SCANNET200_EXCLUDED, ids),
        "interactive_protocol": protocol_stats(
            [protocol_scene_stats(i, s, _curve(rng, CLICKS * len(s) - len(s) + 1), CLICKS)
             for i, s in zip(ids, single)], CLICKS),
    }


def bench_compare(scenes: int | None = None, resamples: int = 1000) -> dict:
    """Seconds of `uniseg3d compare` (a fresh process: imports, reading the statistics, the
    bootstrap, the tables and figures) of two generated evaluations of each size in `scenes`
    (default: 20 and 312), and of the comparison alone (`compare_evaluations`, in this
    process)."""
    sizes = [scenes] if scenes else [20, 312]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            sides = []
            for seed in (0, 1):
                folder = Path(tmp) / f"{size}_{seed}"
                write_scene_stats(folder, synthetic_evaluation(size, seed), "synthetic")
                sides.append(str(folder))
            log.info("uniseg3d compare of two evaluations of %d scenes, %d resamples", size,
                     resamples)
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "uniseg3d.cli", "compare", *sides, "--out",
                            str(Path(tmp) / f"compare_{size}"), "--resamples", str(resamples)],
                           check=True, capture_output=True)
            command = time.perf_counter() - start
            start = time.perf_counter()
            document = compare_evaluations(sides, resamples=resamples)
            runs.append({"scenes": size, "command_s": command,
                         "comparison_s": time.perf_counter() - start,
                         "metrics": len(document["metrics"]),
                         "significant": sum(row["significant"] for row in document["metrics"])})
    return {"benchmark": "compare", "resamples": resamples, "points_per_scene": POINTS,
            "predictions_per_scene": PREDICTIONS, "instances_per_scene": INSTANCES,
            "descriptions_per_scene": DESCRIPTIONS, "runs": runs, "machine": machine()}
