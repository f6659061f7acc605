"""Replica raw scenes (`<scene>/habitat/mesh_semantic.ply` + `info_semantic.json`) -> `Scene`.

Faces (quads or triangles) carry an `object_id`; a vertex takes the object that most of its
faces belong to (ties to the smaller id). Class names stay free text for open-vocabulary
evaluation; names that are also ScanNet20 / ScanNet200 classes get those ids too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from uniseg3d.datasets.classes import scannet20, scannet200
from uniseg3d.datasets.ply import read_mesh
from uniseg3d.datasets.scannet import scene_from_mesh
from uniseg3d.datasets.scene import IGNORE_INDEX, InputError, Scene
from uniseg3d.datasets.superpoints import segment_mesh

MESH_FILE = "habitat/mesh_semantic.ply"
INFO_FILE = "habitat/info_semantic.json"


def replica_files(scene_dir: str | Path) -> dict[str, Path]:
    scene_dir = Path(scene_dir)
    return {"mesh": scene_dir / MESH_FILE, "info": scene_dir / INFO_FILE}


def read_object_classes(path: str | Path) -> dict[int, str]:
    """Object id -> class name from `info_semantic.json` (`objects` with `id`, `class_name`)."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "file", "an existing info_semantic.json", "no such file") from None
    except json.JSONDecodeError as error:
        raise InputError(path, "json", "a valid JSON document", str(error)) from None
    objects = document.get("objects") if isinstance(document, dict) else None
    if not isinstance(objects, list):
        raise InputError(path, "objects", "a list of objects with 'id' and 'class_name'")
    classes: dict[int, str] = {}
    for i, obj in enumerate(objects):
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), int) \
                or not isinstance(obj.get("class_name"), str):
            raise InputError(path, f"objects[{i}]", "an object with integer 'id' and string "
                             "'class_name'", repr(obj)[:80])
        if obj["id"] in classes:
            raise InputError(path, f"objects[{i}].id", "unique object ids",
                             f"id {obj['id']} more than once")
        classes[obj["id"]] = obj["class_name"]
    return classes


def vertex_majority(num_vertices: int, faces: np.ndarray, face_values: np.ndarray) -> np.ndarray:
    """For each vertex, the value most of its faces carry (ties -> smaller); -1 where no face."""
    vertex = faces.ravel()
    value = np.repeat(face_values, faces.shape[1])
    pairs, counts = np.unique(np.stack([vertex, value], 1), axis=0, return_counts=True)
    best = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))  # by vertex, most votes, smaller id
    pairs = pairs[best]
    first = np.ones(len(pairs), dtype=bool)
    first[1:] = pairs[1:, 0] != pairs[:-1, 0]
    result = np.full(num_vertices, IGNORE_INDEX, dtype=np.int64)
    result[pairs[first, 0]] = pairs[first, 1]
    return result


def read_replica_scene(scene_dir: str | Path, k_thresh: float = 0.01, min_verts: int = 20
                       ) -> Scene:
    """Read one Replica scene folder; superpoints are computed from the mesh."""
    files = replica_files(scene_dir)
    classes = read_object_classes(files["info"])
    mesh = read_mesh(files["mesh"], face_lengths=(4, 3))
    if mesh.face_object_ids is None:
        raise InputError(files["mesh"], "face.object_id", "an object_id per face", "none")
    unknown = np.setdiff1d(mesh.face_object_ids, list(classes))
    if unknown.size:
        raise InputError(files["mesh"], "face.object_id",
                         f"object ids listed in {files['info'].name}",
                         f"unknown ids {unknown[:5].tolist()}")
    object_of_vertex = vertex_majority(len(mesh.vertices), mesh.faces, mesh.face_object_ids)
    object_ids = np.unique(object_of_vertex[object_of_vertex >= 0])
    instance = np.full(len(mesh.vertices), IGNORE_INDEX, dtype=np.int64)
    has_object = object_of_vertex >= 0
    instance[has_object] = np.searchsorted(object_ids, object_of_vertex[has_object])
    names = [classes[int(i)] for i in object_ids]

    def by_name(table) -> np.ndarray:
        index = table.index_of_name()
        per_instance = np.array([index.get(n.strip().lower().replace("_", " "), IGNORE_INDEX)
                                 for n in names] + [IGNORE_INDEX], dtype=np.int64)
        return per_instance[instance]  # IGNORE_INDEX (-1) picks the trailing ignore entry

    superpoints = segment_mesh(mesh.vertices, mesh.faces, k_thresh, min_verts)
    return scene_from_mesh(Path(scene_dir).name, mesh, superpoints, instance, object_ids, names,
                           by_name(scannet20()), by_name(scannet200()))
