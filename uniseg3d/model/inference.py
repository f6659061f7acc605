"""One forward, six tasks: run the model on a scene and post-process every task's output.

`predict_scene` serves both recipes: an `official` model goes to
`uniseg3d.model.official.inference`; the rest of this module is the `ours` path.
"""

from __future__ import annotations

import torch

from uniseg3d.model.official.inference import predict_official_prompts, predict_official_scene
from uniseg3d.model.official.network import OfficialUniSeg3D
from uniseg3d.model.decoder import GenericPass, QueryPredictions
from uniseg3d.model.postprocess import (PromptMasks, ScenePrediction, click_prompt_masks,
                                        instances, panoptic, prompt_masks, semantic_labels)
from uniseg3d.model.stopwatch import NO_TIMING
from uniseg3d.model.targets import STUFF_IDS
from uniseg3d.model.uniseg3d import SceneInput, UniSeg3D

__all__ = ["ScenePrediction", "predict_prompts_only", "predict_scene"]


def prompt_results(click: QueryPredictions, text: QueryPredictions, scene: SceneInput,
                   class_embeddings: torch.Tensor, stopwatch=NO_TIMING
                   ) -> tuple[PromptMasks, PromptMasks]:
    """The clicked objects' and the descriptions' masks from their queries' last layer."""
    sp = scene.superpoints
    with stopwatch("post-processing: interactive"):
        clicks = click_prompt_masks(
            click.masks, click.class_logits(class_embeddings).softmax(-1)[:, :-1],
            click.iou.sigmoid(), scene.objects_of_clicks(), sp[scene.click_points], sp)
    with stopwatch("post-processing: referring"):
        texts = prompt_masks(text, class_embeddings, sp)
    return clicks, texts


@torch.no_grad()
def predict_prompts_only(model: UniSeg3D | OfficialUniSeg3D, scene: SceneInput,
                         class_embeddings: torch.Tensor, features: torch.Tensor,
                         generic: GenericPass | None = None) -> tuple[PromptMasks, PromptMasks]:
    """The clicked objects' and the descriptions' masks alone, as `predict_scene` gives them,
    from the scene's superpoint `features` and (`ours`) its `generic` pass: only the prompt
    queries are decoded, and no generic task is post-processed."""
    if isinstance(model, OfficialUniSeg3D):
        return predict_official_prompts(model, scene, class_embeddings, features)
    model.eval()
    last = model.decoder.decode_prompts(generic, scene.clicks(), scene.texts)[-1]
    clicks = len(scene.click_points)
    return prompt_results(last.select(slice(0, clicks)), last.select(slice(clicks, None)),
                          scene, class_embeddings)


@torch.no_grad()
def predict_scene(model: UniSeg3D | OfficialUniSeg3D, scene: SceneInput,
                  class_embeddings: torch.Tensor,
                  open_vocab_embeddings: torch.Tensor | None = None, top_k: int = 600,
                  stopwatch=NO_TIMING, features: torch.Tensor | None = None,
                  generic: GenericPass | None = None) -> ScenePrediction:
    """All six tasks from a single forward pass of `model` (in eval mode); `class_embeddings`
    are ScanNet20's (for `ours` (C, dim) name embeddings, and the semantic logits lose the
    model's training log prior; for `official` the (20, P, D) CLIP prototypes); `stopwatch`
    times each component and each task's post-processing; `features`, the scene's superpoint
    features (`model.superpoint_features`), skips the backbone, and `generic`, the scene's
    generic pass (`ours`: `model.generic_pass`), the generic queries too."""
    if isinstance(model, OfficialUniSeg3D):
        return predict_official_scene(model, scene, class_embeddings, open_vocab_embeddings,
                                      top_k, stopwatch, features)
    model.eval()
    out = model([scene], stopwatch=stopwatch, features=None if features is None
                else [features], generic=None if generic is None else [generic])[0]
    generic = out.part("generic")
    sp = scene.superpoints
    things = torch.ones(class_embeddings.shape[0], dtype=torch.bool, device=sp.device)
    things[list(STUFF_IDS)] = False
    with stopwatch("post-processing: instance"):
        inst = instances(generic, class_embeddings, sp, allowed=things, top_k=top_k)
    with stopwatch("post-processing: semantic"):
        switches = model.config.switches
        logits = out.semantic_logits(class_embeddings)
        if switches.logit_adjustment:
            logits = logits - model.semantic_log_prior
        semantic = semantic_labels(logits, sp, inst if switches.instance_vote else None)
    with stopwatch("post-processing: panoptic"):
        pan_classes, pan_ids = panoptic(semantic, inst)
    clicks, texts = prompt_results(out.part("click"), out.part("text"), scene, class_embeddings,
                                   stopwatch)
    with stopwatch("post-processing: open vocabulary"):
        open_vocab = None if open_vocab_embeddings is None else \
            instances(generic, open_vocab_embeddings, sp, top_k=top_k)
    return ScenePrediction(semantic, inst, pan_classes, pan_ids, clicks, texts, open_vocab)
