"""One forward, six tasks: run the model on a scene and post-process every task's output."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from uniseg3d.model.postprocess import (Instances, PromptMasks, instances, panoptic,
                                        prompt_masks, semantic_labels)
from uniseg3d.model.stopwatch import NO_TIMING
from uniseg3d.model.targets import STUFF_IDS
from uniseg3d.model.uniseg3d import SceneInput, UniSeg3D


@dataclass
class ScenePrediction:
    semantic: np.ndarray  # (N,) ScanNet20 class per point
    instances: Instances  # thing instances, ScanNet20 labels
    panoptic_classes: np.ndarray  # (N,) class per point (-1 = none)
    panoptic_ids: np.ndarray  # (N,) thing instance id per point (-1 = stuff or none)
    clicks: PromptMasks  # one mask per click
    texts: PromptMasks  # one mask per description
    open_vocab: Instances | None  # instances labelled against the open-vocabulary class list


@torch.no_grad()
def predict_scene(model: UniSeg3D, scene: SceneInput, class_embeddings: torch.Tensor,
                  open_vocab_embeddings: torch.Tensor | None = None, top_k: int = 600,
                  stopwatch=NO_TIMING) -> ScenePrediction:
    """All six tasks from a single forward pass of `model` (in eval mode); `class_embeddings`
    are ScanNet20's (the semantic logits lose the model's training log prior); `stopwatch`
    times each component and each task's post-processing."""
    model.eval()
    out = model([scene], stopwatch=stopwatch)[0]
    generic = out.part("generic")
    sp = scene.superpoints
    things = torch.ones(class_embeddings.shape[0], dtype=torch.bool, device=sp.device)
    things[list(STUFF_IDS)] = False
    with stopwatch("post-processing: instance"):
        inst = instances(generic, class_embeddings, sp, allowed=things, top_k=top_k)
    with stopwatch("post-processing: semantic"):
        logits = out.semantic_logits(class_embeddings) - model.semantic_log_prior
        semantic = semantic_labels(logits, sp, inst)
    with stopwatch("post-processing: panoptic"):
        pan_classes, pan_ids = panoptic(semantic, inst)
    with stopwatch("post-processing: interactive"):
        clicks = prompt_masks(out.part("click"), class_embeddings, sp)
    with stopwatch("post-processing: referring"):
        texts = prompt_masks(out.part("text"), class_embeddings, sp)
    with stopwatch("post-processing: open vocabulary"):
        open_vocab = None if open_vocab_embeddings is None else \
            instances(generic, open_vocab_embeddings, sp, top_k=top_k)
    return ScenePrediction(semantic, inst, pan_classes, pan_ids, clicks, texts, open_vocab)
