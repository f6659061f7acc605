"""UniSeg3D's training losses as its released code computes them (`ScanNetUnifiedCriterion` and
its parts, with the weights of `uniseg3d_1xb4_scannet_scanrefer_scannet200_unified.py`).

Per decoder output (before the first layer and after each, re-matched at each: `iter_matcher`):

- generic queries: the sparse matcher (`sparse_match`: class 0.5, BCE 1, Dice 1; an instance is
  matched only by a query seeded inside it, its top-1); SAM3D pseudo masks matched by mask costs
  among the queries left unmatched. Instance loss 0.5 CE (no-object weight 0.1; pseudo-matched
  queries ignored) + BCE + Dice; pseudo masks 0.1 BCE + 0.1 Dice, no class loss; the IoU head's
  MSE against the binarised IoU, x 0.1;
- click and text queries, each against its instance: 0.5 CE + BCE + Dice, the sum over outputs
  x 0.1 (`total_weight`).

The code's reductions are kept: CE is the mean over the batch's scenes; BCE the mean over scenes
that have matches; Dice 4 x that mean on the last output and 4 / B x it on the others
(`fix_dice_loss_weight` divides by the batch size twice there); pseudo-mask Dice 4 x the mean on
every output; the IoU term the sum over scenes / B. Last output only: the semantic loss (the
generic queries' semantic logits against their superpoint's class, x 0.2); click -> generic
distillation (BCE on the 10 % superpoints of highest click logit, only in a scene whose every
instance was matched, x lambda); and per scene with descriptions the contrastive loss (both-way
cross-entropy between each description and its object's click, on `out_norm` queries, with the
learnable `logit_scale` initialised to log(1 / 0.07) and used as is, not exponentiated), the
ranking loss (margin 0, summed over pairs) and the click -> text class distillation (BCE of
sigmoids), each x lambda (`loss.lambda_inter`, the config's 0.1 * hype_lambda); these four
forms live in `model.inter_task`, which `ours` can train with too.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from uniseg3d.model.criterion import mask_losses, pairwise_mask_costs, sparse_match
from uniseg3d.model.inter_task import (LOGIT_SCALE_INIT, class_distillation, click_distillation,
                                      contrastive_and_ranking)
from uniseg3d.model.official.decoder import OfficialPredictions
from uniseg3d.model.official.network import OfficialSceneOutput
from uniseg3d.model.official.postprocess import THINGS_FROM
from uniseg3d.model.official.targets import UNLABELLED, OfficialTargets

COST_CLASS, COST_BCE, COST_DICE = 0.5, 1.0, 1.0
CE, BCE, DICE = 0.5, 1.0, 1.0  # instance and prompt loss weights
NOVEL_BCE, NOVEL_DICE = 0.1, 0.1
NO_OBJECT = 0.1
IOU = 0.1
SEMANTIC = 0.2
PROMPT = 0.1  # `total_weight` of the click and text criteria
DICE_SCALE = 4.0  # `fix_dice_loss_weight`


def official_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The IoU head's target: sigmoid >= 0.5 against the target mask, over union + 1e-6."""
    pred = (logits.detach().sigmoid() >= 0.5).float()
    inter = (pred * targets).sum(-1)
    return inter / (targets.sum(-1) + pred.sum(-1) - inter + 1e-6)


def class_weight(num_classes: int, device) -> torch.Tensor:
    weight = torch.ones(num_classes + 1, device=device)
    weight[-1] = NO_OBJECT
    return weight


def _mean(values: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    return torch.stack(values).mean() if values else like.sum() * 0


def generic_matches(pred: OfficialPredictions, logits: torch.Tensor, t: OfficialTargets,
                    generic: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(query rows, instance rows, pseudo-matched query rows, pseudo-mask rows) of one scene;
    `logits` are its queries' instance class logits."""
    inside, novel_inside = t.query_masks(generic)
    bce, dice = pairwise_mask_costs(pred.masks.detach().float(), t.masks)
    cls = -logits.detach().softmax(-1)[:, t.labels]
    rows, cols = sparse_match(COST_CLASS * cls + COST_BCE * bce + COST_DICE * dice, inside)
    free = torch.ones(len(pred.masks), dtype=torch.bool, device=pred.masks.device)
    free[rows] = False
    free = torch.nonzero(free)[:, 0]
    bce, dice = pairwise_mask_costs(pred.masks.detach()[free].float(), t.novel_masks)
    novel_rows, novel_cols = sparse_match(COST_BCE * bce + COST_DICE * dice,
                                          novel_inside[:, free])
    return rows, cols, free[novel_rows], novel_cols


def generic_layer_losses(preds: list[OfficialPredictions], targets: list[OfficialTargets],
                         generics: list[torch.Tensor], things: torch.Tensor, last: bool
                         ) -> tuple[dict[str, torch.Tensor], list[tuple[torch.Tensor, ...]]]:
    """The instance, pseudo-mask and IoU losses of one decoder output over a batch, with each
    scene's matches."""
    batch = len(preds)
    like = preds[0].masks
    ce, bce, dice, novel_bce, novel_dice, iou, matches = [], [], [], [], [], [], []
    for pred, t, generic in zip(preds, targets, generics):
        logits = pred.class_logits(things)
        rows, cols, novel_rows, novel_cols = generic_matches(pred, logits, t, generic)
        matches.append((rows, cols))
        target = torch.full((len(pred.masks),), len(things), dtype=torch.long,
                            device=like.device)
        target[rows] = t.labels[cols]
        target[novel_rows] = -1
        if (target >= 0).any():
            ce.append(F.cross_entropy(logits, target, class_weight(len(things), like.device),
                                      ignore_index=-1))
        if len(rows):
            b, d = mask_losses(pred.masks[rows], t.masks[cols])
            bce.append(b)
            dice.append(d)
        if len(novel_rows):
            b, d = mask_losses(pred.masks[novel_rows], t.novel_masks[novel_cols])
            novel_bce.append(b)
            novel_dice.append(d)
        all_rows = torch.cat([rows, novel_rows])
        if len(all_rows):
            goal = official_iou(pred.masks[all_rows],
                                torch.cat([t.masks[cols], t.novel_masks[novel_cols]]))
            iou.append(F.mse_loss(pred.iou[all_rows], goal))
    dice_scale = DICE_SCALE if last else DICE_SCALE / batch
    instance = (CE * _mean(ce, like) + BCE * _mean(bce, like)
                + DICE * dice_scale * _mean(dice, like))
    novel = NOVEL_BCE * _mean(novel_bce, like) + NOVEL_DICE * DICE_SCALE * _mean(novel_dice, like)
    iou_loss = IOU * (torch.stack(iou).sum() / batch if iou else like.sum() * 0)
    return {"instance": instance, "novel": novel, "iou": iou_loss}, matches


def prompt_layer_loss(preds: list[OfficialPredictions], masks: list[torch.Tensor],
                      labels: list[torch.Tensor], things: torch.Tensor, last: bool,
                      class_loss: float = 1.0) -> torch.Tensor:
    """One output's loss of prompt queries aligned with their instances (masks (K, M), labels
    (K,) per scene; scenes without prompts count in the batch size only)."""
    batch = len(preds)
    like = preds[0].masks
    ce, bce, dice = [], [], []
    for pred, m, y in zip(preds, masks, labels):
        if not len(y):
            continue
        ce.append(F.cross_entropy(pred.class_logits(things), y,
                                  class_weight(len(things), like.device)))
        b, d = mask_losses(pred.masks, m)
        bce.append(b)
        dice.append(d)
    dice_scale = DICE_SCALE if last else DICE_SCALE / batch
    return (CE * class_loss * _mean(ce, like) + BCE * _mean(bce, like)
            + DICE * dice_scale * _mean(dice, like))


def semantic_loss(preds: list[OfficialPredictions], targets: list[OfficialTargets],
                  generics: list[torch.Tensor], prototypes: torch.Tensor) -> torch.Tensor:
    """Each generic query's semantic logits (the background column dropped) against the class
    of the superpoint it was seeded at; the mean over scenes."""
    losses = []
    for pred, t, generic in zip(preds, targets, generics):
        target = t.semantic[generic]
        if (target != UNLABELLED).any():
            losses.append(F.cross_entropy(pred.semantic_logits(prototypes)[:, :-1], target,
                                          ignore_index=UNLABELLED))
    return SEMANTIC * _mean(losses, preds[0].masks)


class ContrastiveCriterion(nn.Module):
    """Click <-> description terms of one scene, with the learnable scale (key
    `contrastive_criterion.logit_scale` in an official checkpoint)."""

    def __init__(self):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))

    def forward(self, clicks: OfficialPredictions, texts: OfficialPredictions,
                click_rows: torch.Tensor, text_rows: torch.Tensor, things: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(contrastive, ranking, class distillation) losses; texts whose object has no click
        are left out."""
        pairs = torch.nonzero(click_rows[None, :] == text_rows[:, None])
        text_index, click_index = pairs[:, 0], pairs[:, 1]
        contrastive, ranking = contrastive_and_ranking(
            F.normalize(clicks.queries[click_index], dim=-1),
            F.normalize(texts.queries[text_index], dim=-1), self.logit_scale)
        classes = class_distillation(texts.class_logits(things)[text_index],
                                     clicks.class_logits(things)[click_index])
        return contrastive, ranking, classes


class OfficialCriterion(nn.Module):
    """Every loss of the official recipe over a batch; `lambda_inter` scales the distillation,
    contrastive, ranking and class distillation terms (0.1 in the released config);
    `distillation` / `contrastive` false leave out the first / the other three (the paper's
    components ablation)."""

    def __init__(self, lambda_inter: float = 0.1, distillation: bool = True,
                 contrastive: bool = True):
        super().__init__()
        self.lambda_inter = lambda_inter
        self.distillation, self.contrastive = distillation, contrastive  # the ablation's terms
        self.contrastive_criterion = ContrastiveCriterion()

    def forward(self, outputs: list[OfficialSceneOutput], targets: list[OfficialTargets],
                prototypes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss terms and their sum ('total'); `prototypes` (20, P, D) are the ScanNet20 class
        prototypes (the instance classifier reads the 18 thing classes)."""
        things = prototypes[THINGS_FROM:]
        generics = [o.generic_superpoints for o in outputs]
        layers = len(outputs[0].layers)
        losses: dict[str, torch.Tensor] = {}
        for layer in range(layers):
            last = layer == layers - 1
            generic = [o.part("generic", layer) for o in outputs]
            terms, matches = generic_layer_losses(generic, targets, generics, things, last)
            for key, value in terms.items():
                losses[key] = losses.get(key, 0) + value
            for kind, rows in (("click", [t.click_rows for t in targets]),
                               ("text", [t.text_rows for t in targets])):
                parts = [o.part(kind, layer) for o in outputs]
                loss = prompt_layer_loss(parts, [t.masks[r] for t, r in zip(targets, rows)],
                                         [t.labels[r] for t, r in zip(targets, rows)], things,
                                         last)
                losses[kind] = losses.get(kind, 0) + PROMPT * loss
        like = outputs[0].layers[-1].masks
        losses["semantic"] = semantic_loss([o.part("generic") for o in outputs], targets,
                                           generics, prototypes)
        distill, contrastive, ranking, classes = [], [], [], []
        for out, t, (rows, cols) in zip(outputs, targets, matches):
            clicks, texts = out.part("click"), out.part("text")
            term = click_distillation(out.part("generic").masks, clicks.masks, rows, cols,
                                      t.click_rows) if self.distillation else None
            if term is not None:
                distill.append(term)
            if self.contrastive and len(t.text_rows) and \
                    bool((t.click_rows[None] == t.text_rows[:, None]).any()):
                c, r, k = self.contrastive_criterion(clicks, texts, t.click_rows, t.text_rows,
                                                     things)
                contrastive.append(c)
                ranking.append(r)
                classes.append(k)
        for key, values in (("distill", distill), ("contrastive", contrastive),
                            ("ranking", ranking), ("class_distill", classes)):
            losses[key] = self.lambda_inter * _mean(values, like)
        losses["total"] = sum(losses.values())
        return losses
