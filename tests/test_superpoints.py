"""The segmentator kernel against known answers and a plain-Python reference implementation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from uniseg3d.cli import main
from uniseg3d.datasets.ply import write_scannet_mesh
from uniseg3d.datasets.primitives import box_surface, grid_patch, merge_meshes
from uniseg3d.datasets.superpoints import segment_mesh, vertex_normals


def reference_segmentator(vertices, faces, k=0.01, min_verts=20):
    """A literal, loop-by-loop transcription of ScanNet's segmentator (float32 throughout)."""
    v = vertices.astype(np.float32)
    n = np.zeros_like(v)
    counts = np.zeros(len(v), dtype=np.float32)
    for f in faces:
        p1, p2, p3 = v[f[0]], v[f[1]], v[f[2]]
        c = np.cross(p2 - p1, p3 - p1).astype(np.float32)
        length = np.float32(np.sqrt(np.float32(np.dot(c, c))))
        if not length > 0:
            continue
        c = c / length
        for i in f:
            n[i] = n[i] + (c - n[i]) * (np.float32(1) / (counts[i] + np.float32(1)))
            counts[i] += 1
    edges = []
    for f in faces:
        edges += [(f[0], f[1]), (f[0], f[2]), (f[2], f[1])]
    weights = []
    for a, b in edges:
        d = v[b] - v[a]
        d = d / np.float32(np.sqrt(np.float32(np.dot(d, d))))
        w = np.float32(1) - np.float32(np.dot(n[a], n[b]))
        if np.float32(np.dot(n[b], d)) > 0:
            w = w * w
        weights.append(np.float32(w))
    order = np.argsort(np.array(weights, dtype=np.float32), kind="stable")
    parent = list(range(len(v)))
    rank = [0] * len(v)
    size = [1] * len(v)
    thr = [np.float32(k)] * len(v)

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    def join(a, b):
        if rank[a] > rank[b]:
            parent[b] = a
            size[a] += size[b]
            return a
        parent[a] = b
        size[b] += size[a]
        if rank[a] == rank[b]:
            rank[b] += 1
        return b

    for i in order:
        a, b = find(edges[i][0]), find(edges[i][1])
        w = weights[i]
        if a != b and w <= thr[a] and w <= thr[b]:
            r = join(a, b)
            thr[r] = np.float32(w + np.float32(k / size[r]))
    for i in order:
        a, b = find(edges[i][0]), find(edges[i][1])
        if a != b and (size[a] < min_verts or size[b] < min_verts):
            join(a, b)
    return np.array([find(i) for i in range(len(v))])


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two labelings group the vertices identically (labels may differ)."""
    pairs = np.unique(np.stack([a, b], 1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def test_flat_plane_is_one_segment():
    vertices, faces = grid_patch([0, 0, 0], [2, 0, 0], [0, 2, 0], 20, 20)
    assert np.unique(segment_mesh(vertices, faces)).tolist() == [0]


def test_box_faces_are_separate_segments():
    vertices, faces = box_surface([0, 0, 0], [1, 1, 1], 0.1)
    segments = segment_mesh(vertices, faces)
    assert segments.max() + 1 == 6
    # every vertex strictly inside a box face belongs to that face's segment alone
    for axis in range(3):
        for side in (0.0, 1.0):
            others = [a for a in range(3) if a != axis]
            inside = (vertices[:, axis] == side) & np.all(
                (vertices[:, others] > 0.01) & (vertices[:, others] < 0.99), axis=1)
            assert len(np.unique(segments[inside])) == 1


def test_pieces_under_min_verts_are_merged():
    # a large floor and a small upright flap (4 x 2 cells = 15 vertices) standing on its edge,
    # welded to the floor along y = 0.5: the flap is its own segment only when min_verts allows it
    floor = grid_patch([0, 0, 0], [1, 0, 0], [0, 1, 0], 10, 10)
    flap = grid_patch([0.2, 0.5, 0], [0.4, 0, 0], [0, 0, 0.2], 4, 2)
    from uniseg3d.datasets.primitives import weld

    vertices, faces = weld(*merge_meshes([floor, flap]), tolerance=1e-4)
    flap_top = vertices[:, 2] > 0.15
    fine = segment_mesh(vertices, faces, min_verts=1)
    assert len(np.unique(fine[flap_top])) == 1 and fine[flap_top][0] != fine[0]
    assert len(np.unique(fine)) > 2  # seam vertices with mixed normals stay apart too
    assert len(np.unique(segment_mesh(vertices, faces, min_verts=20))) == 1


def test_invariant_to_vertex_order_up_to_relabelling():
    rng = np.random.default_rng(3)
    vertices, faces = box_surface([0, 0, 0], [1.2, 0.8, 0.6], 0.05)
    vertices = vertices + rng.normal(0, 0.004, vertices.shape)
    segments = segment_mesh(vertices, faces)
    permutation = rng.permutation(len(vertices))
    inverse = np.argsort(permutation)
    permuted = segment_mesh(vertices[permutation], inverse[faces])
    assert same_partition(segments, permuted[inverse])


def test_matches_plain_python_reference_on_noisy_mesh():
    rng = np.random.default_rng(7)
    vertices, faces = merge_meshes([box_surface([0, 0, 0], [0.6, 0.5, 0.4], 0.06),
                                    grid_patch([-1, -1, 0], [2, 0, 0], [0, 2, 0], 12, 12)])
    vertices = (vertices + rng.normal(0, 0.01, vertices.shape)).astype(np.float32)
    for k, min_verts in ((0.01, 20), (0.05, 5), (0.002, 1)):
        ours = segment_mesh(vertices, faces, k, min_verts)
        expected = reference_segmentator(vertices, faces, k, min_verts)
        assert same_partition(ours, expected)
    assert len(np.unique(ours)) > 10  # the fine setting really splits the noisy surface


def test_vertex_normals_are_running_mean_of_unit_face_normals():
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    faces = np.array([[0, 1, 2], [0, 3, 1]])  # normals +z and +y... (0,3,1): (0,0,1)x(1,0,0)=+y
    normals = vertex_normals(vertices, faces)
    np.testing.assert_allclose(normals[0], [0, 0.5, 0.5])
    np.testing.assert_allclose(normals[2], [0, 0, 1])
    np.testing.assert_allclose(normals[3], [0, 1, 0])


def test_contiguous_ids_and_isolated_vertices():
    vertices, faces = grid_patch([0, 0, 0], [1, 0, 0], [0, 1, 0], 5, 5)
    vertices = np.concatenate([vertices, [[5.0, 5.0, 5.0]]])  # a vertex no face uses
    segments = segment_mesh(vertices, faces)
    assert sorted(np.unique(segments)) == list(range(segments.max() + 1))
    assert segments.max() == 1 and segments[-1] != segments[0]


@pytest.mark.parametrize("bad", [dict(k_thresh=0), dict(min_verts=0)])
def test_rejects_bad_parameters(bad):
    vertices, faces = grid_patch([0, 0, 0], [1, 0, 0], [0, 1, 0], 2, 2)
    with pytest.raises(ValueError):
        segment_mesh(vertices, faces, **bad)


def test_cli_writes_scannet_segs_json(tmp_path):
    vertices, faces = box_surface([0, 0, 0], [1, 1, 1], 0.1)
    mesh = tmp_path / "scene0007_00_vh_clean_2.ply"
    write_scannet_mesh(mesh, vertices, np.zeros_like(vertices, dtype=np.uint8), faces)
    assert main(["superpoints", str(mesh)]) == 0
    out = tmp_path / "scene0007_00_vh_clean_2.0.010000.segs.json"
    document = json.loads(out.read_text())
    assert document["sceneId"] == "scene0007_00"
    assert set(document["params"]) >= {"kThresh", "segMinVerts"}
    assert len(document["segIndices"]) == len(vertices)
    assert len(set(document["segIndices"])) == 6


def test_degenerate_faces_and_zero_length_edges_do_not_crash():
    # a triangle stored as a quad (a, b, c, c) fan-triangulates into a zero-area face whose
    # edge (c, c) has zero length; coincident vertices give zero-length edges too
    vertices, faces = grid_patch([0, 0, 0], [1, 0, 0], [0, 1, 0], 6, 6)
    vertices = np.concatenate([vertices, vertices[:1]])  # a duplicate of vertex 0
    faces = np.concatenate([faces, [[3, 4, 4], [0, len(vertices) - 1, 1]]])
    segments = segment_mesh(vertices, faces)
    assert segments.shape == (len(vertices),) and segments.max() == 0
