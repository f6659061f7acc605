"""Training the `official` recipe: UniSeg3D's released training choices, model and losses.

`official_training` replaces what the released config fixes (and leaves the schedule's length,
`train.epochs`, to the user: the paper trains 512 epochs):

| what | official |
|---|---|
| clicks | every thing instance, at `sampled` (nearest the centroid of <= 500 sampled points) |
| descriptions | one per described thing object (`one_per_object`), no cap |
| corrective clicks | none |
| augmentation | rotation about z, scale 0.8-1.2, translation N(0, 0.1), no flip; with p = 0.5 the
  code's elastic passes (6, 40) and (20, 160) in 2 cm voxel units |
| optimiser | AdamW lr 1e-4, weight decay 0.05, poly 0.9, gradient clip 10, batch 4, one stage |
| best checkpoints | by validation metrics (`best_by: metrics`): all_ap, miou, pq, validated every
  16 epochs and every epoch of the last 16 |

The model is `OfficialUniSeg3D` with the frozen CLIP text tower of `text.clip_model`, loaded
from `text.clip_checkpoint` (the official `clip_pretrain` init) or, without one, left at its
seeded random initialisation (said in the log: its text queries and class prototypes then
carry no language). The fixed class prototypes are the tower's embeddings of the 20 class
names. `train.init_backbone` loads the released SSTNet backbone (`sstnet_scannet.pth`, the
config's `load_from`) with the importer's code-free reading: every backbone tensor must be in
the file with its shape, other keys are ignored; convolution weights come from the file's
spconv layout (SSTNet's is `[k,k,k,in,out]`), found from the shapes or named by
`train.init_backbone_layout`. `train.pseudo_masks` names the data-info pkl
whose SAM3D pseudo masks the losses use; without it they are left out, said in the log.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from uniseg3d.config import AugmentConfig, Params
from uniseg3d.datasets.loader import Sample
from uniseg3d.datasets.official_info import read_pseudo_masks
from uniseg3d.datasets.scene import Scene
from uniseg3d.model.inputs import on_device, scene_input
from uniseg3d.model.official.checkpoint import (OfficialCheckpointError, native_layout,
                                                official_key, official_state_dict,
                                                read_official_checkpoint)
from uniseg3d.model.official.criterion import OfficialCriterion
from uniseg3d.model.official.language import OfficialTextEncoder, load_open_clip_text
from uniseg3d.model.official.network import OfficialUniSeg3D
from uniseg3d.model.official.targets import OfficialTargets, thing_instances
from uniseg3d.model.text_encoder import CachedTextEncoder

log = logging.getLogger(__name__)

PAPER_EPOCHS = 512
OFFICIAL_AUGMENT = AugmentConfig(flip=False, rotate=True, scale=(0.8, 1.2), translate_std=0.1,
                                 elastic=((6 * 0.02, 40 * 0.02), (20 * 0.02, 160 * 0.02)),
                                 elastic_form="official", elastic_probability=0.5)
OFFICIAL_PROMPTS = {"train_click": "sampled", "max_clicks": 0, "max_texts": 0,
                    "train_texts": "one_per_object", "min_points": 1, "corrective_rounds": 0}
OFFICIAL_TRAIN = {"batch_size": 4, "lr": 1e-4, "weight_decay": 0.05, "poly_power": 0.9,
                  "grad_clip": 10.0, "fine_tune_epochs": 0, "best_by": "metrics",
                  "validate_every": 16, "validate_last": 16, "augment": OFFICIAL_AUGMENT}


def official_training(params: Params) -> Params:
    """`params` with the released config's training choices (the table above); each value it
    changes is logged."""
    changed = [f"prompts.{k}: {getattr(params.prompts, k)!r} -> {v!r}"
               for k, v in OFFICIAL_PROMPTS.items() if getattr(params.prompts, k) != v]
    changed += [f"train.{k}: {getattr(params.train, k)!r} -> {v!r}"
                for k, v in OFFICIAL_TRAIN.items() if getattr(params.train, k) != v
                and k != "augment"]
    if params.train.augment != OFFICIAL_AUGMENT:
        changed.append("train.augment: the official transforms")
    if changed:
        log.info("the official recipe sets %s", "; ".join(changed))
    return replace(params, prompts=replace(params.prompts, **OFFICIAL_PROMPTS),
                   train=replace(params.train, **OFFICIAL_TRAIN))


def init_backbone(model: OfficialUniSeg3D, checkpoint: str | Path, layout: str | None = None
                  ) -> int:
    """Load every backbone tensor of `model` from a released checkpoint (SSTNet's or
    UniSeg3D's), its convolution weights from the file's spconv layout (found from the shapes,
    or `layout` when named); returns how many were loaded."""
    official = official_state_dict(read_official_checkpoint(checkpoint), checkpoint)
    ours = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    inverse = {official_key(k): k for k in official}
    found = native_layout({official_key(k): v for k, v in official.items()}, ours, layout,
                          inverse.get)
    missing = sorted(k for k in ours if k not in found)
    shaped = sorted(k for k in ours if k in found and found[k].shape != ours[k].shape)
    if missing or shaped:
        raise OfficialCheckpointError(
            f"{checkpoint}: not this backbone: {len(missing)} tensors missing "
            f"({', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}), "
            f"{len(shaped)} of another shape ({', '.join(shaped[:5])})")
    model.load_state_dict({k: found[k] for k in ours}, strict=False)
    log.info("train.init_backbone: %d backbone tensors from %s (%d other keys ignored)",
             len(ours), checkpoint, len(found) - len(ours))
    return len(ours)


def build_official(params: Params, class_names: list[str], device: str = "cpu"
                   ) -> tuple[OfficialUniSeg3D, CachedTextEncoder]:
    """The official model to train (text tower, class prototypes, optional SSTNet backbone)
    and its text encoder."""
    text_model = params.text.clip_model
    model = OfficialUniSeg3D(params.model.selected(), text_model, device=device)
    if params.text.clip_checkpoint:
        load_open_clip_text(model.lang.text_encoder, params.text.clip_checkpoint)
    else:
        log.warning("text.clip_checkpoint is not set: the official recipe trains with its "
                    "frozen %s text tower at random weights, so its text queries and class "
                    "prototypes carry no language", text_model)
    encoder = CachedTextEncoder(OfficialTextEncoder(model.lang.text_encoder, text_model),
                                token_dtype=torch.float32)
    with torch.no_grad():
        model.class_prototypes.copy_(encoder.encode(class_names)[:, None])
    if params.train.init_backbone:
        init_backbone(model, params.train.init_backbone, params.train.init_backbone_layout)
    return model.to(device), encoder


class PseudoMasks:
    """SAM3D pseudo masks per scene (none when `train.pseudo_masks` is not set)."""

    def __init__(self, path: str | None):
        self.by_scene: dict[str, np.ndarray] = {}
        if not path:
            log.info("train.pseudo_masks is not set: training without SAM3D pseudo masks")
            return
        self.by_scene = read_pseudo_masks(path)
        log.info("SAM3D pseudo masks of %d scenes from %s", len(self.by_scene), path)

    def of_scene(self, scene: Scene) -> np.ndarray | None:
        return self.by_scene.get(scene.scene_id)


def thing_prompts(sample: Sample) -> Sample:
    """The sample's clicks and descriptions that name thing instances (the official losses
    have targets for those only)."""
    things = thing_instances(sample)
    clicks = np.isin(sample.click_instances, things)
    texts = np.isin(sample.text_instances, things)
    return replace(sample, click_points=sample.click_points[clicks],
                   click_instances=sample.click_instances[clicks],
                   texts=[t for t, keep in zip(sample.texts, texts) if keep],
                   text_instances=sample.text_instances[texts])


class OfficialLosses(nn.Module):
    """The official losses of a batch of samples, augmented and prompted as the code does in
    training, with their targets (`pipelines.samples` prepares both, `thing_prompts` and the
    pseudo masks applied); holds the criterion (and with it the learnable contrastive scale)."""

    def __init__(self, params: Params):
        super().__init__()
        self.criterion = OfficialCriterion(params.loss.lambda_inter, params.loss.distillation,
                                           params.loss.contrastive)

    def forward(self, model, samples: list[Sample], targets: list[OfficialTargets],
                encoder: CachedTextEncoder, generator: torch.Generator, device: str = "cpu"
                ) -> dict[str, torch.Tensor]:
        inputs = [scene_input(s, encoder.encode_texts(s.texts), device) for s in samples]
        outputs = model(inputs, generator)
        targets = [on_device(t, device) for t in targets]
        prototypes = getattr(model, "module", model).class_prototypes
        return self.criterion(outputs, targets, prototypes)
