"""Binary PLY meshes: reading with validation, and writing in the ScanNet and Replica layouts.

ScanNet's `*_vh_clean_2.ply` holds vertices `x y z red green blue alpha` and triangle faces
(`list uchar int vertex_indices`); Replica's `mesh_semantic.ply` holds polygon faces (quads or
triangles) with an `object_id` per face. Every problem is reported as an `InputError` naming the
file, the field and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement, PlyElementParseError, PlyHeaderParseError

from uniseg3d.datasets.scene import InputError

FACE_INDEX_NAMES = ("vertex_indices", "vertex_index")


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh as plain arrays (polygons are fan-triangulated on reading)."""

    vertices: np.ndarray  # (N, 3) float32
    colors: np.ndarray  # (N, 3) uint8
    faces: np.ndarray  # (F, 3) int64
    face_object_ids: np.ndarray | None = None  # (F,) int64, one per triangle, when the file has it


def _open_ply(path: Path, face_lengths: tuple[int, ...]) -> PlyData:
    """Parse a PLY file, memory-mapping fixed-length faces when they are (fast path)."""
    if not path.is_file():
        raise InputError(path, "file", "an existing PLY mesh", "no such file")
    errors = (PlyHeaderParseError, PlyElementParseError, ValueError, EOFError, OSError,
              UnicodeDecodeError)
    for length in face_lengths:
        try:
            return PlyData.read(str(path), known_list_len={
                "face": {name: length for name in FACE_INDEX_NAMES}})
        except PlyElementParseError:
            continue  # other polygon sizes, or a truncated body: the general reader decides
        except errors as error:
            raise InputError(path, "header", "a PLY file ('ply' magic line and a valid header)",
                             str(error) or type(error).__name__) from None
    try:  # polygons of mixed size (or a damaged body): plyfile's general, slower reader
        return PlyData.read(str(path))
    except errors as error:
        raise InputError(path, "data", "a complete PLY body", str(error)) from None


def _triangulate(polygons: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Fan-triangulate polygons; returns triangles and, per triangle, its source polygon index.

    `polygons` is either a 2-D integer array (fixed length) or an object array of 1-D arrays."""
    if polygons.dtype != object:
        groups = {polygons.shape[1]: (np.arange(len(polygons)), polygons)}
    else:
        lengths = np.fromiter((len(p) for p in polygons), dtype=np.int64, count=len(polygons))
        groups = {}
        for length in np.unique(lengths):
            rows = np.flatnonzero(lengths == length)
            groups[int(length)] = (rows, np.stack(polygons[rows]).reshape(len(rows), length))
    triangles, sources = [], []
    for length, (rows, block) in groups.items():
        if length < 3:
            raise InputError(path, "face.vertex_indices", "polygons of at least 3 vertices",
                             f"{length}-vertex faces")
        for j in range(1, length - 1):
            triangles.append(np.stack([block[:, 0], block[:, j], block[:, j + 1]], axis=1))
            sources.append(rows)
    if not triangles:
        return np.zeros((0, 3), dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = np.argsort(np.concatenate(sources), kind="stable")
    return (np.concatenate(triangles).astype(np.int64)[order],
            np.concatenate(sources)[order])


def read_mesh(path: str | Path, face_lengths: tuple[int, ...] = (3,)) -> Mesh:
    """Read and validate a binary or ASCII PLY mesh with vertex colours and polygon faces.

    `face_lengths` lists the polygon sizes to try on the fast (memory-mapped) path first."""
    path = Path(path)
    ply = _open_ply(path, face_lengths)
    names = [element.name for element in ply.elements]
    if "vertex" not in names:
        raise InputError(path, "vertex", "a 'vertex' element", f"elements {names}")
    vertex = ply["vertex"].data
    for prop in ("x", "y", "z", "red", "green", "blue"):
        if prop not in vertex.dtype.names:
            raise InputError(path, f"vertex.{prop}", "vertex properties x y z red green blue",
                             f"properties {list(vertex.dtype.names)}")
    if len(vertex) == 0:
        raise InputError(path, "vertex", "at least one vertex", "0 vertices")
    vertices = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float32)
    bad = ~np.isfinite(vertices).all(axis=1)
    if bad.any():
        raise InputError(path, "vertex.x/y/z", "finite coordinates",
                         f"{int(bad.sum())} vertices with NaN or infinite values "
                         f"(first at vertex {int(np.flatnonzero(bad)[0])})")
    colors = np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=1)
    colors = np.clip(colors, 0, 255).astype(np.uint8)

    faces = np.zeros((0, 3), dtype=np.int64)
    face_object_ids = None
    if "face" in names:
        face = ply["face"].data
        index_name = next((n for n in FACE_INDEX_NAMES if n in face.dtype.names), None)
        if index_name is None:
            raise InputError(path, "face.vertex_indices", "a list property 'vertex_indices'",
                             f"properties {list(face.dtype.names)}")
        faces, source = _triangulate(face[index_name], path)
        if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
            raise InputError(path, "face.vertex_indices",
                             f"vertex indices in [0, {len(vertices) - 1}]",
                             f"indices from {int(faces.min())} to {int(faces.max())}")
        if "object_id" in face.dtype.names:
            face_object_ids = np.asarray(face["object_id"], dtype=np.int64)[source]
    return Mesh(vertices=vertices, colors=colors, faces=faces, face_object_ids=face_object_ids)


def _face_element(faces, extra: dict[str, np.ndarray]) -> PlyElement:
    """Faces as a PLY element; `faces` is an (F, L) array or a sequence of polygons of any size."""
    fixed = isinstance(faces, np.ndarray) and faces.ndim == 2
    fields = [("vertex_indices", "i4", (faces.shape[1],)) if fixed else ("vertex_indices", "O")]
    fields += [(name, "i4") for name in extra]
    data = np.empty(len(faces), dtype=fields)
    if fixed:
        data["vertex_indices"] = faces
    else:
        data["vertex_indices"] = [np.asarray(face, dtype=np.int32) for face in faces]
    for name, values in extra.items():
        data[name] = values
    return PlyElement.describe(data, "face", len_types={"vertex_indices": "u1"},
                               val_types={"vertex_indices": "i4"})


def _write(path: str | Path, vertex: np.ndarray, faces, extra: dict[str, np.ndarray]) -> None:
    """Write a binary little-endian PLY. Fixed-size faces are written as one block of bytes
    (plyfile serialises list properties row by row in Python, ~100x slower)."""
    ply = PlyData([PlyElement.describe(vertex, "vertex"), _face_element(faces, extra)],
                  text=False, byte_order="<")
    if not (isinstance(faces, np.ndarray) and faces.ndim == 2):
        ply.write(str(path))
        return
    rows = np.empty(len(faces), dtype=[("n", "u1"), ("v", "<i4", (faces.shape[1],))]
                    + [(name, "<i4") for name in extra])
    rows["n"] = faces.shape[1]
    rows["v"] = faces
    for name, values in extra.items():
        rows[name] = values
    with open(path, "wb") as handle:
        handle.write(ply.header.encode("ascii") + b"\n")
        handle.write(vertex.astype(vertex.dtype.newbyteorder("<")).tobytes())
        handle.write(rows.tobytes())


def write_scannet_mesh(path: str | Path, vertices: np.ndarray, colors: np.ndarray,
                       faces: np.ndarray, properties: dict[str, np.ndarray] | None = None
                       ) -> None:
    """Write a mesh exactly as ScanNet's `*_vh_clean_2.ply` (binary little-endian, RGBA), with
    optional extra per-vertex int32 `properties` after alpha (scalar fields in CloudCompare
    and MeshLab)."""
    properties = properties or {}
    vertex = np.empty(len(vertices), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"),
                                            ("green", "u1"), ("blue", "u1"), ("alpha", "u1")]
                      + [(name, "i4") for name in properties])
    for name, values in properties.items():
        vertex[name] = np.asarray(values, dtype=np.int32)
    vertex["x"], vertex["y"], vertex["z"] = np.asarray(vertices, dtype=np.float32).T
    vertex["red"], vertex["green"], vertex["blue"] = np.asarray(colors, dtype=np.uint8).T
    vertex["alpha"] = 255
    _write(path, vertex, np.asarray(faces), {})


def write_replica_mesh(path: str | Path, vertices: np.ndarray, colors: np.ndarray,
                       normals: np.ndarray, faces, face_object_ids: np.ndarray) -> None:
    """Write a mesh as Replica's `habitat/mesh_semantic.ply` (normals, RGB, per-face object_id).

    `faces` is an (F, 4) quad array, an (F, 3) triangle array or a sequence of polygons."""
    vertex = np.empty(len(vertices), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("nx", "f4"),
                                            ("ny", "f4"), ("nz", "f4"), ("red", "u1"),
                                            ("green", "u1"), ("blue", "u1")])
    vertex["x"], vertex["y"], vertex["z"] = np.asarray(vertices, dtype=np.float32).T
    vertex["nx"], vertex["ny"], vertex["nz"] = np.asarray(normals, dtype=np.float32).T
    vertex["red"], vertex["green"], vertex["blue"] = np.asarray(colors, dtype=np.uint8).T
    _write(path, vertex, faces, {"object_id": face_object_ids})
