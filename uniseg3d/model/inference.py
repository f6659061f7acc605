"""One forward, six tasks: run the model on a scene and post-process every task's output.

`predict_scene` serves both recipes: an `official` model goes to
`uniseg3d.model.official.inference`; the rest of this module is the `ours` path, with our
post-processing (`model.postprocess`) or, with `model.switches.our_postprocess: false`, the
released code's rules (`model.official.postprocess`) on ours' queries: instances and the open
vocabulary by class probability x mean mask probability, matrix NMS, masks at sigmoid > 0.4 and
more than 100 points; panoptic stuff from the better of wall and floor, things of score x IoU >
0.5 painted best last; prompt masks at sigmoid > 0.4.
"""

from __future__ import annotations

import numpy as np
import torch

from uniseg3d.model.official.inference import predict_official_prompts, predict_official_scene
from uniseg3d.model.official.network import OfficialUniSeg3D
from uniseg3d.model.official.postprocess import (PANOPTIC_SCORE, RELEASED_PROMPT_MASKS,
                                                 paint_panoptic, ranked_instances, stuff_of)
from uniseg3d.model.decoder import GenericPass, QueryPredictions
from uniseg3d.model.postprocess import (OUR_PROMPT_MASKS, Instances, MaskRule, PromptMasks,
                                        ScenePrediction, class_probabilities,
                                        click_prompt_masks, instances, panoptic, prompt_masks,
                                        semantic_labels, to_points)
from uniseg3d.model.stopwatch import NO_TIMING
from uniseg3d.model.targets import STUFF_IDS
from uniseg3d.model.uniseg3d import SceneInput, UniSeg3D

__all__ = ["ScenePrediction", "predict_prompts_only", "predict_scene", "prompt_mask_rule"]


def prompt_mask_rule(model: UniSeg3D | OfficialUniSeg3D) -> MaskRule:
    """Which superpoints a prompt query's mask covers: the released sigmoid > 0.4 for
    `official` and for ours with the released rules, else mask logit > 0."""
    if isinstance(model, OfficialUniSeg3D) or not model.config.switches.our_postprocess:
        return RELEASED_PROMPT_MASKS
    return OUR_PROMPT_MASKS


def released_instances(pred: QueryPredictions, class_embeddings: torch.Tensor,
                       superpoints: torch.Tensor, allowed: torch.Tensor | None = None,
                       top_k: int = 600) -> Instances:
    """Ours' instances by the released instance rules (`ranked_instances`, no IoU)."""
    probs = class_probabilities(pred, class_embeddings, allowed)
    masks, labels, scores, queries = ranked_instances(probs, pred.masks, superpoints, top_k=top_k)
    return Instances(to_points(masks, superpoints), labels.cpu().numpy(), scores.cpu().numpy(),
                     probs[queries].cpu().numpy())


def released_panoptic(pred: QueryPredictions, semantic_logits: torch.Tensor,
                      class_embeddings: torch.Tensor, superpoints: torch.Tensor,
                      things: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Ours' panoptic result by the released rules: stuff from (M, C) `semantic_logits`, thing
    instances of class x mask x IoU score > 0.5 painted over it."""
    probs = class_probabilities(pred, class_embeddings, things) * pred.iou.sigmoid()[:, None]
    masks, labels, _, _ = ranked_instances(probs, pred.masks, superpoints, PANOPTIC_SCORE)
    return paint_panoptic(stuff_of(semantic_logits), masks, labels, superpoints)


def prompt_results(click: QueryPredictions, text: QueryPredictions, scene: SceneInput,
                   class_embeddings: torch.Tensor, stopwatch=NO_TIMING,
                   rule: MaskRule = OUR_PROMPT_MASKS) -> tuple[PromptMasks, PromptMasks]:
    """The clicked objects' and the descriptions' masks from their queries' last layer (by
    `rule`)."""
    sp = scene.superpoints
    with stopwatch("post-processing: interactive"):
        clicks = click_prompt_masks(
            click.masks, class_probabilities(click, class_embeddings), click.iou.sigmoid(),
            scene.objects_of_clicks(), sp[scene.click_points], sp, rule)
    with stopwatch("post-processing: referring"):
        texts = prompt_masks(text, class_embeddings, sp, rule)
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
                          scene, class_embeddings, rule=prompt_mask_rule(model))


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
    switches = model.config.switches
    ours = switches.our_postprocess
    find_instances = instances if ours else released_instances
    with stopwatch("post-processing: instance"):
        inst = find_instances(generic, class_embeddings, sp, things, top_k)
    with stopwatch("post-processing: semantic"):
        logits = out.semantic_logits(class_embeddings)
        if switches.logit_adjustment:
            logits = logits - model.semantic_log_prior
        semantic = semantic_labels(logits, sp, inst if switches.instance_vote else None)
    with stopwatch("post-processing: panoptic"):
        pan_classes, pan_ids = panoptic(semantic, inst) if ours else \
            released_panoptic(generic, logits, class_embeddings, sp, things)
    clicks, texts = prompt_results(out.part("click"), out.part("text"), scene, class_embeddings,
                                   stopwatch, prompt_mask_rule(model))
    with stopwatch("post-processing: open vocabulary"):
        open_vocab = None if open_vocab_embeddings is None else \
            find_instances(generic, open_vocab_embeddings, sp, top_k=top_k)
    return ScenePrediction(semantic, inst, pan_classes, pan_ids, clicks, texts, open_vocab)
