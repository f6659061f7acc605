"""`uniseg3d predict`: all six tasks on one mesh or point cloud, as coloured PLYs with integer
per-vertex properties, every task's arrays in `predictions.npz`, and a JSON summary.

Per-vertex properties (int32, -1 = none): `label` (semantic, instance, panoptic: the ScanNet20
class index, 0 = wall ... 19 = other furniture; open_vocabulary: the index into the class
list), `instance` (instance, panoptic, open_vocabulary: the instance id, the row of its mask in
`predictions.npz`), `mask` (interactive: the clicked object the vertex goes to, where the
objects' masks overlap the one of the highest score, as the colours show; referring: the
description whose mask covers the vertex, the later one where two overlap, as the colours
show), and in the interactive PLY `object_<k>` (1 where clicked object k's own mask covers the
vertex, else 0; the masks may overlap).

Clicks: `--click X,Y,Z` starts an object, `--click X,Y,Z@K` adds a click to object K (0 = the
first object), `--negative X,Y,Z` marks background; an object's click queries are combined into
its mask (`uniseg3d.model.click_objects`: with one click per object and no negative click, each
object's mask is its click query's own, as the paper's task). `predictions.npz`'s
`click_masks` are the objects' own masks, which may overlap.

Superpoints come from the mesh segmentator when the file has faces; a bare point cloud is
grouped by a voxel grid instead (`POINT_CLOUD_SUPERPOINT_VOXEL`). Clicks must lie on the scan
and descriptions must be non-empty and of reasonable length; anything else is a clear error.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from uniseg3d.datasets.classes import scannet20
from uniseg3d.datasets.loader import Sample
from uniseg3d.datasets.ply import Mesh, read_mesh, write_scannet_mesh
from uniseg3d.datasets.scannet import scene_from_mesh
from uniseg3d.datasets.scene import IGNORE_INDEX, Scene
from uniseg3d.datasets.superpoints import segment_mesh
from uniseg3d.model.inference import ScenePrediction, predict_prompts_only, predict_scene
from uniseg3d.model.postprocess import PromptMasks
from uniseg3d.model.precision import check_precision, set_precision
from uniseg3d.model.inputs import scene_input
from uniseg3d.model.text_encoder import class_embeddings
from uniseg3d.palette import (SCANNET20_COLORS, color_labels, color_masks, distinct_colors,
                              panoptic_colors)
from uniseg3d.pipelines.train import load_trained_model

log = logging.getLogger(__name__)

POINT_CLOUD_SUPERPOINT_VOXEL = 0.1  # m
MAX_CLICK_DISTANCE = 0.1  # m from the nearest scan point
MAX_TEXT_WORDS = 128


class PromptError(ValueError):
    """A click or a description that cannot be used."""


@dataclass(frozen=True)
class ClickPrompt:
    """One click: where, and which object it adds to (`--click X,Y,Z` starts a new object,
    `--click X,Y,Z@K` adds to object K, `--negative X,Y,Z` marks background)."""

    xyz: tuple[float, float, float]
    target: int | None = None  # the object (0 = the first --click) it adds to; None = a new one
    negative: bool = False


@dataclass(frozen=True)
class PredictRequest:
    mesh: Path
    checkpoint: Path
    out: Path
    clicks: tuple[ClickPrompt, ...] = ()
    texts: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()  # open-vocabulary class names; empty = ScanNet20's
    k_thresh: float = 0.01
    min_verts: int = 20
    precision: str = "fp32"  # the backbone's (`uniseg3d.model.precision`)


def parse_xyz(text: str, option: str = "--click") -> tuple[float, float, float]:
    """'x,y,z' -> a 3-tuple of floats (metres, the scan's frame)."""
    parts = text.split(",")
    try:
        if len(parts) != 3:
            raise ValueError
        x, y, z = (float(p) for p in parts)
    except ValueError:
        raise PromptError(f"{option} {text!r}: expected three comma-separated numbers x,y,z")
    return x, y, z


def parse_click(text: str) -> ClickPrompt:
    """'x,y,z' (a new object) or 'x,y,z@K' (another click on object K, counted from 0)."""
    where, at, target = text.partition("@")
    if not at:
        return ClickPrompt(parse_xyz(where))
    if not target.strip().isdigit():
        raise PromptError(f"--click {text!r}: expected x,y,z@K with K the object's number "
                          "(0 = the object of the first --click)")
    return ClickPrompt(parse_xyz(where), int(target))


def parse_negative(text: str) -> ClickPrompt:
    """'x,y,z': a negative click (background: no object there)."""
    return ClickPrompt(parse_xyz(text, "--negative"), negative=True)


def click_objects(clicks: tuple[ClickPrompt, ...]) -> np.ndarray:
    """(Kc,) the object of each click in order (-1 = negative); an @K that names no object
    started by an earlier click is an error."""
    objects, count = [], 0
    for click in clicks:
        if click.negative:
            objects.append(-1)
        elif click.target is None:
            objects.append(count)
            count += 1
        elif click.target < count:
            objects.append(click.target)
        else:
            raise PromptError(f"click {click.xyz}@{click.target}: no object {click.target} yet "
                              f"({count} started by earlier clicks; the first is object 0)")
    if clicks and not count:
        raise PromptError("negative clicks need at least one object: add a --click X,Y,Z")
    return np.asarray(objects, dtype=np.int64)


def validate_texts(texts: tuple[str, ...]) -> list[str]:
    cleaned = []
    for i, text in enumerate(texts):
        words = text.split()
        if not words:
            raise PromptError(f"--text #{i + 1} is empty; describe the object in words")
        if len(words) > MAX_TEXT_WORDS:
            raise PromptError(f"--text #{i + 1} has {len(words)} words; at most "
                              f"{MAX_TEXT_WORDS} are supported")
        cleaned.append(" ".join(words))
    return cleaned


def click_points(coords: np.ndarray, clicks: tuple[tuple[float, float, float], ...],
                 tree=None) -> np.ndarray:
    """Index of the scan point nearest each click; a click far from the scan is an error.
    `tree`: a `scipy.spatial.cKDTree` of `coords`, when the caller keeps one."""
    from scipy.spatial import cKDTree

    if not clicks:
        return np.zeros(0, dtype=np.int64)
    tree = cKDTree(coords) if tree is None else tree
    distance, index = tree.query(np.asarray(clicks, dtype=np.float64))
    for click, d in zip(clicks, distance):
        if d > MAX_CLICK_DISTANCE:
            raise PromptError(f"click {click} is {d:.2f} m from the nearest point of the scan; "
                              f"clicks must lie on the scan (within {MAX_CLICK_DISTANCE} m)")
    return index.astype(np.int64)


def voxel_superpoints(coords: np.ndarray, voxel: float) -> np.ndarray:
    keys = np.floor((coords - coords.min(0)) / voxel).astype(np.int64)
    return np.unique(keys, axis=0, return_inverse=True)[1].ravel()


def mask_index(masks: np.ndarray, num_points: int) -> np.ndarray:
    """(N,) index of the last of the (K, N) masks covering each point, -1 for none."""
    index = np.full(num_points, -1, dtype=np.int64)
    for k, mask in enumerate(masks):
        index[mask] = k
    return index


def instance_index(masks: np.ndarray, num_points: int) -> np.ndarray:
    """(N,) index of the first of the (K, N) masks (best first) covering each point, -1 for
    none."""
    index = np.full(num_points, -1, dtype=np.int64)
    for k, mask in enumerate(masks):
        index[mask & (index < 0)] = k
    return index


def labels_of(index: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) the label of each point's instance, -1 where it has none."""
    return np.where(index >= 0, np.asarray(labels)[np.maximum(index, 0)] if len(labels)
                    else -1, -1)


def prediction_arrays(prediction, num_points: int) -> dict[str, np.ndarray]:
    """Every task's arrays, as `predictions.npz` holds them."""
    empty = np.zeros((0, num_points), dtype=bool)
    open_vocab = prediction.open_vocab
    return {
        "semantic": prediction.semantic.astype(np.int64),
        "instance_masks": prediction.instances.masks.reshape(-1, num_points).astype(
            bool, copy=False),
        "instance_labels": prediction.instances.labels.astype(np.int64),
        "instance_scores": prediction.instances.scores.astype(np.float32),
        "panoptic_semantic": prediction.panoptic_classes.astype(np.int64),
        "panoptic_instance": prediction.panoptic_ids.astype(np.int64),
        "click_masks": prediction.clicks.masks.reshape(-1, num_points).astype(bool, copy=False),
        "text_masks": prediction.texts.masks.reshape(-1, num_points).astype(bool, copy=False),
        "open_vocab_masks": open_vocab.masks.reshape(-1, num_points).astype(bool, copy=False)
        if open_vocab is not None else empty,
        "open_vocab_labels": open_vocab.labels.astype(np.int64) if open_vocab is not None
        else np.zeros(0, dtype=np.int64),
        "open_vocab_scores": open_vocab.scores.astype(np.float32) if open_vocab is not None
        else np.zeros(0, dtype=np.float32),
    }


def read_scan(path: Path, k_thresh: float = 0.01, min_verts: int = 20
              ) -> tuple[Mesh, Scene]:
    """A mesh or point cloud as an unlabelled `Scene`, with its superpoints: the segmentator's
    on a mesh, a voxel grid's on a bare point cloud."""
    mesh = read_mesh(path, face_lengths=(3, 4))
    if len(mesh.faces):
        superpoints = segment_mesh(mesh.vertices, mesh.faces, k_thresh, min_verts)
    else:
        superpoints = voxel_superpoints(mesh.vertices, POINT_CLOUD_SUPERPOINT_VOXEL)
    none = np.full(len(mesh.vertices), IGNORE_INDEX, dtype=np.int64)
    return mesh, scene_from_mesh(path.stem, mesh, superpoints, none, np.zeros(0), [], none,
                                 none)


def predict_prompts(model, encoder, classes, scene: Scene, points: np.ndarray,
                    objects: np.ndarray, texts: list[str], open_vocab: torch.Tensor | None,
                    device: str = "cpu", features: torch.Tensor | None = None,
                    generic=None) -> ScenePrediction:
    """One forward with clicks on the scan points `points` (`objects`: the object of each,
    -1 = negative) and the descriptions `texts`; `features` (the scene's cached superpoint
    features) skips the backbone, `generic` (its generic pass, `ours` only) the generic
    queries too."""
    inputs = prompt_input(encoder, scene, points, objects, texts, device)
    return predict_scene(model, inputs, classes, open_vocab, features=features,
                         generic=generic)


def prompt_input(encoder, scene: Scene, points: np.ndarray, objects: np.ndarray,
                 texts: list[str], device: str = "cpu"):
    """The model input of a scan with clicks (`points`, `objects`) and descriptions."""
    sample = Sample(scene, points, objects, texts, np.zeros(len(texts), dtype=np.int64))
    return scene_input(sample, encoder.encode_texts(texts), device)


def predict_prompt_masks(model, encoder, classes, scene: Scene, points: np.ndarray,
                         objects: np.ndarray, texts: list[str], features: torch.Tensor,
                         generic=None, device: str = "cpu") -> tuple[PromptMasks, PromptMasks]:
    """The clicked objects' and the descriptions' masks that `predict_prompts` gives, alone:
    for prompts that change while the scene's generic tasks stay as they are."""
    inputs = prompt_input(encoder, scene, points, objects, texts, device)
    return predict_prompts_only(model, inputs, classes, features, generic)


TASKS = ("semantic", "instance", "panoptic", "interactive", "referring", "open_vocabulary")


def task_layer(task: str, prediction: ScenePrediction, arrays: dict[str, np.ndarray],
               base_colors: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One task's (N, 3) colours and the per-vertex properties of its PLY."""
    n = len(base_colors)
    if task == "semantic":
        return color_labels(prediction.semantic, SCANNET20_COLORS), {"label": prediction.semantic}
    if task == "panoptic":
        return (panoptic_colors(prediction.panoptic_classes, prediction.panoptic_ids),
                {"label": prediction.panoptic_classes, "instance": prediction.panoptic_ids})
    if task == "interactive":  # each point in the object it went to (`PromptMasks.labels`)
        labels, masks = prediction.clicks.labels, arrays["click_masks"]
        assigned = labels[None, :] == np.arange(len(masks))[:, None]
        own = {f"object_{k}": mask for k, mask in enumerate(masks)}
        return color_masks(assigned, base_colors), {"mask": labels, **own}
    if task == "referring":
        masks = arrays["text_masks"]
        return color_masks(masks, base_colors), {"mask": mask_index(masks, n)}
    if task == "instance":
        ids = instance_index(arrays["instance_masks"], n)
        return (color_labels(ids, distinct_colors(max(1, len(arrays["instance_masks"])))),
                {"label": labels_of(ids, arrays["instance_labels"]), "instance": ids})
    if task == "open_vocabulary":
        ids = instance_index(arrays["open_vocab_masks"], n)
        return (color_masks(arrays["open_vocab_masks"], base_colors),
                {"label": labels_of(ids, arrays["open_vocab_labels"]), "instance": ids})
    raise ValueError(f"unknown task {task!r}; one of {', '.join(TASKS)}")


def click_summaries(prediction: ScenePrediction, clicks, points: np.ndarray,
                    objects: np.ndarray) -> list[dict]:
    """Per clicked object: its clicks (where, the scan point, positive or negative), the size
    of its mask and of its share of the interactive layer, its class and probability."""
    class20 = scannet20().names
    labels = prediction.clicks.labels
    summaries = []
    for k, (mask, prob) in enumerate(zip(prediction.clicks.masks,
                                         prediction.clicks.class_probs)):
        own = [{"click": list(c), "point": int(p)} for c, p, o in zip(clicks, points, objects)
               if o == k]
        summaries.append({"object": k, "clicks": own, "mask_points": int(mask.sum()),
                          "assigned_points": int((labels == k).sum()),
                          "class": class20[int(prob.argmax())], "probability": float(prob.max())})
    return summaries


def summary_document(prediction: ScenePrediction, clicks, points: np.ndarray,
                     objects: np.ndarray, texts: list[str], names: list[str]) -> dict:
    """The per-task summary (classes by name) that `summary.json` holds."""
    class20 = scannet20().names
    open_vocab = prediction.open_vocab
    return {
        "semantic_points_per_class": {class20[c]: int(k) for c, k in zip(
            *np.unique(prediction.semantic, return_counts=True))},
        "instances": [{"label": class20[int(l)], "score": float(s), "points": int(m.sum())}
                      for m, l, s in zip(prediction.instances.masks, prediction.instances.labels,
                                         prediction.instances.scores)],
        "objects": click_summaries(prediction, clicks, points, objects),
        "negative_clicks": [{"click": list(c), "point": int(p)}
                            for c, p, o in zip(clicks, points, objects) if o < 0],
        "texts": [{"text": t, "mask_points": int(m.sum()), "predicted_iou": float(i)}
                  for t, m, i in zip(texts, prediction.texts.masks, prediction.texts.iou)],
        "open_vocabulary": {"classes": names, "instances": [] if open_vocab is None else [
            {"label": names[int(l)], "score": float(s), "points": int(m.sum())}
            for m, l, s in zip(open_vocab.masks, open_vocab.labels, open_vocab.scores)]},
    }


def run_predict(request: PredictRequest, device: str = "cpu") -> dict:
    """Run every task on one scan and write `<out>/<task>.ply`, `<out>/predictions.npz` and
    `<out>/summary.json`."""
    check_precision(request.precision, device)
    texts = validate_texts(request.texts)
    mesh, scene = read_scan(request.mesh, request.k_thresh, request.min_verts)
    objects = click_objects(request.clicks)
    where = tuple(click.xyz for click in request.clicks)
    points = click_points(mesh.vertices, where)
    model, encoder, classes = load_trained_model(request.checkpoint, device)
    set_precision(model, request.precision, device)
    names = list(request.classes) or list(scannet20().names)
    open_vocab = class_embeddings(encoder, names).to(device)
    prediction = predict_prompts(model, encoder, classes, scene, points, objects, texts,
                                 open_vocab, device)
    out = request.out
    out.mkdir(parents=True, exist_ok=True)
    arrays = prediction_arrays(prediction, scene.num_points)
    np.savez_compressed(out / "predictions.npz", **arrays)
    renders = {task: task_layer(task, prediction, arrays, mesh.colors) for task in TASKS}
    for task, (colors, properties) in renders.items():
        write_scannet_mesh(out / f"{task}.ply", mesh.vertices, colors, mesh.faces, properties)
    summary = {"scan": str(request.mesh), "checkpoint": str(request.checkpoint),
               "points": scene.num_points, "superpoints": scene.num_superpoints,
               **summary_document(prediction, where, points, objects, texts, names),
               "files": sorted([f"{task}.ply" for task in renders] + ["predictions.npz"])}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info("wrote %d PLY files and summary.json to %s", len(renders), out)
    return summary
