"""`uniseg3d bench serve`: how live the browser app feels, on the server side.

For each model configuration (random weights of the recipe in params.yaml, the text encoder of
params.yaml) and a generated ~100k-point room written as a prepared scene: the time to first
view (the request to open the scene: reading the cache, the backbone and all six tasks, the
point cloud sent), then the median and 95th percentile over 50 prompts of click-to-mask (a
click ray from above on a random scan point, up to 5 objects at once) and text-to-mask (the
room's descriptions in turn), from the server receiving the request to the new colours being
sent; and the server's resident memory with one and with three scenes open. No browser is
connected: what a page adds is its own drawing.
"""

from __future__ import annotations

import dataclasses
import socket
import statistics
import tempfile
from pathlib import Path

import numpy as np
import psutil
import torch

from uniseg3d.benchmarks.data_bench import machine
from uniseg3d.benchmarks.latency import timed_model
from uniseg3d.benchmarks.model_bench import benchmark_sample, benchmark_scene
from uniseg3d.config import Params
from uniseg3d.datasets.cache import write_scene
from uniseg3d.serve.app import ServeApp, ServeOptions
from uniseg3d.serve.session import Model

PROMPTS = 50
OBJECTS_AT_ONCE = 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stats(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"median_ms": float(statistics.median(ms)), "p95_ms": float(np.percentile(ms, 95)),
            "count": len(ms)}


def bench_config(params: Params, config: str, cache: Path, names: list[str],
                 texts: list[str]) -> dict:
    timed = timed_model(params, config, params.model.recipe, "cpu")
    process = psutil.Process()
    app = ServeApp(Model(timed.model, timed.encoder, timed.classes), [], cache,
                   ServeOptions(port=_free_port()))
    try:
        app._guard("open", app.open, names[0])
        memory_one = process.memory_info().rss / 2**20
        rng = np.random.default_rng(0)
        coords = app.current.scene.coords
        for k in range(PROMPTS):
            if k % OBJECTS_AT_ONCE == 0:
                app.current.clear_clicks()
            target = coords[rng.integers(len(coords))]
            app._guard("click", app.click_ray, tuple(target + [0.0, 0.0, 3.0]), (0, 0, -1.0))
        for k in range(PROMPTS):
            app._guard("text", app.describe, texts[k % len(texts)])
        for name in names[1:]:
            app._guard("open", app.open, name)
        memory_three = process.memory_info().rss / 2**20
        return {"config": config, "points": app.current.scene.num_points,
                "superpoints": app.current.scene.num_superpoints,
                "first_view_s": [round(t, 3) for t in app.timings["open"]],
                "click_to_mask": _stats(app.timings["click"]),
                "text_to_mask": _stats(app.timings["text"]),
                "memory_one_scene_mb": memory_one, "memory_three_scenes_mb": memory_three,
                "refused": [m for m in app.messages if m.startswith("⚠")]}
    finally:
        app.close()


def bench_serve(params: Params, configs: tuple[str, ...] = ("tiny", "paper"),
                points: int = 100_000) -> dict:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="uniseg3d-bench-serve-") as tmp:
        cache = Path(tmp)
        rooms = [benchmark_scene(points, seed)[0] for seed in range(3)]
        names = []
        for seed, room in enumerate(rooms):
            write_scene(dataclasses.replace(room, scene_id=f"room{seed}"), cache,
                        {"benchmark": "serve"})
            names.append(f"cache: room{seed}")
        texts = benchmark_sample(rooms[0], prompts=PROMPTS).texts
        results = [bench_config(params, config, cache, names, texts) for config in configs]
    return {"benchmark": "serve", "recipe": params.model.recipe, "prompts": PROMPTS,
            "objects_at_once": OBJECTS_AT_ONCE, "configs": results, "machine": machine()}
