"""The `train` stage: the epoch loop, checkpoints, resume and two-stage fine-tuning.

`run_epoch` is a plain function over a list of cached scenes so that the distributed runner can
call it per worker. Each epoch's randomness (scene order, augmentation, query subsets, clicks)
derives from (seed, epoch), so a resumed run repeats exactly what an uninterrupted one does.
Checkpoints are written atomically (temporary file + rename) and loaded with
`weights_only=True`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from uniseg3d.config import ModelConfig, Params, TextConfig
from uniseg3d.datasets.classes import scannet20
from uniseg3d.datasets.loader import make_sample, read_scene_list, read_split
from uniseg3d.datasets.scene import Scene
from uniseg3d.model.criterion import Criterion
from uniseg3d.model.inputs import scene_input, scene_targets
from uniseg3d.model.text_encoder import CachedTextEncoder, build_text_encoder, class_embeddings
from uniseg3d.model.uniseg3d import UniSeg3D

log = logging.getLogger(__name__)

CHECKPOINT_LAST = "last.pt"
CHECKPOINT_BEST = "best.pt"
HISTORY_FILE = "history.json"


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
    return UniSeg3D(params.model.selected(), text_dim, device).to(device)


def poly_schedule(optimizer: torch.optim.Optimizer, total_steps: int, power: float
                  ) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1 - step / max(1, total_steps)) ** power)


def epoch_generators(seed: int, epoch: int) -> tuple[np.random.Generator, torch.Generator]:
    torch_gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch, 1])
                                                  .generate_state(1)[0]))
    return np.random.default_rng([seed, epoch]), torch_gen


def forward_losses(model: UniSeg3D, criterion: Criterion, scenes: list[Scene], params: Params,
                   encoder: CachedTextEncoder, classes: torch.Tensor, rng: np.random.Generator,
                   generator: torch.Generator, training: bool, device: str = "cpu"
                   ) -> dict[str, torch.Tensor]:
    """Losses of one batch of scenes (augmented and prompted when `training`)."""
    augment = params.train.augment if training else None
    samples = [make_sample(s, params.prompts, rng, augment, training) for s in scenes]
    inputs = [scene_input(s, encoder.encode(s.texts) if s.texts else
                          torch.zeros(0, classes.shape[1]), device) for s in samples]
    targets = [scene_targets(s, device) for s in samples]
    outputs = model(inputs, generator)
    return criterion(outputs, targets, classes)


def run_epoch(model: UniSeg3D, criterion: Criterion, optimizer: torch.optim.Optimizer,
              scheduler, scenes: list[Scene], params: Params, epoch: int,
              encoder: CachedTextEncoder, classes: torch.Tensor, device: str = "cpu",
              progress: bool = True) -> dict[str, float]:
    """One pass over `scenes` in a seeded random order; returns the mean of every loss term."""
    model.train()
    rng, generator = epoch_generators(params.train.seed, epoch)
    order = rng.permutation(len(scenes))
    batch = params.train.batch_size
    totals: dict[str, float] = {}
    steps = range(0, len(order), batch)
    for start in tqdm(steps, desc=f"epoch {epoch}", unit="batch", disable=not progress,
                      leave=False):
        losses = forward_losses(model, criterion, [scenes[i] for i in order[start:start + batch]],
                                params, encoder, classes, rng, generator, True, device)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), params.train.grad_clip)
        optimizer.step()
        scheduler.step()
        for key, value in losses.items():
            totals[key] = totals.get(key, 0.0) + float(value.detach())
    return {key: value / len(steps) for key, value in totals.items()}


@torch.no_grad()
def validation_loss(model: UniSeg3D, criterion: Criterion, scenes: list[Scene], params: Params,
                    encoder: CachedTextEncoder, classes: torch.Tensor, device: str = "cpu"
                    ) -> float:
    """Mean total loss on `scenes` without augmentation (all prompts, all queries)."""
    model.eval()
    rng, generator = epoch_generators(params.train.seed, 1 << 30)  # fixed, apart from epochs
    totals = [float(forward_losses(model, criterion, [s], params, encoder, classes, rng,
                                   generator, False, device)["total"]) for s in scenes]
    return float(np.mean(totals)) if totals else float("nan")


def save_checkpoint(path: Path, model: UniSeg3D, optimizer, scheduler, epoch: int,
                    stage: int, history: list[dict], params: Params) -> None:
    """Write a checkpoint atomically (temporary file in the same folder, then rename)."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "epoch": epoch, "stage": stage,
             "history": json.dumps(history), "model_config": json.dumps(asdict(model.config)),
             "text_encoder": json.dumps(asdict(params.text))}
    temp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(state, temp)
    os.replace(temp, path)


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint's contents (tensors and plain values only: `weights_only=True`)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state["history"] = json.loads(state["history"])
    return state


def load_trained_model(checkpoint: str | Path, device: str = "cpu"
                       ) -> tuple[UniSeg3D, CachedTextEncoder, torch.Tensor]:
    """Rebuild a trained model from its checkpoint, with its text encoder and the ScanNet20
    class-name embeddings; the model is in eval mode."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint (train first: uniseg3d train)")
    state = load_checkpoint(path)
    model_config = json.loads(state["model_config"])
    model_config["channels"] = tuple(model_config["channels"])
    text = TextConfig(**json.loads(state["text_encoder"]))
    encoder = make_text_encoder(replace(Params(), text=text), device)
    classes = class_embeddings(encoder, class_prompt_names(scannet20().names)).to(device)
    model = UniSeg3D(ModelConfig(**model_config), classes.shape[1], device).to(device)
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


def _stages(params: Params) -> list[tuple[int, float, float]]:
    """(epochs, lr, weight decay) of each stage: training, then optional fine-tuning."""
    cfg = params.train
    stages = [(cfg.epochs, cfg.lr, cfg.weight_decay)]
    if cfg.fine_tune_epochs > 0:
        stages.append((cfg.fine_tune_epochs, cfg.lr * 1e-3, cfg.weight_decay * 1e-3))
    return stages


def train(params: Params, resume: bool = False, progress: bool = True, device: str = "cpu",
          train_scenes: list[Scene] | None = None, val_scenes: list[Scene] | None = None
          ) -> TrainResult:
    """Train (and optionally fine-tune) the model; checkpoints and history go to train.out."""
    cfg = params.train
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if train_scenes is None:
        train_scenes = read_split(cfg.cache, read_scene_list(cfg.train_scenes)
                                  if cfg.train_scenes else None)
    if val_scenes is None:
        val_scenes = read_split(cfg.cache, read_scene_list(cfg.val_scenes)) \
            if cfg.val_scenes else []
    if not train_scenes:
        raise ValueError(f"no training scenes found in {cfg.cache}")
    encoder = make_text_encoder(params, device)
    classes = class_embeddings(encoder, class_prompt_names(scannet20().names)).to(device)
    torch.manual_seed(cfg.seed)
    model = build_model(params, classes.shape[1], device)
    criterion = Criterion(params.loss, len(scannet20()))
    history: list[dict] = []
    start_stage, start_epoch = 0, 0
    resume_state = load_checkpoint(out / CHECKPOINT_LAST) if resume and \
        (out / CHECKPOINT_LAST).is_file() else None
    if resume_state is not None:
        history = resume_state["history"]
        start_stage, start_epoch = resume_state["stage"], resume_state["epoch"] + 1
        log.info("resuming stage %d at epoch %d from %s", start_stage, start_epoch,
                 out / CHECKPOINT_LAST)
    steps_per_epoch = -(-len(train_scenes) // cfg.batch_size)
    epoch_offset = 0
    for stage, (epochs, lr, weight_decay) in enumerate(_stages(params)):
        if stage < start_stage:
            epoch_offset += epochs
            continue
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        scheduler = poly_schedule(optimizer, epochs * steps_per_epoch, cfg.poly_power)
        if resume_state is not None and stage == start_stage:
            model.load_state_dict(resume_state["model"])
            optimizer.load_state_dict(resume_state["optimizer"])
            scheduler.load_state_dict(resume_state["scheduler"])
        elif stage > 0:  # fine-tuning continues from the best checkpoint of the first stage
            model.load_state_dict(load_checkpoint(out / CHECKPOINT_BEST)["model"])
        first = start_epoch - epoch_offset if stage == start_stage else 0
        for epoch in range(epoch_offset + max(first, 0), epoch_offset + epochs):
            begin, lr_at_start = time.perf_counter(), scheduler.get_last_lr()[0]
            losses = run_epoch(model, criterion, optimizer, scheduler, train_scenes, params,
                               epoch, encoder, classes, device, progress)
            record = {"epoch": epoch, "stage": stage, "lr": lr_at_start,
                      "seconds": time.perf_counter() - begin,
                      **{f"train_{k}": v for k, v in losses.items()}}
            if val_scenes:
                record["val_total"] = validation_loss(model, criterion, val_scenes, params,
                                                      encoder, classes, device)
            history.append(record)
            score = record.get("val_total", record["train_total"])
            best = min(h.get("val_total", h["train_total"]) for h in history)
            save_checkpoint(out / CHECKPOINT_LAST, model, optimizer, scheduler, epoch, stage,
                            history, params)
            if score <= best:
                save_checkpoint(out / CHECKPOINT_BEST, model, optimizer, scheduler, epoch, stage,
                                history, params)
            log.info("epoch %d (stage %d): loss %.4f%s, %.1f s", epoch, stage,
                     record["train_total"], f", val {record['val_total']:.4f}"
                     if "val_total" in record else "", record["seconds"])
        epoch_offset += epochs
    (out / HISTORY_FILE).write_text(json.dumps(history, indent=2))
    return TrainResult(out, history)


def with_overrides(params: Params, **train_overrides) -> Params:
    """A copy of `params` with some `train` fields replaced (for the CLI and tests)."""
    return replace(params, train=replace(params.train, **train_overrides))
