"""Paired bootstrap over scenes: every task metric of several evaluations, their differences to
a baseline and the differences' confidence intervals, from per-scene statistics alone.

A side is one configuration: one evaluation, or several (one per training seed) of the same
scenes. Each resample draws the scenes with replacement (one draw per set of scenes, shared by
every task scored on that set) and, per side, one of its seeds; every side is scored on the same
drawn scenes, so the difference to the baseline is paired. With several seeds the interval thus
covers the seed-to-seed spread as well as the scene sample. A side's value is the mean over its
seeds of the metric on all scenes.

* interval: the percentiles (1 - confidence) / 2 and (1 + confidence) / 2 of the resampled
  differences (numpy's linear interpolation); `significant` when it excludes zero;
* p_value: two-sided bootstrap proportion, twice the smaller share of resampled differences
  at or below zero and at or above zero, at most 1 (identical sides: 1);
* resamples where a metric is undefined (NaN, e.g. a class drawn in no scene) are left out of
  its interval and p-value;
* a composite (e.g. the paper's "Overall", the mean of six headline metrics) is the mean of its
  parts in every resample and on all scenes, so its interval is paired like theirs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from uniseg3d.datasets.scene import InputError

from uniseg3d.metrics.scene_stats import SceneStats, multiplicities
from uniseg3d.metrics.tasks import task_scores

NOT_METRICS = ("classes", "count", "clicks", "objects")  # counts and per-class tables
PER_CLASS = {"semantic": "iou", "instance": "ap"}  # per-class differences reported
CHUNK = 1000  # resamples scored at once (bounds the memory of the vectorised reductions)

Evaluation = Mapping[str, SceneStats]  # one evaluation folder: task -> statistics


@dataclass(frozen=True)
class Side:
    """One configuration: its name and one evaluation per seed."""

    name: str
    seeds: Sequence[Evaluation]


def flat_metrics(scores: dict, task: str) -> dict[tuple[str, str], np.ndarray]:
    """(task, metric) -> (R,) values of a task's scores: nested sections joined with "/",
    per-class tables and counts left out."""
    flat: dict[tuple[str, str], np.ndarray] = {}

    def walk(prefix: str, node: dict) -> None:
        for key, value in node.items():
            if key in NOT_METRICS:
                continue
            if isinstance(value, dict):
                walk(f"{prefix}{key}/", value)
            else:
                flat[(task, prefix + key)] = np.asarray(value, dtype=np.float64)

    walk("", scores)
    return flat


def class_metrics(scores: dict, task: str) -> dict[tuple[str, str], np.ndarray]:
    """(task, "classes/<class>/<metric>") -> (R,) values of the task's per-class metric in
    `PER_CLASS`."""
    if task not in PER_CLASS:
        return {}
    metric = PER_CLASS[task]
    return {(task, f"classes/{name}/{metric}"): np.asarray(values[metric], dtype=np.float64)
            for name, values in scores["classes"].items()}


def _scores(evaluation: Evaluation, weights: Mapping[tuple[str, ...], np.ndarray | None]
            ) -> tuple[dict, dict]:
    metrics, classes = {}, {}
    for task, stats in evaluation.items():
        scores = task_scores(stats, weights[stats.scene_ids])
        metrics.update(flat_metrics(scores, task))
        classes.update(class_metrics(scores, task))
    return metrics, classes


def _side_values(side: Side, weights: Mapping[tuple[str, ...], np.ndarray], seed_of: np.ndarray
                 ) -> tuple[dict, dict]:
    """(R,) values of every metric with resample r scored on seed `seed_of[r]`."""
    metrics: dict = {}
    classes: dict = {}
    for seed, evaluation in enumerate(side.seeds):
        rows = np.flatnonzero(seed_of == seed)
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start:start + CHUNK]
            found = _scores(evaluation, {ids: w[chunk] for ids, w in weights.items()})
            for target, values in zip((metrics, classes), found):
                for key, value in values.items():
                    target.setdefault(key, np.full(len(seed_of), np.nan))[chunk] = value
    return metrics, classes


def _point_values(side: Side) -> tuple[dict, dict]:
    """Each metric on all scenes, averaged over the side's seeds."""
    per_seed = [_scores(evaluation, {stats.scene_ids: None for stats in evaluation.values()})
                for evaluation in side.seeds]
    return tuple({key: float(np.mean([found[part][key][0] for found in per_seed]))
                  for key in per_seed[0][part]} for part in (0, 1))


def interval(differences: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """(low, high, p-value) of resampled differences (see the module docstring)."""
    finite = differences[np.isfinite(differences)]
    if not finite.size:
        return float("nan"), float("nan"), float("nan")
    low, high = np.percentile(finite, [50 * (1 - confidence), 50 * (1 + confidence)])
    p = min(1.0, 2 * min(np.mean(finite <= 0), np.mean(finite >= 0)))
    return float(low), float(high), float(p)


def _rows(keys: list, base: tuple, other: tuple, base_draws: dict, other_draws: dict,
          confidence: float, names: tuple[str, str]) -> list[dict]:
    rows = []
    for key in keys:
        low, high, p = interval(other_draws[key] - base_draws[key], confidence)
        a, b = base[key], other[key]
        rows.append({"baseline": names[0], "other": names[1], "task": key[0],
                     "metric": key[1], "a": a, "b": b, "delta": b - a,
                     "ci_low": low, "ci_high": high, "p_value": p,
                     "significant": bool(low > 0 or high < 0)})
    return rows


Key = tuple[str, str]  # (task, metric)


def with_composites(values: dict, composites: Mapping[Key, Sequence[Key]]) -> dict:
    """`values` (metric -> value or (R,) values) with each composite, the mean of its parts."""
    return {**values, **{key: sum(values[part] for part in parts) / len(parts)
                         for key, parts in composites.items()}}


def paired_bootstrap(sides: Sequence[Side], baseline: int = 0, resamples: int = 1000,
                     confidence: float = 0.95, seed: int = 0,
                     composites: Mapping[Key, Sequence[Key]] | None = None) -> dict:
    """Every metric of every side against `sides[baseline]`: {"metrics": rows with `task`,
    `metric`, `a` (baseline), `b`, `delta`, `ci_low`, `ci_high`, `p_value`, `significant`,
    `baseline` and `other` (side names), "classes": the same per class of `PER_CLASS`
    (`metric` = "classes/<class>/<metric>")}; `composites`: more rows, each the mean of some
    (task, metric) parts. The sides must hold the same tasks on the same scenes (see
    `check_comparable`)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    scene_sets = sorted({stats.scene_ids for stats in sides[baseline].seeds[0].values()})
    weights = {ids: multiplicities(rng.integers(0, len(ids), (resamples, len(ids))), len(ids))
               for ids in scene_sets}
    composites = composites or {}
    draws = [_side_values(side, weights, rng.integers(0, len(side.seeds), resamples))
             for side in sides]
    points = [_point_values(side) for side in sides]
    draws = [(with_composites(metrics, composites), classes) for metrics, classes in draws]
    points = [(with_composites(metrics, composites), classes) for metrics, classes in points]
    result: dict = {"metrics": [], "classes": []}
    for index, side in enumerate(sides):
        if index == baseline:
            continue
        names = (sides[baseline].name, side.name)
        for part, label in ((0, "metrics"), (1, "classes")):
            keys = list(points[baseline][part])
            result[label] += _rows(keys, points[baseline][part], points[index][part],
                                   draws[baseline][part], draws[index][part], confidence, names)
    return result


def check_comparable(sides: Sequence[Side]) -> None:
    """Refuse evaluations of different tasks, scene sets, datasets or label sets: an InputError
    naming the side and what differs from the first side's first evaluation (the scenes, for
    different scene sets)."""
    reference, first = sides[0].seeds[0], sides[0].name
    for side in sides:
        for evaluation in side.seeds:
            if set(evaluation) != set(reference):
                raise InputError(side.name, "scene_stats/<task>.npz",
                                 f"the tasks of {first}: {sorted(reference)}",
                                 str(sorted(evaluation)))
            for task, stats in evaluation.items():
                other = reference[task]
                if stats.scene_ids != other.scene_ids:
                    extra = sorted(set(stats.scene_ids) - set(other.scene_ids))
                    missing = sorted(set(other.scene_ids) - set(stats.scene_ids))
                    found = (f"scenes not in {first}: {extra or 'none'}; scenes of {first} "
                             f"missing: {missing or 'none'}" if extra or missing
                             else "the same scenes in another order")
                    raise InputError(side.name, f"scene_stats/{task}.npz: scene_ids",
                                     f"the scenes of {first}", found)
                for key in ("dataset", "classes", "subsets", "stuff", "max_clicks"):
                    if stats.meta.get(key) != other.meta.get(key):
                        raise InputError(side.name, f"scene_stats/{task}.npz: meta.{key}",
                                         f"{first}'s {other.meta.get(key)!r}",
                                         repr(stats.meta.get(key)))
