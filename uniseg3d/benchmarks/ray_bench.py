"""Ray benchmarks: Ray Train's overhead over the plain epoch loop, and sweep throughput.

Both run in temporary folders, so no stage output is touched. Timings on a shared machine move
with its load: the results carry the load average before and after.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from uniseg3d.benchmarks.data_bench import machine
from uniseg3d.benchmarks.process_cpu import ProcessTreeCPU
from uniseg3d.config import Params, RayConfig, SweepConfig
from uniseg3d.datasets.streaming import available_cores
from uniseg3d.pipelines.ray_train import run_ray_train
from uniseg3d.pipelines.sweep import run_sweep
from uniseg3d.pipelines.train import (
    TrainResult, encode_descriptions, make_text_encoder, scene_sets, train, with_overrides)

TRAIN_WORKER_ROLE = "ray::RayTrainWorker"


def _timed(run: Callable[[], TrainResult]) -> dict:
    """Wall time of one training run, its per-epoch training and validation seconds, and the
    CPU seconds of this process and of each process it started (`ProcessTreeCPU`)."""
    with ProcessTreeCPU() as cpu:
        start = time.perf_counter()
        history = run().history
        wall = time.perf_counter() - start
    return {"wall_s": wall, "epochs_s": [record["seconds"] for record in history],
            "validation_s": sum(record.get("val_seconds", 0.0) for record in history),
            "losses": [record["train_total"] for record in history], "cpu_s": cpu.result()}


def warm_text_cache(params: Params) -> tuple[int, int, int]:
    """Encode every description of the training and validation scenes into the text cache, so
    that neither side of a comparison pays for the first encodings; returns the counts of
    training scenes, validation scenes and descriptions."""
    train_set, val_set = scene_sets(params)
    texts = encode_descriptions(make_text_encoder(params), train_set, val_set)
    return len(train_set), len(val_set), texts


def bench_ray_overhead(params: Params, epochs: int = 2, repeats: int = 2) -> dict:
    """`train()` against `run_ray_train` with one worker, both as the pipeline runs them (each
    reads the train.* scenes from the cache, the text cache is warm): the same epochs and the
    same torch thread count (`train.threads`, also the worker's CPU reservation). A Ray run is
    the whole of `uniseg3d train`: it starts a local Ray, trains, and shuts Ray down, so the
    direct runs have no Ray in the background (a Ray already running, as in the tests, is used
    by the Ray runs and left running). The two sides alternate, `repeats` times, in turn first;
    each side's fastest run counts (the least disturbed by other load).

    Wall time: `overhead_pct` is Ray's over the direct one; `epoch_overhead_pct` the same over
    the training epochs alone and `epoch_median_overhead_pct` over the median epoch;
    `ray_run_fixed_s` is the rest of the difference (Ray's start and shutdown, the worker
    group's start and stop, reporting, checkpoint copies). CPU time, which moves less with the
    machine's load: `cpu_overhead_pct` compares all CPU seconds of the two runs (for Ray, the
    driver's and every Ray process's), and `ray_other_cpu_s` is what Ray's processes other than
    the training worker used; over the run's wall time and `threads` cores it is
    `ray_other_core_share_pct`, the part of the training's cores that Ray took."""
    threads = params.train.threads
    train_scenes, val_scenes, texts = warm_text_cache(params)
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {"direct": [], "ray": []}
    with tempfile.TemporaryDirectory(prefix="uniseg3d-ray-bench-") as folder:
        direct_params = with_overrides(params, epochs=epochs, fine_tune_epochs=0,
                                       out=str(Path(folder) / "direct"))
        ray_params = with_overrides(direct_params, out=str(Path(folder) / "ray_out"))
        ray_cfg = RayConfig(num_workers=1, cpus_per_worker=threads, max_failures=0,
                            storage=str(Path(folder) / "ray"))
        sides = {"direct": lambda: train(direct_params, progress=False),
                 "ray": lambda: run_ray_train(ray_params, ray_cfg)}
        for repeat in range(repeats):
            for side in ("direct", "ray") if repeat % 2 == 0 else ("ray", "direct"):
                runs[side].append(_timed(sides[side]))
    direct, ray = (min(runs[side], key=lambda run: run["wall_s"]) for side in ("direct", "ray"))
    direct_epochs, ray_epochs = sum(direct["epochs_s"]), sum(ray["epochs_s"])
    # the median epoch over every run of a side: epochs are equal work, so bursts of other load
    # on the machine (which hit either side at random) move it least
    direct_median, ray_median = (
        float(np.median([s for run in runs[side] for s in run["epochs_s"]]))
        for side in ("direct", "ray"))
    direct_cpu, ray_cpu = (run["cpu_s"]["driver"] + run["cpu_s"]["children"]
                           for run in (direct, ray))
    ray_other_cpu = ray_cpu - ray["cpu_s"]["by_role"].get(TRAIN_WORKER_ROLE, 0.0)
    return {"benchmark": "ray-overhead", "epochs": epochs, "threads": threads,
            "repeats": repeats, "train_scenes": train_scenes,
            "val_scenes": val_scenes, "texts_cached": texts,
            "direct_s": direct["wall_s"], "ray_s": ray["wall_s"],
            "overhead_pct": 100 * (ray["wall_s"] - direct["wall_s"]) / direct["wall_s"],
            "direct_epoch_s": direct_epochs, "ray_epoch_s": ray_epochs,
            "epoch_overhead_pct": 100 * (ray_epochs - direct_epochs) / direct_epochs,
            "direct_epoch_median_s": direct_median, "ray_epoch_median_s": ray_median,
            "epoch_median_overhead_pct": 100 * (ray_median - direct_median) / direct_median,
            "direct_validation_s": direct["validation_s"], "ray_validation_s": ray["validation_s"],
            "ray_run_fixed_s": (ray["wall_s"] - ray_epochs - ray["validation_s"])
            - (direct["wall_s"] - direct_epochs - direct["validation_s"]),
            "direct_cpu_s": direct_cpu, "ray_cpu_s": ray_cpu,
            "cpu_overhead_pct": 100 * (ray_cpu - direct_cpu) / direct_cpu,
            "ray_other_cpu_s": ray_other_cpu,
            "ray_other_core_share_pct": 100 * ray_other_cpu / (ray["wall_s"] * threads),
            "runs": runs,
            "max_loss_rel_diff": max(abs(a - b) / a for a, b in zip(direct["losses"],
                                                                     ray["losses"])),
            "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "machine": machine()}


def bench_sweep(params: Params, sweep_cfg: SweepConfig) -> dict:
    """Trials per hour of `sweep_cfg` on this machine (local Ray, start-up included)."""
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="uniseg3d-sweep-bench-") as folder:
        start = time.perf_counter()
        summary = run_sweep(params, dataclasses.replace(sweep_cfg, out=str(Path(folder) / "out")),
                            RayConfig(max_failures=0, storage=str(Path(folder) / "ray")))
        seconds = time.perf_counter() - start
    return {"benchmark": "sweep", "trials": summary["trials"], "completed": summary["completed"],
            "epochs_per_trial": sweep_cfg.epochs, "cpus_per_trial": sweep_cfg.cpus_per_trial,
            "parallel_trials": max(1, available_cores() // sweep_cfg.cpus_per_trial),
            "seconds": seconds, "trials_per_hour": 3600 * summary["trials"] / seconds,
            "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "machine": machine()}
