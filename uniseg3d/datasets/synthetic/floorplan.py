"""Floor plans: rectangular and L-shaped rooms, their walls, doors and windows, and the shell.

The floor polygon runs counter-clockwise in the x-y plane (floor at z = 0), so each wall's room
side is on its left. A room has one door and some windows; the shell (walls cut around the
openings, the floor, optionally a ceiling) and the door and window objects are built here, with
the keep-out boxes that keep furniture clear of the door swing and of the windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from uniseg3d.datasets.primitives import grid_patch
from uniseg3d.datasets.synthetic.catalog import KINDS
from uniseg3d.datasets.synthetic.furniture import SHAPES, Part, Shape
from uniseg3d.datasets.synthetic.mesh import SceneObject, place, turns_for
from uniseg3d.datasets.synthetic.rooms import Program

Box = tuple[np.ndarray, np.ndarray]
UP = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True)
class Wall:
    start: np.ndarray  # (2,)
    end: np.ndarray

    @property
    def length(self) -> float:
        return float(np.linalg.norm(self.end - self.start))

    @property
    def direction(self) -> np.ndarray:
        return (self.end - self.start) / self.length

    @property
    def normal(self) -> np.ndarray:
        """Unit normal pointing into the room (left of the direction)."""
        return np.array([-self.direction[1], self.direction[0]])

    def point(self, along: float, inward: float) -> np.ndarray:
        return self.start + along * self.direction + inward * self.normal

    def box(self, t0: float, t1: float, d0: float, d1: float, z0: float, z1: float) -> Box:
        """The axis-aligned box over [t0, t1] along the wall, [d0, d1] into the room."""
        corners = np.array([self.point(t, d) for t in (t0, t1) for d in (d0, d1)])
        return (np.array([*corners.min(axis=0), z0]), np.array([*corners.max(axis=0), z1]))


@dataclass(frozen=True)
class Opening:
    kind: str  # "door" or "window"
    wall: int
    t0: float
    t1: float
    z0: float
    z1: float


@dataclass(frozen=True)
class FloorPlan:
    polygon: np.ndarray  # (P, 2), counter-clockwise
    height: float
    notch: Box | None  # the corner cut out of an L-shaped room (2-D low, high)
    openings: tuple[Opening, ...] = ()

    @property
    def walls(self) -> list[Wall]:
        return [Wall(a, b) for a, b in zip(self.polygon, np.roll(self.polygon, -1, axis=0))]

    @property
    def size(self) -> np.ndarray:
        return self.polygon.max(axis=0)

    @property
    def centre(self) -> np.ndarray:
        return self.size / 2

    def inside(self, low: np.ndarray, high: np.ndarray, margin: float = 0.02) -> bool:
        """Whether the footprint [low, high] (x-y) lies in the room, `margin` from every wall."""
        if (low[:2] < margin).any() or (high[:2] > self.size - margin).any():
            return False
        if self.notch is None:
            return True
        nlow, nhigh = self.notch
        return bool((low[:2] >= nhigh + margin).any() or (high[:2] <= nlow - margin).any())


def _polygon(rng: np.random.Generator, program: Program) -> tuple[np.ndarray, Box | None]:
    width, depth = np.round(rng.uniform(program.size_low, program.size_high), 2)
    corners = np.array([[0.0, 0.0], [width, 0.0], [width, depth], [0.0, depth]])
    if rng.random() >= program.l_shape:
        return corners, None
    c = int(rng.integers(4))
    p, before, after = corners[c], corners[c - 1], corners[(c + 1) % 4]
    cut = np.round(rng.uniform(0.3, 0.45, 2) * [width, depth], 2)

    def step(towards: np.ndarray) -> np.ndarray:
        direction = (towards - p) / np.linalg.norm(towards - p)
        return direction * cut[0 if direction[0] else 1]

    a, b = p + step(before), p + step(after)
    inner = a + b - p
    polygon = np.concatenate([corners[:c], [a, inner, b], corners[c + 1:]])
    return polygon, (np.minimum(p, inner), np.maximum(p, inner))


def _free_span(openings: list[Opening], wall: int, t0: float, t1: float) -> bool:
    return all(o.wall != wall or t1 + 0.3 <= o.t0 or o.t1 + 0.3 <= t0 for o in openings)


def _add_opening(rng: np.random.Generator, walls: list[Wall], openings: list[Opening],
                 kind: str, height: float) -> None:
    size = KINDS[kind].draw_size(rng)
    z0 = 0.0 if kind == "door" else round(float(rng.uniform(0.8, 1.0)), 2)
    z1 = min(z0 + float(size[2]), height - 0.25)
    for _ in range(30):
        wall = int(rng.integers(len(walls)))
        room = walls[wall].length - size[0] - 0.4
        if room <= 0:
            continue
        t0 = round(0.2 + float(rng.uniform(0.0, room)), 2)
        if _free_span(openings, wall, t0, t0 + size[0]):
            openings.append(Opening(kind, wall, t0, t0 + float(size[0]), z0, z1))
            return


def plan_room(rng: np.random.Generator, program: Program) -> FloorPlan:
    """A random floor plan for `program`: outline, height, one door, some windows."""
    polygon, notch = _polygon(rng, program)
    height = round(float(rng.uniform(2.5, 3.0)), 2)
    walls = FloorPlan(polygon, height, notch).walls
    openings: list[Opening] = []
    _add_opening(rng, walls, openings, "door", height)
    for _ in range(int(rng.integers(program.windows[0], program.windows[1] + 1))):
        _add_opening(rng, walls, openings, "window", height)
    return FloorPlan(polygon, height, notch, tuple(openings))


def keep_out(plan: FloorPlan) -> list[Box]:
    """Boxes furniture must stay out of: the door's swing and the space before each window."""
    walls = plan.walls
    boxes = []
    for o in plan.openings:
        if o.kind == "door":
            boxes.append(walls[o.wall].box(o.t0 - 0.1, o.t1 + 0.1, 0.0, 1.0, 0.0, o.z1 + 0.1))
        else:
            boxes.append(walls[o.wall].box(o.t0 - 0.05, o.t1 + 0.05, 0.0, 0.35, o.z0 - 0.03,
                                           o.z1 + 0.1))
    return boxes


def _drop_faces(vertices: np.ndarray, faces: np.ndarray, keep: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    faces = faces[keep]
    used, inverse = np.unique(faces, return_inverse=True)
    return vertices[used], inverse.reshape(faces.shape)


def _horizontal(plan: FloorPlan, z: float, spacing: float, up: bool) -> Part:
    """The floor (normal up) or ceiling (normal down), without the notch of an L."""
    width, depth = plan.size
    nx, ny = (max(1, int(np.ceil(s / spacing))) for s in (width, depth))
    origin = np.array([0.0, 0.0, z])
    if up:
        vertices, faces = grid_patch(origin, [width, 0, 0], [0, depth, 0], nx, ny)
    else:
        vertices, faces = grid_patch(origin, [0, depth, 0], [width, 0, 0], ny, nx)
    if plan.notch is not None:  # drop whole grid cells: their diagonal is each face's longest edge
        corners = vertices[faces][:, :, :2]
        edges = np.linalg.norm(corners - np.roll(corners, -1, axis=1), axis=2)
        longest = np.argmax(edges, axis=1)
        rows = np.arange(len(faces))
        centre = (corners[rows, longest] + corners[rows, (longest + 1) % 3]) / 2
        low, high = plan.notch
        keep = ~((centre > low) & (centre < high)).all(axis=1)
        vertices, faces = _drop_faces(vertices, faces, keep)
    return Part(vertices, faces, "main")


def _wall_parts(plan: FloorPlan, index: int, spacing: float) -> list[Part]:
    """One wall as rectangular pieces around its openings (normals into the room)."""
    wall = plan.walls[index]
    openings = sorted((o for o in plan.openings if o.wall == index), key=lambda o: o.t0)
    pieces, t = [], 0.0
    for o in openings:
        pieces += [(t, o.t0, 0.0, plan.height), (o.t0, o.t1, 0.0, o.z0),
                   (o.t0, o.t1, o.z1, plan.height)]
        t = o.t1
    pieces.append((t, wall.length, 0.0, plan.height))
    parts = []
    for t0, t1, z0, z1 in pieces:
        if t1 - t0 < 1e-6 or z1 - z0 < 1e-6:
            continue
        origin = np.array([*wall.point(t0, 0.0), z0])
        along = np.array([*wall.direction, 0.0]) * (t1 - t0)
        nz, nt = (max(1, int(np.ceil(s / spacing))) for s in (z1 - z0, t1 - t0))
        parts.append(Part(*grid_patch(origin, UP * (z1 - z0), along, nz, nt), "main"))
    return parts


def shell(plan: FloorPlan, rng: np.random.Generator, spacing: float, ceiling: bool
          ) -> list[SceneObject]:
    """Walls (one object per straight wall), floor, ceiling (if asked), doors and windows."""

    def jittered() -> float:
        return spacing * float(rng.uniform(0.8, 1.3))

    def colours(kind: str) -> dict[str, str]:
        return KINDS[kind].draw_colours(rng)

    wall_colours = colours("wall")
    objects = [SceneObject("wall", "wall", _wall_parts(plan, i, jittered()), wall_colours)
               for i in range(len(plan.walls))]
    objects.append(SceneObject("floor", "floor", [_horizontal(plan, 0.0, jittered(), True)],
                               colours("floor")))
    if ceiling:
        objects.append(SceneObject("ceiling", "ceiling",
                                   [_horizontal(plan, plan.height, jittered(), False)],
                                   colours("ceiling")))
    for o in plan.openings:
        wall = plan.walls[o.wall]
        size = np.array([o.t1 - o.t0, KINDS[o.kind].size_low[1], o.z1 - o.z0])
        shape: Shape = SHAPES[KINDS[o.kind].shape](size, jittered(), rng)
        centre = wall.point((o.t0 + o.t1) / 2, 0.0)
        objects.append(place(o.kind, o.kind, shape, colours(o.kind), turns_for(-wall.normal),
                             (*centre, o.z0), wall=o.wall, along=(o.t0 + o.t1) / 2))
    return objects
