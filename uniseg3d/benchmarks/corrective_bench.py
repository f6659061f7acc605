"""Speed of a corrective click: AGILE3D's multi-object protocol on one ~100k-point synthetic
room, the backbone run once and only the prompt queries' decoder pass (plus the click
simulation) per click."""

from __future__ import annotations

import statistics
import time

import numpy as np

from uniseg3d.benchmarks.data_bench import machine
from uniseg3d.benchmarks.latency import timed_model
from uniseg3d.benchmarks.model_bench import benchmark_scene
from uniseg3d.config import Params
from uniseg3d.datasets.loader import clickable_instances
from uniseg3d.pipelines.interactive import ClickLoop, multi_object_run
from uniseg3d.pipelines.train import load_trained_model


class TimedClickLoop(ClickLoop):
    """A `ClickLoop` that notes when each evaluation starts and how long its decoding takes."""

    def __init__(self, *args, **kwargs):
        start = time.perf_counter()
        super().__init__(*args, **kwargs)
        self.open_s = time.perf_counter() - start
        self.starts: list[float] = []
        self.decode_s: list[float] = []

    def labels(self, points: list[int], instances: list[int]) -> np.ndarray:
        start = time.perf_counter()
        labels = super().labels(points, instances)
        self.starts.append(start)
        self.decode_s.append(time.perf_counter() - start)
        return labels


def _stats(seconds: list[float]) -> dict:
    ms = sorted(1000 * s for s in seconds)
    return {"median_ms": statistics.median(ms),
            "p95_ms": ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))], "max_ms": ms[-1]}


def bench_corrective(params: Params, checkpoint: str | None = None, config: str = "tiny",
                     points: int = 100_000, clicks_per_object: int = 2,
                     device: str = "cpu") -> dict:
    """Seconds per corrective click (decode the prompts + place the next click) over the
    multi-object rounds of one generated room; `checkpoint` (default: random `config` weights)
    makes the masks, and so the error regions, a trained model's."""
    scene, _ = benchmark_scene(points)
    if checkpoint:
        model, encoder, _ = load_trained_model(checkpoint, device)
        dim, config = encoder.dim, f"checkpoint {checkpoint}"
    else:
        timed = timed_model(params, config, "ours", device)
        model, dim = timed.model, timed.raw_encoder.dim
    targets = [int(t) for t in clickable_instances(scene, params.prompts.min_points)]
    ClickLoop(model, scene, dim, device).labels([], [])  # warm-up
    loop = TimedClickLoop(model, scene, dim, device)
    multi_object_run(loop, targets, clicks_per_object)
    rounds = np.diff(loop.starts).tolist()  # one click: decode, score, place the next click
    return {"benchmark": "corrective_click", "config": config, "device": device,
            "machine": machine(),
            "points": scene.num_points, "superpoints": scene.num_superpoints,
            "objects": len(targets), "corrective_clicks": len(rounds),
            "backbone_and_generic_ms": 1000 * loop.open_s,
            "per_click": _stats(rounds), "decoder_per_click": _stats(loop.decode_s[1:]),
            "target_ms": 100.0}
