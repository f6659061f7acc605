"""Training targets of one scene at superpoint level: object and stuff segments, prompt targets;
and the class prior of a training split's semantic targets."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from uniseg3d.datasets.classes import STUFF_CLASSES20, scannet20
from uniseg3d.datasets.scene import Scene

STUFF_IDS = tuple(scannet20().names.index(name) for name in STUFF_CLASSES20)


@dataclass
class SceneTargets:
    masks: torch.Tensor  # (S, M) float 0/1 superpoint masks; rows: instances, then stuff classes
    labels: torch.Tensor  # (S,) ScanNet20 class of each segment, -1 where it has none
    generic: torch.Tensor  # (G,) rows that generic queries must find: things and stuff
    click_segments: torch.Tensor  # (Kc,) target row of each click query
    text_segments: torch.Tensor  # (Kt,) target row of each text query
    semantic: torch.Tensor  # (M,) majority ScanNet20 class of each superpoint, -1 where none


def superpoint_majority(point_values: np.ndarray, superpoints: np.ndarray, num_values: int
                        ) -> np.ndarray:
    """(num_values, M) bool: superpoints more than half of whose points carry each value
    (values < 0 are ignored)."""
    num_sp = int(superpoints.max()) + 1
    size = np.bincount(superpoints, minlength=num_sp)
    keep = point_values >= 0
    counts = np.zeros((num_values, num_sp), dtype=np.int64)
    np.add.at(counts, (point_values[keep], superpoints[keep]), 1)
    return counts * 2 > size[None, :]


def superpoint_classes(semantic20: np.ndarray, superpoints: np.ndarray) -> np.ndarray:
    """(M,) the ScanNet20 class of more than half of each superpoint's points, else -1: the
    semantic head's target."""
    classes = superpoint_majority(semantic20, superpoints, len(scannet20().names))
    return np.where(classes.any(0), classes.argmax(0), -1)


def semantic_log_prior(scenes: Iterable[Scene]) -> np.ndarray:
    """(C,) log of each ScanNet20 class's share of the scenes' labelled superpoints (the
    semantic head's training targets), counts smoothed by one so that no class is impossible."""
    counts = np.ones(len(scannet20().names))
    for scene in scenes:
        labels = superpoint_classes(scene.semantic20, scene.superpoints)
        counts += np.bincount(labels[labels >= 0], minlength=len(counts))
    return np.log(counts / counts.sum())


def instance_classes(instance: np.ndarray, semantic: np.ndarray, num_instances: int
                     ) -> np.ndarray:
    """Majority semantic class of each instance's points (-1 where none is labelled; ties go
    to the lower class)."""
    keep = (instance >= 0) & (semantic >= 0)
    if not keep.any():
        return np.full(num_instances, -1, dtype=np.int64)
    num_classes = int(semantic[keep].max()) + 1
    counts = np.bincount(instance[keep] * num_classes + semantic[keep],
                         minlength=num_instances * num_classes).reshape(num_instances, -1)
    return np.where(counts.any(1), counts.argmax(1), -1)


def build_targets(superpoints: np.ndarray, semantic20: np.ndarray, instance: np.ndarray,
                  num_instances: int, click_instances: np.ndarray, text_instances: np.ndarray,
                  device: str | torch.device = "cpu") -> SceneTargets:
    """Segments = every instance, then one segment per stuff class present (all its points);
    plus the majority class of every superpoint."""
    inst_masks = superpoint_majority(instance, superpoints, num_instances)
    stuff_points = np.where(np.isin(semantic20, STUFF_IDS), semantic20, -1)
    stuff_masks = superpoint_majority(stuff_points, superpoints,
                                      max(STUFF_IDS) + 1)[list(STUFF_IDS)]
    present = np.array([(semantic20 == c).any() for c in STUFF_IDS], dtype=bool)
    labels = np.concatenate([instance_classes(instance, semantic20, num_instances),
                             np.array(STUFF_IDS)[present]])
    masks = np.concatenate([inst_masks, stuff_masks[present]])
    is_thing = (labels >= 0) & ~np.isin(labels, STUFF_IDS)
    is_generic = is_thing | (np.arange(len(labels)) >= num_instances)
    is_generic &= masks.any(1)
    semantic = superpoint_classes(semantic20, superpoints)
    tensor = lambda a, dtype=torch.long: torch.as_tensor(np.asarray(a), dtype=dtype, device=device)
    return SceneTargets(tensor(masks, torch.float32), tensor(labels),
                        tensor(np.flatnonzero(is_generic)), tensor(click_instances),
                        tensor(text_instances), tensor(semantic))
