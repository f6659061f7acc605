"""Interactive segmentation metrics after AGILE3D: NoC@{50,65,80,85,90} and IoU@{1,3,5,10,15}.

Pure numpy. A unit's input is its IoU after each click, in order; AGILE3D
(ywyue/AGILE3D, `evaluation/evaluator_SO.py`, `evaluation/evaluator_MO.py`) scores them so:

* NoC@t: the click count of the first entry with IoU >= t (equality reaches the target); a
  unit that never reaches t within the budget (20 clicks) counts the budget.
* IoU@k: the IoU after k clicks. AGILE3D never stops early (it always runs to the budget); for
  a shorter sequence we carry its last IoU forward.
* Both are plain means over units (objects pooled over all classes), not means of per-class
  means.
* Single-object mode: the unit is one object; click counts are 1, 2, ..., 20.
* Multi-object mode: the unit is a scene with K targets; its IoU is the mean of the targets'
  IoUs and clicks are counted per object: round 0 gives every target a click (K clicks, 1.0 per
  object), each later round one more click, up to 20 K clicks; see `multi_object_clicks`.
  NoC may be fractional there; IoU@k is read where the count per object is exactly k.
* IoU is measured on the full-resolution points (the voxel prediction mapped back through the
  voxelisation's inverse map) as intersection / union with no epsilon (`utils/seg.py:
  mean_iou_single`), so an IoU of exactly 0.5 reaches NoC@50. `object_ious` does that;
  `uniseg3d.metrics.prompt.mask_ious` adds 1e-8 to the union and would not.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from uniseg3d.metrics.scene_stats import SceneStats, concatenate, first_row, one_scene

NOC_THRESHOLDS = (0.5, 0.65, 0.8, 0.85, 0.9)
IOU_CLICKS = (1, 3, 5, 10, 15)
MAX_CLICKS = 20


def object_ious(gt: np.ndarray, pred: np.ndarray, num_objects: int) -> np.ndarray:
    """(K,) IoU of each target object 0..K-1 between full-resolution labels (N,) (-1 = none).

    intersection / union, as AGILE3D; NaN for an object absent from both (AGILE3D skips objects
    absent from the ground truth, so average a scene with `np.nanmean`).
    """
    gt, pred = np.asarray(gt).reshape(-1), np.asarray(pred).reshape(-1)
    ious = np.full(int(num_objects), np.nan)
    for obj in range(int(num_objects)):
        in_gt, in_pred = gt == obj, pred == obj
        union = int((in_gt | in_pred).sum())
        if union:
            ious[obj] = int((in_gt & in_pred).sum()) / union
    return ious


def multi_object_clicks(num_objects: int, budget: int = MAX_CLICKS) -> np.ndarray:
    """Clicks per object after each multi-object round: (K + r) / K for r = 0 .. K budget - K."""
    k = int(num_objects)
    return np.arange(k, k * int(budget) + 1) / k


def _clicks(ious: np.ndarray, clicks: Sequence[float] | np.ndarray | None) -> np.ndarray:
    if clicks is None:
        return np.arange(1, len(ious) + 1, dtype=np.float64)
    clicks = np.asarray(clicks, dtype=np.float64).reshape(-1)
    if clicks.shape != ious.shape:
        raise ValueError(f"{len(ious)} IoUs but {len(clicks)} click counts")
    return clicks


def noc(ious: Sequence[float] | np.ndarray, threshold: float, budget: int = MAX_CLICKS,
        clicks: Sequence[float] | np.ndarray | None = None) -> float:
    """Clicks needed to reach IoU >= `threshold`; `budget` if not reached within it.

    `ious[i]` is the IoU after `clicks[i]` clicks (default i + 1).
    """
    ious = np.asarray(ious, dtype=np.float64).reshape(-1)
    counts = _clicks(ious, clicks)
    reached = (ious >= threshold) & (counts <= budget)
    return float(counts[np.argmax(reached)]) if reached.any() else float(budget)


def iou_at(ious: Sequence[float] | np.ndarray, k: float,
           clicks: Sequence[float] | np.ndarray | None = None) -> float:
    """The IoU after `k` clicks; past the end of the sequence, its last IoU."""
    ious = np.asarray(ious, dtype=np.float64).reshape(-1)
    counts = _clicks(ious, clicks)
    if len(ious) == 0:
        raise ValueError("no IoUs")
    match = np.flatnonzero(np.isclose(counts, k, rtol=0.0, atol=1e-9))
    if len(match):
        return float(ious[match[0]])
    if k > counts[-1]:
        return float(ious[-1])
    raise ValueError(f"no IoU after {k} clicks (click counts {counts.tolist()})")


def _key(prefix: str, value: float) -> str:
    return f"{prefix}@{round(value * 100) if prefix == 'noc' else int(value)}"


def unit_scores(sequences: Sequence[Sequence[float]],
                clicks: Sequence[Sequence[float]] | None = None, budget: int = MAX_CLICKS,
                thresholds: Sequence[float] = NOC_THRESHOLDS,
                iou_clicks: Sequence[int] = IOU_CLICKS) -> dict[str, np.ndarray]:
    """Per unit NoC@t (clicks) and IoU@k (fractions), keyed as in `summarise`."""
    if clicks is not None and len(clicks) != len(sequences):
        raise ValueError(f"{len(sequences)} sequences but {len(clicks)} click lists")
    counts = [None] * len(sequences) if clicks is None else list(clicks)
    result = {_key("noc", t): [noc(s, t, budget, c) for s, c in zip(sequences, counts)]
              for t in thresholds}
    result.update({_key("iou", k): [iou_at(s, k, c) for s, c in zip(sequences, counts)]
                   for k in iou_clicks})
    return {key: np.asarray(values, dtype=np.float64) for key, values in result.items()}


def weighted_means(values: dict[str, np.ndarray], counts: np.ndarray) -> dict:
    """(R,) means of each per-unit array with units counted `counts` (R, n) times (NaN for no
    unit), and the unit count `objects`."""
    total = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = {key: counts @ unit / total for key, unit in values.items()}
    return {**means, "objects": total}


def summarise(sequences: Sequence[Sequence[float]],
              clicks: Sequence[Sequence[float]] | None = None, budget: int = MAX_CLICKS,
              thresholds: Sequence[float] = NOC_THRESHOLDS,
              iou_clicks: Sequence[int] = IOU_CLICKS) -> dict:
    """Means over units of NoC@t (clicks) and IoU@k (fractions), and the unit count `objects`.

    `sequences[u]` are unit u's IoUs after each click; `clicks[u]`, when given, their click
    counts (e.g. `multi_object_clicks(K)`); otherwise 1, 2, ....
    """
    values = unit_scores(sequences, clicks, budget, thresholds, iou_clicks)
    return first_row(weighted_means(values, np.ones((1, len(sequences)), dtype=np.int64)))


def padded(rows: Sequence[Sequence[float]], width: int) -> np.ndarray:
    """(n, width) float rows, NaN after each row's end."""
    table = np.full((len(rows), width), np.nan)
    for i, row in enumerate(rows):
        table[i, :len(row)] = row
    return table


def protocol_scene_stats(scene_id: str, single: Sequence[Sequence[float]],
                         multi: Sequence[float] | None, budget: int = MAX_CLICKS) -> SceneStats:
    """One scene's click curves: per object its IoU after 1..budget clicks (`single`), and the
    scene's mean object IoU after each multi-object round (`multi`, None without objects)."""
    width = int(budget) * max(len(single), 1) - max(len(single), 1) + 1
    multi_rows = [] if multi is None else [multi]
    return one_scene(scene_id, tables={
        "single": {"curve": padded(single, budget),
                   "clicks": padded([np.arange(1, len(s) + 1) for s in single], budget)},
        "multi": {"curve": padded(multi_rows, width),
                  "clicks": padded([multi_object_clicks(len(single), budget)
                                    for _ in multi_rows], width)}})


def protocol_stats(scenes: Sequence[SceneStats], budget: int = MAX_CLICKS) -> SceneStats:
    """The click curves of every scene (`protocol_scene_stats`), padded to one width."""
    width = max([s.tables["multi"]["curve"].shape[1] for s in scenes] + [1])
    widened = [SceneStats(s.scene_ids, tables={
        "single": s.tables["single"],
        "multi": {**s.tables["multi"], **{column: np.hstack([
            s.tables["multi"][column],
            np.full((len(s.tables["multi"]["scene"]),
                     width - s.tables["multi"][column].shape[1]), np.nan)])
            for column in ("curve", "clicks")}}}) for s in scenes]
    return concatenate(widened, {"reduce": "protocol", "max_clicks": int(budget)})


def unpadded(table: dict[str, np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each unit's IoUs and click counts from a `protocol_stats` table."""
    ends = [~np.isnan(row) for row in table["clicks"]]
    return ([curve[end] for curve, end in zip(table["curve"], ends)],
            [clicks[end] for clicks, end in zip(table["clicks"], ends)])


def protocol_scores(stats: SceneStats, weights: np.ndarray | None = None) -> dict:
    """Per mode ("single", "multi") the NoC@t, IoU@k and `objects`, (R,) arrays, of the units of
    the scenes under `weights`."""
    return {mode: weighted_means(unit_scores(*unpadded(stats.tables[mode]),
                                             budget=stats.meta["max_clicks"]),
                                 stats.item_weights(mode, weights))
            for mode in ("single", "multi")}


def summarise_per_scene(scene_ids: Sequence[Hashable], sequences: Sequence[Sequence[float]],
                        clicks: Sequence[Sequence[float]] | None = None,
                        budget: int = MAX_CLICKS, thresholds: Sequence[float] = NOC_THRESHOLDS,
                        iou_clicks: Sequence[int] = IOU_CLICKS) -> dict:
    """`summarise` of the units of each scene, keyed by scene id in first-seen order."""
    if len(scene_ids) != len(sequences):
        raise ValueError(f"{len(scene_ids)} scene ids but {len(sequences)} sequences")
    groups: dict = {}
    for index, scene in enumerate(scene_ids):
        groups.setdefault(scene, []).append(index)
    return {scene: summarise([sequences[i] for i in members],
                             None if clicks is None else [clicks[i] for i in members],
                             budget, thresholds, iou_clicks)
            for scene, members in groups.items()}
