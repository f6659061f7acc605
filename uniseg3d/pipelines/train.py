"""The training loop: epochs, resume, two-stage fine-tuning, worker shards.

`fit` is the one epoch loop, whoever runs it: `train()` in this process, a Ray Train worker
(`ray_train`), a Ray Tune trial (`sweep`); a `WorkerSession` says which. Every epoch a worker
trains on its shard of the scenes (`datasets.streaming.epoch_shard`: a DistributedSampler; one
worker gets every scene), whose samples loader workers prepare ahead of the step
(`pipelines.samples`). A sample's randomness (augmentation, prompts) derives from (seed, epoch,
its position in the epoch), what runs in this process (query subsets, corrective clicks) from
(seed, epoch), so a resumed run repeats exactly what an uninterrupted one does, with any number
of loader workers. Checkpoints: `pipelines.checkpoints`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from uniseg3d.config import ModelConfig, Params, TextConfig
from uniseg3d.datasets.classes import scannet20
from uniseg3d.datasets.scene import Scene
from uniseg3d.datasets.streaming import SceneSet
from uniseg3d.model.criterion import Criterion
from uniseg3d.model.corrective import simulate_corrections
from uniseg3d.model.inputs import on_device, scene_input, with_prompt_targets
from uniseg3d.model.official.checkpoint import load_official_model
from uniseg3d.model.official.network import OfficialUniSeg3D
from uniseg3d.model.precision import autocast, check_precision, grad_scaler
from uniseg3d.model.targets import semantic_log_prior
from uniseg3d.model.text_encoder import CachedTextEncoder, build_text_encoder, class_embeddings
from uniseg3d.model.uniseg3d import UniSeg3D
from uniseg3d.pipelines.checkpoints import (
    CHECKPOINT_BEST, CHECKPOINT_LAST, HISTORY_FILE, epoch_score, load_checkpoint, restore,
    save_best, save_checkpoint)
from uniseg3d.pipelines.official_training import OfficialLosses, build_official, official_training
from uniseg3d.pipelines.samples import (
    Example, metric_batches, open_stream, training_batches, validation_batches)
from uniseg3d.pipelines.validation import BEST_METRICS, metric_epoch, validation_metrics

log = logging.getLogger(__name__)

def class_prompt_names(names: tuple[str, ...]) -> list[str]:
    """Class names as text prompts ('otherfurniture' -> 'other furniture')."""
    return [n.replace("otherfurniture", "other furniture") for n in names]


def make_text_encoder(params: Params, device: str = "cpu") -> CachedTextEncoder:
    cfg = params.text
    clip = cfg.encoder == "clip"
    encoder = build_text_encoder(cfg.encoder, model_name=cfg.clip_model if clip else None,
                                 checkpoint=cfg.clip_checkpoint if clip else None, device=device)
    return CachedTextEncoder(encoder, cfg.cache_file)


def build_model(params: Params, text_dim: int, device: str = "cpu") -> UniSeg3D:
    """The `ours` model of params.yaml (the `official` one: `official_training.build_official`)."""
    if params.model.recipe != "ours":
        raise ValueError(f"model.recipe {params.model.recipe!r}: build_model builds 'ours'; "
                         "the official model is built with its text tower by build_official")
    return UniSeg3D(params.model.selected(), text_dim, device).to(device)


def trainable(model: torch.nn.Module, criterion: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters the optimiser updates: the model's and the criterion's (the released
    contrastive scale, of either recipe), frozen ones (the CLIP tower) left out."""
    return [p for p in [*model.parameters(), *criterion.parameters()] if p.requires_grad]


def poly_schedule(optimizer: torch.optim.Optimizer, total_steps: int, power: float
                  ) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1 - step / max(1, total_steps)) ** power)


def epoch_generators(seed: int, epoch: int) -> tuple[np.random.Generator, torch.Generator]:
    torch_gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch, 1])
                                                  .generate_state(1)[0]))
    return np.random.default_rng([seed, epoch]), torch_gen


def forward_losses(model: UniSeg3D, criterion: Criterion, examples: list[Example],
                   params: Params, encoder: CachedTextEncoder, classes: torch.Tensor,
                   rng: np.random.Generator, generator: torch.Generator, training: bool,
                   device: str = "cpu") -> dict[str, torch.Tensor]:
    """Losses of one batch of prepared examples (with simulated corrective clicks, drawn from
    `rng`, when `training` and `prompts.corrective_rounds` > 0); the official recipe's through
    its `OfficialLosses`."""
    samples = [example.sample for example in examples]
    if isinstance(criterion, OfficialLosses):
        return criterion(model, samples, [e.targets for e in examples], encoder, generator,
                         device)
    prompts = params.prompts
    inputs = [scene_input(s, encoder.encode_texts(s.texts), device) for s in samples]
    module = getattr(model, "module", model)  # the model itself under DDP

    def refine(index: int, scene, features, generic):
        samples[index], scene = simulate_corrections(
            module, samples[index], scene, features, generic, prompts.corrective_rounds,
            prompts.corrective_click, rng)
        return scene

    outputs = model(inputs, generator,
                    refine=refine if training and prompts.corrective_rounds else None)
    targets = [on_device(with_prompt_targets(e.targets, s), device)
               for e, s in zip(examples, samples, strict=True)]
    return criterion(outputs, targets, classes)


def train_step(model: UniSeg3D, criterion: Criterion, optimizer: torch.optim.Optimizer,
               scheduler, scaler: torch.amp.GradScaler, examples: list[Example],
               params: Params, encoder: CachedTextEncoder, classes: torch.Tensor,
               rng: np.random.Generator, generator: torch.Generator, device: str = "cpu"
               ) -> dict[str, torch.Tensor]:
    """One optimisation step on a prepared batch: forward and losses under
    `train.precision`'s autocast, the backward through `scaler` (fp16's loss scaling; a
    pass-through otherwise), gradients averaged, clipped, one optimiser and schedule step."""
    with autocast(params.train.precision, device):
        losses = forward_losses(model, criterion, examples, params, encoder, classes, rng,
                                generator, True, device)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(losses["total"]).backward()
    average_over_workers(criterion)
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(trainable(model, criterion), params.train.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return losses


def run_epoch(model: UniSeg3D, criterion: Criterion, optimizer: torch.optim.Optimizer,
              scheduler, scaler: torch.amp.GradScaler, batches: Iterable[list[Example]],
              params: Params, epoch: int, encoder: CachedTextEncoder, classes: torch.Tensor,
              device: str = "cpu", progress: bool = True) -> dict[str, float]:
    """One pass over the epoch's prepared `batches`; returns the mean of every loss term."""
    model.train()
    rng, generator = epoch_generators(params.train.seed, epoch)
    totals: dict[str, float] = {}
    steps = 0
    for examples in tqdm(batches, desc=f"epoch {epoch}", unit="batch", disable=not progress,
                         leave=False):
        losses = train_step(model, criterion, optimizer, scheduler, scaler, examples, params,
                            encoder, classes, rng, generator, device)
        for key, value in losses.items():
            totals[key] = totals.get(key, 0.0) + float(value.detach())
        steps += 1
    return {key: value / steps for key, value in totals.items()}


def average_over_workers(module: torch.nn.Module) -> None:
    """Average the gradients of `module` (not wrapped by DDP: the criterion) over the workers."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for parameter in module.parameters():
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad)
            parameter.grad /= dist.get_world_size()


@torch.no_grad()
def validation_loss(model: UniSeg3D, criterion: Criterion, batches: Iterable[list[Example]],
                    params: Params, encoder: CachedTextEncoder, classes: torch.Tensor,
                    device: str = "cpu") -> float:
    """The total loss summed over the validation `batches` (no augmentation, all prompts, all
    queries)."""
    model.eval()
    rng, generator = epoch_generators(params.train.seed, 1 << 30)  # fixed, apart from epochs
    totals = [float(forward_losses(model, criterion, examples, params, encoder, classes, rng,
                                   generator, False, device)["total"]) for examples in batches]
    return float(np.sum(totals))


def load_trained_model(checkpoint: str | Path, device: str = "cpu"
                       ) -> tuple[UniSeg3D | OfficialUniSeg3D, CachedTextEncoder, torch.Tensor]:
    """Rebuild a model from its checkpoint (trained, or imported by `import-official`), with
    its text encoder and the ScanNet20 class embeddings (for `official`: the CLIP class
    prototypes); the model is in eval mode."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint (train first: uniseg3d train, or "
                                "import a released one: uniseg3d import-official)")
    state = load_checkpoint(path)
    if state.get("recipe", "ours") == "official":
        return load_official_model(state, device)
    model_config = ModelConfig.from_dict(json.loads(state["model_config"]))
    text = TextConfig(**json.loads(state["text_encoder"]))
    encoder = make_text_encoder(replace(Params(), text=text), device)
    classes = class_embeddings(encoder, class_prompt_names(scannet20().names)).to(device)
    model = UniSeg3D(model_config, classes.shape[1], device).to(device)
    if "semantic_log_prior" not in state["model"]:  # written before the model kept its prior
        log.warning("%s has no semantic_log_prior (an older checkpoint): semantic labels "
                    "without logit adjustment", path)
        state["model"]["semantic_log_prior"] = model.semantic_log_prior
    model.load_state_dict(state["model"])
    return model.eval(), encoder, classes


@dataclass
class TrainResult:
    out: Path
    history: list[dict]

    @property
    def best(self) -> Path:
        return self.out / CHECKPOINT_BEST

    @property
    def last(self) -> Path:
        return self.out / CHECKPOINT_LAST


def encode_descriptions(encoder: CachedTextEncoder, *sets: SceneSet) -> int:
    """Every description of the sets through the cached encoder at once, so that the cache file
    is written once and not batch by batch; returns how many there were."""
    texts = [text for scenes in sets for text in scenes.descriptions()]
    encoder.encode_texts(texts)
    return len(texts)


def scene_sets(params: Params, train_scenes: list[Scene] | None = None,
               val_scenes: list[Scene] | None = None) -> tuple[SceneSet, SceneSet]:
    """The training and validation scenes of `params.train` (or the given ones); an empty
    training split is an error here, before anything starts."""
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


# ------------------------------------------------------------------------- the epoch loop


@dataclass
class WorkerSession:
    """What `fit` needs from whoever runs it: this process alone (`train`), a Ray Train worker,
    a Tune trial."""

    report: Callable[[dict, Path], None] = lambda metrics, folder: None  # after every epoch
    resume_from: Path | None = None  # a folder holding the last.pt / best.pt to continue from
    rank: int = 0
    world_size: int = 1
    device: str = "cpu"
    threads: int = 1
    prepare: Callable[[torch.nn.Module], torch.nn.Module] = lambda model: model  # DDP wrapper
    progress: bool = False  # a progress bar per epoch


def stages(params: Params) -> list[tuple[int, float, float]]:
    """(epochs, lr, weight decay) of each stage: training, then optional fine-tuning."""
    cfg = params.train
    result = [(cfg.epochs, cfg.lr, cfg.weight_decay)]
    if cfg.fine_tune_epochs > 0:
        result.append((cfg.fine_tune_epochs, cfg.lr * 1e-3, cfg.weight_decay * 1e-3))
    return result


def _across_workers(values: dict[str, float], keys: list[str], session: WorkerSession,
                    collective: Callable[[torch.Tensor], object]) -> dict[str, float]:
    """`values` at `keys` through a collective over the workers (in place on one tensor)."""
    tensor = torch.tensor([values.get(k, 0.0) for k in keys], dtype=torch.float64,
                          device=session.device)
    collective(tensor)
    return dict(zip(keys, tensor.tolist()))


def _worker_sum(values: dict[str, float], session: WorkerSession) -> dict[str, float]:
    """The sum of each value over the workers."""
    if session.world_size == 1:
        return values
    return _across_workers(values, sorted(values), session, dist.all_reduce)


def _from_first_worker(values: dict[str, float], session: WorkerSession) -> dict[str, float]:
    """Worker 0's `values` (the hook's metrics) on every worker."""
    if session.world_size == 1:
        return values
    return _across_workers(values, sorted(BEST_METRICS), session,
                           lambda tensor: dist.broadcast(tensor, 0))


def fit(params: Params, session: WorkerSession, train_set: SceneSet, val_set: SceneSet,
        workdir: Path) -> list[dict]:
    """Train (and optionally fine-tune) per `params` on this worker's shards; after every epoch
    save `last.pt` / `best.pt` in `workdir` and `session.report` the epoch record (plus
    `score`: the validation loss, else the training loss). Returns the history.

    Each epoch's randomness derives from (seed, epoch), so a resumed run repeats exactly what an
    uninterrupted one does. The samples stream from `train.loader_workers` loader workers, which
    stop when `fit` returns. Training and validation losses are averaged over the workers; with
    `train.best_by: metrics` worker 0 computes the validation metrics on every validation scene
    (`pipelines.validation`)."""
    official = params.model.recipe == "official"
    if official:
        params = official_training(params)
    cfg = params.train
    best_by = cfg.best_by
    if best_by == "metrics" and not len(val_set):
        log.warning("train.best_by: metrics, but no validation scenes: best.pt is chosen by "
                    "the training loss")
        best_by = "loss"
    by_metrics = best_by == "metrics"
    torch.set_num_threads(session.threads)
    device = session.device
    check_precision(cfg.precision, device, "train.precision")
    names = class_prompt_names(scannet20().names)
    if official:
        torch.manual_seed(cfg.seed)
        model, encoder = build_official(params, names, device)
        encode_descriptions(encoder, train_set, val_set)
        classes = model.class_prototypes
        criterion = OfficialLosses(params).to(device)
    else:
        encoder = make_text_encoder(params, device)
        encode_descriptions(encoder, train_set, val_set)
        classes = class_embeddings(encoder, names).to(device)
        torch.manual_seed(cfg.seed)
        model = build_model(params, classes.shape[1], device)
        model.semantic_log_prior.copy_(torch.from_numpy(semantic_log_prior(train_set.each())))
        criterion = Criterion(params.loss, len(scannet20()))
    state = restore(session.resume_from, workdir, session.rank)
    history: list[dict] = state["history"] if state is not None else []
    resume_epoch = state["epoch"] + 1 if state is not None else 0
    wrapped = session.prepare(model)
    shard_size = -(-len(train_set) // session.world_size)  # epoch_shard's length
    val_plan = validation_batches(params, len(val_set), session.rank, session.world_size)
    metric_plan = metric_batches(len(val_set)) if session.rank == 0 else []
    stream = open_stream(params, train_set, val_set, session.threads)
    try:
        schedule = stages(params)
        total_epochs = sum(epochs for epochs, _, _ in schedule)
        for stage, (epochs, lr, weight_decay) in enumerate(schedule):
            stage_start = sum(e for e, _, _ in schedule[:stage])
            if stage_start + epochs <= resume_epoch:
                continue
            optimizer = torch.optim.AdamW(trainable(model, criterion), lr=lr,
                                          weight_decay=weight_decay)
            scheduler = poly_schedule(optimizer, epochs * -(-shard_size // cfg.batch_size),
                                      cfg.poly_power)
            scaler = grad_scaler(cfg.precision, device)
            if state is not None and state["stage"] == stage:
                model.load_state_dict(state["model"])
                if official:
                    criterion.criterion.load_state_dict(state["criterion"])
                elif "criterion" in state:
                    criterion.load_state_dict(state["criterion"])
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
                if "scaler" in state:
                    scaler.load_state_dict(state["scaler"])
            elif stage > 0:  # fine-tuning continues from the best checkpoint of the first stage
                best = workdir / CHECKPOINT_BEST
                if not best.is_file():  # best_by metrics, and no epoch of stage 0 validated
                    log.warning("no %s after stage 0: fine-tuning starts from its last epoch", best)
                    best = workdir / CHECKPOINT_LAST
                model.load_state_dict(load_checkpoint(best)["model"])
            for epoch in range(max(stage_start, resume_epoch), stage_start + epochs):
                begin, lr_at_start = time.perf_counter(), scheduler.get_last_lr()[0]
                batches = stream.batches(training_batches(params, len(train_set), session.rank,
                                                          session.world_size, epoch))
                losses = run_epoch(wrapped, criterion, optimizer, scheduler, scaler, batches,
                                   params, epoch, encoder, classes, device, session.progress)
                record = {"epoch": epoch, "stage": stage, "lr": lr_at_start,
                          "seconds": time.perf_counter() - begin,
                          **{f"train_{k}": v / session.world_size
                             for k, v in _worker_sum(losses, session).items()}}
                if len(val_set):
                    begin = time.perf_counter()
                    total = validation_loss(model, criterion, stream.batches(val_plan), params,
                                            encoder, classes, device)
                    record["val_total"] = _worker_sum({"val": total}, session)["val"] / len(val_set)
                    record["val_seconds"] = time.perf_counter() - begin
                if by_metrics and metric_epoch(epoch, total_epochs, cfg.validate_every,
                                               cfg.validate_last):
                    begin = time.perf_counter()
                    samples = (batch[0].sample for batch in stream.batches(metric_plan))
                    values = validation_metrics(model, samples, encoder, classes, device) \
                        if session.rank == 0 else {}
                    record.update({f"val_{k}": v
                                   for k, v in _from_first_worker(values, session).items()})
                    record["metric_seconds"] = time.perf_counter() - begin
                history.append(record)

                def save(path: Path) -> None:
                    save_checkpoint(path, model, optimizer, scheduler, epoch, stage, history,
                                    params, criterion, scaler)

                save(workdir / CHECKPOINT_LAST)
                save_best(workdir, history, best_by, save)
                if session.rank == 0:
                    val = f", val {record['val_total']:.4f}" if "val_total" in record else ""
                    val += "".join(f", {k} {record['val_' + k]:.3f}" for k in BEST_METRICS
                                   if "val_" + k in record)
                    log.info("epoch %d/%d (stage %d): loss %.4f%s, %.1f s", epoch + 1,
                             total_epochs, stage, record["train_total"], val,
                             record["seconds"])
                session.report({**record, "score": epoch_score(record)}, workdir)
    finally:
        stream.close()
    return history


def train(params: Params, resume: bool = False, progress: bool = True, device: str = "cpu",
          train_scenes: list[Scene] | None = None, val_scenes: list[Scene] | None = None
          ) -> TrainResult:
    """`fit` in this process alone (no Ray): checkpoints and history.json go to train.out;
    `resume` continues from its last.pt. `uniseg3d train` runs the same loop through Ray
    (`ray_train.run_ray_train`); this is the reference it is measured against."""
    cfg = params.train
    check_precision(cfg.precision, device, "train.precision")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    train_set, val_set = scene_sets(params, train_scenes, val_scenes)
    session = WorkerSession(
        resume_from=out if resume and (out / CHECKPOINT_LAST).is_file() else None,
        device=device, threads=cfg.threads, progress=progress)
    history = fit(params, session, train_set, val_set, out)
    (out / HISTORY_FILE).write_text(json.dumps(history, indent=2))
    return TrainResult(out, history)


def with_overrides(params: Params, **train_overrides) -> Params:
    """A copy of `params` with some `train` fields replaced (for the CLI and tests)."""
    return replace(params, train=replace(params.train, **train_overrides))
