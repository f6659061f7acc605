"""What training streams: its samples, prepared in loader workers, and the batches it asks for.

`open_stream` starts the `datasets.streaming.SceneStream` of a run's training and validation
scenes with `train.loader_workers` worker processes. A training sample is augmented and
prompted (the `official` recipe keeps the prompts of thing instances, as its losses need), a
validation-loss sample has every prompt of the trained tasks and no augmentation, a
validation-metric sample is the one `evaluate` draws. What needs the model (corrective clicks,
text encoding, the targets that follow the corrections) stays in the training process.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from uniseg3d.config import Params
from uniseg3d.datasets.loader import Sample, evaluation_sample, make_sample
from uniseg3d.datasets.scene import Scene
from uniseg3d.datasets.streaming import (
    Item, SceneSet, SceneStream, default_loader_workers, epoch_batches)
from uniseg3d.pipelines.official_training import thing_prompts

log = logging.getLogger(__name__)

TRAIN, VALIDATION, METRICS = "train", "val", "metrics"  # an item's purpose
VALIDATION_EPOCH = 1 << 30  # seeds the validation samples, apart from every training epoch


@dataclass(frozen=True)
class Preparation:
    """A loader worker's preparation of one scene for an item's purpose."""

    params: Params

    def __call__(self, scene: Scene, item: Item) -> Sample:
        if item.purpose == METRICS:
            return evaluation_sample(scene, self.params, item.index)
        training = item.purpose == TRAIN
        sample = make_sample(scene, self.params.prompts, item.generator(),
                             self.params.train.augment if training else None, training)
        return thing_prompts(sample) if self.params.model.recipe == "official" else sample


def loader_workers(params: Params) -> int:
    """`train.loader_workers`, or when null what this machine allows."""
    workers = params.train.loader_workers
    return default_loader_workers() if workers is None else workers


def open_stream(params: Params, train_set: SceneSet, val_set: SceneSet) -> SceneStream[Sample]:
    """The stream of a run's samples (`params` as the run trains: the official recipe's
    choices applied)."""
    workers = loader_workers(params)
    log.info("%d loader worker(s) prepare the samples", workers)
    return SceneStream({TRAIN: train_set, VALIDATION: val_set}, Preparation(params), workers)


def training_batches(params: Params, size: int, rank: int, world_size: int, epoch: int
                     ) -> list[list[Item]]:
    """Worker `rank`'s training batches of `epoch`."""
    cfg = params.train
    return epoch_batches(TRAIN, TRAIN, size, rank, world_size, cfg.seed, epoch, cfg.batch_size)


def validation_batches(params: Params, size: int, rank: int, world_size: int
                       ) -> list[list[Item]]:
    """Worker `rank`'s validation-loss scenes (every `world_size`-th), one per batch."""
    return [[Item(VALIDATION, int(i), VALIDATION, (params.train.seed, VALIDATION_EPOCH, 3, int(i)))]
            for i in np.arange(rank, size, world_size)]


def metric_batches(size: int) -> list[list[Item]]:
    """Every validation scene for the metrics, one per batch, in order."""
    return [[Item(VALIDATION, i, METRICS, ())] for i in range(size)]
