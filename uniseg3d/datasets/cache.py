"""The scene cache: one folder per scene, one `.npy` per array, plus `meta.json`.

A scene is written to a hidden temporary folder beside its destination and renamed into place,
so an interrupted run never leaves a half-written scene folder; leftovers of a killed run are
hidden (`.tmp-*`, `.old-*`) and removed by `remove_stale_temporaries`.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from uniseg3d.datasets.scene import Description, InputError, Scene

FORMAT_VERSION = 1
META_FILE = "meta.json"
REFERRING_FILE = "referring.json"
ARRAYS = {  # file stem -> Scene field
    "coord": "coords", "color": "colors", "normal": "normals", "superpoint": "superpoints",
    "segment20": "semantic20", "segment200": "semantic200", "instance": "instance",
    "instance_object_id": "instance_object_ids",
}
TEMP_PREFIXES = (".tmp-", ".old-")


def write_scene(scene: Scene, out_root: str | Path, meta: dict) -> Path:
    """Write `scene` to `out_root/<scene_id>/` atomically (replacing an older copy)."""
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    final = out_root / scene.scene_id
    temp = out_root / f".tmp-{scene.scene_id}-{uuid.uuid4().hex[:8]}"
    temp.mkdir()
    try:
        for stem, field_name in ARRAYS.items():
            np.save(temp / f"{stem}.npy", getattr(scene, field_name))
        np.save(temp / "instance_name.npy", np.array(scene.instance_names, dtype=np.str_))
        referring = [{"object_id": d.object_id, "ann_id": d.ann_id, "description": d.text}
                     for d in scene.referring]
        (temp / REFERRING_FILE).write_text(json.dumps(referring), encoding="utf-8")
        meta = {"format_version": FORMAT_VERSION, "scene_id": scene.scene_id,
                "num_points": scene.num_points, "num_superpoints": scene.num_superpoints,
                "num_instances": scene.num_instances, **meta}
        (temp / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        if final.exists():
            old = out_root / f".old-{scene.scene_id}-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
            os.replace(temp, final)
            shutil.rmtree(old)
        else:
            os.replace(temp, final)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return final


def read_meta(scene_dir: str | Path) -> dict | None:
    """The `meta.json` of a cached scene, or None when there is no readable one."""
    try:
        return json.loads((Path(scene_dir) / META_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def read_scene(scene_dir: str | Path, mmap: bool = False) -> Scene:
    """Load a cached scene (arrays memory-mapped when `mmap`)."""
    scene_dir = Path(scene_dir)
    meta = read_meta(scene_dir)
    if meta is None or meta.get("format_version") != FORMAT_VERSION:
        raise InputError(scene_dir / META_FILE, "format_version",
                         f"a cache written with format version {FORMAT_VERSION}",
                         "no readable meta.json" if meta is None else str(meta.get("format_version")))
    mode = "r" if mmap else None
    arrays = {field_name: np.load(scene_dir / f"{stem}.npy", mmap_mode=mode, allow_pickle=False)
              for stem, field_name in ARRAYS.items()}
    names = np.load(scene_dir / "instance_name.npy", allow_pickle=False)
    referring = json.loads((scene_dir / REFERRING_FILE).read_text(encoding="utf-8"))
    return Scene(scene_id=meta["scene_id"], instance_names=tuple(str(n) for n in names),
                 referring=tuple(Description(object_id=r["object_id"], text=r["description"],
                                             ann_id=r["ann_id"]) for r in referring),
                 **arrays)


def cached_scene_ids(out_root: str | Path) -> list[str]:
    """Ids of the complete scenes under `out_root` (hidden temporaries excluded)."""
    out_root = Path(out_root)
    if not out_root.is_dir():
        return []
    return sorted(p.name for p in out_root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / META_FILE).is_file())


def remove_stale_temporaries(out_root: str | Path) -> int:
    """Delete leftovers of interrupted writes; returns how many were removed."""
    out_root = Path(out_root)
    if not out_root.is_dir():
        return 0
    stale = [p for p in out_root.iterdir() if p.name.startswith(TEMP_PREFIXES)]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return len(stale)
