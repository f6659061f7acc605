"""Superpoints: ScanNet's mesh segmentator (Felzenszwalb-Huttenlocher on the mesh graph).

A numba kernel and one public function, `segment_mesh`, computed in float32 as the reference
C++ does: unit face normals averaged per vertex by a running mean in face order; per face the
edges (i1, i2), (i1, i3), (i3, i2); edge weight 1 - n_a.n_b, squared when the edge runs convex
(n_b . (p_b - p_a) > 0); edges sorted ascending (stable sort, so the result is deterministic);
union-find with per-component threshold w + k / size; finally components under `min_verts`
vertices are joined along the sorted edges.

One departure from the reference: a zero-area face has no normal, and the reference lets its NaN
poison the vertex normals; here such faces are left out of the vertex normal mean instead.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _vertex_normals_kernel(vertices, faces):
    normals = np.zeros(vertices.shape, dtype=np.float32)
    counts = np.zeros(vertices.shape[0], dtype=np.float32)
    one = np.float32(1.0)
    for f in range(faces.shape[0]):
        i1, i2, i3 = faces[f, 0], faces[f, 1], faces[f, 2]
        ax = vertices[i2, 0] - vertices[i1, 0]
        ay = vertices[i2, 1] - vertices[i1, 1]
        az = vertices[i2, 2] - vertices[i1, 2]
        bx = vertices[i3, 0] - vertices[i1, 0]
        by = vertices[i3, 1] - vertices[i1, 1]
        bz = vertices[i3, 2] - vertices[i1, 2]
        cx = ay * bz - az * by
        cy = az * bx - ax * bz
        cz = ax * by - ay * bx
        length = np.sqrt(cx * cx + cy * cy + cz * cz)
        if not length > 0:
            continue
        cx /= length
        cy /= length
        cz /= length
        for v in (i1, i2, i3):
            scale = one / (counts[v] + one)
            normals[v, 0] += (cx - normals[v, 0]) * scale
            normals[v, 1] += (cy - normals[v, 1]) * scale
            normals[v, 2] += (cz - normals[v, 2]) * scale
            counts[v] += one
    return normals


@numba.njit(cache=True, nogil=True, error_model="numpy")  # 0/0 -> NaN, as the C++ reference
def _edge_weights_kernel(vertices, normals, edges):
    weights = np.empty(edges.shape[0], dtype=np.float32)
    one = np.float32(1.0)
    for e in range(edges.shape[0]):
        a, b = edges[e, 0], edges[e, 1]
        dx = vertices[b, 0] - vertices[a, 0]
        dy = vertices[b, 1] - vertices[a, 1]
        dz = vertices[b, 2] - vertices[a, 2]
        dd = np.sqrt(dx * dx + dy * dy + dz * dz)
        dx /= dd
        dy /= dd
        dz /= dd
        dot = normals[a, 0] * normals[b, 0] + normals[a, 1] * normals[b, 1] \
            + normals[a, 2] * normals[b, 2]
        dot2 = normals[b, 0] * dx + normals[b, 1] * dy + normals[b, 2] * dz
        w = one - dot
        if dot2 > 0:
            w = w * w
        weights[e] = w
    return weights


@numba.njit(cache=True, nogil=True)
def _find(parent, x):
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:  # path compression
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@numba.njit(cache=True, nogil=True)
def _join(parent, rank, size, a, b):
    if rank[a] > rank[b]:
        parent[b] = a
        size[a] += size[b]
        return a
    parent[a] = b
    size[b] += size[a]
    if rank[a] == rank[b]:
        rank[b] += 1
    return b


@numba.njit(cache=True, nogil=True)
def _segment_kernel(num_vertices, edges, weights, order, k_thresh, min_verts):
    parent = np.arange(num_vertices)
    rank = np.zeros(num_vertices, dtype=np.int64)
    size = np.ones(num_vertices, dtype=np.int64)
    threshold = np.full(num_vertices, k_thresh, dtype=np.float32)
    for i in order:
        a = _find(parent, edges[i, 0])
        b = _find(parent, edges[i, 1])
        w = weights[i]
        if a != b and w <= threshold[a] and w <= threshold[b]:
            root = _join(parent, rank, size, a, b)
            threshold[root] = w + np.float32(k_thresh / size[root])
    for i in order:
        a = _find(parent, edges[i, 0])
        b = _find(parent, edges[i, 1])
        if a != b and (size[a] < min_verts or size[b] < min_verts):
            _join(parent, rank, size, a, b)
    roots = np.empty(num_vertices, dtype=np.int64)
    for v in range(num_vertices):
        roots[v] = _find(parent, v)
    return roots


def mesh_edges(faces: np.ndarray) -> np.ndarray:
    """The segmentator's edge list: (i1, i2), (i1, i3), (i3, i2) for every face, in face order."""
    faces = np.asarray(faces, dtype=np.int64)
    return np.stack([faces[:, [0, 1]], faces[:, [0, 2]], faces[:, [2, 1]]], axis=1).reshape(-1, 2)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Per-vertex running mean of unit face normals in face order (float32, not re-normalised)."""
    return _vertex_normals_kernel(np.ascontiguousarray(vertices, dtype=np.float32),
                                  np.ascontiguousarray(faces, dtype=np.int64))


def segment_mesh(vertices: np.ndarray, faces: np.ndarray, k_thresh: float = 0.01,
                 min_verts: int = 20) -> np.ndarray:
    """Superpoint id per vertex, contiguous 0..M-1, for a triangle mesh (ScanNet's segmentator).

    Vertices that no face touches become single-vertex segments."""
    vertices = np.ascontiguousarray(vertices, dtype=np.float32)
    faces = np.ascontiguousarray(faces, dtype=np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must have shape (N, 3), got {vertices.shape}")
    if faces.size and (faces.ndim != 2 or faces.shape[1] != 3):
        raise ValueError(f"faces must have shape (F, 3), got {faces.shape}")
    if k_thresh <= 0 or min_verts < 1:
        raise ValueError(f"k_thresh must be > 0 and min_verts >= 1, got {k_thresh}, {min_verts}")
    edges = mesh_edges(faces.reshape(-1, 3))
    normals = _vertex_normals_kernel(vertices, faces.reshape(-1, 3))
    weights = _edge_weights_kernel(vertices, normals, edges)
    order = np.argsort(weights, kind="stable")
    roots = _segment_kernel(len(vertices), edges, weights, order, np.float32(k_thresh),
                            int(min_verts))
    return np.unique(roots, return_inverse=True)[1].astype(np.int64)
