"""Per-task post-processing of one forward's last-layer predictions into point-level results.

Semantic: per superpoint, the class of the semantic head's highest logit (`inference` passes
the logits less the model's training log prior); then, inside each confident instance, the
class that maximises the head's mean probability over the instance's points times the instance
query's own class probability (two classifiers' evidence, multiplied), so that one object gets
one class.
Instances: the top 600 (query, class) pairs (the paper's `topk_insts`) scored by class
probability x mean mask probability x predicted IoU, with per-class mask NMS. Panoptic: stuff
points from the semantic result, things painted from confident instances in score order. Text
queries: one mask each. Clicks: one mask per clicked object from its click queries
(`click_objects`), with class probabilities, used to rank them for interactive AP. A prompt
query's mask follows its recipe's `MaskRule` (ours: mask logit > 0). Open
vocabulary: the same instance path against any list of class-name embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from uniseg3d.model.click_objects import ClickObjects, combine_clicks, per_object_mean
from uniseg3d.model.decoder import QueryPredictions
from uniseg3d.model.targets import STUFF_IDS


@dataclass
class Instances:
    masks: np.ndarray  # (K, N) bool point masks
    labels: np.ndarray  # (K,) class index into the class list used
    scores: np.ndarray  # (K,)
    class_probs: np.ndarray | None = None  # (K, C) the query's class probabilities, if known


@dataclass(frozen=True)
class MaskRule:
    """The superpoints a prompt query's mask covers: those whose score, the mask logit or
    (`sigmoid`) its sigmoid, is above `threshold`, in the space the recipe compares in, so
    that the masks are bit for bit the recipe's."""

    sigmoid: bool = False
    threshold: float = 0.0

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.sigmoid() if self.sigmoid else logits

    def masks(self, logits: torch.Tensor) -> torch.Tensor:
        return self.scores(logits) > self.threshold

    def click_objects(self, click_logits: torch.Tensor, objects: torch.Tensor,
                      click_superpoints: torch.Tensor) -> ClickObjects:
        """`combine_clicks` of the click queries' (Kc, M) mask logits in this rule's space."""
        return combine_clicks(self.scores(click_logits), objects, click_superpoints,
                              self.threshold)


OUR_PROMPT_MASKS = MaskRule()  # mask logit > 0


def to_points(superpoint_values: torch.Tensor, superpoints: torch.Tensor) -> np.ndarray:
    """Index superpoint-level rows/values by each point's superpoint (last axis)."""
    return superpoint_values[..., superpoints].cpu().numpy()


def semantic_labels(superpoint_logits: torch.Tensor, superpoints: torch.Tensor,
                    things: Instances | None = None, min_score: float = 0.3) -> np.ndarray:
    """(N,) class per point from (M, C) superpoint class logits: the semantic head's argmax,
    except that, with `things`, the thing points inside each instance of score >= `min_score`
    take the class of the head's mean probability over the instance's points, times the
    instance's `class_probs` when it has them (higher scores painted last). Stuff points, and
    votes for stuff, are left as they are."""
    labels = to_points(superpoint_logits.argmax(1), superpoints)
    if things is None:
        return labels
    probs = superpoint_logits.softmax(-1).cpu().numpy()  # (M, C), per superpoint
    point_superpoints = superpoints.cpu().numpy()
    thing_points = ~np.isin(labels, STUFF_IDS)
    for k in np.argsort(things.scores, kind="stable"):
        if things.scores[k] < min_score:
            continue
        # sum over the instance's points = its superpoints' probabilities x their point counts
        points_per_superpoint = np.bincount(point_superpoints[things.masks[k]],
                                            minlength=len(probs))
        evidence = points_per_superpoint @ probs
        if things.class_probs is not None:
            evidence = evidence * things.class_probs[k]
        vote = int(evidence.argmax())
        if vote not in STUFF_IDS:
            labels[things.masks[k] & thing_points] = vote
    return labels


def mask_nms(masks: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, threshold: float
             ) -> torch.Tensor:
    """Indices kept by greedy NMS within each class on binary masks (IoU > threshold drops)."""
    order = scores.argsort(descending=True)
    masks, labels = masks[order].float(), labels[order]
    inter = masks @ masks.T
    area = masks.sum(1)
    iou = inter / (area[:, None] + area[None] - inter).clamp_min(1)
    suppress = ((iou > threshold) & (labels[:, None] == labels[None])).triu(1).cpu().numpy()
    keep = np.ones(len(order), dtype=bool)
    for i in range(len(order)):  # greedy, best first; numpy: cheap steps in a Python loop
        if keep[i]:
            keep &= ~suppress[i]
    return order[torch.from_numpy(keep).to(order.device)]


def class_probabilities(pred: QueryPredictions, class_embeddings: torch.Tensor,
                        allowed: torch.Tensor | None = None) -> torch.Tensor:
    """(Q, C) softmax class probabilities, the no-object column dropped, classes outside
    `allowed` zeroed."""
    probs = pred.class_logits(class_embeddings).softmax(-1)[:, :-1]
    return probs if allowed is None else probs * allowed[None].to(probs.dtype)


def instances(pred: QueryPredictions, class_embeddings: torch.Tensor, superpoints: torch.Tensor,
              allowed: torch.Tensor | None = None, top_k: int = 600, nms: float = 0.75,
              min_score: float = 0.0) -> Instances:
    """Scored instance masks; `allowed` (bool per class) restricts the labels (e.g. things)."""
    probs = class_probabilities(pred, class_embeddings, allowed)
    mask_prob = pred.masks.sigmoid()
    binary = mask_prob > 0.5
    mask_score = (mask_prob * binary).sum(1) / binary.sum(1).clamp_min(1)
    quality = mask_score * pred.iou.sigmoid()
    flat = (probs * quality[:, None]).flatten()
    k = min(top_k, int((flat > 0).sum()))
    scores, index = flat.topk(k)
    queries, labels = index // probs.shape[1], index % probs.shape[1]
    masks = binary[queries]
    nonempty = masks.any(1) & (scores > min_score)
    queries, labels, scores, masks = queries[nonempty], labels[nonempty], scores[nonempty], \
        masks[nonempty]
    keep = mask_nms(masks, scores, labels, nms)
    return Instances(to_points(masks[keep], superpoints), labels[keep].cpu().numpy(),
                     scores[keep].cpu().numpy(), probs[queries[keep]].cpu().numpy())


def panoptic(semantic: np.ndarray, things: Instances, min_score: float = 0.3
             ) -> tuple[np.ndarray, np.ndarray]:
    """(class, instance id) per point: stuff from `semantic`, things painted by score."""
    stuff = np.isin(semantic, STUFF_IDS)
    classes = np.where(stuff, semantic, -1)
    ids = np.full(len(semantic), -1, dtype=np.int64)
    next_id = 0
    for k in np.argsort(-things.scores):
        if things.scores[k] < min_score:
            break
        free = things.masks[k] & (classes < 0)
        if free.sum() * 2 < things.masks[k].sum():  # mostly covered already: drop it
            continue
        classes[free] = things.labels[k]
        ids[free] = next_id
        next_id += 1
    return classes, ids


@dataclass
class PromptMasks:
    masks: np.ndarray  # (K, N) bool
    class_probs: np.ndarray  # (K, C) class probabilities (no-object dropped)
    iou: np.ndarray  # (K,) predicted IoU
    labels: np.ndarray | None = None  # (N,) clicks: the object each point goes to, -1 = none


@dataclass
class ScenePrediction:
    """Every task's result for one scene, whichever recipe computed it."""

    semantic: np.ndarray  # (N,) ScanNet20 class per point
    instances: Instances  # thing instances, ScanNet20 labels
    panoptic_classes: np.ndarray  # (N,) class per point (-1 = none)
    panoptic_ids: np.ndarray  # (N,) thing instance id per point (-1 = stuff or none)
    clicks: PromptMasks  # one mask per clicked object
    texts: PromptMasks  # one mask per description
    open_vocab: Instances | None  # instances labelled against the open-vocabulary class list


def prompt_masks(pred: QueryPredictions, class_embeddings: torch.Tensor,
                 superpoints: torch.Tensor, rule: MaskRule = OUR_PROMPT_MASKS) -> PromptMasks:
    """One mask per prompt query (by `rule`), with its class probabilities."""
    probs = class_probabilities(pred, class_embeddings)
    return PromptMasks(to_points(rule.masks(pred.masks), superpoints), probs.cpu().numpy(),
                       pred.iou.sigmoid().cpu().numpy())


def click_prompt_masks(click_logits: torch.Tensor, class_probs: torch.Tensor, iou: torch.Tensor,
                       objects: torch.Tensor, click_superpoints: torch.Tensor,
                       superpoints: torch.Tensor, rule: MaskRule = OUR_PROMPT_MASKS
                       ) -> PromptMasks:
    """One mask per clicked object from its click queries' mask logits (`click_objects`, in
    `rule`'s space): with one positive click per object and no negative click, each click
    query's own mask by `rule`; class probabilities and IoU: the means over the object's
    positive clicks."""
    combined = rule.click_objects(click_logits, objects, click_superpoints)
    return PromptMasks(to_points(combined.masks, superpoints),
                       per_object_mean(class_probs, objects).cpu().numpy(),
                       per_object_mean(iou, objects).cpu().numpy(),
                       to_points(combined.labels, superpoints))
