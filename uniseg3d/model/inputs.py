"""Turn loader samples (numpy) into model inputs and training targets (torch)."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

import torch

from uniseg3d.datasets.loader import Sample, objects_of_clicks
from uniseg3d.model.targets import SceneTargets, build_targets
from uniseg3d.model.text_encoder import EncodedTexts
from uniseg3d.model.uniseg3d import SceneInput

Targets = TypeVar("Targets")


def scene_input(sample: Sample, texts: EncodedTexts, device: str | torch.device = "cpu"
                ) -> SceneInput:
    scene = sample.scene
    return SceneInput(
        coords=torch.as_tensor(scene.coords, dtype=torch.float32, device=device),
        colors=torch.as_tensor(scene.colors, device=device),
        superpoints=torch.as_tensor(scene.superpoints, dtype=torch.long, device=device),
        click_points=torch.as_tensor(sample.click_points, dtype=torch.long, device=device),
        texts=texts.to(device),
        click_objects=torch.as_tensor(objects_of_clicks(sample.click_instances), device=device))


def scene_targets(sample: Sample, device: str | torch.device = "cpu") -> SceneTargets:
    scene = sample.scene
    return build_targets(scene.superpoints, scene.semantic20, scene.instance, scene.num_instances,
                         sample.click_instances, sample.text_instances, device)


def with_prompt_targets(targets: SceneTargets, sample: Sample) -> SceneTargets:
    """`targets` (of the sample's scene) for the sample's clicks and descriptions, e.g. after
    corrective clicks changed them: a prompt's target row is its instance."""
    device = targets.masks.device
    return dataclasses.replace(
        targets, click_segments=torch.as_tensor(sample.click_instances, device=device),
        text_segments=torch.as_tensor(sample.text_instances, device=device))


def on_device(targets: Targets, device: str | torch.device) -> Targets:
    """Targets (a dataclass of tensors, either recipe's) on `device`."""
    return dataclasses.replace(targets, **{field.name: getattr(targets, field.name).to(device)
                                           for field in dataclasses.fields(targets)})
