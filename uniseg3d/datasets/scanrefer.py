"""ScanRefer referring expressions (`ScanRefer_filtered_{train,val}.json`) attached to scenes."""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from pathlib import Path

from uniseg3d.datasets.scene import Description, InputError, Scene

SCANREFER_SPLITS = ("train", "val")
REQUIRED_FIELDS = ("scene_id", "object_id", "object_name", "ann_id", "description")


def scanrefer_file(directory: str | Path, split: str) -> Path:
    return Path(directory) / f"ScanRefer_filtered_{split}.json"


def read_scanrefer(path: str | Path) -> dict[str, list[Description]]:
    """Descriptions per scene id from one ScanRefer JSON file (a list of records)."""
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(path, "json", "a valid JSON document", str(error)) from None
    if not isinstance(records, list):
        raise InputError(path, "records", "a JSON list of ScanRefer records",
                         type(records).__name__)
    by_scene: dict[str, list[Description]] = defaultdict(list)
    for i, record in enumerate(records):
        missing = [f for f in REQUIRED_FIELDS if not isinstance(record, dict) or f not in record]
        if missing:
            raise InputError(path, f"[{i}]", f"a record with fields {list(REQUIRED_FIELDS)}",
                             f"missing {missing}")
        try:
            object_id, ann_id = int(record["object_id"]), int(record["ann_id"])
        except (TypeError, ValueError):
            raise InputError(path, f"[{i}].object_id/ann_id", "integers (or integer strings)",
                             f"{record['object_id']!r}, {record['ann_id']!r}") from None
        by_scene[str(record["scene_id"])].append(
            Description(object_id=object_id, text=str(record["description"]), ann_id=ann_id))
    return dict(by_scene)


def read_scanrefer_dir(directory: str | Path) -> dict[str, list[Description]]:
    """Descriptions per scene from every ScanRefer split file present in `directory`."""
    merged: dict[str, list[Description]] = defaultdict(list)
    for split in SCANREFER_SPLITS:
        path = scanrefer_file(directory, split)
        if path.is_file():
            for scene_id, descriptions in read_scanrefer(path).items():
                merged[scene_id].extend(descriptions)
    return dict(merged)


def attach_descriptions(scene: Scene, descriptions: list[Description]
                        ) -> tuple[Scene, list[Description]]:
    """The scene with the descriptions whose object exists, and the dropped ones."""
    known = set(scene.instance_object_ids.tolist())
    kept = [d for d in descriptions if d.object_id in known]
    dropped = [d for d in descriptions if d.object_id not in known]
    return dataclasses.replace(scene, referring=tuple(kept)), dropped
