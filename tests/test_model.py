"""The UniSeg3D model: one forward for six tasks, gradients, attention isolation, losses,
checkpoints and resume."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scannet_files import write_label_map, write_scannet_scene
from uniseg3d.config import TINY_MODEL, LossWeights, Params
from uniseg3d.datasets.classes import scannet20
from uniseg3d.datasets.labels import read_label_map
from uniseg3d.datasets.loader import make_sample
from uniseg3d.datasets.scannet import read_scannet_scene
from uniseg3d.datasets.scene import Description
from uniseg3d.model.criterion import Criterion, hungarian_match, mask_losses
from uniseg3d.model.decoder import (
    Clicks, FourierPositions, QueryPredictions, UnifiedDecoder, prompt_attention_mask)
from uniseg3d.model.inference import predict_scene
from uniseg3d.model.inputs import scene_input, scene_targets
from uniseg3d.model.postprocess import Instances, mask_nms, semantic_labels
from uniseg3d.model.targets import instance_classes, semantic_log_prior
from uniseg3d.model.text_encoder import EncodedTexts
from uniseg3d.model.uniseg3d import UniSeg3D, superpoint_means

TEXT_DIM = 16


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    label_map = read_label_map(write_label_map(root / "labels.tsv"))
    loaded = read_scannet_scene(write_scannet_scene(root), label_map)
    return dataclasses.replace(loaded, referring=(Description(2, "the chair", 0),
                                                  Description(3, "the table", 1)))


@pytest.fixture
def classes():
    torch.manual_seed(1)
    return F.normalize(torch.randn(20, TEXT_DIM), dim=1)


def texts_of(sample) -> EncodedTexts:
    """Random stand-ins for the encoded descriptions of `sample`, of 5 to 9 tokens each."""
    torch.manual_seed(2)
    return EncodedTexts.from_rows(F.normalize(torch.randn(len(sample.texts), TEXT_DIM), dim=1),
                                  [torch.randn(5 + k % 5, TEXT_DIM)
                                   for k in range(len(sample.texts))])


def tiny_model() -> UniSeg3D:
    torch.manual_seed(0)
    return UniSeg3D(TINY_MODEL, TEXT_DIM)


def test_one_forward_gives_all_six_outputs(scene, classes):
    sample = make_sample(scene, Params().prompts, np.random.default_rng(0), training=False)
    assert len(sample.click_points) == 2 and sample.texts == ["the chair", "the table"]
    model = tiny_model().eval()
    inputs = scene_input(sample, texts_of(sample))
    with torch.no_grad():
        out = model([inputs])[0]
    assert len(out.layers) == TINY_MODEL.layers + 1
    assert out.num_generic == scene.num_superpoints  # all superpoints seed queries at test
    last = out.layers[-1]
    assert last.masks.shape == (scene.num_superpoints + 2 + 2, scene.num_superpoints)
    assert last.class_logits(classes).shape == (len(last.masks), 21)
    prediction = predict_scene(model, inputs, classes, open_vocab_embeddings=classes[:5])
    n = scene.num_points
    assert prediction.semantic.shape == (n,) and prediction.panoptic_classes.shape == (n,)
    assert prediction.instances.masks.shape[1] == n
    assert prediction.clicks.masks.shape == (2, n) and prediction.texts.masks.shape == (2, n)
    assert prediction.clicks.class_probs.shape == (2, 20)
    assert prediction.open_vocab.labels.max(initial=0) < 5


def test_training_queries_are_a_random_half_or_more(scene):
    model = tiny_model().train()
    counts = {len(model.generic_queries(scene.num_superpoints, torch.Generator().manual_seed(s)))
              for s in range(20)}
    assert min(counts) >= scene.num_superpoints // 2 and len(counts) > 1


def test_gradients_reach_every_trainable_parameter(scene, classes):
    model = tiny_model().train()
    sample = make_sample(scene, Params().prompts, np.random.default_rng(0), training=True)
    out = model([scene_input(sample, texts_of(sample))], torch.Generator().manual_seed(0))
    criterion = Criterion(LossWeights(), 20)
    losses = criterion(out, [scene_targets(sample)], classes)
    losses["total"].backward()
    missing = [name for name, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert missing == []
    assert set(losses) >= {"generic", "click", "text", "semantic", "distill",
                           "referring_distill", "contrastive", "total"}


def test_semantic_target_is_the_majority_class_of_each_superpoint(scene):
    sample = make_sample(scene, Params().prompts, np.random.default_rng(0), training=False)
    target = scene_targets(sample).semantic.numpy()
    assert len(target) == scene.num_superpoints
    for sp in range(scene.num_superpoints):
        labels = scene.semantic20[scene.superpoints == sp]
        counts = np.bincount(labels[labels >= 0], minlength=20)
        expected = counts.argmax() if counts.max() * 2 > len(labels) else -1
        assert target[sp] == expected, sp
    assert (target >= 0).mean() > 0.5


def test_instance_class_is_the_majority_class_of_its_points():
    instance = np.array([0, 0, 0, 1, 1, -1, 2])
    semantic = np.array([3, 3, 5, 5, 4, 3, -1])
    # 0: class 3 twice, 5 once; 1: a tie, the lower class; 2: no labelled point; 3: no point
    assert instance_classes(instance, semantic, 4).tolist() == [3, 4, -1, -1]


def test_semantic_log_prior_counts_the_superpoint_targets(scene):
    first = dataclasses.replace(  # superpoint 0: class 1 (2 of 3 points); 1: 5 on half only
        scene, superpoints=np.array([0, 0, 0, 1, 1, 2]), semantic20=np.array([1, 1, 0, 5, -1, -1]))
    second = dataclasses.replace(scene, superpoints=np.array([0, 0]), semantic20=np.array([5, 5]))
    expected = np.ones(20)  # every class counted once more
    expected[[1, 5]] = 2
    assert np.allclose(np.exp(semantic_log_prior([first, second])), expected / 22)


def test_semantic_labels_lose_the_model_training_prior(scene, classes):
    sample = make_sample(scene, Params().prompts, np.random.default_rng(0), training=False)
    inputs, model = scene_input(sample, texts_of(sample)), tiny_model().eval()
    with torch.no_grad():
        logits = model([inputs])[0].semantic_logits(classes)
    plain = predict_scene(model, inputs, classes)
    expected = semantic_labels(logits, inputs.superpoints, plain.instances)  # zeros: no change
    assert plain.semantic.tolist() == expected.tolist()
    sofa = scannet20().names.index("sofa")
    model.semantic_log_prior[sofa] = -1000.0  # a class never seen in training: +1000 at test
    assert (predict_scene(model, inputs, classes).semantic == sofa).all()


def test_semantic_head_loss_and_labels_follow_its_embeddings(scene, classes):
    sample = make_sample(scene, Params().prompts, np.random.default_rng(0), training=False)
    inputs, targets = scene_input(sample, texts_of(sample)), scene_targets(sample)
    with torch.no_grad():
        out = tiny_model().eval()([inputs])[0]
    assert out.semantic_logits(classes).shape == (scene.num_superpoints, 20)
    truth = targets.semantic.clamp_min(0)
    criterion = Criterion(LossWeights(), 20)

    def semantic_loss(embedding_classes: torch.Tensor):
        head = dataclasses.replace(out, semantic_embeddings=classes[embedding_classes],
                                   semantic_scale=torch.tensor(100.0))
        return float(criterion.scene_losses(head, targets, classes)["semantic"]), head

    perfect, head = semantic_loss(truth)
    wrong, _ = semantic_loss((truth + 1) % 20)
    assert perfect < 1e-4 and wrong > 10
    labels = semantic_labels(head.semantic_logits(classes), inputs.superpoints)
    labelled = targets.semantic[inputs.superpoints] >= 0
    assert (labels[labelled] == targets.semantic[inputs.superpoints][labelled].numpy()).all()


def test_prompts_are_isolated_and_texts_read_the_generic_queries(scene, classes):
    # 2 generic, 1 click, 2 texts: a text row sees the generic columns and itself, nothing else
    mask = prompt_attention_mask(2, torch.tensor([0]), 2)
    assert mask.tolist() == [[True, True, False, True, True], [False, False, True, False, True],
                             [False, False, True, True, False]]
    # clicks 0 and 2 on object 0, click 1 on object 1, clicks 3 and 4 negative
    mask = prompt_attention_mask(1, torch.tensor([0, 1, 0, -1, -1]), 0)
    assert (~mask).int().tolist() == [[0, 1, 0, 1, 0, 0], [0, 0, 1, 0, 0, 0],
                                      [0, 1, 0, 1, 0, 0], [0, 0, 0, 0, 1, 1],
                                      [0, 0, 0, 0, 1, 1]]
    model = tiny_model().eval()
    sample = make_sample(scene, Params().prompts, np.random.default_rng(0), training=False)
    texts = texts_of(sample)
    base = scene_input(sample, texts)
    changed_embeddings = texts.embeddings.clone()
    changed_embeddings[0] = F.normalize(torch.randn(TEXT_DIM), dim=0)
    changed = scene_input(sample, dataclasses.replace(texts, embeddings=changed_embeddings))
    with torch.no_grad():
        a, b = model([base])[0], model([changed])[0]
    for layer in range(len(a.layers)):
        for part in ("generic", "click"):
            torch.testing.assert_close(a.part(part, layer).masks, b.part(part, layer).masks)
        torch.testing.assert_close(a.part("text", layer).masks[1], b.part("text", layer).masks[1])
    assert not torch.allclose(a.part("text").masks[0], b.part("text").masks[0])
    # dropping generic queries changes what a text query reads, but no click query
    with torch.no_grad():
        features = model.backbone([base.coords], [base.colors], [base.superpoints])[0]
        clicks = base.clicks()

        def last_masks(count: int) -> torch.Tensor:
            return model.decoder(features, *superpoint_means(base, len(features)),
                                 torch.arange(count), clicks, base.texts)[-1].masks

        n, k = len(features), len(clicks)
        every, half = last_masks(n), last_masks(n // 2)
    torch.testing.assert_close(every[n:n + k], half[n // 2:n // 2 + k])
    assert not torch.allclose(every[n + k:], half[n // 2 + k:])


def test_text_queries_read_their_own_words_only(scene):
    model = tiny_model().eval()
    sample = make_sample(scene, Params().prompts, np.random.default_rng(0), training=False)
    texts = texts_of(sample)
    assert len(texts) >= 2 and not texts.token_mask[0].all()  # text 0 has padding

    def run(tokens: torch.Tensor):
        changed = dataclasses.replace(texts, tokens=tokens)
        with torch.no_grad():
            return model([scene_input(sample, changed)])[0]

    base = run(texts.tokens)
    padding = texts.tokens.clone()
    padding[0][~texts.token_mask[0]] = 50.0  # values past a text's end are never read
    words = texts.tokens.clone()
    words[0, 0] = torch.randn(TEXT_DIM)  # text 0's first word changes
    padded, reworded = run(padding), run(words)
    torch.testing.assert_close(padded.part("text").masks, base.part("text").masks)
    for part in ("generic", "click"):
        torch.testing.assert_close(reworded.part(part).masks, base.part(part).masks)
    torch.testing.assert_close(reworded.part("text").masks[1:], base.part("text").masks[1:])
    assert not torch.allclose(reworded.part("text").masks[0], base.part("text").masks[0])


def test_superpoint_means_are_hand_computed_and_centroids_translation_invariant(scene):
    sample = make_sample(scene, Params().prompts, np.random.default_rng(0), training=False)
    inputs = scene_input(sample, texts_of(sample))
    colours, centroids = superpoint_means(inputs, scene.num_superpoints)
    points = torch.as_tensor(scene.coords, dtype=torch.float64)
    rgb = torch.as_tensor(scene.colors, dtype=torch.float64)
    for sp in (0, scene.num_superpoints - 1):
        members = torch.as_tensor(scene.superpoints == sp)
        expected = points[members].mean(0) - points.mean(0)
        torch.testing.assert_close(centroids[sp].double(), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(colours[sp].double(), rgb[members].mean(0) / 127.5 - 1,
                                   atol=1e-5, rtol=0)
    shifted = dataclasses.replace(inputs, coords=inputs.coords + torch.tensor([40.0, -7.5, 3.0]))
    torch.testing.assert_close(superpoint_means(shifted, scene.num_superpoints)[1], centroids,
                               atol=1e-4, rtol=0)


def test_positions_and_colours_tell_alike_superpoints_apart():
    # two superpoints with identical features: their queries differ only through where they are
    # and what colour they have
    torch.manual_seed(0)
    decoder = UnifiedDecoder(8, TEXT_DIM, d_model=32, heads=4, ffn=64, layers=2).eval()
    features = torch.randn(6, 8)
    features[1] = features[0]
    colours, centroids = torch.rand(6, 3) * 2 - 1, torch.randn(6, 3)
    colours[1] = colours[0]
    no_prompts = Clicks.none(), EncodedTexts.from_rows(torch.zeros(0, TEXT_DIM), [])

    def masks() -> torch.Tensor:
        with torch.no_grad():
            return decoder(features, colours, centroids, torch.arange(6), *no_prompts)[-1].masks

    apart = masks()
    centroids[1] = centroids[0]
    together = masks()
    colours[1] = -colours[0]
    recoloured = masks()
    torch.testing.assert_close(together[0], together[1])
    assert (apart[0] - apart[1]).abs().max() > 1e-2
    assert (recoloured[0] - recoloured[1]).abs().max() > 1e-2
    codes = FourierPositions(32).eval()
    assert codes.frequencies.tolist() == pytest.approx(
        [2 * np.pi / w for w in (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)])
    # 8 m apart: half the longest wavelength, a different code
    assert not torch.allclose(codes(torch.zeros(1, 3)), codes(torch.tensor([[8.0, 0.0, 0.0]])))


def predictions(masks: torch.Tensor) -> QueryPredictions:
    q = len(masks)
    return QueryPredictions(masks, F.normalize(torch.ones(q, TEXT_DIM), dim=1),
                            torch.zeros(q), torch.zeros(q), torch.tensor(1.0))


def test_perfect_masks_give_near_zero_mask_loss():
    targets = (torch.rand(4, 50) > 0.5).float()
    bce, dice = mask_losses((targets * 2 - 1) * 30, targets)
    assert bce < 1e-6 and dice < 1e-6
    bce_wrong, dice_wrong = mask_losses((1 - targets * 2) * 30, targets)
    assert bce_wrong > 10 and dice_wrong > 0.9


def test_matching_recovers_a_known_permutation():
    torch.manual_seed(0)
    targets = (torch.rand(5, 60) > 0.5).float()
    permutation = torch.tensor([3, 0, 4, 1, 2])
    logits = (targets[permutation] * 2 - 1) * 5  # query i predicts target permutation[i]
    logits = torch.cat([logits, torch.randn(3, 60)])  # three extra queries match nothing
    class_logits = torch.zeros(8, 21)
    rows, cols = hungarian_match(predictions(logits), class_logits, targets,
                                 torch.zeros(5, dtype=torch.long), LossWeights())
    assert dict(zip(rows.tolist(), cols.tolist())) == {i: int(p) for i, p in
                                                       enumerate(permutation)}


def test_contrastive_loss_prefers_aligned_pairs():
    criterion = Criterion(LossWeights(), 20)
    clicks = F.normalize(torch.randn(3, TEXT_DIM), dim=1)
    positive = torch.tensor([0, 1, 2, 2])
    aligned = criterion.contrastive(clicks, clicks[positive], positive)
    shuffled = criterion.contrastive(clicks, clicks[torch.tensor([1, 2, 0, 0])], positive)
    assert aligned < shuffled
    assert aligned >= 0


def test_alignment_is_one_minus_cosine_to_the_class_name_and_skips_ignored_labels():
    classes = torch.eye(3, TEXT_DIM)  # unit class-name embeddings
    s = 2 ** -0.5
    embeddings = torch.zeros(4, TEXT_DIM)
    embeddings[0, 0] = 1  # on its class: 1 - 1
    embeddings[1, 1], embeddings[1, 2] = s, s  # 45 degrees from class 1: 1 - cos 45
    embeddings[2, 0] = 1  # orthogonal to class 2: 1 - 0
    embeddings[3, 2] = -1  # ignored label: not counted
    labels = torch.tensor([0, 1, 2, -1])
    loss = Criterion.alignment(embeddings, labels, classes)
    assert torch.isclose(loss, torch.tensor((0 + (1 - s) + 1) / 3))
    assert Criterion.alignment(embeddings[3:], labels[3:], classes) == 0
    # the gradient turns an embedding toward its class name
    free = embeddings[1:2].clone().requires_grad_()
    Criterion.alignment(free, labels[1:2], classes).backward()
    assert free.grad[0, 1] < 0 and free.grad[0, 2] == 0


def test_semantic_labels_vote_per_confident_object_and_leave_stuff_alone():
    floor, cabinet, sofa = (scannet20().names.index(n) for n in ("floor", "cabinet", "sofa"))
    probs = torch.full((4, 20), 0.01)
    probs[0, sofa] = 0.9  # superpoint 0: surely sofa
    probs[1, cabinet], probs[1, sofa] = 0.5, 0.4  # superpoint 1: cabinet, narrowly
    probs[2, floor] = 0.9
    probs[3, cabinet] = 0.9
    probs /= probs.sum(1, keepdim=True)
    superpoints = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3])
    logits = probs.log()
    head = [sofa, sofa, cabinet, cabinet, cabinet, floor, cabinet, cabinet]
    assert semantic_labels(logits, superpoints).tolist() == head

    def points(*sps: int) -> np.ndarray:
        return np.isin(superpoints.numpy(), sps)

    things = Instances(
        masks=np.stack([points(0, 1, 2),  # mean over its 6 points: sofa (floor point kept)
                        points(1),  # alone, superpoint 1 votes cabinet; painted first
                        points(3, 2),  # below min_score: ignored
                        points(2)]),  # votes floor, a stuff class: ignored
        labels=np.zeros(4, dtype=np.int64), scores=np.array([0.9, 0.5, 0.2, 0.95]))
    voted = semantic_labels(logits, superpoints, things, min_score=0.3).tolist()
    assert voted == [sofa, sofa, sofa, sofa, sofa, floor, cabinet, cabinet]


def test_semantic_vote_multiplies_the_instance_class_probabilities():
    cabinet, fridge = (scannet20().names.index(n) for n in ("cabinet", "refrigerator"))
    probs = torch.full((2, 20), 0.01)
    probs[:, cabinet] = 0.9  # the head: cabinet at 0.826, refrigerator at 0.0092 (ratio 90)
    probs /= probs.sum(1, keepdim=True)
    superpoints = torch.tensor([0, 0, 1])
    query = np.full((1, 20), 0.0)
    query[0, fridge], query[0, cabinet] = 0.99, 0.005  # the query: ratio 198 the other way
    whole = np.ones((1, 3), dtype=bool)
    fridge_query = Instances(whole, np.array([fridge]), np.array([0.8]), query)
    assert semantic_labels(probs.log(), superpoints, fridge_query).tolist() == [fridge] * 3
    query[0, cabinet] = 0.05  # ratio 20 < 90: the head's evidence wins
    assert semantic_labels(probs.log(), superpoints, fridge_query).tolist() == [cabinet] * 3
    unknown = Instances(whole, np.array([fridge]), np.array([0.8]))  # no probabilities: head's
    assert semantic_labels(probs.log(), superpoints, unknown).tolist() == [cabinet] * 3


def test_mask_nms_is_greedy_within_a_class():
    masks = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0],   # A 0.9
                          [1, 1, 1, 1, 1, 0, 0, 0],   # B 0.8: IoU(A, B) = 0.8 -> dropped
                          [1, 1, 1, 1, 1, 1, 0, 0],   # C 0.7: IoU(A, C) = 0.67, IoU(B, C) = 0.83
                          [1, 1, 1, 1, 0, 0, 0, 0]],  # D 0.6: A's mask, another class
                         dtype=torch.bool)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([0, 0, 0, 1])
    # C stays: only kept masks suppress, and B, which overlaps it, was dropped
    assert mask_nms(masks, scores, labels, 0.75).tolist() == [0, 2, 3]
    assert mask_nms(masks[[3, 2, 1, 0]], scores.flip(0), labels.flip(0), 0.75).tolist() == \
        [3, 1, 0]
