"""Triangle-mesh primitives (grids, boxes, cylinders) for synthetic scenes, tests and benchmarks."""

from __future__ import annotations

import numpy as np


def grid_patch(origin, u, v, nu: int, nv: int) -> tuple[np.ndarray, np.ndarray]:
    """A planar parallelogram origin + s*u + t*v (s, t in [0, 1]) as an (nu+1) x (nv+1) vertex grid
    with 2*nu*nv triangles, wound so that the normal is u x v."""
    origin, u, v = (np.asarray(a, dtype=np.float64) for a in (origin, u, v))
    s, t = np.meshgrid(np.linspace(0.0, 1.0, nu + 1), np.linspace(0.0, 1.0, nv + 1), indexing="ij")
    vertices = origin + s.reshape(-1, 1) * u + t.reshape(-1, 1) * v
    index = np.arange((nu + 1) * (nv + 1)).reshape(nu + 1, nv + 1)
    a, b = index[:-1, :-1].ravel(), index[1:, :-1].ravel()
    c, d = index[1:, 1:].ravel(), index[:-1, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return vertices, faces


def weld(vertices: np.ndarray, faces: np.ndarray, tolerance: float = 1e-6
         ) -> tuple[np.ndarray, np.ndarray]:
    """Merge vertices closer than `tolerance` (on a grid of that pitch); faces are re-indexed."""
    keys = np.round(np.asarray(vertices) / tolerance).astype(np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)  # keep vertices in order of first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return np.asarray(vertices)[first[order]], rank[inverse.ravel()][np.asarray(faces)]


def merge_meshes(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate meshes, offsetting each part's face indices."""
    offsets = np.cumsum([0] + [len(v) for v, _ in parts[:-1]])
    vertices = np.concatenate([v for v, _ in parts])
    faces = np.concatenate([f + o for (_, f), o in zip(parts, offsets)])
    return vertices, faces


def box_surface(low, high, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """The closed, welded surface of an axis-aligned box, outward normals, ~`spacing` apart."""
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    size = high - low
    n = np.maximum(1, np.ceil(size / spacing).astype(int))
    ex, ey, ez = np.diag(size)
    parts = [
        grid_patch(low, ey, ex, n[1], n[0]),  # bottom (-z)
        grid_patch(low + ez, ex, ey, n[0], n[1]),  # top (+z)
        grid_patch(low, ex, ez, n[0], n[2]),  # front (-y)
        grid_patch(low + ey, ez, ex, n[2], n[0]),  # back (+y)
        grid_patch(low, ez, ey, n[2], n[1]),  # left (-x)
        grid_patch(low + ex, ey, ez, n[1], n[2]),  # right (+x)
    ]
    vertices, faces = merge_meshes(parts)
    return weld(vertices, faces, tolerance=min(spacing, float(size.min())) * 1e-3)


def cylinder_surface(center, radius: float, height: float, spacing: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """An upright closed cylinder (side and both caps) standing on `center`, outward normals."""
    center = np.asarray(center, dtype=np.float64)
    segments = max(8, int(np.ceil(2 * np.pi * radius / spacing)))
    rings = max(1, int(np.ceil(height / spacing)))
    angle = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    ring = np.stack([np.cos(angle), np.sin(angle), np.zeros_like(angle)], 1) * radius
    z = np.linspace(0.0, height, rings + 1)
    side = (center + ring[None, :, :] + np.stack([np.zeros_like(z)] * 2 + [z], 1)[:, None, :])
    side = side.reshape(-1, 3)
    index = np.arange(len(side)).reshape(rings + 1, segments)
    nxt = np.roll(index, -1, axis=1)
    a, b, c, d = index[:-1].ravel(), nxt[:-1].ravel(), nxt[1:].ravel(), index[1:].ravel()
    faces = [np.stack([a, b, c], 1), np.stack([a, c, d], 1)]
    vertices = [side]
    for level, top in ((0, False), (rings, True)):
        hub = len(side) + (1 if top else 0)
        vertices.append((center + [0.0, 0.0, z[level]])[None])
        rim, rim_next = index[level], nxt[level]
        fan = np.stack([np.full(segments, hub), rim, rim_next], 1) if top else \
            np.stack([np.full(segments, hub), rim_next, rim], 1)
        faces.append(fan)
    return np.concatenate(vertices), np.concatenate(faces)


def ellipsoid_surface(center, radii, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """A closed ellipsoid: the grid of `box_surface` projected radially onto it (no poles, so
    every face pairs into a quad), outward normals."""
    radii = np.asarray(radii, dtype=np.float64)
    vertices, faces = box_surface(-radii, radii, spacing)
    direction = vertices / radii
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return np.asarray(center, dtype=np.float64) + direction * radii, faces


def wavy_panel(origin, u, v, spacing: float, amplitude: float, period: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """A `grid_patch` folded like a curtain: displaced along its normal (u x v) by
    amplitude * sin(2 pi s / period), s the distance along u."""
    origin, u, v = (np.asarray(a, dtype=np.float64) for a in (origin, u, v))
    nu = max(1, int(np.ceil(np.linalg.norm(u) / spacing)))
    nv = max(1, int(np.ceil(np.linalg.norm(v) / spacing)))
    vertices, faces = grid_patch(origin, u, v, nu, nv)
    normal = np.cross(u, v)
    normal /= np.linalg.norm(normal)
    along = (vertices - origin) @ (u / np.linalg.norm(u))
    return vertices + amplitude * np.sin(2 * np.pi * along / period)[:, None] * normal, faces
