"""Writers of small raw scenes in the true ScanNet / ScanRefer / Replica layouts, for tests."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np

from uniseg3d.datasets.labels import read_label_map
from uniseg3d.datasets.ply import write_replica_mesh, write_scannet_mesh
from uniseg3d.datasets.primitives import box_surface, grid_patch, merge_meshes
from uniseg3d.datasets.scannet import (AGGREGATION_SUFFIX, MESH_SUFFIX, SEGS_SUFFIX,
                                       read_scannet_scene, write_segs_json)
from uniseg3d.datasets.scene import Description, Scene
from uniseg3d.datasets.superpoints import segment_mesh

LABEL_MAP_HEADER = ["id", "raw_category", "category", "count", "nyu40id", "eigen13id", "nyuClass",
                    "nyu40class", "eigen13class", "ModelNet40", "ModelNet10", "ShapeNetCore55",
                    "synsetoffset", "wnsynsetid", "wnsynsetkey", "mpcat40", "mpcat40index"]
# (ScanNet200 raw id, raw category, nyu40 id) as in ScanNet's label map
LABEL_ROWS = [(1, "wall", 1), (2, "chair", 5), (3, "floor", 2), (4, "table", 7),
              (5, "door", 8), (10, "office chair", 5), (41, "ceiling", 22),
              (29, "kitchen cabinet", 3), (1163, "object", 40), (3000, "hoverboard", 40)]


def write_label_map(path: Path, rows=LABEL_ROWS) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(LABEL_MAP_HEADER)
        for raw_id, name, nyu40 in rows:
            writer.writerow([raw_id, name, name, 10, nyu40, 0, name, name, "", "", "", "", "", "",
                             "", name, 0])
    return path


def small_room() -> tuple[np.ndarray, np.ndarray, list[tuple[str, slice]]]:
    """A floor, a wall, a chair-sized box and a table-sized box, each its own mesh component.

    Returns vertices, faces and (raw category, vertex slice) per object."""
    parts = [("floor", grid_patch([0, 0, 0], [0, 3, 0], [3, 0, 0], 30, 30)),
             ("wall", grid_patch([0, 3, 0], [3, 0, 0], [0, 0, 2], 30, 20)),
             ("chair", box_surface([0.5, 0.5, 0.01], [1.0, 1.0, 0.9], 0.1)),
             ("table", box_surface([1.5, 1.2, 0.01], [2.5, 2.0, 0.75], 0.1))]
    objects, start = [], 0
    for name, (v, _) in parts:
        objects.append((name, slice(start, start + len(v))))
        start += len(v)
    vertices, faces = merge_meshes([mesh for _, mesh in parts])
    return vertices.astype(np.float32), faces, objects


def write_scannet_scene(root: Path, scene_id: str = "scene0000_00", app_id: str = "Aggregator.v2",
                        vertices=None, faces=None, objects=None, seed: int = 0) -> Path:
    """Write `root/scans/<scene_id>/` with mesh, segs.json and aggregation; returns the folder."""
    if vertices is None:
        vertices, faces, objects = small_room()
    rng = np.random.default_rng(seed)
    scene_dir = root / "scans" / scene_id
    scene_dir.mkdir(parents=True, exist_ok=True)
    colors = rng.integers(0, 256, (len(vertices), 3), dtype=np.uint8)
    write_scannet_mesh(scene_dir / f"{scene_id}{MESH_SUFFIX}", vertices, colors, faces)
    # ScanNet writes non-contiguous segment ids (root vertex indices): mimic that
    segments = segment_mesh(vertices, faces) * 7 + 3
    write_segs_json(scene_dir / f"{scene_id}{SEGS_SUFFIX}", segments, scene_id, 0.01, 20)
    groups = []
    for object_id, (label, rows) in enumerate(objects):
        groups.append({"id": object_id, "objectId": object_id, "label": label,
                       "segments": np.unique(segments[rows]).tolist()})
    aggregation = {"sceneId": f"scannet.{scene_id}", "appId": app_id, "annId": 0,
                   "segGroups": groups,
                   "segmentsFile": f"scannet.{scene_id}{SEGS_SUFFIX.removesuffix('.segs.json')}"}
    (scene_dir / f"{scene_id}{AGGREGATION_SUFFIX}").write_text(json.dumps(aggregation))
    return scene_dir


def write_scanrefer(path: Path, records: list[tuple[str, int, str, int, str]]) -> Path:
    """ScanRefer JSON from (scene_id, object_id, object_name, ann_id, description) tuples."""
    path.write_text(json.dumps([
        {"scene_id": s, "object_id": str(o), "object_name": n, "ann_id": str(a),
         "description": d, "token": d.split()} for s, o, n, a, d in records]))
    return path


def write_replica_scene(root: Path, scene: str = "room_0") -> tuple[Path, np.ndarray]:
    """A Replica scene: a floor of quads (object 3, 'floor') and a box of triangles (object 7,
    'table lamp'), so the face list mixes polygon sizes. Returns the folder and the expected
    object id per vertex."""
    floor_v, floor_f = grid_patch([0, 0, 0], [0, 2, 0], [2, 0, 0], 10, 10)
    box_v, box_f = box_surface([0.5, 0.5, 0.0], [0.9, 0.9, 0.6], 0.1)
    cells = len(floor_f) // 2  # grid_patch lists (a, b, c) per cell, then (a, c, d)
    quads = np.concatenate([floor_f[:cells], floor_f[cells:, 2:3]], axis=1)
    vertices = np.concatenate([floor_v, box_v])
    polygons = list(quads) + list(box_f + len(floor_v))
    object_ids = np.concatenate([np.full(len(quads), 3), np.full(len(box_f), 7)])
    habitat = root / scene / "habitat"
    habitat.mkdir(parents=True)
    write_replica_mesh(habitat / "mesh_semantic.ply", vertices, np.full((len(vertices), 3), 128),
                       np.zeros_like(vertices), polygons, object_ids)
    info = {"classes": [{"id": 1, "name": "floor"}, {"id": 2, "name": "table lamp"}],
            "objects": [{"id": 3, "class_id": 1, "class_name": "floor"},
                        {"id": 7, "class_id": 2, "class_name": "table lamp"}],
            "id_to_label": []}
    (habitat / "info_semantic.json").write_text(json.dumps(info))
    return root / scene, np.concatenate([np.full(len(floor_v), 3), np.full(len(box_v), 7)])


def described_scenes(root: Path, descriptions: tuple[tuple[int, str], ...], count: int = 2
                     ) -> list[Scene]:
    """`count` ScanNet-layout scenes written under `root` and read back, each given the same
    `descriptions` ((object id, text) pairs, as ScanRefer records them)."""
    label_map = read_label_map(write_label_map(root / "labels.tsv"))
    referring = tuple(Description(obj, text, ann) for ann, (obj, text) in
                      enumerate(descriptions))
    return [dataclasses.replace(read_scannet_scene(
        write_scannet_scene(root, f"scene{i:04d}_00", seed=i), label_map), referring=referring)
        for i in range(count)]
