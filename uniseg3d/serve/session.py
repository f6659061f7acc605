"""One scene open in the browser app: its backbone features computed once, then prompts in and
every task's layers out.

Opening a scene runs the whole model once (all six tasks; no prompts yet) and keeps its
superpoint features and, for `ours`, the generic queries' decoder pass (`GenericPass`). A click
starts an object, adds a positive click to one, or marks background (a negative click); a
description replaces the current one: each reruns only the prompt queries' decoder pass
(`official`: the decoder) and their post-processing, for every current prompt at once
(`predict_prompt_masks`); the generic tasks' results stay, since no prompt changes them. A
class list replaces the open vocabulary and reruns every task (`predict_prompts`). Both give
the masks that `uniseg3d predict` gives for the same prompts.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

from uniseg3d.datasets.classes import scannet20
from uniseg3d.datasets.loader import Sample
from uniseg3d.datasets.ply import Mesh, write_scannet_mesh
from uniseg3d.datasets.scene import Scene
from uniseg3d.model.inference import ScenePrediction
from uniseg3d.model.decoder import GenericPass
from uniseg3d.model.inputs import scene_input
from uniseg3d.model.text_encoder import EncodedTexts, class_embeddings
from uniseg3d.model.uniseg3d import UniSeg3D
from uniseg3d.palette import SCANNET20_COLORS
from uniseg3d.pipelines.predict import (TASKS, ClickPrompt, PromptError, click_objects,
                                        click_points, click_summaries, predict_prompt_masks,
                                        predict_prompts, summary_document, task_layer,
                                        validate_texts)
from uniseg3d.pipelines.prediction_files import prediction_arrays

LAYERS = ("input", *TASKS)
MAX_CLASSES = 64  # names in one open-vocabulary list
MAX_CLASS_CHARS = 64


def nearest_on_ray(coords: np.ndarray, origin: np.ndarray, direction: np.ndarray,
                   tolerance: float = 0.01) -> int | None:
    """The point a click ray hits: of the points within `tolerance` per metre of depth (at
    least 2 cm) of the ray, in front of the camera, the nearest to it; None if there is none."""
    direction = direction / np.linalg.norm(direction)
    offset = coords.astype(np.float64) - origin
    depth = offset @ direction
    miss = np.linalg.norm(offset - depth[:, None] * direction, axis=1)
    hit = (depth > 0) & (miss <= np.maximum(0.02, tolerance * depth))
    if not hit.any():
        return None
    candidates = np.flatnonzero(hit)
    return int(candidates[np.argmin(depth[candidates])])


@dataclass
class Model:
    """A loaded checkpoint: model, text encoder, ScanNet20 class embeddings (or prototypes)."""

    model: torch.nn.Module
    encoder: object
    classes: torch.Tensor
    device: str = "cpu"


def parse_classes(text: str) -> list[str]:
    """'chair, lamp ,plant' -> ['chair', 'lamp', 'plant']; empty or over-long is an error."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise PromptError("type one or more class names, separated by commas")
    if len(names) > MAX_CLASSES:
        raise PromptError(f"{len(names)} class names; at most {MAX_CLASSES} are supported")
    long = [name for name in names if len(name) > MAX_CLASS_CHARS]
    if long:
        raise PromptError(f"class name {long[0][:20]!r}... is longer than {MAX_CLASS_CHARS} "
                          "characters")
    return names


@dataclass
class SceneSession:
    """The state of one open scene."""

    name: str
    mesh: Mesh
    scene: Scene
    loaded: Model
    features: torch.Tensor = field(init=False)
    generic: GenericPass | None = field(init=False)  # `ours`: the generic queries' pass
    clicks: list[ClickPrompt] = field(default_factory=list)  # at scan points, in click order
    points: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=lambda: list(scannet20().names))
    prediction: ScenePrediction = field(init=False)

    def __post_init__(self):
        loaded = self.loaded
        empty = EncodedTexts.from_rows(torch.zeros(0, loaded.encoder.dim), [])
        none = np.zeros(0, dtype=np.int64)
        bare = scene_input(Sample(self.scene, none, none, [], none), empty, loaded.device)
        with torch.no_grad():
            loaded.model.eval()
            self.features = loaded.model.superpoint_features([bare])[0]
            self.generic = loaded.model.generic_pass(bare, self.features) \
                if isinstance(loaded.model, UniSeg3D) else None
        self._vocabulary = self._embed(self.names)
        self._tree = cKDTree(self.scene.coords)
        self.run()

    def _embed(self, names: list[str]) -> torch.Tensor:
        return class_embeddings(self.loaded.encoder, names).to(self.loaded.device)

    def run(self) -> ScenePrediction:
        """Every task for the current prompts and class list, from the cached features."""
        loaded = self.loaded
        self.prediction = predict_prompts(loaded.model, loaded.encoder, loaded.classes,
                                          self.scene, np.asarray(self.points, dtype=np.int64),
                                          self.objects_of_clicks(), self.texts,
                                          self._vocabulary, loaded.device,
                                          features=self.features, generic=self.generic)
        return self.prediction

    def rerun_prompts(self) -> ScenePrediction:
        """The clicked objects' and the description's masks for the current prompts; the
        generic tasks (semantic, instance, panoptic, open vocabulary) stay as they are."""
        loaded = self.loaded
        clicks, texts = predict_prompt_masks(
            loaded.model, loaded.encoder, loaded.classes, self.scene,
            np.asarray(self.points, dtype=np.int64), self.objects_of_clicks(), self.texts,
            self.features, self.generic, loaded.device)
        self.prediction = dataclasses.replace(self.prediction, clicks=clicks, texts=texts)
        return self.prediction

    def objects_of_clicks(self) -> np.ndarray:
        return click_objects(tuple(self.clicks))

    def click(self, xyz: tuple[float, float, float], target: int | None = None,
              negative: bool = False) -> int:
        """A click at the scan point nearest `xyz` (an error if it is off the scan): a new
        object, another click on object `target`, or a negative click; returns the object's
        index (-1 for a negative click). A click that names no object is refused."""
        point = int(click_points(self.scene.coords, (tuple(map(float, xyz)),), self._tree)[0])
        prompt = ClickPrompt(tuple(map(float, self.scene.coords[point])), target, negative)
        objects = click_objects((*self.clicks, prompt))  # refuses a bad target first
        self.clicks.append(prompt)
        self.points.append(point)
        self.rerun_prompts()
        return int(objects[-1])

    def clear_clicks(self) -> None:
        self.clicks.clear()
        self.points.clear()
        self.rerun_prompts()

    def describe(self, text: str) -> None:
        """The referring mask of one description (replaces the previous one)."""
        self.texts = validate_texts((text,))
        self.rerun_prompts()

    def find_classes(self, text: str) -> None:
        """Open-vocabulary instances of a comma-separated class list."""
        names = parse_classes(text)
        self.names, self._vocabulary = names, self._embed(names)
        self.run()

    def layer(self, name: str) -> np.ndarray:
        """(N, 3) uint8 colours of one layer."""
        if name == "input":
            return self.scene.colors
        return self._layer(name)[0]

    def _layer(self, name: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        arrays = prediction_arrays(self.prediction, self.scene.num_points)
        return task_layer(name, self.prediction, arrays, self.scene.colors)

    def legend(self, name: str) -> list[tuple[str, tuple[int, int, int]]]:
        """(class name, colour) of the classes present in the semantic / panoptic layer."""
        labels = {"semantic": self.prediction.semantic,
                  "panoptic": self.prediction.panoptic_classes}.get(name)
        if labels is None:
            return []
        present = np.unique(labels[labels >= 0])
        return [(scannet20().names[c], tuple(int(v) for v in SCANNET20_COLORS[c]))
                for c in present]

    def objects(self) -> list[dict]:
        """Per clicked object: its clicks, mask size, class and confidence."""
        return click_summaries(self.prediction, self._where(), np.asarray(self.points),
                               self.objects_of_clicks())

    def _where(self) -> list[tuple[float, float, float]]:
        return [click.xyz for click in self.clicks]

    def summary(self) -> dict:
        return {"scan": self.name, "points": self.scene.num_points,
                "superpoints": self.scene.num_superpoints,
                **summary_document(self.prediction, self._where(), np.asarray(self.points),
                                   self.objects_of_clicks(),
                                   self.texts, self.names)}

    def export_json(self) -> bytes:
        return json.dumps(self.summary(), indent=2).encode()

    def export_ply(self, layer: str) -> bytes:
        """The layer as a ScanNet-layout PLY with its per-vertex properties."""
        colors, properties = (self.scene.colors, {}) if layer == "input" else \
            self._layer(layer)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "layer.ply"
            write_scannet_mesh(path, self.mesh.vertices, colors, self.mesh.faces, properties)
            return path.read_bytes()
