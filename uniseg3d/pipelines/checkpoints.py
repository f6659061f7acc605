"""Training checkpoints: written atomically, read with `weights_only=True`, best ones chosen.

A run's folder holds `last.pt` (every epoch), `best.pt` (by the validation loss, or with
`train.best_by: metrics` following the hook's first metric) and each `best_<metric>.pt`; a
resumed worker brings them into its own folder first (`restore`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from uniseg3d.config import Params
from uniseg3d.model.official.network import OfficialUniSeg3D
from uniseg3d.model.uniseg3d import UniSeg3D
from uniseg3d.pipelines.validation import BEST_METRICS, best_file, has_value, improved

log = logging.getLogger(__name__)

CHECKPOINT_LAST = "last.pt"
CHECKPOINT_BEST = "best.pt"
HISTORY_FILE = "history.json"


def save_checkpoint(path: Path, model: UniSeg3D | OfficialUniSeg3D, optimizer, scheduler,
                    epoch: int, stage: int, history: list[dict], params: Params,
                    criterion=None, scaler: torch.amp.GradScaler | None = None) -> None:
    """Write a checkpoint atomically (temporary file in the same folder, then rename); an
    official model's in the layout `import-official` writes (recipe, text model, criterion);
    fp16's loss scale (`scaler`, when enabled) too, so that a resumed run continues it."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "epoch": epoch, "stage": stage,
             "history": json.dumps(history), "model_config": json.dumps(asdict(model.config)),
             "text_encoder": json.dumps(asdict(params.text))}
    if isinstance(model, OfficialUniSeg3D):
        state.update(recipe="official", text_model=model.text_model,
                     criterion=criterion.criterion.state_dict())
    elif criterion is not None and list(criterion.parameters()):  # ours' official forms
        state["criterion"] = criterion.state_dict()
    if scaler is not None and scaler.is_enabled():
        state["scaler"] = scaler.state_dict()
    temp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(state, temp)
    os.replace(temp, path)


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint's contents (tensors and plain values only: `weights_only=True`)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state["history"] = json.loads(state["history"])
    return state


def epoch_score(record: dict) -> float:
    """What "best" minimises: the validation loss, else the training loss."""
    return record.get("val_total", record["train_total"])


def save_best(workdir: Path, history: list[dict], best_by: str, save: Callable[[Path], None]
              ) -> None:
    """Write the best checkpoints the last epoch of `history` earned: `best.pt` at the lowest
    score (`best_by: loss`, later ties win), or `best_<metric>.pt` at each of the hook's
    metrics it beat, `best.pt` following the first (`best_by: metrics`; until the first has a
    value, `best.pt` is the last epoch's)."""
    if best_by == "loss":
        if epoch_score(history[-1]) <= min(map(epoch_score, history)):
            save(workdir / CHECKPOINT_BEST)
        return
    first = next(iter(BEST_METRICS))
    for metric in BEST_METRICS:
        if improved(history, metric):
            save(workdir / best_file(metric))
    if improved(history, first):
        shutil.copy2(workdir / best_file(first), workdir / CHECKPOINT_BEST)
    elif not any(has_value(record, first) for record in history):
        shutil.copy2(workdir / CHECKPOINT_LAST, workdir / CHECKPOINT_BEST)


def restore(resume_from: Path | None, workdir: Path, rank: int) -> dict | None:
    """Bring the checkpoint files of `resume_from` into `workdir`; the state of its `last.pt`
    (None: a fresh start)."""
    if resume_from is None:
        return None
    source = Path(resume_from)
    if source.resolve() != workdir.resolve():
        for name in (CHECKPOINT_LAST, CHECKPOINT_BEST, *map(best_file, BEST_METRICS)):
            if (source / name).is_file():
                shutil.copy2(source / name, workdir / name)
    state = load_checkpoint(workdir / CHECKPOINT_LAST)
    log.info("worker %d resumes after epoch %d (stage %d)", rank, state["epoch"],
             state["stage"])
    return state
