"""Interactive and referring segmentation metrics, worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from uniseg3d.metrics.instance import InstanceGT
from uniseg3d.metrics.prompt import (
    Clicks, click_ap, evaluate_interactive, evaluate_referring, mask_ious, unique_targets)


def span(n: int, start: int, stop: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[start:stop] = True
    return mask


def test_mask_iou_follows_uniseg3d_epsilon():
    gt = np.array([span(10, 0, 4), span(10, 0, 4), span(10, 0, 0)])
    pred = np.array([span(10, 0, 4), span(10, 0, 2), span(10, 5, 6)])
    ious = mask_ious(gt, pred)
    assert ious[0] == 4 / (4 + 1e-8)
    assert ious[1] < 0.5 and ious[1] == pytest.approx(0.5)  # exactly 0.5 never passes > 0.5
    assert ious[2] == 0.0


def test_referring_accuracy_strict_thresholds_and_split():
    # IoUs 1, 0.5 (exactly), 0.3, 0; the first two targets are unique in their scene.
    # Acc@0.25: 1, 0.5, 0.3 pass -> 3/4; Acc@0.5: only 1 passes (0.5 is not > 0.5) -> 1/4.
    # unique: mIoU 0.75, Acc@0.5 1/2; multiple: Acc@0.25 1/2, Acc@0.5 0.
    n = 10
    gt = np.array([span(n, 0, 10), span(n, 0, 4), span(n, 0, 10), span(n, 0, 5)])
    pred = np.array([span(n, 0, 10), span(n, 0, 2), span(n, 0, 3), span(n, 5, 10)])
    result = evaluate_referring([gt[:2], gt[2:]], [pred[:2], pred[2:]],
                                [np.array([True, True]), np.array([False, False])])
    assert result["count"] == 4
    assert result["acc25"] == 0.75 and result["acc50"] == 0.25
    assert result["miou"] == pytest.approx((1 + 0.5 + 0.3 + 0) / 4)
    assert result["unique"]["miou"] == pytest.approx(0.75) and result["unique"]["acc50"] == 0.5
    assert result["multiple"]["acc25"] == 0.5 and result["multiple"]["acc50"] == 0.0


def test_unique_targets():
    # Objects' classes: chair, table, chair, lamp -> a table or lamp target is unique.
    classes = np.array([4, 6, 4, 9])
    np.testing.assert_array_equal(unique_targets(classes, np.array([0, 1, 2, 3])),
                                  [False, True, False, True])


def test_interactive_hand_worked():
    # Two objects of class 1 (200 points each), 100 void points. Click on object 0 gives its
    # exact mask (prob 0.9), click on object 1 half of it (100 points, IoU exactly 0.5; 0.6).
    # mIoU ~ 0.75. Instance engine, overlaps >= 0.5: y = [0.6 F, 0.9 T], object 1 a hard FN ->
    # (p, r) = (1/2, 1/2), (1, 1/2), (1, 0); widths (0, 1/4, 1/4): AP = AP50 = 1/2; at 0.25
    # both match: AP25 = 1.
    # UniSeg3D's click AP, thresholds >= 0.5: ranked [TP, FP], precision (1, 1/2), recall
    # (1/2, 1/2) -> envelope area 1/2; at 0.25 both TP -> 1.
    n = 500
    labels = np.where(np.arange(n) < 400, 1, 0)
    gt = InstanceGT(labels, np.where(np.arange(n) < 400, np.arange(n) // 200, -1))
    clicks = Clicks(gt, np.array([0, 1]), np.array([span(n, 0, 200), span(n, 200, 300)]),
                    np.array([0.9, 0.6]))
    result = evaluate_interactive([clicks], [1], ["a"])
    assert result["clicks"] == 2
    assert result["miou"] == pytest.approx(0.75)
    assert (result["ap"], result["ap50"], result["ap25"]) == pytest.approx((0.5, 0.5, 1.0))
    assert (result["click_ap"], result["click_ap50"], result["click_ap25"]) == \
        pytest.approx((0.5, 0.5, 1.0))


def test_click_ap_perfect_and_ranking():
    assert click_ap(np.ones(5), np.random.default_rng(0).random(5))["click_ap"] == 1.0
    # One TP ranked below one FP at 0.5: precision (0, 1/2); recall divides by all clicks:
    # (0, 1/2) -> envelope 1/2 over recall 0..1/2: area 1/4.
    assert click_ap(np.array([0.9, 0.1]), np.array([0.2, 0.8]))["click_ap50"] == 0.25


def test_unknown_click_target_is_an_error():
    gt = InstanceGT(np.ones(10, dtype=int), np.zeros(10, dtype=int))
    with pytest.raises(ValueError):
        evaluate_interactive([Clicks(gt, np.array([3]), np.ones((1, 10), bool), np.ones(1))],
                             [1], ["a"])


def reference_click_ap(ious, probs, thr):
    """UniSeg3D's `cal_ap_thr`, loop envelope and all."""
    tps = (ious > thr)[np.argsort(-probs)]
    cum_tp, cum_fp = np.cumsum(tps), np.cumsum(~tps)
    mrec = np.concatenate(([0.0], cum_tp / len(tps), [1.0]))
    mpre = np.concatenate(([0.0], cum_tp / (cum_tp + cum_fp), [0.0]))
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return np.sum((mrec[1:] - mrec[:-1]) * mpre[1:])


def test_click_ap_matches_uniseg3d_loop_exactly():
    rng = np.random.default_rng(4)
    ious, probs = rng.random(300), rng.choice([0.1, 0.5, 0.7], 300) + rng.random(300) * 0.01
    expected = 0
    for i in range(10):
        expected += reference_click_ap(ious, probs, 0.5 + 0.05 * i)
    result = click_ap(ious, probs)
    assert result["click_ap"] == expected / 10.0
    assert result["click_ap25"] == reference_click_ap(ious, probs, 0.25)
