"""AGILE3D's interactive evaluation protocol with the model in the loop, single- and
multi-object, on the validation scenes.

Per scene the backbone runs once (and, for `ours`, the generic queries' pass); every click then
reruns only the prompt queries. The objects are the scene's clickable instances (those the
paper's one-click evaluation clicks). Single-object mode: per object, the first click at its
deepest point (the point farthest from anything outside it), each next one at the deepest point
of the deepest error region (`datasets.corrective_clicks`), labelled as the ground truth there
(background = a negative click), `evaluate.protocol_clicks` (20) clicks at most. Multi-object
mode: every object clicked at its deepest point first, then one click per round in the deepest
error region among all objects and background, up to 20 clicks per object. The first round
is the paper's one-click task: each object's mask is its click query's own (where the masks
of several objects overlap, a point goes to the higher score). Errors inside a correction's
superpoint cannot be corrected by another click there and are left out of the click placement
(`model.corrective`); every IoU is on the full-resolution points. The scores
(NoC@50/65/80/85/90, IoU@1/3/5/10/15, the mean IoU after each click) come from
`metrics.interactive`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from scipy.spatial import cKDTree
from tqdm import tqdm

from uniseg3d.datasets.corrective_clicks import (deepest_point, error_clicks,
                                                 initial_prediction, multi_object_labels,
                                                 next_click, single_object_labels)
from uniseg3d.datasets.loader import Sample, clickable_instances
from uniseg3d.datasets.scene import Scene
from uniseg3d.metrics.interactive import (
    iou_at, multi_object_clicks, object_ious, protocol_scene_stats, protocol_scores,
    protocol_stats, summarise_per_scene, unpadded)
from uniseg3d.metrics.scene_stats import SceneStats, first_row
from uniseg3d.model.corrective import clicked_labels, forced_points, with_clicks
from uniseg3d.model.inputs import scene_input
from uniseg3d.model.text_encoder import EncodedTexts
from uniseg3d.model.uniseg3d import UniSeg3D


class ClickLoop:
    """One scene with its features computed once: clicks in, each point's object out."""

    def __init__(self, model, scene: Scene, text_dim: int, device: str = "cpu"):
        none = np.zeros(0, dtype=np.int64)
        self.sample = Sample(scene, none, none, [], none)
        empty = EncodedTexts.from_rows(torch.zeros(0, text_dim), [])
        self.inputs = scene_input(self.sample, empty, device)
        self.model = model
        self.tree = cKDTree(scene.coords)  # the click simulation's neighbour search
        with torch.no_grad():
            self.features = model.superpoint_features([self.inputs])[0]
            self.generic = model.generic_pass(self.inputs, self.features) \
                if isinstance(model, UniSeg3D) else None

    def labels(self, points: list[int], instances: list[int]) -> np.ndarray:
        """(N,) the object (0, 1, ... in first-click order) of each point, -1 for none."""
        _, inputs = with_clicks(self.sample, self.inputs, np.asarray(points),
                                np.asarray(instances))
        return clicked_labels(self.model, inputs, self.features, self.generic)

    def correctable(self, gt: np.ndarray, pred: np.ndarray, points: list[int],
                    instances: list[int]) -> np.ndarray:
        """`pred` with the forced superpoints' points (the corrections' clicks) taken as
        right: no click changes them."""
        superpoints = self.sample.scene.superpoints
        forced = superpoints[forced_points(points, instances)]
        return np.where(np.isin(superpoints, forced), gt, pred)


def click_run(loop: ClickLoop, gt: np.ndarray, points: list[int], instances: list[int],
              score, rounds: int, instance_of) -> list[float]:
    """`score(prediction)` after the first clicks and after each corrective click, `rounds`
    values (the last carried on when no error is left that a click could correct);
    `instance_of(label)`: the object a click of the ground-truth label `label` prompts."""
    scene, scores = loop.sample.scene, []
    while True:
        pred = loop.labels(points, instances)
        scores.append(float(score(pred)))
        if len(scores) == rounds:
            return scores
        click = next_click(scene.coords, gt, loop.correctable(gt, pred, points, instances),
                           tree=loop.tree)
        if click is None:
            return scores + [scores[-1]] * (rounds - len(scores))
        points.append(click.point)
        instances.append(instance_of(click.label))


def single_object_run(loop: ClickLoop, instance: int, budget: int) -> list[float]:
    """The object's IoU after each of up to `budget` clicks."""
    scene = loop.sample.scene
    gt = single_object_labels(scene.instance, instance)
    return click_run(loop, gt, [deepest_point(scene.coords, gt == 0)], [instance],
                     lambda pred: object_ious(gt, pred, 1)[0], budget,
                     lambda label: instance if label == 0 else -1)


def multi_object_run(loop: ClickLoop, targets: list[int], budget: int) -> list[float]:
    """The scene's mean object IoU after round 0 (one click per object) and each later round,
    up to `budget` clicks per object."""
    scene = loop.sample.scene
    gt = multi_object_labels(scene.instance, targets)
    first = sorted(error_clicks(scene.coords, gt, initial_prediction(scene.num_points), loop.tree),
                   key=lambda click: click.label)  # objects numbered as `targets`, like gt
    return click_run(loop, gt, [c.point for c in first], [targets[c.label] for c in first],
                     lambda pred: np.nanmean(object_ious(gt, pred, len(targets))),
                     len(multi_object_clicks(len(targets), budget)),
                     lambda label: targets[label] if label >= 0 else -1)


def mean_curve(sequences: list[list[float]], clicks: list[np.ndarray] | None,
               budget: int) -> list[float | None]:
    """Mean IoU after 1..budget clicks (per object in multi-object mode)."""
    counts = clicks or [None] * len(sequences)
    return [float(np.mean([iou_at(s, k, c) for s, c in zip(sequences, counts)]))
            if sequences else None for k in range(1, budget + 1)]


def scene_protocol(model, scene: Scene, text_dim: int, min_points: int, budget: int,
                   device: str) -> SceneStats:
    """One scene's click curves in both modes (none when it has no clickable object)."""
    targets = [int(t) for t in clickable_instances(scene, min_points)]
    if not targets:
        return protocol_scene_stats(scene.scene_id, [], None, budget)
    loop = ClickLoop(model, scene, text_dim, device)
    single = [single_object_run(loop, instance, budget) for instance in targets]
    return protocol_scene_stats(scene.scene_id, single, multi_object_run(loop, targets, budget),
                                budget)


def protocol_statistics(model, scenes: Iterable[Scene], text_dim: int, min_points: int,
                        budget: int = 20, device: str = "cpu", progress: bool = True,
                        total: int | None = None) -> SceneStats:
    """The per-scene click curves of every scene; `scenes` are read one at a time (`total`: how
    many, for the progress bar)."""
    model.eval()
    return protocol_stats([scene_protocol(model, scene, text_dim, min_points, budget, device)
                           for scene in tqdm(scenes, desc="interactive protocol", unit="scene",
                                             total=total, disable=not progress)], budget)


def protocol_section(stats: SceneStats) -> dict:
    """The `interactive_protocol` section of `metrics.json` from the click curves: per mode the
    overall scores, the mean IoU curve over clicks and the scores per scene."""
    budget = stats.meta["max_clicks"]
    scores = first_row(protocol_scores(stats))
    section = {"max_clicks": budget}
    for mode in ("single", "multi"):
        sequences, clicks = unpadded(stats.tables[mode])
        ids = [stats.scene_ids[i] for i in stats.tables[mode]["scene"]]
        section[mode] = {
            **scores[mode],
            "curve": mean_curve(sequences, clicks, budget),
            "per_scene": summarise_per_scene(ids, sequences, clicks, budget=budget)}
    return section


def evaluate_protocol(model, scenes: Iterable[Scene], text_dim: int, min_points: int,
                      budget: int = 20, device: str = "cpu", progress: bool = True,
                      total: int | None = None) -> dict:
    """The `interactive_protocol` section of `metrics.json` (`protocol_section`) of `scenes`."""
    return protocol_section(protocol_statistics(model, scenes, text_dim, min_points, budget,
                                                device, progress, total))
