"""The released code's inter-task loss forms on plain tensors, shared by both recipes' criteria.

`official` trains with them (`model.official.criterion`); `ours` trains with them under
`loss.inter_forms: official` (`model.criterion`) in place of its own forms (confidence-ranked
distillation, KL class distillation, InfoNCE + hinge ranking):

- click -> generic distillation (`IntrinsicPointAndQuery`): on the superpoints where some click's
  logit is among the highest 10 %, the generic query matched to that click's object learns the
  click's probability (BCE of sigmoids, teacher detached);
- click <-> text contrastive loss: the both-way cross-entropy of `logit_scale` x cosine between
  each description and its object's click (the scale learnable, used as is);
- ranking loss: each text nearer its own click than any other click's, margin 0, summed;
- click -> text class distillation: BCE of the text's class sigmoids against the click's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DISTILL_RATIO = 0.1
LOGIT_SCALE_INIT = math.log(1 / 0.07)  # the contrastive scale's initial value, not exponentiated


def click_distillation(generic_masks: torch.Tensor, click_masks: torch.Tensor,
                       rows: torch.Tensor, cols: torch.Tensor, click_rows: torch.Tensor
                       ) -> torch.Tensor | None:
    """The distillation of (Q, M) generic mask logits from (K, M) click mask logits: generic
    `rows` matched to targets `cols`, click k aimed at target `click_rows[k]`. None where the
    code skips the scene: no match, or not as many matched targets as clicks."""
    if len(cols) < 1 or len(cols) != len(click_rows):
        return None
    queries = rows[torch.argsort(cols)]
    clicks = click_masks[torch.argsort(click_rows)]
    best, which = clicks.max(0)
    count = int(DISTILL_RATIO * len(best))
    if count < 1:
        return None
    teacher, superpoints = best.topk(count)
    student = generic_masks[queries][which[superpoints], superpoints]
    return F.binary_cross_entropy(student.sigmoid(), teacher.sigmoid().detach())


def contrastive_and_ranking(refer: torch.Tensor, key: torch.Tensor, logit_scale: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(contrastive, ranking) of P paired unit rows: `refer` (clicks) and `key` (texts)."""
    labels = torch.arange(len(refer), device=refer.device)
    by_click = logit_scale * refer @ key.T
    contrastive = ((F.cross_entropy(by_click, labels, reduction="none")
                    + F.cross_entropy(by_click.T, labels, reduction="none")) / 2).mean()
    cosine = refer @ key.T
    others = ~torch.eye(len(cosine), dtype=torch.bool, device=cosine.device)
    ranking = (F.relu(cosine - cosine.diagonal()[None, :]) * others).sum()
    return contrastive, ranking


def class_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor
                       ) -> torch.Tensor:
    """BCE of the students' class sigmoids against the (detached) teachers'."""
    return F.binary_cross_entropy(student_logits.sigmoid(), teacher_logits.sigmoid().detach())
