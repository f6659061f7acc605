"""The synthetic benchmark: generated once per module (3 train + 2 val + 1 Replica scenes) and
checked through the project's readers: loading, segments, descriptions, class coverage, novel
classes, interpenetration, determinism."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from plyfile import PlyData

from uniseg3d.datasets.classes import scannet20, scannet200
from uniseg3d.datasets.labels import LABEL_MAP_FILE, read_label_map
from uniseg3d.datasets.replica import read_replica_scene
from uniseg3d.datasets.scannet import read_aggregation, read_scannet_scene, scene_files
from uniseg3d.datasets.scanrefer import read_scanrefer, scanrefer_file
from uniseg3d.datasets.superpoints import segment_mesh
from uniseg3d.datasets.synthetic.catalog import NOVEL_CLASSES, STRUCTURE, category_nyu40
from uniseg3d.datasets.synthetic.referring import check_description, tokenize
from uniseg3d.datasets.synthetic.relations import SceneView
from uniseg3d.datasets.synthetic.writer import LABEL_MAP_COLUMNS, split_file
from uniseg3d.pipelines.prepare import prepare_dataset
from uniseg3d.pipelines.synth import run_synth

TRAIN, VAL, REPLICA, SEED = 3, 2, 1, 7
SCANNET_IDS = [f"scene{i:04d}_00" for i in range(TRAIN + VAL)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synth")
    return root, run_synth(root, TRAIN, VAL, REPLICA, SEED, jobs=2, progress=False)


@pytest.fixture(scope="module")
def scenes(dataset):
    root, _ = dataset
    label_map = read_label_map(root / LABEL_MAP_FILE)
    unmapped: Counter = Counter()
    loaded = {s: read_scannet_scene(root / "scans" / s, label_map, unmapped) for s in SCANNET_IDS}
    assert not unmapped, f"raw categories missing from the label map: {unmapped}"
    return loaded


@pytest.fixture(scope="module")
def views(scenes):
    return {s: SceneView.from_points(sc.coords, sc.colors, sc.instance, sc.instance_object_ids,
                                     sc.instance_names) for s, sc in scenes.items()}


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_summary(dataset):
    _, summary = dataset
    assert summary["scenes"] == {"train": TRAIN, "val": VAL, "replica": REPLICA}
    assert 20_000 < summary["vertices_per_scene"]["mean"] < 80_000
    assert summary["descriptions"] >= 2 * summary["described_objects"] > 0


def test_layout_and_splits(dataset):
    root, _ = dataset
    assert split_file(root, "train").read_text().split() == SCANNET_IDS[:TRAIN]
    assert split_file(root, "val").read_text().split() == SCANNET_IDS[TRAIN:]
    for scene_id in SCANNET_IDS:
        assert all(path.is_file() for path in scene_files(root / "scans" / scene_id).values())
    assert sorted(p.name for p in (root / "replica").iterdir()) == ["room_0"]


def test_mesh_format(dataset):
    root, _ = dataset
    ply = PlyData.read(str(scene_files(root / "scans" / SCANNET_IDS[0])["mesh"]))
    assert not ply.text and ply.byte_order == "<"
    assert [p.name for p in ply["vertex"].properties] == ["x", "y", "z", "red", "green", "blue",
                                                          "alpha"]
    assert {len(f) for f in ply["face"]["vertex_indices"][:1000]} == {3}
    replica = PlyData.read(str(root / "replica" / "room_0" / "habitat" / "mesh_semantic.ply"))
    assert {len(f) for f in replica["face"]["vertex_indices"]} == {4}
    assert "object_id" in replica["face"].data.dtype.names


def test_label_map(dataset, scenes):
    root, _ = dataset
    lines = (root / LABEL_MAP_FILE).read_text().splitlines()
    assert tuple(lines[0].split("\t")) == LABEL_MAP_COLUMNS
    rows = [dict(zip(LABEL_MAP_COLUMNS, line.split("\t"))) for line in lines[1:]]
    by_name = {row["raw_category"]: row for row in rows}
    used = {name for scene in scenes.values() for name in scene.instance_names}
    assert used <= set(by_name)
    table200 = dict(zip(scannet200().names, scannet200().source_ids.tolist()))
    for name, row in by_name.items():
        assert int(row["nyu40id"]) == category_nyu40(name)
        if name in table200:
            assert int(row["id"]) == table200[name]
    classes_per_nyu = Counter(row["nyu40id"] for row in rows)
    assert classes_per_nyu["5"] >= 3 and classes_per_nyu["3"] >= 3  # chair, cabinet variants


def test_segments_belong_to_one_object(dataset, scenes):
    root, _ = dataset
    for scene_id, scene in scenes.items():
        files = scene_files(root / "scans" / scene_id)
        segs = np.asarray(json.loads(files["segs"].read_text())["segIndices"])
        groups = read_aggregation(files["aggregation"])
        listed = [s for g in groups for s in g["segments"]]
        assert len(listed) == len(set(listed)), "a segment is listed by two objects"
        assert set(listed) == set(segs.tolist()), "every segment belongs to an object"
        owner = scene.instance
        for segment in np.unique(segs):
            assert len(np.unique(owner[segs == segment])) == 1
        faces = PlyData.read(str(files["mesh"]))["face"]["vertex_indices"]
        faces = np.stack(faces)
        assert (owner[faces] == owner[faces[:, :1]]).all(), "a face joins two objects"
        recomputed = segment_mesh(scene.coords, faces, 0.01, 20)
        assert (recomputed == segs).all(), "segs.json is not the segmentator's output"


def test_descriptions_resolve_to_their_object(dataset, scenes, views):
    root, _ = dataset
    total = 0
    for split, ids in (("train", SCANNET_IDS[:TRAIN]), ("val", SCANNET_IDS[TRAIN:])):
        records = json.loads(scanrefer_file(root, split).read_text())
        by_scene = read_scanrefer(scanrefer_file(root, split))
        assert set(by_scene) == set(ids)
        for record in records:
            scene = scenes[record["scene_id"]]
            name = scene.instance_names[scene.instance_index(int(record["object_id"]))]
            assert record["object_name"] == name.replace(" ", "_")
            assert record["token"] == tokenize(record["description"])
            assert record["description"] == record["description"].lower()
        for scene_id, descriptions in by_scene.items():
            per_object = Counter(d.object_id for d in descriptions)
            assert set(per_object.values()) <= {1, 2, 3, 4, 5}
            assert np.mean(list(per_object.values())) >= 2.5
            for description in descriptions:
                found = check_description(description.text, views[scene_id])
                assert found == {description.object_id}, (scene_id, description)
                total += 1
    assert total > 100


def test_class_name_alone_is_ambiguous(views):
    """Every scene repeats some class, and its descriptions then need more than the name."""
    for scene_id, view in views.items():
        names = Counter(n for n in view.names if n not in STRUCTURE)
        repeated = [n for n, count in names.items() if count > 1]
        assert repeated, scene_id
        for name in repeated:
            assert len(check_description(f"this is a {name}.", view)) == names[name]


def test_all_scannet20_classes_occur(scenes):
    present = set(np.concatenate([np.unique(s.semantic20) for s in scenes.values()]).tolist())
    assert set(range(len(scannet20()))) <= present


def test_novel_classes_only_in_replica(dataset, scenes):
    root, _ = dataset
    for scene in scenes.values():
        assert not set(scene.instance_names) & set(NOVEL_CLASSES)
    assert not set(NOVEL_CLASSES) & set((root / LABEL_MAP_FILE).read_text().split("\t"))
    replica = read_replica_scene(root / "replica" / "room_0")
    assert len(set(replica.instance_names) & set(NOVEL_CLASSES)) >= 5
    assert {"wall", "floor", "ceiling"} <= set(replica.instance_names)
    assert (replica.instance >= 0).all()


def test_objects_do_not_interpenetrate(views):
    """Object boxes (from the loaded points) overlap by at most 1 cm along some axis, unless one
    stands on the other; doors and windows sit in their wall; everything stands in the room."""
    for scene_id, view in views.items():
        names = np.array(view.names)
        floor = np.flatnonzero(names == "floor")[0]
        on = view.relation["on"]
        for i in range(len(names)):
            reach = 0.05 if names[i] in ("door", "window") else 0.02  # openings straddle walls
            assert (view.low[i, :2] > view.low[floor, :2] - reach).all(), (scene_id, names[i])
            assert (view.high[i, :2] < view.high[floor, :2] + reach).all(), (scene_id, names[i])
            for j in range(i + 1, len(names)):
                pair = {names[i], names[j]}
                if "floor" in pair or pair == {"wall"} or ("wall" in pair and pair & {"door",
                                                                                        "window"}):
                    continue
                overlap = np.minimum(view.high[i], view.high[j]) - np.maximum(view.low[i],
                                                                              view.low[j])
                if (overlap > 0.01).all():
                    assert on[i, j] > 0 or on[j, i] > 0, (scene_id, names[i], names[j], overlap)


def test_scan_realism(scenes):
    scene = next(iter(scenes.values()))
    floor = scene.instance == scene.instance_names.index("floor")
    assert 0.001 < scene.coords[floor, 2].std() < 0.01  # a few millimetres of noise
    spacing = []
    for k in range(scene.num_instances):
        points = scene.coords[scene.instance == k]
        extent = points.max(axis=0) - points.min(axis=0)
        spacing.append(np.sqrt(np.sort(extent)[1:].prod() / len(points)))
    assert np.ptp(np.log(spacing)) > 0.3  # density differs between objects
    for k in range(scene.num_instances):  # colours jitter per vertex
        assert scene.colors[scene.instance == k].std(axis=0).max() > 1.0


def test_prepare_reads_the_dataset(dataset, tmp_path):
    root, _ = dataset
    scannet = prepare_dataset("scannet", root, tmp_path / "scannet", jobs=1, progress=False)
    replica = prepare_dataset("replica", root / "replica", tmp_path / "replica", jobs=1,
                              progress=False)
    assert not scannet.failed and not replica.failed
    assert scannet.count("written") == TRAIN + VAL and replica.count("written") == REPLICA
    assert sum(r.dropped_descriptions for r in scannet.results) == 0


def test_same_seed_same_bytes(dataset, tmp_path):
    root, _ = dataset
    again = tmp_path / "again"
    run_synth(again, TRAIN, VAL, REPLICA, SEED, jobs=1, progress=False)
    assert _digests(again) == _digests(root)


def test_other_seed_other_scenes(dataset, tmp_path):
    root, _ = dataset
    other = tmp_path / "other"
    run_synth(other, 1, 0, 0, SEED + 1, jobs=1, progress=False)
    mesh = scene_files(root / "scans" / SCANNET_IDS[0])["mesh"].name
    assert (other / "scans" / SCANNET_IDS[0] / mesh).read_bytes() != \
        (root / "scans" / SCANNET_IDS[0] / mesh).read_bytes()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        run_synth(tmp_path, 0, 0, 0, 0)
    with pytest.raises(ValueError):
        run_synth(tmp_path, 1, 0, 0, 0, spacing=0.0)
    with pytest.raises(ValueError, match="2 spacings for 3 scenes"):
        run_synth(tmp_path, 2, 1, 0, 0, spacing=[0.05, 0.1])


def test_a_spacing_per_scene(tmp_path):
    """Each scene at its own spacing: the same file as a run of that spacing for all."""
    summary = run_synth(tmp_path, 1, 1, 0, SEED, jobs=1, spacing=[0.1, 0.05], progress=False)
    assert summary["spacing"] == "per scene"
    run_synth(tmp_path / "one", 1, 0, 0, SEED, jobs=1, spacing=0.1, progress=False)
    coarse, fine = (scene_files(tmp_path / "scans" / scene)["mesh"] for scene in SCANNET_IDS[:2])
    assert coarse.read_bytes() == (tmp_path / "one" / "scans" / SCANNET_IDS[0] /
                                   coarse.name).read_bytes()
    assert summary["vertices_per_scene"]["max"] > 2 * summary["vertices_per_scene"]["min"]
