"""Uploaded scans: checked, kept in the server's own temporary folder, never overwriting.

An upload must be named `*.ply`, start with the PLY magic line, stay under the size limit, and
read as a mesh or point cloud with at least one vertex and finite coordinates (`read_mesh`
checks the last two); anything else is an `UploadError` whose message the page shows. Each
upload is written to a new file of its own in the folder (a fresh name, never a user-given
path), so nothing outside it is touched and nothing is overwritten.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from uniseg3d.datasets.ply import Mesh
from uniseg3d.datasets.scene import InputError, Scene
from uniseg3d.pipelines.predict import read_scan

PLY_MAGIC = (b"ply\n", b"ply\r\n")


class UploadError(ValueError):
    """An upload that cannot be opened as a scan."""


def store_upload(name: str, content: bytes, folder: Path, max_bytes: int) -> Path:
    """Write one upload to a new file in `folder`; returns its path."""
    if not name.lower().endswith(".ply"):
        raise UploadError(f"{name!r} is not a .ply file; upload a PLY mesh or point cloud")
    if len(content) > max_bytes:
        raise UploadError(f"{name!r} is {len(content) / 2**20:.1f} MB; the limit is "
                          f"{max_bytes / 2**20:.0f} MB (serve --max-upload-mb)")
    if not content.startswith(PLY_MAGIC):
        raise UploadError(f"{name!r} is not a PLY file (it does not start with 'ply')")
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(name).stem)[:40]
    fd, path = tempfile.mkstemp(prefix=f"{stem or 'upload'}-", suffix=".ply", dir=folder)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    return Path(path)


def read_upload(name: str, content: bytes, folder: Path, max_bytes: int, k_thresh: float,
                min_verts: int) -> tuple[Mesh, Scene]:
    """The uploaded scan as a mesh and an unlabelled scene (superpoints as `predict` makes
    them); a bad file is an `UploadError` and leaves nothing behind."""
    path = store_upload(name, content, folder, max_bytes)
    try:
        return read_scan(path, k_thresh, min_verts)
    except InputError as error:
        path.unlink(missing_ok=True)
        found = f", found {error.found}" if error.found is not None else ""
        raise UploadError(f"{name!r}: {error.field}: expected {error.expected}{found}") \
            from None
