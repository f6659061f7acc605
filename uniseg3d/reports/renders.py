"""Prediction pictures: ground truth beside prediction for each of the six tasks on validation
scenes, as top-down (x-y) point renders and as coloured PLY point clouds.

A few validation scenes go through the trained checkpoint with the evaluation prompts (the same
clicks and descriptions as `uniseg3d evaluate`). Each task gets one colouring of the ground truth
and one of the prediction, in matching colours where they correspond (classes, the k-th click,
the k-th description):

* semantic: ScanNet20 class colours; panoptic: stuff in class colours, one colour per thing;
* instance: one colour per instance (the prediction's highest-scoring instances, as many as the
  ground truth has, painted in score order);
* interactive / referring: the clicked / described objects over the dimmed scan colours, click
  positions marked and numbered, descriptions in the legend (at most `MAX_PROMPTS` prompts,
  each on a different object, so the picture stays readable);
* open vocabulary: one colour per ScanNet200 class.

Renders drop the ceiling (ScanNet200 'ceiling' points, and downward-facing points above the
90th height percentile) and draw points from low to high, so the room's contents are visible.
"""

from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.patches import Patch

from uniseg3d.config import Params
from uniseg3d.datasets.cache import cached_scene_ids, read_scene
from uniseg3d.datasets.classes import STUFF_CLASSES20, scannet20, scannet200
from uniseg3d.datasets.loader import Sample, evaluation_sample, read_scene_list
from uniseg3d.datasets.ply import write_scannet_mesh
from uniseg3d.datasets.scene import Scene
from uniseg3d.metrics.tasks import instance_labels, instance_masks
from uniseg3d.model.inference import ScenePrediction
from uniseg3d.model.postprocess import Instances, panoptic
from uniseg3d.palette import (
    SCANNET20_COLORS, THING_COLORS, color_labels, color_masks, distinct_colors, panoptic_colors)
from uniseg3d.pipelines.evaluate import Predictor
from uniseg3d.pipelines.train import class_prompt_names, load_trained_model
from uniseg3d.reports.plots import plt, save

log = logging.getLogger(__name__)

TASK_TITLES = {"semantic": "Semantic segmentation", "instance": "Instance segmentation",
               "panoptic": "Panoptic segmentation", "interactive": "Interactive segmentation",
               "referring": "Referring segmentation",
               "open_vocab": "Open-vocabulary segmentation (ScanNet200 classes)"}
CEILING_PERCENTILE = 90
MAX_LEGEND = 14
MAX_PROMPTS = 6  # clicks / descriptions drawn per scene
NO_CLICKS = np.zeros(0, dtype=np.int64)
PANEL_INCHES = 5.0


@dataclass(frozen=True)
class TaskView:
    """One task's ground-truth and predicted colourings with their legend and caption."""

    task: str
    gt: np.ndarray  # (N, 3) uint8
    prediction: np.ndarray  # (N, 3) uint8
    legend: list[tuple[str, np.ndarray]]  # (label, RGB colour)
    caption: str
    clicks: np.ndarray = field(default_factory=lambda: NO_CLICKS)  # point index per click


@dataclass(frozen=True)
class SceneRender:
    """The files written for one scene: a PNG per task and two PLYs (GT, prediction) per task."""

    scene_id: str
    images: dict[str, Path]
    captions: dict[str, str]
    plys: list[Path]


def _legend(labels: np.ndarray, names: tuple[str, ...], palette: np.ndarray
            ) -> list[tuple[str, np.ndarray]]:
    present = np.unique(labels[labels >= 0])
    return [(names[i], palette[i % len(palette)]) for i in present]


def scene_palette(labels: np.ndarray, classes: int) -> np.ndarray:
    """(classes, 3) colours, well separated among the classes present in `labels`."""
    palette = np.zeros((classes, 3), dtype=np.uint8)
    present = np.unique(labels[labels >= 0])
    palette[present] = distinct_colors(len(present), seed=1)
    return palette


def painted(found: Instances, count: int, points: int) -> tuple[np.ndarray, np.ndarray]:
    """(label, instance id) per point of the `count` highest-scoring instances, painted in score
    order (`panoptic` with no stuff: masks mostly covered by better ones are dropped)."""
    top = np.argsort(-found.scores)[:count]
    return panoptic(np.full(points, -1), Instances(found.masks[top], found.labels[top],
                                                   found.scores[top]), min_score=0.0)


def shown_prompts(instances: np.ndarray) -> np.ndarray:
    """Indices of the prompts drawn: the first prompt on each object, at most MAX_PROMPTS."""
    _, first = np.unique(instances, return_index=True)
    return np.sort(first)[:MAX_PROMPTS]


def _prompt_view(task: str, scene: Scene, prompted: np.ndarray, predicted: np.ndarray,
                 labels: list[str], caption: str, clicks: np.ndarray = NO_CLICKS) -> TaskView:
    """The `prompted` instances (ground truth) and the `predicted` masks, the k-th of each in
    the k-th colour over the dimmed scan colours."""
    colors = distinct_colors(max(len(labels), 1))
    return TaskView(task, color_masks(instance_masks(scene.instance, prompted), scene.colors),
                    color_masks(predicted, scene.colors),
                    [(label, colors[k]) for k, label in enumerate(labels)], caption, clicks)


def prompt_views(sample: Sample, prediction: ScenePrediction) -> list[TaskView]:
    """Interactive and referring views of the prompts shown (`shown_prompts`)."""
    scene = sample.scene
    classes = instance_labels(scene.semantic20, scene.instance, scene.num_instances)
    clicks, texts = shown_prompts(sample.click_instances), shown_prompts(sample.text_instances)
    names = [scannet20().names[c] if c >= 0 else "unlabelled"
             for c in classes[sample.click_instances[clicks]]]
    descriptions = [f"{k + 1}: {sample.texts[t]}" for k, t in enumerate(texts)]
    return [
        _prompt_view("interactive", scene, sample.click_instances[clicks],
                     prediction.clicks.masks[clicks],
                     [f"click {k + 1}: {name}" for k, name in enumerate(names)],
                     f"{len(clicks)} of {len(sample.click_points)} clicks (numbered crosses), "
                     "each on a different object; the object and the predicted mask in the "
                     "click's colour.", sample.click_points[clicks]),
        _prompt_view("referring", scene, sample.text_instances[texts],
                     prediction.texts.masks[texts], descriptions,
                     f"{len(texts)} of {len(sample.texts)} descriptions, each of a different "
                     "object: " + " | ".join(descriptions)),
    ]


def task_views(sample: Sample, prediction: ScenePrediction) -> list[TaskView]:
    """The six tasks' colourings of one scene."""
    scene = sample.scene
    names20, names200 = scannet20().names, scannet200().names
    classes = instance_labels(scene.semantic20, scene.instance, scene.num_instances)
    things = np.flatnonzero((classes >= 0) & ~np.isin(classes, [names20.index(n)
                                                                 for n in STUFF_CLASSES20]))
    gt_ids = np.where(np.isin(scene.instance, things), scene.instance, -1)
    gt_classes = np.where(scene.instance >= 0, scene.semantic20, -1)
    _, instance_ids = painted(prediction.instances, len(things), scene.num_points)
    objects = int((instance_labels(scene.semantic200, scene.instance, scene.num_instances)
                   >= 0).sum())
    open_vocab, _ = painted(prediction.open_vocab, objects, scene.num_points)
    gt200 = np.where(scene.instance >= 0, scene.semantic200, -1)
    palette200 = scene_palette(np.concatenate([gt200, open_vocab]), len(names200))
    stuff = [(name, SCANNET20_COLORS[names20.index(name)]) for name in STUFF_CLASSES20]
    return [
        TaskView("semantic", color_labels(scene.semantic20, SCANNET20_COLORS),
                 color_labels(prediction.semantic, SCANNET20_COLORS),
                 _legend(np.concatenate([scene.semantic20, prediction.semantic]), names20,
                         SCANNET20_COLORS), "ScanNet20 class per point (grey: unlabelled)."),
        TaskView("instance", color_labels(gt_ids, THING_COLORS),
                 color_labels(instance_ids, THING_COLORS), [],
                 f"One colour per instance: {len(things)} ground-truth thing instances; "
                 f"prediction: the highest-scoring {len(things)} of its "
                 f"{len(prediction.instances.scores)} instances."),
        TaskView("panoptic", panoptic_colors(gt_classes, gt_ids),
                 panoptic_colors(prediction.panoptic_classes, prediction.panoptic_ids), stuff,
                 "Stuff in class colours, one colour per thing instance."),
        *prompt_views(sample, prediction),
        TaskView("open_vocab", color_labels(gt200, palette200),
                 color_labels(open_vocab, palette200),
                 _legend(np.concatenate([gt200, open_vocab]), names200, palette200),
                 f"One colour per ScanNet200 class: {objects} ground-truth instances; "
                 f"prediction: the highest-scoring {objects} of its "
                 f"{len(prediction.open_vocab.scores)} instances."),
    ]


def visible_points(scene: Scene) -> np.ndarray:
    """Indices of the points drawn from above, lowest first: no ceiling."""
    z = scene.coords[:, 2]
    ceiling = scene.semantic200 == scannet200().names.index("ceiling")
    ceiling |= (z > np.percentile(z, CEILING_PERCENTILE)) & (scene.normals[:, 2] < -0.5)
    keep = np.flatnonzero(~ceiling)
    return keep[np.argsort(z[keep], kind="stable")]


def render_view(scene: Scene, view: TaskView, path: Path) -> Path:
    """Ground truth (left) and prediction (right) seen from above, clicks marked, legend below."""
    order = visible_points(scene)
    xy = scene.coords[order, :2]
    span = np.ptp(xy, axis=0) + 1e-3
    spacing = math.sqrt(float(np.prod(span)) / max(len(order), 1))
    size = float(np.clip((2.0 * PANEL_INCHES * 72 * spacing / span.max()) ** 2, 0.2, 30))
    height = PANEL_INCHES * float(np.clip(span[1] / span[0], 0.3, 2.0))
    figure, panels = plt.subplots(1, 2, figsize=(2 * PANEL_INCHES, height + 0.4),
                                  layout="constrained")
    for axes, colors, title in zip(panels, (view.gt, view.prediction),
                                   ("ground truth", "prediction")):
        axes.scatter(xy[:, 0], xy[:, 1], c=colors[order] / 255.0, s=size, marker="o",
                     linewidths=0, rasterized=True)
        for k, point in enumerate(view.clicks):
            x, y = scene.coords[point, :2]
            axes.plot(x, y, marker="X", markersize=9, color="black", markeredgecolor="white")
            axes.annotate(str(k + 1), (x, y), xytext=(4, 4), textcoords="offset points",
                          fontsize=8, weight="bold")
        axes.set_aspect("equal")
        axes.set_title(f"{TASK_TITLES[view.task]}: {title}", fontsize=10)
        axes.set_axis_off()
    if view.legend:
        handles = [Patch(color=color / 255.0, label=textwrap.shorten(label, 70))
                   for label, color in view.legend[:MAX_LEGEND]]
        if len(view.legend) > MAX_LEGEND:
            handles.append(Patch(color="white", label=f"... {len(view.legend) - MAX_LEGEND} more"))
        wide = max(len(h.get_label()) for h in handles) > 30
        figure.legend(handles=handles, loc="outside lower center",
                      ncol=1 if wide else min(4, len(handles)), fontsize=8, frameon=False)
    return save(figure, path)


def export_plys(scene: Scene, view: TaskView, folder: Path) -> list[Path]:
    """`<task>_gt.ply` and `<task>_prediction.ply`: the scene's points (no faces) coloured."""
    paths = []
    for kind, colors in (("gt", view.gt), ("prediction", view.prediction)):
        path = folder / f"{view.task}_{kind}.ply"
        write_scannet_mesh(path, scene.coords, colors, np.zeros((0, 3), dtype=np.int64))
        paths.append(path)
    return paths


def render_scene(sample: Sample, prediction: ScenePrediction, folder: Path) -> SceneRender:
    """Every task's PNG and PLYs for one scene, under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    images, captions, plys = {}, {}, []
    for view in task_views(sample, prediction):
        images[view.task] = render_view(sample.scene, view, folder / f"{view.task}.png")
        captions[view.task] = view.caption
        plys += export_plys(sample.scene, view, folder)
    return SceneRender(sample.scene.scene_id, images, captions, plys)


def validation_predictions(params: Params, count: int, device: str = "cpu"
                           ) -> Iterator[tuple[Sample, ScenePrediction]]:
    """The first `count` validation scenes of `evaluate`, with its prompts, through the trained
    checkpoint (`evaluate.checkpoint`)."""
    cfg = params.evaluate
    scene_ids = read_scene_list(cfg.scenes) if cfg.scenes else cached_scene_ids(cfg.cache)
    predictor = Predictor(*load_trained_model(cfg.checkpoint, device), device=device)
    vocabulary = predictor.vocabulary(class_prompt_names(scannet200().names))
    for index, scene_id in enumerate(scene_ids[:count]):
        sample = evaluation_sample(read_scene(Path(cfg.cache) / scene_id), params, index)
        log.info("rendering %s", scene_id)
        yield sample, predictor(sample, vocabulary)
