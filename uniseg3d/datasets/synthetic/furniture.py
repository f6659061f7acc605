"""Object meshes assembled from primitives, with class-typical shapes.

Every builder takes the object's size (w, d, h), a vertex spacing and a random generator, and
returns its parts in a local frame: x in [-w/2, w/2], y in [-d/2, d/2] with the back at +y (the
side that goes against a wall), z in [0, h] (standing on z = 0). Each part has a colour role
('main' or 'trim'). Builders of objects that carry others also return their top surface.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from uniseg3d.datasets.primitives import (box_surface, cylinder_surface, ellipsoid_surface,
                                          wavy_panel)


class Part(NamedTuple):
    vertices: np.ndarray  # (n, 3) float64
    faces: np.ndarray  # (f, 3) int64
    role: str  # "main" or "trim"


class Surface(NamedTuple):
    """A horizontal surface things can stand on: height and (x0, y0, x1, y1) rectangle."""

    z: float
    rect: tuple[float, float, float, float]


class Shape(NamedTuple):
    parts: list[Part]
    surface: Surface | None = None


def _box(low: ArrayLike, high: ArrayLike, spacing: float, role: str = "main") -> Part:
    return Part(*box_surface(low, high, spacing), role)


def _cylinder(x: float, y: float, z: float, radius: float, height: float, spacing: float,
              role: str = "main") -> Part:
    """An upright cylinder with an even number of segments, so its cap fans pair into quads."""
    segments = max(8, int(np.ceil(2 * np.pi * radius / spacing)))
    if segments % 2:
        spacing = 2 * np.pi * radius / (segments + 1) * (1 + 1e-9)
    return Part(*cylinder_surface((x, y, z), radius, height, spacing), role)


def _top(w: float, d: float, z: float, inset: float) -> Surface:
    return Surface(z, (-w / 2 + inset, -d / 2 + inset, w / 2 - inset, d / 2 - inset))


def _legs(w: float, d: float, height: float, thickness: float, inset: float, spacing: float
          ) -> list[Part]:
    parts = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            x = sx * (w / 2 - inset - thickness / 2)
            y = sy * (d / 2 - inset - thickness / 2)
            parts.append(_box((x - thickness / 2, y - thickness / 2, 0.0),
                              (x + thickness / 2, y + thickness / 2, height), spacing, "trim"))
    return parts


def _frame(w: float, d: float, h: float, f: float, spacing: float, role: str) -> list[Part]:
    """Four bars of width `f` around the rim of a w x h panel (pictures, windows)."""
    return [_box(low, high, spacing, role) for low, high in (
        ((-w / 2, -d / 2, 0.0), (-w / 2 + f, d / 2, h)),
        ((w / 2 - f, -d / 2, 0.0), (w / 2, d / 2, h)),
        ((-w / 2 + f, -d / 2, 0.0), (w / 2 - f, d / 2, f)),
        ((-w / 2 + f, -d / 2, h - f), (w / 2 - f, d / 2, h)))]


def chair(size: np.ndarray, spacing: float, rng: np.random.Generator) -> Shape:
    w, d, h = size
    seat = min(0.46, 0.55 * h)
    parts = _legs(w, d, seat - 0.04, 0.035, 0.02, spacing)
    parts.append(_box((-w / 2, -d / 2, seat - 0.04), (w / 2, d / 2, seat), spacing))
    parts.append(_box((-w / 2, d / 2 - 0.04, seat), (w / 2, d / 2, h), spacing))
    return Shape(parts)


def office_chair(size: np.ndarray, spacing: float, rng: np.random.Generator) -> Shape:
    w, d, h = size
    seat = 0.48
    return Shape([
        _cylinder(0.0, 0.0, 0.0, min(w, d) / 2, 0.06, spacing, "trim"),
        _cylinder(0.0, 0.0, 0.06, 0.03, seat - 0.14, spacing, "trim"),
        _box((-0.45 * w, -0.45 * d, seat - 0.08), (0.45 * w, 0.45 * d, seat), spacing),
        _box((-0.4 * w, d / 2 - 0.06, seat + 0.05), (0.4 * w, d / 2, h), spacing),
    ])


def upholstered(size: np.ndarray, spacing: float, rng: np.random.Generator) -> Shape:
    """Armchairs and couches: a seat block between two arms, a back, short legs."""
    w, d, h = size
    arm, back, seat, leg = 0.14, 0.2, 0.42, 0.06
    parts = _legs(w, d, leg, 0.05, 0.03, spacing)
    parts.append(_box((-w / 2 + arm, -d / 2, leg), (w / 2 - arm, d / 2 - back, seat), spacing))
    parts.append(_box((-w / 2, d / 2 - back, leg), (w / 2, d / 2, h), spacing))
    for side in (-1, 1):
        x0, x1 = sorted((side * w / 2, side * (w / 2 - arm)))
        parts.append(_box((x0, -d / 2, leg), (x1, d / 2 - back, 0.62), spacing))
    return Shape(parts, Surface(seat, (-w / 2 + arm + 0.02, -d / 2 + 0.02, w / 2 - arm - 0.02,
                                       d / 2 - back - 0.02)))


def table(size: np.ndarray, spacing: float, rng: np.random.Generator) -> Shape:
    w, d, h = size
    parts = _legs(w, d, h - 0.04, 0.05, 0.04, spacing)
    parts.append(_box((-w / 2, -d / 2, h - 0.04), (w / 2, d / 2, h), spacing))
    return Shape(parts, _top(w, d, h, 0.05))


def desk(size: np.ndarray, spacing: float, rng: np.random.Generator) -> Shape:
    w, d, h = size
    top = h - 0.035
    parts = [_box((-w / 2, -d / 2, top), (w / 2, d / 2, h), spacing),
             _box((-w / 2, -d / 2, 0.0), (-w / 2 + 0.03, d / 2, top), spacing),
             _box((w / 2 - 0.03, -d / 2, 0.0), (w / 2, d / 2, top), spacing),
             _box((w / 2 - 0.45, -d / 2 + 0.02, top - 0.16), (w / 2 - 0.03, d / 2, top), spacing),
             _box((w / 2 - 0.3, -d / 2, top - 0.09), (w / 2 - 0.18, -d / 2 + 0.02, top - 0.07),
                  spacing, "trim")]
    return Shape(parts, _top(w, d, h, 0.05))


def bed(size: np.ndarray, spacing: float, rng: np.random.Generator) -> Shape:
    w, d, h = size
    parts = _legs(w, d, 0.15, 0.06, 0.02, spacing)
    parts.append(_box((-w / 2, -d / 2, 0.15), (w / 2, d / 2 - 0.08, 0.55), spacing))
    parts.append(_box((-w / 2, d / 2 - 0.06, 0.0), (w / 2, d / 2, h), spacing, "trim"))
    return Shape(parts, Surface(0.55, (-w / 2 + 0.05, -d / 2 + 0.05, w / 2 - 0.05,
                                       d / 2 - 0.16)))


def cabinet(size: np.ndarray, spacing: float, rng: np.random.Generator) -> Shape:
    """Cabinets, dressers, nightstands, stands, microwaves: a body with handles on the front."""
    w, d, h = size
    parts = [_box((-w / 2, -d / 2 + 0.02, 0.0), (w / 2, d / 2, h), spacing)]
    drawers = int(np.clip(round(h / 0.35), 1, 5))
    for z in (np.arange(drawers) + 0.5) * h / drawers:
        parts.append(_box((-0.06, -d / 2, z - 0.012), (0.06, -d / 2 + 0.02, z + 0.012), spacing,
                          "trim"))
    return Shape(parts, _top(w, d, h, 0.03))


def bookshelf(size: np.ndarray, spacing: float, rng: np.random.Generator) -> Shape:
    w, d, h = size
    t = 0.02
    parts = [_box((-w / 2, -d / 2, 0.0), (-w / 2 + t, d / 2, h), spacing),
             _box((w / 2 - t, -d / 2, 0.0), (w / 2, d / 2, h), spacing),
             _box((-w / 2 + t, d / 2 - 0.01, 0.0), (w / 2 - t, d / 2, h), spacing)]
    for z in np.linspace(0.0, h - t, max(3, int(h / 0.35)) + 1):
        parts.append(_box((-w / 2 + t, -d / 2, z), (w / 2 - t, d / 2 - 0.01, z + t), spacing))
    return Shape(parts, _top(w, d, h, 0.03))


def picture(size: np.ndarray, spacing: float, rng: np.random.Generator) -> Shape:
    """Pictures, posters, mirrors: a canvas in a thin frame, hanging with its back at +y."""
    w, d, h = size
    return Shape([_box((-w / 2, -d / 2 + 0.005, 0.0), (w / 2, d / 2, h), spacing),
                  *_frame(w, d, h, 0.03, spacing, "trim")])


def counter(size: np.ndarray, spacing: float, rng: np.random.Generator) -> Shape:
    w, d, h = size
    return Shape([_box((-w / 2, -d / 2 + 0.03, 0.0), (w / 2, d / 2, h - 0.04), spacing),
                   _box((-w / 2, -d / 2, h - 0.04), (w / 2, d / 2, h), spacing, "trim")],
                  _top(w, d, h, 0.04))


def refrigerator(size: np.ndarray, spacing: float, rng: np.random.Generator) -> Shape:
    w, d, h = size
    split = 0.62 * h
    parts = [_box((-w / 2, -d / 2 + 0.03, 0.0), (w / 2, d / 2, h), spacing)]
    for z0, z1 in ((split - 0.45, split - 0.1), (split + 0.1, split + 0.4)):
        parts.append(_box((w / 2 - 0.08, -d / 2, z0), (w / 2 - 0.05, -d / 2 + 0.03, z1), spacing,
                          "trim"))
    return Shape(parts)


def toilet(size: np.ndarray, spacing: float, rng: np.random.Generator) -> Shape:
    w, d, h = size
    return Shape([
        _box((-0.12, -d / 2 + 0.15, 0.0), (0.12, d / 2 - 0.2, 0.36), spacing),
        _cylinder(0.0, -d / 2 + min(w / 2, 0.2), 0.3, min(w / 2, 0.2), 0.1, spacing),
        _box((-w / 2, d / 2 - 0.18, 0.35), (w / 2, d / 2, h), spacing),
    ])


def _basin_parts(w: float, d: float, z0: float, z1: float, spacing: float) -> list[Part]:
    t = float(np.clip(0.1 * min(w, d), 0.02, 0.08))
    return [_box((-w / 2, -d / 2, z0), (w / 2, d / 2, z0 + t), spacing),
            _box((-w / 2, -d / 2, z0 + t), (w / 2, -d / 2 + t, z1), spacing),
            _box((-w / 2, d / 2 - t, z0 + t), (w / 2, d / 2, z1), spacing),
            _box((-w / 2, -d / 2 + t, z0 + t), (-w / 2 + t, d / 2 - t, z1), spacing),
            _box((w / 2 - t, -d / 2 + t, z0 + t), (w / 2, d / 2 - t, z1), spacing)]


def basin(size: np.ndarray, spacing: float, rng: np.random.Generator) -> Shape:
    """Open-topped basins: sinks on counters, bathtubs."""
    w, d, h = size
    return Shape(_basin_parts(w, d, 0.0, h, spacing))


def pedestal_sink(size: np.ndarray, spacing: float, rng: np.random.Generator) -> Shape:
    w, d, h = size
    return Shape([_cylinder(0.0, 0.05, 0.0, 0.08, h - 0.18, spacing),
                  *_basin_parts(w, d, h - 0.18, h, spacing)])


def curtain(size: np.ndarray, spacing: float, rng: np.random.Generator) -> Shape:
    """Curtains and shower curtains: one folded panel facing -y."""
    w, d, h = size
    vertices, faces = wavy_panel((-w / 2, 0.0, 0.0), (w, 0.0, 0.0), (0.0, 0.0, h), spacing,
                                 0.4 * d, float(rng.uniform(0.15, 0.3)))
    return Shape([Part(vertices, faces, "main")])


def radiator(size: np.ndarray, spacing: float, rng: np.random.Generator) -> Shape:
    w, d, h = size
    fins = max(3, int(w / 0.08))
    parts = [_box((-w / 2, -0.02, 0.0), (w / 2, d / 2, 0.04), spacing)]
    for x in np.linspace(-w / 2, w / 2 - 0.03, fins):
        parts.append(_box((x, -d / 2, 0.04), (x + 0.03, d / 2, h), spacing))
    return Shape(parts)


def ottoman(size: np.ndarray, spacing: float, rng: np.random.Generator) -> Shape:
    w, d, h = size
    return Shape([*_legs(w, d, 0.05, 0.05, 0.03, spacing),
                  _box((-w / 2, -d / 2, 0.05), (w / 2, d / 2, h), spacing)],
                 _top(w, d, h, 0.05))


def box(size: np.ndarray, spacing: float, rng: np.random.Generator) -> Shape:
    w, d, h = size
    return Shape([_box((-w / 2, -d / 2, 0.0), (w / 2, d / 2, h), spacing)], _top(w, d, h, 0.03))


def screen(size: np.ndarray, spacing: float, rng: np.random.Generator) -> Shape:
    """Televisions and monitors: a panel on a foot."""
    w, d, h = size
    return Shape([_box((-w / 2, -0.03, 0.1), (w / 2, 0.03, h), spacing),
                  _box((-0.2 * w, -d / 2, 0.0), (0.2 * w, d / 2, 0.02), spacing, "trim"),
                  _box((-0.03, 0.03, 0.02), (0.03, 0.07, 0.12), spacing, "trim")])


def lamp(size: np.ndarray, spacing: float, rng: np.random.Generator) -> Shape:
    w, _, h = size
    radius = w / 2
    return Shape([_cylinder(0.0, 0.0, 0.0, 0.6 * radius, 0.03, spacing, "trim"),
                  _cylinder(0.0, 0.0, 0.03, 0.015, 0.67 * h, spacing, "trim"),
                  _cylinder(0.0, 0.0, 0.7 * h, radius, 0.3 * h, spacing)])


def plant(size: np.ndarray, spacing: float, rng: np.random.Generator) -> Shape:
    w, _, h = size
    radius = w / 2
    pot = 0.3 * h
    return Shape([_cylinder(0.0, 0.0, 0.0, 0.6 * radius, pot, spacing, "trim"),
                  Part(*ellipsoid_surface((0.0, 0.0, pot + (h - pot) / 2),
                                          (radius, radius, (h - pot) / 2), spacing), "main")])


def pillow(size: np.ndarray, spacing: float, rng: np.random.Generator) -> Shape:
    w, d, h = size
    return Shape([Part(*ellipsoid_surface((0.0, 0.0, h / 2), (w / 2, d / 2, h / 2), spacing),
                       "main")])


def bin_(size: np.ndarray, spacing: float, rng: np.random.Generator) -> Shape:
    """Trash bins and vases: an upright cylinder."""
    w, _, h = size
    return Shape([_cylinder(0.0, 0.0, 0.0, w / 2, h, spacing)])


def door(size: np.ndarray, spacing: float, rng: np.random.Generator) -> Shape:
    """A door leaf centred on the wall plane (y = 0) with a handle on the room side."""
    w, d, h = size
    return Shape([_box((-w / 2, -d / 2, 0.0), (w / 2, d / 2, h), spacing),
                  _box((w / 2 - 0.12, -d / 2 - 0.05, 0.95), (w / 2 - 0.06, -d / 2, 1.0), spacing,
                       "trim")])


def window(size: np.ndarray, spacing: float, rng: np.random.Generator) -> Shape:
    """A window frame centred on the wall plane with a pane in it."""
    w, d, h = size
    f = 0.06
    return Shape([_box((-w / 2 + f, -0.005, f), (w / 2 - f, 0.005, h - f), spacing, "trim"),
                  *_frame(w, d, h, f, spacing, "main")])


SHAPES: dict[str, Callable[[np.ndarray, float, np.random.Generator], Shape]] = {
    "chair": chair, "office chair": office_chair, "armchair": upholstered,
    "couch": upholstered, "table": table, "desk": desk, "bed": bed, "cabinet": cabinet,
    "bookshelf": bookshelf, "picture": picture, "counter": counter,
    "refrigerator": refrigerator, "toilet": toilet, "basin": basin,
    "pedestal sink": pedestal_sink, "curtain": curtain, "radiator": radiator,
    "ottoman": ottoman, "box": box, "screen": screen, "lamp": lamp, "plant": plant,
    "pillow": pillow, "bin": bin_, "door": door, "window": window,
}
