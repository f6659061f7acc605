"""A prepared batch handed from a loader worker to the training process in one shared-memory block.

Sent as it is, a batch of two ScanNet-sized rooms is ~18 MB of numpy arrays pickled through the
worker's pipe and read back by the training process, plus one file descriptor per target
tensor: 30-35 ms of the training process's time per batch, whatever the number of workers.
`pack` pickles the batch with its arrays and tensors out of band (pickle protocol 5), copies
their bytes into one block of shared memory and keeps the small pickle; `unpack`, in the
training process, rebuilds every array and tensor as a view of that block, so receiving a
batch costs one file descriptor and a pickle of its small objects. The block is freed when the
last of its arrays is. A tensor shares memory with nothing but its block (views of one storage
arrive as separate tensors); a tensor that requires grad, is sparse or has a dtype numpy lacks
travels in the pickle. The block lives in /dev/shm (torch's shared memory): a batch that would
not fit in what is free there is refused with what to change, rather than killing the worker
with a bus error.
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

ALIGN = 64  # bytes: every array of a block starts on a cache line
SHARED_MEMORY = "/dev/shm"


class SharedMemoryFull(RuntimeError):
    """A batch's block does not fit in the shared memory left."""


def shared_memory_free() -> int:
    """Bytes free in the shared-memory filesystem."""
    stats = os.statvfs(SHARED_MEMORY)
    return stats.f_bavail * stats.f_frsize


class OutOfBand(pickle.Pickler):
    """Protocol 5 with a CPU tensor pickled as the numpy array it views, so that its bytes
    go out of band like an array's."""

    def reducer_override(self, obj: Any):
        if isinstance(obj, torch.Tensor) and obj.device.type == "cpu" and not obj.requires_grad:
            try:
                return torch.from_numpy, (obj.numpy(),)
            except (TypeError, RuntimeError):  # a dtype numpy lacks (bfloat16), a sparse tensor
                pass
        return NotImplemented


@dataclass(frozen=True)
class Parcel:
    """A packed value: its pickle without its buffers, the shared block holding them, and each
    buffer's (start, end) in the block."""

    pickled: bytes
    block: torch.Tensor
    spans: tuple[tuple[int, int], ...]


def pack(value: Any) -> Parcel:
    """`value` as a `Parcel` (what runs in the loader worker)."""
    buffers: list[pickle.PickleBuffer] = []
    stream = io.BytesIO()
    OutOfBand(stream, protocol=5, buffer_callback=buffers.append).dump(value)
    raws = [buffer.raw() for buffer in buffers]
    starts = np.cumsum([0] + [-(-raw.nbytes // ALIGN) * ALIGN for raw in raws])
    free = shared_memory_free()
    if starts[-1] > free:
        raise SharedMemoryFull(
            f"a prepared batch needs {starts[-1] / 2**20:,.2f} MB of shared memory and "
            f"{SHARED_MEMORY} has {free / 2**20:,.2f} MB free: give the machine more (in Docker "
            "`--shm-size`, e.g. 8g), or fewer loader workers (`train.loader_workers`; each "
            "keeps two batches ahead) or a smaller `train.batch_size`")
    block = torch.empty(int(starts[-1]), dtype=torch.uint8).share_memory_()
    target = block.numpy()
    for start, raw in zip(starts, raws):
        target[start:start + raw.nbytes] = np.frombuffer(raw, dtype=np.uint8)
    spans = tuple((int(start), int(start) + raw.nbytes) for start, raw in zip(starts, raws))
    return Parcel(stream.getvalue(), block, spans)


def unpack(parcel: Parcel) -> Any:
    """The value `parcel` packed, its arrays and tensors views of the parcel's block (what runs
    in the training process)."""
    memory = memoryview(parcel.block.numpy())
    return pickle.loads(parcel.pickled, buffers=[memory[start:end] for start, end in parcel.spans])
