"""Scene geometry as read back from labelled points: the facts descriptions are built on.

`SceneView.from_points` takes per-vertex coordinates, colours and object indices (from the
generator's own arrays, or from a `Scene` loaded through the readers) and derives everything a
description may refer to: each object's box, centre, volume and colour; the room's centre (mean
of the floor's points) and corners (ends of the walls where the floor fills one quadrant);
and, per pair of objects, a signed score for every relation (positive: the relation holds;
scores are in metres, colour scores are fractions). Locations score an object against the
room; superlatives rank objects by volume or distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from uniseg3d.datasets.synthetic.catalog import COLOUR_NAMES, COLOUR_TABLE, STRUCTURE

RELATIONS = ("next to", "left of", "right of", "on", "under", "above")
LOCATIONS = ("corner", "window", "door", "middle")
NEXT_TO = 0.4  # largest footprint gap of objects next to each other
BESIDE = 1.0  # largest footprint gap of objects left / right of each other
ON_TOLERANCE = 0.1  # largest height difference between an object's base and its support
UNDER_REACH = 1.2  # largest height gap between an object and one above it
CORNER, WINDOW, DOOR = 0.4, 0.5, 0.8  # location distances
MIDDLE = 0.25  # "in the middle": within this share of the room's width of its centre ...
OFF_WALL = 0.5  # ... and this far from every wall


def _footprint_gap(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(K, K) distance between the x-y boxes of every two objects (0 where they overlap)."""
    apart = np.maximum(0.0, np.maximum(low[None, :, :2] - high[:, None, :2],
                                       low[:, None, :2] - high[None, :, :2]))
    return np.linalg.norm(apart, axis=2)


@dataclass(frozen=True)
class SceneView:
    object_ids: np.ndarray  # (K,) annotation object ids
    names: tuple[str, ...]  # (K,) raw categories
    low: np.ndarray  # (K, 3)
    high: np.ndarray  # (K, 3)
    colour_fraction: np.ndarray  # (K, C) share of each object's points nearest each colour
    room_centre: np.ndarray  # (2,)
    corners: np.ndarray  # (M, 2) corners of the room
    relation: dict[str, np.ndarray]  # name -> (K, K) score of "k <relation> j"
    location: dict[str, np.ndarray]  # name -> (K,) score
    distance: np.ndarray  # (K, K) distance between centres (x-y)
    between: np.ndarray  # (K, K, K) score of "k between i and j"

    @property
    def centre(self) -> np.ndarray:
        return (self.low + self.high) / 2

    @property
    def volume(self) -> np.ndarray:
        return np.prod(self.high - self.low, axis=1)

    def colour(self, k: int) -> str:
        return COLOUR_NAMES[int(np.argmax(self.colour_fraction[k]))]

    def describable(self) -> np.ndarray:
        """Objects a description may name (everything but walls, floor and ceiling)."""
        return np.array([name not in STRUCTURE for name in self.names])

    @classmethod
    def from_points(cls, coords: np.ndarray, colors: np.ndarray, instance: np.ndarray,
                    object_ids: np.ndarray, names: tuple[str, ...]) -> SceneView:
        """`instance[v]` indexes `object_ids` / `names` (negative: unlabelled point)."""
        coords = np.asarray(coords, dtype=np.float64)
        k = len(names)
        labelled = instance >= 0
        coords, colors, instance = coords[labelled], colors[labelled], instance[labelled]
        order = np.argsort(instance, kind="stable")
        starts = np.searchsorted(instance[order], np.arange(k + 1))
        points = [coords[order[starts[i]:starts[i + 1]]] for i in range(k)]
        low = np.array([p.min(axis=0) for p in points])
        high = np.array([p.max(axis=0) for p in points])
        distances = ((colors[:, None, :].astype(np.float64) - COLOUR_TABLE[None]) ** 2).sum(2)
        nearest = np.argmin(distances, axis=1)
        counts = np.zeros((k, len(COLOUR_NAMES)))
        np.add.at(counts, (instance, nearest), 1.0)
        colour_fraction = counts / counts.sum(axis=1, keepdims=True)
        floor = np.concatenate([p for p, n in zip(points, names) if n == "floor"])
        room_centre = floor[:, :2].mean(axis=0)
        corners = _corners([(lo, hi) for lo, hi, n in zip(low, high, names) if n == "wall"],
                           floor[:, :2])
        view = cls(np.asarray(object_ids, dtype=np.int64), tuple(names), low, high,
                   colour_fraction, room_centre, corners, {}, {}, np.zeros((k, k)),
                   np.zeros((k, k, k)))
        _relate(view, points)
        return view


def _corners(walls: list[tuple[np.ndarray, np.ndarray]], floor: np.ndarray) -> np.ndarray:
    """Wall ends where the floor lies in a single quadrant (convex corners of the room)."""
    ends = []
    for low, high in walls:
        extent = high[:2] - low[:2]
        axis = int(np.argmax(extent))
        mid = (low[:2] + high[:2]) / 2
        for value in (low[axis], high[axis]):
            end = mid.copy()
            end[axis] = value
            ends.append(end)
    corners = []
    for end in ends:  # each corner twice (two walls meet there): harmless
        near = floor[np.linalg.norm(floor - end, axis=1) < 0.3] - end
        quadrants = {(bool(dx > 0.02), bool(dy > 0.02)) for dx, dy in near
                     if abs(dx) > 0.02 and abs(dy) > 0.02}
        if len(quadrants) == 1:
            corners.append(end)
    return np.array(corners).reshape(-1, 2)


def _support_height(points: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    """Highest z among `points` inside the x-y box [low, high] (-inf if none)."""
    inside = ((points[:, :2] >= low[:2]) & (points[:, :2] <= high[:2])).all(axis=1)
    return float(points[inside, 2].max()) if inside.any() else -np.inf


def _relate(view: SceneView, points: list[np.ndarray]) -> None:
    """Fill the view's relation, location, distance and between tables."""
    low, high, centre = view.low, view.high, view.centre
    k = len(view.names)
    gap = _footprint_gap(low, high)
    z_overlap = np.minimum(high[:, None, 2], high[None, :, 2]) - np.maximum(low[:, None, 2],
                                                                            low[None, :, 2])
    offset = centre[:, None, :2] - centre[None, :, :2]  # [t, a] = t - a
    view.distance[:] = np.linalg.norm(offset, axis=2)
    sight = centre[:, :2] - view.room_centre
    sight /= np.maximum(np.linalg.norm(sight, axis=1, keepdims=True), 1e-9)
    left = np.stack([-sight[:, 1], sight[:, 0]], axis=1)  # viewer's left, looking at a
    lateral = np.einsum("tad,ad->ta", offset, left)
    side = np.minimum(BESIDE - gap, z_overlap)
    view.relation.update({
        "next to": np.minimum(NEXT_TO - gap, z_overlap),
        "left of": np.minimum(lateral, side),
        "right of": np.minimum(-lateral, side),
    })
    # under: t lies below a, their x-y boxes (grown 0.2 m) overlapping over most of the smaller
    grown_low, grown_high = low[:, :2] - 0.2, high[:, :2] + 0.2
    shared = (np.minimum(grown_high[:, None], grown_high[None]) -
              np.maximum(grown_low[:, None], grown_low[None]))
    smaller = np.minimum((grown_high - grown_low)[:, None], (grown_high - grown_low)[None])
    cover = (shared / smaller).min(axis=2)
    rise = low[None, :, 2] - high[:, None, 2]  # [t, a]: a's bottom above t's top
    under = np.minimum.reduce([cover - 0.5, rise + 0.03, UNDER_REACH - rise])
    view.relation.update({"under": under, "above": under.T.copy()})
    # on: t's centre over a's box and t's base at the height of a's points beneath t
    on = np.full((k, k), -np.inf)
    inside = np.minimum(centre[:, None, :2] - low[None, :, :2],
                        high[None, :, :2] - centre[:, None, :2]).min(axis=2)
    for t, a in zip(*np.nonzero(inside > 0)):
        if t != a:
            support = _support_height(points[a], low[t], high[t])
            on[t, a] = min(inside[t, a], ON_TOLERANCE - abs(low[t, 2] - support))
    view.relation["on"] = on
    for table in view.relation.values():
        np.fill_diagonal(table, -np.inf)
    _locate(view, gap)
    _between(view)


def _locate(view: SceneView, gap: np.ndarray) -> None:
    low, high = view.low[:, :2], view.high[:, :2]
    if len(view.corners):
        nearest = np.clip(view.corners[None], low[:, None], high[:, None])
        corner = np.linalg.norm(nearest - view.corners[None], axis=2).min(axis=1)
    else:
        corner = np.full(len(low), np.inf)
    view.location["corner"] = CORNER - corner
    for name, reach in (("window", WINDOW), ("door", DOOR)):
        mask = np.array([n == name for n in view.names])
        others = np.where(mask[None, :] & ~np.eye(len(mask), dtype=bool), gap, np.inf)
        view.location[name] = reach - others.min(axis=1, initial=np.inf)
    names = np.array(view.names)
    floor = np.flatnonzero(names == "floor")[0]
    radius = MIDDLE * float((high[floor] - low[floor]).min())
    off_wall = gap[:, names == "wall"].min(axis=1, initial=np.inf)
    view.location["middle"] = np.minimum(
        radius - np.linalg.norm(view.centre[:, :2] - view.room_centre, axis=1),
        off_wall - OFF_WALL)


def _between(view: SceneView) -> None:
    """[t, i, j]: t's centre lies along the segment from i to j, away from both ends."""
    c = view.centre[:, :2]
    ab = c[None, :, :] - c[:, None, :]  # [i, j] = c_j - c_i
    length = np.linalg.norm(ab, axis=2)
    unit = ab / np.maximum(length, 1e-9)[..., None]
    rel = c[:, None, :] - c[None, :, :]  # [t, i] = c_t - c_i
    along = np.einsum("tid,ijd->tij", rel, unit)
    across = np.abs(np.einsum("tid,ijd->tij", rel, np.stack([-unit[..., 1], unit[..., 0]], -1)))
    score = np.minimum.reduce([along - 0.1, length[None] - along - 0.1, 0.5 - across,
                               np.broadcast_to(4.0 - length[None], along.shape)])
    k = len(c)
    same = np.eye(k, dtype=bool)
    score[:, same] = -np.inf
    score[same[:, :, None] | same[:, None, :]] = -np.inf
    view.between[:] = score
