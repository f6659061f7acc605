"""Several clicks per object: the click queries' superpoint mask scores combined into objects.

The paper's interactive task is one positive click per object, and its mask is that click
query's own mask: the superpoints whose score is above the recipe's threshold (`ours`: mask
logit > 0; `official`: sigmoid > 0.4, compared as the released code compares it), whatever
the other objects' masks cover, overlaps and each other's clicked superpoints included. This
module computes exactly that for such clicks, and extends it where more clicks add something:

- an object's score on a superpoint is the maximum over its positive click queries' scores;
- the background's is the maximum over the negative click queries' scores, never below the
  threshold, and an object's mask covers the superpoints where its score beats the
  background's (with no negative click: its score above the threshold);
- a correction (an object's second and later clicks, and every negative click) forces its
  superpoint to its label in every object's mask (later corrections override earlier ones);
  an object's first click is the paper's prompt and forces nothing;
- `labels`, a point-per-object view for display and AGILE3D's multi-object protocol, gives
  each superpoint to the object of the highest score among those whose mask covers it (the
  forced superpoints to their correction's label), or to none.

Scores and threshold are in one space, the one the recipe thresholds in (logits or sigmoid
probabilities: `model.postprocess.MaskRule`); the rules use only maxima and comparisons, so
they read the same in either. Both recipes use this: for the `official` checkpoints, several
clicks and negative clicks are a training-free extension.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ClickObjects:
    """Superpoint-level objects of one scene's clicks."""

    scores: torch.Tensor  # (K, M) object scores
    background: torch.Tensor  # (M,) background score (>= the threshold)
    masks: torch.Tensor  # (K, M) bool: each object's own mask (may overlap another's)
    labels: torch.Tensor  # (M,) the object each superpoint goes to, -1 = none


def number_of_objects(objects: torch.Tensor) -> int:
    """Objects are numbered 0..K-1 by their clicks; -1 marks a negative click."""
    return int(objects.max()) + 1 if len(objects) and (objects >= 0).any() else 0


def corrections(objects: torch.Tensor) -> torch.Tensor:
    """(Kc,) bool: the clicks that correct (every negative click, and each object's clicks
    after its first), as opposed to each object's first click, the paper's prompt."""
    first = torch.zeros(len(objects), dtype=torch.bool, device=objects.device)
    seen: set[int] = set()
    for index, obj in enumerate(objects.tolist()):
        if obj >= 0 and obj not in seen:
            first[index] = True
            seen.add(obj)
    return ~first


def object_scores(click_scores: torch.Tensor, objects: torch.Tensor, threshold: float = 0.0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, M) object scores, the maximum over each object's click queries' (Kc, M) mask
    scores, and the (M,) background score, the maximum over the negative clicks' floored at
    `threshold` (a single click's mask threshold in the scores' space)."""
    count, num_superpoints = number_of_objects(objects), click_scores.shape[1]
    scores = torch.stack([click_scores[objects == k].max(0).values for k in range(count)]) \
        if count else click_scores.new_zeros(0, num_superpoints)
    negative = objects < 0
    background = click_scores[negative].max(0).values.clamp(min=threshold) if negative.any() \
        else click_scores.new_full((num_superpoints,), threshold)
    return scores, background


def combine_clicks(click_scores: torch.Tensor, objects: torch.Tensor,
                   click_superpoints: torch.Tensor, threshold: float = 0.0) -> ClickObjects:
    """Objects from the (Kc, M) mask scores of the click queries; `objects` (Kc,) the object of
    each click (-1 = negative), `click_superpoints` (Kc,) the superpoint each click is on;
    `threshold`: a single click's mask threshold in the scores' space."""
    scores, background = object_scores(click_scores, objects, threshold)
    masks = scores > background
    labels = torch.full((len(background),), -1, dtype=torch.long, device=scores.device)
    if len(scores):
        covered = torch.where(masks, scores, float("-inf"))
        labels = torch.where(masks.any(0), covered.argmax(0), labels)
    forcing = corrections(objects)
    for superpoint, obj in zip(click_superpoints[forcing].tolist(), objects[forcing].tolist()):
        masks[:, superpoint] = False
        if obj >= 0:
            masks[obj, superpoint] = True
        labels[superpoint] = obj
    return ClickObjects(scores, background, masks, labels)


def per_object_mean(values: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
    """(K, ...) mean of the per-click `values` (Kc, ...) over each object's positive clicks."""
    count, positive = number_of_objects(objects), objects >= 0
    total = values.new_zeros((count, *values.shape[1:])).index_add(
        0, objects[positive], values[positive])
    clicks = torch.bincount(objects[positive], minlength=count).clamp(min=1)
    return total / clicks.view(-1, *([1] * (values.dim() - 1)))
