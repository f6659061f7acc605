"""Panoptic PQ / SQ / RQ: worked by hand, properties, and a cross-check against a loop
re-implementation of mmdet3d's `EvalPanoptic.add_panoptic_sample` / `get_pq`."""

from __future__ import annotations

import math

import numpy as np
import pytest

from uniseg3d.metrics.panoptic import PanopticSegmentation, evaluate_panoptic

NAMES = ("wall", "floor", "chair", "table", "sofa")


def labelled(n: int, spans: list[tuple[int, int, int, int]]) -> PanopticSegmentation:
    semantic = np.full(n, -1)
    instance = np.full(n, -1)
    for start, stop, cls, inst in spans:
        semantic[start:stop], instance[start:stop] = cls, inst
    return PanopticSegmentation(semantic, instance)


def test_hand_worked_scene():
    # GT: wall 0..99 as two wall instances (stuff: one segment), floor 100..199, chair A
    # 200..299, chair B 300..349, table T 350..399, 400..449 unlabelled (removed first).
    # Pred: wall 0..89 and 400..449 (the latter removed) -> wall IoU 90/100 = 0.9, TP;
    # floor 90..199 -> IoU 100/110, TP; chair 7 on 200..249: IoU with A 50/100 = 0.5, strict,
    # no match -> FP, and A a FN; chair 8 on 250..259 + 300..349: IoU with B 50/60 -> TP;
    # table 9 on 260..299 (GT chair points): FP, and T a FN.
    # wall PQ = 0.9; floor 10/11; chair SQ 5/6, RQ 1 / (1 + 1/2 + 1/2) = 1/2, PQ 5/12;
    # table SQ 0 (no TP), RQ 0, PQ 0; sofa absent everywhere: NaN, skipped.
    gt = labelled(450, [(0, 50, 0, 5), (50, 100, 0, 6), (100, 200, 1, 0), (200, 300, 2, 1),
                        (300, 350, 2, 2), (350, 400, 3, 3)])
    pred = labelled(450, [(0, 90, 0, 0), (400, 450, 0, 0), (90, 200, 1, 1), (200, 250, 2, 7),
                          (250, 260, 2, 8), (300, 350, 2, 8), (260, 300, 3, 9)])
    result = evaluate_panoptic([gt], [pred], NAMES)
    classes = result["classes"]
    assert classes["wall"]["pq"] == pytest.approx(0.9)
    assert classes["floor"]["pq"] == pytest.approx(10 / 11)
    assert (classes["chair"]["tp"], classes["chair"]["fp"], classes["chair"]["fn"]) == (1, 1, 1)
    assert classes["chair"]["sq"] == pytest.approx(5 / 6)
    assert classes["chair"]["rq"] == pytest.approx(0.5)
    assert classes["chair"]["pq"] == pytest.approx(5 / 12)
    assert classes["table"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 1, "fn": 1}
    assert math.isnan(classes["sofa"]["pq"])
    assert result["pq"] == pytest.approx((0.9 + 10 / 11 + 5 / 12 + 0.0) / 4)
    assert result["pq_things"] == pytest.approx(5 / 24)
    assert result["pq_stuff"] == pytest.approx((0.9 + 10 / 11) / 2)
    assert result["rq_things"] == pytest.approx(0.25)


def test_perfect_and_relabelled_predictions_score_one():
    gt = labelled(300, [(0, 100, 0, 0), (100, 150, 2, 4), (150, 300, 3, 9)])
    pred = labelled(300, [(0, 100, 0, 77), (100, 150, 2, 1), (150, 300, 3, 2)])
    result = evaluate_panoptic([gt], [pred], NAMES)
    assert (result["pq"], result["sq"], result["rq"]) == (1.0, 1.0, 1.0)


def test_min_points_filters_small_unmatched_segments():
    gt = labelled(200, [(0, 100, 2, 0), (100, 200, 1, 0)])
    pred = labelled(200, [(0, 100, 2, 0), (100, 197, 1, 0), (197, 200, 3, 1)])  # 3-point FP
    assert evaluate_panoptic([gt], [pred], NAMES)["classes"]["table"]["fp"] == 1
    assert evaluate_panoptic([gt], [pred], NAMES, min_points=5)["classes"]["table"]["fp"] == 0


def reference_panoptic(scenes, num_classes, stuff):
    """mmdet3d's per-class loop: instance ids + 1 (0 = none), ignored GT points removed,
    np.unique areas, offset-coded intersections, IoU > 0.5, FP / FN with >= 1 point; then
    sq = iou / max(tp, eps), rq = tp / max(tp + fp/2 + fn/2, eps)."""
    tp, fp, fn = (np.zeros(num_classes, dtype=int) for _ in range(3))
    iou_sum = np.zeros(num_classes)
    offset = 2 ** 16
    for (gs, gi), (ps, pi) in scenes:
        gi, pi = gi + 1, pi + 1
        keep = gs != num_classes  # the "unlabelled" class
        gs, gi, ps, pi = gs[keep], gi[keep], ps[keep], pi[keep]
        for cl in range(num_classes):
            p_in = pi * (ps == cl)
            g_in = gi * (gs == cl)
            u_pred, c_pred = np.unique(p_in[p_in > 0], return_counts=True)
            u_gt, c_gt = np.unique(g_in[g_in > 0], return_counts=True)
            pred_index = {v: k for k, v in enumerate(u_pred)}
            gt_index = {v: k for k, v in enumerate(u_gt)}
            both = (p_in > 0) & (g_in > 0)
            combo, c_combo = np.unique(p_in[both] + offset * g_in[both], return_counts=True)
            g_lab, p_lab = combo // offset, combo % offset
            gt_areas = np.array([c_gt[gt_index[v]] for v in g_lab], dtype=int)
            pred_areas = np.array([c_pred[pred_index[v]] for v in p_lab], dtype=int)
            ious = c_combo.astype(float) / (gt_areas + pred_areas - c_combo).astype(float)
            hit = ious > 0.5
            tp[cl] += hit.sum()
            iou_sum[cl] += np.sum(ious[hit])
            fn[cl] += len(u_gt) - len(set(g_lab[hit].tolist()))
            fp[cl] += len(u_pred) - len(set(p_lab[hit].tolist()))
    sq = iou_sum / np.maximum(tp.astype(np.double), 1e-15)
    rq = tp / np.maximum(tp + 0.5 * fp + 0.5 * fn, 1e-15)
    return sq * rq, sq, rq


@pytest.mark.parametrize("seed", range(4))
def test_matches_mmdet3d_loop_reference(seed):
    rng = np.random.default_rng(seed)
    num, stuff, scenes = 6, (0, 1), []
    for _ in range(3):
        n = 3000
        gs = rng.integers(0, num + 1, n)  # num = unlabelled
        gi = np.where(np.isin(gs, stuff), gs, rng.integers(0, 8, n))
        gs, gi = np.sort(gs), gi[np.argsort(gs, kind="stable")]  # blocky segments
        ps = np.where(rng.random(n) < 0.8, gs, rng.integers(0, num, n))
        ps[ps == num] = 2
        pi = np.where(np.isin(ps, stuff), ps, np.where(rng.random(n) < 0.9, gi, 9))
        scenes.append(((gs, gi), (ps, pi)))
    result = evaluate_panoptic([PanopticSegmentation(*g) for g, _ in scenes],
                               [PanopticSegmentation(*p) for _, p in scenes],
                               [str(c) for c in range(num)], stuff)
    pq, sq, rq = reference_panoptic(scenes, num, stuff)
    ours = np.array([[result["classes"][str(c)][key] for c in range(num)]
                     for key in ("pq", "sq", "rq")])
    np.testing.assert_array_equal(ours, np.array([pq, sq, rq]))
    assert result["pq"] == pq.mean()  # every class occurs: mmdet3d's mean, to the digit
    assert result["pq_things"] == np.mean([float(v) for v in pq[2:]])
