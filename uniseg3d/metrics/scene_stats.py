"""Per-scene sufficient statistics of one task, their reduction under a resample of scenes, and
their file format.

A task's statistics over S scenes are `sums`, arrays with one row per scene (confusion
matrices, TP/FP/FN counts, ground-truth counts), and `tables`, named tables of items
(detections, prompts, click curves) whose `scene` column holds the item's scene (0..S-1).
A resample of the scenes is a (R, S) array of `weights`: how often each scene is drawn in each
of R resamples. A sum under it is `weights @ sums`, an item counts `weights[:, scene]` times,
so any subset or bootstrap resample of the scenes is scored without going back to the masks.
`weights=None` means every scene once, in order (the dataset-level metric; sums then
accumulate scene by scene, as the metric modules always did).

File format: an evaluation folder's `scene_stats/` holds one `<task>.npz` per task (`np.savez`,
no pickles) holding `scene_ids` (str), `meta` (a JSON string: which reduction, class names,
...), `sum.<name>` (S, ...) and `<table>.<column>` (n, ...) arrays.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from uniseg3d.datasets.scene import InputError

FORMAT_VERSION = 1
SUM_PREFIX = "sum."
SCENE_STATS_DIR = "scene_stats"  # the folder of an evaluation's statistics, one file per task


@dataclass(frozen=True)
class SceneStats:
    """Statistics of one task over `scene_ids` (see the module docstring)."""

    scene_ids: tuple[str, ...]
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    tables: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def num_scenes(self) -> int:
        return len(self.scene_ids)

    def total(self, name: str, weights: np.ndarray | None) -> np.ndarray:
        """(R, ...) the sum `name` under `weights` (R = 1 for None)."""
        per_scene = self.sums[name]
        if weights is None:
            total = np.zeros(per_scene.shape[1:], dtype=per_scene.dtype)
            for row in per_scene:
                total += row
            return total[None]
        return np.tensordot(weights, per_scene, axes=1)

    def item_weights(self, table: str, weights: np.ndarray | None) -> np.ndarray:
        """(R, n) how often each item of `table` counts under `weights` (integers for None, so
        item counts stay integers)."""
        scene = self.tables[table]["scene"]
        if weights is None:
            return np.ones((1, len(scene)), dtype=np.int64)
        return weights[:, scene]


def one_scene(scene_id: str, sums: dict[str, np.ndarray] | None = None,
              tables: dict[str, dict[str, np.ndarray]] | None = None) -> SceneStats:
    """One scene's statistics (`tables` without their `scene` column)."""
    tables = {name: {"scene": np.zeros(len(next(iter(columns.values()))), dtype=np.int64),
                     **columns} for name, columns in (tables or {}).items()}
    return SceneStats((scene_id,), {k: np.asarray(v)[None] for k, v in (sums or {}).items()},
                      tables)


def concatenate(scenes: Sequence[SceneStats], meta: dict) -> SceneStats:
    """The statistics of several scenes (or groups of scenes) in order, with `meta`."""
    if not scenes:
        raise ValueError("no scenes to gather the statistics of")
    ids = tuple(i for s in scenes for i in s.scene_ids)
    offsets = np.cumsum([0] + [s.num_scenes for s in scenes])
    sums = {name: np.concatenate([s.sums[name] for s in scenes]) for name in scenes[0].sums}
    tables = {}
    for name, columns in scenes[0].tables.items():
        tables[name] = {column: np.concatenate([s.tables[name][column] for s in scenes])
                        for column in columns}
        tables[name]["scene"] = np.concatenate([s.tables[name]["scene"] + offsets[i]
                                                for i, s in enumerate(scenes)])
    return SceneStats(ids, sums, tables, meta)


def numbered(scene_ids: Iterable[str] | None, *per_scene: Iterable) -> Iterator[tuple]:
    """(scene id, (one item of each of `per_scene`)) per scene, the `per_scene` iterables zipped
    strictly; the ids default to "0", "1", ..."""
    ids = iter(scene_ids) if scene_ids is not None else (str(i) for i in itertools.count())
    return zip(ids, zip(*per_scene, strict=True))


def first_row(scores: dict) -> dict:
    """A reduction's nested (R,) arrays as the plain numbers of their first resample."""
    return {key: first_row(value) if isinstance(value, dict) else value[0].item()
            for key, value in scores.items()}


def multiplicities(indices: np.ndarray, num_scenes: int) -> np.ndarray:
    """(R, S) weights of R resamples given as (R, k) scene indices (each drawn index counts)."""
    indices = np.atleast_2d(np.asarray(indices, dtype=np.int64))
    rows = np.repeat(np.arange(len(indices)), indices.shape[1])
    weights = np.zeros((len(indices), num_scenes))
    np.add.at(weights, (rows, indices.ravel()), 1.0)
    return weights


def write_stats(path: str | Path, stats: SceneStats) -> None:
    """`stats` as one `.npz` file (written to a temporary name, then renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"scene_ids": np.asarray(stats.scene_ids, dtype=str),
              "meta": np.asarray(json.dumps({"format": FORMAT_VERSION, **stats.meta}))}
    arrays.update({SUM_PREFIX + name: value for name, value in stats.sums.items()})
    for table, columns in stats.tables.items():
        arrays.update({f"{table}.{column}": value for column, value in columns.items()})
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        np.savez(handle, **arrays)
    partial.replace(path)


def read_stats(path: str | Path) -> SceneStats:
    """A file written by `write_stats`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as error:
        raise InputError(path, "(file)", "a scene statistics .npz file",
                         str(error)) from error
    for key in ("scene_ids", "meta"):
        if key not in arrays:
            raise InputError(path, key, "an array of the scene statistics", "none")
    meta = json.loads(str(arrays.pop("meta")))
    if meta.get("format") != FORMAT_VERSION:
        raise InputError(path, "meta.format", f"version {FORMAT_VERSION}",
                         str(meta.get("format")))
    del meta["format"]
    ids = tuple(str(i) for i in arrays.pop("scene_ids"))
    sums = {key[len(SUM_PREFIX):]: value for key, value in arrays.items()
            if key.startswith(SUM_PREFIX)}
    tables: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        if not key.startswith(SUM_PREFIX):
            table, column = key.split(".", 1)
            tables.setdefault(table, {})[column] = value
    return SceneStats(ids, sums, tables, meta)


def read_evaluation(folder: str | Path) -> dict[str, SceneStats]:
    """Every task's statistics in an evaluation folder's `scene_stats/`, keyed by task."""
    root = Path(folder) / SCENE_STATS_DIR
    files = sorted(root.glob("*.npz"))
    if not files:
        raise InputError(root, "<task>.npz", "per-scene statistics, one file per task "
                         "(evaluate the checkpoint again with `uniseg3d evaluate`)", "none")
    return {path.stem: read_stats(path) for path in files}
