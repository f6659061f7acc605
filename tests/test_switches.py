"""The `ours` switches: each departure from the released code turns off alone and does what
its name says (the memory terms, word attention, text -> generic attention, logit adjustment
and instance vote, the sparse matcher, stuff targets, the layer reduction, our post-processing),
and a checkpoint keeps its switches."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from resume import interrupted_then_resumed
from scannet_files import described_scenes, write_label_map, write_scannet_scene
from uniseg3d.config import TINY_MODEL, LossWeights, ModelConfig, ModelSwitches, Params
from uniseg3d.datasets.classes import scannet20
from uniseg3d.datasets.labels import read_label_map
from uniseg3d.datasets.loader import evaluation_sample, make_sample
from uniseg3d.datasets.scannet import read_scannet_scene
from uniseg3d.datasets.scene import Description
from uniseg3d.model.criterion import Criterion
from uniseg3d.model.decoder import QueryPredictions, prompt_attention_mask
from uniseg3d.model.inference import predict_scene, prompt_mask_rule, released_instances
from uniseg3d.model.inter_task import (class_distillation, click_distillation,
                                      contrastive_and_ranking)
from uniseg3d.model.inputs import scene_input, scene_targets
from uniseg3d.model.postprocess import instances, prompt_masks, semantic_labels
from uniseg3d.model.text_encoder import EncodedTexts
from uniseg3d.model.uniseg3d import UniSeg3D, superpoint_means
from uniseg3d.pipelines.train import load_checkpoint, train

TEXT_DIM = 16


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    scene = read_scannet_scene(write_scannet_scene(root),
                               read_label_map(write_label_map(root / "labels.tsv")))
    scene = dataclasses.replace(scene, referring=(Description(2, "the chair", 0),
                                                  Description(3, "the table", 1)))
    return make_sample(scene, Params().prompts, np.random.default_rng(0), None, training=False)


def inputs(sample):
    torch.manual_seed(2)
    texts = EncodedTexts.from_rows(F.normalize(torch.randn(len(sample.texts), TEXT_DIM), dim=1),
                                   [torch.randn(6, TEXT_DIM) for _ in sample.texts])
    return scene_input(sample, texts)


def model_with(**switches) -> UniSeg3D:
    torch.manual_seed(0)
    config = dataclasses.replace(TINY_MODEL, switches=ModelSwitches(**switches))
    return UniSeg3D(config, TEXT_DIM).eval()


CLASSES = F.normalize(torch.randn(20, TEXT_DIM, generator=torch.Generator().manual_seed(1)),
                      dim=1)


def test_memory_terms_switch_off(sample):
    scene = inputs(sample)
    model = model_with(position_memory=False, colour_memory=False)
    decoder = model.decoder
    assert not hasattr(decoder, "positions") and not hasattr(decoder, "colours")
    features = model.superpoint_features([scene])[0]
    colours, centroids = superpoint_means(scene, len(features))
    memory = decoder.scene_memory(features, colours, centroids)
    torch.testing.assert_close(memory, decoder.input_proj(features))
    clicks = scene.clicks()
    queries = decoder.click_queries(memory, clicks)  # no Fourier code of the clicked point
    kind = decoder.task_embedding.weight[1]
    torch.testing.assert_close(queries, memory[clicks.superpoints] + kind)


def test_word_attention_switches_off_and_texts_then_ignore_their_tokens(sample):
    scene = inputs(sample)
    model = model_with(word_attention=False)
    assert not hasattr(model.decoder, "word_attention")
    with torch.no_grad():
        before = model([scene])[0].part("text").masks
        changed = dataclasses.replace(scene, texts=EncodedTexts(
            scene.texts.embeddings, torch.randn_like(scene.texts.tokens),
            scene.texts.token_mask))
        after = model([changed])[0].part("text").masks
    torch.testing.assert_close(before, after)


def test_without_text_to_generic_attention_a_text_query_sees_itself_only(sample):
    blocked = prompt_attention_mask(3, torch.tensor([0, -1]), 2, text_sees_generic=False)
    assert blocked[2:, :3].all()  # texts: no generic column
    assert blocked[2:, 5:].tolist() == [[False, True], [True, False]]
    scene = inputs(sample)
    model = model_with(text_sees_generic=False)
    with torch.no_grad():
        features = model.superpoint_features([scene])
        passed = model.generic_pass(scene, features[0])
        states = [s * 0 + torch.randn_like(s) for s in passed.states]  # other generic states
        alone = model([scene], features=features)[0].part("text").masks
        moved = model([scene], features=features, generic=[dataclasses.replace(
            passed, states=states)])[0].part("text").masks
    torch.testing.assert_close(alone, moved)


def test_logit_adjustment_and_instance_vote_switch_off(sample):
    scene = inputs(sample)
    model = model_with(logit_adjustment=False, instance_vote=False)
    model.semantic_log_prior.copy_(torch.linspace(-5, 0, 20))
    with torch.no_grad():
        out = model([scene])[0]
        predicted = predict_scene(model, scene, CLASSES)
    raw = semantic_labels(out.semantic_logits(CLASSES), scene.superpoints)  # plain argmax
    np.testing.assert_array_equal(predicted.semantic, raw)


def criterion_case(sample, **loss):
    model = model_with()
    model.train()
    scene = inputs(sample)
    out = model([scene], torch.Generator().manual_seed(0))[0]
    return Criterion(LossWeights(**loss), len(scannet20())), out, scene_targets(sample)


def test_the_sparse_matcher_matches_only_queries_seeded_inside_their_object(sample):
    criterion, out, t = criterion_case(sample, matcher="sparse")
    generic = out.part("generic")
    _, rows, segments = criterion.generic_loss(generic, CLASSES, t, out.generic_superpoints)
    assert len(rows) > 0
    seeds = out.generic_superpoints[rows]
    assert (t.masks[segments, seeds] > 0).all()  # each match seeded inside its segment
    assert len(set(segments.tolist())) == len(segments)  # top-1: one query per segment


def test_without_stuff_targets_generic_queries_find_things_only(sample):
    criterion, out, t = criterion_case(sample, stuff_targets=False)
    _, _, segments = criterion.generic_loss(out.part("generic"), CLASSES, t,
                                            out.generic_superpoints)
    labels = t.labels[segments].tolist()
    assert labels and not {0, 1} & set(labels)
    with_stuff, out, t = criterion_case(sample)
    _, _, segments = with_stuff.generic_loss(out.part("generic"), CLASSES, t,
                                             out.generic_superpoints)
    assert {0, 1} & set(t.labels[segments].tolist())


def test_summed_layer_losses_are_the_mean_times_the_outputs(sample):
    mean, out, t = criterion_case(sample)
    summed = Criterion(dataclasses.replace(mean.w, layer_reduction="sum"), len(scannet20()))
    a = mean.scene_losses(out, t, CLASSES)
    b = summed.scene_losses(out, t, CLASSES)
    for key in ("generic", "click", "text", "click_objects"):
        assert float(b[key].detach()) == pytest.approx(float(a[key].detach()) * len(out.layers),
                                                    rel=1e-5)
    assert float(b["semantic"].detach()) == pytest.approx(float(a["semantic"].detach()))


def test_switches_come_from_params_and_travel_with_a_checkpoint(tmp_path):
    params = Params()
    params = dataclasses.replace(params, model=dataclasses.replace(
        params.model, switches=ModelSwitches(word_attention=False)))
    config = params.model.selected()
    assert config.switches.word_attention is False and config.d_model == TINY_MODEL.d_model
    back = ModelConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(config))))
    assert back == config
    old = {k: v for k, v in dataclasses.asdict(config).items() if k != "switches"}
    assert ModelConfig.from_dict(old).switches == ModelSwitches()  # older checkpoints: all on


def test_without_the_semantic_head_semantics_come_from_the_generic_queries(sample):
    model = model_with(semantic_head=False)
    scene = inputs(sample)
    model.train()
    out = model([scene], torch.Generator().manual_seed(0))[0]
    assert torch.equal(out.semantic_superpoints, out.generic_superpoints)  # one row per seed
    logits, rows = out.described_semantic_logits(CLASSES)
    full = out.semantic_logits(CLASSES)
    torch.testing.assert_close(full[rows], logits)
    unseeded = torch.ones(len(full), dtype=torch.bool)
    unseeded[rows] = False
    assert unseeded.any() and (full[unseeded] == 0).all()
    losses = Criterion(LossWeights(), len(scannet20())).scene_losses(
        out, scene_targets(sample), CLASSES)
    losses["semantic"].backward()  # the semantic loss trains the decoder now
    assert model.decoder.layers[-1].self_attn.in_proj_weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model([scene])[0]
    assert len(out.semantic_superpoints) == int(scene.superpoints.max()) + 1  # every one


def test_the_inter_task_terms_read_the_last_layer_matches(sample):
    criterion, out, t = criterion_case(sample)
    losses = criterion.scene_losses(out, t, CLASSES)
    _, rows, segments = criterion.generic_loss(out.part("generic"), CLASSES, t,
                                               out.generic_superpoints)
    direct = criterion.inter_task_losses(out, t, CLASSES, rows, segments)
    assert float(losses["distill"].detach()) == pytest.approx(float(direct["distill"].detach()))
    assert float(direct["distill"].detach()) > 0


def hand_queries() -> tuple[QueryPredictions, torch.Tensor, torch.Tensor]:
    """Three queries over six superpoints (150 points each but the fifth's 50): A and B of
    class 1, A on the first four superpoints, B on the first five (a little less sure of its
    class), C of class 2 on the small fifth alone."""
    superpoints = torch.repeat_interleave(torch.arange(6), torch.tensor([150] * 4 + [50, 150]))
    classes = torch.eye(3)
    masks = torch.tensor([[4.0] * 4 + [-4, -4], [4.0] * 5 + [-4], [-4.0] * 4 + [4, -4]])
    pred = QueryPredictions(masks, classes[[1, 1, 2]], torch.tensor([-10.0, 16.0, -10.0]),
                            torch.zeros(3), torch.tensor(20.0))
    return pred, classes, superpoints


def test_the_released_instance_rules_by_hand():
    pred, classes, superpoints = hand_queries()
    ours = instances(pred, classes, superpoints, top_k=3)
    # ours: greedy NMS on superpoint masks drops B (IoU 4 / 5 > 0.75); C's 50 points stay
    assert sorted(zip(ours.masks.sum(1).tolist(), ours.labels.tolist())) == [(50, 2), (600, 1)]
    released = released_instances(pred, classes, superpoints, top_k=3)
    # released: C has 100 points or fewer, dropped; B is kept, its score decayed by matrix
    # NMS: (1 - soft IoU with A) / (1 - 0), on sigmoid masks
    assert released.masks.sum(1).tolist() == [600, 650]
    assert released.labels.tolist() == [1, 1]
    s = torch.sigmoid(torch.tensor(4.0))
    soft_a = torch.stack([s, s, s, s, 1 - s, 1 - s])
    soft_b = torch.stack([s, s, s, s, s, 1 - s])
    inter = soft_a @ soft_b
    iou = inter / (soft_a.sum() + soft_b.sum() - inter)
    probs = pred.class_logits(classes).softmax(-1)[:, 1]
    assert released.scores[0] == pytest.approx(float(probs[0] * s), rel=1e-5)
    assert released.scores[1] == pytest.approx(float(probs[1] * s * (1 - iou)), rel=1e-5)


def test_the_released_rules_switch_on_ours(sample):
    scene = inputs(sample)
    model = model_with(our_postprocess=False)
    with torch.no_grad():
        out = model([scene])[0]
        predicted = predict_scene(model, scene, CLASSES)
    things = torch.ones(20, dtype=torch.bool)
    things[[0, 1]] = False
    expected = released_instances(out.part("generic"), CLASSES, scene.superpoints, things)
    np.testing.assert_array_equal(predicted.instances.masks, expected.masks)
    np.testing.assert_allclose(predicted.instances.scores, expected.scores)
    ours = predict_scene(model_with(), scene, CLASSES)
    assert ours.instances.scores.tolist() != predicted.instances.scores.tolist()
    # prompt masks: sigmoid > 0.4 under the released rules, > 0.5 under ours
    released_rule, our_rule = prompt_mask_rule(model), prompt_mask_rule(model_with())
    assert (released_rule.sigmoid, released_rule.threshold) == (True, 0.4)
    assert (our_rule.sigmoid, our_rule.threshold) == (False, 0.0)
    text = out.part("text").masks
    np.testing.assert_array_equal(predicted.texts.masks,
                                  (text.sigmoid() > 0.4)[:, scene.superpoints].numpy())
    pred, classes, superpoints = hand_queries()
    pred.masks[0, 0] = -0.2  # probability 0.45
    for rule, inside in ((released_rule, True), (our_rule, False)):
        assert prompt_masks(pred, classes, superpoints, rule).masks[0, 0] == inside


def test_the_components_switch_off_their_inter_task_terms_alone(sample):
    full, out, t = criterion_case(sample)
    losses = {k: v.detach() for k, v in full.scene_losses(out, t, CLASSES).items()}
    assert all(float(losses[k]) > 0 for k in ("distill", "referring_distill", "contrastive"))
    for switch, off in (("distillation", {"distill"}),
                        ("contrastive", {"referring_distill", "contrastive"})):
        ablated = Criterion(dataclasses.replace(full.w, **{switch: False}), len(scannet20()))
        without = {k: v.detach() for k, v in ablated.scene_losses(out, t, CLASSES).items()}
        for key, value in losses.items():
            expected = 0.0 if key in off else float(value)
            assert float(without[key]) == pytest.approx(expected), (switch, key)


def test_left_out_prompt_tasks_get_no_training_prompts(sample):
    scene = sample.scene
    rng = np.random.default_rng(0)
    both = make_sample(scene, Params().prompts, rng, None, training=True)
    assert len(both.click_points) and both.texts
    for tasks, clicks, texts in (((), 0, 0), (("interactive",), len(both.click_points), 0),
                                 (("referring",), 0, len(both.texts))):
        prompts = dataclasses.replace(Params().prompts, train_tasks=tasks)
        trained = make_sample(scene, prompts, np.random.default_rng(0), None, training=True)
        assert (len(trained.click_points), len(trained.texts)) == (clicks, texts), tasks
        assert len(trained.click_instances) == clicks and len(trained.text_instances) == texts
        validated = make_sample(scene, prompts, np.random.default_rng(0), None, training=False)
        assert (len(validated.click_points) > 0, len(validated.texts) > 0) == \
            (clicks > 0, texts > 0)  # the validation loss: the trained tasks' only
        evaluated = evaluation_sample(scene, dataclasses.replace(Params(), prompts=prompts), 0)
        assert len(evaluated.click_points) and evaluated.texts  # evaluation: every task


def test_the_released_inter_task_forms_on_ours(sample):
    ours, out, t = criterion_case(sample)
    released = Criterion(dataclasses.replace(ours.w, inter_forms="official"), len(scannet20()))
    assert [name for name, _ in released.named_parameters()] == ["logit_scale"]
    assert not list(ours.parameters())
    a, b = ours.scene_losses(out, t, CLASSES), released.scene_losses(out, t, CLASSES)
    for key in ("generic", "click", "text", "semantic"):  # the other terms are the same
        assert b[key].item() == pytest.approx(a[key].item())
    # the three terms, by the released forms on ours' pairs (scale at its initial log(1/0.07))
    generic, click, text = out.part("generic"), out.part("click"), out.part("text")
    _, rows, segments = ours.generic_loss(generic, CLASSES, t, out.generic_superpoints)
    match = dict(zip(segments.tolist(), rows.tolist()))
    clicked = [c for c, s in enumerate(t.click_segments.tolist()) if s in match]
    c_idx = torch.tensor(clicked)
    g_idx = torch.tensor([match[int(t.click_segments[c])] for c in clicked])
    s = t.click_segments[c_idx]
    expected = click_distillation(generic.masks, click.masks[c_idx], g_idx, s, s)
    assert b["distill"].item() == pytest.approx(0.1 * float(expected))
    first = {}
    for c, seg in enumerate(t.click_segments.tolist()):
        first.setdefault(seg, c)
    pairs = [(first[int(seg)], i) for i, seg in enumerate(t.text_segments) if int(seg) in first]
    cp, tp = (torch.tensor(x) for x in zip(*pairs))
    contrast, ranking = contrastive_and_ranking(click.embeddings[cp], text.embeddings[tp],
                                                torch.tensor(np.log(1 / 0.07)))
    assert b["contrastive"].item() == pytest.approx(0.1 * float(contrast + ranking), rel=1e-5)
    classes = class_distillation(text.class_logits(CLASSES)[tp], click.class_logits(CLASSES)[cp])
    assert b["referring_distill"].item() == pytest.approx(0.1 * float(classes), rel=1e-5)
    assert b["distill"].item() != pytest.approx(a["distill"].item())
    b["contrastive"].backward()
    assert released.logit_scale.grad is not None and released.logit_scale.grad != 0


def test_the_learnable_scale_of_ours_trains_and_resumes(tmp_path, monkeypatch):
    (tmp_path / "raw").mkdir()
    scenes = described_scenes(tmp_path / "raw", ((2, "the chair"), (3, "the table")))

    def params_in(folder):
        params = Params()
        return dataclasses.replace(
            params, loss=dataclasses.replace(params.loss, inter_forms="official"),
            text=dataclasses.replace(params.text, cache_file=None),
            train=dataclasses.replace(params.train, out=str(folder), epochs=3, val_scenes=None,
                                      augment=dataclasses.replace(params.train.augment,
                                                                  elastic=())))

    whole = train(params_in(tmp_path / "whole"), train_scenes=scenes, progress=False)
    scale = float(load_checkpoint(whole.last)["criterion"]["logit_scale"])
    assert scale != pytest.approx(float(np.log(1 / 0.07)))  # it was trained
    resumed = interrupted_then_resumed(monkeypatch, params_in(tmp_path / "split"), scenes, 2)
    assert float(load_checkpoint(resumed.last)["criterion"]["logit_scale"]) == \
        pytest.approx(scale, rel=1e-5)
