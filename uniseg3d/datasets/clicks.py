"""Click prompts for interactive segmentation: one simulated click per object (numpy + scipy only).

Strategies, each returning the index of one point of the instance:

- `center`: the point nearest the instance centroid (mean of its points).
- `rd`: the points ordered by distance to the centroid, the one at rank round(rd * n), clamped
  to n - 1; rd 0 is `center`, rd 1 the farthest point (the paper ablates rd 0.5 and rd 1.0).
- `random`: a uniformly random point, drawn from the given `numpy.random.Generator`.
- `sampled` (UniSeg3D's training click, `PointPromptGeneration(samplePoint=True)`): of a random
  sample of at most 500 of the instance's points (all of them when it has fewer), the one
  nearest the sample's centroid.
- `agile` (AGILE3D's protocol): voxelise the scene at `voxel` metres; among the voxels holding
  points of the instance take the one farthest from every voxel holding a point of anything else
  (other instances and unlabelled points alike); the click is the instance point nearest that
  voxel's centre. With nothing else in the scene it falls back to `center`.

Ties go to the smallest index: points are ranked by (distance, index) and voxels by their
lexicographic (x, y, z) grid index.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

STRATEGIES = ("center", "rd", "random", "agile", "sampled")
SAMPLED_POINTS = 500  # the official training click's sample size


def choose_click(
    coords: np.ndarray,
    mask: np.ndarray,
    strategy: str,
    rng: np.random.Generator | None = None,
    rd: float = 0.5,
    voxel: float = 0.05,
) -> int:
    """Index into `coords` (N, 3) of the click on the points where `mask` (N,) is true."""
    instance = np.where(np.asarray(mask, dtype=bool), 0, -1)
    return int(sample_clicks(coords, instance, np.zeros(1, np.int64), strategy, rng, rd, voxel)[0])


def sample_clicks(
    coords: np.ndarray,
    instance: np.ndarray,
    instances: np.ndarray,
    strategy: str,
    rng: np.random.Generator | None = None,
    rd: float = 0.5,
    voxel: float = 0.05,
) -> np.ndarray:
    """(K,) int64 index of the click on each id in `instances`; `instance` (N,) is -1 for none."""
    if strategy not in STRATEGIES:
        choices = ", ".join(STRATEGIES)
        raise ValueError(f"unknown click strategy {strategy!r}; choose one of {choices}")
    if strategy in ("random", "sampled") and rng is None:
        raise ValueError(f"the {strategy} click strategy needs rng (a numpy.random.Generator)")
    if strategy == "rd" and not 0.0 <= rd <= 1.0:
        raise ValueError(f"rd must lie in [0, 1], got {rd}")
    coords = np.asarray(coords, dtype=np.float64)
    instance = np.asarray(instance)
    ids, wanted = np.unique(np.asarray(instances, dtype=np.int64), return_inverse=True)
    if (ids < 0).any():
        raise ValueError("instance ids must be >= 0 (-1 marks points of no instance)")
    if not len(ids):
        return np.empty(0, np.int64)
    # The points of the requested instances, grouped by instance, ascending index within a group.
    member = np.flatnonzero(np.isin(instance, ids))
    group = np.searchsorted(ids, instance[member])
    order = np.argsort(group, kind="stable")
    member, group = member[order], group[order]
    counts = np.bincount(group, minlength=len(ids))
    if (counts == 0).any():
        raise ValueError(f"no points for instance id(s) {ids[counts == 0].tolist()}: empty mask")
    starts = np.cumsum(counts) - counts

    if strategy == "random":
        clicks = member[starts + rng.integers(0, counts)]
    elif strategy == "sampled":
        clicks = np.array([_sampled_click(coords, member[start:start + count], rng)
                           for start, count in zip(starts, counts)], dtype=np.int64)
    else:
        rank_rd = rd if strategy == "rd" else 0.0  # rd 0 is `center`, also agile's fallback
        clicks = member[_centroid_positions(coords[member], group, counts, starts, rank_rd)]
        if strategy == "agile":
            clicks = _agile_clicks(coords, member, starts, counts, voxel, fallback=clicks)
    return clicks[wanted].astype(np.int64)


def _sampled_click(coords: np.ndarray, points: np.ndarray, rng: np.random.Generator) -> int:
    """Of at most `SAMPLED_POINTS` of `points` drawn without replacement, the one nearest their
    centroid (the first drawn of equally near ones)."""
    drawn = points[rng.choice(len(points), min(len(points), SAMPLED_POINTS), replace=False)]
    xyz = coords[drawn]
    return int(drawn[np.argmin(np.linalg.norm(xyz - xyz.mean(0), axis=1))])


def _centroid_positions(
    points: np.ndarray,
    group: np.ndarray,
    counts: np.ndarray,
    starts: np.ndarray,
    rd: float,
) -> np.ndarray:
    """Per group, the position in `points` (grouped like `member`) of its `rd` click."""
    centroids = np.stack([np.bincount(group, points[:, a], len(counts)) for a in range(3)], 1)
    centroids /= counts[:, None]
    dist2 = ((points - centroids[group]) ** 2).sum(1)
    # Rank by (group, distance, index): groups are contiguous, positions ascend with the index.
    by_distance = np.lexsort((np.arange(len(points)), dist2, group))
    rank = np.minimum(np.rint(rd * counts).astype(np.int64), counts - 1)
    return by_distance[starts + rank]


def _agile_clicks(
    coords: np.ndarray,
    member: np.ndarray,
    starts: np.ndarray,
    counts: np.ndarray,
    voxel: float,
    fallback: np.ndarray,
) -> np.ndarray:
    """Per instance, the point nearest the centre of its voxel farthest from everything else.

    An instance that shares the scene with nothing else keeps its `fallback` click.
    """
    cells = np.floor(coords / voxel).astype(np.int64)
    origin = cells.min(0)
    cells -= origin
    extent = cells.max(0) + 1
    keys, point_voxel, voxel_points = np.unique(
        np.ravel_multi_index(cells.T, extent), return_inverse=True, return_counts=True
    )
    voxel_cells = np.stack(np.unravel_index(keys, extent), 1).astype(np.float64)
    clicks = fallback.copy()
    for k in range(len(counts)):
        points = member[starts[k] : starts[k] + counts[k]]
        own, own_points = np.unique(point_voxel[points], return_counts=True)
        # Everything else: the voxels holding at least one point outside the instance.
        others = np.ones(len(keys), bool)
        others[own[own_points == voxel_points[own]]] = False
        if not others.any():
            continue
        clearance = _clearance(voxel_cells[own], voxel_cells[others])
        centre = (voxel_cells[own[np.argmax(clearance)]] + origin + 0.5) * voxel
        clicks[k] = points[np.argmin(((coords[points] - centre) ** 2).sum(1))]
    return clicks


def _clearance(own: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Distance from each `own` grid cell to the nearest of `others` (integer cell coordinates).

    Searched first among the others inside the own cells' box grown by `margin` cells: any cell
    outside it lies at least margin + 1 away, so a neighbour found closer than that is the nearest.
    Only the cells left without one are searched among all others.
    """
    lo, hi = own.min(0), own.max(0)
    margin = (hi - lo).max() + 1
    near = others[((others >= lo - margin) & (others <= hi + margin)).all(1)]
    clearance = np.full(len(own), np.inf)
    if len(near):
        clearance, _ = cKDTree(near).query(own, distance_upper_bound=margin + 0.5)
    far = np.isinf(clearance)
    if far.any():
        clearance[far], _ = cKDTree(others).query(own[far])
    return clearance
