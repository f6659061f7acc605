"""The comparison behind `uniseg3d compare`: evaluation folders read as sides (a folder, or
several joined by commas for the seeds of one configuration), checked to be comparable, and
every metric's paired bootstrap against the baseline (`uniseg3d.metrics.bootstrap`), from the
folders' per-scene statistics alone. `uniseg3d.reports.comparison` writes the result."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from uniseg3d.metrics.bootstrap import Side, check_comparable, paired_bootstrap
from uniseg3d.metrics.scene_stats import read_evaluation

log = logging.getLogger(__name__)


def read_side(spec: str) -> Side:
    """A side from a folder or comma-separated folders (one per seed)."""
    folders = [folder for folder in spec.split(",") if folder]
    if not folders:
        raise ValueError(f"'{spec}': expected an evaluation folder or folders joined by commas")
    return Side(spec, [read_evaluation(folder) for folder in folders])


def compare_evaluations(specs: Sequence[str], baseline: str | None = None,
                        resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
                        composites=None) -> dict:
    """The settings (`baseline`, `sides`, `resamples`, `confidence`, `seed`, `scenes` per task)
    and `paired_bootstrap`'s `metrics` and `classes` rows of the sides `specs` against
    `baseline` (default: the first); `composites`: means of metrics compared too."""
    if len(specs) < 2:
        raise ValueError(f"expected at least two evaluations to compare, got {len(specs)}")
    baseline = specs[0] if baseline is None else baseline
    if baseline not in specs:
        raise ValueError(f"baseline '{baseline}' is not one of the compared sides {list(specs)}")
    sides = [read_side(spec) for spec in specs]
    check_comparable(sides)
    scenes = {task: stats.num_scenes for task, stats in sides[0].seeds[0].items()}
    log.info("comparing %d sides over %d scenes (%d resamples)", len(sides),
             max(scenes.values()), resamples)
    return {"baseline": baseline, "sides": list(specs), "resamples": resamples,
            "confidence": confidence, "seed": seed, "scenes": scenes,
            **paired_bootstrap(sides, list(specs).index(baseline), resamples, confidence, seed,
                               composites)}
