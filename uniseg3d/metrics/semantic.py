"""Semantic segmentation: per-class IoU and mIoU, as ScanNet's `evaluate_semantic_label.py`.

Only points whose ground truth is an evaluated class count. A prediction outside the evaluated
classes on such a point is a false negative of the ground-truth class and nobody's false positive
(the official confusion row runs over every label id, the false-positive column only over valid
rows). IoU = TP / (TP + FP + FN); a class with an empty denominator is NaN and mIoU skips it
(`np.nanmean`, which gives the same digits as mmdet3d's `seg_eval` on the same classes).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import numpy as np

from uniseg3d.metrics.scene_stats import (
    SceneStats, concatenate, first_row, numbered, one_scene)


def class_index(values: np.ndarray, class_ids: Sequence[int]) -> np.ndarray:
    """Position of each label value in `class_ids`, -1 where the value is not an evaluated class."""
    class_ids = np.asarray(class_ids, dtype=np.int64)
    values = np.asarray(values, dtype=np.int64)
    table = np.full(int(class_ids.max(initial=0)) + 2, -1, dtype=np.int64)
    table[class_ids] = np.arange(len(class_ids))
    inside = (values >= 0) & (values < len(table))
    return np.where(inside, table[np.where(inside, values, len(table) - 1)], -1)


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, class_ids: Sequence[int]) -> np.ndarray:
    """(C, C + 1) counts, rows = ground truth class, columns = predicted class, the last column
    predictions outside the evaluated classes; points whose ground truth is not evaluated are
    dropped."""
    num = len(class_ids)
    gt_index = class_index(gt, class_ids)
    pred_index = class_index(pred, class_ids)
    if gt_index.shape != pred_index.shape:
        raise ValueError(f"prediction has {pred_index.size} points, ground truth {gt_index.size}")
    keep = gt_index >= 0
    pred_index = np.where(pred_index >= 0, pred_index, num)[keep]
    return np.bincount(gt_index[keep] * (num + 1) + pred_index,
                       minlength=num * (num + 1)).reshape(num, num + 1)


def iou_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """Per-class IoU of a `confusion_matrix` (NaN where the class has no TP, FP or FN); a
    leading axis of confusion matrices gives one row of IoUs each."""
    num = confusion.shape[-2]
    tp = np.diagonal(confusion[..., :num], axis1=-2, axis2=-1)
    fn = confusion.sum(axis=-1) - tp
    fp = confusion[..., :num].sum(axis=-2) - tp
    denominator = tp + fp + fn
    return np.divide(tp, denominator, out=np.full(tp.shape, np.nan), where=denominator > 0)


def nanmean(values: np.ndarray, axis: int | None = None) -> float | np.ndarray:
    """Mean over the non-NaN entries (NaN, without a warning, when there are none); over `axis`
    when given."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=axis)
    return float(mean) if axis is None else mean


def semantic_scene_stats(scene_id: str, gt: np.ndarray, pred: np.ndarray,
                         class_ids: Sequence[int]) -> SceneStats:
    """One scene's statistics: its `confusion_matrix`."""
    return one_scene(scene_id, {"confusion": confusion_matrix(gt, pred, class_ids)})


def semantic_scores(stats: SceneStats, weights: np.ndarray | None = None) -> dict:
    """mIoU and per-class IoU, (R,) arrays, of the scenes under `weights` (one confusion matrix
    summed over them); `stats.meta["classes"]` names the classes."""
    iou = iou_from_confusion(stats.total("confusion", weights))
    return {"miou": nanmean(iou, axis=-1),
            "classes": {name: {"iou": iou[:, c]} for c, name in enumerate(stats.meta["classes"])}}


def evaluate_semantic(gts: Iterable[np.ndarray], preds: Iterable[np.ndarray],
                      class_ids: Sequence[int], class_names: Sequence[str],
                      scene_ids: Iterable[str] | None = None) -> dict:
    """mIoU and per-class IoU over all scenes (one confusion matrix summed over the scenes).

    `gts` / `preds`: per scene, one label value per point; `class_ids[i]` is the label value of
    `class_names[i]` (`range(20)` for ScanNet20 class indices, the nyu40 ids for raw files).
    """
    return first_row(semantic_scores(semantic_stats(gts, preds, class_ids, class_names,
                                                    scene_ids)))


def semantic_stats(gts: Iterable[np.ndarray], preds: Iterable[np.ndarray],
                   class_ids: Sequence[int], class_names: Sequence[str],
                   scene_ids: Iterable[str] | None = None) -> SceneStats:
    """The statistics of every scene (`scene_ids` default: "0", "1", ...)."""
    if len(class_ids) != len(class_names):
        raise ValueError("class_ids and class_names differ in length")
    scenes = [semantic_scene_stats(scene_id, gt, pred, class_ids)
              for scene_id, (gt, pred) in numbered(scene_ids, gts, preds)]
    return concatenate(scenes, {"reduce": "semantic", "classes": list(class_names)})
