"""Open-vocabulary AP: ScanNet200 subsets and free-text (Replica) class lists."""

from __future__ import annotations

import math

import numpy as np
import pytest

from uniseg3d.datasets.classes import scannet200
from uniseg3d.metrics.instance import InstanceGT, InstancePredictions
from uniseg3d.metrics.open_vocab import (
    evaluate_open_vocab, evaluate_scannet200_instances, scannet200_subsets)


def blocks(n: int, spans: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Labels and instance ids: span k = (start, stop, class) is instance k."""
    labels, instances = np.full(n, -1), np.full(n, -1)
    for k, (start, stop, cls) in enumerate(spans):
        labels[start:stop], instances[start:stop] = cls, k
    return labels, instances


def masks(n: int, spans: list[tuple[int, int]]) -> np.ndarray:
    out = np.zeros((len(spans), n), dtype=bool)
    for k, (start, stop) in enumerate(spans):
        out[k, start:stop] = True
    return out


def test_scannet200_subsets_partition_the_classes():
    subsets = scannet200_subsets()
    names = set(scannet200().names)
    assert set(subsets["base"]) | set(subsets["novel"]) == names
    assert set(subsets["head"]) | set(subsets["common"]) | set(subsets["tail"]) == names
    assert not set(subsets["base"]) & set(subsets["novel"])
    assert len(subsets["head"]) + len(subsets["common"]) + len(subsets["tail"]) == 200


def test_free_text_classes_and_subset_means():
    # Replica-like classes sofa / lamp / plant. sofa (0..199) predicted exactly: AP 1; lamp
    # (200..399) predicted with IoU 150/250 = 0.6 -> TP at 0.5, 0.55 only (strict > 0.6 fails at
    # 0.6000000000000001): AP = 2/9, AP50 = AP25 = 1; plant has no GT: NaN.
    # Subset {sofa, plant}: mean over non-NaN = sofa's 1; subset {sofa, lamp}: (1 + 2/9) / 2.
    n = 500
    labels, instances = blocks(n, [(0, 200, 0), (200, 400, 1)])
    pred = InstancePredictions(masks(n, [(0, 200), (250, 450)]), np.array([0, 1]),
                               np.array([0.9, 0.8]))
    result = evaluate_open_vocab([InstanceGT(labels, instances)], [pred],
                                 ["sofa", "lamp", "plant"],
                                 {"seen": ["sofa", "plant"], "both": ["sofa", "lamp"]})
    assert result["classes"]["lamp"]["ap"] == pytest.approx(2 / 9)
    assert math.isnan(result["classes"]["plant"]["ap"])
    assert result["seen"]["ap"] == 1.0
    assert result["both"]["ap"] == pytest.approx((1 + 2 / 9) / 2)
    assert result["both"]["ap50"] == 1.0
    assert result["ap"] == pytest.approx((1 + 2 / 9) / 2)


def test_scannet200_excludes_wall_and_floor():
    # A chair (base, head) predicted exactly; a wall predicted exactly is not evaluated, and its
    # points are void: a chair prediction lying on the wall is ignored, not a false positive.
    names = scannet200().names
    wall, chair = names.index("wall"), names.index("chair")
    n = 400
    labels, instances = blocks(n, [(0, 200, wall), (200, 400, chair)])
    pred = InstancePredictions(masks(n, [(0, 200), (200, 400), (0, 150)]),
                               np.array([wall, chair, chair]), np.array([0.9, 0.5, 0.99]))
    result = evaluate_scannet200_instances([InstanceGT(labels, instances)], [pred])
    assert len(result["classes"]) == 198 and "wall" not in result["classes"]
    assert result["ap"] == 1.0
    assert result["base"]["ap"] == 1.0 and result["head"]["ap"] == 1.0
    assert math.isnan(result["novel"]["ap"]) and math.isnan(result["tail"]["ap25"])
