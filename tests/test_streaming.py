"""Streaming samples: loader workers prepare what this process would, runs and resumes repeat,
and the training process keeps no scenes beyond the batch in flight."""

from __future__ import annotations

import dataclasses
import gc

import numpy as np
import pytest

from resume import interrupted_then_resumed
from scannet_files import described_scenes
from uniseg3d.config import Params
from uniseg3d.datasets import streaming
from uniseg3d.datasets.cache import read_scene, write_scene
from uniseg3d.datasets.scene import Scene
from uniseg3d.datasets.streaming import SceneSet, SceneStream, epoch_batches, epoch_shard
from uniseg3d.pipelines import train as train_module
from uniseg3d.pipelines.official_training import official_training
from uniseg3d.pipelines.samples import (
    TRAIN, VALIDATION, loader_workers, metric_batches, preparation, training_batches,
    validation_batches)
from uniseg3d.pipelines.train import train

IDS = ("stream0", "stream1", "stream2", "stream3")  # three to train on, one to validate


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """ScanNet-layout scenes read back and written to a scene cache (the process keeps none),
    with the split lists; the cache folder."""
    root = tmp_path_factory.mktemp("streaming")
    (root / "raw").mkdir()
    scenes = described_scenes(root / "raw", ((2, "the chair next to the table"),
                                             (3, "the large table in the middle")), count=4)
    for scene, scene_id in zip(scenes, IDS):
        write_scene(dataclasses.replace(scene, scene_id=scene_id), root / "cache", {})
    (root / "train.txt").write_text("\n".join(IDS[:3]))
    (root / "val.txt").write_text(IDS[3])
    return root


def params_for(root, out, **train) -> Params:
    params = Params()
    augment = dataclasses.replace(params.train.augment, elastic=())
    return dataclasses.replace(
        params, text=dataclasses.replace(params.text, cache_file=str(root / "text.pt")),
        train=dataclasses.replace(
            params.train, cache=str(root / "cache"), train_scenes=str(root / "train.txt"),
            val_scenes=str(root / "val.txt"), out=str(out), augment=augment,
            **{"epochs": 2, **train}))


def arrays(example) -> list[np.ndarray]:
    """Every array of an example: its scene's, its prompts, its targets (when it has any)."""
    sample, scene = example.sample, example.sample.scene
    targets = example.targets
    targets = [] if targets is None else [getattr(targets, field.name).numpy()
                                          for field in dataclasses.fields(targets)]
    return [scene.coords, scene.colors, scene.superpoints, scene.instance, sample.click_points,
            sample.click_instances, sample.text_instances, np.array(sample.texts), *targets]


@pytest.mark.parametrize("cores, cpus, accelerated, workers", [
    (1, 2, False, 0), (2, 2, False, 1), (3, 4, False, 2), (16, 2, False, 1), (16, 16, False, 2),
    (16, 1, False, 0), (16, 8, True, 7), (4, 8, True, 3), (1, 8, True, 0)])
def test_default_loader_workers_leave_a_core_to_the_step(monkeypatch, cores, cpus, accelerated,
                                                         workers):
    """The training process's CPUs (never more than the machine's) less one; at most two when
    the step runs on the CPU too."""
    monkeypatch.setattr(streaming, "available_cores", lambda: cores)
    assert streaming.default_loader_workers(cpus, accelerated) == workers


def test_null_loader_workers_follow_the_ray_worker_cpus(monkeypatch):
    monkeypatch.setattr(streaming, "available_cores", lambda: 16)
    params = Params()
    assert loader_workers(params) == 1  # ray.cpus_per_worker: 2
    gpu = dataclasses.replace(params, ray=dataclasses.replace(params.ray, use_gpu=True,
                                                              cpus_per_worker=6))
    assert loader_workers(gpu) == 5 and loader_workers(gpu, cpus=1) == 0
    fixed = dataclasses.replace(gpu, train=dataclasses.replace(gpu.train, loader_workers=3))
    assert loader_workers(fixed, cpus=1) == 3


def test_epoch_batches_follow_the_shard_in_a_seeded_order():
    for world in (1, 2):
        for rank in range(world):
            batches = epoch_batches(TRAIN, TRAIN, 7, rank, world, 0, 3, 2)
            indices = [item.index for batch in batches for item in batch]
            assert sorted(indices) == sorted(epoch_shard(7, rank, world, 0, 3).tolist())
            assert [len(b) for b in batches] == [2] * (len(indices) // 2) + \
                [1] * (len(indices) % 2)
            keys = [item.key for batch in batches for item in batch]
            assert keys == [(0, 3, 3, position) for position in range(len(indices))]

    def order(epoch: int) -> list[int]:
        return [item.index for item in epoch_batches(TRAIN, TRAIN, 7, 0, 1, 0, epoch, 7)[0]]

    assert order(3) == order(3) and order(3) != order(4)  # seeded by the epoch


@pytest.mark.parametrize("recipe", ["ours", "official"])
def test_loader_workers_prepare_the_samples_of_this_process(cache, recipe):
    params = params_for(cache, cache / "unused")
    params = dataclasses.replace(params, model=dataclasses.replace(params.model, recipe=recipe))
    if recipe == "official":
        params = official_training(params)  # as fit prepares: thing prompts, official targets
    train_set = SceneSet.listed(params.train.cache, params.train.train_scenes)
    val_set = SceneSet.listed(params.train.cache, params.train.val_scenes)
    plan = [*training_batches(params, len(train_set), 0, 1, 0),
            *training_batches(params, len(train_set), 0, 1, 1),
            *validation_batches(params, len(val_set), 0, 1), *metric_batches(len(val_set))]
    prepare = preparation(params)
    sets = {TRAIN: train_set, VALIDATION: val_set}
    # in this process, by hand: each item's scene read from the cache and prepared
    expected = [[prepare(read_scene(cache / "cache" / sets[item.split].ids[item.index]), item)
                 for item in batch] for batch in plan]
    for workers in (0, 2):
        stream = SceneStream(sets, prepare, workers)
        for _ in range(2):  # persistent workers: the same plan again gives the same samples
            streamed = list(stream.batches(plan))
            assert [len(b) for b in streamed] == [len(b) for b in expected]
            for batch, reference in zip(streamed, expected):
                for example, known in zip(batch, reference):
                    assert example.sample.scene.scene_id == known.sample.scene.scene_id
                    for got, want in zip(arrays(example), arrays(known), strict=True):
                        np.testing.assert_array_equal(got, want)
                    assert not isinstance(example.sample.scene.colors, np.memmap)
        stream.close()
    # augmentation differs between epochs: a scene's two training samples are not the same
    first = {i.index: s for b, p in zip(expected[:2], plan[:2]) for s, i in zip(b, p)}
    second = {i.index: s for b, p in zip(expected[2:4], plan[2:4]) for s, i in zip(b, p)}
    assert not np.allclose(first[0].sample.scene.coords, second[0].sample.scene.coords)
    assert all(example.targets is not None for batch in expected[:-1] for example in batch)
    assert expected[-1][0].targets is None  # the metrics' sample: predictions, no losses


@pytest.fixture(scope="module")
def in_process(cache, tmp_path_factory):
    """Two epochs with the samples prepared in the training process."""
    out = tmp_path_factory.mktemp("in_process")
    return train(params_for(cache, out, loader_workers=0), progress=False).history


def losses(history: list[dict]) -> list[float]:
    """Each epoch's training and validation loss."""
    return [record[key] for record in history for key in ("train_total", "val_total")]


def test_loader_workers_do_not_change_the_run(cache, in_process, tmp_path):
    streamed = train(params_for(cache, tmp_path, loader_workers=2), progress=False).history
    assert losses(streamed) == pytest.approx(losses(in_process), rel=1e-6)
    assert len({record["train_total"] for record in in_process}) == 2  # two different epochs


def test_resume_with_loader_workers_repeats_the_run(cache, in_process, tmp_path, monkeypatch):
    resumed = interrupted_then_resumed(monkeypatch, params_for(cache, tmp_path, loader_workers=2),
                                       None, epoch=1)
    assert [record["epoch"] for record in resumed.history] == [0, 1]
    assert losses(resumed.history) == pytest.approx(losses(in_process), rel=1e-6)


def scenes_held() -> int:
    """Scenes of this test's cache alive in this process."""
    gc.collect()
    return sum(type(o) is Scene and o.scene_id in IDS for o in gc.get_objects())


@pytest.mark.parametrize("workers", [0, 1])
def test_training_holds_the_batch_in_flight_not_the_dataset(cache, tmp_path, monkeypatch,
                                                             workers):
    params = params_for(cache, tmp_path, loader_workers=workers, epochs=1)
    held = {"step": [], "epoch": []}
    real_forward, real_epoch = train_module.forward_losses, train_module.run_epoch

    def forward(model, criterion, examples, *args):
        held["step"].append((scenes_held(), len(examples)))
        return real_forward(model, criterion, examples, *args)

    def run_epoch(*args):
        result = real_epoch(*args)
        held["epoch"].append(scenes_held())
        return result

    monkeypatch.setattr(train_module, "forward_losses", forward)
    monkeypatch.setattr(train_module, "run_epoch", run_epoch)
    train(params, progress=False)
    # training batches of 2 + 1 scenes, then the validation scene
    assert [batch for _, batch in held["step"]] == [2, 1, 1]
    assert [count for count, _ in held["step"]] == [2, 1, 1]  # the batch's scenes alone
    assert held["epoch"] == [0]
