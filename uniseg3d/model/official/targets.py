"""Training targets of one scene as UniSeg3D's released code builds them
(`AddSuperPointAnnotations(merge_ov=True)`, then the model's query selection).

- Instances: the thing instances only (points of the stuff classes wall and floor, and unlabelled
  points, belong to none), each a superpoint mask of the superpoints more than half of whose
  points it holds, labelled with its ScanNet20 class minus 2 (the 18 thing classes). The code
  takes the class of an instance's first point; we take its majority class, which is the same
  wherever an instance carries one class (ScanNet's and the synthetic rooms' annotations).
- Novel masks: SAM3D pseudo masks (`sam3d_pseudo_sp_masks` of the data-info pkl) when given.
- Semantic: per superpoint, the row of the 21 one-hot rows (20 classes, then unlabelled) that
  holds more than half of its points, by `argmax`; a superpoint that no row holds by majority
  gets class 0 (the argmax of an all-false column, as in the code), and unlabelled (20) is the
  loss's ignore index.
- Query masks: which generic query seeds inside which instance (the sparse matcher's rule).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from uniseg3d.datasets.loader import Sample
from uniseg3d.model.official.postprocess import THINGS_FROM
from uniseg3d.model.targets import instance_classes, superpoint_majority

UNLABELLED = 20  # the semantic loss's ignore index: ScanNet20's classes, then `unlabelled`


@dataclass
class OfficialTargets:
    masks: torch.Tensor  # (I, M) float 0/1 superpoint masks of the thing instances
    labels: torch.Tensor  # (I,) thing class, 0..17
    novel_masks: torch.Tensor  # (P, M) float 0/1 SAM3D pseudo masks (P may be 0)
    semantic: torch.Tensor  # (M,) class of each superpoint, 0..19, UNLABELLED = ignored
    click_rows: torch.Tensor  # (Kc,) instance row of each click query
    text_rows: torch.Tensor  # (Kt,) instance row of each text query

    def query_masks(self, generic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(I, G) and (P, G) bool: whether generic query g (seeded at superpoint
        `generic[g]`) lies inside each instance and each pseudo mask."""
        return self.masks[:, generic] > 0, self.novel_masks[:, generic] > 0


def official_semantic(semantic20: np.ndarray, superpoints: np.ndarray) -> np.ndarray:
    """(M,) the code's superpoint semantic target (see the module docstring)."""
    classes = np.where(semantic20 >= 0, semantic20, UNLABELLED)
    return superpoint_majority(classes, superpoints, UNLABELLED + 1).argmax(0)


def thing_instances(sample: Sample) -> np.ndarray:
    """Ids of the scene's instances whose class is a thing class (the code's instances)."""
    scene = sample.scene
    classes = instance_classes(scene.instance, scene.semantic20, scene.num_instances)
    return np.flatnonzero(classes >= THINGS_FROM)


def official_targets(sample: Sample, novel_masks: np.ndarray | None = None,
                     device: str | torch.device = "cpu") -> OfficialTargets:
    """The targets of `sample`, whose clicks and descriptions name thing instances;
    `novel_masks` (P, M) bool are the scene's SAM3D pseudo masks, if any."""
    scene = sample.scene
    classes = instance_classes(scene.instance, scene.semantic20, scene.num_instances)
    things = np.flatnonzero(classes >= THINGS_FROM)  # as thing_instances, classes kept
    row = np.full(scene.num_instances, -1, dtype=np.int64)
    row[things] = np.arange(len(things))
    instance = np.where(np.isin(scene.instance, things), scene.instance, -1)
    masks = superpoint_majority(instance, scene.superpoints, scene.num_instances)[things]
    num_sp = int(scene.superpoints.max()) + 1
    if novel_masks is None:
        novel_masks = np.zeros((0, num_sp), dtype=bool)
    if novel_masks.ndim != 2 or novel_masks.shape[1] != num_sp:
        raise ValueError(f"{scene.scene_id}: SAM3D pseudo masks of shape {novel_masks.shape}, "
                         f"expected (masks, {num_sp} superpoints)")
    for name, ids in (("click", sample.click_instances), ("text", sample.text_instances)):
        if (row[ids] < 0).any():
            raise ValueError(f"{scene.scene_id}: a {name} prompt names an instance that is not "
                             "a thing instance (the official losses have no target for it)")
    tensor = lambda a, dtype=torch.long: torch.as_tensor(np.asarray(a), dtype=dtype, device=device)
    return OfficialTargets(tensor(masks, torch.float32), tensor(classes[things] - THINGS_FROM),
                           tensor(novel_masks, torch.float32),
                           tensor(official_semantic(scene.semantic20, scene.superpoints)),
                           tensor(row[sample.click_instances]), tensor(row[sample.text_instances]))
