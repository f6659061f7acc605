"""AGILE3D-style corrective clicks on small point sets whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from uniseg3d.datasets.corrective_clicks import (
    NEIGHBOURS, Click, deepest_point, error_clicks, error_regions, initial_prediction,
    multi_object_labels, next_click, single_object_labels)


def line(n: int) -> np.ndarray:
    """Points x = 0 .. n-1 on the x axis, index = x."""
    return np.stack([np.arange(n), np.zeros(n), np.zeros(n)], axis=1).astype(np.float64)


def grid(nx: int, ny: int) -> np.ndarray:
    """Points (x, y, 0) of an nx x ny unit grid, index = x * ny + y."""
    x, y = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    return np.stack([x.ravel(), y.ravel(), np.zeros(nx * ny)], axis=1).astype(np.float64)


def labels(n: int, spans: dict[int, list[range]]) -> np.ndarray:
    """-1 everywhere, label on each index range given for it."""
    out = np.full(n, -1, dtype=np.int64)
    for label, ranges in spans.items():
        for r in ranges:
            out[list(r)] = label
    return out


def test_deepest_point_of_a_block_is_its_centre() -> None:
    # 9 x 9 grid, block x, y in 2..6: the centre (4, 4) is 3 from the ring outside, the rest
    # of the block at most 2.
    coords = grid(9, 9)
    inside = (coords[:, 0] >= 2) & (coords[:, 0] <= 6) & (coords[:, 1] >= 2) & (coords[:, 1] <= 6)
    assert deepest_point(coords, inside) == 4 * 9 + 4


def test_deepest_point_ties_go_to_the_smallest_index() -> None:
    # Inside x = 2 and x = 3, both 1 from the outside; x = 3 is stored first (index 0).
    coords = line(6)[[3, 0, 1, 2, 4, 5]]
    inside = np.array([True, False, False, True, False, False])
    assert deepest_point(coords, inside) == 0
    assert deepest_point(coords[::-1], inside[::-1]) == 2


def test_deepest_point_with_nothing_outside_is_nearest_the_centroid() -> None:
    coords = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0], [9, 0, 0]], np.float64)
    assert deepest_point(coords, np.ones(5, bool)) == 3  # centroid x = 3


def test_deeper_error_region_wins_over_a_bigger_shallow_one() -> None:
    # 10 x 10 grid; object 0 on x <= 4. Missed: the 3 x 3 block x 1..3, y 3..5 (9 points, its
    # centre (2, 4) is 2 from the outside). Leak: the strip x 5..9, y 4..5 (10 points, depth 1).
    coords = grid(10, 10)
    x, y = coords[:, 0], coords[:, 1]
    gt = np.where(x <= 4, 0, -1)
    missed = (x >= 1) & (x <= 3) & (y >= 3) & (y <= 5)
    leak = (x >= 5) & (y >= 4) & (y <= 5)
    pred = np.where((gt == 0) & ~missed | leak, 0, -1)
    regions = error_regions(coords, gt, pred)
    assert [(r.gt, r.pred, r.size, r.depth) for r in regions] == [(0, -1, 9, 2.0), (-1, 0, 10, 1.0)]
    assert next_click(coords, gt, pred) == Click(point=2 * 10 + 4, label=0)


def test_the_deepest_leak_gives_a_negative_click() -> None:
    # Object 0 on x 0..9; pred misses 7..9 (depth 2 at x = 8) and leaks onto 10..14
    # (depth 3 at x = 12: 3 from x = 9, an error point of the other region, and from x = 15).
    gt = labels(20, {0: [range(0, 10)]})
    pred = labels(20, {0: [range(0, 7), range(10, 15)]})
    assert next_click(line(20), gt, pred) == Click(point=12, label=-1)


def test_the_deepest_miss_gives_a_positive_click() -> None:
    # Pred misses 3..9 (depth 4 at x = 6) and leaks onto 10..14 (depth 3).
    gt = labels(20, {0: [range(0, 10)]})
    pred = labels(20, {0: [range(0, 3), range(10, 15)]})
    assert next_click(line(20), gt, pred) == Click(point=6, label=0)


def test_a_confused_part_is_clicked_with_its_true_object() -> None:
    # gt: 0 on 0..4, 1 on 5..14; pred says 0 on 5..9 too. Region (1, 0) is 5..9, depth 3 at 7.
    gt = labels(20, {0: [range(0, 5)], 1: [range(5, 15)]})
    pred = labels(20, {0: [range(0, 10)], 1: [range(10, 15)]})
    assert next_click(line(20), gt, pred) == Click(point=7, label=1)


def test_regions_are_label_pairs_not_spatial_clusters() -> None:
    # One (gt -1, pred 0) region in two pieces, 2..3 and 10..14: 7 points, deepest x = 12.
    gt = labels(20, {})
    pred = labels(20, {0: [range(2, 4), range(10, 15)]})
    regions = error_regions(line(20), gt, pred)
    assert [(r.gt, r.pred, r.size, r.depth, r.deepest) for r in regions] == [(-1, 0, 7, 3.0, 12)]


def test_equal_depth_regions_follow_agile3d_cluster_key() -> None:
    # Missed 2..4 (gt 0, pred -1) and leak 9..11 (gt -1, pred 0), both depth 2. AGILE3D's keys
    # (gt + 1) * 96 + (pred + 1) * 11 are 96 and 11: the leak comes first.
    gt = labels(15, {0: [range(0, 7)]})
    pred = labels(15, {0: [range(0, 2), range(5, 7), range(9, 12)]})
    regions = error_regions(line(15), gt, pred)
    assert [(r.gt, r.pred, r.depth) for r in regions] == [(-1, 0, 2.0), (0, -1, 2.0)]
    assert next_click(line(15), gt, pred) == Click(point=10, label=-1)
    assert next_click(line(15), gt, pred) == next_click(line(15), gt.copy(), pred.copy())


def test_no_error_no_click() -> None:
    gt = labels(10, {0: [range(2, 6)]})
    assert next_click(line(10), gt, gt.copy()) is None
    assert error_clicks(line(10), gt, gt.copy()) == []


def test_round_zero_clicks_every_object_at_its_deepest_point() -> None:
    # -1 on 0..2 and 17..19, object 0 on 3..7 (depth 3 at 5), object 1 on 8..16 (depth 5 at 12).
    gt = labels(20, {0: [range(3, 8)], 1: [range(8, 17)]})
    clicks = error_clicks(line(20), gt, initial_prediction(20))
    assert clicks == [Click(12, 1), Click(5, 0)]


def test_single_object_round_zero_is_the_deepest_point() -> None:
    coords = grid(9, 9)
    instances = np.zeros(81, dtype=np.int64)
    block = (coords[:, 0] >= 2) & (coords[:, 0] <= 6) & (coords[:, 1] >= 2) & (coords[:, 1] <= 6)
    instances[block] = 7
    gt = single_object_labels(instances, 7)
    assert np.array_equal(gt, np.where(block, 0, -1))
    assert error_clicks(coords, gt, initial_prediction(81)) == [Click(40, 0)]


def test_multi_object_labels_and_the_initial_prediction() -> None:
    instances = np.array([5, 5, 9, 2, 9, 0])
    gt = multi_object_labels(instances, [9, 5])
    assert gt.tolist() == [1, 1, 0, -1, 0, -1]
    assert initial_prediction(6).tolist() == [-1] * 6


def test_deepest_point_needs_a_point_inside() -> None:
    with pytest.raises(ValueError):
        deepest_point(line(3), np.zeros(3, bool))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_region_depths_match_a_dense_reference(seed):
    # clustered labels, so that some points lie deep inside their region (beyond the nearest
    # neighbours searched first) and others on its border
    rng = np.random.default_rng(seed)
    coords = rng.uniform(0, 4, size=(1500, 3)) * [2, 1, 1]
    gt = np.floor(coords[:, 0] / 2).astype(np.int64) * 2 - 1  # slabs -1, 1, 3 of 2 m
    pred = np.where(coords[:, 1] < 1.5, gt, -1)  # blocks of missed points
    pred[(coords[:, 1] > 3) & (gt == -1)] = 1  # a leak
    pred[rng.random(1500) < 0.03] = 3  # scattered noise
    regions = error_regions(coords, gt, pred)
    distances = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    for region in regions:
        inside = (gt == region.gt) & (pred == region.pred)
        depth = distances[np.ix_(inside, ~inside)].min(1)
        assert region.size == inside.sum()
        assert region.depth == pytest.approx(depth.max())
        assert region.deepest == np.flatnonzero(inside)[np.argmax(depth)]
    assert [r.depth for r in regions] == sorted((r.depth for r in regions), reverse=True)
    tree = cKDTree(coords)
    assert error_regions(coords, gt, pred, tree) == regions
    # some deepest point lies beyond its nearest neighbours (the exact fallback was needed)
    assert any(r.depth > tree.query(coords[r.deepest], k=NEIGHBOURS)[0][-1] for r in regions)
