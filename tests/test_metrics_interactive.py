"""NoC / IoU@k after AGILE3D on scripted IoU sequences worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from uniseg3d.metrics.interactive import (
    IOU_CLICKS, MAX_CLICKS, NOC_THRESHOLDS, iou_at, multi_object_clicks, noc, object_ious,
    summarise, summarise_per_scene)
from uniseg3d.metrics.prompt import mask_ious

# A reaches 0.5 / 0.65 / 0.8 / 0.85 / 0.9 at clicks 2..6 and stops there (6 clicks).
A = [0.4, 0.55, 0.7, 0.82, 0.86, 0.91]
# B runs all 20 clicks, reaching 0.5 at click 6 and never 0.65.
B = [0.2] * 5 + [0.6] * 15


def test_constants() -> None:
    assert NOC_THRESHOLDS == (0.5, 0.65, 0.8, 0.85, 0.9)
    assert IOU_CLICKS == (1, 3, 5, 10, 15)
    assert MAX_CLICKS == 20


def test_noc_counts_the_first_click_reaching_the_target() -> None:
    assert [noc(A, t) for t in NOC_THRESHOLDS] == [2.0, 3.0, 4.0, 5.0, 6.0]
    assert noc([0.6, 0.4, 0.9], 0.5) == 1.0  # first reach, even if it drops afterwards


def test_noc_equality_reaches_the_target() -> None:
    assert noc([0.3, 0.5, 0.7], 0.5) == 2.0
    assert noc([0.64, 0.65], 0.65) == 2.0


def test_noc_counts_the_budget_when_never_reached() -> None:
    assert noc(B, 0.65) == 20.0
    assert noc([0.1, 0.2], 0.5) == 20.0  # short sequence
    assert noc([0.1, 0.2, 0.9], 0.5, budget=2) == 2.0  # reached only past the budget


def test_iou_at_reads_the_kth_click_and_carries_the_last_forward() -> None:
    assert [iou_at(A, k) for k in IOU_CLICKS] == [0.4, 0.7, 0.86, 0.91, 0.91]
    assert [iou_at(B, k) for k in IOU_CLICKS] == [0.2, 0.2, 0.2, 0.6, 0.6]
    with pytest.raises(ValueError):
        iou_at(A, 0)


def test_object_ious_have_no_epsilon() -> None:
    gt = np.array([0, 0, 1, 1, -1, -1])
    pred = np.array([0, -1, 1, 1, 1, -1])
    ious = object_ious(gt, pred, 3)
    assert ious[:2].tolist() == [0.5, 2 / 3]
    assert np.isnan(ious[2])
    assert noc([ious[0]], 0.5) == 1.0
    assert mask_ious(gt[None] == 0, pred[None] == 0)[0] < 0.5  # the epsilon would miss it


def test_multi_object_clicks_count_per_object() -> None:
    clicks = multi_object_clicks(2)
    assert len(clicks) == 39  # 2, 3, ..., 40 clicks in all
    assert clicks[:4].tolist() == [1.0, 1.5, 2.0, 2.5] and clicks[-1] == 20.0
    assert multi_object_clicks(1).tolist() == list(range(1, 21))


def test_multi_object_scene_noc_and_iou() -> None:
    # Scene IoU i / 20 (capped at 1) after round i, i.e. after (2 + i) / 2 clicks per object.
    clicks = multi_object_clicks(2)
    ious = np.minimum(np.arange(39) / 20, 1.0)
    assert [noc(ious, t, clicks=clicks) for t in NOC_THRESHOLDS] == [6.0, 7.5, 9.0, 9.5, 10.0]
    assert [iou_at(ious, k, clicks) for k in IOU_CLICKS] == [0.0, 0.2, 0.4, 0.9, 1.0]
    result = summarise([ious], [clicks])
    assert result["noc@65"] == 7.5 and result["iou@10"] == 0.9 and result["objects"] == 1


def test_summarise_means_over_objects() -> None:
    result = summarise([A, B])
    expected = {"noc@50": 4.0, "noc@65": 11.5, "noc@80": 12.0, "noc@85": 12.5, "noc@90": 13.0,
                "iou@1": 0.3, "iou@3": 0.45, "iou@5": 0.53, "iou@10": 0.755, "iou@15": 0.755}
    assert set(result) == set(expected) | {"objects"}
    assert result["objects"] == 2
    for key, value in expected.items():
        assert result[key] == pytest.approx(value), key


def test_summarise_per_scene_groups_by_scene_id() -> None:
    c = [0.95]
    per_scene = summarise_per_scene(["s2", "s1", "s2"], [A, c, B])
    assert list(per_scene) == ["s2", "s1"]
    assert per_scene["s2"] == summarise([A, B])
    assert per_scene["s1"]["objects"] == 1
    assert [per_scene["s1"][f"noc@{t}"] for t in (50, 65, 80, 85, 90)] == [1.0] * 5
    assert [per_scene["s1"][f"iou@{k}"] for k in IOU_CLICKS] == [0.95] * 5
    with pytest.raises(ValueError):
        summarise_per_scene(["s1"], [A, B])
