"""The six tasks' metrics from per-scene predictions: gather scene by scene, evaluate at the end.

`ScanNetTasks.add(sample, prediction)` takes one ScanNet-layout scene's evaluation `Sample` (its
clicks and descriptions) and anything with `ScenePrediction`'s fields; `scene_stats()` reduces
every scene added to each task's per-scene statistics (`metrics.scene_stats`) and `evaluate()`
scores them (`task_scores`, the one reduction behind `metrics.json` and `uniseg3d compare`).
`OpenVocabTask` does the same for open-vocabulary instances alone (ScanNet200, and the zero-shot
Replica evaluation against free-text names).
Predicted masks stay bit-packed between `add` and `evaluate`.

Ground-truth conventions:

* instances (ScanNet20, ScanNet200, Replica): a point's label counts only where the point
  belongs to an instance; labelled points outside every instance are void, as in ScanNet's
  exported ground truth (`label_id * 1000 + instance`, 0 = void), so submission files written
  from the same arrays (`instance_gt_ids`) reproduce the in-memory numbers exactly;
* an instance's class is the label of its first point;
* referring: a description is "unique" when its target's ScanNet20 class occurs once among the
  scene's instances (every instance outside the 20 classes counts as one class, as ScanRefer's
  "others").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from uniseg3d.datasets.classes import STUFF_CLASSES20, scannet20, scannet200
from uniseg3d.datasets.loader import Sample
from uniseg3d.datasets.scene import IGNORE_INDEX, Scene
from uniseg3d.metrics.instance import (
    InstanceGT, InstancePredictions, instance_scores, instance_stats)
from uniseg3d.metrics.interactive import protocol_scores
from uniseg3d.metrics.open_vocab import (
    SCANNET200_EXCLUDED, open_vocab_scores, open_vocab_stats, scannet200_subsets)
from uniseg3d.metrics.panoptic import PanopticSegmentation, panoptic_scores, panoptic_stats
from uniseg3d.metrics.prompt import (
    Clicks, interactive_scores, interactive_stats, referring_scores, referring_stats,
    unique_targets)
from uniseg3d.metrics.scene_stats import SceneStats, first_row
from uniseg3d.metrics.semantic import semantic_scores, semantic_stats

if TYPE_CHECKING:
    from uniseg3d.model.inference import ScenePrediction
    from uniseg3d.model.postprocess import Instances

REPLICA_EXCLUDED = ("undefined", "wall", "floor", "ceiling")
"""Background classes left out of the Replica benchmark (OpenMask3D / Open3DIS use 48 object
classes); ScanNet200 leaves out wall and floor (`SCANNET200_EXCLUDED`)."""
INSTANCE_ID_BASE = 1000  # ScanNet's label_id * 1000 + instance encoding
TASKS = ("semantic", "instance", "panoptic", "interactive", "referring", "open_vocab")


@dataclass(frozen=True)
class PackedMasks:
    """(K, N) boolean masks stored as bits."""

    bits: np.ndarray
    points: int

    @classmethod
    def pack(cls, masks: np.ndarray) -> PackedMasks:
        masks = np.asarray(masks, dtype=bool)
        return cls(np.packbits(masks, axis=1), masks.shape[1])

    def unpack(self) -> np.ndarray:
        return np.unpackbits(self.bits, axis=1, count=self.points).astype(bool)


@dataclass(frozen=True)
class _PackedInstances:
    masks: PackedMasks
    labels: np.ndarray
    scores: np.ndarray

    def unpack(self) -> InstancePredictions:
        return InstancePredictions(self.masks.unpack(), self.labels, self.scores)


def _pack(instances: Instances) -> _PackedInstances:
    return _PackedInstances(PackedMasks.pack(instances.masks), np.asarray(instances.labels),
                            np.asarray(instances.scores))


def instance_gt(labels: np.ndarray, instance: np.ndarray) -> InstanceGT:
    """Instance ground truth; labelled points outside every instance become void."""
    instance = np.asarray(instance)
    return InstanceGT(np.where(instance >= 0, labels, IGNORE_INDEX), instance)


def instance_gt_ids(scene: Scene) -> np.ndarray:
    """ScanNet's instance GT file values: nyu40 id * 1000 + instance number (from 1), 0 = void."""
    if scene.num_instances >= INSTANCE_ID_BASE:
        raise ValueError(f"{scene.scene_id}: {scene.num_instances} instances do not fit the "
                         f"label_id * {INSTANCE_ID_BASE} + instance encoding")
    gt = instance_gt(scene.semantic20, scene.instance)
    nyu40 = scannet20().source_ids[np.maximum(gt.labels, 0)]
    return np.where(gt.labels >= 0, nyu40 * INSTANCE_ID_BASE + gt.instances + 1, 0)


def instance_labels(labels: np.ndarray, instance: np.ndarray, count: int) -> np.ndarray:
    """(count,) label of each instance's first point (IGNORE_INDEX for an empty instance)."""
    ids, first = np.unique(instance, return_index=True)
    result = np.full(count, IGNORE_INDEX, dtype=np.int64)
    result[ids[ids >= 0]] = np.asarray(labels)[first[ids >= 0]]
    return result


def instance_masks(instance: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """(M, N) point masks of the `chosen` instance indices, given each point's instance."""
    return np.asarray(instance)[None, :] == np.asarray(chosen).reshape(-1, 1)


def free_text(name: str) -> str:
    """A raw class name as plain words ('wall-plug', 'table_lamp' -> 'wall plug', 'table lamp')."""
    return " ".join(name.replace("-", " ").replace("_", " ").lower().split())


def replica_vocabulary(scenes: Sequence[Scene]) -> tuple[str, ...]:
    """The sorted union of the scenes' instance names: Replica's free-text class list."""
    return tuple(sorted({name for scene in scenes for name in scene.instance_names}))


def replica_subsets(names: Sequence[str], training_names: Sequence[str]
                    ) -> dict[str, tuple[str, ...]]:
    """The "seen" names (one of `training_names`, compared as `free_text`) and the "unseen"."""
    seen = {free_text(name) for name in training_names}
    return {"seen": tuple(n for n in names if free_text(n) in seen),
            "unseen": tuple(n for n in names if free_text(n) not in seen)}


def replica_gt(scene: Scene, names: Sequence[str]) -> InstanceGT:
    """Instance ground truth labelled by position in `names` (the scene's instance names)."""
    position = {name: i for i, name in enumerate(names)}
    per_instance = np.array([position[name] for name in scene.instance_names] + [IGNORE_INDEX],
                            dtype=np.int64)
    return instance_gt(per_instance[scene.instance], scene.instance)


class OpenVocabTask:
    """Open-vocabulary instances against one class list (labels index `class_names`)."""

    def __init__(self, class_names: Sequence[str],
                 subsets: Mapping[str, Sequence[str]] | None = None,
                 excluded: Sequence[str] = ()) -> None:
        self.class_names = tuple(class_names)
        self.subsets = subsets
        self.excluded = tuple(excluded)
        self._ids: list[str] = []
        self._gts: list[InstanceGT] = []
        self._predictions: list[_PackedInstances] = []

    def __len__(self) -> int:
        return len(self._gts)

    @property
    def evaluated_classes(self) -> tuple[str, ...]:
        return tuple(name for name in self.class_names if name not in self.excluded)

    def add(self, gt: InstanceGT, prediction: Instances, scene_id: str | None = None) -> None:
        """One scene's ground truth and prediction (`scene_id` default: its position)."""
        self._ids.append(str(len(self._ids)) if scene_id is None else scene_id)
        self._gts.append(gt)
        self._predictions.append(_pack(prediction))

    def extend(self, other: OpenVocabTask) -> None:
        """Append the scenes `other` (of the same class list) evaluated, in its order."""
        if other.class_names != self.class_names:
            raise ValueError("open-vocabulary tasks of different class lists cannot be joined")
        self._ids += other._ids
        self._gts += other._gts
        self._predictions += other._predictions

    def scene_stats(self) -> SceneStats:
        """The per-scene match tables of every scene added."""
        return open_vocab_stats(self._gts, (p.unpack() for p in self._predictions),
                                self.class_names, self.subsets, self.excluded, self._ids)

    def evaluate(self) -> dict:
        """`evaluate_open_vocab` over every scene added."""
        return first_row(open_vocab_scores(self.scene_stats()))


@dataclass(frozen=True)
class _SceneRecord:
    scene_id: str
    semantic20: np.ndarray  # ground truth
    instance: np.ndarray  # ground truth
    clicked: np.ndarray  # (Kc,) instance per click
    described: np.ndarray  # (Kt,) instance per description
    unique: np.ndarray  # (Kt,) whether the described instance's class is unique in the scene
    semantic: np.ndarray
    instances: _PackedInstances
    panoptic: PanopticSegmentation
    click_masks: PackedMasks
    click_probs: np.ndarray  # (Kc,) predicted probability of the clicked object's GT class
    text_masks: PackedMasks


class ScanNetTasks:
    """All six tasks on ScanNet-layout scenes (open vocabulary: the ScanNet200 classes)."""

    def __init__(self) -> None:
        self._scenes: list[_SceneRecord] = []
        self.open_vocab = OpenVocabTask(scannet200().names, scannet200_subsets(),
                                        SCANNET200_EXCLUDED)

    def __len__(self) -> int:
        return len(self._scenes)

    def add(self, sample: Sample, prediction: ScenePrediction) -> None:
        """One scene's evaluation sample and its prediction (ScanNet20 class indices; the
        open-vocabulary instances labelled with ScanNet200 class indices)."""
        scene = sample.scene
        classes = instance_labels(scene.semantic20, scene.instance, scene.num_instances)
        click_class = classes[sample.click_instances]
        probs = prediction.clicks.class_probs[np.arange(len(click_class)),
                                              np.maximum(click_class, 0)]
        self._scenes.append(_SceneRecord(
            scene_id=scene.scene_id, semantic20=scene.semantic20, instance=scene.instance,
            clicked=sample.click_instances, described=sample.text_instances,
            unique=unique_targets(classes, sample.text_instances), semantic=prediction.semantic,
            instances=_pack(prediction.instances),
            panoptic=PanopticSegmentation(prediction.panoptic_classes, prediction.panoptic_ids),
            click_masks=PackedMasks.pack(prediction.clicks.masks),
            click_probs=np.where(click_class >= 0, probs, 0.0),
            text_masks=PackedMasks.pack(prediction.texts.masks)))
        if prediction.open_vocab is not None:  # None: predicted without a vocabulary
            self.open_vocab.add(instance_gt(scene.semantic200, scene.instance),
                                prediction.open_vocab, scene.scene_id)

    def extend(self, other: ScanNetTasks) -> None:
        """Append the scenes `other` evaluated, in its order (an evaluation split across
        workers is joined back into the one-process order this way)."""
        self._scenes += other._scenes
        self.open_vocab.extend(other.open_vocab)

    def scene_stats(self, tasks: Sequence[str] = TASKS) -> dict[str, SceneStats]:
        """The per-scene statistics of each of `tasks` (default: all six), keyed by task."""
        if not self._scenes:
            raise ValueError("no scenes to evaluate")
        unknown = sorted(set(tasks) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown tasks {unknown}; expected some of {list(TASKS)}")
        records = self._scenes
        ids = [r.scene_id for r in records]
        names = scannet20().names
        stuff = [names.index(name) for name in STUFF_CLASSES20]
        things = [i for i in range(len(names)) if i not in stuff]
        gts = [instance_gt(r.semantic20, r.instance) for r in records]
        extractors = {
            "semantic": lambda: semantic_stats(
                (r.semantic20 for r in records), (r.semantic for r in records),
                range(len(names)), names, ids),
            "instance": lambda: instance_stats(
                gts, (r.instances.unpack() for r in records), range(2, len(names)), names[2:],
                scene_ids=ids),
            "panoptic": lambda: panoptic_stats(
                (PanopticSegmentation(r.semantic20, r.instance) for r in records),
                (r.panoptic for r in records), names, stuff, scene_ids=ids),
            "interactive": lambda: interactive_stats(
                (Clicks(gt, r.clicked, r.click_masks.unpack(), r.click_probs)
                 for gt, r in zip(gts, records)), things, [names[i] for i in things], ids),
            "referring": lambda: referring_stats(
                (instance_masks(r.instance, r.described) for r in records),
                (r.text_masks.unpack() for r in records), (r.unique for r in records), ids),
            "open_vocab": self.open_vocab.scene_stats,
        }
        return {task: extractors[task]() for task in tasks}

    def evaluate(self, tasks: Sequence[str] = TASKS) -> dict[str, dict]:
        """The full result (with per-class tables) of each of `tasks` (default: all six),
        keyed by task."""
        return {task: first_row(task_scores(stats))
                for task, stats in self.scene_stats(tasks).items()}


SCORES = {"semantic": semantic_scores, "instance": instance_scores, "panoptic": panoptic_scores,
          "interactive": interactive_scores, "referring": referring_scores,
          "open_vocab": open_vocab_scores, "protocol": protocol_scores}


def task_scores(stats: SceneStats, weights: np.ndarray | None = None) -> dict:
    """A task's metrics, (R,) arrays, from its per-scene statistics under `weights` (the
    reduction that `stats.meta["reduce"]` names)."""
    reduce = stats.meta.get("reduce")
    if reduce not in SCORES:
        raise ValueError(f"scene statistics reduce by '{reduce}'; expected one of {list(SCORES)}")
    return SCORES[reduce](stats, weights)
