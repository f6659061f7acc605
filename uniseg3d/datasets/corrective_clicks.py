"""Corrective click simulation for interactive segmentation, after AGILE3D's evaluation protocol.

numpy + scipy only. Labels are target-object indices 0..K-1, -1 for background (anything that
is not a target). Each click goes to the deepest point of the deepest error region, where a
region is the set of error points sharing one (gt, pred) label pair (ywyue/AGILE3D,
`utils/seg.py: get_simulated_clicks`); see `error_regions` for the details AGILE3D fixes.

AGILE3D's loop: round 0 starts from an all-background prediction (`initial_prediction`) and
clicks every error region, i.e. one click per target at its deepest point (`error_clicks`);
each later round adds one click (`next_click`). Predictions at clicked points are overwritten
with the click labels (`apply_clicks`) before the IoU is measured and the next click simulated.
Clicks are simulated on the voxelised scene (5 cm voxels, the raw coordinates of one point per
voxel) and the IoU is measured on the full-resolution points, pred_full = pred[inverse_map].
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


def _depths(coords: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Distance of each point of `inside` (in index order) to the nearest point outside it.

    Searched first among the outside points in the inside points' box grown by its largest
    side: any outside point beyond that box is farther than that side from every inside point,
    so a neighbour found within it is the nearest. Only points left without one search all."""
    own, others = coords[inside], coords[~inside]
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


def error_regions(coords: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> list[ErrorRegion]:
    """The error regions of `pred` against `gt` (both (N,) int labels), deepest first.

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
    error = gt != pred
    if not error.any():
        return []
    pairs = np.unique(np.stack([gt[error], pred[error]], axis=1), axis=0)
    regions = []
    for gt_label, pred_label in pairs.tolist():
        inside = (gt == gt_label) & (pred == pred_label)
        if inside.all():
            depth, deepest = float("inf"), _nearest_centroid(coords, inside)
        else:
            depths = _depths(coords, inside)
            best = int(np.argmax(depths))
            depth, deepest = float(depths[best]), int(np.flatnonzero(inside)[best])
        regions.append(ErrorRegion(gt_label, pred_label, int(inside.sum()), depth, deepest))
    regions.sort(key=lambda r: (-r.depth, _agile_key(r.gt, r.pred), r.gt, r.pred))
    return regions


def error_clicks(coords: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> list[Click]:
    """One click per error region, deepest region first (AGILE3D's round 0).

    Each click is at the region's deepest point with the region's gt label. AGILE3D shuffles
    the order of these clicks at random; here it is deepest first.
    """
    return [Click(r.deepest, r.gt) for r in error_regions(coords, gt, pred)]


STRATEGIES = CORRECTIVE_CLICKS  # where in the chosen error region a corrective click goes


def next_click(coords: np.ndarray, gt: np.ndarray, pred: np.ndarray, strategy: str = "deepest",
               rng: np.random.Generator | None = None) -> Click | None:
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
    regions = error_regions(coords, gt, pred)
    if not regions:
        return None
    region = regions[0]
    if strategy == "random":
        members = np.flatnonzero((np.asarray(gt) == region.gt)
                                 & (np.asarray(pred) == region.pred))
        return Click(int(rng.choice(members)), region.gt)
    return Click(region.deepest, region.gt)


def apply_clicks(pred: np.ndarray, clicks: list[Click]) -> np.ndarray:
    """A copy of `pred` with each clicked point set to its click's label (AGILE3D does this)."""
    out = np.array(pred, dtype=np.int64, copy=True)
    for click in clicks:
        out[click.point] = click.label
    return out


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
