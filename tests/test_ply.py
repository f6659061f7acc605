"""PLY reading and writing in the ScanNet and Replica layouts, and every bad-input error."""

from __future__ import annotations

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from uniseg3d.datasets.ply import read_mesh, write_replica_mesh, write_scannet_mesh
from uniseg3d.datasets.primitives import box_surface
from uniseg3d.datasets.scene import InputError


@pytest.fixture
def box():
    vertices, faces = box_surface([0, 0, 0], [1, 2, 1], 0.25)
    colors = np.random.default_rng(0).integers(0, 256, (len(vertices), 3), dtype=np.uint8)
    return vertices.astype(np.float32), colors, faces


def test_scannet_layout_round_trip(tmp_path, box):
    vertices, colors, faces = box
    path = tmp_path / "scene0000_00_vh_clean_2.ply"
    write_scannet_mesh(path, vertices, colors, faces)
    ply = PlyData.read(str(path))
    assert not ply.text and ply.byte_order == "<"
    assert [p.name for p in ply["vertex"].properties] == ["x", "y", "z", "red", "green", "blue",
                                                          "alpha"]
    assert [p.name for p in ply["face"].properties] == ["vertex_indices"]
    mesh = read_mesh(path)
    np.testing.assert_array_equal(mesh.vertices, vertices)
    np.testing.assert_array_equal(mesh.colors, colors)
    np.testing.assert_array_equal(mesh.faces, faces)
    assert mesh.face_object_ids is None


def test_replica_quads_are_fan_triangulated_in_face_order(tmp_path):
    vertices = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 0, 0], [2, 1, 0]],
                        dtype=np.float32)
    quads = np.array([[0, 1, 2, 3], [1, 4, 5, 2]])
    path = tmp_path / "mesh_semantic.ply"
    write_replica_mesh(path, vertices, np.zeros((6, 3)), np.zeros((6, 3)), quads,
                       np.array([5, 9]))
    mesh = read_mesh(path, face_lengths=(4, 3))
    np.testing.assert_array_equal(mesh.faces, [[0, 1, 2], [0, 2, 3], [1, 4, 5], [1, 5, 2]])
    np.testing.assert_array_equal(mesh.face_object_ids, [5, 5, 9, 9])


def test_ascii_ply_reads_too(tmp_path, box):
    vertices, colors, faces = box
    path = tmp_path / "ascii.ply"
    vertex = np.empty(len(vertices), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"),
                                            ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    vertex["x"], vertex["y"], vertex["z"] = vertices.T
    vertex["red"], vertex["green"], vertex["blue"] = colors.T
    face = np.empty(len(faces), dtype=[("vertex_indices", "i4", (3,))])
    face["vertex_indices"] = faces
    PlyData([PlyElement.describe(vertex, "vertex"), PlyElement.describe(face, "face")],
            text=True).write(str(path))
    np.testing.assert_array_equal(read_mesh(path).faces, faces)


def expect_error(path, field_fragment):
    with pytest.raises(InputError) as info:
        read_mesh(path)
    assert str(path) in str(info.value)
    assert field_fragment in info.value.field
    return info.value


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.ply", "file")


def test_not_a_ply_file(tmp_path):
    path = tmp_path / "scene.ply"
    path.write_text("solid cube\nfacet normal 0 0 1\n")
    expect_error(path, "header")


def test_truncated_binary_ply(tmp_path, box):
    path = tmp_path / "scene.ply"
    write_scannet_mesh(path, *box)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 500])
    error = expect_error(path, "data")
    assert "end-of-file" in str(error)


def test_nan_and_infinite_coordinates(tmp_path, box):
    vertices, colors, faces = box
    for bad in (np.nan, np.inf):
        broken = vertices.copy()
        broken[3, 1] = bad
        path = tmp_path / f"bad_{bad}.ply"
        write_scannet_mesh(path, broken, colors, faces)
        error = expect_error(path, "vertex.x/y/z")
        assert "first at vertex 3" in str(error)


def test_no_vertices(tmp_path):
    path = tmp_path / "empty.ply"
    write_scannet_mesh(path, np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3), dtype=int))
    expect_error(path, "vertex")


def test_missing_colour_property(tmp_path, box):
    vertices, _, faces = box
    vertex = np.empty(len(vertices), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    vertex["x"], vertex["y"], vertex["z"] = vertices.T
    path = tmp_path / "nocolor.ply"
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(path))
    expect_error(path, "vertex.red")


def test_face_index_out_of_range(tmp_path, box):
    vertices, colors, faces = box
    faces = faces.copy()
    faces[0, 0] = len(vertices)
    path = tmp_path / "scene.ply"
    write_scannet_mesh(path, vertices, colors, faces)
    expect_error(path, "face.vertex_indices")
