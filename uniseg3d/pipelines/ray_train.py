"""The `train` stage through Ray Train: one code path from one worker on a laptop to a cluster.

`run_ray_train` starts (or joins, `RayConfig.address`) Ray, runs `train_loop_per_worker` in
`num_workers` workers with a `TorchTrainer` (gloo on CPU, NCCL on GPU, DistributedDataParallel
via Ray's `prepare_model`) and copies the final checkpoints to `train.out` (`last.pt`, `best.pt`,
`history.json`: the files `train()` writes), so downstream stages do not see a difference.

`fit` is the epoch loop of a worker. It calls `train.run_epoch` on the worker's shard of the
training scenes: every epoch a permutation seeded by (seed, epoch), padded to a multiple of the
world size and dealt out like torch's `DistributedSampler`, so the shards together hold every
scene (a few twice when the count does not divide); with one worker the shard is every scene in
order and the run repeats `train()` exactly. Training losses and the validation loss are averaged
over the workers. After every epoch the worker writes `last.pt` / `best.pt` (the `save_checkpoint`
format, so `load_trained_model` reads them) to its own folder and reports the epoch's metrics
with that folder as a `ray.train.Checkpoint`. A restarted worker (`FailureConfig.max_failures`)
or a resumed run (`resume=True`: the same run name and storage, which Ray Train restores from)
starts from the latest reported checkpoint, history included.

Ray is always shut down when `run_ray_train` started it, on success, error or Ctrl-C. Resource
problems are reported before anything starts, naming the params.yaml keys to change.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist

from uniseg3d.config import Params, RayConfig
from uniseg3d.datasets.cache import cached_scene_ids
from uniseg3d.datasets.classes import scannet20
from uniseg3d.datasets.loader import read_scene_list, read_split
from uniseg3d.datasets.scene import Scene
from uniseg3d.model.criterion import Criterion
from uniseg3d.model.text_encoder import class_embeddings
from uniseg3d.pipelines.train import (
    CHECKPOINT_BEST, CHECKPOINT_LAST, HISTORY_FILE, TrainResult, _stages, build_model,
    class_prompt_names, load_checkpoint, make_text_encoder, poly_schedule, run_epoch,
    save_checkpoint, validation_loss)

if TYPE_CHECKING:
    from ray.train import Checkpoint

log = logging.getLogger(__name__)

DDP_KWARGS = {"find_unused_parameters": True}  # a batch without texts leaves the text path idle
CHECKPOINT_FILES = (CHECKPOINT_LAST, CHECKPOINT_BEST)
RUN_SNAPSHOT = "checkpoint_manager_snapshot.json"  # what Ray Train restores a run from
# params fields holding paths: made absolute before they travel to workers
PATH_FIELDS = {"text": ("cache_file", "clip_checkpoint"),
               "train": ("cache", "train_scenes", "val_scenes", "out"),
               "evaluate": ("checkpoint", "cache", "scenes", "replica_cache", "out")}


class RayError(RuntimeError):
    """Ray cannot start, cannot fit the requested resources, or the run failed."""


def available_cores() -> int:
    """CPU cores this process may use (the affinity mask, not the host's count)."""
    return len(os.sched_getaffinity(0))


# ----------------------------------------------------------------------------- the Ray session


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a HOST:PORT nobody listens on (ray.init would retry for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and other forms are left to ray.init
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as error:
        raise RayError(
            f"cannot reach a Ray cluster at {address} ({error}). Start its head node there "
            f"('ray start --head --port={port}'), check the host, port and firewall, or set "
            "ray.address to null (no --address) for a local Ray on this machine") from None


def _init_ray(address: str | None) -> None:
    import ray

    if address is not None:
        _check_reachable(address)
    # Worker-side Ray logs at ERROR: without the dashboard, Ray Train's placement-group
    # watcher warns every second that the State API is unavailable (`worker_logging` keeps
    # our INFO lines).
    quiet = {"include_dashboard": False, "logging_level": logging.WARNING,
             "logging_config": ray.LoggingConfig(encoding="TEXT", log_level="ERROR")}
    try:
        if address is None:
            ray.init(address="local", num_cpus=available_cores(), **quiet)
        else:
            ray.init(address=address, **quiet)
    except Exception as error:  # ray.init raises ConnectionError, RuntimeError, ValueError...
        ray.shutdown()  # whatever half-started
        where = "a local Ray" if address is None else f"the Ray cluster at {address}"
        raise RayError(
            f"could not start {where}: {error}. If a port is in use, stop the other Ray "
            "('ray stop') or service holding it; to join a running cluster pass its head's "
            "HOST:PORT as --address (ray.address), or 'auto' on a node of that cluster") from error


@dataclass(frozen=True)
class Request:
    """What a command asks of Ray: `units` workers or trials, each on one node; `keys`: the
    params.yaml keys that size it (for the error messages)."""

    what: str  # "training workers", "sweep trials"
    units: int
    cpus: int  # per unit
    gpus: int  # per unit
    keys: str

    def check(self, cpus: float, largest_node_cpus: float, gpus: float, where: str) -> None:
        """Refuse a request that `where` can never hold (Ray would wait for it forever)."""
        total = self.units * self.cpus
        if total > cpus:
            raise RayError(f"{self.what} ({self.units} x {self.cpus} CPUs) need {total} CPUs "
                           f"but {where} has {cpus:g}: lower {self.keys} in params.yaml")
        if self.cpus > largest_node_cpus:
            raise RayError(f"one of the {self.what} needs {self.cpus} CPUs but the largest node "
                           f"of {where} has {largest_node_cpus:g}: lower {self.keys}")
        if self.units * self.gpus > gpus:
            raise RayError(f"{self.what} ({self.units} x {self.gpus} GPU) need "
                           f"{self.units * self.gpus} GPUs but {where} has {gpus:g}: lower "
                           f"{self.keys} or set ray.use_gpu: false in params.yaml")


@contextlib.contextmanager
def ray_session(address: str | None, request: Request) -> Iterator[None]:
    """Ray for one command: started (or joined) here and shut down on the way out, also on
    error or Ctrl-C; an already initialised Ray (a test fixture, a notebook) is used and left
    running. The request is checked before anything runs: for a new local Ray against this
    machine's cores before Ray starts, otherwise against the cluster's nodes."""
    import ray

    started = not ray.is_initialized()
    if started and address is None:
        cores = available_cores()
        request.check(cores, cores, float("inf"), "this machine")
    if started:
        _init_ray(address)
    try:
        nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
        request.check(sum(n.get("CPU", 0) for n in nodes), max(n.get("CPU", 0) for n in nodes),
                      sum(n.get("GPU", 0) for n in nodes), "the Ray cluster")
        yield
    finally:
        if started:
            ray.shutdown()


# ----------------------------------------------------------------------- scenes and sharding


@dataclass
class SceneSet:
    """Training or validation scenes: held in memory, or read from a cache folder when a worker
    first needs them (so a worker reads its shards, not the whole split)."""

    cache: str | None = None
    ids: tuple[str, ...] = ()
    scenes: dict[int, Scene] = field(default_factory=dict)

    @classmethod
    def of(cls, scenes: list[Scene]) -> SceneSet:
        """Scenes already in memory (they travel to the workers with the run's config)."""
        return cls(ids=tuple(s.scene_id for s in scenes), scenes=dict(enumerate(scenes)))

    @classmethod
    def listed(cls, cache: str, scene_list: str | None) -> SceneSet:
        """The scenes of `scene_list` (every cached scene when None) under `cache`."""
        ids = read_scene_list(scene_list) if scene_list else cached_scene_ids(cache)
        return cls(cache=str(Path(cache).resolve()), ids=tuple(ids))

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, indices: np.ndarray) -> list[Scene]:
        missing = sorted({int(i) for i in indices} - set(self.scenes))
        if missing:
            self.scenes.update(zip(missing, read_split(self.cache, [self.ids[i] for i in missing]),
                                   strict=True))
        return [self.scenes[int(i)] for i in indices]


def scene_sets(params: Params, train_scenes: list[Scene] | None = None,
               val_scenes: list[Scene] | None = None) -> tuple[SceneSet, SceneSet]:
    """The training and validation scenes of `params.train` (or the given ones, as `train()`
    takes them); an empty training split is an error here, before Ray starts."""
    cfg = params.train
    train_set = SceneSet.of(train_scenes) if train_scenes is not None else \
        SceneSet.listed(cfg.cache, cfg.train_scenes)
    if val_scenes is not None:
        val_set = SceneSet.of(val_scenes)
    else:
        val_set = SceneSet.listed(cfg.cache, cfg.val_scenes) if cfg.val_scenes else SceneSet()
    if not len(train_set):
        raise ValueError(f"no training scenes found in {cfg.cache}")
    return train_set, val_set


def epoch_shard(size: int, rank: int, world_size: int, seed: int, epoch: int) -> np.ndarray:
    """Indices of the scenes worker `rank` trains on in `epoch` (a DistributedSampler): a
    permutation seeded by (seed, epoch), cyclically padded to a multiple of `world_size`, every
    `world_size`-th entry from `rank`, sorted (`run_epoch` shuffles them). Every worker gets the
    same count; one worker gets every scene in order."""
    order = np.random.default_rng([seed, epoch, 2]).permutation(size)
    padded = np.resize(order, -(-size // world_size) * world_size)
    return np.sort(padded[rank::world_size])


def absolute_paths(params: Params) -> Params:
    """`params` with every path made absolute, so that it means the same in a worker process
    whatever its working directory (on other machines: the same shared-filesystem path)."""
    sections = {}
    for section, names in PATH_FIELDS.items():
        cfg = getattr(params, section)
        sections[section] = replace(cfg, **{
            name: str(Path(getattr(cfg, name)).resolve()) for name in names
            if getattr(cfg, name) is not None})
    return replace(params, **sections)


# ------------------------------------------------------------------------- the epoch loop


@dataclass
class WorkerSession:
    """What `fit` needs from whoever runs it: a Ray Train worker, a Tune trial."""

    report: Callable[[dict, Path], None]  # an epoch's metrics and the folder of its checkpoint
    checkpoint: Checkpoint | None = None  # to resume from
    rank: int = 0
    world_size: int = 1
    device: str = "cpu"
    threads: int = 1
    prepare: Callable[[torch.nn.Module], torch.nn.Module] = lambda model: model  # DDP wrapper


def epoch_score(record: dict) -> float:
    """What "best" minimises: the validation loss, else the training loss."""
    return record.get("val_total", record["train_total"])


def worker_logging() -> None:
    """Our INFO lines in a Ray worker process (they reach the driver's console)."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("uniseg3d").setLevel(logging.INFO)


def _worker_sum(values: dict[str, float], session: WorkerSession) -> dict[str, float]:
    """The sum of each value over the workers."""
    if session.world_size == 1:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=session.device)
    dist.all_reduce(tensor)
    return dict(zip(keys, tensor.tolist()))


def _restore(session: WorkerSession, workdir: Path) -> dict | None:
    """Copy the session's checkpoint files into `workdir`; the state of its `last.pt`."""
    if session.checkpoint is None:
        return None
    with session.checkpoint.as_directory() as folder:
        for name in CHECKPOINT_FILES:
            if (Path(folder) / name).is_file():
                shutil.copy2(Path(folder) / name, workdir / name)
    state = load_checkpoint(workdir / CHECKPOINT_LAST)
    log.info("worker %d resumes after epoch %d (stage %d)", session.rank, state["epoch"],
             state["stage"])
    return state


def fit(params: Params, session: WorkerSession, train_set: SceneSet, val_set: SceneSet,
        workdir: Path) -> list[dict]:
    """Train per `params` (stages and epochs as `train()`), on this worker's shards; after
    every epoch save `last.pt` / `best.pt` in `workdir` and `session.report` the epoch record
    (plus `score`: the validation loss, else the training loss). Returns the history."""
    cfg = params.train
    torch.set_num_threads(session.threads)
    device = session.device
    encoder = make_text_encoder(params, device)
    classes = class_embeddings(encoder, class_prompt_names(scannet20().names)).to(device)
    torch.manual_seed(cfg.seed)
    model = build_model(params, classes.shape[1], device)
    criterion = Criterion(params.loss, len(scannet20()))
    state = _restore(session, workdir)
    history: list[dict] = state["history"] if state is not None else []
    resume_epoch = state["epoch"] + 1 if state is not None else 0
    wrapped = session.prepare(model)
    shard_size = -(-len(train_set) // session.world_size)  # epoch_shard's length
    val_shard = val_set.load(np.arange(session.rank, len(val_set), session.world_size))
    stages = _stages(params)
    for stage, (epochs, lr, weight_decay) in enumerate(stages):
        stage_start = sum(e for e, _, _ in stages[:stage])
        if stage_start + epochs <= resume_epoch:
            continue
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        scheduler = poly_schedule(optimizer, epochs * -(-shard_size // cfg.batch_size),
                                  cfg.poly_power)
        if state is not None and state["stage"] == stage:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        elif stage > 0:  # fine-tuning continues from the best checkpoint of the first stage
            model.load_state_dict(load_checkpoint(workdir / CHECKPOINT_BEST)["model"])
        for epoch in range(max(stage_start, resume_epoch), stage_start + epochs):
            begin, lr_at_start = time.perf_counter(), scheduler.get_last_lr()[0]
            shard = epoch_shard(len(train_set), session.rank, session.world_size, cfg.seed,
                                epoch)
            losses = run_epoch(wrapped, criterion, optimizer, scheduler, train_set.load(shard),
                               params, epoch, encoder, classes, device, False)
            record = {"epoch": epoch, "stage": stage, "lr": lr_at_start,
                      "seconds": time.perf_counter() - begin,
                      **{f"train_{k}": v / session.world_size
                         for k, v in _worker_sum(losses, session).items()}}
            if len(val_set):
                total = validation_loss(model, criterion, val_shard, params, encoder, classes,
                                        device) * len(val_shard) if val_shard else 0.0
                record["val_total"] = _worker_sum({"val": total}, session)["val"] / len(val_set)
            history.append(record)
            score = epoch_score(record)
            save_checkpoint(workdir / CHECKPOINT_LAST, model, optimizer, scheduler, epoch, stage,
                            history, params)
            if score <= min(map(epoch_score, history)):
                save_checkpoint(workdir / CHECKPOINT_BEST, model, optimizer, scheduler, epoch,
                                stage, history, params)
            if session.rank == 0:
                log.info("epoch %d (stage %d): loss %.4f%s, %.1f s", epoch, stage,
                         record["train_total"], f", val {record['val_total']:.4f}"
                         if "val_total" in record else "", record["seconds"])
            session.report({**record, "score": score}, workdir)
    return history


# ------------------------------------------------------------------------- Ray Train


def _report_to_ray_train(metrics: dict, workdir: Path) -> None:
    """Every worker reports (a barrier); rank 0 attaches its checkpoint folder."""
    import ray.train

    if ray.train.get_context().get_world_rank() == 0:
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(workdir),
                         checkpoint_dir_name=f"epoch_{metrics['epoch']:05d}")
    else:
        ray.train.report(metrics)


def train_loop_per_worker(config: dict) -> None:
    """Ray Train's worker function: `fit` on this worker's shards, DDP across workers.
    `config`: params (absolute paths), ray (RayConfig), train / val (SceneSet)."""
    import ray.train
    import ray.train.torch

    worker_logging()
    context = ray.train.get_context()
    session = WorkerSession(
        report=_report_to_ray_train, checkpoint=ray.train.get_checkpoint(),
        rank=context.get_world_rank(), world_size=context.get_world_size(),
        device=str(ray.train.torch.get_device()), threads=config["ray"].cpus_per_worker,
        prepare=lambda model: ray.train.torch.prepare_model(
            model, parallel_strategy_kwargs=DDP_KWARGS))
    with tempfile.TemporaryDirectory(prefix="uniseg3d-worker-") as workdir:
        fit(config["params"], session, config["train"], config["val"], Path(workdir))


def export_checkpoint(checkpoint: Checkpoint, out: Path) -> TrainResult:
    """`last.pt`, `best.pt` of a reported checkpoint and its `history.json`, into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    with checkpoint.as_directory() as folder:
        for name in CHECKPOINT_FILES:
            temp = out / f"{name}.tmp{os.getpid()}"
            shutil.copy2(Path(folder) / name, temp)
            os.replace(temp, out / name)
    history = load_checkpoint(out / CHECKPOINT_LAST)["history"]
    (out / HISTORY_FILE).write_text(json.dumps(history, indent=2))
    return TrainResult(out, history)


def run_ray_train(params: Params, ray_cfg: RayConfig, resume: bool = False,
                  train_scenes: list[Scene] | None = None, val_scenes: list[Scene] | None = None
                  ) -> TrainResult:
    """Train with `ray_cfg.num_workers` Ray Train workers; the run's per-epoch checkpoints stay
    in `<ray.storage>/<name of train.out>`, the final `last.pt`, `best.pt` and `history.json` go
    to `train.out`. `resume`: continue that run from its latest checkpoint (without: it starts
    over)."""
    from ray.train import (
        CheckpointConfig, FailureConfig, RunConfig, ScalingConfig, TrainingFailedError)
    from ray.train.torch import TorchTrainer

    train_set, val_set = scene_sets(params, train_scenes, val_scenes)
    storage = Path(ray_cfg.storage).resolve()
    name = Path(params.train.out).name
    if not resume:
        shutil.rmtree(storage / name, ignore_errors=True)
    elif not (storage / name / RUN_SNAPSHOT).is_file():
        log.warning("nothing to resume in %s: training from the start", storage / name)
    workers = ray_cfg.num_workers
    with ray_session(ray_cfg.address, Request(
            "training workers", workers, ray_cfg.cpus_per_worker, int(ray_cfg.use_gpu),
            "ray.num_workers (--workers) or ray.cpus_per_worker")):
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"params": absolute_paths(params), "ray": ray_cfg,
                               "train": train_set, "val": val_set},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=ray_cfg.use_gpu,
                                         resources_per_worker={"CPU": ray_cfg.cpus_per_worker}),
            run_config=RunConfig(name=name, storage_path=str(storage),
                                 failure_config=FailureConfig(max_failures=ray_cfg.max_failures),
                                 checkpoint_config=CheckpointConfig(num_to_keep=2)))
        try:
            result = trainer.fit()
        except TrainingFailedError as error:
            raise RayError(f"training failed ({error}); its checkpoints are in {storage / name}: "
                           "continue with --resume") from error
    if result.checkpoint is None:
        raise RayError(f"the run in {storage / name} reported no checkpoint")
    trained = export_checkpoint(result.checkpoint, Path(params.train.out))
    log.info("%d epochs on %d worker(s); checkpoints in %s", len(trained.history), workers,
             trained.out)
    return trained
