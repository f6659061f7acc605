"""The official network: its CLIP text tower against open_clip's own `encode_text`, the query
layout and the interaction mask's consequences (generic results blind to prompts, each prompt
blind to the others), the test-time queries, and the official backbone settings."""

from __future__ import annotations

import dataclasses

import open_clip
import pytest
import torch
import torch.nn.functional as F

from uniseg3d.config import TINY_MODEL
from uniseg3d.model.official.language import ClipTextTower, OfficialTextEncoder
from uniseg3d.model.official.network import OfficialUniSeg3D
from uniseg3d.model.text_encoder import CachedTextEncoder, EncodedTexts
from uniseg3d.model.uniseg3d import SceneInput

SMALL_CLIP = "ViT-S-32-alt"  # the smallest built-in open_clip text tower (width 256, 10 layers)


def tower_of(model) -> ClipTextTower:
    """open_clip's text tower moved into the official layout (`lang.text_encoder.*`)."""
    config = model.transformer
    tower = ClipTextTower(config.width, config.layers, model.transformer.resblocks[0].attn
                          .num_heads, model.vocab_size, model.context_length,
                          model.text_projection.shape[1])
    tower.text_token_embedding.load_state_dict(model.token_embedding.state_dict())
    tower.text_transformer.load_state_dict(model.transformer.state_dict())
    tower.text_ln_final.load_state_dict(model.ln_final.state_dict())
    with torch.no_grad():
        tower.text_pe.copy_(model.positional_embedding)
        tower.text_proj.copy_(model.text_projection)
        tower.text_attn_mask.copy_(model.attn_mask)
    return tower.eval()


def test_text_tower_matches_open_clip_encode_text():
    torch.manual_seed(0)
    model = open_clip.create_model(SMALL_CLIP, pretrained=None).eval()
    texts = ["a chair", "the wooden table in the kitchen next to the window", ""]
    with torch.no_grad():
        expected = model.encode_text(open_clip.get_tokenizer(SMALL_CLIP)(texts))
    encoder = OfficialTextEncoder(tower_of(model), SMALL_CLIP)
    torch.testing.assert_close(encoder.features(texts), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(encoder.encode(texts), F.normalize(expected, dim=-1),
                               atol=1e-5, rtol=1e-5)
    rows = encoder.encode_tokens(texts)
    assert [tuple(r.shape) for r in rows] == [(1, 256)] * 3
    torch.testing.assert_close(torch.cat(rows), expected, atol=1e-5, rtol=1e-5)
    assert not any(p.requires_grad for p in encoder.tower.parameters())  # frozen
    # the end token's feature does not depend on how much padding follows it (causal mask)
    alone = encoder.features(texts[:1])
    torch.testing.assert_close(alone, expected[:1], atol=1e-5, rtol=1e-5)


def test_cache_keeps_the_official_end_token_features_in_float32():
    torch.manual_seed(0)
    model = open_clip.create_model(SMALL_CLIP, pretrained=None).eval()
    encoder = OfficialTextEncoder(tower_of(model), SMALL_CLIP)
    cached = CachedTextEncoder(encoder, token_dtype=torch.float32)
    texts = cached.encode_texts(["a lamp on the desk"])
    assert texts.tokens.dtype == torch.float32 and texts.tokens.shape == (1, 1, 256)
    torch.testing.assert_close(texts.tokens[:, 0], encoder.features(["a lamp on the desk"]))


def small_model() -> OfficialUniSeg3D:
    torch.manual_seed(0)
    config = dataclasses.replace(TINY_MODEL, channels=(8, 16), voxel_size=0.1)
    return OfficialUniSeg3D(config, text_model=SMALL_CLIP).eval()


def scene_input(clicks: list[int], texts: torch.Tensor) -> SceneInput:
    g = torch.Generator().manual_seed(1)
    coords = torch.rand(600, 3, generator=g) * 2
    superpoints = torch.div(torch.arange(600), 20, rounding_mode="floor")  # 30 superpoints
    encoded = EncodedTexts(F.normalize(texts, dim=-1), texts[:, None], torch.ones(
        len(texts), 1, dtype=torch.bool))
    return SceneInput(coords, torch.randint(0, 255, (600, 3), generator=g, dtype=torch.uint8),
                      superpoints, torch.tensor(clicks, dtype=torch.long), encoded)


@torch.no_grad()
def test_generic_results_are_blind_to_prompts_and_prompts_to_each_other():
    model = small_model()
    texts = torch.randn(2, 256, generator=torch.Generator().manual_seed(2))
    bare = model([scene_input([], texts[:0])])[0]
    full = model([scene_input([5, 300], texts)])[0]
    one = model([scene_input([300], texts[1:])])[0]
    assert bare.num_generic == full.num_generic == 30  # every superpoint at test, in order
    assert torch.equal(full.generic_superpoints, torch.arange(30))
    assert len(full.layers) == 1 + model.config.layers
    for layer in range(len(full.layers)):
        torch.testing.assert_close(full.part("generic", layer).masks,
                                   bare.part("generic", layer).masks)
        # the second click and text give the same masks whether or not the first are there
        torch.testing.assert_close(full.part("click", layer).masks[1:],
                                   one.part("click", layer).masks)
        torch.testing.assert_close(full.part("text", layer).masks[1:],
                                   one.part("text", layer).masks)
    last = full.part("generic")
    assert last.semantic_embeddings is not None and full.layers[0].semantic_embeddings is None
    assert last.iou.shape == (30,)


@torch.no_grad()
def test_a_click_query_is_its_superpoints_feature_with_the_click_type():
    model = small_model()
    with torch.no_grad():  # make the click type equal to the generic type
        model.type_embedding.weight[1] = model.type_embedding.weight[2]
    out = model([scene_input([5 * 20 + 3], torch.zeros(0, 256))])[0]
    # the click on superpoint 5 then starts where generic query 5 starts (before any layer)
    torch.testing.assert_close(out.part("click", 0).masks[0], out.part("generic", 0).masks[5])


def test_official_backbone_settings_and_training_queries():
    model = small_model()
    norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert norms and all(m.eps == 1e-4 for m in norms)
    assert model.backbone.grid.minimum == 128 and model.backbone.grid.multiple == 1
    model.train()
    drawn = model.generic_queries(1000, torch.Generator().manual_seed(0))
    assert 500 <= len(drawn) <= 1000 and len(set(drawn.tolist())) == len(drawn)
    assert len(model.generic_queries(10_000, torch.Generator().manual_seed(0))) <= 3500


@pytest.mark.parametrize("recipe", ["nobody"])
def test_unknown_recipe_is_a_config_error(recipe):
    from uniseg3d.config import ConfigError, ModelSection

    with pytest.raises(ConfigError, match="model.recipe"):
        ModelSection(recipe=recipe)
