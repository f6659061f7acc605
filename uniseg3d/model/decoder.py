"""The unified decoder: generic, click and text queries decoded together in one pass.

Memory: the superpoint features projected to `d_model`, plus a Fourier encoding of each
superpoint's centroid (wavelengths 0.25-16 m, relative to the scene's centre), as in Mask3D,
plus a linear map of its mean colour. The paper's decoder (after OneFormer3D) has neither term;
on the CPU-sized backbone two alike objects get near-identical features without the first, so
neither generic nor click queries could tell them apart, and the backbone's features, trained
mostly for classes and instances, keep too little colour for descriptions that name one.

Queries: generic ones from superpoint features (a random 50-100 % of the superpoints in
training, all of them at test), one click query per prompted object (the feature of the
superpoint holding the click), one text query per description (its projected text embedding),
each plus a learned task embedding. Before every layer each text query reads the token features
of its own description (attention over its words), so that it can tell the object a description
names from the anchors named beside it, which one pooled sentence embedding mixes. Every layer
then runs masked cross-attention to the superpoint features (a query sees the superpoints its
previous mask covers), self-attention in which generic queries see only each other, a click
query only itself, and a text query itself and the generic queries (the object proposals, whose
features carry their positions: what a relation such as "left of the desk" needs), and a
feed-forward block. Mask, class and IoU heads run before the first layer and after every layer.

Classification is by cosine similarity between a query's projection into the text-embedding
space and class-name text embeddings, so the same weights classify against any class list;
"no object" has its own logit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from uniseg3d.model.text_encoder import EncodedTexts

GENERIC, CLICK, TEXT = 0, 1, 2


@dataclass
class QueryPredictions:
    """Head outputs for all queries of one scene after one decoder layer."""

    masks: torch.Tensor  # (Q, M) mask logits over superpoints
    embeddings: torch.Tensor  # (Q, text_dim) unit query embeddings in the text space
    no_object: torch.Tensor  # (Q,) "no object" logit
    iou: torch.Tensor  # (Q,) predicted IoU of the mask with its object (logit)
    logit_scale: torch.Tensor  # scalar temperature of the cosine classifier

    def class_logits(self, class_embeddings: torch.Tensor) -> torch.Tensor:
        """(Q, C + 1) logits against `class_embeddings` (C, text_dim, unit rows); last = none."""
        cosine = self.embeddings @ class_embeddings.T
        return torch.cat([cosine * self.logit_scale, self.no_object[:, None]], 1)

    def select(self, rows: slice | torch.Tensor) -> "QueryPredictions":
        return QueryPredictions(self.masks[rows], self.embeddings[rows], self.no_object[rows],
                                self.iou[rows], self.logit_scale)


class DecoderLayer(nn.Module):
    """Masked cross-attention, self-attention and FFN, each with residual and post-norm."""

    def __init__(self, d_model: int, heads: int, ffn: int, dropout: float = 0.0):
        super().__init__()
        self.cross = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d_model, ffn), nn.ReLU(), nn.Linear(ffn, d_model))
        self.norms = nn.ModuleList([nn.LayerNorm(d_model) for _ in range(3)])

    def forward(self, queries: torch.Tensor, memory: torch.Tensor, cross_mask: torch.Tensor,
                self_mask: torch.Tensor) -> torch.Tensor:
        q, m = queries[None], memory[None]
        q = self.norms[0](q + self.cross(q, m, m, attn_mask=cross_mask)[0])
        q = self.norms[1](q + self.self_attn(q, q, q, attn_mask=self_mask)[0])
        return self.norms[2](q + self.ffn(q))[0]


def prompt_isolation_mask(num_generic: int, num_clicks: int, num_texts: int,
                          device=None) -> torch.Tensor:
    """Self-attention mask (True = blocked), queries ordered generic, clicks, texts: generic
    queries see each other only; every prompt query sees itself, and a text query also sees
    every generic query, so that it can read where the objects a description names lie."""
    total = num_generic + num_clicks + num_texts
    blocked = torch.ones(total, total, dtype=torch.bool, device=device)
    blocked[:num_generic, :num_generic] = False
    blocked[num_generic + num_clicks:, :num_generic] = False
    index = torch.arange(num_generic, total, device=device)
    blocked[index, index] = False
    return blocked


class FourierPositions(nn.Module):
    """(M, 3) positions in metres -> (M, d_model): sines and cosines at fixed wavelengths, then a
    linear layer."""

    def __init__(self, d_model: int, wavelengths: tuple[float, ...] = (
            0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)):
        super().__init__()
        self.register_buffer("frequencies", 2 * math.pi / torch.tensor(wavelengths),
                             persistent=False)
        self.proj = nn.Linear(6 * len(wavelengths), d_model)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        angles = (positions[:, :, None] * self.frequencies).flatten(1)
        return self.proj(torch.cat([angles.sin(), angles.cos()], 1))


class WordAttention(nn.Module):
    """Each text query attends to the token features of its own description (residual, norm)."""

    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, queries: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor
                ) -> torch.Tensor:
        """queries (T, d), words (T, L, d), word_mask (T, L) True = a real token."""
        read = self.attn(queries[:, None], words, words, key_padding_mask=~word_mask)[0][:, 0]
        return self.norm(queries + read)


class UnifiedDecoder(nn.Module):
    def __init__(self, in_channels: int, text_dim: int, d_model: int = 256, heads: int = 8,
                 ffn: int = 1024, layers: int = 6):
        super().__init__()
        self.input_proj = nn.Sequential(nn.Linear(in_channels, d_model), nn.LayerNorm(d_model),
                                        nn.ReLU())
        self.positions = FourierPositions(d_model)
        self.colours = nn.Linear(3, d_model)
        self.text_proj = nn.Sequential(nn.Linear(text_dim, d_model), nn.ReLU(),
                                       nn.Linear(d_model, d_model))
        self.task_embedding = nn.Embedding(3, d_model)
        self.layers = nn.ModuleList([DecoderLayer(d_model, heads, ffn) for _ in range(layers)])
        self.word_proj = nn.Sequential(nn.Linear(text_dim, d_model), nn.LayerNorm(d_model))
        self.word_attention = nn.ModuleList([WordAttention(d_model, heads)
                                             for _ in range(layers)])
        self.out_norm = nn.LayerNorm(d_model)
        self.mask_embed = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(),
                                        nn.Linear(d_model, d_model))
        self.class_proj = nn.Linear(d_model, text_dim)
        self.no_object = nn.Linear(d_model, 1)
        self.iou_head = nn.Linear(d_model, 1)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def heads(self, queries: torch.Tensor, memory: torch.Tensor) -> QueryPredictions:
        q = self.out_norm(queries)
        return QueryPredictions(
            masks=self.mask_embed(q) @ memory.T,
            embeddings=F.normalize(self.class_proj(q), dim=-1),
            no_object=self.no_object(q)[:, 0], iou=self.iou_head(q)[:, 0],
            logit_scale=self.logit_scale.exp().clamp(max=100.0))

    def forward(self, superpoint_features: torch.Tensor, colours: torch.Tensor,
                centroids: torch.Tensor, generic: torch.Tensor, click_superpoints: torch.Tensor,
                texts: EncodedTexts) -> list[QueryPredictions]:
        """Predictions of every layer (first = before any layer) for one scene; `colours`: (M, 3)
        mean superpoint colours (RGB/127.5 - 1); `centroids`: (M, 3) superpoint centres
        relative to the scene's centre.

        Query order: generic (superpoint indices `generic`), then clicks (superpoint indices
        holding each click), then texts (one per description of `texts`)."""
        memory = (self.input_proj(superpoint_features) + self.colours(colours)
                  + self.positions(centroids))
        task = self.task_embedding.weight
        queries = torch.cat([memory[generic] + task[GENERIC],
                             memory[click_superpoints] + task[CLICK],
                             self.text_proj(texts.embeddings) + task[TEXT]])
        first_text = len(generic) + len(click_superpoints)
        words = self.word_proj(texts.tokens)
        self_mask = prompt_isolation_mask(len(generic), len(click_superpoints), len(texts),
                                          queries.device)
        predictions = [self.heads(queries, memory)]
        for layer, word_attention in zip(self.layers, self.word_attention):
            if len(texts):
                queries = torch.cat([queries[:first_text], word_attention(
                    queries[first_text:], words, texts.token_mask)])
            cross_mask = predictions[-1].masks.detach().sigmoid() < 0.5
            cross_mask[cross_mask.all(1)] = False  # a query with an empty mask sees everything
            queries = layer(queries, memory, cross_mask, self_mask)
            predictions.append(self.heads(queries, memory))
        return predictions
