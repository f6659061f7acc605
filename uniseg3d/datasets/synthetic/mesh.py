"""Scene objects in world coordinates and their assembly into one scan-like mesh.

`place` puts a builder's shape into the room (quarter turns about z, then a translation);
`assemble` merges every object into one mesh with Gaussian vertex noise and class colours with
per-part shading and per-vertex jitter, keeping each object its own set of mesh components so
that no superpoint can span two objects; `pair_quads` turns grid triangles back into the quads
that Replica's meshes are made of.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike

from uniseg3d.datasets.synthetic.catalog import COLOURS
from uniseg3d.datasets.synthetic.furniture import Part, Shape, Surface

NOISE_SIGMA = 0.003
"""Standard deviation (metres) of the Gaussian vertex noise."""
COLOUR_JITTER = 5.0
"""Standard deviation of the per-vertex colour noise (0-255 scale)."""


@dataclass
class SceneObject:
    """One object of a room: its parts in world coordinates and where it stands."""

    kind: str  # catalog key
    raw: str  # raw category / class name written to the annotation
    parts: list[Part]
    colours: dict[str, str]  # part role -> colour name
    rotation: int = 0  # quarter turns about z; the back faces back_direction(rotation)
    surface: Surface | None = None  # world rectangle things may stand on
    wall: int | None = None  # the wall it stands against, and where along it
    along: float = 0.0
    anchor: int | None = None  # while laying out: the piece it was placed on, at or beside

    @cached_property
    def low(self) -> np.ndarray:
        return np.min([part.vertices.min(axis=0) for part in self.parts], axis=0)

    @cached_property
    def high(self) -> np.ndarray:
        return np.max([part.vertices.max(axis=0) for part in self.parts], axis=0)

    @property
    def front(self) -> np.ndarray:
        return -back_direction(self.rotation)


def back_direction(turns: int) -> np.ndarray:
    """Where local +y points after `turns` quarter turns counter-clockwise."""
    return np.array([(0.0, 1.0), (-1.0, 0.0), (0.0, -1.0), (1.0, 0.0)][turns % 4])


def turns_for(back: np.ndarray) -> int:
    """The quarter turns that point an object's back closest to direction `back`."""
    return int(np.argmax([back_direction(k) @ back for k in range(4)]))


def _rotate(xy: np.ndarray, turns: int) -> np.ndarray:
    c, s = [(1, 0), (0, 1), (-1, 0), (0, -1)][turns % 4]
    return np.stack([c * xy[:, 0] - s * xy[:, 1], s * xy[:, 0] + c * xy[:, 1]], axis=1)


def place(kind: str, raw: str, shape: Shape, colours: dict[str, str], turns: int,
          position: ArrayLike, **where: float | int) -> SceneObject:
    """A builder's shape turned by `turns` quarter turns and moved to `position` (x, y, z)."""
    position = np.asarray(position, dtype=np.float64)
    parts = []
    for part in shape.parts:
        vertices = part.vertices.copy()
        vertices[:, :2] = _rotate(vertices[:, :2], turns)
        parts.append(Part(vertices + position, part.faces, part.role))
    surface = None
    if shape.surface is not None:
        x0, y0, x1, y1 = shape.surface.rect
        corners = _rotate(np.array([[x0, y0], [x1, y1]]), turns) + position[:2]
        surface = Surface(shape.surface.z + float(position[2]),
                          (*corners.min(axis=0).tolist(), *corners.max(axis=0).tolist()))
    return SceneObject(kind, raw, parts, colours, turns, surface, **where)


@dataclass(frozen=True)
class SceneMesh:
    vertices: np.ndarray  # (N, 3) float32, with noise
    colors: np.ndarray  # (N, 3) uint8
    faces: np.ndarray  # (F, 3) int64
    vertex_object: np.ndarray  # (N,) int64: index into the object list
    face_object: np.ndarray  # (F,) int64


def assemble(objects: list[SceneObject], rng: np.random.Generator) -> SceneMesh:
    """One mesh of all objects (object after object, part after part), noisy and coloured."""
    vertices, faces, colors, vertex_object, face_object = [], [], [], [], []
    offset = 0
    for index, obj in enumerate(objects):
        for part in obj.parts:
            n = len(part.vertices)
            base = np.asarray(COLOURS[obj.colours[part.role]], dtype=np.float64)
            shade = base * rng.uniform(0.94, 1.04)
            colors.append(shade + rng.normal(0.0, COLOUR_JITTER, (n, 3)))
            vertices.append(part.vertices + rng.normal(0.0, NOISE_SIGMA, (n, 3)))
            faces.append(part.faces + offset)
            vertex_object.append(np.full(n, index, dtype=np.int64))
            face_object.append(np.full(len(part.faces), index, dtype=np.int64))
            offset += n
    return SceneMesh(np.concatenate(vertices).astype(np.float32),
                     np.clip(np.rint(np.concatenate(colors)), 0, 255).astype(np.uint8),
                     np.concatenate(faces).astype(np.int64), np.concatenate(vertex_object),
                     np.concatenate(face_object))


def pair_quads(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quads (F', 4) from triangles, and per quad its first triangle's index.

    Grid cells are stored as triangles (a, b, c) and (a, c, d), which pair into (a, b, c, d);
    fans (cylinder caps with an even number of segments) pair neighbour by neighbour. Raises
    ValueError if a triangle is left without a partner."""
    faces = np.asarray(faces, dtype=np.int64)
    n = len(faces)
    scale = int(faces.max()) + 1 if n else 1
    first_key = faces[:, 0] * scale + faces[:, 2]  # (a, c) of a first triangle (a, b, c)
    second_key = faces[:, 0] * scale + faces[:, 1]  # (a, c) of a second triangle (a, c, d)
    order = np.argsort(second_key, kind="stable")
    position = np.minimum(np.searchsorted(second_key[order], first_key), n - 1)
    partner = np.where(second_key[order][position] == first_key, order[position], -1)
    partner[partner == np.arange(n)] = -1
    has_partner = np.flatnonzero(partner >= 0)
    reverse = np.full(n, -1)
    reverse[partner[has_partner]] = has_partner
    clean = (partner >= 0) & (reverse < 0)  # i pairs with j, and neither chains on
    clean[clean] = partner[partner[clean]] < 0
    used = np.zeros(n, dtype=bool)
    used[clean] = True
    used[partner[clean]] = True
    pairs = [np.stack([np.flatnonzero(clean), partner[clean]], axis=1)]
    for i in np.flatnonzero(~used):  # fans, in face order
        if used[i]:
            continue
        j, k = partner[i], reverse[i]
        if j >= 0 and not used[j]:
            pair = (i, j)
        elif k >= 0 and not used[k]:
            pair = (k, i)
        else:
            raise ValueError(f"triangle {i} {faces[i].tolist()} has no partner to form a quad")
        used[list(pair)] = True
        pairs.append(np.array([pair]))
    pairs = np.concatenate(pairs)
    return np.column_stack([faces[pairs[:, 0]], faces[pairs[:, 1], 2]]), pairs[:, 0]
