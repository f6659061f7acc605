"""Several clicks per object: the click queries' superpoint mask logits combined into objects.

An object's logit on a superpoint is the maximum over its positive click queries' logits; the
background's is the maximum over the negative click queries' logits, and never below the
threshold of a single click's mask (`ours`: sigmoid > 0.5, a logit of 0; `object_logits`). An
object's mask covers the superpoints where its logit beats the background's; each superpoint
goes to the object of the highest logit among those whose mask covers it (AGILE3D's multi-object
assignment), or to none. A clicked superpoint is forced to its click's label (later clicks
override earlier ones). With one positive click per object and no negative click, each object's
mask is that click query's own `logit > 0` mask, as the paper's single-click task has it. Both
recipes use this: for the `official` checkpoints, several clicks and negative clicks are a
training-free extension.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ClickObjects:
    """Superpoint-level objects of one scene's clicks."""

    logits: torch.Tensor  # (K, M) object logits
    background: torch.Tensor  # (M,) background logit (>= the threshold)
    masks: torch.Tensor  # (K, M) bool: each object's own mask (may overlap another's)
    labels: torch.Tensor  # (M,) the object each superpoint goes to, -1 = none


def number_of_objects(objects: torch.Tensor) -> int:
    """Objects are numbered 0..K-1 by their clicks; -1 marks a negative click."""
    return int(objects.max()) + 1 if len(objects) and (objects >= 0).any() else 0


def object_logits(click_logits: torch.Tensor, objects: torch.Tensor, threshold: float = 0.0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, M) object logits, the maximum over each object's click queries' (Kc, M) mask
    logits, and the (M,) background logit, the maximum over the negative clicks' floored at
    `threshold` (a single click's mask threshold as a logit)."""
    count, num_superpoints = number_of_objects(objects), click_logits.shape[1]
    logits = torch.stack([click_logits[objects == k].max(0).values for k in range(count)]) \
        if count else click_logits.new_zeros(0, num_superpoints)
    negative = objects < 0
    background = click_logits[negative].max(0).values.clamp(min=threshold) if negative.any() \
        else click_logits.new_full((num_superpoints,), threshold)
    return logits, background


def combine_clicks(click_logits: torch.Tensor, objects: torch.Tensor,
                   click_superpoints: torch.Tensor, threshold: float = 0.0) -> ClickObjects:
    """Objects from the (Kc, M) mask logits of the click queries; `objects` (Kc,) the object of
    each click (-1 = negative), `click_superpoints` (Kc,) the superpoint each click is on;
    `threshold`: a single click's mask threshold as a logit (the background's floor)."""
    logits, background = object_logits(click_logits, objects, threshold)
    masks = logits > background
    labels = torch.full((len(background),), -1, dtype=torch.long, device=logits.device)
    if len(logits):
        covered = torch.where(masks, logits, float("-inf"))
        labels = torch.where(masks.any(0), covered.argmax(0), labels)
    for superpoint, obj in zip(click_superpoints.tolist(), objects.tolist()):
        masks[:, superpoint] = False
        if obj >= 0:
            masks[obj, superpoint] = True
        labels[superpoint] = obj
    return ClickObjects(logits, background, masks, labels)


def per_object_mean(values: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
    """(K, ...) mean of the per-click `values` (Kc, ...) over each object's positive clicks."""
    count, positive = number_of_objects(objects), objects >= 0
    total = values.new_zeros((count, *values.shape[1:])).index_add(
        0, objects[positive], values[positive])
    clicks = torch.bincount(objects[positive], minlength=count).clamp(min=1)
    return total / clicks.view(-1, *([1] * (values.dim() - 1)))
