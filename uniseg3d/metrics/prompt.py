"""Prompted segmentation: interactive (one click per object) and referring (one description).

Mask IoU is UniSeg3D's `get_iou`: intersection / (union + 1e-8), so an IoU of exactly 0.5 or
0.25 never passes a strict threshold and the means carry UniSeg3D's digits.

* Interactive: mIoU over clicks; AP / AP50 / AP25 of the click masks taken as instance
  predictions (label = the clicked object's GT class, score = the predicted probability of that
  class) through the ScanNet AP engine; and `click_ap*`, the AP that UniSeg3D's released
  evaluator (`PromptSupportedUnifiedSegMetric.cal_ap`) reports: per threshold
  0.5 + 0.05 i (i = 0..9; 0.25 and 0.5 for the others) a click is a TP when its IoU passes it,
  clicks ranked by probability, VOC-style area under the max-precision envelope.
* Referring: mIoU, Acc@0.25 and Acc@0.5 (IoU strictly above) over descriptions, overall and
  split by whether the target's class is unique in its scene.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from uniseg3d.metrics.instance import (
    InstanceGT, InstancePredictions, evaluate_instances)


def mask_ious(gt_masks: np.ndarray, pred_masks: np.ndarray) -> np.ndarray:
    """(M,) IoU of row m of `gt_masks` with row m of `pred_masks` (both (M, N), nonzero = in)."""
    gt_masks = np.asarray(gt_masks, dtype=bool)
    pred_masks = np.asarray(pred_masks, dtype=bool).reshape(gt_masks.shape)
    intersection = (gt_masks & pred_masks).sum(-1)
    union = (gt_masks | pred_masks).sum(-1)
    return intersection / (union + 1e-8)


def _click_ap_at(ious: np.ndarray, probs: np.ndarray, threshold: float) -> float:
    true_positive = (ious > threshold)[np.argsort(-probs)]
    tp = np.cumsum(true_positive)
    fp = np.cumsum(~true_positive)
    recall = np.concatenate(([0.0], tp / len(true_positive), [1.0]))
    precision = np.concatenate(([0.0], tp / (tp + fp), [0.0]))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum((recall[1:] - recall[:-1]) * precision[1:]))


def click_ap(ious: np.ndarray, probs: np.ndarray) -> dict:
    """UniSeg3D's released interactive AP (see the module docstring) over all clicks."""
    ious, probs = np.asarray(ious, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    ap = 0.0
    for i in range(10):
        ap += _click_ap_at(ious, probs, 0.5 + 0.05 * i)
    return {"click_ap": ap / 10.0, "click_ap50": _click_ap_at(ious, probs, 0.5),
            "click_ap25": _click_ap_at(ious, probs, 0.25)}


@dataclass(frozen=True)
class Clicks:
    """Interactive results of one scene: one click per GT object."""

    gt: InstanceGT  # the scene's instance ground truth
    targets: np.ndarray  # (M,) instance id of the clicked object
    masks: np.ndarray  # (M, N) predicted mask per click
    probs: np.ndarray  # (M,) predicted probability of the clicked object's GT class


def evaluate_interactive(scenes: Iterable[Clicks], class_ids: Sequence[int],
                         class_names: Sequence[str]) -> dict:
    """mIoU, the instance-engine AP / AP50 / AP25 and UniSeg3D's `click_ap*` over all clicks."""
    ious, probs, gts, predictions = [], [], [], []
    for scene in scenes:
        instances = np.asarray(scene.gt.instances)
        targets = np.asarray(scene.targets).reshape(-1)
        gt_masks = instances[None, :] == targets[:, None]
        if not gt_masks.any(axis=1).all():
            raise ValueError(f"clicked instance ids {targets.tolist()} missing from the scene")
        labels = np.asarray(scene.gt.labels)[gt_masks.argmax(axis=1)]
        ious.append(mask_ious(gt_masks, scene.masks))
        probs.append(np.asarray(scene.probs, dtype=np.float64).reshape(-1))
        gts.append(scene.gt)
        predictions.append(InstancePredictions(scene.masks, labels, probs[-1]))
    ious, probs = np.concatenate(ious), np.concatenate(probs)
    result = evaluate_instances(gts, predictions, class_ids, class_names)
    return {"clicks": int(len(ious)), "miou": float(np.mean(ious)),
            **{key: result[key] for key in ("ap", "ap50", "ap25")}, **click_ap(ious, probs),
            "classes": result["classes"]}


def unique_targets(object_classes: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(M,) whether the class of object `targets[m]` occurs once among `object_classes` (K,)."""
    object_classes = np.asarray(object_classes)
    _, inverse, counts = np.unique(object_classes, return_inverse=True, return_counts=True)
    return counts[inverse][np.asarray(targets)] == 1


def _accuracies(ious: np.ndarray) -> dict:
    if ious.size == 0:
        return {"count": 0, "miou": float("nan"), "acc25": float("nan"), "acc50": float("nan")}
    return {"count": int(ious.size), "miou": float(np.mean(ious)),
            "acc25": float((ious > 0.25).sum() / ious.size),
            "acc50": float((ious > 0.5).sum() / ious.size)}


def evaluate_referring(gt_masks: Iterable[np.ndarray], pred_masks: Iterable[np.ndarray],
                       unique: Iterable[np.ndarray]) -> dict:
    """Per scene (M, N) target masks, (M, N) predicted masks and (M,) unique flags (see
    `unique_targets`): mIoU / Acc@0.25 / Acc@0.5 overall, for "unique" and for "multiple"."""
    ious, flags = [], []
    for gt, pred, flag in zip(gt_masks, pred_masks, unique, strict=True):
        ious.append(mask_ious(gt, pred))
        flags.append(np.asarray(flag, dtype=bool).reshape(-1))
    ious = np.concatenate(ious) if ious else np.zeros(0)
    flags = np.concatenate(flags) if flags else np.zeros(0, dtype=bool)
    return {**_accuracies(ious), "unique": _accuracies(ious[flags]),
            "multiple": _accuracies(ious[~flags])}
