"""The `Scene` data model: the one currency between readers, the cache, the loader and metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IGNORE_INDEX = -1
"""Label value for points without a class (semantic) or without an object (instance)."""


class InputError(ValueError):
    """A raw or cached input file does not hold what its format promises.

    The message always names the file, the field and what was expected, so a user can fix the
    file without reading our code.
    """

    def __init__(self, path: object, field_name: str, expected: str, found: str | None = None):
        self.path = str(path)
        self.field = field_name
        self.expected = expected
        self.found = found
        message = f"{self.path}: field '{field_name}': expected {expected}"
        if found is not None:
            message += f", found {found}"
        super().__init__(message)

    def __reduce__(self):  # keeps the error intact across process-pool boundaries
        return (type(self), (self.path, self.field, self.expected, self.found))


@dataclass(frozen=True)
class Description:
    """One referring expression (ScanRefer record) pointing at one object of a scene."""

    object_id: int
    text: str
    ann_id: int


@dataclass(frozen=True)
class Scene:
    """A labelled point cloud (mesh vertices) with its superpoints and referring expressions.

    Instances are numbered 0..K-1 in annotation order; `instance_object_ids[k]` is the object id
    the raw annotation used (ScanRefer's `object_id`, Replica's `object_id`) and
    `instance_names[k]` its free-text category.
    """

    scene_id: str
    coords: np.ndarray  # (N, 3) float32
    colors: np.ndarray  # (N, 3) uint8
    normals: np.ndarray  # (N, 3) float32, unit length (zero where a vertex has no face)
    superpoints: np.ndarray  # (N,) int64, contiguous 0..M-1
    semantic20: np.ndarray  # (N,) int64, 0..19 or IGNORE_INDEX
    semantic200: np.ndarray  # (N,) int64, 0..199 or IGNORE_INDEX
    instance: np.ndarray  # (N,) int64, 0..K-1 or IGNORE_INDEX
    instance_object_ids: np.ndarray  # (K,) int64
    instance_names: tuple[str, ...]  # (K,) raw category / class name per instance
    referring: tuple[Description, ...] = field(default=())

    @property
    def num_points(self) -> int:
        return int(self.coords.shape[0])

    @property
    def num_superpoints(self) -> int:
        return int(self.superpoints.max()) + 1 if self.superpoints.size else 0

    @property
    def num_instances(self) -> int:
        return int(self.instance_object_ids.shape[0])

    def instance_index(self, object_id: int) -> int:
        """Position of the instance whose raw object id is `object_id` (KeyError if absent)."""
        hits = np.flatnonzero(self.instance_object_ids == object_id)
        if hits.size == 0:
            raise KeyError(object_id)
        return int(hits[0])
