"""The official recipe's rules on cases small enough to compute by hand: matrix NMS (linear
kernel), the prototype classifier, mask pooling, the interaction mask, MinkowskiEngine-style
voxelisation on the official grid, and the instance / semantic / panoptic rules on a toy
scene."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from uniseg3d.model.backbone import OFFICIAL_GRID, OURS_GRID, point_features, voxelize
from uniseg3d.model.official.decoder import (LOGIT_SCALE, OfficialPredictions,
                                             interaction_mask, mask_pool, prototype_logits)
from uniseg3d.model.official.postprocess import (click_objects_masks, instances, matrix_nms,
                                                 panoptic, prompt_masks, semantic_labels)

WALL, FLOOR, CHAIR, TABLE, DOOR = 0, 1, 4, 6, 7


def test_matrix_nms_linear_kernel_on_three_overlapping_masks():
    # A = {0,1,2}, B = {0,1}, C = {2,3}: IoU(A,B) = 2/3, IoU(A,C) = 1/4, IoU(B,C) = 0.
    masks = torch.tensor([[1., 1, 1, 0], [1, 1, 0, 0], [0, 0, 1, 1]])
    scores = torch.tensor([0.8, 0.9, 0.7])[[1, 0, 2]]  # A 0.9, B 0.8, C 0.7
    same = torch.zeros(3, dtype=torch.long)
    decayed, order = matrix_nms(masks, same, scores)
    # B: min(1 - 2/3, (1 - 0)/(1 - 2/3), (1 - 0)/(1 - 1/4)) = 1/3; C: min(1 - 1/4, 3, 4/3) = 3/4
    assert order.tolist() == [0, 2, 1]
    torch.testing.assert_close(decayed, torch.tensor([0.9, 0.7 * 3 / 4, 0.8 / 3]))
    # another class for B: nothing decays B, and C only by A
    decayed, order = matrix_nms(masks, torch.tensor([0, 1, 0]), scores)
    assert order.tolist() == [0, 1, 2]
    torch.testing.assert_close(decayed, torch.tensor([0.9, 0.8, 0.7 * 3 / 4]))
    empty, kept = matrix_nms(masks[:0], same[:0], scores[:0])
    assert len(empty) == len(kept) == 0


def test_prototype_classifier_takes_the_best_prototype_and_a_zero_background():
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    prototypes = torch.tensor([[[0.0, 1.0], [0.6, 0.8]],  # class 0
                               [[-1.0, 0.0], [0.8, -0.6]]])  # class 1
    expected = torch.tensor([[0.6, 0.8, 0.0], [1.0, 0.0, 0.0]]) * LOGIT_SCALE
    torch.testing.assert_close(prototype_logits(embeddings, prototypes), expected)
    assert LOGIT_SCALE == pytest.approx(math.exp(4.6052), rel=1e-6)  # ~100.003
    # one prototype per class given as (C, D)
    torch.testing.assert_close(prototype_logits(embeddings, prototypes[:, 1]),
                               torch.tensor([[0.6, 0.8, 0], [0.8, -0.6, 0]]) * LOGIT_SCALE)


def test_mask_pooling_means_the_features_of_positive_logits():
    features = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], requires_grad=True)
    logits = torch.tensor([[1.0, -1.0, 2.0], [-1.0, -1.0, -1.0]], requires_grad=True)
    pooled = mask_pool(features, logits)
    torch.testing.assert_close(pooled, torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
    pooled.sum().backward()
    assert logits.grad is None  # no gradient through the mask
    torch.testing.assert_close(features.grad, torch.tensor([[0.5, 0.5], [0, 0], [0.5, 0.5]]))


def test_interaction_mask():
    blocked = interaction_mask(2, 3)
    expected = torch.tensor([[0, 0, 1, 1, 1],
                             [0, 0, 1, 1, 1],
                             [1, 1, 0, 1, 1],
                             [1, 1, 1, 0, 1],
                             [1, 1, 1, 1, 0]], dtype=torch.bool)
    assert torch.equal(blocked, expected)
    assert torch.equal(interaction_mask(3, 0), torch.zeros(3, 3, dtype=torch.bool))


def test_voxelisation_as_minkowski_collate_on_the_official_grid():
    coords = torch.tensor([[0.5, 0.5, 0.5], [0.9, 0.1, 0.2], [1.5, 0.5, 0.5], [3.2, 0.0, 0.99]])
    colors = torch.tensor([[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 0, 255]],
                          dtype=torch.uint8)
    features = point_features(coords, colors)
    voxels = voxelize([coords], [features], 1.0, OFFICIAL_GRID)
    # floor((xyz - min) / 1): min = (0.5, 0, 0.2) -> cells (0,0,0), (0,0,0), (1,0,0), (2,0,0)
    cells = voxels.indices[:, 1:].long()
    assert cells.tolist() == [[0, 0, 0], [1, 0, 0], [2, 0, 0]]
    assert voxels.point_to_voxel.tolist() == [0, 0, 1, 2]
    torch.testing.assert_close(voxels.features[0], features[:2].mean(0))  # unweighted average
    torch.testing.assert_close(voxels.features[0, :3], torch.zeros(3))  # black and white
    assert voxels.spatial_shape == [128, 128, 128]  # max(extent, 128), not padded
    big = torch.tensor([[0.0, 0.0, 0.0], [130.5, 2.0, 3.0]])
    assert voxelize([big], [point_features(big, colors[:2])], 1.0, OFFICIAL_GRID
                    ).spatial_shape == [131, 128, 128]
    assert voxelize([big], [point_features(big, colors[:2])], 1.0, OURS_GRID
                    ).spatial_shape == [160, 32, 32]


POINTS_PER_SUPERPOINT = 60


def one_hot(index: int, dim: int = 20) -> torch.Tensor:
    return F.one_hot(torch.tensor(index), dim).float()


@pytest.fixture
def toy_scene():
    """Six superpoints of 60 points, one generic query each. Query 2 covers superpoints 2-3
    (chair, IoU head 1.0); query 3 covers 3-4 (table, IoU head 0.9); the other masks are empty.
    Semantic embeddings: superpoints alternate wall / floor, except superpoint 5, whose
    semantic query prefers chair over floor."""
    prototypes = torch.eye(20)[:, None]  # (20, 1, 20): class c = the unit vector e_c
    masks = torch.full((6, 6), -5.0)
    masks[2, [2, 3]] = 5.0
    masks[3, [3, 4]] = 5.0
    classes = torch.stack([one_hot(DOOR)] * 6)
    classes[2], classes[3] = one_hot(CHAIR), one_hot(TABLE)
    semantic = torch.stack([one_hot(WALL if i % 2 == 0 else FLOOR) for i in range(6)])
    semantic[5] = F.normalize(0.8 * one_hot(CHAIR) + 0.6 * one_hot(FLOOR), dim=0)
    iou = torch.tensor([1.0, 1.0, 1.0, 0.9, 1.0, 1.0])
    pred = OfficialPredictions(masks, classes, semantic, torch.zeros(6, 4), iou)
    superpoints = torch.arange(6).repeat_interleave(POINTS_PER_SUPERPOINT)
    return pred, prototypes, superpoints


def test_instances_are_scored_filtered_and_labelled(toy_scene):
    pred, prototypes, superpoints = toy_scene
    found = instances(pred, prototypes[2:], superpoints)
    # scores: probability (~1) x mean sigmoid over the positive superpoints (sigmoid 5); the IoU
    # head is not used for instances
    top = found.scores[:2]
    np.testing.assert_allclose(top, [torch.sigmoid(torch.tensor(5.0)).item()] * 2, rtol=1e-5)
    assert sorted(found.labels[:2].tolist()) == [CHAIR - 2, TABLE - 2]
    assert (found.masks[:2].sum(1) == 2 * POINTS_PER_SUPERPOINT).all()
    # empty masks score 0 and are dropped; every kept mask has more than 100 points
    assert (found.scores > 0).all() and (found.masks.sum(1) > 100).all()
    with_iou = instances(pred, prototypes[2:], superpoints, 0.5, with_iou=True)
    assert len(with_iou.scores) == 2
    np.testing.assert_allclose(with_iou.scores, np.array([1.0, 0.9]) * top[0], rtol=1e-5)


def test_semantic_takes_each_superpoints_own_query(toy_scene):
    pred, prototypes, superpoints = toy_scene
    labels = semantic_labels(pred, prototypes, superpoints)
    expected = np.repeat([WALL, FLOOR, WALL, FLOOR, WALL, CHAIR], POINTS_PER_SUPERPOINT)
    assert np.array_equal(labels, expected)
    with pytest.raises(ValueError, match="one generic query per superpoint"):
        semantic_labels(pred.select(slice(0, 5)), prototypes, superpoints)


def test_panoptic_rules(toy_scene):
    pred, prototypes, superpoints = toy_scene
    classes, ids = panoptic(pred, prototypes, superpoints)
    per_superpoint = classes[::POINTS_PER_SUPERPOINT].tolist()
    # stuff from wall / floor only (superpoint 5: floor, though its semantic label is chair);
    # the chair (0.99) wins superpoint 3 from the table (0.89), painted first; the table keeps
    # 60 points (<= 100) and goes back to stuff
    assert per_superpoint == [WALL, FLOOR, CHAIR, CHAIR, WALL, FLOOR]
    assert ids[::POINTS_PER_SUPERPOINT].tolist() == [-1, -1, 0, 0, -1, -1]


def test_prompt_masks_threshold_at_0_4(toy_scene):
    pred, prototypes, superpoints = toy_scene
    pred.masks[0, 0] = torch.logit(torch.tensor(0.41))
    pred.masks[0, 1] = torch.logit(torch.tensor(0.39))
    prompts = prompt_masks(pred.select(slice(0, 3)), prototypes, superpoints)
    assert prompts.masks[0, 0] and not prompts.masks[0, POINTS_PER_SUPERPOINT]
    assert prompts.class_probs.shape == (3, 20)
    assert (prompts.class_probs[:, :2] == 0).all()  # the thing classifier has no stuff
    assert prompts.class_probs[2].argmax() == CHAIR
    np.testing.assert_allclose(prompts.iou, [1.0, 1.0, 1.0])


def test_clicked_objects_at_the_official_threshold(toy_scene):
    # queries 0 and 2 click one object (superpoints 0 and 2), query 3 is a negative click (on
    # superpoint 4); the official threshold 0.4 is the background's floor
    pred, prototypes, superpoints = toy_scene
    pred.masks[0, 0] = torch.logit(torch.tensor(0.41))
    pred.masks[0, 1] = torch.logit(torch.tensor(0.39))
    clicks = pred.select(torch.tensor([0, 2, 3]))
    objects = click_objects_masks(clicks, prototypes, torch.tensor([0, 0, -1]),
                                  torch.tensor([0, 2, 4]), superpoints)
    per_superpoint = objects.masks[0, ::POINTS_PER_SUPERPOINT].tolist()
    # superpoint 0 (0.41 > 0.4), 2 (query 2's 5.0), not 1 (0.39), not 3 (query 2's 5.0 ties
    # the negative click's: an object must beat the background), not 4 (clicked negative)
    assert per_superpoint == [True, False, True, False, False, False]
    assert objects.labels[::POINTS_PER_SUPERPOINT].tolist() == [0, -1, 0, -1, -1, -1]
    # class probabilities: the mean of the object's two clicks (door and chair)
    np.testing.assert_allclose(objects.class_probs[0, [DOOR, CHAIR]], [0.5, 0.5], atol=1e-3)
