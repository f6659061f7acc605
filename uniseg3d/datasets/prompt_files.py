"""`prompts/<scene>.json`: the exact prompts `evaluate` gave one scene, so that any method can be
run on them and scored the same way (`uniseg3d evaluate-predictions --task all`).

Format version 1, a JSON object:

* `format_version` (1), `scene` (its id), `benchmark` (`scannet` or `replica`: the cache its
  ground truth comes from), `index` (the scene's position in the benchmark's evaluated list,
  which seeds its clicks and orders the per-scene statistics), `points` (its point count);
* `clicks`: one `{"point", "instance"}` per clicked object, in order: the index of the clicked
  point and the ground-truth instance (its index in the cache's `instance` array) it targets;
* `descriptions`: one `{"text", "instance", "object_id", "ann_id"}` per description, in order:
  the ground-truth instance, and the ScanRefer object and annotation ids;
* `classes`: the open-vocabulary class list as the text given to the model; predicted
  open-vocabulary labels index it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uniseg3d.datasets.loader import Sample
from uniseg3d.datasets.scene import InputError, Scene

PROMPTS_DIR = "prompts"
FORMAT_VERSION = 1
BENCHMARKS = ("scannet", "replica")
KINDS = {int: "an integer", str: "a string", list: "a list"}


@dataclass(frozen=True)
class ScenePrompts:
    """One scene's prompts file, read."""

    source: str  # the file
    scene_id: str
    benchmark: str
    index: int
    points: int
    click_points: np.ndarray  # (Kc,)
    click_instances: np.ndarray  # (Kc,)
    texts: list[str]
    text_instances: np.ndarray  # (Kt,)
    classes: list[str]

    def sample(self, scene: Scene) -> Sample:
        """The evaluation `Sample` of `scene` (its ground truth) with these prompts."""
        if scene.scene_id != self.scene_id or scene.num_points != self.points:
            raise InputError(self.source, "points", f"the prompts' {self.points} points of "
                             f"scene {self.scene_id}",
                             f"{scene.num_points} points in scene {scene.scene_id}")
        for key, instances in (("clicks", self.click_instances),
                               ("descriptions", self.text_instances)):
            if len(instances) and instances.max() >= scene.num_instances:
                raise InputError(self.source, key, f"instances below {scene.num_instances}",
                                 f"instance {instances.max()}")
        return Sample(scene, self.click_points, self.click_instances, list(self.texts),
                      self.text_instances)


def prompts_document(sample: Sample, benchmark: str, index: int, classes: list[str]) -> dict:
    """The prompts file of an evaluation sample (which holds all of its scene's descriptions,
    in order)."""
    scene = sample.scene
    if [d.text for d in scene.referring] != list(sample.texts):
        raise ValueError(f"{scene.scene_id}: the sample's descriptions are not the scene's")
    return {
        "format_version": FORMAT_VERSION, "scene": scene.scene_id, "benchmark": benchmark,
        "index": index, "points": scene.num_points,
        "clicks": [{"point": int(p), "instance": int(i)}
                   for p, i in zip(sample.click_points, sample.click_instances)],
        "descriptions": [{"text": d.text, "instance": int(i), "object_id": int(d.object_id),
                          "ann_id": int(d.ann_id)}
                         for d, i in zip(scene.referring, sample.text_instances)],
        "classes": list(classes),
    }


def write_prompts(folder: str | Path, documents: list[dict]) -> None:
    """`folder/<scene>.json` for each document; written beside and renamed into place, so the
    folder never mixes two evaluations."""
    folder = Path(folder)
    partial = folder.with_name(folder.name + ".partial")
    if partial.exists():
        for stale in partial.iterdir():
            stale.unlink()
    partial.mkdir(parents=True, exist_ok=True)
    for document in documents:
        (partial / f"{document['scene']}.json").write_text(json.dumps(document, indent=1) + "\n",
                                                           encoding="utf-8")
    if folder.exists():
        for old in folder.iterdir():
            old.unlink()
        folder.rmdir()
    partial.rename(folder)


def _field(path: Path, document: dict, key: str, kind: type, where: str = "") -> object:
    value = document.get(key) if isinstance(document, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InputError(path, where + key, KINDS[kind],
                         "nothing" if value is None else repr(value)[:60])
    return value


def _indices(path: Path, items: list, key: str, name: str, high: int | None = None
             ) -> np.ndarray:
    values = [_field(path, item, name, int, f"{key}[{k}].") for k, item in enumerate(items)]
    for k, value in enumerate(values):
        if value < 0 or (high is not None and value >= high):
            raise InputError(path, f"{key}[{k}].{name}",
                             f"an index in [0, {high - 1 if high is not None else 'inf'}]",
                             str(value))
    return np.asarray(values, dtype=np.int64)


def read_prompts(path: str | Path) -> ScenePrompts:
    """One `prompts/<scene>.json`, every field checked (errors name the file and the key)."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(path, "file", "a JSON prompts file", str(error)) from None
    if _field(path, document, "format_version", int) != FORMAT_VERSION:
        raise InputError(path, "format_version", str(FORMAT_VERSION),
                         str(document["format_version"]))
    scene_id = _field(path, document, "scene", str)
    if scene_id != path.stem:
        raise InputError(path, "scene", f"{path.stem} (the file's name)", scene_id)
    benchmark = _field(path, document, "benchmark", str)
    if benchmark not in BENCHMARKS:
        raise InputError(path, "benchmark", f"one of {', '.join(BENCHMARKS)}", benchmark)
    index = _field(path, document, "index", int)
    points = _field(path, document, "points", int)
    clicks = _field(path, document, "clicks", list)
    descriptions = _field(path, document, "descriptions", list)
    classes = _field(path, document, "classes", list)
    for k, name in enumerate(classes):
        if not isinstance(name, str) or not name.strip():
            raise InputError(path, f"classes[{k}]", "a class name", repr(name))
    return ScenePrompts(
        str(path), scene_id, benchmark, index, points,
        _indices(path, clicks, "clicks", "point", points),
        _indices(path, clicks, "clicks", "instance"),
        [_field(path, d, "text", str, f"descriptions[{k}].") for k, d in enumerate(descriptions)],
        _indices(path, descriptions, "descriptions", "instance"), classes)
