"""ScanNet, ScanRefer and Replica readers on files written in their true layouts."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from scannet_files import (small_room, write_label_map, write_replica_scene, write_scanrefer,
                           write_scannet_scene)
from uniseg3d.datasets.classes import scannet20, scannet200
from uniseg3d.datasets.labels import read_label_map
from uniseg3d.datasets.ply import read_mesh
from uniseg3d.datasets.replica import read_replica_scene, vertex_majority
from uniseg3d.datasets.scannet import read_scannet_scene, scene_files
from uniseg3d.datasets.scanrefer import attach_descriptions, read_scanrefer
from uniseg3d.datasets.scene import IGNORE_INDEX, Description, InputError


@pytest.fixture
def label_map(tmp_path):
    return read_label_map(write_label_map(tmp_path / "labels.tsv"))


def test_scannet_round_trip(tmp_path, label_map):
    vertices, _, objects = small_room()
    scene_dir = write_scannet_scene(tmp_path)
    scene = read_scannet_scene(scene_dir, label_map)
    assert scene.scene_id == "scene0000_00"
    np.testing.assert_array_equal(scene.coords, vertices)
    mesh = read_mesh(scene_files(scene_dir)["mesh"])
    np.testing.assert_array_equal(scene.colors, mesh.colors)
    assert scene.instance_names == ("floor", "wall", "chair", "table")
    assert scene.instance_object_ids.tolist() == [0, 1, 2, 3]
    names20 = scannet20().names
    for k, (label, rows) in enumerate(objects):
        assert (scene.instance[rows] == k).all()
        assert {names20[c] for c in scene.semantic20[rows]} == {label}
        assert {scannet200().names[c] for c in scene.semantic200[rows]} == {label}
    # superpoints: contiguous, same partition as the shipped (non-contiguous) segIndices
    segs = json.loads(scene_files(scene_dir)["segs"].read_text())["segIndices"]
    assert sorted(np.unique(scene.superpoints)) == list(range(scene.num_superpoints))
    assert len(np.unique(np.stack([scene.superpoints, segs], 1), axis=0)) == scene.num_superpoints
    assert scene.num_superpoints == 1 + 1 + 6 + 6  # floor, wall, two boxes of six faces


def test_normals_are_unit_and_point_out_of_the_boxes(tmp_path, label_map):
    scene = read_scannet_scene(write_scannet_scene(tmp_path), label_map)
    np.testing.assert_allclose(np.linalg.norm(scene.normals, axis=1), 1.0, rtol=1e-5)
    chair = scene.instance == 2
    outward = np.sum((scene.coords[chair] - scene.coords[chair].mean(0)) * scene.normals[chair], 1)
    assert (outward > 0).all()


def test_old_release_aggregation_loads(tmp_path, label_map):
    scene = read_scannet_scene(write_scannet_scene(tmp_path, app_id="Aggregator.v1"), label_map)
    assert scene.num_instances == 4


def test_unknown_raw_category_maps_to_ignore_and_is_counted(tmp_path, label_map):
    vertices, faces, objects = small_room()
    objects[2] = ("throne", objects[2][1])
    scene_dir = write_scannet_scene(tmp_path, vertices=vertices, faces=faces, objects=objects)
    unmapped = Counter()
    scene = read_scannet_scene(scene_dir, label_map, unmapped)
    assert unmapped == {"throne": 1}
    assert (scene.semantic20[objects[2][1]] == IGNORE_INDEX).all()
    assert (scene.instance[objects[2][1]] == 2).all()


def test_scene_without_aggregation_is_unlabelled(tmp_path):
    scene_dir = write_scannet_scene(tmp_path)
    scene_files(scene_dir)["aggregation"].unlink()
    scene = read_scannet_scene(scene_dir, None)
    assert (scene.instance == IGNORE_INDEX).all() and (scene.semantic20 == IGNORE_INDEX).all()
    assert scene.num_instances == 0


def test_missing_segs_json_computes_superpoints(tmp_path):
    scene_dir = write_scannet_scene(tmp_path)
    files = scene_files(scene_dir)
    files["aggregation"].unlink()
    files["segs"].unlink()
    assert read_scannet_scene(scene_dir, None).num_superpoints == 14


def test_recompute_superpoints_with_other_parameters(tmp_path, label_map):
    scene_dir = write_scannet_scene(tmp_path)
    shipped = read_scannet_scene(scene_dir, label_map)
    coarse = read_scannet_scene(scene_dir, label_map, recompute_superpoints=True, k_thresh=1e6,
                                min_verts=1)
    assert coarse.num_superpoints == 4  # every connected component becomes one segment
    np.testing.assert_array_equal(coarse.instance, shipped.instance)


def rewrite_json(path, edit):
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize("edit, field, expected", [
    (lambda d: d["segIndices"].pop(), "segIndices", "entries (one per mesh vertex)"),
    (lambda d: d.pop("segIndices"), "segIndices", "'segIndices' list"),
])
def test_bad_segs_json(tmp_path, label_map, edit, field, expected):
    scene_dir = write_scannet_scene(tmp_path)
    rewrite_json(scene_files(scene_dir)["segs"], edit)
    with pytest.raises(InputError) as info:
        read_scannet_scene(scene_dir, label_map)
    assert info.value.field == field and expected in str(info.value)
    assert "segs.json" in info.value.path


@pytest.mark.parametrize("edit, field, expected", [
    (lambda d: d["segGroups"][2]["segments"].append(999_999), "segGroups[2].segments",
     "unknown segments [999999]"),
    (lambda d: d["segGroups"][3].update(objectId=1), "segGroups[3].objectId", "more than once"),
    (lambda d: d["segGroups"][0].pop("label"), "segGroups[0].label", "None"),
    (lambda d: d.pop("segGroups"), "segGroups", "list of object groups"),
])
def test_bad_aggregation(tmp_path, label_map, edit, field, expected):
    scene_dir = write_scannet_scene(tmp_path)
    rewrite_json(scene_files(scene_dir)["aggregation"], edit)
    with pytest.raises(InputError) as info:
        read_scannet_scene(scene_dir, label_map)
    assert info.value.field == field and expected in str(info.value)
    assert "aggregation.json" in info.value.path


def test_broken_json_names_the_file(tmp_path, label_map):
    scene_dir = write_scannet_scene(tmp_path)
    scene_files(scene_dir)["aggregation"].write_text('{"segGroups": [')
    with pytest.raises(InputError, match="aggregation.json.*valid JSON"):
        read_scannet_scene(scene_dir, label_map)


def test_scanrefer_read_and_attach(tmp_path, label_map):
    scene = read_scannet_scene(write_scannet_scene(tmp_path), label_map)
    path = write_scanrefer(tmp_path / "ScanRefer_filtered_val.json", [
        ("scene0000_00", 2, "chair", 0, "the small chair next to the table."),
        ("scene0000_00", 3, "table", 1, "the table in the middle."),
        ("scene0000_00", 42, "sofa", 0, "a sofa that is not there."),
        ("scene0099_00", 1, "bed", 0, "another scene."),
    ])
    by_scene = read_scanrefer(path)
    assert set(by_scene) == {"scene0000_00", "scene0099_00"}
    attached, dropped = attach_descriptions(scene, by_scene["scene0000_00"])
    assert attached.referring == (Description(2, "the small chair next to the table.", 0),
                                  Description(3, "the table in the middle.", 1))
    assert dropped == [Description(42, "a sofa that is not there.", 0)]
    assert attached.instance_index(3) == 3


def test_scanrefer_bad_records(tmp_path):
    path = tmp_path / "ScanRefer_filtered_train.json"
    path.write_text(json.dumps([{"scene_id": "scene0000_00", "object_id": "1"}]))
    with pytest.raises(InputError, match=r"\[0\].*missing"):
        read_scanrefer(path)
    write_scanrefer(path, [("scene0000_00", 1, "chair", 0, "x")])
    rewrite_json(path, lambda d: d[0].update(object_id="one"))
    with pytest.raises(InputError, match="object_id"):
        read_scanrefer(path)


def test_replica_mixed_polygons_and_free_text_classes(tmp_path):
    scene_dir, expected = write_replica_scene(tmp_path)
    scene = read_replica_scene(scene_dir)
    assert scene.instance_object_ids.tolist() == [3, 7]
    assert scene.instance_names == ("floor", "table lamp")
    np.testing.assert_array_equal(scene.instance_object_ids[scene.instance], expected)
    floor = expected == 3
    assert (scene.semantic20[floor] == scannet20().names.index("floor")).all()
    assert (scene.semantic200[~floor] == IGNORE_INDEX).all()  # "table lamp" is not a class name


def test_replica_unknown_object_id(tmp_path):
    scene_dir, _ = write_replica_scene(tmp_path)
    rewrite_json(scene_dir / "habitat/info_semantic.json", lambda d: d["objects"].pop())
    with pytest.raises(InputError, match="unknown ids \\[7\\]"):
        read_replica_scene(scene_dir)


def test_vertex_majority_vote():
    faces = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 4]])
    values = np.array([5, 9, 9])
    # vertex 0: 5, 9, 9 -> 9; vertex 1: 5; vertex 2: 5, 9 tie -> 5; vertex 5 has no face
    assert vertex_majority(6, faces, values).tolist() == [9, 5, 5, 9, 9, IGNORE_INDEX]
