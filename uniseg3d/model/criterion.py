"""UniSeg3D losses: one matcher and one set of mask losses for every query type.

Generic queries are matched to object and stuff segments by Hungarian matching (scipy's
`linear_sum_assignment`) on class + BCE + Dice costs; click and text queries know their target.
Switches (`loss.*`) take the released code's choices instead: `matcher: sparse` (each object's
cheapest query among those seeded inside it), `stuff_targets: false` (things only),
`layer_reduction: sum` (summed over decoder outputs, not averaged). Per layer: CE (no-object
weight 0.1), BCE, Dice and the IoU-head MSE; prompt losses are scaled
by `prompt_weight` (click queries: the positive ones, each against its object); the clicked
objects' combined logits (`model.click_objects`) by a per-superpoint cross-entropy over
background and objects, scaled by `click_objects`; matched generic queries' embeddings are
pulled toward their class-name embedding (1 - cosine, scaled by `align`). The superpoint
semantic head: cross-entropy against each superpoint's majority class, scaled by `semantic`.
Inter-task terms on the last layer, scaled by `lambda_inter`: distillation click -> generic on
the top 10 % superpoints by click confidence (`loss.distillation`), click -> referring on class
probabilities, and a symmetric InfoNCE between click and text queries of the same object plus a
ranking hinge (these two: `loss.contrastive`). `loss.inter_forms: official` computes the three
in the released forms instead (`model.inter_task`: logit-ranked distillation, BCE class
distillation, the learnable-scale contrastive loss plus the summed ranking loss, on ours' unit
query embeddings), reported under the same three keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from uniseg3d.config import LossWeights
from uniseg3d.model.click_objects import number_of_objects, object_scores
from uniseg3d.model.inter_task import (LOGIT_SCALE_INIT, class_distillation, click_distillation,
                                      contrastive_and_ranking)
from uniseg3d.model.decoder import QueryPredictions
from uniseg3d.model.targets import STUFF_IDS, SceneTargets
from uniseg3d.model.uniseg3d import SceneOutput

SPARSE_INF = 1e8  # the sparse matcher's cost outside an object (UniSeg3D's `SparseMatcher`)


def pairwise_mask_costs(logits: torch.Tensor, targets: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q, S) mean BCE and Dice costs between every predicted mask and every target mask."""
    m = logits.shape[1]
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    bce = (pos @ targets.T + neg @ (1 - targets).T) / m
    prob = logits.sigmoid()
    dice = 1 - (2 * prob @ targets.T + 1) / (prob.sum(1)[:, None] + targets.sum(1)[None] + 1)
    return bce, dice


def mask_losses(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean BCE and Dice over aligned rows (prediction i vs target i)."""
    if len(logits) == 0:
        zero = logits.sum() * 0
        return zero, zero
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    prob = logits.sigmoid()
    dice = 1 - (2 * (prob * targets).sum(1) + 1) / (prob.sum(1) + targets.sum(1) + 1)
    return bce, dice.mean()


def mask_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of each binarised predicted mask with its aligned target (no gradient)."""
    pred = (logits.detach() > 0).float()
    inter = (pred * targets).sum(1)
    union = pred.sum(1) + targets.sum(1) - inter
    return inter / union.clamp_min(1)


@torch.no_grad()
def sparse_match(cost: torch.Tensor, allowed: torch.Tensor, topk: int = 1
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(query rows, target columns) of `SparseMatcher`: for every target the `topk` queries of
    lowest `cost` (Q, G) among those `allowed` (G, Q); costs equal to the (topk + 1)-th lowest
    are not matched (the code's strict `<`)."""
    empty = torch.zeros(0, dtype=torch.long, device=cost.device)
    if cost.shape[1] == 0 or cost.shape[0] == 0:
        return empty, empty
    cost = torch.where(allowed.T, cost, torch.full_like(cost, SPARSE_INF))
    if len(cost) > topk:
        bound = cost.topk(topk + 1, dim=0, largest=False).values[-1:]
    else:  # fewer queries than topk + 1: every allowed one
        bound = torch.full_like(cost[:1], SPARSE_INF)
    ids = torch.argwhere(cost < bound)
    return ids[:, 0], ids[:, 1]


@torch.no_grad()
def match_cost(pred: QueryPredictions, class_logits: torch.Tensor, masks: torch.Tensor,
               labels: torch.Tensor, w: LossWeights) -> torch.Tensor:
    """(Q, S) matching cost of every query against every target: class + BCE + Dice."""
    bce, dice = pairwise_mask_costs(pred.masks.float(), masks)
    return w.ce * -class_logits.softmax(-1)[:, labels] + w.bce * bce + w.dice * dice


@torch.no_grad()
def hungarian_match(pred: QueryPredictions, class_logits: torch.Tensor, masks: torch.Tensor,
                    labels: torch.Tensor, w: LossWeights) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimal (query rows, target rows) under class + BCE + Dice cost."""
    if len(labels) == 0 or len(pred.masks) == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    rows, cols = linear_sum_assignment(match_cost(pred, class_logits, masks, labels, w)
                                       .cpu().numpy())
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)


class Criterion(nn.Module):
    """The `ours` losses of a batch; with `loss.inter_forms: official` it holds the released
    contrastive loss's learnable scale (trained, checkpointed)."""

    def __init__(self, weights: LossWeights, num_classes: int):
        super().__init__()
        self.w = weights
        self.num_classes = num_classes
        if weights.inter_forms == "official":
            self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))

    def _ce(self, class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weight = torch.ones(self.num_classes + 1, device=class_logits.device)
        weight[-1] = self.w.no_object
        return F.cross_entropy(class_logits, labels, weight=weight, ignore_index=-1)

    def _query_losses(self, pred: QueryPredictions, class_logits: torch.Tensor,
                      masks: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """CE + BCE + Dice + IoU for queries aligned with their target masks/labels."""
        bce, dice = mask_losses(pred.masks, masks)
        iou = F.mse_loss(pred.iou.sigmoid(), mask_iou(pred.masks, masks)) if len(masks) else bce * 0
        ce = self._ce(class_logits, labels) if (labels >= 0).any() else bce * 0
        return self.w.ce * ce + self.w.bce * bce + self.w.dice * dice + self.w.iou * iou

    def generic_targets(self, t: SceneTargets) -> torch.Tensor:
        """The rows generic queries must find: things and stuff (`stuff_targets`), or things."""
        if self.w.stuff_targets:
            return t.generic
        return t.generic[~torch.isin(t.labels[t.generic], torch.tensor(STUFF_IDS))]

    def generic_loss(self, pred: QueryPredictions, class_embeddings: torch.Tensor,
                     t: SceneTargets, seeds: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        class_logits = pred.class_logits(class_embeddings)
        targets = self.generic_targets(t)
        masks, labels = t.masks[targets], t.labels[targets]
        if self.w.matcher == "sparse":
            rows, cols = sparse_match(match_cost(pred, class_logits, masks, labels, self.w),
                                      masks[:, seeds] > 0)
        else:
            rows, cols = hungarian_match(pred, class_logits, masks, labels, self.w)
        class_target = torch.full((len(pred.masks),), self.num_classes, dtype=torch.long,
                                  device=class_logits.device)
        class_target[rows] = labels[cols]
        bce, dice = mask_losses(pred.masks[rows], masks[cols])
        iou = F.mse_loss(pred.iou[rows].sigmoid(), mask_iou(pred.masks[rows], masks[cols])) \
            if len(rows) else bce * 0
        loss = (self.w.ce * self._ce(class_logits, class_target) + self.w.bce * bce
                + self.w.dice * dice + self.w.iou * iou
                + self.w.align * self.alignment(pred.embeddings[rows], labels[cols],
                                                class_embeddings))
        return loss, rows, targets[cols]

    @staticmethod
    def alignment(embeddings: torch.Tensor, labels: torch.Tensor,
                  class_embeddings: torch.Tensor) -> torch.Tensor:
        """Mean 1 - cosine between matched queries' embeddings and their class-name
        embeddings: keeps queries on the text manifold, so that names never trained on score
        as their text is close to the trained ones."""
        valid = labels >= 0
        if not valid.any():
            return embeddings.sum() * 0
        cosine = (embeddings[valid] * class_embeddings[labels[valid]]).sum(-1)
        return (1 - cosine).mean()

    def scene_losses(self, out: SceneOutput, t: SceneTargets, class_embeddings: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
        losses = {"generic": 0.0, "click": 0.0, "text": 0.0, "click_objects": 0.0}
        positive = t.click_segments >= 0
        for layer in range(len(out.layers)):
            generic = out.part("generic", layer)
            loss, rows, segments = self.generic_loss(generic, class_embeddings, t,
                                                     out.generic_superpoints)
            losses["generic"] = losses["generic"] + loss
            clicks = out.part("click", layer)
            prompts = {"click": (clicks.select(positive), t.click_segments[positive]),
                       "text": (out.part("text", layer), t.text_segments)}
            for kind, (pred, seg) in prompts.items():
                if len(seg):
                    losses[kind] = losses[kind] + self.w.prompt_weight * self._query_losses(
                        pred, pred.class_logits(class_embeddings), t.masks[seg], t.labels[seg])
            losses["click_objects"] = losses["click_objects"] + self.w.click_objects * \
                self.click_object_loss(clicks.masks, out.click_objects, t)
        outputs = len(out.layers) if self.w.layer_reduction == "mean" else 1
        losses = {k: torch.as_tensor(v) / outputs for k, v in losses.items()}
        logits, described = out.described_semantic_logits(class_embeddings)
        target = t.semantic[described]
        losses["semantic"] = self.w.semantic * F.cross_entropy(
            logits, target, ignore_index=-1) if (target >= 0).any() else logits.sum() * 0
        losses.update(self.inter_task_losses(out, t, class_embeddings, rows, segments))
        return losses

    @staticmethod
    def click_object_loss(click_logits: torch.Tensor, objects: torch.Tensor, t: SceneTargets
                          ) -> torch.Tensor:
        """Cross-entropy of each superpoint's assignment among the background and the clicked
        objects, from the logits `model.click_objects` combines (an object's: the maximum over
        its click queries; the background's: over the negative clicks, floored at 0): the
        superpoint's target is the object whose segment covers it, else the background."""
        count = number_of_objects(objects)
        if not count:
            return click_logits.sum() * 0
        logits, background = object_scores(click_logits, objects)
        first_click = [int(torch.nonzero(objects == k)[0]) for k in range(count)]
        covered = t.masks[t.click_segments[first_click]] > 0  # (K, M)
        target = torch.where(covered.any(0), covered.float().argmax(0) + 1, 0)
        return F.cross_entropy(torch.cat([background[None], logits]).T, target)

    def inter_task_losses(self, out: SceneOutput, t: SceneTargets, class_embeddings: torch.Tensor,
                          generic_rows: torch.Tensor, generic_segments: torch.Tensor
                          ) -> dict[str, torch.Tensor]:
        """Distillation and contrastive terms on the last layer, scaled by lambda."""
        generic, click, text = out.part("generic"), out.part("click"), out.part("text")
        zero = generic.masks.sum() * 0
        distill, referring, contrast = zero, zero, zero
        # click -> generic: the generic query matched to the clicked object mimics the click
        # mask on the superpoints where the click query is most confident
        match = {int(s): int(r) for r, s in zip(generic_rows, generic_segments)}
        pairs = [(c, match[int(s)]) for c, s in enumerate(t.click_segments) if int(s) in match
                 and int(s) >= 0]
        if pairs and self.w.distillation and self.w.inter_forms == "official":
            c_idx, g_idx = (torch.tensor(x) for x in zip(*pairs))
            segments = t.click_segments[c_idx]
            term = click_distillation(generic.masks, click.masks[c_idx], g_idx, segments,
                                      segments)
            distill = zero if term is None else term
        elif pairs and self.w.distillation:
            c_idx, g_idx = (torch.tensor(x) for x in zip(*pairs))
            teacher = click.masks[c_idx].detach().sigmoid()
            confidence = (teacher - 0.5).abs()
            top = max(1, int(self.w.distill_top * teacher.shape[1]))
            chosen = confidence.topk(top, dim=1).indices
            distill = F.binary_cross_entropy_with_logits(
                generic.masks[g_idx].gather(1, chosen), teacher.gather(1, chosen))
        # click <-> text of the same object (its first click)
        click_of = {}
        for c, s in enumerate(t.click_segments.tolist()):
            if s >= 0:
                click_of.setdefault(s, c)
        pairs = [(click_of[int(s)], i) for i, s in enumerate(t.text_segments) if int(s) in click_of]
        if pairs and self.w.contrastive and self.w.inter_forms == "official":
            c_idx, t_idx = (torch.tensor(x) for x in zip(*pairs))
            contrast, ranking = contrastive_and_ranking(click.embeddings[c_idx],
                                                        text.embeddings[t_idx], self.logit_scale)
            contrast = contrast + ranking
            referring = class_distillation(text.class_logits(class_embeddings)[t_idx],
                                           click.class_logits(class_embeddings)[c_idx])
        elif pairs and self.w.contrastive:
            c_idx, t_idx = (torch.tensor(x) for x in zip(*pairs))
            click_prob = click.class_logits(class_embeddings)[c_idx].detach().softmax(-1)
            text_logp = text.class_logits(class_embeddings)[t_idx].log_softmax(-1)
            referring = F.kl_div(text_logp, click_prob, reduction="batchmean")
            contrast = self.contrastive(click.embeddings, text.embeddings[t_idx], c_idx)
        return {"distill": self.w.lambda_inter * distill,
                "referring_distill": self.w.lambda_inter * referring,
                "contrastive": self.w.lambda_inter * contrast}

    def contrastive(self, clicks: torch.Tensor, texts: torch.Tensor, positive: torch.Tensor
                    ) -> torch.Tensor:
        """Symmetric InfoNCE (text -> its object's click, click -> its paired text, other texts
        of the same object masked out) plus a ranking hinge: each text must be closer to its
        click than to any other click by `rank_margin`."""
        sim = texts @ clicks.T  # (P, Kc)
        nce_t = F.cross_entropy(sim / self.w.temperature, positive)
        pair_sim = sim[:, positive].T  # (P, P): click of pair i vs text of pair j
        same_object = positive[:, None] == positive[None, :]
        eye = torch.eye(len(positive), dtype=torch.bool)
        pair_sim = pair_sim.masked_fill(same_object & ~eye, float("-inf"))
        nce_c = F.cross_entropy(pair_sim / self.w.temperature, torch.arange(len(positive)))
        pos = sim.gather(1, positive[:, None])[:, 0]
        negatives = sim.masked_fill(F.one_hot(positive, sim.shape[1]).bool(), float("-inf"))
        hardest = negatives.max(1).values
        rank = F.relu(self.w.rank_margin - pos + hardest).where(torch.isfinite(hardest),
                                                                torch.zeros_like(pos)).mean()
        return (nce_t + nce_c) / 2 + rank

    def forward(self, outputs: list[SceneOutput], targets: list[SceneTargets],
                class_embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss terms averaged over scenes; 'total' is their sum."""
        per_scene = [self.scene_losses(o, t, class_embeddings) for o, t in zip(outputs, targets)]
        losses = {k: torch.stack([s[k] for s in per_scene]).mean() for k in per_scene[0]}
        losses["total"] = sum(losses.values())
        return losses
