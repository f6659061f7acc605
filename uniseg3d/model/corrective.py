"""Corrective clicks with the model in the loop: the objects the current clicks give, and the
next click where they are most wrong.

Training (`ours`, as AGILE3D trains): after a scene's first clicks, a random number of rounds
(0 to `prompts.corrective_rounds`) each runs the prompt queries without gradient, from the
backbone features and the generic pass that the loss then reuses, and adds one click in the
deepest error region of the clicked objects (`datasets.corrective_clicks`, multi-object mode:
a click on a missed part is positive for its object, one on a leak onto anything else
negative), found among the superpoints (the model's resolution). The evaluation protocol
(`pipelines.interactive`) places its clicks on the points, as AGILE3D does, from
`clicked_labels`.

A correction's superpoint (an object's later clicks, negative clicks) is forced to its
click's label (`model.click_objects`), so another click in it changes nothing: it is left out
of the error regions that place the next click (its points still count in every IoU);
otherwise a superpoint that straddles two objects would draw every later click. An object's
first click forces nothing (the paper's one-click task), so an error on its superpoint can
draw a correction.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from uniseg3d.datasets.corrective_clicks import multi_object_labels, next_click
from uniseg3d.datasets.loader import Sample, objects_of_clicks
from uniseg3d.model.click_objects import corrections
from uniseg3d.model.decoder import GenericPass
from uniseg3d.model.official.network import OfficialUniSeg3D
from uniseg3d.model.inference import prompt_mask_rule
from uniseg3d.model.uniseg3d import SceneInput, UniSeg3D


def with_clicks(sample: Sample, inputs: SceneInput, points: np.ndarray,
                instances: np.ndarray) -> tuple[Sample, SceneInput]:
    """The sample and its model input with the clicks `points` on objects `instances` (-1 =
    negative) instead of its own."""
    points, instances = np.asarray(points, np.int64), np.asarray(instances, np.int64)
    sample = dataclasses.replace(sample, click_points=points, click_instances=instances)
    device = inputs.coords.device
    inputs = dataclasses.replace(
        inputs, click_points=torch.as_tensor(points, device=device),
        click_objects=torch.as_tensor(objects_of_clicks(instances), device=device))
    return sample, inputs


@torch.no_grad()
def clicked_superpoint_labels(model: UniSeg3D | OfficialUniSeg3D, inputs: SceneInput,
                              features: torch.Tensor, generic: GenericPass | None = None
                              ) -> torch.Tensor:
    """(M,) the clicked object (0, 1, ... in order of first click) each superpoint goes to,
    -1 for none, from the click queries' last layer; `ours` reruns only the prompt queries
    (from the scene's `generic` pass), `official` its decoder."""
    if isinstance(model, OfficialUniSeg3D):
        click = model([inputs], features=[features])[0].part("click")
    else:
        click = model.scene_output(inputs, features, generic).part("click")
    return prompt_mask_rule(model).click_objects(
        click.masks, inputs.objects_of_clicks(), inputs.superpoints[inputs.click_points]).labels


def forced_points(points: np.ndarray, instances: np.ndarray) -> np.ndarray:
    """The clicks among `points` (on objects `instances`, -1 = negative) whose superpoints
    are forced: the corrections (`model.click_objects.corrections`)."""
    forcing = corrections(torch.as_tensor(np.asarray(instances, np.int64))).numpy()
    return np.asarray(points, np.int64)[forcing]


def clicked_labels(model: UniSeg3D | OfficialUniSeg3D, inputs: SceneInput,
                   features: torch.Tensor, generic: GenericPass | None = None) -> np.ndarray:
    """(N,) `clicked_superpoint_labels` at every point."""
    labels = clicked_superpoint_labels(model, inputs, features, generic)
    return labels[inputs.superpoints].cpu().numpy()


def superpoint_labels(labels: np.ndarray, superpoints: np.ndarray, count: int) -> np.ndarray:
    """(M,) the most frequent of the point labels (-1, 0, 1, ...) in each superpoint (ties to
    the lower label)."""
    width = int(labels.max()) + 2
    votes = np.bincount(superpoints * width + labels + 1, minlength=count * width)
    return votes.reshape(count, width).argmax(1) - 1


def corrective_round(model: UniSeg3D, sample: Sample, inputs: SceneInput,
                     features: torch.Tensor, generic: GenericPass, strategy: str = "deepest",
                     rng: np.random.Generator | None = None
                     ) -> tuple[Sample, SceneInput] | None:
    """One more click where the clicked objects are most wrong (None when they are right), at
    the model's resolution: superpoints at their centroids, each labelled by most of its
    points, so that a round costs a few milliseconds; the click goes to the chosen
    superpoint's point nearest its centroid."""
    scene, instances = sample.scene, sample.click_instances
    targets = list(dict.fromkeys(int(i) for i in instances if i >= 0))  # first-click order
    count = scene.num_superpoints
    gt = superpoint_labels(multi_object_labels(scene.instance, targets), scene.superpoints,
                           count)
    pred = clicked_superpoint_labels(model, inputs, features, generic).cpu().numpy()
    forced = scene.superpoints[forced_points(sample.click_points, instances)]
    pred[forced] = gt[forced]
    sizes = np.bincount(scene.superpoints, minlength=count)[:, None]
    centroids = np.stack([np.bincount(scene.superpoints, scene.coords[:, a], count)
                          for a in range(3)], 1) / sizes
    click = next_click(centroids, gt, pred, strategy, rng)
    if click is None:
        return None
    members = np.flatnonzero(scene.superpoints == click.point)
    point = members[np.argmin(((scene.coords[members] - centroids[click.point]) ** 2).sum(1))]
    instance = targets[click.label] if click.label >= 0 else -1
    return with_clicks(sample, inputs, np.append(sample.click_points, point),
                       np.append(instances, instance))


def simulate_corrections(model: UniSeg3D, sample: Sample, inputs: SceneInput,
                         features: torch.Tensor, generic: GenericPass, max_rounds: int,
                         strategy: str, rng: np.random.Generator
                         ) -> tuple[Sample, SceneInput]:
    """Training's corrective clicks on one scene: a random 0..`max_rounds` rounds (fewer when
    the clicked objects come out right)."""
    for _ in range(int(rng.integers(0, max_rounds + 1))):
        step = corrective_round(model, sample, inputs, features, generic, strategy, rng)
        if step is None:
            break
        sample, inputs = step
    return sample, inputs
