"""ScanNet v2 raw scans -> `Scene`.

One scene folder `scans/<scene>/` holds `<scene>_vh_clean_2.ply` (the mesh),
`<scene>_vh_clean_2.0.010000.segs.json` (`segIndices`, one segment id per vertex) and
`<scene>.aggregation.json` (`segGroups`: objects as lists of segment ids with a raw category).
Aggregations from the older release (`Aggregator.v1`) have the same schema and load the same way.
A scene without an aggregation (ScanNet's test split, a user's own scan) loads unlabelled.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from uniseg3d.datasets.labels import LabelMap
from uniseg3d.datasets.ply import Mesh, read_mesh
from uniseg3d.datasets.scene import IGNORE_INDEX, InputError, Scene
from uniseg3d.datasets.superpoints import segment_mesh, vertex_normals

MESH_SUFFIX = "_vh_clean_2.ply"
SEGS_SUFFIX = "_vh_clean_2.0.010000.segs.json"
AGGREGATION_SUFFIX = ".aggregation.json"


def scene_files(scene_dir: str | Path) -> dict[str, Path]:
    """The raw files of one scene folder (mesh, segs, aggregation), whether they exist or not."""
    scene_dir = Path(scene_dir)
    name = scene_dir.name
    return {"mesh": scene_dir / f"{name}{MESH_SUFFIX}",
            "segs": scene_dir / f"{name}{SEGS_SUFFIX}",
            "aggregation": scene_dir / f"{name}{AGGREGATION_SUFFIX}"}


def _load_json(path: Path) -> object:
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise InputError(path, "json", "a valid JSON document", str(error)) from None


def read_segs_json(path: str | Path, num_vertices: int) -> np.ndarray:
    """Raw segment ids (`segIndices`) of a `segs.json`, validated against the mesh size."""
    path = Path(path)
    document = _load_json(path)
    if not isinstance(document, dict) or "segIndices" not in document:
        raise InputError(path, "segIndices", "an object with a 'segIndices' list")
    try:
        seg_indices = np.asarray(document["segIndices"], dtype=np.int64)
    except (TypeError, ValueError):
        raise InputError(path, "segIndices", "a list of integers") from None
    if seg_indices.ndim != 1 or len(seg_indices) != num_vertices:
        raise InputError(path, "segIndices", f"{num_vertices} entries (one per mesh vertex)",
                         f"{seg_indices.size}")
    return seg_indices


def write_segs_json(path: str | Path, seg_indices: np.ndarray, scene_id: str,
                    k_thresh: float, min_verts: int) -> None:
    """Write segment ids in ScanNet's `segs.json` layout."""
    document = {"params": {"kThresh": str(k_thresh), "segMinVerts": str(min_verts)},
                "sceneId": scene_id,
                "segIndices": np.asarray(seg_indices, dtype=np.int64).tolist()}
    Path(path).write_text(json.dumps(document), encoding="utf-8")


def read_aggregation(path: str | Path) -> list[dict]:
    """The `segGroups` of an aggregation file, validated (objectId, label, segments)."""
    path = Path(path)
    document = _load_json(path)
    groups = document.get("segGroups") if isinstance(document, dict) else None
    if not isinstance(groups, list):
        raise InputError(path, "segGroups", "a list of object groups")
    seen: set[int] = set()
    for i, group in enumerate(groups):
        for key, kind in (("objectId", int), ("label", str), ("segments", list)):
            if not isinstance(group, dict) or not isinstance(group.get(key), kind):
                raise InputError(path, f"segGroups[{i}].{key}", f"a {kind.__name__}",
                                 repr(group.get(key)) if isinstance(group, dict) else repr(group))
        if group["objectId"] in seen:
            raise InputError(path, f"segGroups[{i}].objectId", "unique object ids",
                             f"objectId {group['objectId']} more than once")
        seen.add(group["objectId"])
    return groups


def _instances_from_groups(groups: list[dict], seg_indices: np.ndarray, path: Path
                           ) -> np.ndarray:
    """Per-vertex instance index (group order; a segment listed twice goes to the later group)."""
    known, inverse = np.unique(seg_indices, return_inverse=True)
    owner = np.full(len(known), IGNORE_INDEX, dtype=np.int64)
    for k, group in enumerate(groups):
        segments = np.asarray(group["segments"], dtype=np.int64)
        position = np.searchsorted(known, segments)
        found = (position < len(known)) & (known[np.minimum(position, len(known) - 1)] == segments)
        if not found.all():
            raise InputError(path, f"segGroups[{k}].segments",
                             "segment ids that occur in the scene's segIndices",
                             f"unknown segments {segments[~found][:5].tolist()}")
        owner[position] = k
    return owner[inverse]


def scene_from_mesh(scene_id: str, mesh: Mesh, superpoints: np.ndarray, instance: np.ndarray,
                    instance_object_ids: np.ndarray, instance_names: list[str],
                    semantic20: np.ndarray, semantic200: np.ndarray) -> Scene:
    """Assemble a `Scene` from a mesh and per-vertex labels (normals computed from the faces)."""
    normals = vertex_normals(mesh.vertices, mesh.faces)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.divide(normals, length, out=np.zeros_like(normals), where=length > 0)
    return Scene(scene_id=scene_id, coords=mesh.vertices, colors=mesh.colors, normals=normals,
                 superpoints=np.unique(superpoints, return_inverse=True)[1].astype(np.int64),
                 semantic20=semantic20, semantic200=semantic200, instance=instance,
                 instance_object_ids=np.asarray(instance_object_ids, dtype=np.int64),
                 instance_names=tuple(instance_names))


def read_scannet_scene(scene_dir: str | Path, label_map: LabelMap | None,
                       unmapped: Counter | None = None, recompute_superpoints: bool = False,
                       k_thresh: float = 0.01, min_verts: int = 20) -> Scene:
    """Read one ScanNet v2 scene folder into a `Scene`.

    Superpoints come from the shipped `segs.json` unless it is missing or
    `recompute_superpoints` is set; object annotations always resolve through the shipped
    `segs.json`, whose segment ids they name. Raw categories unknown to `label_map` map to ignore
    and are counted in `unmapped`."""
    files = scene_files(scene_dir)
    scene_id = Path(scene_dir).name
    mesh = read_mesh(files["mesh"])
    num_vertices = len(mesh.vertices)
    seg_indices = read_segs_json(files["segs"], num_vertices) if files["segs"].is_file() else None
    if seg_indices is None or recompute_superpoints:
        superpoints = segment_mesh(mesh.vertices, mesh.faces, k_thresh, min_verts)
    else:
        superpoints = seg_indices

    instance = np.full(num_vertices, IGNORE_INDEX, dtype=np.int64)
    semantic20 = np.full(num_vertices, IGNORE_INDEX, dtype=np.int64)
    semantic200 = np.full(num_vertices, IGNORE_INDEX, dtype=np.int64)
    groups: list[dict] = []
    if files["aggregation"].is_file():
        groups = read_aggregation(files["aggregation"])
        if seg_indices is None:
            raise InputError(files["segs"], "segIndices",
                             "the segs.json that the aggregation's segment ids refer to",
                             "no such file")
        if label_map is None:
            raise ValueError(f"{scene_dir}: an annotated scene needs the label map "
                             "(scannetv2-labels.combined.tsv)")
        instance = _instances_from_groups(groups, seg_indices, files["aggregation"])
        sem20, sem200 = label_map.classify([g["label"] for g in groups], unmapped)
        labelled = instance >= 0
        semantic20[labelled] = sem20[instance[labelled]]
        semantic200[labelled] = sem200[instance[labelled]]
    return scene_from_mesh(scene_id, mesh, superpoints, instance,
                           [g["objectId"] for g in groups], [g["label"] for g in groups],
                           semantic20, semantic200)
