"""UniSeg3D's network (`UniSeg3D` of the released code, inference and query layout).

Points -> the shared sparse UNet with the official settings (`OFFICIAL_GRID`, BatchNorm eps
1e-4) -> superpoint features (C = `channels[0]`, 32 in the paper). Queries, in this order:

- generic: superpoint features + `type_embedding[2]`; every superpoint, in order, at test (the
  semantic result reads query i as superpoint i); a random 50-100 % (at most `max_queries`)
  in training, unsorted, as `_select_queries` draws them;
- click: the feature of the superpoint holding the click + `type_embedding[1]`;
- text: the CLIP end-token feature through `lang.Mlp` + `type_embedding[0]`.

They go through the decoder with the interaction mask; `pred_iou_proj` (a 3-layer MLP on
out_norm(query)) predicts each mask's IoU at every step. The fixed CLIP class prototypes of the
20 ScanNet classes (`class_prototypes`, (20, P, D), from `scannet_cls_embedding.pth`) are a
buffer, so they travel with a uniseg3d checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from uniseg3d.config import ModelConfig
from uniseg3d.datasets.classes import scannet20
from uniseg3d.model.backbone import OFFICIAL_GRID, SparseUNet
from uniseg3d.model.official.decoder import OfficialDecoder, OfficialPredictions, interaction_mask
from uniseg3d.model.official.language import LanguageModule, clip_text_config
from uniseg3d.model.stopwatch import NO_TIMING
from uniseg3d.model.uniseg3d import SceneInput, backbone_features

TEXT, CLICK, GENERIC = 0, 1, 2  # rows of the official type embedding
OFFICIAL_BN_EPS = 1e-4
PAPER_TEXT_MODEL = "convnext_large_d_320"


@dataclass
class OfficialSceneOutput:
    """Per-step predictions of one scene, with the query layout."""

    layers: list[OfficialPredictions]
    generic_superpoints: torch.Tensor
    num_clicks: int
    num_texts: int

    @property
    def num_generic(self) -> int:
        return len(self.generic_superpoints)

    def part(self, name: str, layer: int = -1) -> OfficialPredictions:
        g, c = self.num_generic, self.num_clicks
        rows = {"generic": slice(0, g), "click": slice(g, g + c), "text": slice(g + c, None)}
        return self.layers[layer].select(rows[name])


class OfficialUniSeg3D(nn.Module):
    recipe = "official"

    def __init__(self, config: ModelConfig, text_model: str = PAPER_TEXT_MODEL,
                 prototypes_per_class: int = 1, device: str = "cpu"):
        super().__init__()
        self.config = config
        self.text_model = text_model
        channels = config.channels[0]
        embed_dim = clip_text_config(text_model)["embed_dim"]
        self.backbone = SparseUNet(6, config.channels, config.blocks, config.voxel_size, device,
                                   OFFICIAL_GRID, OFFICIAL_BN_EPS)
        self.type_embedding = nn.Embedding(3, channels)
        self.decoder = OfficialDecoder(channels, embed_dim, config.d_model, config.heads,
                                       config.ffn, config.layers)
        self.lang = LanguageModule(text_model, channels)
        self.pred_iou_proj = nn.Sequential(
            nn.Linear(config.d_model, config.d_model), nn.ReLU(),
            nn.Linear(config.d_model, config.d_model), nn.ReLU(), nn.Linear(config.d_model, 1))
        self.register_buffer("class_prototypes", torch.zeros(
            len(scannet20().names), prototypes_per_class, embed_dim))

    def generic_queries(self, num_superpoints: int, generator: torch.Generator | None
                        ) -> torch.Tensor:
        if not self.training:
            return torch.arange(num_superpoints)
        low = self.config.min_query_ratio
        ratio = (1 - low) * torch.rand((), generator=generator).item() + low
        count = min(int(ratio * num_superpoints), self.config.max_queries)
        return torch.randperm(num_superpoints, generator=generator)[:count]

    def text_queries(self, scene: SceneInput) -> torch.Tensor:
        """(T, C) text query inputs from the end-token features the encoder left in
        `texts.tokens[:, 0]` (`OfficialTextEncoder.encode_tokens`)."""
        if not len(scene.texts):
            return self.type_embedding.weight.new_zeros(0, self.type_embedding.embedding_dim)
        return self.lang.Mlp(scene.texts.tokens[:, 0])

    def superpoint_features(self, scenes: list[SceneInput], stopwatch=NO_TIMING
                            ) -> list[torch.Tensor]:
        return backbone_features(self.backbone, scenes, stopwatch)

    def forward(self, scenes: list[SceneInput], generator: torch.Generator | None = None,
                stopwatch=NO_TIMING, features: list[torch.Tensor] | None = None
                ) -> list[OfficialSceneOutput]:
        """Predictions of every scene; `features` (from `superpoint_features`) skips the
        backbone."""
        if features is None:
            features = self.superpoint_features(scenes, stopwatch)
        kind = self.type_embedding.weight
        outputs = []
        with stopwatch("decoder"):
            for scene, sp_features in zip(scenes, features):
                generic = self.generic_queries(len(sp_features), generator).to(sp_features.device)
                clicks = scene.superpoints[scene.click_points]
                queries = torch.cat([sp_features[generic] + kind[GENERIC],
                                     sp_features[clicks] + kind[CLICK],
                                     self.text_queries(scene) + kind[TEXT]])
                mask = interaction_mask(len(generic), len(clicks) + len(scene.texts),
                                        queries.device)
                layers = [replace(p, iou=self.pred_iou_proj(p.queries)[:, 0])
                          for p in self.decoder(sp_features, queries, mask)]
                outputs.append(OfficialSceneOutput(layers, generic, len(clicks),
                                                   len(scene.texts)))
        return outputs
