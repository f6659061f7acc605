"""Text encoders: the real offline MiniLM, an open_clip text tower from a local file, the cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F

from uniseg3d.model.text_encoder import (
    DEFAULT_TEMPLATES,
    CachedTextEncoder,
    ClipTextEncoder,
    MiniLMEncoder,
    TextEncoder,
    build_text_encoder,
    class_embeddings,
)

SMALL_CLIP = "ViT-S-32-alt"  # the smallest built-in open_clip text tower (width 256, 10 layers)


class FakeEncoder:
    """Deterministic 8-d embeddings from a hash of the text; records every call."""

    dim = 8

    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.calls: list[list[str]] = []

    def encode(self, texts: list[str]) -> torch.Tensor:
        self.calls.append(list(texts))
        digests = [list(hashlib.sha256(text.encode()).digest()[: self.dim]) for text in texts]
        rows = torch.tensor(digests, dtype=torch.float32).view(-1, self.dim)
        return F.normalize(rows - 127.5, dim=-1)

    def encode_tokens(self, texts: list[str]) -> list[torch.Tensor]:
        """One row per word: the word's own embedding."""
        self.calls.append(["tokens", *texts])
        return [FakeEncoder.encode(self, text.split()) for text in texts]

    def encode_with_tokens(self, texts: list[str]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self.calls.append(["both", *texts])
        plain = FakeEncoder(self.name)  # the same vectors, not recorded as calls
        return plain.encode(texts), [plain.encode(text.split()) for text in texts]


@pytest.fixture(scope="module")
def minilm() -> MiniLMEncoder:
    return MiniLMEncoder()


def _assert_frozen(model: torch.nn.Module) -> None:
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


def test_minilm_gives_384d_unit_vectors(minilm: MiniLMEncoder) -> None:
    assert isinstance(minilm, TextEncoder) and minilm.dim == 384 and "MiniLM" in minilm.name
    out = minilm.encode(["a chair", "a table next to the window", ""])
    assert out.shape == (3, 384) and out.dtype == torch.float32 and out.device.type == "cpu"
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))
    assert not out.requires_grad and not out.is_inference()
    assert minilm.encode([]).shape == (0, 384)
    _assert_frozen(minilm._model)


def test_minilm_tokens_pool_into_its_embedding(minilm: MiniLMEncoder) -> None:
    texts = ["the red chair next to the desk", "a lamp"]
    tokens = minilm.encode_tokens(texts)
    # [CLS] + word pieces + [SEP]: the long text has more tokens, each 384-d
    assert [t.shape[1] for t in tokens] == [384, 384] and len(tokens[0]) > len(tokens[1]) >= 4
    pooled = F.normalize(torch.stack([t.mean(0) for t in tokens]), dim=-1)
    torch.testing.assert_close(pooled, minilm.encode(texts), atol=1e-5, rtol=1e-5)


def test_minilm_is_semantic(minilm: MiniLMEncoder) -> None:
    chair, office_chair, bathtub = minilm.encode(["a chair", "an office chair", "a bathtub"])
    assert chair @ office_chair > chair @ bathtub + 0.1


def test_build_text_encoder() -> None:
    assert isinstance(build_text_encoder("minilm"), MiniLMEncoder)
    with pytest.raises(ValueError, match="minilm, clip"):
        build_text_encoder("bert")
    with pytest.raises(ValueError, match="checkpoint"):
        build_text_encoder("clip", "convnext_large_d_320")
    with pytest.raises(ValueError, match="takes no"):
        build_text_encoder("minilm", checkpoint="weights.pt")


def test_cache_encodes_each_text_once() -> None:
    fake = FakeEncoder()
    cached = CachedTextEncoder(fake)
    assert isinstance(cached, TextEncoder) and (cached.name, cached.dim) == ("fake", 8)
    first = cached.encode(["a", "b", "a"])
    assert fake.calls == [["a", "b"]] and (cached.hits, cached.misses) == (1, 2)
    again = cached.encode(["b", "a"])
    assert len(fake.calls) == 1 and (cached.hits, cached.misses) == (3, 2)
    torch.testing.assert_close(again, first[[1, 0]])
    assert cached.encode([]).shape == (0, 8) and len(fake.calls) == 1


def test_cache_pads_token_features_and_keeps_them_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "text.pt"
    fake = FakeEncoder()
    encoded = CachedTextEncoder(fake, path).encode_texts(["red chair", "the big brown sofa", ""])
    assert encoded.tokens.shape == (3, 4, 8) and len(encoded) == 3
    assert encoded.token_mask.tolist() == [[True, True, False, False], [True] * 4, [False] * 4]
    words = FakeEncoder().encode(["red", "chair"])
    torch.testing.assert_close(encoded.tokens[0, :2], words, atol=2e-3, rtol=0)  # float16 store
    assert (encoded.tokens[0, 2:] == 0).all() and (encoded.tokens[2] == 0).all()
    torch.testing.assert_close(encoded.embeddings, FakeEncoder().encode(
        ["red chair", "the big brown sofa", ""]))
    again, other = FakeEncoder(), CachedTextEncoder(FakeEncoder(), path)
    reread = CachedTextEncoder(again, path).encode_texts(["the big brown sofa"])
    assert again.calls == [] and len(other) == 3
    torch.testing.assert_close(reread.tokens[0], encoded.tokens[1])
    empty = CachedTextEncoder(FakeEncoder()).encode_texts([])
    assert empty.embeddings.shape == (0, 8) and empty.tokens.shape == (0, 0, 8)


def test_encode_texts_writes_the_cache_file_once_per_miss(tmp_path: Path, monkeypatch) -> None:
    cached = CachedTextEncoder(FakeEncoder(), tmp_path / "text.pt")
    saves = []
    write = cached._save
    monkeypatch.setattr(cached, "_save", lambda: (saves.append(1), write()))
    cached.encode_texts(["a b", "c"])
    assert len(saves) == 1 and (cached.hits, cached.misses) == (0, 2)
    cached.encode_texts(["c", "a b"])
    assert len(saves) == 1 and (cached.hits, cached.misses) == (2, 2)  # all hits: no write
    cached.encode(["c", "d"])
    assert len(saves) == 2 and (cached.hits, cached.misses) == (3, 3)


def test_encode_texts_sends_its_misses_in_one_call() -> None:
    fake = FakeEncoder()
    cached = CachedTextEncoder(fake)
    first = cached.encode(["red chair"])
    encoded = cached.encode_texts(["red chair", "a sofa", "a sofa"])
    assert fake.calls == [["red chair"], ["both", "red chair", "a sofa"]]
    assert torch.equal(encoded.embeddings[0], first[0])  # the cached embedding is kept
    assert (cached.hits, cached.misses) == (1, 3)
    cached.encode_texts(["a sofa", "red chair"])
    assert len(fake.calls) == 2 and (cached.hits, cached.misses) == (3, 3)


def test_minilm_gives_both_in_one_pass_as_the_two_calls(minilm: MiniLMEncoder) -> None:
    texts = ["the brown chair next to the table", "a lamp", "a big white bed in the corner"]
    embeddings, tokens = minilm.encode_with_tokens(texts)
    assert torch.equal(embeddings, minilm.encode(texts))
    assert all(torch.equal(a, b) for a, b in zip(tokens, minilm.encode_tokens(texts)))
    assert [len(t) for t in tokens] == [len(t) for t in minilm.encode_tokens(texts)]


def test_cache_mixed_batch_keeps_input_order() -> None:
    fake = FakeEncoder()
    cached = CachedTextEncoder(fake)
    cached.encode(["b", "d"])
    out = cached.encode(["a", "b", "c", "d", "c"])
    assert fake.calls[-1] == ["a", "c"]  # only the misses, once each, in one batch
    torch.testing.assert_close(out, FakeEncoder().encode(["a", "b", "c", "d", "c"]))


def test_cache_file_round_trips_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "text.pt"
    CachedTextEncoder(FakeEncoder("other"), path).encode(["z"])
    writer = CachedTextEncoder(FakeEncoder(), path)
    expected = writer.encode(["x", "y"])
    fake = FakeEncoder()
    reader = CachedTextEncoder(fake, path)
    torch.testing.assert_close(reader.encode(["y", "x"]), expected[[1, 0]])
    assert fake.calls == [] and reader.hits == 2 and len(reader) == 2
    other = FakeEncoder("other")  # the first encoder's entries survived the rewrites
    CachedTextEncoder(other, path).encode(["z"])
    assert other.calls == []
    assert sorted(p.name for p in path.parent.iterdir()) == ["text.pt"]  # no temp files left


def test_class_embeddings_average_the_templates() -> None:
    fake = FakeEncoder()
    templates = ("a {}.", "a photo of a {}.", "there is a {}.")
    out = class_embeddings(fake, ["chair", "sofa"], templates)
    for row, name in zip(out, ["chair", "sofa"]):
        mean = FakeEncoder().encode([t.format(name) for t in templates]).mean(dim=0)
        torch.testing.assert_close(row, mean / mean.norm())
    assert class_embeddings(fake, ["lamp"]).shape == (1, 8)
    assert fake.calls[-1] == [t.format("lamp") for t in DEFAULT_TEMPLATES]


def test_clip_text_tower_loads_from_a_local_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = open_clip.create_model(SMALL_CLIP, pretrained=None).eval()
    texts = ["a chair", "a wooden table in the kitchen", ""]
    with torch.no_grad():
        expected = model.encode_text(open_clip.get_tokenizer(SMALL_CLIP)(texts), normalize=True)
    plain, wrapped = tmp_path / "plain.pt", tmp_path / "wrapped.pt"
    torch.save(model.state_dict(), plain)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, wrapped)
    for path in (plain, wrapped):
        encoder = ClipTextEncoder(SMALL_CLIP, checkpoint=path)
        assert encoder.dim == 256 and encoder.name.startswith(f"clip:{SMALL_CLIP}:")
        assert encoder._model.visual is None
        _assert_frozen(encoder._model)
        torch.testing.assert_close(encoder.encode(texts), expected, atol=1e-5, rtol=1e-5)
    # token rows run through the end token; its row is the (unnormalised) text embedding
    ids = open_clip.get_tokenizer(SMALL_CLIP)(texts)
    tokens = encoder.encode_tokens(texts)
    assert [len(t) for t in tokens] == (ids.argmax(-1) + 1).tolist() and len(tokens[2]) == 2
    torch.testing.assert_close(F.normalize(torch.stack([t[-1] for t in tokens]), dim=-1),
                               expected, atol=1e-5, rtol=1e-5)
    truncated = {k: v for k, v in model.state_dict().items() if k != "ln_final.weight"}
    torch.save(truncated, tmp_path / "truncated.pt")
    with pytest.raises(ValueError, match="ln_final.weight"):
        ClipTextEncoder(SMALL_CLIP, tmp_path / "truncated.pt")


def test_clip_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        ClipTextEncoder("convnext_large_d_320", tmp_path / "missing.bin")
