"""Speed of the metric code: in-memory ScanNet20 instance AP over synthetic scenes."""

from __future__ import annotations

import statistics
import time

import numpy as np

from uniseg3d.benchmarks.data_bench import machine
from uniseg3d.metrics.instance import (
    InstanceGT, InstancePredictions, evaluate_scannet20_instances)


def synthetic_instance_scene(rng: np.random.Generator, points: int, predictions: int,
                             instances: int = 30) -> tuple[InstanceGT, InstancePredictions]:
    """A ScanNet20-like scene: ~20% wall/floor/unlabelled points, `instances` objects of random
    thing classes; predictions are noisy copies of the objects (some relabelled) plus random
    blobs, with random scores."""
    owner = rng.integers(-1, instances, points)
    owner[rng.random(points) < 0.2] = -1
    object_class = rng.integers(2, 20, instances)
    semantic = np.where(owner >= 0, object_class[np.maximum(owner, 0)], rng.integers(-1, 2, points))
    masks = np.zeros((predictions, points), dtype=bool)
    labels = rng.integers(2, 20, predictions)
    for k in range(predictions):
        if k < instances:
            masks[k] = (owner == k) & (rng.random(points) > rng.uniform(0.0, 0.4))
            labels[k] = object_class[k] if rng.random() < 0.8 else labels[k]
        else:
            start = int(rng.integers(0, points - points // 20))
            masks[k, start:start + int(rng.integers(points // 200, points // 20))] = True
    return (InstanceGT(semantic, np.where(owner >= 0, owner, -1)),
            InstancePredictions(masks, labels, rng.random(predictions)))


def bench_instance_ap(scenes: int = 20, points: int = 100_000, predictions: int = 50,
                      seed: int = 0, repeats: int = 5) -> dict:
    """Median wall time of `evaluate_scannet20_instances` on `scenes` synthetic scenes held in
    memory (data generation not timed; one warm-up run)."""
    rng = np.random.default_rng(seed)
    data = [synthetic_instance_scene(rng, points, predictions) for _ in range(scenes)]
    gts, preds = [gt for gt, _ in data], [pred for _, pred in data]
    result = evaluate_scannet20_instances(gts, preds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        evaluate_scannet20_instances(gts, preds)
        times.append(time.perf_counter() - start)
    return {"benchmark": "instance_ap", "scenes": scenes, "points": points,
            "predictions": predictions, "gt_instances_per_scene": 30, "repeats": repeats,
            "median_s": statistics.median(times), "min_s": min(times),
            "ap": result["ap"], "ap50": result["ap50"], "ap25": result["ap25"],
            "machine": machine()}
