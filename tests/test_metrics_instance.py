"""Instance AP: hand-worked scenes, properties, and a bit-exact cross-check against a slow,
loop-based re-implementation of ScanNet's `evaluate_semantic_instance.py` algorithm."""

from __future__ import annotations

import math

import numpy as np
import pytest

from uniseg3d.metrics.instance import (
    OVERLAPS, InstanceGT, InstancePredictions, evaluate_instances, evaluate_scannet20_instances,
    instance_ap_table)

NAMES = ("a", "b")
IDS = (1, 2)  # label values of classes "a" and "b"; any other label (0 here) is void


def segment(n: int, *ranges: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    for start, stop in ranges:
        mask[start:stop] = True
    return mask


def preds(masks: list[np.ndarray], labels: list[int], scores: list[float]) -> InstancePredictions:
    return InstancePredictions(np.array(masks).reshape(len(masks), -1), np.array(labels),
                               np.array(scores, dtype=float))


# ---------------------------------------------------------------- reference (the script's loops)

def reference_table(scenes, valid_ids, min_size=100):
    """The official algorithm, literally: per-scene gt2pred / pred2gt lists of dicts, then the
    per overlap / class / scene loops and the step-width integration. `scenes` holds
    (gt_ids encoded label * 1000 + instance, masks, label ids, confidences)."""
    valid_ids = list(valid_ids)
    matches = []
    for s, (gt_ids, masks, labels, confs) in enumerate(scenes):
        gt2pred = {c: [] for c in valid_ids}
        for gid in np.unique(gt_ids):
            if gid != 0 and gid // 1000 in valid_ids:
                gt2pred[gid // 1000].append({"instance_id": int(gid), "matched_pred": [],
                                             "vert_count": int(np.sum(gt_ids == gid))})
        pred2gt = {c: [] for c in valid_ids}
        void = ~np.isin(gt_ids // 1000, valid_ids)
        for k in range(len(masks)):
            if labels[k] not in valid_ids:
                continue
            mask = masks[k] != 0
            if mask.sum() < min_size:
                continue
            pred = {"filename": (s, k), "vert_count": int(mask.sum()), "confidence": confs[k],
                    "void_intersection": int(np.sum(void & mask))}
            matched_gt = []
            for gt in gt2pred[labels[k]]:
                inter = int(np.sum((gt_ids == gt["instance_id"]) & mask))
                if inter > 0:
                    matched_gt.append(dict(gt, intersection=inter))
                    gt["matched_pred"].append(dict(pred, intersection=inter))
            pred["matched_gt"] = matched_gt
            pred2gt[labels[k]].append(pred)
        matches.append((gt2pred, pred2gt))

    ap = np.zeros((len(valid_ids), len(OVERLAPS)))
    for oi, th in enumerate(OVERLAPS):
        visited = {p["filename"]: False for _, p2g in matches for c in valid_ids for p in p2g[c]}
        for li, c in enumerate(valid_ids):
            y_true, y_score, hard_fn, has_gt, has_pred = [], [], 0, False, False
            for gt2pred, pred2gt in matches:
                gts = [g for g in gt2pred[c] if g["vert_count"] >= min_size]
                has_gt = has_gt or bool(gts)
                has_pred = has_pred or bool(pred2gt[c])
                cur_true, cur_score, cur_match = [1.0] * len(gts), [-math.inf] * len(gts), \
                    [False] * len(gts)
                for gi, gt in enumerate(gts):
                    found = False
                    for p in gt["matched_pred"]:
                        if visited[p["filename"]]:
                            continue
                        iou = p["intersection"] / (gt["vert_count"] + p["vert_count"]
                                                   - p["intersection"])
                        if iou > th:
                            if cur_match[gi]:
                                low = min(cur_score[gi], p["confidence"])
                                cur_score[gi] = max(cur_score[gi], p["confidence"])
                                cur_true.append(0.0)
                                cur_score.append(low)
                                cur_match.append(True)
                            else:
                                found = True
                                cur_match[gi] = True
                                cur_score[gi] = p["confidence"]
                                visited[p["filename"]] = True
                    hard_fn += not found
                cur_true = [t for t, m in zip(cur_true, cur_match) if m]
                cur_score = [t for t, m in zip(cur_score, cur_match) if m]
                for p in pred2gt[c]:
                    if any(g["intersection"] / (g["vert_count"] + p["vert_count"]
                                                - g["intersection"]) > th
                           for g in p["matched_gt"]):
                        continue
                    ignore = p["void_intersection"] + sum(
                        g["intersection"] for g in p["matched_gt"] if g["vert_count"] < min_size)
                    if ignore / p["vert_count"] <= th:
                        cur_true.append(0.0)
                        cur_score.append(p["confidence"])
                y_true += cur_true
                y_score += cur_score
            if has_gt and has_pred:
                y_true, y_score = np.array(y_true), np.array(y_score)
                order = np.argsort(y_score)
                cumsum = np.cumsum(y_true[order])
                _, unique_indices = np.unique(y_score[order], return_index=True)
                num_true = cumsum[-1] if len(cumsum) else 0
                precision = np.zeros(len(unique_indices) + 1)
                recall = np.zeros(len(unique_indices) + 1)
                cumsum = np.append(cumsum, 0)
                for i, idx in enumerate(unique_indices):
                    below = cumsum[idx - 1]
                    tp = num_true - below
                    fp = len(order) - idx - tp
                    fn = below + hard_fn
                    precision[i] = float(tp) / (tp + fp)
                    recall[i] = float(tp) / (tp + fn)
                precision[-1], recall[-1] = 1.0, 0.0
                conv = np.append(np.append(np.copy(recall)[0], recall), 0.0)
                ap[li, oi] = np.dot(precision, np.convolve(conv, [-0.5, 0, 0.5], "valid"))
            else:
                ap[li, oi] = 0.0 if has_gt else float("nan")
    return ap


def random_scene(rng: np.random.Generator, valid_ids, n: int = 2500):
    """Encoded GT ids with void, small instances and invalid labels; predictions with perturbed
    copies, merges of neighbours, duplicates, tiny and mislabelled masks and tied scores."""
    gt_ids = np.zeros(n, dtype=np.int64)
    start, inst = 0, 1
    while start < n:
        size = int(rng.choice([30, 80, 99, 100, 150, 300, 500]))
        kind = rng.random()
        label = 0 if kind < 0.15 else (13 if kind < 0.2 else int(rng.choice(valid_ids[:3])))
        gt_ids[start:start + size] = label * 1000 + inst if label else 0
        start, inst = start + size, inst + 1
    gt_ids = gt_ids[rng.permutation(n)] if rng.random() < 0.3 else gt_ids
    objects = [g for g in np.unique(gt_ids) if g // 1000 in valid_ids]
    masks, labels, confs = [], [], []
    for _ in range(int(rng.integers(3, 25))):
        kind = rng.random()
        if objects and kind < 0.6:
            picks = rng.choice(objects, size=min(len(objects), 1 + (rng.random() < 0.3)),
                               replace=False)
            mask = np.isin(gt_ids, picks)
            flip = rng.random(n) < rng.choice([0.0, 0.01, 0.05, 0.2])
            mask = mask ^ (flip & (rng.random(n) < 0.5))
            label = int(picks[0] // 1000) if rng.random() < 0.85 else int(rng.choice(valid_ids))
        else:
            lo = int(rng.integers(0, n - 50))
            mask = segment(n, (lo, lo + int(rng.integers(20, 600))))
            label = int(rng.choice(list(valid_ids) + [13]))
        masks.append(mask)
        labels.append(label)
        confs.append(float(rng.choice([0.25, 0.5, 0.75])) if rng.random() < 0.3
                     else float(rng.random()))
    return gt_ids, np.array(masks).reshape(len(masks), n), labels, confs


def as_inputs(scenes):
    gts = [InstanceGT(gt_ids // 1000, gt_ids % 1000) for gt_ids, *_ in scenes]
    predictions = [InstancePredictions(m, np.array(lab), np.array(c)) for _, m, lab, c in scenes]
    return gts, predictions


@pytest.mark.parametrize("seed", range(6))
def test_matches_reference_loop_implementation_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    valid = [3, 4, 5, 7]
    scenes = [random_scene(rng, valid) for _ in range(4)]
    gts, predictions = as_inputs(scenes)
    ours = instance_ap_table(gts, predictions, valid)
    expected = reference_table(scenes, valid)
    np.testing.assert_array_equal(ours, expected)  # exact, NaN where NaN
    assert not np.isnan(ours).all()


# ----------------------------------------------------------------------------- worked by hand

def test_duplicate_false_positive_strict_threshold_and_empty_class():
    # 1000 points. GT class a: A = 0..199, B = 200..399 (200 points each); 400..999 void.
    # P1 = A exactly, 0.9: TP everywhere.  P2 = 0..149 (IoU 150/200 = 0.75 with A), 0.8: a
    # duplicate of A below 0.75 (FP, score min(0.9, 0.8) = 0.8), unmatched FP from 0.75 on
    # (0.75 > 0.75... is not a match); no void in it, so an FP at every overlap.
    # P3 = 200..299 (IoU 100/200 = 0.5 with B), 0.7: strict, so no match at 0.5 (FP, B a hard
    # FN) but a TP at 0.25.
    # Overlaps >= 0.5: y = [0.7 F, 0.8 F, 0.9 T], 1 hard FN -> (p, r) per threshold
    # (1/3, 1/2), (1/2, 1/2), (1, 1/2), end (1, 0); widths = (r[i-1] - r[i+1]) / 2 with
    # r[-1] = r[0] -> (0, 0, 1/4, 1/4): AP = 1/2.
    # Overlap 0.25: y = [0.7 T, 0.8 F, 0.9 T], no FN -> (2/3, 1), (1/2, 1/2), (1, 1/2), (1, 0);
    # widths (1/4, 1/4, 1/4, 1/4): AP25 = 1/6 + 1/8 + 1/4 + 1/4 = 19/24.
    # Class b has no GT and no prediction: NaN, skipped in the means.
    n = 1000
    gt = InstanceGT(np.where(np.arange(n) < 400, 1, 0), np.where(np.arange(n) < 200, 0, 1))
    p = preds([segment(n, (0, 200)), segment(n, (0, 150)), segment(n, (200, 300))],
              [1, 1, 1], [0.9, 0.8, 0.7])
    result = evaluate_instances([gt], [p], IDS, NAMES)
    assert result["ap"] == pytest.approx(0.5)
    assert result["ap50"] == pytest.approx(0.5)
    assert result["ap25"] == pytest.approx(19 / 24)
    assert math.isnan(result["classes"]["b"]["ap"])
    assert result["classes"]["a"]["ap25"] == result["ap25"]


def test_small_regions_and_void_are_ignored():
    # GT class a: A = 0..149 (150 points), S = 150..199 (50 points: under 100, ignored);
    # class b: B = 600..799; everything else void (label 0).
    # Q1 = 0..98 (99 points, 0.9): dropped by the 100-point filter.
    # Q2 = 150..259 (S + 60 void = 110 points, 0.95): IoU with S = 50/110, an ignored GT; when
    # unmatched, (60 void + 50 on S) / 110 = 1 > overlap: ignored, never an FP; at 0.25 it
    # matches S and is neither TP nor FP.
    # Q3 = A exactly (0.5): TP.  Q4 = B's points but labelled a (0.6): no void, FP.
    # Q5 = 200..399, all void (0.99): ignored.
    # Class a, every overlap: y = [0.5 T, 0.6 F], S is no FN -> (p, r) = (1/2, 1), (0, 0),
    # end (1, 0); widths (1/2, 1/2, 0): AP = 1/4.  Class b: GT, no prediction: AP 0.
    n = 1000
    index = np.arange(n)
    labels = np.select([index < 200, (index >= 600) & (index < 800)], [1, 2], 0)
    instances = np.select([index < 150, index < 200, (index >= 600) & (index < 800)], [0, 1, 2],
                          -1)
    p = preds([segment(n, (0, 99)), segment(n, (150, 260)), segment(n, (0, 150)),
               segment(n, (600, 800)), segment(n, (200, 400))],
              [1, 1, 1, 1, 1], [0.9, 0.95, 0.5, 0.6, 0.99])
    aps = instance_ap_table([InstanceGT(labels, instances)], [p], IDS)
    np.testing.assert_allclose(aps[0], 0.25)
    np.testing.assert_array_equal(aps[1], 0.0)
    assert evaluate_instances([InstanceGT(labels, instances)], [p], IDS, NAMES)["ap"] == \
        pytest.approx(0.125)


def test_assignment_order_quirk_at_overlap_025_is_reproduced():
    # GT1 = 0..199, GT2 = 200..399 (class a). P1 = 50..349 (150 on each: IoU 150/350 with
    # both), 0.9; P2 = 60..359 (140 / 160: IoU 0.39 and 0.47), 0.4. Nothing matches at >= 0.5.
    # Order (P1, P2): GT1 takes P1 (assigned), P2 is a duplicate FP (0.4); GT2 skips P1 and takes
    # P2 -> y = [0.4 F, 0.4 T, 0.9 T] -> (2/3, 1), (1, 1/2), (1, 0); widths (1/4, 1/2, 1/4):
    # AP25 = 1/6 + 1/2 + 1/4 = 11/12.
    # Order (P2, P1): GT1 takes P2, P1 is a duplicate whose FP gets min(0.4, 0.9) = 0.4 while GT1
    # keeps 0.9; GT2 takes P1 -> y = [0.4 F, 0.9 T, 0.9 T] -> (2/3, 1), (1, 1), (1, 0):
    # AP25 = 1. The official script depends on the prediction order here; so do we.
    n = 500
    gt = InstanceGT(np.where(np.arange(n) < 400, 1, 0), np.arange(n) // 200)
    first = preds([segment(n, (50, 350)), segment(n, (60, 360))], [1, 1], [0.9, 0.4])
    second = preds([segment(n, (60, 360)), segment(n, (50, 350))], [1, 1], [0.4, 0.9])
    assert evaluate_instances([gt], [first], IDS, NAMES)["ap25"] == pytest.approx(11 / 12)
    assert evaluate_instances([gt], [second], IDS, NAMES)["ap25"] == pytest.approx(1.0)
    assert evaluate_instances([gt], [first], IDS, NAMES)["ap"] == 0.0


def test_class_with_gt_but_no_prediction_scores_zero_and_nan_when_nothing():
    n = 300
    gt = InstanceGT(np.ones(n, dtype=int), np.zeros(n, dtype=int))
    nothing = InstancePredictions(np.zeros((0, n), dtype=bool), np.zeros(0, int), np.zeros(0))
    result = evaluate_instances([gt], [nothing], IDS, NAMES)
    assert result["classes"]["a"] == {"ap": 0.0, "ap50": 0.0, "ap25": 0.0}
    assert math.isnan(result["classes"]["b"]["ap50"])
    assert result["ap"] == 0.0


# -------------------------------------------------------------------------------- properties

def perfect(gt_ids: np.ndarray) -> InstancePredictions:
    objects = [g for g in np.unique(gt_ids) if g // 1000 in (3, 4, 5, 7)]
    return InstancePredictions(gt_ids[None, :] == np.array(objects)[:, None],
                               np.array(objects) // 1000, np.linspace(0.1, 0.9, len(objects)))


def test_perfect_predictions_score_one():
    rng = np.random.default_rng(1)
    scenes = [random_scene(rng, [3, 4, 5, 7]) for _ in range(3)]
    gts = [InstanceGT(g // 1000, g % 1000) for g, *_ in scenes]
    result = evaluate_instances(gts, [perfect(g) for g, *_ in scenes], [3, 4, 5, 7], "wxyz")
    assert (result["ap"], result["ap50"], result["ap25"]) == (1.0, 1.0, 1.0)


def test_permutations_and_relabelling_change_nothing():
    rng = np.random.default_rng(2)
    valid = [3, 4, 5, 7]
    scenes = [random_scene(rng, valid) for _ in range(3)]
    gts, predictions = as_inputs(scenes)
    base = instance_ap_table(gts, predictions, valid)
    # Monotone instance relabelling keeps the GT order: the whole table is unchanged.
    shifted = [InstanceGT(g.labels, np.where(g.instances >= 0, g.instances * 7 + 3, -1))
               for g in gts]
    np.testing.assert_array_equal(instance_ap_table(shifted, predictions, valid), base)
    # Any permutation of the predictions or of the instance ids leaves the overlaps >= 0.5 (AP,
    # AP50) unchanged; at 0.25 the official greedy assignment is order dependent (see above).
    permuted = []
    for p in predictions:
        order = rng.permutation(len(p.labels))
        permuted.append(InstancePredictions(p.masks[order], p.labels[order], p.scores[order]))
    relabelled = [InstanceGT(g.labels, rng.permutation(1000)[g.instances]) for g in gts]
    at_least_half = OVERLAPS >= 0.5
    for table in (instance_ap_table(gts, permuted, valid),
                  instance_ap_table(relabelled, predictions, valid)):
        np.testing.assert_array_equal(table[:, at_least_half], base[:, at_least_half])


def test_adding_a_false_positive_never_raises_ap():
    rng = np.random.default_rng(3)
    valid = [3, 4, 5, 7]
    for _ in range(10):
        gt_ids, masks, labels, confs = random_scene(rng, valid)
        gts, predictions = as_inputs([(gt_ids, masks, labels, confs)])
        base = instance_ap_table(gts, predictions, valid)
        label = int(rng.choice(valid))
        others = np.flatnonzero(np.isin(gt_ids // 1000, [v for v in valid if v != label]))
        if others.size < 100:
            continue
        fp = np.isin(np.arange(len(gt_ids)), rng.choice(others, 100, replace=False))
        more = InstancePredictions(np.vstack([masks, fp]), np.append(labels, label),
                                   np.append(confs, rng.random()))
        after = instance_ap_table(gts, [more], valid)
        assert np.all((after <= base + 1e-12) | np.isnan(base))


def test_scannet20_wrapper_uses_semantic20_indices():
    # Wall (0) and floor (1) are void: a "wall" prediction is not evaluated, a chair (4) is.
    n = 400
    semantic = np.where(np.arange(n) < 200, 4, 0)
    gt = InstanceGT(semantic, np.where(semantic == 4, 0, -1))
    p = preds([segment(n, (0, 200)), segment(n, (200, 400))], [4, 0], [0.5, 0.9])
    result = evaluate_scannet20_instances([gt], [p])
    assert result["classes"]["chair"]["ap"] == 1.0
    assert len(result["classes"]) == 18 and "wall" not in result["classes"]
    assert result["ap"] == 1.0


def test_generators_and_scene_count_mismatch():
    gt = InstanceGT(np.ones(200, dtype=int), np.zeros(200, dtype=int))
    p = preds([np.ones(200, dtype=bool)], [1], [1.0])
    assert evaluate_instances(iter([gt]), (q for q in [p]), IDS, NAMES)["ap"] == 1.0
    with pytest.raises(ValueError):
        evaluate_instances([gt, gt], [p], IDS, NAMES)
