"""UniSeg3D's language module: a frozen CLIP text tower read at its end token, then an MLP.

`ClipTextTower` is open_clip's text transformer laid out as UniSeg3D's `OpenCLIPBackboneText`
holds it (token embedding, positional embedding, transformer, final LayerNorm, projection,
causal mask buffer): tokens -> features of the end-of-text token (the highest token id) @
projection, unnormalised. Because the mask is causal, the positions after a batch's last end
token never reach an end token; they are cut off before the transformer, which gives the same
features in a fraction of the time. `LanguageModule` adds the `Mlp` (width -> width -> query
channels, GELU) that turns the feature into a text query. `OfficialTextEncoder` serves the tower
to the pipelines through the `TextEncoder` interface: `encode` gives unit rows (for
open-vocabulary class prototypes), `encode_tokens` the one row the decoder reads, the raw
end-token feature.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from open_clip import get_model_config, get_tokenizer
from open_clip.transformer import Transformer
from torch import nn

from uniseg3d.model.text_encoder import read_state_dict_file


def clip_text_config(model_name: str) -> dict:
    """open_clip's text-tower dimensions of `model_name`, with its `embed_dim`."""
    config = get_model_config(model_name)
    if config is None:
        raise ValueError(f"unknown open_clip model {model_name!r}")
    text = config["text_cfg"]
    return {"width": text.get("width", 512), "layers": text.get("layers", 12),
            "heads": text.get("heads", 8), "vocab_size": text.get("vocab_size", 49408),
            "context_length": text.get("context_length", 77), "embed_dim": config["embed_dim"]}


class ClipTextTower(nn.Module):
    """CLIP's text transformer; `forward` gives the end-token feature @ projection."""

    def __init__(self, width: int, layers: int, heads: int, vocab_size: int, context_length: int,
                 embed_dim: int):
        super().__init__()
        self.text_token_embedding = nn.Embedding(vocab_size, width)
        self.text_pe = nn.Parameter(torch.randn(context_length, width) * 0.01)
        self.text_transformer = Transformer(width, layers, heads)  # GELU, batch first
        self.text_ln_final = nn.LayerNorm(width)
        self.text_proj = nn.Parameter(torch.randn(width, embed_dim) * width ** -0.5)
        causal = torch.full((context_length, context_length), float("-inf")).triu(1)
        self.register_buffer("text_attn_mask", causal)
        nn.init.normal_(self.text_token_embedding.weight, std=0.02)
        self.requires_grad_(False)  # frozen, as UniSeg3D's `fix=True`

    @torch.no_grad()
    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        """(T, context) token ids -> (T, embed_dim) end-token features."""
        end = token_ids.argmax(dim=-1)
        length = int(end.max()) + 1 if len(token_ids) else 1
        ids = token_ids[:, :length]
        x = self.text_token_embedding(ids) + self.text_pe[:length]
        x = self.text_transformer(x, attn_mask=self.text_attn_mask[:length, :length])
        x = self.text_ln_final(x)
        return x[torch.arange(len(ids), device=ids.device), end] @ self.text_proj


class Mlp(nn.Module):
    """Linear, GELU, Linear (UniSeg3D's `lang.Mlp`; its dropout is 0)."""

    def __init__(self, in_features: int, hidden: int, out_features: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LanguageModule(nn.Module):
    """The frozen tower (`text_encoder`) and the trained MLP to query channels (`Mlp`)."""

    def __init__(self, model_name: str, out_features: int):
        super().__init__()
        config = clip_text_config(model_name)
        self.text_encoder = ClipTextTower(**config)
        embed = config["embed_dim"]
        self.Mlp = Mlp(embed, embed, out_features)  # noqa: N815 (the official key name)


class OfficialTextEncoder:
    """The model's own text tower as a `TextEncoder` (tokenised by open_clip, offline)."""

    def __init__(self, tower: ClipTextTower, model_name: str, batch_size: int = 64):
        self.tower = tower
        self.name = f"official-clip:{model_name}"
        self.dim = int(tower.text_proj.shape[1])
        self.batch_size = batch_size
        muted = logging.root.manager.disable  # open_clip logs each lookup on the root logger
        logging.disable(logging.INFO)
        try:
            self._tokenizer = get_tokenizer(model_name)
        finally:
            logging.disable(muted)

    def features(self, texts: list[str]) -> torch.Tensor:
        """(T, dim) raw end-token features on the CPU."""
        device = self.tower.text_proj.device
        chunks = [torch.empty(0, self.dim)]
        for start in range(0, len(texts), self.batch_size):
            ids = self._tokenizer(list(texts[start:start + self.batch_size])).to(device)
            chunks.append(self.tower(ids).float().cpu())
        return torch.cat(chunks)

    def encode(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.features(texts), dim=-1)

    def encode_tokens(self, texts: list[str]) -> list[torch.Tensor]:
        """The decoder reads the end-token feature only: one (1, dim) row per text."""
        return [row[None] for row in self.features(texts)]

    def encode_with_tokens(self, texts: list[str]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = self.features(texts)
        return F.normalize(features, dim=-1), [row[None] for row in features]


OPEN_CLIP_TEXT_KEYS = {"token_embedding.": "text_token_embedding.",
                       "positional_embedding": "text_pe", "transformer.": "text_transformer.",
                       "ln_final.": "text_ln_final.", "text_projection": "text_proj"}


def load_open_clip_text(tower: ClipTextTower, checkpoint: str | Path) -> None:
    """Load the text tower of an open_clip checkpoint (`open_clip_pytorch_model.bin`, as the
    official `clip_pretrain` init reads it) into `tower`, strictly; `visual.*`, `logit_scale` and
    the causal mask are not the tower's weights."""
    state = {}
    for key, value in read_state_dict_file(Path(checkpoint)).items():
        for prefix, ours in OPEN_CLIP_TEXT_KEYS.items():
            if key.startswith(prefix):
                state[ours + key[len(prefix):]] = value
    state["text_attn_mask"] = tower.text_attn_mask
    try:
        tower.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{checkpoint} does not hold this CLIP text tower: {error}") from None
