"""`uniseg3d bench gpu`: the first command to run on a GPU machine.

Without CUDA it says so and returns `{"skipped": ...}` (the command exits 0). With CUDA, on
generated rooms at the paper's size:

- spconv: the backbone's superpoint features with spconv's GPU algorithm against the CPU
  Native algorithm, same weights and voxels, both recipes (their grids and batch-norm eps): the
  largest absolute difference and the features' scale;
- one training step of the paper configuration per precision (fp32, bf16, fp16): the median
  seconds of `repeats` steps after a warm-up and the peak GPU memory;
- the per-component inference latency of both recipes beside the paper's 230 ms
  (`bench latency` on the GPU);
- a one-worker Ray Train epoch with `ray.use_gpu: true` on a few generated rooms;
- the loader's data-wait fraction: the share of a training epoch spent waiting for the next
  batch, with 0 and 2 loader workers (`bench scale`'s `timed_stream`, the first batch apart).

The versions of torch, its CUDA runtime and spconv come with the figures: the installed torch
is built for CUDA 13.0 and spconv-cu120 bundles its own CUDA 12.0 runtime, which meet in one
process only here. Each figure is measured on its own: one that fails (a kernel missing for
the card, memory running out) is reported under `errors` with its exception and the others
still run, so one run shows everything that works.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from uniseg3d.benchmarks.data_bench import machine
from uniseg3d.benchmarks.latency import PAPER, bench_latency
from uniseg3d.benchmarks.model_bench import benchmark_sample, benchmark_scene
from uniseg3d.benchmarks.scale_bench import (
    TrainingStep, timed_stream, with_config, with_workers)
from uniseg3d.config import Params
from uniseg3d.datasets.streaming import SceneSet
from uniseg3d.model.backbone import OFFICIAL_GRID, OURS_GRID, SparseUNet
from uniseg3d.model.inputs import scene_targets
from uniseg3d.pipelines.samples import Example
from uniseg3d.pipelines.train import encode_descriptions

log = logging.getLogger(__name__)

RECIPES = {"ours": (OURS_GRID, 1e-5), "official": (OFFICIAL_GRID, 1e-4)}


def versions() -> dict:
    import spconv

    return {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "spconv": getattr(spconv, "__version__", "?"),
            "device": torch.cuda.get_device_name(0)}


def spconv_agreement(params: Params, points: int) -> list[dict]:
    """The paper backbone's superpoint features on the GPU against the CPU's Native algorithm."""
    scene, _ = benchmark_scene(points)
    dims = params.model.paper
    tensors = [torch.as_tensor(scene.coords, dtype=torch.float32),
               torch.as_tensor(scene.colors), torch.as_tensor(scene.superpoints, dtype=torch.long)]
    found = []
    for recipe, (grid, eps) in RECIPES.items():
        torch.manual_seed(0)
        cpu = SparseUNet(6, dims.channels, dims.blocks, dims.voxel_size, "cpu", grid, eps).eval()
        gpu = SparseUNet(6, dims.channels, dims.blocks, dims.voxel_size, "cuda", grid, eps)
        gpu.load_state_dict(cpu.state_dict())
        gpu = gpu.cuda().eval()
        with torch.no_grad():
            reference = cpu(*([t] for t in tensors))[0]
            measured = gpu(*([t.cuda()] for t in tensors))[0].cpu()
        found.append({"recipe": recipe, "superpoints": int(reference.shape[0]),
                      "max_abs_difference": float((measured - reference).abs().max()),
                      "feature_abs_max": float(reference.abs().max())})
    return found


def step_per_precision(params: Params, points: int, repeats: int) -> list[dict]:
    """Seconds and peak GPU memory of one training step of the paper model, per precision."""
    sample = benchmark_sample(benchmark_scene(points)[0])
    examples = [Example(sample, scene_targets(sample))]
    params = with_config(params, "paper")
    rows = []
    for precision in ("fp32", "bf16", "fp16"):
        step = TrainingStep(dataclasses.replace(
            params, train=dataclasses.replace(params.train, precision=precision)), "cuda",
            total_steps=repeats + 1)
        seconds = []
        torch.cuda.reset_peak_memory_stats()
        for repeat in range(repeats + 1):
            start = time.perf_counter()
            step(examples)  # synchronised
            if repeat:  # the first step is the warm-up
                seconds.append(time.perf_counter() - start)
        rows.append({"precision": precision, "median_s": statistics.median(seconds),
                     "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20})
        del step
        torch.cuda.empty_cache()
    return rows


def generated_dataset(params: Params, root: Path, rooms: int) -> Params:
    """`rooms` generated training rooms and 2 validation rooms, prepared under `root`; the
    params of a one-epoch run on them with one Ray Train worker on a GPU."""
    from uniseg3d.pipelines.prepare import prepare_dataset
    from uniseg3d.pipelines.synth import run_synth

    run_synth(root / "raw", train=rooms, val=2, replica=0, seed=0, jobs=params.prepare.jobs,
              progress=False)
    prepare_dataset("scannet", root / "raw", root / "cache", jobs=params.prepare.jobs,
                    progress=False)
    return dataclasses.replace(
        params, text=dataclasses.replace(params.text, cache_file=str(root / "text.pt")),
        train=dataclasses.replace(
            params.train, cache=str(root / "cache"), out=str(root / "run"), epochs=1,
            train_scenes=str(root / "raw" / "scannetv2_train.txt"),
            val_scenes=str(root / "raw" / "scannetv2_val.txt")),
        ray=dataclasses.replace(params.ray, use_gpu=True, num_workers=1,
                                storage=str(root / "ray")))


def ray_gpu_epoch(params: Params) -> dict:
    """One epoch of `uniseg3d train` with one Ray Train worker on a GPU."""
    from uniseg3d.pipelines.ray_train import run_ray_train

    start = time.perf_counter()
    result = run_ray_train(params, params.ray)
    return {"seconds": time.perf_counter() - start, "epochs": len(result.history),
            "train_total": result.history[-1]["train_total"]}


def data_wait(params: Params, workers: int) -> dict:
    """The share of one training epoch on the GPU spent waiting for the next batch
    (`scale_bench.timed_stream`: the first batch apart)."""
    params = with_workers(params, workers)
    train_set = SceneSet.listed(params.train.cache, params.train.train_scenes)
    step = TrainingStep(params, "cuda", total_steps=len(train_set))
    encode_descriptions(step.encoder, train_set)
    return timed_stream(params, train_set, step)


def measure(result: dict, name: str, figure: Callable[[], object], report: bool = True):
    """`figure()`, also as `result[name]` where `report`; where it raises, None, and its
    exception in `result["errors"]` (the GPU's memory released) so that the figures after it
    still run."""
    log.info("bench gpu: %s", name)
    try:
        value = figure()
    except Exception as error:  # noqa: BLE001 -- reported, and the other figures still run
        log.exception("bench gpu: %s failed", name)
        result.setdefault("errors", {})[name] = f"{type(error).__name__}: {error}"
        torch.cuda.empty_cache()
        return None
    if report:
        result[name] = value
    return value


def latencies(params: Params, points: int, repeats: int) -> list[dict]:
    """`bench latency` of the paper configuration on the GPU, both recipes."""
    return [{"recipe": recipe, "total_ms": found["total_ms"], "components": found["components"]}
            for recipe in RECIPES
            for found in [bench_latency(params, "paper", points, None, repeats, "cuda", recipe)]]


def bench_gpu(params: Params, points: int = 100_000, repeats: int = 5, rooms: int = 8) -> dict:
    """Every figure above on the first CUDA device, or `skipped` without one; a figure that
    failed is in `errors` instead."""
    if not torch.cuda.is_available():
        return {"benchmark": "gpu", "skipped": "no CUDA device: torch.cuda.is_available() is "
                "False, so there is nothing to measure here", "machine": machine()}
    result = {"benchmark": "gpu", "versions": versions(), "points": points,
              "paper_latency_ms": PAPER["components"]["total"], "machine": machine()}
    measure(result, "spconv_gpu_vs_cpu_native", lambda: spconv_agreement(params, points))
    measure(result, "training_step", lambda: step_per_precision(params, points, repeats))
    measure(result, "latency", lambda: latencies(params, points, repeats))
    with tempfile.TemporaryDirectory() as tmp:
        data = measure(result, "generated_rooms",
                       lambda: generated_dataset(params, Path(tmp), rooms), report=False)
        if data is not None:
            measure(result, "ray_train_gpu_epoch", lambda: ray_gpu_epoch(data))
            measure(result, "data_wait", lambda: [data_wait(data, workers) for workers in (0, 2)])
    return result
