"""Validation metrics inside training: the released checkpoint hook's choice of best checkpoints.

UniSeg3D's config validates every 16 epochs and every epoch of the last 16 (`dynamic_intervals
[(1, 16), (epoch - 16, 1)]`), and its checkpoint hook keeps the best checkpoint by each of three
metrics (`save_best=['all_ap', 'miou', 'pq']`, rule `greater`): ScanNet20 instance AP, semantic
mIoU and panoptic PQ. With `train.best_by: metrics` training does the same: on the validated
epochs the validation scenes go through `predict_scene` as `evaluate` runs them (same clicks,
same descriptions; their samples stream from the loader workers), the three metrics join the
epoch's record as `val_all_ap`, `val_miou`, `val_pq`, and a checkpoint that beats every
earlier value of a metric (strictly, as the hook's `>`) is written as `best_<metric>.pt`;
`best.pt`, which the pipeline evaluates, follows the first of them (all_ap), and is the last
epoch's until all_ap has a value. Without validation scenes, `best.pt` falls back to the
training loss (said in the log).
"""

from __future__ import annotations

import torch

from collections.abc import Iterable

from uniseg3d.datasets.loader import Sample
from uniseg3d.metrics.tasks import ScanNetTasks
from uniseg3d.model.inference import predict_scene
from uniseg3d.model.inputs import scene_input
from uniseg3d.model.text_encoder import CachedTextEncoder

BEST_METRICS = {"all_ap": ("instance", "ap"), "miou": ("semantic", "miou"),
                "pq": ("panoptic", "pq")}  # the hook's name -> (task, key) of our results


def metric_epoch(epoch: int, total: int, every: int, last: int) -> bool:
    """Whether the 0-based `epoch` of `total` is validated: every `every`-th epoch, every epoch
    of the last `last`, and the final one (mmengine's EpochBasedTrainLoop with dynamic
    intervals)."""
    done = epoch + 1
    return done % every == 0 or done >= total - last or done == total


def best_file(metric: str) -> str:
    return f"best_{metric}.pt"


@torch.no_grad()
def validation_metrics(model: torch.nn.Module, samples: Iterable[Sample],
                       encoder: CachedTextEncoder, classes: torch.Tensor, device: str = "cpu"
                       ) -> dict[str, float]:
    """The hook's three metrics (fractions) of `model` on the validation scenes' evaluation
    samples (`evaluation_sample`, in order)."""
    tasks = ScanNetTasks()
    for sample in samples:
        inputs = scene_input(sample, encoder.encode_texts(sample.texts), device)
        tasks.add(sample, predict_scene(model, inputs, classes))
    results = tasks.evaluate(sorted({task for task, _ in BEST_METRICS.values()}))
    return {name: float(results[task][key]) for name, (task, key) in BEST_METRICS.items()}


def has_value(record: dict, metric: str) -> bool:
    """Whether an epoch's record holds a value (not NaN) of the hook's `metric`."""
    value = record.get(f"val_{metric}")
    return value is not None and value == value


def improved(history: list[dict], metric: str) -> bool:
    """Whether the last record's `val_<metric>` beats every earlier value (NaN never does)."""
    if not has_value(history[-1], metric):
        return False
    value, key = history[-1][f"val_{metric}"], f"val_{metric}"
    return all(value > r[key] for r in history[:-1] if has_value(r, metric))
