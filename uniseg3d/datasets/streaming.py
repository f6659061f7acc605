"""Streaming samples: scenes read from the cache when a batch needs them, prepared ahead of time.

A `SceneStream` is one torch `DataLoader` over `Item`s (which scene of which set, which
purpose, the key that seeds its generator) with persistent worker processes that read each
scene memory-mapped, prepare it (augmentation, prompts: the pipeline's `prepare`) and drop it;
the process that trains holds only the batches in flight (`prefetch_factor` per worker), each
handed over in one shared-memory block (`datasets.handover`). The main process says which
batches come next (`SceneStream.batches`): the seeded epoch order of its shard, the validation
scenes. A sample's generator derives from its item's key alone, so any number of workers, or
none (`workers=0`: the same preparation in this process), gives the same samples.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler

from uniseg3d.datasets.cache import cached_scene_ids, read_scene
from uniseg3d.datasets.handover import pack, unpack
from uniseg3d.datasets.loader import read_scene_list
from uniseg3d.datasets.scene import Scene

T = TypeVar("T")
PREFETCH_BATCHES = 2  # per loader worker (DataLoader's prefetch_factor)


def available_cores() -> int:
    """CPU cores this process may use (the affinity mask, not the host's count)."""
    return len(os.sched_getaffinity(0))


def default_loader_workers(cpus: int, accelerated: bool = False) -> int:
    """Loader workers when `train.loader_workers` is null: the CPUs given to the process that
    trains (`cpus`, never more than it may use) less one for the step; when the step runs on
    the CPU as well (not `accelerated`) at most two, since a scene's preparation is a fraction
    of a CPU step and the step wants the cores; none on a single core."""
    spare = min(cpus, available_cores()) - 1
    return max(0, spare if accelerated else min(2, spare))


@dataclass(frozen=True)
class SceneSet:
    """Training or validation scenes: held in memory (`of`), or read from a cache folder,
    memory-mapped, each time a sample needs one (`listed`), so that nothing keeps them."""

    cache: str | None = None
    ids: tuple[str, ...] = ()
    scenes: tuple[Scene, ...] = ()

    @classmethod
    def of(cls, scenes: Sequence[Scene]) -> SceneSet:
        """Scenes already in memory (they travel to Ray workers with the run's config)."""
        return cls(ids=tuple(s.scene_id for s in scenes), scenes=tuple(scenes))

    @classmethod
    def listed(cls, cache: str, scene_list: str | None) -> SceneSet:
        """The scenes of `scene_list` (every cached scene when None) under `cache`."""
        ids = read_scene_list(scene_list) if scene_list else cached_scene_ids(cache)
        return cls(cache=str(Path(cache).resolve()), ids=tuple(ids))

    def __len__(self) -> int:
        return len(self.ids)

    def scene(self, index: int) -> Scene:
        """Scene `index` (a cached scene's arrays mapped, not read)."""
        if self.scenes:
            return self.scenes[index]
        return read_scene(Path(self.cache) / self.ids[index], mmap=True)

    def each(self) -> Iterator[Scene]:
        """Every scene of the set in order, one at a time."""
        return map(self.scene, range(len(self)))

    def descriptions(self) -> list[str]:
        """Every description of the set's scenes."""
        return [d.text for scene in self.each() for d in scene.referring]


def epoch_shard(size: int, rank: int, world_size: int, seed: int, epoch: int) -> np.ndarray:
    """Indices of the scenes worker `rank` trains on in `epoch` (a DistributedSampler): a
    permutation seeded by (seed, epoch), cyclically padded to a multiple of `world_size`, every
    `world_size`-th entry from `rank`, sorted. Every worker gets the same count; one worker gets
    every scene in order."""
    order = np.random.default_rng([seed, epoch, 2]).permutation(size)
    padded = np.resize(order, -(-size // world_size) * world_size)
    return np.sort(padded[rank::world_size])


@dataclass(frozen=True)
class Item:
    """One sample to prepare: scene `index` of set `split`, for `purpose` (the pipeline's
    name for how it is prepared), its generator seeded by `key` alone."""

    split: str
    index: int
    purpose: str
    key: tuple[int, ...]

    def generator(self) -> np.random.Generator:
        return np.random.default_rng(self.key)


def epoch_batches(split: str, purpose: str, size: int, rank: int, world_size: int, seed: int,
                  epoch: int, batch_size: int) -> list[list[Item]]:
    """The batches of worker `rank` in `epoch` (scenes of `split` prepared for `purpose`): its
    shard (`epoch_shard`) in an order seeded by (seed, epoch), each sample keyed by (seed, epoch,
    3, its position in that order)."""
    shard = epoch_shard(size, rank, world_size, seed, epoch)
    order = shard[np.random.default_rng([seed, epoch]).permutation(len(shard))]
    items = [Item(split, int(index), purpose, (seed, epoch, 3, position))
             for position, index in enumerate(order)]
    return [items[start:start + batch_size] for start in range(0, len(items), batch_size)]


def in_memory(scene: Scene) -> Scene:
    """`scene` with its memory-mapped arrays read into memory (a sample handed on owns its
    arrays, and the scene's files are closed)."""
    return replace(scene, **{f.name: np.array(getattr(scene, f.name)) for f in fields(scene)
                             if isinstance(getattr(scene, f.name), np.memmap)})


class Prepared(Dataset, Generic[T]):
    """`prepare(scene, item)` of each item's scene (what runs in a loader worker)."""

    def __init__(self, sets: dict[str, SceneSet], prepare: Callable[[Scene, Item], T]):
        self.sets, self.prepare = sets, prepare

    def __getitem__(self, item: Item) -> T:
        return self.prepare(in_memory(self.sets[item.split].scene(item.index)), item)


class Planned(Sampler):
    """The batches the main process asked for next, in order."""

    def __init__(self):
        self.plan: list[list[Item]] = []

    def __iter__(self) -> Iterator[list[Item]]:
        return iter(self.plan)

    def __len__(self) -> int:
        return len(self.plan)


def as_list(batch: list) -> list:
    """The collate function: a batch stays a list of prepared samples."""
    return batch


class SceneStream(Generic[T]):
    """Prepared batches of the scene sets, `workers` processes ahead of the step (0: prepared
    in this process when the step asks)."""

    def __init__(self, sets: dict[str, SceneSet], prepare: Callable[[Scene, Item], T],
                 workers: int):
        self.sampler = Planned()
        ahead = {"persistent_workers": True, "prefetch_factor": PREFETCH_BATCHES} \
            if workers else {}
        self.loader = DataLoader(Prepared(sets, prepare), batch_sampler=self.sampler,
                                 num_workers=workers, collate_fn=pack if workers else as_list,
                                 **ahead)

    def batches(self, plan: list[list[Item]]) -> Iterator[list[T]]:
        """The prepared batches of `plan`, in its order."""
        self.sampler.plan = plan
        return map(unpack, self.loader) if self.loader.num_workers else iter(self.loader)

    def close(self) -> None:
        """Stop the worker processes (they persist across epochs until then)."""
        self.loader = None
