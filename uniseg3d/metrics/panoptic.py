"""Panoptic quality (PQ, SQ, RQ), as mmdet3d's `panoptic_seg_eval` with UniSeg3D's settings.

Per scene, points whose ground-truth class is not evaluated (outside `[0, C)`) are removed
first. A segment is the set of points of one class and one instance id; stuff classes form one
segment per class (UniSeg3D labels every stuff point of a class with the same id), thing points
without an instance (-1) belong to no segment. Within a class a predicted segment matches a GT
segment at IoU > 0.5 (at most one such partner exists); unmatched segments of at least
`min_points` points (UniSeg3D: 1) are FP / FN. No void handling beyond the removed points.
Per class SQ = sum IoU / TP, RQ = TP / (TP + FP / 2 + FN / 2), PQ = SQ * RQ, with mmdet3d's
1e-15 floors; the IoU sums accumulate scene by scene in mmdet3d's order, so the digits agree.
PQ, SQ, RQ average the classes that occur (TP + FP + FN > 0; mmdet3d counts a class absent
from both GT and predictions as 0), also over things and stuff alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from uniseg3d.metrics.scene_stats import (
    SceneStats, concatenate, first_row, numbered, one_scene)
from uniseg3d.metrics.semantic import nanmean

EPS = 1e-15
STUFF20 = (0, 1)  # wall, floor


@dataclass(frozen=True)
class PanopticSegmentation:
    """Panoptic labels of one scene (ground truth or prediction)."""

    semantic: np.ndarray  # (N,) class index, outside [0, C) = unlabelled
    instance: np.ndarray  # (N,) instance id, -1 = none


def _segments(seg: PanopticSegmentation, keep: np.ndarray, num_classes: int,
              stuff: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per kept point its segment (-1 = none), and per segment its class and size."""
    semantic = np.asarray(seg.semantic, dtype=np.int64)[keep]
    instance = np.asarray(seg.instance, dtype=np.int64)[keep]
    is_stuff = np.isin(semantic, stuff)
    member = (semantic >= 0) & (semantic < num_classes) & (is_stuff | (instance >= 0))
    instance = np.where(is_stuff, 0, instance + 1)
    span = int(instance.max(initial=0)) + 1
    keys, index = np.unique(semantic[member] * span + instance[member], return_inverse=True)
    point_segment = np.full(semantic.size, -1, dtype=np.int64)
    point_segment[member] = index
    return point_segment, keys // span, np.bincount(index, minlength=len(keys))


def panoptic_scene_stats(scene_id: str, gt: PanopticSegmentation, pred: PanopticSegmentation,
                         num: int, stuff: np.ndarray, min_points: int = 1) -> SceneStats:
    """One scene's TP, FP, FN and sum of matched IoUs per class."""
    gt_semantic = np.asarray(gt.semantic)
    keep = (gt_semantic >= 0) & (gt_semantic < num)
    gt_point, gt_class, gt_size = _segments(gt, keep, num, stuff)
    pred_point, pred_class, pred_size = _segments(pred, keep, num, stuff)
    both = (gt_point >= 0) & (pred_point >= 0)
    both[both] = gt_class[gt_point[both]] == pred_class[pred_point[both]]
    pairs = np.bincount(gt_point[both] * len(pred_size) + pred_point[both],
                        minlength=len(gt_size) * len(pred_size))
    pair = np.flatnonzero(pairs)  # sorted by GT segment, i.e. by class then instance id
    pair_gt, pair_pred = np.divmod(pair, len(pred_size))
    inter = pairs[pair]
    iou = inter.astype(float) / (gt_size[pair_gt] + pred_size[pair_pred] - inter)
    match = iou > 0.5
    match_class = gt_class[pair_gt[match]]
    iou_sum = np.zeros(num, dtype=np.float64)
    for c in np.unique(match_class):
        iou_sum[c] = np.sum(iou[match][match_class == c])
    gt_free = np.ones(len(gt_size), dtype=bool)
    gt_free[pair_gt[match]] = False
    pred_free = np.ones(len(pred_size), dtype=bool)
    pred_free[pair_pred[match]] = False
    return one_scene(scene_id, {
        "tp": np.bincount(match_class, minlength=num),
        "fp": np.bincount(pred_class[pred_free & (pred_size >= min_points)], minlength=num),
        "fn": np.bincount(gt_class[gt_free & (gt_size >= min_points)], minlength=num),
        "iou_sum": iou_sum})


def panoptic_stats(gts: Iterable[PanopticSegmentation], preds: Iterable[PanopticSegmentation],
                   class_names: Sequence[str], stuff: Sequence[int] = STUFF20,
                   min_points: int = 1, scene_ids: Iterable[str] | None = None) -> SceneStats:
    """The per-class counts of every scene (`scene_ids` default: "0", "1", ...)."""
    num, stuff = len(class_names), np.asarray(stuff, dtype=np.int64)
    scenes = [panoptic_scene_stats(scene_id, gt, pred, num, stuff, min_points)
              for scene_id, (gt, pred) in numbered(scene_ids, gts, preds)]
    return concatenate(scenes, {"reduce": "panoptic", "classes": list(class_names),
                                "stuff": stuff.tolist()})


def panoptic_scores(stats: SceneStats, weights: np.ndarray | None = None) -> dict:
    """PQ / SQ / RQ overall, over things and over stuff, and per class (with TP, FP, FN), (R,)
    arrays, of the scenes under `weights`."""
    tp, fp, fn, iou_sum = (stats.total(name, weights) for name in ("tp", "fp", "fn", "iou_sum"))
    names, stuff = stats.meta["classes"], np.asarray(stats.meta["stuff"], dtype=np.int64)
    sq = iou_sum / np.maximum(tp.astype(np.double), EPS)
    rq = tp.astype(np.double) / np.maximum(
        tp.astype(np.double) + 0.5 * fp.astype(np.double) + 0.5 * fn.astype(np.double), EPS)
    pq = sq * rq
    absent = tp + fp + fn == 0
    sq[absent], rq[absent], pq[absent] = np.nan, np.nan, np.nan
    things = np.setdiff1d(np.arange(len(names)), stuff)
    result = {}
    for group, members in (("", slice(None)), ("_things", things), ("_stuff", stuff)):
        for name, values in (("pq", pq), ("sq", sq), ("rq", rq)):
            result[name + group] = nanmean(values[:, members], axis=-1)
    result["classes"] = {
        name: {"pq": pq[:, c], "sq": sq[:, c], "rq": rq[:, c], "tp": tp[:, c], "fp": fp[:, c],
               "fn": fn[:, c]}
        for c, name in enumerate(names)}
    return result


def evaluate_panoptic(gts: Iterable[PanopticSegmentation], preds: Iterable[PanopticSegmentation],
                      class_names: Sequence[str], stuff: Sequence[int] = STUFF20,
                      min_points: int = 1) -> dict:
    """PQ / SQ / RQ overall, over things and over stuff, and per class (with TP, FP, FN)."""
    return first_row(panoptic_scores(panoptic_stats(gts, preds, class_names, stuff,
                                                    min_points)))
