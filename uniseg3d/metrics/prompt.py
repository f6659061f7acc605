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
    InstanceGT, InstancePredictions, instance_scene_stats, instance_scores)
from uniseg3d.metrics.scene_stats import (
    SceneStats, concatenate, first_row, numbered, one_scene)


def mask_ious(gt_masks: np.ndarray, pred_masks: np.ndarray) -> np.ndarray:
    """(M,) IoU of row m of `gt_masks` with row m of `pred_masks` (both (M, N), nonzero = in)."""
    gt_masks = np.asarray(gt_masks, dtype=bool)
    pred_masks = np.asarray(pred_masks, dtype=bool).reshape(gt_masks.shape)
    intersection = (gt_masks & pred_masks).sum(-1)
    union = (gt_masks | pred_masks).sum(-1)
    return intersection / (union + 1e-8)


def _click_ap_at(true_positive: np.ndarray, counts: np.ndarray, counted: np.ndarray
                 ) -> np.ndarray:
    """(R,) VOC area of clicks ranked by probability (`true_positive` in that order) for each
    row of `counts` (R, n), how often each click counts (`counted`: its running sum). A click
    counted w times adds w / n to the recall at the precision of its last copy: the envelope
    over its copies is the same, so the area is the one of the repeated clicks."""
    rows = len(counts)
    tp = np.cumsum(counts * true_positive, axis=1)
    fp = counted - tp
    recall = np.hstack([np.zeros((rows, 1)), tp / counted[:, -1:], np.ones((rows, 1))])
    precision = np.zeros((rows, tp.shape[1] + 2))
    np.divide(tp, tp + fp, out=precision[:, 1:-1], where=tp + fp > 0)
    precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    return np.sum((recall[:, 1:] - recall[:, :-1]) * precision[:, 1:], axis=1)


def click_ap_scores(ious: np.ndarray, probs: np.ndarray, counts: np.ndarray) -> dict:
    """UniSeg3D's released interactive AP (see the module docstring), (R,) arrays, with each
    row of `counts` (R, n) counting the clicks."""
    ious, probs = np.asarray(ious, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    order = np.argsort(-probs)
    ious, counts = ious[order], np.take(counts, order, axis=1)
    counted = np.cumsum(counts, axis=1)
    ap = np.zeros(len(counts))
    for i in range(10):
        ap += _click_ap_at(ious > 0.5 + 0.05 * i, counts, counted)
    return {"click_ap": ap / 10.0, "click_ap50": _click_ap_at(ious > 0.5, counts, counted),
            "click_ap25": _click_ap_at(ious > 0.25, counts, counted)}


def click_ap(ious: np.ndarray, probs: np.ndarray) -> dict:
    """UniSeg3D's released interactive AP (see the module docstring) over all clicks."""
    return first_row(click_ap_scores(ious, probs, np.ones((1, len(ious)))))


@dataclass(frozen=True)
class Clicks:
    """Interactive results of one scene: one click per GT object."""

    gt: InstanceGT  # the scene's instance ground truth
    targets: np.ndarray  # (M,) instance id of the clicked object
    masks: np.ndarray  # (M, N) predicted mask per click
    probs: np.ndarray  # (M,) predicted probability of the clicked object's GT class


def interactive_scene_stats(scene_id: str, scene: Clicks, class_ids: Sequence[int]
                            ) -> SceneStats:
    """One scene's clicks (IoU, probability) and the match table of the click masks taken as
    instance predictions."""
    instances = np.asarray(scene.gt.instances)
    targets = np.asarray(scene.targets).reshape(-1)
    gt_masks = instances[None, :] == targets[:, None]
    if not gt_masks.any(axis=1).all():
        raise ValueError(f"clicked instance ids {targets.tolist()} missing from the scene")
    labels = np.asarray(scene.gt.labels)[gt_masks.argmax(axis=1)]
    probs = np.asarray(scene.probs, dtype=np.float64).reshape(-1)
    matches = instance_scene_stats(scene_id, scene.gt,
                                   InstancePredictions(scene.masks, labels, probs), class_ids)
    return one_scene(scene_id, {name: value[0] for name, value in matches.sums.items()}, {
        "detections": matches.tables["detections"],
        "clicks": {"iou": mask_ious(gt_masks, scene.masks), "prob": probs}})


def interactive_stats(scenes: Iterable[Clicks], class_ids: Sequence[int],
                      class_names: Sequence[str], scene_ids: Iterable[str] | None = None
                      ) -> SceneStats:
    """The statistics of every scene (`scene_ids` default: "0", "1", ...)."""
    if len(class_ids) != len(class_names):
        raise ValueError("class_ids and class_names differ in length")
    return concatenate([interactive_scene_stats(scene_id, scene, class_ids)
                        for scene_id, (scene,) in numbered(scene_ids, scenes)],
                       {"reduce": "interactive", "classes": list(class_names)})


def interactive_scores(stats: SceneStats, weights: np.ndarray | None = None) -> dict:
    """mIoU, the instance-engine AP / AP50 / AP25 and UniSeg3D's `click_ap*`, (R,) arrays,
    over the clicks of the scenes under `weights`."""
    clicks = stats.tables["clicks"]
    counts = stats.item_weights("clicks", weights)
    result = instance_scores(stats, weights)
    return {"clicks": counts.sum(axis=1), "miou": counts @ clicks["iou"] / counts.sum(axis=1),
            **{key: result[key] for key in ("ap", "ap50", "ap25")},
            **click_ap_scores(clicks["iou"], clicks["prob"], counts),
            "classes": result["classes"]}


def evaluate_interactive(scenes: Iterable[Clicks], class_ids: Sequence[int],
                         class_names: Sequence[str]) -> dict:
    """mIoU, the instance-engine AP / AP50 / AP25 and UniSeg3D's `click_ap*` over all clicks."""
    return first_row(interactive_scores(interactive_stats(scenes, class_ids, class_names)))


def unique_targets(object_classes: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(M,) whether the class of object `targets[m]` occurs once among `object_classes` (K,)."""
    object_classes = np.asarray(object_classes)
    _, inverse, counts = np.unique(object_classes, return_inverse=True, return_counts=True)
    return counts[inverse][np.asarray(targets)] == 1


def _accuracies(ious: np.ndarray, counts: np.ndarray) -> dict:
    """(R,) count, mIoU, Acc@0.25 and Acc@0.5 of descriptions counted `counts` (R, M) times."""
    total = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"count": total, "miou": counts @ ious / total,
                "acc25": counts @ (ious > 0.25) / total, "acc50": counts @ (ious > 0.5) / total}


def referring_scene_stats(scene_id: str, gt_masks: np.ndarray, pred_masks: np.ndarray,
                          unique: np.ndarray) -> SceneStats:
    """One scene's descriptions: IoU and whether the target's class is unique."""
    return one_scene(scene_id, tables={"prompts": {
        "iou": mask_ious(gt_masks, pred_masks),
        "unique": np.asarray(unique, dtype=bool).reshape(-1)}})


def referring_stats(gt_masks: Iterable[np.ndarray], pred_masks: Iterable[np.ndarray],
                    unique: Iterable[np.ndarray], scene_ids: Iterable[str] | None = None
                    ) -> SceneStats:
    """The descriptions of every scene (`scene_ids` default: "0", "1", ...)."""
    return concatenate([referring_scene_stats(scene_id, *scene) for scene_id, scene in
                        numbered(scene_ids, gt_masks, pred_masks, unique)],
                       {"reduce": "referring"})


def referring_scores(stats: SceneStats, weights: np.ndarray | None = None) -> dict:
    """mIoU / Acc@0.25 / Acc@0.5, (R,) arrays, overall and for "unique" and "multiple", over the
    descriptions of the scenes under `weights`."""
    prompts = stats.tables["prompts"]
    counts = stats.item_weights("prompts", weights)
    unique = prompts["unique"]
    return {**_accuracies(prompts["iou"], counts),
            "unique": _accuracies(prompts["iou"][unique], counts[:, unique]),
            "multiple": _accuracies(prompts["iou"][~unique], counts[:, ~unique])}


def evaluate_referring(gt_masks: Iterable[np.ndarray], pred_masks: Iterable[np.ndarray],
                       unique: Iterable[np.ndarray]) -> dict:
    """Per scene (M, N) target masks, (M, N) predicted masks and (M,) unique flags (see
    `unique_targets`): mIoU / Acc@0.25 / Acc@0.5 overall, for "unique" and for "multiple"."""
    return first_row(referring_scores(referring_stats(gt_masks, pred_masks, unique)))
