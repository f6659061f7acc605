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
    """Per-class IoU of a `confusion_matrix` (NaN where the class has no TP, FP or FN)."""
    num = confusion.shape[0]
    tp = np.diagonal(confusion[:, :num])
    fn = confusion.sum(axis=1) - tp
    fp = confusion[:, :num].sum(axis=0) - tp
    denominator = tp + fp + fn
    return np.divide(tp, denominator, out=np.full(num, np.nan), where=denominator > 0)


def nanmean(values: np.ndarray) -> float:
    """Mean over the non-NaN entries (NaN, without a warning, when there are none)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(values))


def evaluate_semantic(gts: Iterable[np.ndarray], preds: Iterable[np.ndarray],
                      class_ids: Sequence[int], class_names: Sequence[str]) -> dict:
    """mIoU and per-class IoU over all scenes (one confusion matrix summed over the scenes).

    `gts` / `preds`: per scene, one label value per point; `class_ids[i]` is the label value of
    `class_names[i]` (`range(20)` for ScanNet20 class indices, the nyu40 ids for raw files).
    """
    if len(class_ids) != len(class_names):
        raise ValueError("class_ids and class_names differ in length")
    confusion = np.zeros((len(class_ids), len(class_ids) + 1), dtype=np.int64)
    for gt, pred in zip(gts, preds, strict=True):
        confusion += confusion_matrix(gt, pred, class_ids)
    iou = iou_from_confusion(confusion)
    return {"miou": nanmean(iou),
            "classes": {name: {"iou": float(value)} for name, value in zip(class_names, iou)}}
