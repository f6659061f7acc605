"""UniSeg3D's post-processing of one forward (`predict_by_feat_*` of the released code, with
the released test config: topk_insts 600, obj_normalization, matrix NMS with the linear kernel,
sp_score_thr 0.4, npoint_thr 100, inst_score_thr 0, pan_score_thr 0.5, stuff classes wall and
floor, the IoU head in the panoptic scores only).

Instances: the top 600 (query, class) pairs by softmax class probability (the background column
dropped); each score times the mean sigmoid over the query's positive-logit superpoints; matrix
NMS on the soft superpoint masks (linear kernel); point masks = sigmoid > 0.4; kept when the
score is > the threshold and the mask has more than 100 points.
Semantic: query i is superpoint i at test, so a superpoint takes the argmax of its own query's
semantic logits over the 20 classes.
Panoptic: every point starts with the better of wall / floor from the semantic logits; the
instances of score > 0.5 (scores also times the predicted IoU) are painted in ascending score
order, so the best-scoring mask covering a point wins; an instance left with 100 points or
fewer goes back to stuff.
Click and text prompts: their own masks at sigmoid > 0.4 (a description's; a clicked object's
from its click queries, `model.click_objects`).
"""

from __future__ import annotations

import numpy as np
import torch

from uniseg3d.model.official.decoder import OfficialPredictions
from uniseg3d.model.postprocess import (Instances, MaskRule, PromptMasks, click_prompt_masks,
                                        to_points)

TOP_K = 600
MASK_THRESHOLD = 0.4  # sp_score_thr
RELEASED_PROMPT_MASKS = MaskRule(sigmoid=True, threshold=MASK_THRESHOLD)  # sigmoid > 0.4
MIN_POINTS = 100  # npoint_thr: masks of more points are kept
PANOPTIC_SCORE = 0.5  # pan_score_thr
STUFF = (0, 1)  # wall, floor
THINGS_FROM = len(STUFF)  # the instance classifier scores ScanNet20 classes 2..19


def matrix_nms(masks: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Matrix NMS (SOLOv2) with the linear kernel on soft masks (K, M): returns the decayed
    scores in descending order and the input rows they belong to.

    Mask j's score is multiplied by the minimum over the masks i ranked above it of
    (1 - IoU(i, j) [same class]) / (1 - the largest same-class IoU of i with a mask above i)."""
    if len(scores) == 0:
        return scores, torch.zeros(0, dtype=torch.long, device=scores.device)
    scores, order = scores.sort(descending=True)
    masks, labels = masks[order].float(), labels[order]
    area = masks.sum(1)
    inter = masks @ masks.T
    iou = (inter / (area[:, None] + area[None] - inter)).triu(diagonal=1)
    same = (labels[:, None] == labels[None]).triu(diagonal=1)
    decay = iou * same
    compensate = decay.max(0).values[:, None]  # row i: i's largest IoU with a higher mask
    coefficient = ((1 - decay) / (1 - compensate)).min(0).values
    scores, resort = (scores * coefficient).sort(descending=True)
    return scores, order[resort]


def ranked_instances(probs: torch.Tensor, mask_logits: torch.Tensor, superpoints: torch.Tensor,
                     score_threshold: float = 0.0, top_k: int = TOP_K
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The released instance rules on (Q, C) class probabilities (times the IoU where the code
    multiplies it) and (Q, M) superpoint mask logits: (masks (K, M) bool, labels (K,) class
    columns, scores (K,), queries (K,) rows), best first. Thresholding commutes with indexing
    by superpoint, so masks are binarised and their points counted per superpoint (the
    official code does both on (K, N) point masks)."""
    classes = probs.shape[1]
    scores, index = probs.flatten().topk(min(top_k, probs.numel()), sorted=False)
    labels, queries = index % classes, index // classes
    logits = mask_logits[queries]
    soft = logits.sigmoid()
    positive = logits > 0
    scores = scores * (soft * positive).sum(1) / (positive.sum(1) + 1e-6)
    scores, kept = matrix_nms(soft, labels, scores)
    masks = soft[kept] > MASK_THRESHOLD
    sizes = torch.bincount(superpoints, minlength=masks.shape[1])
    keep = (scores > score_threshold) & ((masks.long() * sizes).sum(1) > MIN_POINTS)
    return masks[keep], labels[kept][keep], scores[keep], queries[kept][keep]


def superpoint_instances(pred: OfficialPredictions, prototypes: torch.Tensor,
                         superpoints: torch.Tensor, score_threshold: float = 0.0,
                         with_iou: bool = False, top_k: int = TOP_K
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(masks (K, M) bool over superpoints, labels (K,) into `prototypes`, scores (K,)), best
    first, of the official model's queries."""
    probs = pred.class_logits(prototypes).softmax(-1)[:, :-1]
    if with_iou:
        probs = probs * pred.iou[:, None]
    return ranked_instances(probs, pred.masks, superpoints, score_threshold, top_k)[:3]


def instances(pred: OfficialPredictions, prototypes: torch.Tensor, superpoints: torch.Tensor,
              score_threshold: float = 0.0, with_iou: bool = False, top_k: int = TOP_K
              ) -> Instances:
    """Scored point masks; labels index `prototypes` (C, P, D) or (C, D)."""
    masks, labels, scores = superpoint_instances(pred, prototypes, superpoints,
                                                 score_threshold, with_iou, top_k)
    return Instances(to_points(masks, superpoints), labels.cpu().numpy(), scores.cpu().numpy())


def semantic_labels(pred: OfficialPredictions, prototypes: torch.Tensor,
                    superpoints: torch.Tensor) -> np.ndarray:
    """(N,) ScanNet20 class per point; `pred` holds one generic query per superpoint."""
    if len(pred.masks) != pred.masks.shape[1]:
        raise ValueError("official semantic labels need one generic query per superpoint")
    logits = pred.semantic_logits(prototypes)[:, :len(prototypes)]
    return to_points(logits.argmax(1), superpoints)


def stuff_of(semantic_logits: torch.Tensor) -> torch.Tensor:
    """(M,) the better of wall and floor per superpoint, from (M, >= 2) semantic logits."""
    return torch.as_tensor(STUFF, device=semantic_logits.device)[
        semantic_logits[:, list(STUFF)].argmax(1)]


def paint_panoptic(stuff: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor,
                   superpoints: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(class, thing instance id or -1) per point: `stuff` (M,) everywhere, then the instance
    masks (K, M), best first, with their ScanNet20 `labels`, painted in ascending score order
    so that the best-scoring mask covering a superpoint wins; an instance left with
    `MIN_POINTS` points or fewer goes back to stuff."""
    count = len(labels)
    rank = torch.arange(count, 0, -1, device=masks.device)[:, None]  # best first: highest
    winner = torch.where(masks, rank, 0).max(0).values if count else stuff.new_zeros(len(stuff))
    winner = torch.where(winner > 0, count - winner, -1)  # the row in `masks`, -1 for none
    sizes = torch.bincount(superpoints, minlength=len(stuff))
    points = torch.zeros(count + 1, dtype=torch.long, device=sizes.device)
    points.index_add_(0, winner + 1, sizes)
    winner[(winner >= 0) & (points[winner + 1] <= MIN_POINTS)] = -1
    painted = winner >= 0
    classes = torch.where(painted, labels[winner.clamp_min(0)] if count else stuff, stuff)
    ids = torch.full_like(winner, -1)
    ids[painted] = torch.unique(winner[painted], return_inverse=True)[1]
    return to_points(classes, superpoints), to_points(ids, superpoints)


def panoptic(pred: OfficialPredictions, prototypes: torch.Tensor, superpoints: torch.Tensor
             ) -> tuple[np.ndarray, np.ndarray]:
    """(ScanNet20 class, thing instance id or -1) per point."""
    masks, labels, _ = superpoint_instances(pred, prototypes[THINGS_FROM:], superpoints,
                                            PANOPTIC_SCORE, with_iou=True)
    return paint_panoptic(stuff_of(pred.semantic_logits(prototypes)), masks,
                          labels + THINGS_FROM, superpoints)


def prompt_class_probs(pred: OfficialPredictions, prototypes: torch.Tensor) -> torch.Tensor:
    """(Q, 20) class probabilities of prompt queries over ScanNet20 (stuff columns 0, since the
    official instance classifier knows only the 18 thing classes)."""
    things = pred.class_logits(prototypes[THINGS_FROM:]).softmax(-1)[:, :-1]
    return torch.cat([things.new_zeros(len(things), THINGS_FROM), things], 1)


def prompt_masks(pred: OfficialPredictions, prototypes: torch.Tensor, superpoints: torch.Tensor
                 ) -> PromptMasks:
    """One mask per prompt query, with its class probabilities."""
    masks = to_points(RELEASED_PROMPT_MASKS.masks(pred.masks), superpoints)
    return PromptMasks(masks, prompt_class_probs(pred, prototypes).cpu().numpy(),
                       pred.iou.cpu().numpy())


def click_objects_masks(pred: OfficialPredictions, prototypes: torch.Tensor,
                        objects: torch.Tensor, click_superpoints: torch.Tensor,
                        superpoints: torch.Tensor) -> PromptMasks:
    """One mask per clicked object, its click queries combined (`model.click_objects`) at the
    released sigmoid > 0.4: with one click per object, as the released code has it, each
    click query's own mask; several clicks and negative clicks are our training-free
    extension."""
    return click_prompt_masks(pred.masks, prompt_class_probs(pred, prototypes), pred.iou,
                              objects, click_superpoints, superpoints, RELEASED_PROMPT_MASKS)
