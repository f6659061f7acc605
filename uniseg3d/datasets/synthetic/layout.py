"""Furniture placement: a room program's requests turned into objects that do not interpenetrate.

Mounts (see `rooms.py`): 'wall' stands with its back to a wall, 'corner' likewise at a wall's
end, 'hang' hangs on a wall at eye height, 'free' stands in the open facing the room's centre,
'on' stands on the top surface of a piece of `near`, 'around' surrounds a table (chairs), 'front'
stands before a desk facing it, 'beside' stands against the same wall next to a piece of `near`,
'window' hangs before a window (curtains) or stands under it (radiators), 'tub' hangs over a
bathtub's open side. A candidate is kept only if its box stays inside the room, out of the
door's swing and the windows' keep-out (except the window mounts), and at least `CLEARANCE`
away from every other object's box along some axis (an 'on' object may touch its support).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.typing import ArrayLike

from uniseg3d.datasets.synthetic.catalog import KINDS
from uniseg3d.datasets.synthetic.floorplan import Box, FloorPlan, keep_out
from uniseg3d.datasets.synthetic.furniture import SHAPES
from uniseg3d.datasets.synthetic.mesh import SceneObject, back_direction, place, turns_for
from uniseg3d.datasets.synthetic.rooms import Program, Request

CLEARANCE = 0.03
ATTEMPTS = 30
WALL_GAP = 0.03


def _nominal_box(size: np.ndarray, turns: int, position: ArrayLike) -> Box:
    """The box a builder's shape of `size` fills once turned and placed (it holds the mesh)."""
    half = (size[:2] if turns % 2 == 0 else size[1::-1]) / 2
    position = np.asarray(position, dtype=np.float64)
    return (np.array([*(position[:2] - half), position[2]]),
            np.array([*(position[:2] + half), position[2] + size[2]]))


def _overlap(a: Box, b: Box, clearance: float) -> bool:
    return bool((a[0] < b[1] + clearance).all() and (b[0] < a[1] + clearance).all())


class Layout:
    """The objects placed so far in one room, and the placement rules."""

    def __init__(self, plan: FloorPlan, rng: np.random.Generator, spacing: float,
                 objects: list[SceneObject]) -> None:
        self.plan, self.rng, self.spacing = plan, rng, spacing
        self.objects = list(objects)
        self.furniture: list[SceneObject] = []
        self.keep_out = keep_out(plan)
        self.openings = [(o.low, o.high) for o in objects if o.kind in ("door", "window")]

    def fits(self, box: Box, support: SceneObject | None = None, keep_out: bool = True
             ) -> bool:
        if not self.plan.inside(*box):
            return False
        if keep_out and any(_overlap(box, k, 0.0) for k in self.keep_out):
            return False
        if any(_overlap(box, opening, CLEARANCE) for opening in self.openings):
            return False
        return not any(other is not support and _overlap(box, (other.low, other.high), CLEARANCE)
                       for other in self.furniture)

    def try_add(self, candidates: Iterator[tuple], kind: str, size: np.ndarray,
                colours: dict[str, str], stacked: bool = False, keep_out: bool = True) -> bool:
        """Place at the first candidate (turns, position, where-dict) whose box fits; a
        `stacked` object may touch its anchor. Meshes are only built for the chosen one."""
        for turns, position, where in candidates:
            support = self.furniture[where["anchor"]] if stacked else None
            if self.fits(_nominal_box(size, turns, position), support, keep_out):
                spacing = self.spacing * float(self.rng.uniform(0.75, 1.35))
                shape = SHAPES[KINDS[kind].shape](size, spacing, self.rng)
                self.furniture.append(place(kind, KINDS[kind].raw, shape, colours, turns,
                                            position, **where))
                return True
        return False

    def near(self, request: Request) -> list[tuple[int, SceneObject]]:
        return [(i, o) for i, o in enumerate(self.furniture) if o.kind in request.near]

    # candidate generators, one per mount -------------------------------------------------

    def _along_wall(self, size: np.ndarray, ends: bool, gap: float = WALL_GAP
                    ) -> Iterator[tuple]:
        walls = self.plan.walls
        lengths = np.array([w.length for w in walls])
        usable = lengths > size[0] + 0.1
        if not usable.any():
            return
        weights = np.where(usable, lengths, 0.0) / lengths[usable].sum()
        for _ in range(ATTEMPTS):
            index = int(self.rng.choice(len(walls), p=weights))
            wall = walls[index]
            low, high = size[0] / 2 + gap, wall.length - size[0] / 2 - gap
            t = float(self.rng.choice([low, high]) if ends else self.rng.uniform(low, high))
            yield (turns_for(-wall.normal), (*wall.point(t, size[1] / 2 + gap), 0.0),
                   {"wall": index, "along": t})

    def _hanging(self, size: np.ndarray) -> Iterator[tuple]:
        for turns, position, where in self._along_wall(size, ends=False, gap=0.02):
            top = self.plan.height - 0.15 - size[2]
            lift = float(self.rng.uniform(1.2, max(1.2, min(1.6, top))))
            yield turns, (*position[:2], lift), where

    def _free(self, size: np.ndarray) -> Iterator[tuple]:
        margin = max(size[:2]) / 2 + 0.3
        for _ in range(ATTEMPTS):
            centre = self.rng.uniform(margin, self.plan.size - margin)
            away = centre - self.plan.centre
            turns = turns_for(away) if np.linalg.norm(away) > 0.3 else int(self.rng.integers(4))
            yield turns, (*centre, 0.0), {}

    def _on(self, request: Request, size: np.ndarray) -> Iterator[tuple]:
        supports = [(i, o) for i, o in self.near(request) if o.surface is not None]
        for _ in range(ATTEMPTS if supports else 0):
            index, support = supports[int(self.rng.integers(len(supports)))]
            turns = support.rotation
            extent = size[:2] if turns % 2 == 0 else size[1::-1]
            x0, y0, x1, y1 = support.surface.rect
            if x1 - x0 < extent[0] or y1 - y0 < extent[1]:
                continue
            centre = self.rng.uniform([x0 + extent[0] / 2, y0 + extent[1] / 2],
                                      [x1 - extent[0] / 2, y1 - extent[1] / 2])
            yield turns, (*centre, support.surface.z), {"anchor": index}

    def _around(self, request: Request, size: np.ndarray) -> Iterator[tuple]:
        slots = []
        for _, table in self.near(request):
            centre = (table.low[:2] + table.high[:2]) / 2
            half = (table.high[:2] - table.low[:2]) / 2
            for axis in (0, 1):
                for sign in (-1.0, 1.0):
                    out = np.zeros(2)
                    out[axis] = sign
                    side = 2 * half[1 - axis]
                    for offset in ([0.0] if side < 1.1 else [-side / 4, side / 4]):
                        position = centre + out * (half[axis] + 0.1 + size[1] / 2)
                        position[1 - axis] += offset
                        slots.append((turns_for(out), (*position, 0.0), {}))
        for i in self.rng.permutation(len(slots)):
            yield slots[i]

    def _front(self, index: int, size: np.ndarray) -> Iterator[tuple]:
        desk = self.furniture[index]
        centre = (desk.low[:2] + desk.high[:2]) / 2
        depth = (desk.high - desk.low)[:2] @ np.abs(desk.front)
        yield (turns_for(desk.front), (*(centre + desk.front * (depth / 2 + 0.08 + size[1] / 2)),
                                       0.0), {"anchor": index})

    def _beside(self, index: int, size: np.ndarray) -> Iterator[tuple]:
        target = self.furniture[index]
        if target.wall is None:
            return
        wall = self.plan.walls[target.wall]
        width = (target.high - target.low)[:2] @ np.abs(wall.direction)
        for sign in self.rng.permutation([-1.0, 1.0]):
            t = target.along + sign * (width / 2 + 0.06 + size[0] / 2)
            yield (target.rotation, (*wall.point(t, size[1] / 2 + WALL_GAP), 0.0),
                   {"wall": target.wall, "along": t, "anchor": index})

    def _window(self, kind: str, size: np.ndarray) -> Iterator[tuple[tuple, np.ndarray]]:
        """(candidate, size) before each window, in random order; curtains cover the window,
        other kinds stand under its sill."""
        windows = [o for o in self.plan.openings if o.kind == "window"]
        for i in self.rng.permutation(len(windows)):
            o = windows[i]
            wall = self.plan.walls[o.wall]
            t = (o.t0 + o.t1) / 2
            if KINDS[kind].shape == "curtain":
                fitted = np.array([o.t1 - o.t0 + 0.3, size[1], o.z1 - o.z0 + 0.25])
                lift, gap = o.z0 - 0.1, 0.08
            else:
                fitted = np.array([min(size[0], o.t1 - o.t0), size[1], min(size[2], o.z0 - 0.3)])
                lift, gap = 0.1, 0.04
            yield ((turns_for(-wall.normal), (*wall.point(t, fitted[1] / 2 + gap), lift),
                    {"wall": o.wall, "along": t}), fitted)

    def _tub(self, tub: SceneObject, size: np.ndarray) -> tuple[tuple, np.ndarray]:
        extent = tub.high - tub.low
        width = extent[:2] @ np.abs(back_direction(tub.rotation + 1))
        depth = extent[:2] @ np.abs(tub.front)
        centre = (tub.low[:2] + tub.high[:2]) / 2 + tub.front * (depth / 2 - 0.05 - size[1] / 2)
        return (tub.rotation, (*centre, tub.high[2] + 0.08), {}), np.array([width - 0.12,
                                                                             *size[1:]])

    # requests -----------------------------------------------------------------------------

    def fulfil(self, request: Request) -> int:
        """Place up to a drawn count of the request's pieces; returns how many were placed."""
        kind = request.kinds[int(self.rng.integers(len(request.kinds)))]
        count = int(self.rng.integers(request.count[0], request.count[1] + 1))
        spec = KINDS[kind]
        shared = (spec.draw_size(self.rng), spec.draw_colours(self.rng))
        placed = 0
        for _ in range(count):
            size, colours = shared if request.matching else (spec.draw_size(self.rng),
                                                             spec.draw_colours(self.rng))
            placed += self._place_one(request, kind, size, colours)
        return placed

    def _place_one(self, request: Request, kind: str, size: np.ndarray,
                   colours: dict[str, str]) -> bool:
        mount = request.mount
        if mount in ("wall", "corner"):
            return self.try_add(self._along_wall(size, mount == "corner"), kind, size, colours)
        if mount == "hang":
            return self.try_add(self._hanging(size), kind, size, colours)
        if mount == "free":
            return self.try_add(self._free(size), kind, size, colours)
        if mount == "on":
            return self.try_add(self._on(request, size), kind, size, colours, stacked=True)
        if mount == "around":
            return self.try_add(self._around(request, size), kind, size, colours)
        if mount in ("front", "beside"):
            served = {o.anchor for o in self.furniture if o.kind == kind and mount == "front"}
            candidates = self._front if mount == "front" else self._beside
            return any(self.try_add(candidates(index, size), kind, size, colours)
                       for index, _ in self.near(request) if index not in served)
        if mount == "window":
            return any(self.try_add(iter([candidate]), kind, fitted, colours, keep_out=False)
                       for candidate, fitted in self._window(kind, size))
        if mount == "tub":
            return any(self.try_add(iter([candidate]), kind, fitted, colours, keep_out=False)
                       for candidate, fitted in (self._tub(t, size) for _, t in self.near(request)))
        raise ValueError(f"unknown mount {mount!r}")


def furnish(plan: FloorPlan, program: Program, rng: np.random.Generator, spacing: float,
            shell: list[SceneObject]) -> list[SceneObject] | None:
    """The room's objects (shell first), or None when a required request could not be met."""
    layout = Layout(plan, rng, spacing, shell)
    for request in program.requests:
        if layout.fulfil(request) == 0 and request.required:
            return None
    return layout.objects + layout.furniture
