"""What training streams: its samples, prepared in loader workers, and the batches it asks for.

`open_stream` starts the `datasets.streaming.SceneStream` of a run's training and validation
scenes with `train.loader_workers` worker processes. A training sample is augmented and
prompted (the `official` recipe keeps the prompts of thing instances, as its losses need), a
validation-loss sample has every prompt of the trained tasks and no augmentation, both with
their targets (on the CPU; the official recipe's with the scene's SAM3D pseudo masks); a
validation-metric sample is the one `evaluate` draws. What needs the model stays in the
training process: text encoding, corrective clicks (and the prompt targets they change).
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
from uniseg3d.model.inputs import scene_targets
from uniseg3d.model.official.targets import OfficialTargets, official_targets
from uniseg3d.model.targets import SceneTargets
from uniseg3d.pipelines.official_training import PseudoMasks, thing_prompts

log = logging.getLogger(__name__)

TRAIN, VALIDATION, METRICS = "train", "val", "metrics"  # an item's purpose
VALIDATION_EPOCH = 1 << 30  # seeds the validation samples, apart from every training epoch


@dataclass(frozen=True)
class Example:
    """A prepared sample and its targets (None for the validation metrics)."""

    sample: Sample
    targets: SceneTargets | OfficialTargets | None = None


@dataclass(frozen=True)
class Preparation:
    """A loader worker's preparation of one scene for an item's purpose; `pseudo`: the
    official recipe's SAM3D pseudo masks (None for `ours`)."""

    params: Params
    pseudo: PseudoMasks | None = None

    def __call__(self, scene: Scene, item: Item) -> Example:
        if item.purpose == METRICS:
            return Example(evaluation_sample(scene, self.params, item.index))
        training = item.purpose == TRAIN
        sample = make_sample(scene, self.params.prompts, item.generator(),
                             self.params.train.augment if training else None, training)
        if self.pseudo is None:
            return Example(sample, scene_targets(sample))
        sample = thing_prompts(sample)
        return Example(sample, official_targets(sample, self.pseudo.of_scene(scene)))


def loader_workers(params: Params, cpus: int | None = None) -> int:
    """`train.loader_workers`, or when null what the training process's CPUs allow (`cpus`,
    default `ray.cpus_per_worker`: what Ray gives each training worker; GPU runs,
    `ray.use_gpu`, leave the step one core and give the loader the rest)."""
    workers = params.train.loader_workers
    if workers is not None:
        return workers
    return default_loader_workers(params.ray.cpus_per_worker if cpus is None else cpus,
                                  params.ray.use_gpu)


def preparation(params: Params) -> Preparation:
    """How the samples of a run per `params` are prepared."""
    official = params.model.recipe == "official"
    return Preparation(params, PseudoMasks(params.train.pseudo_masks) if official else None)


def open_stream(params: Params, train_set: SceneSet, val_set: SceneSet,
                cpus: int | None = None) -> SceneStream[Example]:
    """The stream of a run's examples (`params` as the run trains: the official recipe's
    choices applied; `cpus`: the training process's CPUs, for `loader_workers`)."""
    workers = loader_workers(params, cpus)
    log.info("%d loader worker(s) prepare the samples", workers)
    return SceneStream({TRAIN: train_set, VALIDATION: val_set}, preparation(params), workers)


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
