"""The shared-memory handover of a prepared batch: the values arrive unchanged, their arrays and
tensors in the one shared block rather than in the pickle, and they outlive the parcel."""

from __future__ import annotations

import dataclasses
import gc
import os
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from scannet_files import described_scenes
from uniseg3d.config import Params
from uniseg3d.datasets import handover
from uniseg3d.datasets.cache import read_scene, write_scene
from uniseg3d.datasets.handover import ALIGN, pack, unpack
from uniseg3d.datasets.streaming import Item
from uniseg3d.pipelines.samples import TRAIN, preparation


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Two training examples (sample and targets) prepared from ScanNet-layout scenes read back
    from a scene cache."""
    root = tmp_path_factory.mktemp("handover")
    (root / "raw").mkdir()
    scenes = described_scenes(root / "raw", ((2, "the chair next to the table"),), count=2)
    prepare = preparation(Params())
    examples = []
    for index, scene in enumerate(scenes):
        write_scene(scene, root / "cache", {})
        cached = read_scene(root / "cache" / scene.scene_id)
        examples.append(prepare(cached, Item(TRAIN, index, TRAIN, (0, 0, 3, index))))
    return examples


def leaves(example) -> list:
    """Every array and tensor of an example, in a fixed order."""
    sample, scene, targets = example.sample, example.sample.scene, example.targets
    return [*(getattr(scene, f.name) for f in dataclasses.fields(scene)
              if isinstance(getattr(scene, f.name), np.ndarray)),
            sample.click_points, sample.click_instances, sample.text_instances,
            *(getattr(targets, f.name) for f in dataclasses.fields(targets))]


def inside(value, block: torch.Tensor) -> bool:
    """Whether `value`'s memory lies within `block`'s."""
    start = block.data_ptr()
    if isinstance(value, torch.Tensor):
        first = value.data_ptr()
        last = first + value.untyped_storage().nbytes()
    else:
        first = value.__array_interface__["data"][0]
        last = first + value.nbytes
    return start <= first and last <= start + block.numel()


def assert_same(got: list, want: list) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert type(a) is type(b)
        if isinstance(b, torch.Tensor):
            assert a.dtype == b.dtype and torch.equal(a, b)
        else:
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)


def test_a_batch_arrives_unchanged_in_its_shared_block(batch):
    parcel = pack(batch)
    got = unpack(parcel)
    for example, known in zip(got, batch, strict=True):
        assert example.sample.texts == known.sample.texts
        assert example.sample.scene.referring == known.sample.scene.referring
        assert_same(leaves(example), leaves(known))
        assert all(inside(leaf, parcel.block) for leaf in leaves(example))
        assert all(leaf.flags.writeable for leaf in leaves(example)
                   if isinstance(leaf, np.ndarray))
    assert parcel.block.is_shared()
    spans = np.array(parcel.spans)
    assert (spans[:, 0] % ALIGN == 0).all() and (spans[1:, 0] >= spans[:-1, 1]).all()
    # the bytes travel in the block: its pickle is what is left, ids, texts, shapes
    data = sum(leaf.nbytes if isinstance(leaf, np.ndarray) else leaf.numel() * leaf.element_size()
               for example in batch for leaf in leaves(example))
    assert int(spans[-1, 1]) >= data
    assert len(parcel.pickled) < 0.05 * data < len(pickle.dumps(batch))


def test_the_values_outlive_the_parcel(batch):
    got = unpack(pack(batch))
    gc.collect()
    assert_same(leaves(got[1]), leaves(batch[1]))


def test_what_numpy_cannot_view_travels_in_the_pickle():
    weights = torch.arange(6, dtype=torch.float32).reshape(2, 3).requires_grad_()
    half = torch.linspace(0, 1, 5, dtype=torch.bfloat16)
    strided = np.arange(20, dtype=np.int64).reshape(4, 5)[:, ::2]  # neither C nor F contiguous
    fortran = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    sparse = torch.eye(3).to_sparse()
    got = unpack(pack({"weights": weights, "half": half, "strided": strided,
                       "fortran": fortran, "sparse": sparse, "none": None}))
    assert got["sparse"].is_sparse and torch.equal(got["sparse"].to_dense(), torch.eye(3))
    assert got["weights"].requires_grad and torch.equal(got["weights"], weights)
    assert got["half"].dtype == torch.bfloat16 and torch.equal(got["half"], half)
    np.testing.assert_array_equal(got["strided"], strided)
    np.testing.assert_array_equal(got["fortran"], fortran)
    assert got["fortran"].flags.f_contiguous and got["none"] is None
    assert unpack(pack(["no arrays"])) == ["no arrays"]


def test_a_loader_worker_hands_its_batch_over(batch):
    """Through a real worker process: the DataLoader's queue carries the block's file
    descriptor, and the batch arrives as the worker made it."""
    loader = DataLoader([batch], batch_size=None, num_workers=1, collate_fn=pack)
    (parcel,) = list(loader)
    assert parcel.block.is_shared()
    for example, known in zip(unpack(parcel), batch, strict=True):
        assert_same(leaves(example), leaves(known))


def test_a_batch_larger_than_the_free_shared_memory_is_refused(batch, monkeypatch):
    needed = pack(batch).spans[-1][1]
    monkeypatch.setattr(handover, "shared_memory_free", lambda: needed - 1)
    refusal = r"needs [0-9.]+ MB .* /dev/shm has [0-9.]+ MB free.*--shm-size"
    with pytest.raises(handover.SharedMemoryFull, match=refusal):
        pack(batch)
    monkeypatch.setattr(handover, "shared_memory_free", lambda: needed + ALIGN)
    assert len(unpack(pack(batch))) == len(batch)


def test_the_free_shared_memory_is_that_of_dev_shm():
    stats = os.statvfs("/dev/shm")
    assert abs(handover.shared_memory_free() - stats.f_bavail * stats.f_frsize) < 2**26
