"""Corrective click simulation for interactive segmentation, after AGILE3D's evaluation protocol.

numpy + scipy only. Labels are target-object indices 0..K-1, -1 for background (anything that
is not a target). Each click goes to the deepest point of the deepest error region, where a
region is the set of error points sharing one (gt, pred) label pair (ywyue/AGILE3D,
`utils/seg.py: get_simulated_clicks`); see `error_regions` for the details AGILE3D fixes.

AGILE3D's loop: round 0 starts from an all-background prediction (`initial_prediction`) and
clicks every error region, i.e. one click per target at its deepest point (`error_clicks`);
each later round adds one click (`next_click`). AGILE3D overwrites the predictions at clicked
points with the click labels before it measures the IoU; uniseg3d's models force a clicked
superpoint to its click's label (`model.click_objects`), which covers that. AGILE3D simulates
clicks on the voxelised scene (5 cm voxels) and measures the IoU on the full-resolution points;
`pipelines.interactive` does both on the points themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from uniseg3d.config import CORRECTIVE_CLICKS

BACKGROUND = -1


@dataclass(frozen=True)
class Click:
    """One simulated click: the point index and its label (object index, or -1 = negative)."""

    point: int
    label: int


@dataclass(frozen=True)
class ErrorRegion:
    """The error points sharing one (gt, pred) pair, with the deepest of them."""

    gt: int
    pred: int
    size: int  # number of points
    depth: float  # distance of the deepest point to the nearest point outside the region
    deepest: int  # index of the deepest point


NEIGHBOURS = 16  # nearest neighbours searched first for a point of another region


def _depths(coords: np.ndarray, inside: np.ndarray, points: np.ndarray | None = None
            ) -> np.ndarray:
    """Distance of each point of `inside` (in index order), or of each of `points` (indices of
    inside points), to the nearest point outside it.

    Searched first among the outside points in the points' box grown by its largest side: any
    outside point beyond that box is farther than that side from every one of the points, so a
    neighbour found within it is the nearest. Only points left without one search all."""
    own = coords[inside] if points is None else coords[points]
    others = coords[~inside]
    lo, hi = own.min(0), own.max(0)
    margin = float((hi - lo).max())
    near = others[((others >= lo - margin) & (others <= hi + margin)).all(1)]
    depths = np.full(len(own), np.inf)
    if len(near):
        depths = cKDTree(near).query(own, k=1, distance_upper_bound=margin)[0]
    far = np.isinf(depths)
    if far.any():
        depths[far] = cKDTree(others).query(own[far], k=1)[0]
    return np.asarray(depths, dtype=np.float64)


def _region_depths(coords: np.ndarray, key: np.ndarray, error: np.ndarray,
                   tree: cKDTree | None) -> np.ndarray:
    """Depth of every error point (in index order) in its region (the points of its `key`):
    exact, from its `NEIGHBOURS` nearest neighbours when one of them lies in another region
    (the first such is the nearest), else by `_depths` over its region's outside."""
    tree = cKDTree(coords) if tree is None else tree
    k = min(NEIGHBOURS, len(coords))
    distances, neighbours = tree.query(coords[error], k=k)
    distances, neighbours = distances.reshape(len(error), k), neighbours.reshape(len(error), k)
    other = key[neighbours] != key[error][:, None]
    depths = np.where(other.any(1), distances[np.arange(len(error)), other.argmax(1)], np.inf)
    for region in np.unique(key[error[np.isinf(depths)]]):
        inside = key == region
        if inside.all():
            continue  # nothing outside: infinitely deep
        rows = np.flatnonzero(np.isinf(depths) & (key[error] == region))
        depths[rows] = _depths(coords, inside, error[rows])
    return depths


def _nearest_centroid(coords: np.ndarray, inside: np.ndarray) -> int:
    members = np.flatnonzero(inside)
    offsets = coords[members] - coords[members].mean(axis=0)
    return int(members[np.argmin(np.einsum("ij,ij->i", offsets, offsets))])


def deepest_point(coords: np.ndarray, inside: np.ndarray) -> int:
    """Index of the point of `inside` (bool (N,)) farthest from every point outside it.

    Euclidean distance in `coords` (N, 3); ties go to the smallest index. With nothing outside,
    the point of `inside` nearest its centroid.
    """
    coords = np.asarray(coords, dtype=np.float64)
    inside = np.asarray(inside, dtype=bool).reshape(len(coords))
    if not inside.any():
        raise ValueError("deepest_point needs at least one point inside")
    if inside.all():
        return _nearest_centroid(coords, inside)
    return int(np.flatnonzero(inside)[np.argmax(_depths(coords, inside))])


def _agile_key(gt: int, pred: int) -> int:
    return (gt + 1) * 96 + (pred + 1) * 11


def error_regions(coords: np.ndarray, gt: np.ndarray, pred: np.ndarray,
                  tree: cKDTree | None = None) -> list[ErrorRegion]:
    """The error regions of `pred` against `gt` (both (N,) int labels), deepest first; `tree`,
    a `cKDTree` of `coords` that a caller keeps across clicks.

    As AGILE3D (`utils/seg.py`: `get_simulated_clicks`, `measure_error_size`,
    `get_next_click_coo_torch`):

    * error points are those with gt != pred, grouped by their (gt, pred) pair only, with no
      spatial clustering (no DBSCAN, no connected components): a pair in separate blobs is one
      region;
    * a point's depth is its Euclidean distance to the nearest point outside its region (correct
      points and other regions alike); a region's size for ranking is the depth of its deepest
      point, not its point count (`size` here is informational);
    * the deepest point is the first maximum, i.e. equal depths go to the smallest index.

    Where AGILE3D is silent or differs: regions of equal depth are ordered by AGILE3D's cluster
    key in our labels, (gt + 1) * 96 + (pred + 1) * 11 (it sorts keys ascending, then stably by
    depth), then by (gt, pred); a region covering every point (AGILE3D would crash) gets depth
    inf and the point nearest its centroid; distances are float64 here, float32 in AGILE3D.
    """
    coords = np.asarray(coords, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.int64).reshape(len(coords))
    pred = np.asarray(pred, dtype=np.int64).reshape(len(coords))
    error = np.flatnonzero(gt != pred)
    if not len(error):
        return []
    width = int(max(gt.max(), pred.max())) + 2
    key = (gt + 1) * width + pred + 1  # one value per (gt, pred) pair
    depths = _region_depths(coords, key, error, tree)
    regions = []
    for region in np.unique(key[error]):
        rows = np.flatnonzero(key[error] == region)
        members = error[rows]
        gt_label, pred_label = int(gt[members[0]]), int(pred[members[0]])
        if len(members) == len(coords):
            depth, deepest = float("inf"), _nearest_centroid(coords, key == region)
        else:
            best = int(np.argmax(depths[rows]))
            depth, deepest = float(depths[rows][best]), int(members[best])
        regions.append(ErrorRegion(gt_label, pred_label, len(members), depth, deepest))
    regions.sort(key=lambda r: (-r.depth, _agile_key(r.gt, r.pred), r.gt, r.pred))
    return regions


def error_clicks(coords: np.ndarray, gt: np.ndarray, pred: np.ndarray,
                 tree: cKDTree | None = None) -> list[Click]:
    """One click per error region, deepest region first (AGILE3D's round 0).

    Each click is at the region's deepest point with the region's gt label. AGILE3D shuffles
    the order of these clicks at random; here it is deepest first.
    """
    return [Click(r.deepest, r.gt) for r in error_regions(coords, gt, pred, tree)]


STRATEGIES = CORRECTIVE_CLICKS  # where in the chosen error region a corrective click goes


def next_click(coords: np.ndarray, gt: np.ndarray, pred: np.ndarray, strategy: str = "deepest",
               rng: np.random.Generator | None = None, tree: cKDTree | None = None
               ) -> Click | None:
    """The click in the deepest error region; None when pred == gt. `deepest` (AGILE3D) puts
    it at the region's deepest point, `random` at a uniformly drawn point of the region (from
    `rng`).

    Its label is the gt label there: a target index is a positive click for that object (a
    missed or confused part), -1 a negative click (a leak onto background).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown corrective click strategy {strategy!r}; choose one of "
                         f"{', '.join(STRATEGIES)}")
    if strategy == "random" and rng is None:
        raise ValueError("the random corrective click strategy needs rng")
    regions = error_regions(coords, gt, pred, tree)
    if not regions:
        return None
    region = regions[0]
    if strategy == "random":
        members = np.flatnonzero((np.asarray(gt) == region.gt)
                                 & (np.asarray(pred) == region.pred))
        return Click(int(rng.choice(members)), region.gt)
    return Click(region.deepest, region.gt)


def initial_prediction(num_points: int) -> np.ndarray:
    """AGILE3D's prediction before any click: every point background."""
    return np.full(int(num_points), BACKGROUND, dtype=np.int64)


def single_object_labels(instances: np.ndarray, target: int) -> np.ndarray:
    """Binary labels of single-object mode: 0 on instance `target`, -1 elsewhere."""
    return np.where(np.asarray(instances) == target, 0, BACKGROUND).astype(np.int64)


def multi_object_labels(instances: np.ndarray, targets: list[int]) -> np.ndarray:
    """Labels of multi-object mode: i on instance `targets[i]`, -1 on everything else."""
    instances = np.asarray(instances)
    labels = np.full(instances.shape, BACKGROUND, dtype=np.int64)
    for index, target in enumerate(targets):
        labels[instances == target] = index
    return labels
