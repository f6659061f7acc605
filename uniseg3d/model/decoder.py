"""The unified decoder: generic, click and text queries, every task from one forward.

Memory: the superpoint features projected to `d_model`, plus a Fourier encoding of each
superpoint's centroid (wavelengths 0.25-16 m, relative to the scene's centre), as in Mask3D,
plus a linear map of its mean colour. The paper's decoder (after OneFormer3D) has neither term;
on the CPU-sized backbone two alike objects get near-identical features without the first, so
neither generic nor click queries could tell them apart, and the backbone's features, trained
mostly for classes and instances, keep too little colour for descriptions that name one.

Queries: generic ones from superpoint features (a random 50-100 % of the superpoints in
training, all of them at test), one click query per click (the memory of the superpoint holding
the click, a learned positive or negative click embedding and the Fourier code of the clicked
point; several clicks may prompt one object, and negative clicks mark background), one text
query per description (its projected text embedding), each plus a learned task embedding.
Before every layer each text query reads the token features of its own description (attention
over its words), so that it can tell the object a description names from the anchors named
beside it, which one pooled sentence embedding mixes. Every layer then runs masked
cross-attention to the superpoint features (a query sees the superpoints its previous mask
covers), self-attention in which generic queries see only each other, a click query the clicks
of its own object (a negative click the other negative ones), and a text query itself and the
generic queries (the object proposals, whose features carry their positions: what a relation
such as "left of the desk" needs), and a feed-forward block. Mask, class and IoU heads run
before the first layer and after every layer.

Since no prompt reaches a generic query, the decoder runs in two passes that give what one
joint pass would: the generic queries alone (`decode_generic`, kept per layer), then the
prompts reading the kept states (`decode_prompts`). A scene open in the browser app decodes its
generic queries once, and each click or description reruns the prompt pass only.

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

from uniseg3d.config import ModelSwitches
from uniseg3d.model.text_encoder import EncodedTexts

GENERIC, CLICK, TEXT, NEGATIVE = 0, 1, 2, 3  # rows of the task embedding


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

    @staticmethod
    def cat(parts: list["QueryPredictions"]) -> "QueryPredictions":
        return QueryPredictions(*(torch.cat([getattr(p, name) for p in parts]) for name in (
            "masks", "embeddings", "no_object", "iou")), parts[0].logit_scale)

    def select(self, rows: slice | torch.Tensor) -> "QueryPredictions":
        return QueryPredictions(self.masks[rows], self.embeddings[rows], self.no_object[rows],
                                self.iou[rows], self.logit_scale)


class DecoderLayer(nn.Module):
    """Masked cross-attention, self-attention and FFN, each with residual and post-norm; the
    three steps are separate methods so that generic and prompt queries can take them apart."""

    def __init__(self, d_model: int, heads: int, ffn: int, dropout: float = 0.0):
        super().__init__()
        self.cross = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d_model, ffn), nn.ReLU(), nn.Linear(ffn, d_model))
        self.norms = nn.ModuleList([nn.LayerNorm(d_model) for _ in range(3)])

    def attend_scene(self, queries: torch.Tensor, memory: torch.Tensor, blocked: torch.Tensor
                     ) -> torch.Tensor:
        q, m = queries[None], memory[None]
        return self.norms[0](q + self.cross(q, m, m, attn_mask=blocked)[0])[0]

    def attend_queries(self, queries: torch.Tensor, keys: torch.Tensor,
                       blocked: torch.Tensor | None = None) -> torch.Tensor:
        q, k = queries[None], keys[None]
        return self.norms[1](q + self.self_attn(q, k, k, attn_mask=blocked)[0])[0]

    def feed_forward(self, queries: torch.Tensor) -> torch.Tensor:
        return self.norms[2](queries + self.ffn(queries))


def cross_attention_mask(previous: QueryPredictions) -> torch.Tensor:
    """(Q, M) True = blocked: a query sees the superpoints its previous mask covers (all of them
    when that mask is empty)."""
    blocked = previous.masks.detach().sigmoid() < 0.5
    blocked[blocked.all(1)] = False
    return blocked


@dataclass
class Clicks:
    """The clicks of one scene, one query each."""

    superpoints: torch.Tensor  # (K,) superpoint holding each click
    positions: torch.Tensor  # (K, 3) the clicked point, relative to the scene's centre
    objects: torch.Tensor  # (K,) the object each click adds to (0, 1, ...); -1 = negative

    @classmethod
    def none(cls, device=None) -> "Clicks":
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return cls(empty, torch.zeros(0, 3, device=device), empty)

    def __len__(self) -> int:
        return len(self.superpoints)


def prompt_attention_mask(num_generic: int, click_objects: torch.Tensor, num_texts: int,
                          text_sees_generic: bool = True) -> torch.Tensor:
    """(P, G + P) self-attention mask of the prompt queries (True = blocked), rows clicks then
    texts, columns generic, clicks, texts: a click query sees the clicks of its own object (the
    negative clicks: each other), a text query itself and (with `text_sees_generic`) every
    generic query, so that it can read where the objects a description names lie. Generic
    queries see only each other, so that no prompt changes them."""
    clicks = len(click_objects)
    prompts = clicks + num_texts
    blocked = torch.ones(prompts, num_generic + prompts, dtype=torch.bool,
                         device=click_objects.device)
    blocked[:clicks, num_generic:num_generic + clicks] = (click_objects[:, None]
                                                           != click_objects[None, :])
    blocked[clicks:, :num_generic] = not text_sees_generic
    texts = torch.arange(clicks, prompts, device=click_objects.device)
    blocked[texts, num_generic + texts] = False
    return blocked


@dataclass
class GenericPass:
    """The generic queries decoded on their own: they never see a prompt, so one pass serves
    every set of prompts on the scene."""

    memory: torch.Tensor  # (M, d) the decoder's superpoint memory
    seeds: torch.Tensor  # (G,) the superpoint each generic query started from
    states: list[torch.Tensor]  # per layer: the generic queries entering its self-attention
    layers: list[QueryPredictions]  # heads before the first layer and after every layer
    final: torch.Tensor  # (G, d) out_norm of the generic queries after the last layer


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
    """`switches` turn our departures off one by one: without `position_memory` neither the
    memory nor a click query has a Fourier position term, without `colour_memory` the memory
    has no colour term, without `word_attention` text queries read no token features, without
    `text_sees_generic` a text query attends to itself only (as the paper's interaction mask
    has it); the modules of a switched-off term are not built."""

    def __init__(self, in_channels: int, text_dim: int, d_model: int = 256, heads: int = 8,
                 ffn: int = 1024, layers: int = 6, switches: ModelSwitches = ModelSwitches()):
        super().__init__()
        self.switches = switches
        self.input_proj = nn.Sequential(nn.Linear(in_channels, d_model), nn.LayerNorm(d_model),
                                        nn.ReLU())
        if switches.position_memory:
            self.positions = FourierPositions(d_model)
        if switches.colour_memory:
            self.colours = nn.Linear(3, d_model)
        self.text_proj = nn.Sequential(nn.Linear(text_dim, d_model), nn.ReLU(),
                                       nn.Linear(d_model, d_model))
        self.task_embedding = nn.Embedding(4, d_model)
        self.layers = nn.ModuleList([DecoderLayer(d_model, heads, ffn) for _ in range(layers)])
        if switches.word_attention:
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

    def scene_memory(self, superpoint_features: torch.Tensor, colours: torch.Tensor,
                     centroids: torch.Tensor) -> torch.Tensor:
        """(M, d) memory: projected features + colour + Fourier position; `colours`: (M, 3)
        mean superpoint colours (RGB/127.5 - 1); `centroids`: (M, 3) superpoint centres
        relative to the scene's centre."""
        memory = self.input_proj(superpoint_features)
        if self.switches.colour_memory:
            memory = memory + self.colours(colours)
        if self.switches.position_memory:
            memory = memory + self.positions(centroids)
        return memory

    def decode_generic(self, memory: torch.Tensor, generic: torch.Tensor) -> GenericPass:
        """The generic queries (seeded at superpoint indices `generic`) through every layer."""
        queries = memory[generic] + self.task_embedding.weight[GENERIC]
        layers, states = [self.heads(queries, memory)], []
        for layer in self.layers:
            queries = layer.attend_scene(queries, memory, cross_attention_mask(layers[-1]))
            states.append(queries)
            queries = layer.feed_forward(layer.attend_queries(queries, queries))
            layers.append(self.heads(queries, memory))
        return GenericPass(memory, generic, states, layers, self.out_norm(queries))

    def click_queries(self, memory: torch.Tensor, clicks: Clicks) -> torch.Tensor:
        """A click's query: its superpoint's memory, the positive or negative click embedding
        and the Fourier code of the clicked point."""
        task = self.task_embedding.weight
        kind = torch.where(clicks.objects[:, None] >= 0, task[CLICK], task[NEGATIVE])
        queries = memory[clicks.superpoints] + kind
        if self.switches.position_memory:
            queries = queries + self.positions(clicks.positions)
        return queries

    def decode_prompts(self, generic: GenericPass, clicks: Clicks, texts: EncodedTexts
                       ) -> list[QueryPredictions]:
        """Click then text queries through every layer, reading the generic pass's states:
        the prompts' rows of what one joint pass would give."""
        memory = generic.memory
        queries = torch.cat([self.click_queries(memory, clicks),
                             self.text_proj(texts.embeddings) + self.task_embedding.weight[TEXT]])
        predictions = [self.heads(queries, memory)]
        if not len(queries):
            return predictions * (len(self.layers) + 1)
        first_text = len(clicks)
        reads_words = self.switches.word_attention and len(texts) > 0
        words = self.word_proj(texts.tokens) if reads_words else None
        blocked = prompt_attention_mask(len(generic.seeds), clicks.objects, len(texts),
                                        self.switches.text_sees_generic)
        for index, (layer, states) in enumerate(zip(self.layers, generic.states)):
            if reads_words:
                queries = torch.cat([queries[:first_text], self.word_attention[index](
                    queries[first_text:], words, texts.token_mask)])
            queries = layer.attend_scene(queries, memory, cross_attention_mask(predictions[-1]))
            queries = layer.feed_forward(layer.attend_queries(
                queries, torch.cat([states, queries]), blocked))
            predictions.append(self.heads(queries, memory))
        return predictions

    def forward(self, superpoint_features: torch.Tensor, colours: torch.Tensor,
                centroids: torch.Tensor, generic: torch.Tensor, clicks: Clicks,
                texts: EncodedTexts) -> list[QueryPredictions]:
        """Predictions of every layer (first = before any layer) for one scene, queries in the
        order generic (superpoint indices `generic`), clicks, texts (one per description)."""
        generic_pass = self.decode_generic(
            self.scene_memory(superpoint_features, colours, centroids), generic)
        prompts = self.decode_prompts(generic_pass, clicks, texts)
        return [QueryPredictions.cat([g, p]) for g, p in zip(generic_pass.layers, prompts)]
