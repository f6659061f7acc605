"""UniSeg3D: the sparse UNet backbone, the unified decoder and the superpoint semantic head,
one forward for all six tasks.

The semantic head is our departure from the paper, which reads semantic segmentation from its
decoder's queries: every superpoint gets an embedding in the text space and takes the class
whose name embedding is nearest (cosine), so any class list works as for the queries. Its
per-superpoint cross-entropy supervises every superpoint at every step, which is what lets the
small CPU schedules learn semantic (and panoptic stuff) labels; reading them from the generic
queries reached a semantic mIoU of 0.17 after the default 20-epoch synthetic run. The model
keeps the log class frequencies of the head's training targets (`semantic_log_prior`), which
post-processing subtracts from the head's logits (logit adjustment, Menon et al., ICLR 2021):
cross-entropy on imbalanced classes learns p(class | superpoint) under the training prior, and
mIoU weighs every class alike. `model.switches.semantic_head: false` reads semantic classes
the paper's way instead: the same head on the last state of the generic query seeded at each
superpoint (every superpoint seeds one at test).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from uniseg3d.config import ModelConfig
from uniseg3d.datasets.classes import scannet20
from uniseg3d.model.backbone import SparseUNet, point_features, scatter_mean
from uniseg3d.model.decoder import Clicks, GenericPass, QueryPredictions, UnifiedDecoder
from uniseg3d.model.stopwatch import NO_TIMING
from uniseg3d.model.text_encoder import EncodedTexts


@dataclass
class SceneInput:
    """One scene as tensors: points, superpoints and prompts."""

    coords: torch.Tensor  # (N, 3) float32
    colors: torch.Tensor  # (N, 3) uint8
    superpoints: torch.Tensor  # (N,) int64, contiguous
    click_points: torch.Tensor  # (Kc,) int64 point index of each click
    texts: EncodedTexts  # Kt descriptions: embeddings and token features
    click_objects: torch.Tensor | None = None  # (Kc,) object of each click, -1 = negative;
    #                                            None: every click starts an object of its own

    def objects_of_clicks(self) -> torch.Tensor:
        if self.click_objects is None:
            return torch.arange(len(self.click_points), device=self.click_points.device)
        return self.click_objects

    def clicks(self) -> Clicks:
        """The decoder's click prompts: superpoint, position relative to the scene's centre,
        object."""
        centre = self.coords.mean(0)
        return Clicks(self.superpoints[self.click_points],
                      self.coords[self.click_points] - centre, self.objects_of_clicks())


@dataclass
class SceneOutput:
    """Per-layer predictions of one scene, with the query layout."""

    layers: list[QueryPredictions]
    generic_superpoints: torch.Tensor  # superpoint each generic query started from
    click_objects: torch.Tensor  # (Kc,) object of each click query, -1 = negative
    num_texts: int
    semantic_embeddings: torch.Tensor  # (S, text_dim) unit semantic embeddings of superpoints
    semantic_scale: torch.Tensor  # scalar temperature of the semantic classifier
    semantic_superpoints: torch.Tensor  # (S,) the superpoint of each semantic embedding

    def described_semantic_logits(self, class_embeddings: torch.Tensor
                                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """(S, C) class logits of the superpoints that have a semantic embedding (every one
        with the semantic head; the seeds of generic queries without it), and which they
        are."""
        logits = self.semantic_embeddings @ class_embeddings.T * self.semantic_scale
        return logits, self.semantic_superpoints

    def semantic_logits(self, class_embeddings: torch.Tensor) -> torch.Tensor:
        """(M, C) class logits of every superpoint against `class_embeddings` (unit rows);
        zero for a superpoint without a semantic embedding (beyond `max_queries` at test when
        they come from the generic queries)."""
        logits, rows = self.described_semantic_logits(class_embeddings)
        if len(rows) == self.layers[-1].masks.shape[1]:
            return logits[torch.argsort(rows)]
        full = logits.new_zeros(self.layers[-1].masks.shape[1], logits.shape[1])
        full[rows] = logits
        return full

    @property
    def num_generic(self) -> int:
        return len(self.generic_superpoints)

    @property
    def num_clicks(self) -> int:
        return len(self.click_objects)

    def part(self, name: str, layer: int = -1) -> QueryPredictions:
        """The generic, click or text queries of one layer."""
        g, c = self.num_generic, self.num_clicks
        rows = {"generic": slice(0, g), "click": slice(g, g + c), "text": slice(g + c, None)}
        return self.layers[layer].select(rows[name])


def superpoint_means(scene: SceneInput, num_superpoints: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, 3) mean colour (RGB/127.5 - 1) and (M, 3) mean point, relative to the scene's mean
    point, of every superpoint: the backbone's input features averaged per superpoint."""
    means = scatter_mean(point_features(scene.coords, scene.colors), scene.superpoints,
                         num_superpoints)
    return means[:, :3], means[:, 3:]


def backbone_features(backbone: SparseUNet, scenes: list[SceneInput], stopwatch=NO_TIMING
                      ) -> list[torch.Tensor]:
    """The backbone's (M_b, C) superpoint features of each scene (prompts play no part)."""
    return backbone([s.coords for s in scenes], [s.colors for s in scenes],
                    [s.superpoints for s in scenes], stopwatch)


class SemanticHead(nn.Module):
    """Superpoint features -> unit embeddings in the text space, with a learned temperature."""

    def __init__(self, in_channels: int, hidden: int, text_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_channels, hidden), nn.LayerNorm(hidden), nn.ReLU(),
                                 nn.Linear(hidden, text_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.normalize(self.mlp(features), dim=-1), self.logit_scale.exp().clamp(max=100.0)


class UniSeg3D(nn.Module):
    def __init__(self, config: ModelConfig, text_dim: int, device: str = "cpu"):
        super().__init__()
        self.config = config
        self.backbone = SparseUNet(6, config.channels, config.blocks, config.voxel_size, device)
        self.decoder = UnifiedDecoder(self.backbone.out_channels, text_dim, config.d_model,
                                      config.heads, config.ffn, config.layers, config.switches)
        if config.switches.semantic_head:  # on every superpoint's backbone feature
            self.semantic_head = SemanticHead(self.backbone.out_channels, config.d_model,
                                              text_dim)
        else:  # on the generic queries' last states, each read as its seed superpoint's
            self.semantic_head = SemanticHead(config.d_model, config.d_model, text_dim)
        # (C,) ScanNet20 log class frequencies of the training targets; zeros: no adjustment
        self.register_buffer("semantic_log_prior", torch.zeros(len(scannet20().names)))

    def generic_queries(self, num_superpoints: int, generator: torch.Generator | None
                        ) -> torch.Tensor:
        """Superpoints that seed generic queries: a random 50-100 % in training, all at test;
        at most `max_queries` either way."""
        cap = self.config.max_queries
        if not self.training:
            return torch.arange(min(num_superpoints, cap))
        low = self.config.min_query_ratio
        ratio = low + (1 - low) * torch.rand((), generator=generator).item()
        count = max(1, min(cap, round(ratio * num_superpoints)))
        return torch.randperm(num_superpoints, generator=generator)[:count].sort().values

    def superpoint_features(self, scenes: list[SceneInput], stopwatch=NO_TIMING
                            ) -> list[torch.Tensor]:
        return backbone_features(self.backbone, scenes, stopwatch)

    def generic_pass(self, scene: SceneInput, features: torch.Tensor,
                     generator: torch.Generator | None = None) -> GenericPass:
        """The generic queries of one scene decoded from its superpoint `features`: what every
        prompt on the scene reads (no prompt changes it)."""
        memory = self.decoder.scene_memory(features, *superpoint_means(scene, len(features)))
        generic = self.generic_queries(len(features), generator).to(features.device)
        return self.decoder.decode_generic(memory, generic)

    def scene_output(self, scene: SceneInput, features: torch.Tensor, generic: GenericPass
                     ) -> SceneOutput:
        """Every query's predictions: the generic pass's and the scene's prompts' rows."""
        clicks = scene.clicks()
        prompts = self.decoder.decode_prompts(generic, clicks, scene.texts)
        layers = [QueryPredictions.cat([g, p]) for g, p in zip(generic.layers, prompts)]
        if self.config.switches.semantic_head:
            semantic = (*self.semantic_head(features),
                        torch.arange(len(features), device=features.device))
        else:
            semantic = (*self.semantic_head(generic.final), generic.seeds)
        return SceneOutput(layers, generic.seeds, clicks.objects, len(scene.texts), *semantic)

    def forward(self, scenes: list[SceneInput], generator: torch.Generator | None = None,
                stopwatch=NO_TIMING, features: list[torch.Tensor] | None = None,
                generic: list[GenericPass] | None = None, refine=None) -> list[SceneOutput]:
        """Predictions of every scene; `features` (from `superpoint_features`) skips the
        backbone, and `generic` (from `generic_pass`) also the generic queries, e.g. when only
        the prompts of a scene change; `refine(index, scene, features, generic)` returns the
        scene with other prompts once its generic pass is done (training's corrective clicks,
        here so that a DDP-wrapped model runs them inside its forward)."""
        if features is None:
            features = self.superpoint_features(scenes, stopwatch)
        outputs = []
        with stopwatch("decoder"):
            for index, (scene, sp_features) in enumerate(zip(scenes, features)):
                passed = self.generic_pass(scene, sp_features, generator) if generic is None \
                    else generic[index]
                if refine is not None:
                    scene = refine(index, scene, sp_features, passed)
                outputs.append(self.scene_output(scene, sp_features, passed))
        return outputs
