"""One forward of the official recipe, six tasks, in the shape the pipelines read
(`ScenePrediction`). Instance labels are ScanNet20 class indices (the thing classifier's 0..17
shifted by the two stuff classes). The open-vocabulary task classifies the generic queries'
instance embeddings against CLIP embeddings of the given names, with the instance rules; this
is beyond the released code, whose open-vocabulary results come from class-agnostic masks and
an external 2D pipeline (Open3DIS).
"""

from __future__ import annotations

import torch

from uniseg3d.model.official.network import OfficialSceneOutput, OfficialUniSeg3D
from uniseg3d.model.official.postprocess import (THINGS_FROM, TOP_K, click_objects_masks,
                                                 instances, panoptic, prompt_masks,
                                                 semantic_labels)
from uniseg3d.model.postprocess import Instances, PromptMasks, ScenePrediction
from uniseg3d.model.stopwatch import NO_TIMING
from uniseg3d.model.uniseg3d import SceneInput


def shifted(found: Instances, offset: int) -> Instances:
    return Instances(found.masks, found.labels + offset, found.scores, found.class_probs)


def official_prompt_results(out: OfficialSceneOutput, scene: SceneInput, prototypes: torch.Tensor,
                            stopwatch=NO_TIMING) -> tuple[PromptMasks, PromptMasks]:
    """The clicked objects' and the descriptions' masks of one forward."""
    sp = scene.superpoints
    with stopwatch("post-processing: interactive"):
        clicks = click_objects_masks(out.part("click"), prototypes, scene.objects_of_clicks(),
                                     sp[scene.click_points], sp)
    with stopwatch("post-processing: referring"):
        texts = prompt_masks(out.part("text"), prototypes, sp)
    return clicks, texts


@torch.no_grad()
def predict_official_prompts(model: OfficialUniSeg3D, scene: SceneInput, prototypes: torch.Tensor,
                             features: torch.Tensor) -> tuple[PromptMasks, PromptMasks]:
    """The prompts' masks alone, from the scene's superpoint features (the decoder reruns)."""
    model.eval()
    return official_prompt_results(model([scene], features=[features])[0], scene, prototypes)


@torch.no_grad()
def predict_official_scene(model: OfficialUniSeg3D, scene: SceneInput, prototypes: torch.Tensor,
                           open_vocab_embeddings: torch.Tensor | None = None,
                           top_k: int = TOP_K, stopwatch=NO_TIMING,
                           features: torch.Tensor | None = None) -> ScenePrediction:
    """All six tasks; `prototypes` (20, P, D) are the ScanNet20 class prototypes (the model's
    `class_prototypes`), `open_vocab_embeddings` (C, D) unit rows of free-text class names;
    `features` (the scene's superpoint features) skips the backbone."""
    model.eval()
    out = model([scene], stopwatch=stopwatch, features=None if features is None
                else [features])[0]
    generic = out.part("generic")
    sp = scene.superpoints
    with stopwatch("post-processing: instance"):
        things = shifted(instances(generic, prototypes[THINGS_FROM:], sp, top_k=top_k),
                         THINGS_FROM)
    with stopwatch("post-processing: semantic"):
        semantic = semantic_labels(generic, prototypes, sp)
    with stopwatch("post-processing: panoptic"):
        pan_classes, pan_ids = panoptic(generic, prototypes, sp)
    clicks, texts = official_prompt_results(out, scene, prototypes, stopwatch)
    with stopwatch("post-processing: open vocabulary"):
        open_vocab = None if open_vocab_embeddings is None else \
            instances(generic, open_vocab_embeddings, sp, top_k=top_k)
    return ScenePrediction(semantic, things, pan_classes, pan_ids, clicks, texts, open_vocab)
