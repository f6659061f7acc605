"""Training and evaluation samples from cached scenes: augmentation, clicks and descriptions.

Numpy only: the model side turns a `Sample` into tensors. Clicks go to thing instances (one per
instance at evaluation, a random subset in training); descriptions are all of the scene's at
evaluation and a random subset in training (or one per described object, as UniSeg3D's code
draws them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uniseg3d.config import PROMPT_TASKS, AugmentConfig, Params, PromptConfig
from uniseg3d.datasets.augment import augment_coords
from uniseg3d.datasets.cache import cached_scene_ids, read_scene
from uniseg3d.datasets.classes import STUFF_CLASSES20, scannet20
from uniseg3d.datasets.clicks import sample_clicks
from uniseg3d.datasets.scene import Description, Scene

STUFF20 = np.array([scannet20().names.index(n) for n in STUFF_CLASSES20])


@dataclass
class Sample:
    scene: Scene  # coordinates possibly augmented
    click_points: np.ndarray  # (Kc,) point index of each click
    click_instances: np.ndarray  # (Kc,) the object each click prompts (a GT instance in
    #                               training and evaluation); -1 = a negative click
    texts: list[str]
    text_instances: np.ndarray  # (Kt,) instance each description names


def objects_of_clicks(click_instances: np.ndarray) -> np.ndarray:
    """(Kc,) object index of each click: objects numbered 0, 1, ... in the order of their first
    click; -1 stays -1 (a negative click)."""
    click_instances = np.asarray(click_instances, dtype=np.int64)
    positive = click_instances >= 0
    ids, first = np.unique(click_instances[positive], return_index=True)
    rank = np.empty(len(ids), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(ids))
    objects = np.full(len(click_instances), -1, dtype=np.int64)
    objects[positive] = rank[np.searchsorted(ids, click_instances[positive])]
    return objects


def read_split(cache_dir: str | Path, scene_ids: list[str] | None = None) -> list[Scene]:
    """Cached scenes by id (all complete scenes when `scene_ids` is None)."""
    cache_dir = Path(cache_dir)
    ids = cached_scene_ids(cache_dir) if scene_ids is None else scene_ids
    return [read_scene(cache_dir / scene_id) for scene_id in ids]


def read_scene_list(path: str | Path) -> list[str]:
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def clickable_instances(scene: Scene, min_points: int) -> np.ndarray:
    """Thing instances with at least `min_points` labelled points."""
    sizes = np.bincount(scene.instance[scene.instance >= 0], minlength=scene.num_instances)
    labelled = scene.semantic20 >= 0
    thing_points = labelled & ~np.isin(scene.semantic20, STUFF20) & (scene.instance >= 0)
    thing_count = np.bincount(scene.instance[thing_points], minlength=scene.num_instances)
    return np.flatnonzero((sizes >= min_points) & (thing_count * 2 > sizes))


def one_per_object(descriptions: list[Description], rng: np.random.Generator
                   ) -> list[Description]:
    """One description drawn at random for each described object, objects in order of first
    mention (UniSeg3D's `TextPromptGeneration` in training)."""
    by_object: dict[int, list[Description]] = {}
    for description in descriptions:
        by_object.setdefault(description.object_id, []).append(description)
    return [group[rng.integers(len(group))] for group in by_object.values()]


def make_sample(scene: Scene, prompts: PromptConfig, rng: np.random.Generator,
                augment: AugmentConfig | None = None, training: bool = True) -> Sample:
    """Choose clicks and descriptions for one scene (and augment it in training); none of a
    prompt task left out of `prompts.train_tasks`, so that the validation loss is that of the
    tasks trained (`evaluation_sample` asks for every task)."""
    if augment is not None:
        scene = dataclasses.replace(scene, coords=augment_coords(scene.coords, rng, augment))
    clickable = clickable_instances(scene, prompts.min_points)
    if "interactive" not in prompts.train_tasks:
        clickable = clickable[:0]
    if training and 0 < prompts.max_clicks < len(clickable):
        clickable = np.sort(rng.choice(clickable, prompts.max_clicks, replace=False))
    strategy = prompts.train_click if training else prompts.eval_click
    points = sample_clicks(scene.coords, scene.instance, clickable, strategy, rng=rng,
                           rd=prompts.rd)
    descriptions = list(scene.referring) if "referring" in prompts.train_tasks else []
    if training and prompts.train_texts == "one_per_object":
        descriptions = one_per_object(descriptions, rng)
    if training and 0 < prompts.max_texts < len(descriptions):
        chosen = rng.choice(len(descriptions), prompts.max_texts, replace=False)
        descriptions = [descriptions[i] for i in sorted(chosen)]
    return Sample(scene=scene, click_points=np.asarray(points, dtype=np.int64),
                  click_instances=clickable.astype(np.int64),
                  texts=[d.text for d in descriptions],
                  text_instances=np.array([scene.instance_index(d.object_id)
                                           for d in descriptions], dtype=np.int64))


def evaluation_sample(scene: Scene, params: Params, index: int) -> Sample:
    """The scene's evaluation clicks (`prompts.eval_click`, seeded by the scene's position
    `index` in the evaluated list) and all of its descriptions."""
    rng = np.random.default_rng([params.train.seed, index])
    prompts = dataclasses.replace(params.prompts, train_tasks=PROMPT_TASKS)
    return make_sample(scene, prompts, rng, training=False)
