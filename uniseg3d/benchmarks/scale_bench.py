"""`uniseg3d bench scale`: the data path and the training loop at ScanNet's scene sizes and counts.

A pool of distinct generated rooms whose vertex counts are drawn like ScanNet's
(`VertexCounts`) is generated and prepared: prepare throughput and cache bytes per scene. The
caches of N training scenes (100, 1,000) are made of the pool's files, hard-linked under new
scene ids. On them: the loader's samples per second per worker process at the paper's settings;
training steps per second and the share of each step spent waiting for data with 0, 1 and 2
loader workers, for the real tiny and paper steps on this CPU and for a stand-in accelerator (a
step that sleeps a fixed time); the training process's peak memory after one epoch over each N
scenes, each epoch in a fresh process; evaluation seconds per scene. `timed_stream` and
`TrainingStep` also give `bench gpu` its data-wait figure.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import torch

from uniseg3d.benchmarks.data_bench import machine
from uniseg3d.config import Params
from uniseg3d.datasets.cache import META_FILE, read_meta, read_scene
from uniseg3d.datasets.classes import scannet20
from uniseg3d.datasets.loader import evaluation_sample
from uniseg3d.datasets.streaming import Item, Prepared, SceneSet
from uniseg3d.datasets.synthetic.generate import spacing_for_vertices
from uniseg3d.model.criterion import Criterion
from uniseg3d.model.precision import grad_scaler
from uniseg3d.model.text_encoder import CachedTextEncoder, class_embeddings
from uniseg3d.model.uniseg3d import UniSeg3D
from uniseg3d.pipelines.evaluate import Predictor, scannet_classes
from uniseg3d.pipelines.interactive import protocol_statistics
from uniseg3d.pipelines.prepare import prepare_dataset
from uniseg3d.pipelines.samples import (
    TRAIN, Example, loader_workers, open_stream, preparation, training_batches)
from uniseg3d.pipelines.synth import run_synth, scene_tasks
from uniseg3d.pipelines.train import (
    build_model, class_prompt_names, encode_descriptions, epoch_generators, make_text_encoder,
    poly_schedule, train_step, trainable)

log = logging.getLogger(__name__)

LOADER_WORKERS = (0, 1, 2)
CONFIGS = ("tiny", "paper")
SCENE_LIST = "scenes.txt"


@dataclass(frozen=True)
class VertexCounts:
    """Vertices per room: a log-normal whose mean is `mean` and whose logarithm has standard
    deviation `sigma`, clipped to [`low`, `high`]."""

    mean: float = 150_000
    sigma: float = 0.55
    low: int = 30_000
    high: int = 550_000

    @classmethod
    def scannet_like(cls, mean: float = 150_000) -> VertexCounts:
        """ScanNet's rooms: tens of thousands to several hundred thousand vertices, a mean near
        150k; the clipping bounds scale with `mean` (30k and 550k at 150k)."""
        return cls(mean, cls.sigma, round(mean / 5), round(mean * 11 / 3))

    def __post_init__(self):
        if not 0 < self.low <= self.mean <= self.high or self.sigma < 0:
            raise ValueError(f"vertex counts need 0 < low <= mean <= high and sigma >= 0, got "
                             f"{self}")

    def draw(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """`count` vertex counts."""
        mu = math.log(self.mean) - self.sigma ** 2 / 2  # the log-normal's mean is `mean`
        return np.clip(np.round(rng.lognormal(mu, self.sigma, count)), self.low,
                       self.high).astype(np.int64)

    def describe(self) -> dict:
        return {"distribution": "vertices per room: log-normal of mean `mean` (before the "
                                "clipping) and log standard deviation `sigma`, clipped to "
                                "[low, high]", **dataclasses.asdict(self)}


@dataclass(frozen=True)
class ScaleSettings:
    """What `bench_scale` measures, and on how much."""

    rooms: int = 100  # distinct generated rooms (the pool every N-scene cache links to)
    vertices: VertexCounts = VertexCounts()
    memory_scenes: tuple[int, ...] = (100, 1000)  # scenes of each memory epoch
    sleep_ms: float = 300.0  # the stand-in accelerator's step
    steps: int = 4  # timed real-model steps per configuration and worker count
    eval_scenes: int = 3  # rooms evaluated with the tiny model
    protocol_scenes: int = 0  # of them, with AGILE3D's protocol (0: left out; minutes a room)
    jobs: int = 2  # synth and prepare worker processes
    seed: int = 0
    work: str | None = None  # where the temporary folder goes (None: the system's)

    def check(self, batch_size: int) -> None:
        """Refuse settings that cannot be measured, before anything runs."""
        if self.rooms < 1 or self.steps < 1 or self.jobs < 1 or self.sleep_ms < 0:
            raise ValueError("rooms, steps and jobs must be >= 1 and sleep_ms >= 0, got "
                             f"{self.rooms}, {self.steps}, {self.jobs}, {self.sleep_ms}")
        if not self.memory_scenes or any(n < 1 for n in self.memory_scenes):
            raise ValueError(f"memory_scenes must be positive scene counts, got "
                             f"{self.memory_scenes}")
        if -(-self.rooms // batch_size) < self.steps + 1:
            raise ValueError(f"{self.rooms} rooms make {-(-self.rooms // batch_size)} batches of "
                             f"{batch_size}; {self.steps} timed steps need {self.steps + 1} (one "
                             "warm-up): more rooms or fewer steps")
        if not 1 <= self.eval_scenes <= self.rooms or \
                not 0 <= self.protocol_scenes <= self.eval_scenes:
            raise ValueError(f"need 1 <= eval_scenes <= rooms and 0 <= protocol_scenes <= "
                             f"eval_scenes, got {self.eval_scenes}, {self.protocol_scenes}")


# ----------------------------------------------------------------- the steps and their timing


def initial_model(params: Params, device: str = "cpu"
                  ) -> tuple[UniSeg3D, CachedTextEncoder, torch.Tensor]:
    """The `ours` model of `params` at its initial weights (seed 0), its text encoder and the
    ScanNet20 class embeddings: what `load_trained_model` gives for a checkpoint."""
    encoder = make_text_encoder(params, device)
    classes = class_embeddings(encoder, class_prompt_names(scannet20().names)).to(device)
    torch.manual_seed(0)
    return build_model(params, classes.shape[1], device), encoder, classes


class TrainingStep:
    """One optimisation step of the `ours` model of `params` on `device`, as `fit` takes it
    (`train_step`: forward with corrective clicks, losses, backward, clipping, AdamW, the poly
    schedule over `total_steps`), the device synchronised after it."""

    def __init__(self, params: Params, device: str = "cpu", total_steps: int = 1):
        self.params, self.device = params, device
        self.model, self.encoder, self.classes = initial_model(params, device)
        self.model.train()
        self.criterion = Criterion(params.loss, len(scannet20()))
        self.optimizer = torch.optim.AdamW(trainable(self.model, self.criterion),
                                           lr=params.train.lr)
        self.scheduler = poly_schedule(self.optimizer, total_steps, params.train.poly_power)
        self.scaler = grad_scaler(params.train.precision, device)
        self.rng, self.generator = epoch_generators(params.train.seed, 0)

    def __call__(self, examples: list[Example]) -> None:
        train_step(self.model, self.criterion, self.optimizer, self.scheduler, self.scaler,
                   examples, self.params, self.encoder, self.classes, self.rng, self.generator,
                   self.device)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()


@dataclass(frozen=True)
class StandIn:
    """A stand-in accelerator: reads the batch (every point's coordinates, the target masks),
    then sleeps `ms` milliseconds, leaving the CPU to the loader as a device's step would."""

    ms: float

    def __call__(self, examples: list[Example]) -> None:
        touched = sum(float(e.sample.scene.coords.sum()) + float(e.targets.masks.sum())
                      for e in examples)
        if not math.isfinite(touched):
            raise ValueError("a prepared batch holds non-finite values")
        time.sleep(self.ms / 1000)


def timed_stream(params: Params, train_set: SceneSet, step: Callable[[list[Example]], None],
                 batches: int | None = None) -> dict:
    """`step` on the first `batches` training batches of epoch 0 (all of them when None), their
    samples streamed by `train.loader_workers` loader workers (`open_stream`, as `fit` does).
    The first batch (the workers' start, the step's warm-up) is reported apart; over the others:
    the seconds blocked getting the next batch (`wait_s`; with 0 workers its preparation) and in
    `step`, the waiting share of their sum and steps per second."""
    plan = training_batches(params, len(train_set), 0, 1, 0)[:batches]
    stream = open_stream(params, train_set, SceneSet())
    waits, steps = [], []
    try:
        batches_iter = stream.batches(plan)
        while True:
            start = time.perf_counter()
            examples = next(batches_iter, None)
            if examples is None:
                break
            waits.append(time.perf_counter() - start)
            start = time.perf_counter()
            step(examples)
            steps.append(time.perf_counter() - start)
    finally:
        stream.close()
    wait, stepped = sum(waits[1:]), sum(steps[1:])
    timed = len(steps) - 1
    return {"loader_workers": loader_workers(params), "batches": len(steps),
            "first_wait_s": waits[0], "first_step_s": steps[0], "wait_s": wait,
            "step_s": stepped, "wait_fraction": wait / (wait + stepped) if timed else None,
            "steps_per_second": timed / (wait + stepped) if timed else None}


def with_workers(params: Params, workers: int | None) -> Params:
    return dataclasses.replace(params, train=dataclasses.replace(params.train,
                                                                 loader_workers=workers))


def with_config(params: Params, config: str) -> Params:
    return dataclasses.replace(params, model=dataclasses.replace(params.model, config=config))


# ----------------------------------------------------------------------------- the scenes


def make_pool(params: Params, settings: ScaleSettings, root: Path, progress: bool
              ) -> tuple[dict, SceneSet]:
    """Generate and prepare `settings.rooms` rooms under `root`, their vertex counts drawn from
    `settings.vertices`; returns the figures and the prepared pool."""
    targets = settings.vertices.draw(settings.rooms, np.random.default_rng(settings.seed))
    raw, cache = root / "raw", root / "pool"
    start = time.perf_counter()
    spacings = [spacing_for_vertices(task, int(target)) for task, target in
                zip(scene_tasks(raw, settings.rooms, 0, 0, settings.seed), targets)]
    calibration = time.perf_counter() - start
    synth = run_synth(raw, settings.rooms, 0, 0, settings.seed, settings.jobs, spacings,
                      progress)
    superpoints = params.superpoints
    summary = prepare_dataset("scannet", raw, cache, jobs=settings.jobs,
                              k_thresh=superpoints.k_thresh, min_verts=superpoints.min_verts,
                              progress=progress)
    written = [r for r in summary.results if r.status == "written"]
    if len(written) != settings.rooms:
        raise RuntimeError(f"{settings.rooms - len(written)} of {settings.rooms} generated rooms "
                           "could not be prepared; see the errors above")
    shutil.rmtree(raw)
    points = np.array([r.num_points for r in written])
    sizes = np.array([sum(f.stat().st_size for f in (cache / r.scene_id).iterdir())
                      for r in written])
    figures = {
        "vertices": {**settings.vertices.describe(),
                     "drawn": spread(targets), "generated": spread(points)},
        "synth": {"jobs": settings.jobs, "seconds": synth["seconds"],
                  "spacing_calibration_s": calibration,
                  "scenes_per_second": synth["scenes_per_second"]},
        "prepare": {"jobs": settings.jobs, "scenes": len(written), "seconds": summary.seconds,
                    "scenes_per_second": len(written) / summary.seconds,
                    "seconds_per_scene": summary.seconds / len(written),
                    "worker_seconds_per_scene_median": statistics.median(r.seconds
                                                                         for r in written),
                    "points_per_scene": spread(points),
                    "cache_bytes_per_scene": spread(sizes),
                    "cache_bytes_per_point": float(sizes.sum() / points.sum()),
                    "peak_rss_mb_per_worker": max(r.peak_rss_mb for r in written)}}
    return figures, SceneSet.listed(str(cache), None)


def spread(values: np.ndarray) -> dict:
    return {"mean": float(np.mean(values)), "min": int(np.min(values)),
            "max": int(np.max(values))}


def link_or_copy(source: Path, target: Path) -> bool:
    """`target` as a hard link to `source` (True), or a copy where linking fails (False)."""
    try:
        os.link(source, target)
        return True
    except OSError:
        shutil.copy2(source, target)
        return False


def linked_cache(pool: SceneSet, scenes: int, out: Path) -> tuple[SceneSet, bool]:
    """A cache of `scenes` scenes under `out` made of the pool's: scene i is pool scene
    i mod len(pool) under the id scene<i>_00, every file hard-linked but its `meta.json` (which
    names the scene), with the list of its ids; returns it and whether every file was linked."""
    out.mkdir(parents=True)
    ids, linked = [f"scene{i:04d}_00" for i in range(scenes)], True
    for index, scene_id in enumerate(ids):
        source, target = Path(pool.cache) / pool.ids[index % len(pool)], out / scene_id
        target.mkdir()
        for path in source.iterdir():
            if path.name != META_FILE:
                linked &= link_or_copy(path, target / path.name)
        meta = {**read_meta(source), "scene_id": scene_id}
        (target / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    (out / SCENE_LIST).write_text("\n".join(ids) + "\n", encoding="utf-8")
    return SceneSet.listed(str(out), str(out / SCENE_LIST)), linked


# ---------------------------------------------------------------------------- the figures


def loader_throughput(params: Params, pool: SceneSet) -> dict:
    """Training samples prepared per second by one process at the paper's settings: each pool
    room read memory-mapped, augmented, prompted and given its targets, as a loader worker
    does (`preparation` of `params` with the paper configuration)."""
    params = with_config(params, "paper")
    prepared = Prepared({TRAIN: pool}, preparation(params))
    seconds = []
    for index in range(len(pool)):
        start = time.perf_counter()
        prepared[Item(TRAIN, index, TRAIN, (params.train.seed, 0, 3, index))]
        seconds.append(time.perf_counter() - start)
    return {"config": "paper", "samples": len(seconds),
            "seconds_per_sample_mean": statistics.mean(seconds),
            "seconds_per_sample_median": statistics.median(seconds),
            "samples_per_second_per_worker": len(seconds) / sum(seconds)}


def training_rows(params: Params, pool: SceneSet, settings: ScaleSettings) -> list[dict]:
    """`timed_stream` with 0, 1 and 2 loader workers: `settings.steps` real steps of each
    configuration (after one warm-up batch), then the stand-in over one epoch of the pool."""
    rows = []
    for config in CONFIGS:
        configured = with_config(params, config)
        step = TrainingStep(configured, "cpu", total_steps=len(LOADER_WORKERS)
                            * (settings.steps + 1))
        encode_descriptions(step.encoder, pool)
        for workers in LOADER_WORKERS:
            log.info("scale: %s steps with %d loader worker(s)", config, workers)
            rows.append({"step": config, **timed_stream(with_workers(configured, workers), pool,
                                                        step, settings.steps + 1)})
    for workers in LOADER_WORKERS:
        log.info("scale: the %g ms stand-in with %d loader worker(s)", settings.sleep_ms, workers)
        rows.append({"step": "stand-in", **timed_stream(with_workers(params, workers), pool,
                                                        StandIn(settings.sleep_ms))})
    return rows


def peak_rss_mb() -> float:
    """This process's peak resident memory since its program started (Linux's VmHWM; its
    `ru_maxrss` would also hold its parent's at the spawn, which Linux carries over an exec)."""
    status = Path("/proc/self/status").read_text(encoding="ascii")
    return int(next(line for line in status.splitlines()
                    if line.startswith("VmHWM:")).split()[1]) / 1024


def memory_epoch(params: Params, cache: str, scene_list: str, start_method: str) -> dict:
    """One epoch of the stand-in step (no sleep) over the scenes of `scene_list` in this
    process, then this process's peak resident memory and its resident memory now; meant for
    a fresh process (`in_fresh_process`), so that the peak is the epoch's. The loader workers
    start as a training run's do (`start_method`: its parent's, which a spawned process does
    not inherit)."""
    multiprocessing.set_start_method(start_method, force=True)
    torch.set_num_threads(params.train.threads)
    start = time.perf_counter()
    times = timed_stream(params, SceneSet.listed(cache, scene_list), StandIn(0.0))
    return {"seconds": time.perf_counter() - start, **times, "peak_rss_mb": peak_rss_mb(),
            "rss_after_epoch_mb": psutil.Process().memory_info().rss / 2**20}


def in_fresh_process(function: Callable, *args):
    """`function(*args)` in a newly spawned Python process (nothing inherited from this one)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def memory_rows(params: Params, pool: SceneSet, counts: Sequence[int], root: Path
                ) -> tuple[list[dict], bool]:
    """The training process's memory after one epoch over each count of scenes, linked from
    the pool (`linked_cache`), each epoch in a fresh process; and whether every file was
    linked."""
    rows, linked = [], True
    for count in counts:
        scenes, files_linked = linked_cache(pool, count, root / f"cache_{count}")
        linked &= files_linked
        log.info("scale: one epoch over %d scenes in a fresh process", count)
        rows.append({"scenes": count, **in_fresh_process(
            memory_epoch, params, scenes.cache, str(Path(scenes.cache) / SCENE_LIST),
            multiprocessing.get_start_method())})
        shutil.rmtree(scenes.cache)
    return rows, linked


def evaluation_speed(params: Params, pool: SceneSet, scenes: int, protocol_scenes: int
                     ) -> dict:
    """Seconds per scene of the tiny model (random weights) as `evaluate` runs it: the forward
    of every task through its `Predictor` (evaluation prompts, ScanNet200 vocabulary), and
    AGILE3D's click protocol on the first `protocol_scenes` (`evaluate.protocol_clicks`)."""
    params = with_config(params, "tiny")
    predictor = Predictor(*initial_model(params))
    predictor.model.eval()
    # as after training, the descriptions' embeddings are in the text cache
    encode_descriptions(predictor.encoder, SceneSet(pool.cache, pool.ids[:scenes]))
    vocabulary = predictor.vocabulary(scannet_classes())
    seconds = []
    for index in range(scenes):
        sample = evaluation_sample(read_scene(Path(pool.cache) / pool.ids[index]), params, index)
        before = predictor.seconds
        predictor(sample, vocabulary)
        seconds.append(predictor.seconds - before)
    result = {"config": "tiny", "weights": "random", "scenes": scenes,
              "forward_s_per_scene": statistics.mean(seconds), "forward_s_all": seconds}
    clicks = params.evaluate.protocol_clicks
    if protocol_scenes and clicks:
        start = time.perf_counter()
        protocol_statistics(predictor.model, (read_scene(Path(pool.cache) / scene_id)
                                              for scene_id in pool.ids[:protocol_scenes]),
                            predictor.encoder.dim, params.prompts.min_points, clicks,
                            progress=False)
        result.update(protocol_scenes=protocol_scenes, protocol_clicks=clicks,
                      protocol_s_per_scene=(time.perf_counter() - start) / protocol_scenes)
    else:
        result["protocol"] = ("left out (--protocol-scenes 0 or evaluate.protocol_clicks 0): "
                              "AGILE3D's protocol runs the prompt decoder once per click, up to "
                              f"{clicks} clicks per object, minutes per ScanNet-sized room on "
                              "a CPU")
    return result


def real_epoch_hours(training: list[dict], scenes: int, batch_size: int) -> dict:
    """Hours of one epoch over `scenes` scenes with the real step of each configuration, at the
    best steps per second measured for it."""
    return {config: -(-scenes // batch_size) / 3600 / max(
        row["steps_per_second"] for row in training if row["step"] == config)
        for config in CONFIGS}


def targets(training: list[dict], memory: list[dict], workers: int) -> dict:
    """The issue's two targets, reported: the peak memory after the largest epoch within 10 %
    of that after the smallest; the stand-in's wait fraction below 5 % with this machine's
    loader workers (`workers`: what `train.loader_workers: null` gives), and the fewest
    workers that keep it there."""
    stand_in = {row["loader_workers"]: row["wait_fraction"] for row in training
                if row["step"] == "stand-in"}
    smallest, largest = min(memory, key=lambda r: r["scenes"]), max(memory,
                                                                     key=lambda r: r["scenes"])
    ratio = largest["peak_rss_mb"] / smallest["peak_rss_mb"]
    return {"memory_scenes": [smallest["scenes"], largest["scenes"]],
            "memory_peak_ratio": ratio, "memory_within_10_percent": abs(ratio - 1) <= 0.1,
            "memory_rss_after_epoch_ratio": largest["rss_after_epoch_mb"]
            / smallest["rss_after_epoch_mb"],
            "machine_loader_workers": workers, "stand_in_wait_fraction": stand_in.get(workers),
            "stand_in_below_5_percent": None if workers not in stand_in
            else stand_in[workers] < 0.05,
            "stand_in_fewest_workers_below_5_percent": min(
                (w for w, fraction in stand_in.items() if fraction < 0.05), default=None)}


def bench_scale(params: Params, settings: ScaleSettings = ScaleSettings(),
                progress: bool = True) -> dict:
    """Every figure of the module docstring, on generated rooms in a temporary folder (under
    `settings.work`) that is removed afterwards."""
    params = dataclasses.replace(params, model=dataclasses.replace(params.model, recipe="ours"))
    settings.check(params.train.batch_size)
    torch.set_num_threads(params.train.threads)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="uniseg3d-scale-", dir=settings.work) as tmp:
        root = Path(tmp)
        params = dataclasses.replace(
            params, text=dataclasses.replace(params.text, cache_file=str(root / "text.pt")))
        log.info("scale: generating and preparing %d rooms", settings.rooms)
        result, pool = make_pool(params, settings, root, progress)
        log.info("scale: the loader's samples per second at the paper's settings")
        result["loader"] = loader_throughput(params, pool)
        training = training_rows(params, pool, settings)
        result["training"] = {"batch_size": params.train.batch_size,
                              "threads": params.train.threads, "steps": settings.steps,
                              "stand_in_sleep_ms": settings.sleep_ms, "rows": training}
        memory, linked = memory_rows(params, pool, settings.memory_scenes, root)
        largest = max(settings.memory_scenes)
        result["memory"] = {
            "distinct_rooms": len(pool), "linked": linked,
            "step": "the stand-in with no sleep (it reads each batch): an epoch of the real "
                    "model would take real_epoch_hours on this CPU",
            "real_epoch_hours": {"scenes": largest, **real_epoch_hours(
                training, largest, params.train.batch_size)},
            "loader_workers": loader_workers(params), "rows": memory}
        log.info("scale: evaluation seconds per scene")
        result["evaluation"] = evaluation_speed(params, pool, settings.eval_scenes,
                                                settings.protocol_scenes)
    return {"benchmark": "scale", "distinct_rooms": settings.rooms, **result,
            "targets": targets(training, memory, loader_workers(with_workers(params, None))),
            "seconds": time.perf_counter() - start,
            "machine": machine()}
