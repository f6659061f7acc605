"""The raw files of the synthetic benchmark, in ScanNet's, ScanRefer's and Replica's layouts.

Per ScanNet-format scene: `<scene>_vh_clean_2.ply`, `<scene>_vh_clean_2.0.010000.segs.json` and
`<scene>.aggregation.json`; per dataset: `scannetv2-labels.combined.tsv`, the split lists and
`ScanRefer_filtered_<split>.json`. Per Replica-format scene: `habitat/mesh_semantic.ply` (quads
with an object_id each) and `habitat/info_semantic.json`. Every writer is deterministic.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from uniseg3d.datasets.classes import scannet200
from uniseg3d.datasets.labels import LABEL_MAP_FILE
from uniseg3d.datasets.ply import write_replica_mesh, write_scannet_mesh
from uniseg3d.datasets.replica import INFO_FILE, MESH_FILE
from uniseg3d.datasets.scannet import scene_files, write_segs_json
from uniseg3d.datasets.scanrefer import scanrefer_file
from uniseg3d.datasets.superpoints import vertex_normals
from uniseg3d.datasets.synthetic.catalog import (NYU40, REPLICA_CLASSES, SCANNET_CATEGORIES,
                                                 category_nyu40)
from uniseg3d.datasets.synthetic.mesh import SceneMesh, pair_quads

LABEL_MAP_COLUMNS = ("id", "raw_category", "category", "count", "nyu40id", "eigen13id",
                     "nyuClass", "nyu40class", "eigen13class", "ModelNet40", "ModelNet10",
                     "ShapeNetCore55", "synsetoffset", "wnsynsetid", "wnsynsetkey", "mpcat40",
                     "mpcat40index")
UNLISTED_ID_BASE = 2000
"""Label-map ids of raw categories that are not ScanNet200 classes start here."""


def split_file(out: str | Path, split: str) -> Path:
    return Path(out) / f"scannetv2_{split}.txt"


def _write_json(path: Path, document: object) -> None:
    path.write_text(json.dumps(document), encoding="utf-8")


def object_segments(segments: np.ndarray, vertex_object: np.ndarray, count: int
                    ) -> list[list[int]]:
    """Per object, the sorted ids of the segments its vertices belong to."""
    pairs = np.unique(np.stack([vertex_object, segments], axis=1), axis=0)
    bounds = np.searchsorted(pairs[:, 0], np.arange(count + 1))
    return [pairs[bounds[k]:bounds[k + 1], 1].tolist() for k in range(count)]


def write_scannet_scene(scene_dir: Path, mesh: SceneMesh, segments: np.ndarray,
                        labels: list[str], k_thresh: float, min_verts: int) -> None:
    """Mesh, segments and aggregation of one scene (object k = objectId k, label = raw name)."""
    scene_dir.mkdir(parents=True, exist_ok=True)
    scene_id = scene_dir.name
    files = scene_files(scene_dir)
    write_scannet_mesh(files["mesh"], mesh.vertices, mesh.colors, mesh.faces)
    write_segs_json(files["segs"], segments, scene_id, k_thresh, min_verts)
    groups = [{"id": k, "objectId": k, "segments": segs, "label": label}
              for k, (segs, label) in enumerate(zip(
                  object_segments(segments, mesh.vertex_object, len(labels)), labels))]
    _write_json(files["aggregation"], {
        "sceneId": f"scannet.{scene_id}", "appId": "Aggregator.v2", "annId": 0,
        "segGroups": groups, "segmentsFile": f"scannet.{files['segs'].name}"})


def write_replica_scene(scene_dir: Path, mesh: SceneMesh, labels: list[str]) -> None:
    """`habitat/mesh_semantic.ply` (quads) and `habitat/info_semantic.json` of one scene."""
    (scene_dir / MESH_FILE).parent.mkdir(parents=True, exist_ok=True)
    normals = vertex_normals(mesh.vertices, mesh.faces)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    quads, source = pair_quads(mesh.faces)
    write_replica_mesh(scene_dir / MESH_FILE, mesh.vertices, mesh.colors, normals, quads,
                       mesh.face_object[source])
    class_id = {name: i + 1 for i, name in enumerate(REPLICA_CLASSES)}
    _write_json(scene_dir / INFO_FILE, {
        "classes": [{"id": i, "name": name} for name, i in class_id.items()],
        "objects": [{"id": k, "class_id": class_id[label], "class_name": label}
                    for k, label in enumerate(labels)],
        "id_to_label": [class_id[label] for label in labels]})


def label_map_rows(counts: Counter) -> list[dict[str, str]]:
    """One row per raw category of the ScanNet-format scenes, in ScanNet's columns."""
    table = scannet200()
    raw_ids = dict(zip(table.names, table.source_ids.tolist()))
    rows = []
    for i, raw in enumerate(SCANNET_CATEGORIES):
        nyu40 = category_nyu40(raw)
        nyu_class, eigen_id, eigen_class, mpcat, mpcat_index = NYU40[nyu40]
        row = dict.fromkeys(LABEL_MAP_COLUMNS, "")
        row.update({"id": str(raw_ids.get(raw, UNLISTED_ID_BASE + i)), "raw_category": raw,
                    "category": raw, "count": str(counts.get(raw, 0)), "nyu40id": str(nyu40),
                    "eigen13id": str(eigen_id), "nyuClass": raw, "nyu40class": nyu_class,
                    "eigen13class": eigen_class, "mpcat40": mpcat,
                    "mpcat40index": str(mpcat_index)})
        rows.append(row)
    return rows


def write_label_map(out: Path, counts: Counter) -> Path:
    path = out / LABEL_MAP_FILE
    lines = ["\t".join(LABEL_MAP_COLUMNS)]
    lines += ["\t".join(row[c] for c in LABEL_MAP_COLUMNS) for row in label_map_rows(counts)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_split(out: Path, split: str, scene_ids: list[str]) -> Path:
    path = split_file(out, split)
    path.write_text("".join(f"{s}\n" for s in scene_ids), encoding="utf-8")
    return path


def write_scanrefer(out: Path, split: str, records: list[dict]) -> Path:
    path = scanrefer_file(out, split)
    _write_json(path, records)
    return path
