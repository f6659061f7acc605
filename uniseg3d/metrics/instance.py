"""Instance segmentation AP, exactly as ScanNet's `evaluate_semantic_instance.py` computes it.

The one AP engine of the package (instance, interactive and open-vocabulary tasks use it).
Semantics of the official script, kept to the last digit:

* overlaps `np.append(np.arange(0.5, 0.95, 0.05), 0.25)`: AP averages the first nine, AP50 and
  AP25 are single columns; a match needs IoU strictly above the overlap;
* predictions with fewer than 100 points, or a label that is not an evaluated class, are dropped;
  ground-truth instances under 100 points are ignored: no false negative, and a prediction that
  matches one is neither TP nor FP;
* per ground-truth instance (in id order) its matching predictions (in input order), skipping
  those already assigned: the first becomes the match, every further one a false positive with
  the lower of the two scores (the match keeps the higher); only the first is marked as assigned;
* an unmatched prediction is a false positive unless the share of its points on void (label not
  evaluated) or on too-small instances of its class exceeds the overlap;
* AP integrates the script's precision/recall curve (`np.convolve` step widths, `np.dot`); a
  class without ground truth is NaN, one with ground truth but no prediction 0; the overall
  numbers are `np.nanmean` over the class x overlap table, as the script indexes it.

Where the script would crash (ground truth and predictions of a class, but every prediction
ignored) the AP is 0, as in mmdet3d's port. Scenes are reduced one at a time to their match
tables (`instance_scene_stats`: every detection at every overlap, scored and marked TP or not,
and the GT / prediction counts per class; the script's assignment never crosses scenes), so
`gts` / `preds` may be generators over a whole benchmark, and the AP of any resample of the
scenes is the AP of their pooled tables (`ap_table` with scene weights).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from uniseg3d.datasets.classes import scannet20
from uniseg3d.metrics.scene_stats import (
    SceneStats, concatenate, first_row, numbered, one_scene)
from uniseg3d.metrics.semantic import class_index, nanmean

OVERLAPS = np.append(np.arange(0.5, 0.95, 0.05), 0.25)
MIN_REGION_SIZE = 100


@dataclass(frozen=True)
class InstanceGT:
    """Ground truth of one scene. A GT instance is a (label, instance id) pair with an evaluated
    label and an id >= 0; points whose label is not evaluated are void."""

    labels: np.ndarray  # (N,) label value per point
    instances: np.ndarray  # (N,) instance id per point, -1 = none


@dataclass(frozen=True)
class InstancePredictions:
    """Predicted instances of one scene (masks may overlap)."""

    masks: np.ndarray  # (K, N), nonzero = in the mask
    labels: np.ndarray  # (K,) label value
    scores: np.ndarray  # (K,) confidence


@dataclass(frozen=True)
class _Tables:
    """Everything the AP needs from a set of scenes; pairs are (GT, prediction) of one class with
    a non-empty intersection, sorted by GT then prediction."""

    gt_class: np.ndarray
    gt_size: np.ndarray
    pred_class: np.ndarray
    pred_size: np.ndarray
    pred_score: np.ndarray
    pred_ignore: np.ndarray  # points on void or on too-small GT instances of the class
    pair_gt: np.ndarray
    pair_pred: np.ndarray
    pair_inter: np.ndarray


def _compact(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`np.unique(keys, return_inverse=True)` for non-negative keys, by counting when it can."""
    if keys.size and keys.max() <= 4 * keys.size + 1024:
        present = np.bincount(keys) > 0
        return np.flatnonzero(present), (np.cumsum(present) - 1)[keys]
    return np.unique(keys, return_inverse=True)


def _scene_tables(gt: InstanceGT, pred: InstancePredictions, class_ids: Sequence[int],
                  min_region_size: int) -> _Tables:
    labels = class_index(gt.labels, class_ids)
    instances = np.asarray(gt.instances, dtype=np.int64)
    num_points = labels.size
    in_instance = (labels >= 0) & (instances >= 0)
    span = int(instances.max(initial=0)) + 1
    keys, point_gt = _compact(labels[in_instance] * span + instances[in_instance])
    num_gt = len(keys)
    column = np.full(num_points, num_gt, dtype=np.int64)  # num_gt: evaluated label, no instance
    column[in_instance] = point_gt
    column[labels < 0] = num_gt + 1  # void
    gt_class = keys // span

    masks = np.asarray(pred.masks).reshape(-1, num_points)
    pred_class = class_index(np.asarray(pred.labels).reshape(-1), class_ids)
    flat = np.flatnonzero(masks)
    row = flat // num_points
    counts = np.bincount(row * (num_gt + 2) + column[flat - row * num_points],
                         minlength=len(masks) * (num_gt + 2)).reshape(len(masks), num_gt + 2)
    pred_size = counts.sum(axis=1)
    keep = (pred_class >= 0) & (pred_size >= min_region_size)
    counts, pred_class = counts[keep], pred_class[keep]
    inter = counts[:, :num_gt] * (pred_class[:, None] == gt_class[None, :])
    gt_size = np.bincount(point_gt, minlength=num_gt)
    pair_gt, pair_pred = np.nonzero(inter.T)
    pair_inter = inter[pair_pred, pair_gt]
    small = gt_size[pair_gt] < min_region_size
    ignore = counts[:, num_gt + 1] + np.bincount(pair_pred[small], weights=pair_inter[small],
                                                 minlength=len(counts)).astype(np.int64)
    return _Tables(gt_class, gt_size, pred_class, pred_size[keep],
                   np.asarray(pred.scores, dtype=np.float64).reshape(-1)[keep], ignore,
                   pair_gt, pair_pred, pair_inter)


def _greedy(pair_gt: np.ndarray, pair_pred: np.ndarray, scores: np.ndarray
            ) -> tuple[list[int], list[float], list[int], list[float]]:
    """The script's assignment over matching (GT, prediction) pairs in (GT, prediction) order:
    matched GTs with their scores, and the duplicate false positives (GT, score)."""
    assigned: set[int] = set()
    tp_gt: list[int] = []
    tp_score: list[float] = []
    dup_gt: list[int] = []
    dup_score: list[float] = []
    for g, p, score in zip(pair_gt.tolist(), pair_pred.tolist(), scores[pair_pred].tolist()):
        if p in assigned:
            continue
        if tp_gt and tp_gt[-1] == g:
            dup_gt.append(g)
            dup_score.append(min(tp_score[-1], score))
            tp_score[-1] = max(tp_score[-1], score)
        else:
            assigned.add(p)
            tp_gt.append(g)
            tp_score.append(score)
    return tp_gt, tp_score, dup_gt, dup_score


def _scene_detections(t: _Tables, num_classes: int, min_region_size: int) -> dict:
    """One scene's detections at every overlap: (overlap, class, score, true) per detection,
    with the script's per-scene assignment (a GT and its predictions belong to one scene)."""
    gt_ok = t.gt_size >= min_region_size
    iou = t.pair_inter / (t.gt_size[t.pair_gt] + t.pred_size[t.pair_pred] - t.pair_inter)
    proportion_ignore = t.pred_ignore / np.maximum(t.pred_size, 1)
    columns: dict[str, list[np.ndarray]] = {"overlap": [], "cls": [], "score": [], "true": []}
    for o, overlap in enumerate(OVERLAPS):
        hit = iou > overlap
        found = np.zeros(len(t.pred_class), dtype=bool)
        found[t.pair_pred[hit]] = True
        false_pos = ~found & (proportion_ignore <= overlap)
        take = hit & gt_ok[t.pair_gt]
        tp_gt, tp_score, dup_gt, dup_score = _greedy(t.pair_gt[take], t.pair_pred[take],
                                                     t.pred_score)
        cls = np.concatenate([t.gt_class[tp_gt + dup_gt], t.pred_class[false_pos]])
        columns["overlap"].append(np.full(len(cls), o, dtype=np.int64))
        columns["cls"].append(cls.astype(np.int64))
        columns["score"].append(np.concatenate([tp_score, dup_score,
                                                t.pred_score[false_pos]]).astype(np.float64))
        columns["true"].append(np.concatenate([np.ones(len(tp_gt), dtype=bool),
                                               np.zeros(len(dup_gt) + false_pos.sum(), bool)]))
    return {name: np.concatenate(parts) for name, parts in columns.items()}


def instance_scene_stats(scene_id: str, gt: InstanceGT, pred: InstancePredictions,
                         class_ids: Sequence[int], min_region_size: int = MIN_REGION_SIZE
                         ) -> SceneStats:
    """One scene's match table: every detection at every overlap (its class, score and
    whether it is a true positive) and per class the GT count (of at least `min_region_size`
    points) and the prediction count."""
    t = _scene_tables(gt, pred, class_ids, min_region_size)
    num = len(class_ids)
    sums = {"gt": np.bincount(t.gt_class[t.gt_size >= min_region_size], minlength=num),
            "pred": np.bincount(t.pred_class, minlength=num)}
    return one_scene(scene_id, sums, {"detections": _scene_detections(t, num, min_region_size)})


def average_precision(y_true: np.ndarray, y_score: np.ndarray, num_gt: np.ndarray,
                      counts: np.ndarray) -> np.ndarray:
    """The script's area under the precision/recall curve of scored detections (1 = TP;
    `y_score` ascending) of a class with `num_gt` (R,) ground-truth instances, for each row of
    `counts` (R, n): how often each detection counts. All counts are integers, so TP + FN =
    `num_gt` and TP + FP = the detections at or above a score exactly, as the script's sums.
    A detection counted 0 times leaves a point equal to a neighbour's, which the integration
    does not change (a point with no detection above it is the closing point: precision 1,
    recall 0). The dot products are the script's `np.dot` (batched `np.matmul` of contiguous
    rows sums in the same order)."""
    rows, size = counts.shape
    true = np.asarray(y_true, dtype=bool)
    first = np.flatnonzero(np.append(True, y_score[1:] != y_score[:-1]))
    counted = np.zeros((rows, size + 1))
    np.cumsum(counts, axis=1, out=counted[:, 1:])
    true_counted = np.zeros((rows, int(true.sum()) + 1))
    np.cumsum(np.compress(true, counts, axis=1), axis=1, out=true_counted[:, 1:])
    # true detections at or above each score: all of them less those below it
    tp = true_counted[:, -1:] - np.take(true_counted, np.append(0, np.cumsum(true))[first], axis=1)
    above = counted[:, -1:] - np.take(counted, first, axis=1)
    precision = np.ones((rows, len(first) + 1))
    np.divide(tp, above, out=precision[:, :-1], where=above > 0)
    recall = np.zeros((rows, len(first) + 3))  # recall[0], recall, the closing 0, padding
    with np.errstate(invalid="ignore", divide="ignore"):  # rows without GT: not used
        np.divide(tp, num_gt[:, None], out=recall[:, 1:-2])
    recall[:, 0] = recall[:, 1]
    widths = 0.5 * (recall[:, :-2] - recall[:, 2:])
    return np.matmul(precision[:, None, :], widths[:, :, None])[:, 0, 0]


def ap_table(stats: SceneStats, weights: np.ndarray | None = None) -> np.ndarray:
    """(R, C, O) AP per class (`stats.meta["classes"]` order) and overlap (`OVERLAPS` order) of
    the scenes under `weights`: the script's detections of every scene pooled per class."""
    num_gt = stats.total("gt", weights)
    scored = (num_gt > 0) & (stats.total("pred", weights) > 0)
    d = stats.tables["detections"]
    num = num_gt.shape[1]
    order = np.lexsort((d["score"], d["cls"], d["overlap"]))
    group = (d["overlap"] * num + d["cls"])[order]
    bounds = np.searchsorted(group, np.arange(len(OVERLAPS) * num + 1))
    true, score, scene = d["true"][order], d["score"][order], d["scene"][order]
    per_scene = np.ones((1, stats.num_scenes)) if weights is None else weights
    aps = np.where(num_gt > 0, 0.0, np.nan)[:, :, None].repeat(len(OVERLAPS), axis=2)
    for c in np.flatnonzero(scored.any(axis=0)):
        for o in range(len(OVERLAPS)):
            members = slice(bounds[o * num + c], bounds[o * num + c + 1])
            if members.start == members.stop:
                continue
            counts = np.take(per_scene, scene[members], axis=1)
            found = average_precision(true[members], score[members], num_gt[:, c], counts)
            aps[:, c, o] = np.where(scored[:, c], found, aps[:, c, o])
    return aps


def instance_stats(gts: Iterable[InstanceGT], preds: Iterable[InstancePredictions],
                   class_ids: Sequence[int], class_names: Sequence[str],
                   min_region_size: int = MIN_REGION_SIZE, scene_ids: Iterable[str] | None = None,
                   reduce: str = "instance") -> SceneStats:
    """The match tables of every scene (`scene_ids` default: "0", "1", ...); scenes are
    reduced one at a time, so `gts` / `preds` may be generators over a whole benchmark."""
    if len(class_ids) != len(class_names):
        raise ValueError("class_ids and class_names differ in length")
    scenes = [instance_scene_stats(scene_id, gt, pred, class_ids, min_region_size)
              for scene_id, (gt, pred) in numbered(scene_ids, gts, preds)]
    return concatenate(scenes, {"reduce": reduce, "classes": list(class_names)})


def instance_ap_table(gts: Iterable[InstanceGT], preds: Iterable[InstancePredictions],
                      class_ids: Sequence[int], min_region_size: int = MIN_REGION_SIZE
                      ) -> np.ndarray:
    """AP per class (rows, `class_ids` order) and overlap (columns, `OVERLAPS` order)."""
    names = [str(c) for c in class_ids]
    return ap_table(instance_stats(gts, preds, class_ids, names, min_region_size))[0]


def summarize_ap_tables(aps: np.ndarray, class_names: Sequence[str]) -> dict:
    """AP / AP50 / AP25 overall and per class, (R,) arrays, from an (R, C, O) `ap_table`,
    averaged with the script's own indexing (so the summation order, hence the digits, are the
    same)."""
    o50 = np.where(np.isclose(OVERLAPS, 0.5))
    o25 = np.where(np.isclose(OVERLAPS, 0.25))
    all_but_25 = np.where(np.logical_not(np.isclose(OVERLAPS, 0.25)))
    per_class = {"ap": aps[:, :, all_but_25[0]].mean(axis=-1), "ap50": aps[:, :, o50[0][0]],
                 "ap25": aps[:, :, o25[0][0]]}
    overall = {key: np.array([nanmean(table[None][0, :, columns]) for table in aps])
               for key, columns in (("ap", all_but_25), ("ap50", o50), ("ap25", o25))}
    return {**overall, "classes": {name: {key: values[:, i] for key, values in per_class.items()}
                                   for i, name in enumerate(class_names)}}


def instance_scores(stats: SceneStats, weights: np.ndarray | None = None) -> dict:
    """AP, AP50, AP25 overall and per class, (R,) arrays, of the scenes under `weights`."""
    return summarize_ap_tables(ap_table(stats, weights), stats.meta["classes"])


def summarize_ap(aps: np.ndarray, class_names: Sequence[str]) -> dict:
    """AP / AP50 / AP25 overall and per class from one (C, O) table (`summarize_ap_tables`)."""
    return first_row(summarize_ap_tables(aps[None], class_names))


def evaluate_instances(gts: Iterable[InstanceGT], preds: Iterable[InstancePredictions],
                       class_ids: Sequence[int], class_names: Sequence[str],
                       min_region_size: int = MIN_REGION_SIZE,
                       scene_ids: Iterable[str] | None = None) -> dict:
    """AP, AP50, AP25 overall and per class. `class_ids[i]` is the label value of
    `class_names[i]` (as the script's VALID_CLASS_IDS); other labels are void / not evaluated."""
    return first_row(instance_scores(instance_stats(gts, preds, class_ids, class_names,
                                                    min_region_size, scene_ids)))


def evaluate_scannet20_instances(gts: Iterable[InstanceGT],
                                 preds: Iterable[InstancePredictions]) -> dict:
    """ScanNet20 instance AP on `semantic20` class indices: the 18 thing classes are evaluated,
    wall and floor are void."""
    names = scannet20().names
    return evaluate_instances(gts, preds, range(2, len(names)), names[2:])
