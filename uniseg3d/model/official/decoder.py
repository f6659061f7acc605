"""UniSeg3D's unified query decoder (`UnifiedQueryDecoder` with `sphere_cls`, `iter_pred`,
`attn_mask` and `fix_attention` on, as the released config sets them).

Keys: the superpoint features through `input_proj` (Linear, LayerNorm, ReLU); mask features
through `x_mask` (Linear, ReLU, Linear). Queries (in the backbone's channels) through
`query_proj` (Linear, ReLU, Linear). Six layers of cross-attention masked by the previous
prediction (sigmoid < 0.5; a query whose mask is empty sees everything), self-attention under
the interaction mask, and a GELU FFN, each with a residual and a LayerNorm after it. Heads run
before the first layer and after every layer, on `out_norm(query)`:

- mask logits = out_norm(q) . x_mask(superpoint);
- mask pooling: the mean mask feature over the superpoints of positive logit;
- instance class = cosine of `cls_proj(mask_pooling_proj(pooled) + out_norm(q))` with fixed
  CLIP class prototypes, the maximum over a class's prototypes, times exp(4.6052); the
  background prototype is a zero vector (logit 0) after the classes;
- semantic class (last layer only) = the same with `cls_proj_sem` / `mask_pooling_proj_sem`.

`OfficialPredictions` keeps the unit class embeddings, so that any prototypes (the 18 thing
classes, the 20 semantic ones, an open vocabulary) can be scored from the same forward.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

LOGIT_SCALE = float(torch.tensor(4.6052).exp())  # the decoder's fixed `logit_scale` buffer


def prototype_logits(embeddings: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """(Q, C + 1): scaled cosine of unit `embeddings` (Q, D) with `prototypes` (C, P, D) or
    (C, D), the maximum over each class's P prototypes, then the zero background (logit 0)."""
    if prototypes.dim() == 2:
        prototypes = prototypes[:, None]
    cosine = torch.einsum("qd,cpd->qcp", embeddings, prototypes).max(-1).values
    return torch.cat([cosine, cosine.new_zeros(len(cosine), 1)], 1) * LOGIT_SCALE


@dataclass
class OfficialPredictions:
    """Head outputs for all queries of one scene after one decoder step."""

    masks: torch.Tensor  # (Q, M) mask logits over superpoints
    class_embeddings: torch.Tensor  # (Q, D) unit instance-classifier embeddings
    semantic_embeddings: torch.Tensor | None  # (Q, D) unit semantic embeddings (last layer)
    queries: torch.Tensor  # (Q, d_model) out_norm(query): what the IoU head reads
    iou: torch.Tensor | None = None  # (Q,) predicted IoU (the model's `pred_iou_proj`)

    def class_logits(self, prototypes: torch.Tensor) -> torch.Tensor:
        return prototype_logits(self.class_embeddings, prototypes)

    def semantic_logits(self, prototypes: torch.Tensor) -> torch.Tensor:
        if self.semantic_embeddings is None:
            raise ValueError("semantic logits exist for the last decoder layer only")
        return prototype_logits(self.semantic_embeddings, prototypes)

    def select(self, rows: slice | torch.Tensor) -> "OfficialPredictions":
        semantic = None if self.semantic_embeddings is None else self.semantic_embeddings[rows]
        iou = None if self.iou is None else self.iou[rows]
        return replace(self, masks=self.masks[rows], class_embeddings=self.class_embeddings[rows],
                       semantic_embeddings=semantic, queries=self.queries[rows], iou=iou)


def interaction_mask(num_generic: int, num_prompts: int, device=None) -> torch.Tensor:
    """Self-attention mask (True = blocked), generic queries first: generic queries see only
    each other, and each prompt query (click or text) sees only itself."""
    total = num_generic + num_prompts
    blocked = torch.zeros(total, total, dtype=torch.bool, device=device)
    blocked[:num_generic, num_generic:] = True
    blocked[num_generic:, :num_generic] = True
    blocked[num_generic:, num_generic:] = ~torch.eye(num_prompts, dtype=torch.bool,
                                                     device=device)
    return blocked


class AttentionLayer(nn.Module):
    """Attention, residual, LayerNorm (the official cross- and self-attention layers alike)."""

    def __init__(self, d_model: int, heads: int, xavier: bool):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.norm = nn.LayerNorm(d_model)
        if xavier:  # the official cross-attention layer initialises its matrices so
            for parameter in self.parameters():
                if parameter.dim() > 1:
                    nn.init.xavier_uniform_(parameter)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor
                ) -> torch.Tensor:
        return self.norm(queries + self.attn(queries, keys, keys, attn_mask=mask)[0])


class FeedForward(nn.Module):
    """Linear, GELU, Linear (keys `net.0`, `net.3`: the official dropouts sit between), residual,
    LayerNorm."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Dropout(0.0),
                                 nn.Linear(hidden, d_model), nn.Dropout(0.0))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.net(x))


def _classifier(d_model: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, d_model),
                         nn.ReLU(), nn.Linear(d_model, out))


def mask_pool(features: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """(Q, d): the mean of `features` (M, d) over each query's superpoints of positive logit
    (no gradient through the mask)."""
    inside = (mask_logits.detach() > 0).to(features.dtype)
    return (inside / (inside.sum(-1, keepdim=True) + 1e-8)) @ features


class OfficialDecoder(nn.Module):
    def __init__(self, in_channels: int, embed_dim: int, d_model: int = 256, heads: int = 8,
                 ffn: int = 1024, layers: int = 6):
        super().__init__()
        self.input_proj = nn.Sequential(nn.Linear(in_channels, d_model), nn.LayerNorm(d_model),
                                        nn.ReLU())
        self.query_proj = nn.Sequential(nn.Linear(in_channels, d_model), nn.ReLU(),
                                        nn.Linear(d_model, d_model))
        self.cross_attn_layers = nn.ModuleList(
            [AttentionLayer(d_model, heads, xavier=True) for _ in range(layers)])
        self.self_attn_layers = nn.ModuleList(
            [AttentionLayer(d_model, heads, xavier=False) for _ in range(layers)])
        self.ffn_layers = nn.ModuleList([FeedForward(d_model, ffn) for _ in range(layers)])
        self.out_norm = nn.LayerNorm(d_model)
        self.x_mask = nn.Sequential(nn.Linear(in_channels, d_model), nn.ReLU(),
                                    nn.Linear(d_model, d_model))
        self.cls_proj = _classifier(d_model, embed_dim)
        self.cls_proj_sem = _classifier(d_model, embed_dim)
        self.mask_pooling_proj = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, d_model))
        self.mask_pooling_proj_sem = nn.Sequential(nn.LayerNorm(d_model),
                                                   nn.Linear(d_model, d_model))

    def heads(self, queries: torch.Tensor, mask_features: torch.Tensor, last: bool
              ) -> OfficialPredictions:
        q = self.out_norm(queries)
        masks = q @ mask_features.T
        pooled = mask_pool(mask_features, masks)
        classes = F.normalize(self.cls_proj(self.mask_pooling_proj(pooled) + q), dim=-1)
        semantic = F.normalize(self.cls_proj_sem(self.mask_pooling_proj_sem(pooled) + q),
                               dim=-1) if last else None
        return OfficialPredictions(masks, classes, semantic, q)

    def forward(self, superpoint_features: torch.Tensor, queries: torch.Tensor,
                self_mask: torch.Tensor) -> list[OfficialPredictions]:
        """Predictions before the first layer and after every layer, for one scene;
        `queries` (Q, in_channels) are the query inputs (features + type embedding)."""
        keys = self.input_proj(superpoint_features)
        mask_features = self.x_mask(superpoint_features)
        q = self.query_proj(queries)
        predictions = [self.heads(q, mask_features, last=False)]
        count = len(self.cross_attn_layers)
        for i, (cross, self_attn, ffn) in enumerate(zip(
                self.cross_attn_layers, self.self_attn_layers, self.ffn_layers)):
            cross_mask = predictions[-1].masks.detach().sigmoid() < 0.5
            cross_mask[cross_mask.all(1)] = False  # a query with an empty mask sees everything
            q = cross(q, keys, cross_mask)
            q = ffn(self_attn(q, q, self_mask))
            predictions.append(self.heads(q, mask_features, last=i == count - 1))
        return predictions
