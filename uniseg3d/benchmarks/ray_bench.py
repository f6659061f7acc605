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

from uniseg3d.benchmarks.data_bench import machine
from uniseg3d.config import Params, RayConfig, SweepConfig
from uniseg3d.datasets.loader import read_scene_list, read_split
from uniseg3d.pipelines.ray_train import Request, available_cores, ray_session, run_ray_train
from uniseg3d.pipelines.sweep import run_sweep
from uniseg3d.pipelines.train import TrainResult, train, with_overrides


def _epoch_seconds(history: list[dict]) -> float:
    return sum(record["seconds"] for record in history)


def _timed(run: Callable[[], TrainResult]) -> tuple[float, list[dict]]:
    start = time.perf_counter()
    history = run().history
    return time.perf_counter() - start, history


def bench_ray_overhead(params: Params, epochs: int = 2, repeats: int = 2) -> dict:
    """`train()` against `run_ray_train` with one worker: the same scenes (read once, before
    either), the same epochs and the same torch thread count (`train.threads`, which is also
    the worker's CPU reservation), alternated `repeats` times; each side's fastest run counts
    (the least disturbed by other load). `overhead_pct`: Ray's wall time over the direct one,
    Ray's own start-up and shutdown (`ray_start_s`, `ray_shutdown_s`) excluded and reported
    apart; `epoch_overhead_pct`: the same over the epochs' training time alone, without the
    per-run cost of starting the worker group (`ray_run_fixed_s`)."""
    threads = params.train.threads
    cfg = params.train
    train_scenes = read_split(cfg.cache, read_scene_list(cfg.train_scenes)
                              if cfg.train_scenes else None)
    val_scenes = read_split(cfg.cache, read_scene_list(cfg.val_scenes)) if cfg.val_scenes else []
    load_before = os.getloadavg()
    direct_runs, ray_runs = [], []
    with tempfile.TemporaryDirectory(prefix="uniseg3d-ray-bench-") as folder:
        direct_params = with_overrides(params, epochs=epochs, fine_tune_epochs=0,
                                       out=str(Path(folder) / "direct"))
        ray_params = with_overrides(direct_params, out=str(Path(folder) / "ray_out"))
        ray_cfg = RayConfig(num_workers=1, cpus_per_worker=threads, max_failures=0,
                            storage=str(Path(folder) / "ray"))
        start = time.perf_counter()
        with ray_session(None, Request("benchmark workers", 1, threads, 0, "train.threads")):
            ray_start_s = time.perf_counter() - start
            for _ in range(repeats):
                direct_runs.append(_timed(lambda: train(
                    direct_params, progress=False, train_scenes=train_scenes,
                    val_scenes=val_scenes)))
                ray_runs.append(_timed(lambda: run_ray_train(
                    ray_params, ray_cfg, train_scenes=train_scenes, val_scenes=val_scenes)))
            start = time.perf_counter()
        ray_shutdown_s = time.perf_counter() - start
    (direct_s, direct), (ray_s, ray_history) = (min(runs, key=lambda run: run[0])
                                                for runs in (direct_runs, ray_runs))
    direct_epochs = min(_epoch_seconds(history) for _, history in direct_runs)
    ray_epochs = min(_epoch_seconds(history) for _, history in ray_runs)
    return {"benchmark": "ray-overhead", "epochs": epochs, "threads": threads,
            "repeats": repeats, "train_scenes": len(train_scenes),
            "val_scenes": len(val_scenes), "direct_s": direct_s, "ray_s": ray_s,
            "ray_start_s": ray_start_s, "ray_shutdown_s": ray_shutdown_s,
            "overhead_pct": 100 * (ray_s - direct_s) / direct_s,
            "direct_epoch_s": direct_epochs, "ray_epoch_s": ray_epochs,
            "epoch_overhead_pct": 100 * (ray_epochs - direct_epochs) / direct_epochs,
            "ray_run_fixed_s": (ray_s - ray_epochs) - (direct_s - direct_epochs),
            "all_runs_s": {"direct": [s for s, _ in direct_runs], "ray": [s for s, _ in ray_runs]},
            "max_loss_rel_diff": max(abs(a["train_total"] - b["train_total"]) / a["train_total"]
                                     for a, b in zip(direct, ray_history)),
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
