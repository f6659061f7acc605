"""Semantic IoU / mIoU: worked by hand, properties, and a loop-based cross-check against the
algorithm of ScanNet's `evaluate_semantic_label.py` (confusion over raw label ids)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from uniseg3d.metrics.semantic import class_index, evaluate_semantic

NAMES = ("x", "y", "z")


def test_hand_worked_scene_with_ignore_and_empty_class():
    # Points 7 and 8 have GT -1 (ignored: their predictions count nowhere).
    # x: TP points 0, 1; FN point 2 (predicted y) and point 3 (predicted -1, not a class);
    #    FP point 6 (GT y predicted x) -> IoU 2 / (2 + 1 + 2) = 0.4.
    # y: TP points 4, 5; FN point 6; FP point 2 -> 2 / 4 = 0.5.
    # z: in neither GT nor prediction -> NaN, skipped: mIoU = 0.45.
    gt = np.array([0, 0, 0, 0, 1, 1, 1, -1, -1])
    pred = np.array([0, 0, 1, -1, 1, 1, 0, 1, 1])
    result = evaluate_semantic([gt], [pred], range(3), NAMES)
    assert result["classes"]["x"]["iou"] == pytest.approx(0.4)
    assert result["classes"]["y"]["iou"] == pytest.approx(0.5)
    assert math.isnan(result["classes"]["z"]["iou"])
    assert result["miou"] == pytest.approx(0.45)
    # A second scene: GT y y y, predicted z z y. z is predicted but never GT: IoU 0, and it now
    # counts; y: TP 3, FP 1, FN 3 -> 3/7 (one confusion matrix over both scenes).
    both = evaluate_semantic([gt, np.array([1, 1, 1])], [pred, np.array([2, 2, 1])], range(3),
                             NAMES)
    assert both["classes"]["z"]["iou"] == 0.0
    assert both["classes"]["y"]["iou"] == pytest.approx(3 / 7)
    assert both["miou"] == pytest.approx((0.4 + 3 / 7 + 0.0) / 3)


def test_perfect_prediction_and_label_values():
    gt = np.array([5, 9, 9, 0, 13])  # raw ids: 5 and 9 evaluated, 0 and 13 not
    result = evaluate_semantic([gt], [gt.copy()], [5, 9], ["a", "b"])
    assert result["miou"] == 1.0
    np.testing.assert_array_equal(class_index(np.array([9, 5, 7, -1, 100]), [5, 9]),
                                  [1, 0, -1, -1, -1])


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        evaluate_semantic([np.zeros(3, int)], [np.zeros(4, int)], range(3), NAMES)


def reference_ious(scenes, valid_ids):
    """ScanNet's loop: confusion[gt][pred] over raw ids for GT in the valid set, then per class
    tp, fn (whole row), fp (valid rows only)."""
    confusion = np.zeros((50, 50), dtype=np.ulonglong)
    for gt, pred in scenes:
        for g, p in zip(gt.tolist(), pred.tolist()):
            if g in valid_ids:
                confusion[g][p] += 1
    ious = []
    for label in valid_ids:
        tp = np.longlong(confusion[label, label])
        fn = np.longlong(confusion[label, :].sum()) - tp
        fp = np.longlong(confusion[[v for v in valid_ids if v != label], label].sum())
        ious.append(float("nan") if tp + fp + fn == 0 else float(tp) / (tp + fp + fn))
    return np.array(ious)


@pytest.mark.parametrize("seed", range(5))
def test_matches_loop_reference_exactly(seed):
    rng = np.random.default_rng(seed)
    valid = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39]
    scenes = []
    for _ in range(3):
        gt = rng.choice(valid[:15] + [0, 13, 40], size=2000)
        pred = np.where(rng.random(2000) < 0.7, gt, rng.choice(valid[:17] + [0, 13], size=2000))
        scenes.append((gt, pred))
    result = evaluate_semantic([g for g, _ in scenes], [p for _, p in scenes], valid,
                               [str(v) for v in valid])
    ours = np.array([result["classes"][str(v)]["iou"] for v in valid])
    expected = reference_ious(scenes, valid)
    np.testing.assert_array_equal(ours, expected)
    # mmdet3d's seg_eval takes np.nanmean over 21 entries (the ignore class NaN): same digits.
    assert result["miou"] == np.nanmean(np.append(expected, np.nan))
