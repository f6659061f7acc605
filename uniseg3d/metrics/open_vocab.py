"""Open-vocabulary instance segmentation: ScanNet200 (with its class subsets) and free-text
class lists such as Replica's, through the ScanNet AP engine of `metrics.instance`.

Labels (GT and predictions) are indices into the class list. Excluded classes (ScanNet200:
wall and floor, as the ScanNet200 instance benchmark) are void for the ground truth and not
evaluated for predictions. A subset's AP is the mean of its classes' APs, NaN classes skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from uniseg3d.datasets.classes import scannet200
from uniseg3d.metrics.instance import (
    InstanceGT, InstancePredictions, instance_scores, instance_stats)
from uniseg3d.metrics.scene_stats import SceneStats, first_row
from uniseg3d.metrics.semantic import nanmean

SCANNET200_EXCLUDED = ("wall", "floor")


def scannet200_subsets() -> dict[str, tuple[str, ...]]:
    """Class names of ScanNet200's base / novel and head / common / tail subsets."""
    table = scannet200()
    subsets: dict[str, list[str]] = {}
    for name, split, frequency in zip(table.names, table.open_vocab_split, table.frequency):
        for subset in (split, frequency):
            subsets.setdefault(subset, []).append(name)
    return {key: tuple(subsets[key]) for key in ("base", "novel", "head", "common", "tail")}


def open_vocab_stats(gts: Iterable[InstanceGT], preds: Iterable[InstancePredictions],
                     class_names: Sequence[str],
                     subsets: Mapping[str, Sequence[str]] | None = None,
                     excluded: Sequence[str] = (), scene_ids: Iterable[str] | None = None
                     ) -> SceneStats:
    """The match tables of every scene over `class_names` minus `excluded`."""
    evaluated = [i for i, name in enumerate(class_names) if name not in excluded]
    stats = instance_stats(gts, preds, evaluated, [class_names[i] for i in evaluated],
                           scene_ids=scene_ids, reduce="open_vocab")
    stats.meta["subsets"] = {key: list(members) for key, members in (subsets or {}).items()}
    return stats


def open_vocab_scores(stats: SceneStats, weights: np.ndarray | None = None) -> dict:
    """AP / AP50 / AP25 overall and per class, (R,) arrays, of the scenes under `weights`, plus
    `subsets[key]` -> {"ap", "ap50", "ap25"} means over the named classes."""
    result = instance_scores(stats, weights)
    for key, members in stats.meta["subsets"].items():
        chosen = [result["classes"][name] for name in members if name in result["classes"]]
        result[key] = {metric: nanmean(np.array([c[metric] for c in chosen], dtype=float)
                                       .reshape(len(chosen), len(result["ap"])), axis=0)
                       for metric in ("ap", "ap50", "ap25")}
    return result


def evaluate_open_vocab(gts: Iterable[InstanceGT], preds: Iterable[InstancePredictions],
                        class_names: Sequence[str],
                        subsets: Mapping[str, Sequence[str]] | None = None,
                        excluded: Sequence[str] = ()) -> dict:
    """AP / AP50 / AP25 overall and per class over `class_names` minus `excluded`, plus
    `subsets[key]` -> {"ap", "ap50", "ap25"} means over the named classes."""
    return first_row(open_vocab_scores(open_vocab_stats(gts, preds, class_names, subsets,
                                                        excluded)))


def evaluate_scannet200_instances(gts: Iterable[InstanceGT],
                                  preds: Iterable[InstancePredictions],
                                  excluded: Sequence[str] = SCANNET200_EXCLUDED) -> dict:
    """ScanNet200 instance AP on `semantic200` class indices with base / novel / head / common /
    tail subset means."""
    return evaluate_open_vocab(gts, preds, scannet200().names, scannet200_subsets(), excluded)
