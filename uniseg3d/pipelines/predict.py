"""`uniseg3d predict`: all six tasks on one mesh or point cloud, as coloured PLYs plus a JSON.

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

from uniseg3d.datasets.classes import scannet20
from uniseg3d.datasets.loader import Sample
from uniseg3d.datasets.ply import read_mesh, write_scannet_mesh
from uniseg3d.datasets.scannet import scene_from_mesh
from uniseg3d.datasets.scene import IGNORE_INDEX
from uniseg3d.datasets.superpoints import segment_mesh
from uniseg3d.model.inference import predict_scene
from uniseg3d.model.inputs import scene_input
from uniseg3d.model.text_encoder import class_embeddings
from uniseg3d.pipelines.train import load_trained_model
from uniseg3d.reports.palette import (SCANNET20_COLORS, color_labels, color_masks,
                                      distinct_colors, panoptic_colors)

log = logging.getLogger(__name__)

POINT_CLOUD_SUPERPOINT_VOXEL = 0.1  # m
MAX_CLICK_DISTANCE = 0.1  # m from the nearest scan point
MAX_TEXT_WORDS = 128


class PromptError(ValueError):
    """A click or a description that cannot be used."""


@dataclass(frozen=True)
class PredictRequest:
    mesh: Path
    checkpoint: Path
    out: Path
    clicks: tuple[tuple[float, float, float], ...] = ()
    texts: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()  # open-vocabulary class names; empty = ScanNet20's
    k_thresh: float = 0.01
    min_verts: int = 20


def parse_click(text: str) -> tuple[float, float, float]:
    """'x,y,z' -> a 3-tuple of floats (metres, the scan's frame)."""
    parts = text.split(",")
    try:
        if len(parts) != 3:
            raise ValueError
        x, y, z = (float(p) for p in parts)
    except ValueError:
        raise PromptError(f"--click {text!r}: expected three comma-separated numbers x,y,z")
    return x, y, z


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


def click_points(coords: np.ndarray, clicks: tuple[tuple[float, float, float], ...]
                 ) -> np.ndarray:
    """Index of the scan point nearest each click; a click far from the scan is an error."""
    from scipy.spatial import cKDTree

    if not clicks:
        return np.zeros(0, dtype=np.int64)
    distance, index = cKDTree(coords).query(np.asarray(clicks, dtype=np.float64))
    for click, d in zip(clicks, distance):
        if d > MAX_CLICK_DISTANCE:
            raise PromptError(f"click {click} is {d:.2f} m from the nearest point of the scan; "
                              f"clicks must lie on the scan (within {MAX_CLICK_DISTANCE} m)")
    return index.astype(np.int64)


def voxel_superpoints(coords: np.ndarray, voxel: float) -> np.ndarray:
    keys = np.floor((coords - coords.min(0)) / voxel).astype(np.int64)
    return np.unique(keys, axis=0, return_inverse=True)[1].ravel()


def run_predict(request: PredictRequest, device: str = "cpu") -> dict:
    """Run every task on one scan and write `<out>/<task>.ply` and `<out>/summary.json`."""
    texts = validate_texts(request.texts)
    mesh = read_mesh(request.mesh, face_lengths=(3, 4))
    points = click_points(mesh.vertices, request.clicks)
    if len(mesh.faces):
        superpoints = segment_mesh(mesh.vertices, mesh.faces, request.k_thresh, request.min_verts)
    else:
        superpoints = voxel_superpoints(mesh.vertices, POINT_CLOUD_SUPERPOINT_VOXEL)
    n = len(mesh.vertices)
    none = np.full(n, IGNORE_INDEX, dtype=np.int64)
    scene = scene_from_mesh(request.mesh.stem, mesh, superpoints, none, np.zeros(0), [], none,
                            none)
    model, encoder, classes = load_trained_model(request.checkpoint, device)
    names = list(request.classes) or list(scannet20().names)
    open_vocab = class_embeddings(encoder, names).to(device)
    sample = Sample(scene, points, np.zeros(len(points), dtype=np.int64), texts,
                    np.zeros(len(texts), dtype=np.int64))
    inputs = scene_input(sample, encoder.encode_texts(texts), device)
    prediction = predict_scene(model, inputs, classes, open_vocab)
    out = request.out
    out.mkdir(parents=True, exist_ok=True)
    instance_ids = np.full(n, -1)
    for k, mask in enumerate(prediction.instances.masks):
        instance_ids[mask & (instance_ids < 0)] = k
    renders = {
        "semantic": color_labels(prediction.semantic, SCANNET20_COLORS),
        "instance": color_labels(instance_ids, distinct_colors(max(1, len(
            prediction.instances.masks)))),
        "panoptic": panoptic_colors(prediction.panoptic_classes, prediction.panoptic_ids),
        "interactive": color_masks(prediction.clicks.masks, mesh.colors),
        "referring": color_masks(prediction.texts.masks, mesh.colors),
        "open_vocabulary": color_masks(prediction.open_vocab.masks, mesh.colors),
    }
    for task, colors in renders.items():
        write_scannet_mesh(out / f"{task}.ply", mesh.vertices, colors, mesh.faces)
    class20 = scannet20().names
    summary = {
        "scan": str(request.mesh), "checkpoint": str(request.checkpoint), "points": n,
        "superpoints": int(superpoints.max()) + 1,
        "semantic_points_per_class": {class20[c]: int(k) for c, k in zip(
            *np.unique(prediction.semantic, return_counts=True))},
        "instances": [{"label": class20[int(l)], "score": float(s), "points": int(m.sum())}
                      for m, l, s in zip(prediction.instances.masks, prediction.instances.labels,
                                         prediction.instances.scores)],
        "clicks": [{"click": list(c), "point": int(p), "mask_points": int(m.sum()),
                    "class": class20[int(prob.argmax())], "probability": float(prob.max())}
                   for c, p, m, prob in zip(request.clicks, points, prediction.clicks.masks,
                                            prediction.clicks.class_probs)],
        "texts": [{"text": t, "mask_points": int(m.sum()), "predicted_iou": float(i)}
                  for t, m, i in zip(texts, prediction.texts.masks, prediction.texts.iou)],
        "open_vocabulary": {"classes": names, "instances": [
            {"label": names[int(l)], "score": float(s), "points": int(m.sum())}
            for m, l, s in zip(prediction.open_vocab.masks, prediction.open_vocab.labels,
                               prediction.open_vocab.scores)]},
        "files": sorted(f"{task}.ply" for task in renders),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info("wrote %d PLY files and summary.json to %s", len(renders), out)
    return summary
