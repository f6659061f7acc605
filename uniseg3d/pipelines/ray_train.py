"""The `train` stage through Ray Train: one code path from one worker on a laptop to a cluster.

`run_ray_train` starts (or joins, `RayConfig.address`) Ray, runs `train_loop_per_worker` in
`num_workers` workers with a `TorchTrainer` (gloo on CPU, NCCL on GPU, DistributedDataParallel
via Ray's `prepare_model`, SyncBatchNorm across GPUs) and copies the final checkpoints to
`train.out` (`last.pt`, `best.pt`, `history.json`: the files `train()` writes), so downstream
stages do not see a difference.

Each worker runs `train.fit`, the one epoch loop, on its shard of the training scenes (with one
worker: every scene, so the run repeats `train.train()` exactly). After every epoch the worker
writes `last.pt` / `best.pt` to its own folder and reports the epoch's metrics with that folder
as a `ray.train.Checkpoint`. A restarted worker (`FailureConfig.max_failures`) or a resumed run
(`resume=True`: the same run name and storage, which Ray Train restores from) starts from the
latest reported checkpoint, history included.

Ray is always shut down when `run_ray_train` started it, on success, error or Ctrl-C. Resource
problems are reported before anything starts, naming the params.yaml keys to change.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import torch

from uniseg3d.config import Params, RayConfig
from uniseg3d.datasets.scene import Scene
from uniseg3d.datasets.streaming import available_cores
from uniseg3d.model.precision import check_precision
from uniseg3d.pipelines.checkpoints import (
    CHECKPOINT_BEST, CHECKPOINT_LAST, HISTORY_FILE, load_checkpoint)
from uniseg3d.pipelines.train import TrainResult, WorkerSession, fit, scene_sets
from uniseg3d.pipelines.validation import BEST_METRICS, best_file

if TYPE_CHECKING:
    from ray.train import Checkpoint

log = logging.getLogger(__name__)

DDP_KWARGS = {"find_unused_parameters": True}  # a batch without texts leaves the text path idle
CHECKPOINT_FILES = (CHECKPOINT_LAST, CHECKPOINT_BEST)
RUN_SNAPSHOT = "checkpoint_manager_snapshot.json"  # what Ray Train restores a run from
WORKER_FOLDER = "uniseg3d-worker-"  # a training worker's scratch folder: this, host.pid-suffix
# params fields holding paths: made absolute before they travel to workers
PATH_FIELDS = {"text": ("cache_file", "clip_checkpoint"),
               "train": ("cache", "train_scenes", "val_scenes", "out"),
               "evaluate": ("checkpoint", "cache", "scenes", "replica_cache", "out")}


LOCAL_RAY_ENV = {
    "RAY_worker_niceness": "0",  # Ray runs its workers at nice 15: the training would yield
    #                              the CPU to any other process, this one's polling included
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",  # an actor polling for node drains (clusters)
    "RAY_TRAIN_METRICS_ENABLED": "0",  # Prometheus metrics for the dashboard we do not start
}
"""Set (unless already in the environment) when this process starts a local Ray, where the
training already uses every core of the machine; a cluster keeps its own settings."""


class RayError(RuntimeError):
    """Ray cannot start, cannot fit the requested resources, or the run failed."""


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
    # The LoggingConfig also sets this process's root logger to ERROR and adds a handler of
    # Ray's: put the command's own logging back, or its INFO lines would vanish
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        if address is None:
            for name, value in LOCAL_RAY_ENV.items():
                os.environ.setdefault(name, value)
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
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers


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


# ----------------------------------------------------------------------------- Ray Train


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


def worker_logging() -> None:
    """Our INFO lines in a Ray worker process (they reach the driver's console); Ray Train's
    own (the whole metrics dict of every report, every checkpoint's path) only from WARNING."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("", "ray.train"):  # ray.train's report lines use a logger named by file path
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("uniseg3d").setLevel(logging.INFO)


def _report_to_ray_train(metrics: dict, workdir: Path) -> None:
    """Every worker reports (a barrier); rank 0 attaches its checkpoint folder."""
    import ray.train

    if ray.train.get_context().get_world_rank() == 0:
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(workdir),
                         checkpoint_dir_name=f"epoch_{metrics['epoch']:05d}")
    else:
        ray.train.report(metrics)


@contextlib.contextmanager
def checkpoint_folder(checkpoint: Checkpoint | None) -> Iterator[Path | None]:
    """The local folder of a Ray (Train or Tune) checkpoint, None without one."""
    if checkpoint is None:
        yield None
    else:
        with checkpoint.as_directory() as folder:
            yield Path(folder)


def synchronised_batch_norm(model: torch.nn.Module, use_gpu: bool, world_size: int
                            ) -> torch.nn.Module:
    """Across several GPU workers, the backbone's batch norms as `SyncBatchNorm`, so that its
    statistics cover the global batch as on one device (the state dict keeps its keys, so
    checkpoints load either way). torch synchronises batch norm on GPUs only: on CPU workers
    (gloo) each keeps its own statistics."""
    if use_gpu and world_size > 1:
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def train_loop_per_worker(config: dict) -> None:
    """Ray Train's worker function: `fit` on this worker's shards, DDP across workers.
    `config`: params (absolute paths), ray (RayConfig), train / val (SceneSet)."""
    import ray.train
    import ray.train.torch

    worker_logging()
    context = ray.train.get_context()
    with checkpoint_folder(ray.train.get_checkpoint()) as resume_from, \
            worker_folder() as workdir:
        session = WorkerSession(
            report=_report_to_ray_train, resume_from=resume_from,
            rank=context.get_world_rank(), world_size=context.get_world_size(),
            device=str(ray.train.torch.get_device()), threads=config["ray"].cpus_per_worker,
            prepare=lambda model: ray.train.torch.prepare_model(
                synchronised_batch_norm(model, config["ray"].use_gpu, context.get_world_size()),
                parallel_strategy_kwargs=DDP_KWARGS))
        fit(config["params"], session, config["train"], config["val"], Path(workdir))


def worker_folder() -> tempfile.TemporaryDirectory:
    """A training worker's scratch folder in the system's temporary folder, named after its host
    and process id; first removes those of this host's workers that died without removing
    theirs (a worker Ray killed mid-run: its process is gone). Another host's folders, in a
    temporary folder that machines or containers share, are left alone."""
    mine = f"{WORKER_FOLDER}{socket.gethostname()}."
    for folder in Path(tempfile.gettempdir()).glob(f"{glob.escape(mine)}*-*"):
        pid = folder.name[len(mine):].split("-", 1)[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    return tempfile.TemporaryDirectory(prefix=f"{mine}{os.getpid()}-")


def export_checkpoint(checkpoint: Checkpoint, out: Path) -> TrainResult:
    """`last.pt`, `best.pt` (and with `best_by: metrics` each `best_<metric>.pt`) of a
    reported checkpoint and its `history.json`, into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    with checkpoint.as_directory() as folder:
        for name in [*CHECKPOINT_FILES, *(name for name in map(best_file, BEST_METRICS)
                                          if (Path(folder) / name).is_file())]:
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

    check_precision(params.train.precision, "cuda" if ray_cfg.use_gpu else "cpu",
                    "train.precision")
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
