"""The official recipe's losses on cases small enough to compute by hand: the sparse matcher's
restriction and top-1 choice, the instance, pseudo-mask, IoU and prompt losses with the code's
reductions, the summation over decoder outputs, the semantic target's quirk, click -> generic
distillation and the contrastive terms; the targets from a scene in the ScanNet layout."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scannet_files import write_label_map, write_scannet_scene
from uniseg3d.datasets.labels import read_label_map
from uniseg3d.datasets.loader import Sample
from uniseg3d.datasets.scannet import read_scannet_scene
from uniseg3d.model.inter_task import click_distillation
from uniseg3d.model.official.criterion import (ContrastiveCriterion, OfficialCriterion,
                                               generic_layer_losses, official_iou,
                                               prompt_layer_loss, sparse_match)
from uniseg3d.model.official.decoder import LOGIT_SCALE, OfficialPredictions
from uniseg3d.model.official.network import OfficialSceneOutput
from uniseg3d.model.official.targets import (UNLABELLED, OfficialTargets, official_semantic,
                                             official_targets)


def bce(logit: float, target: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def dice(logits: list[float], targets: list[float]) -> float:
    p = [1 / (1 + math.exp(-x)) for x in logits]
    inter = sum(a * b for a, b in zip(p, targets))
    return 1 - (2 * inter + 1) / (sum(p) + sum(targets) + 1)


def test_sparse_match_takes_the_cheapest_query_inside_each_object():
    cost = torch.tensor([[0.1, 0.9], [0.5, 0.2], [0.3, 0.1], [0.0, 0.0]])
    allowed = torch.tensor([[True, True, False, False],   # object 0: queries 0 and 1
                            [False, True, True, False]])  # object 1: queries 1 and 2
    rows, cols = sparse_match(cost, allowed)
    assert sorted(zip(cols.tolist(), rows.tolist())) == [(0, 0), (1, 2)]
    # query 3 is cheapest for both objects but seeded inside neither: never matched
    # an object no query is seeded in stays unmatched; ties with the second cost match none
    rows, cols = sparse_match(torch.tensor([[0.4, 0.2], [0.4, 0.3]]),
                              torch.tensor([[True, True], [False, False]]))
    assert rows.tolist() == [] and cols.tolist() == []
    rows, cols = sparse_match(torch.tensor([[0.4], [0.1]]), torch.tensor([[True, False]]))
    assert rows.tolist() == [0] and cols.tolist() == [0]  # the only query inside
    rows, cols = sparse_match(torch.tensor([[0.4, 0.1]]), torch.tensor([[True], [True]]))
    assert sorted(rows.tolist()) == [0, 0] and sorted(cols.tolist()) == [0, 1]  # Q <= topk


def test_iou_target_binarises_at_one_half():
    logits = torch.tensor([[2.0, 0.0, -1.0, -3.0]])  # sigmoid 0.5 counts as inside
    targets = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    assert official_iou(logits, targets).item() == pytest.approx(1 / 3, abs=1e-6)


THINGS = torch.eye(18)[:, None]  # one unit prototype per thing class, D = 18


def prediction(masks, classes, iou=None, queries=None) -> OfficialPredictions:
    """Queries whose class embedding is the unit prototype of `classes` (cosine 1, 0 else)."""
    width = len(masks[0]) if masks else 4
    masks = torch.tensor(masks, dtype=torch.float32).reshape(-1, width).requires_grad_()
    embeddings = torch.eye(18)[torch.tensor(classes, dtype=torch.long)]
    q = torch.zeros(len(classes), 4) if queries is None else torch.tensor(queries)
    iou = torch.zeros(len(classes)) if iou is None else torch.tensor(iou)
    return OfficialPredictions(masks, embeddings, None, q, iou)


def class_ce(own: int, target: int) -> float:
    """CE of a query whose embedding is prototype `own`, against class `target` (18 = none)."""
    logits = [LOGIT_SCALE if c == own else 0.0 for c in range(18)] + [0.0]
    return -logits[target] + math.log(sum(math.exp(v - LOGIT_SCALE) for v in logits)) \
        + LOGIT_SCALE


def two_object_scene() -> tuple[OfficialPredictions, OfficialTargets, torch.Tensor]:
    """Four superpoints, objects A = {0, 1} (class 3) and B = {2, 3} (class 5); three generic
    queries seeded at superpoints 0, 2, 3; one pseudo mask {3}."""
    pred = prediction([[4.0, 2.0, -3.0, -3.0],    # in A, good for A
                       [-2.0, -2.0, 1.0, -1.0],   # in B, half right
                       [-2.0, -2.0, 3.0, 3.0]],   # in B, good for B
                      classes=[3, 0, 5], iou=[0.5, 0.2, 0.9])
    t = OfficialTargets(masks=torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, 1]]),
                        labels=torch.tensor([3, 5]), novel_masks=torch.tensor([[0.0, 0, 0, 1]]),
                        semantic=torch.zeros(4, dtype=torch.long),
                        click_rows=torch.tensor([0, 1]), text_rows=torch.tensor([1]))
    return pred, t, torch.tensor([0, 2, 3])


def test_instance_losses_by_hand():
    pred, t, generic = two_object_scene()
    terms, [(rows, cols)] = generic_layer_losses([pred], [t], [generic], THINGS, last=True)
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 0), (2, 1)]
    # query 1 is left, seeded at superpoint 2: outside the pseudo mask {3}, so unmatched
    ce = (0.1 * class_ce(0, 18) + class_ce(3, 3) + class_ce(5, 5)) / (0.1 + 1 + 1)
    masks = pred.masks.detach().tolist()
    bce_a = np.mean([bce(x, y) for x, y in zip(masks[0], [1, 1, 0, 0])])
    bce_b = np.mean([bce(x, y) for x, y in zip(masks[2], [0, 0, 1, 1])])
    dices = (dice(masks[0], [1, 1, 0, 0]) + dice(masks[2], [0, 0, 1, 1])) / 2
    expected = 0.5 * ce + (bce_a + bce_b) / 2 + 4 * dices
    assert terms["instance"].item() == pytest.approx(expected, rel=1e-5)
    assert terms["novel"].item() == 0.0
    iou_a, iou_b = 2 / 2, 2 / 2  # both binarised masks equal their objects
    expected_iou = 0.1 * ((0.5 - iou_a) ** 2 + (0.9 - iou_b) ** 2) / 2
    assert terms["iou"].item() == pytest.approx(expected_iou, rel=1e-5)
    terms["instance"].backward()
    assert pred.masks.grad[1].abs().sum() == 0  # an unmatched query gets no mask gradient


def test_pseudo_masks_are_matched_among_the_unmatched_queries_without_a_class_loss():
    pred, t, generic = two_object_scene()
    t = dataclasses.replace(t, novel_masks=torch.tensor([[0.0, 0, 1, 0]]))  # holds query 1
    terms, _ = generic_layer_losses([pred], [t], [generic], THINGS, last=True)
    masks = pred.masks.detach().tolist()
    novel_bce = np.mean([bce(x, y) for x, y in zip(masks[1], [0, 0, 1, 0])])
    expected = 0.1 * novel_bce + 0.1 * 4 * dice(masks[1], [0, 0, 1, 0])
    assert terms["novel"].item() == pytest.approx(expected, rel=1e-5)
    ce = (class_ce(3, 3) + class_ce(5, 5)) / 2  # query 1 is ignored by the class loss
    base, _ = generic_layer_losses([pred], [dataclasses.replace(
        t, novel_masks=torch.zeros(0, 4))], [generic], THINGS, last=True)
    with_ignored = base["instance"].item() - 0.5 * (
        (0.1 * class_ce(0, 18) + class_ce(3, 3) + class_ce(5, 5)) / 2.1) + 0.5 * ce
    assert terms["instance"].item() == pytest.approx(with_ignored, rel=1e-5)
    # the query the pseudo mask took is a regression target of the IoU head too
    assert terms["iou"].item() > base["iou"].item()


def test_dice_is_scaled_by_four_on_the_last_output_and_by_four_over_the_batch_before():
    pred, t, generic = two_object_scene()
    last, _ = generic_layer_losses([pred, pred], [t, t], [generic, generic], THINGS, last=True)
    aux, _ = generic_layer_losses([pred, pred], [t, t], [generic, generic], THINGS, last=False)
    masks = pred.masks.detach().tolist()
    dices = (dice(masks[0], [1, 1, 0, 0]) + dice(masks[2], [0, 0, 1, 1])) / 2
    assert (last["instance"] - aux["instance"]).item() == pytest.approx(dices * (4 - 2),
                                                                        rel=1e-5)
    # prompt losses: one scene without prompts still counts in the batch of the aux outputs
    clicks = prediction([[3.0, 3.0, -3.0, -3.0]], classes=[3])
    empty = prediction([], classes=[])
    masks_a, labels_a = t.masks[:1], t.labels[:1]
    args = ([clicks, empty], [masks_a, t.masks[:0]], [labels_a, t.labels[:0]], THINGS)
    d = dice([3.0, 3.0, -3.0, -3.0], [1, 1, 0, 0])
    b = np.mean([bce(x, y) for x, y in zip([3.0, 3.0, -3.0, -3.0], [1, 1, 0, 0])])
    ce = class_ce(3, 3)
    assert prompt_layer_loss(*args, last=True).item() == pytest.approx(0.5 * ce + b + 4 * d,
                                                                       rel=1e-5)
    assert prompt_layer_loss(*args, last=False).item() == pytest.approx(0.5 * ce + b + 2 * d,
                                                                        rel=1e-5)


def prompted_scene():
    """The two-object scene with two clicks and a description, over two decoder outputs."""
    pred, t, generic = two_object_scene()
    clicks = prediction([[4.0, 2.0, -3.0, -3.0], [-2.0, -2.0, 3.0, 3.0]], classes=[3, 5],
                        queries=[[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    texts = prediction([[-2.0, -2.0, 2.0, 2.0]], classes=[5], queries=[[0.0, 1, 0, 0]])
    prototypes = torch.cat([torch.zeros(2, 1, 18), THINGS])  # wall, floor, then the things

    def layer(semantic):
        return OfficialPredictions(
            torch.cat([pred.masks, clicks.masks, texts.masks]),
            torch.cat([pred.class_embeddings, clicks.class_embeddings, texts.class_embeddings]),
            semantic, torch.cat([pred.queries, clicks.queries, texts.queries]),
            torch.cat([pred.iou, clicks.iou, texts.iou]))

    semantic = F.normalize(torch.ones(6, 18), dim=-1)
    out = OfficialSceneOutput([layer(None), layer(semantic)], generic, 2, 1)
    return pred, clicks, t, generic, out, prototypes


def test_the_criterion_sums_every_output_and_scales_the_prompt_losses():
    pred, clicks, t, generic, out, prototypes = prompted_scene()
    losses = OfficialCriterion(lambda_inter=0.1)([out], [t], prototypes)
    one, _ = generic_layer_losses([pred], [t], [generic], THINGS, last=True)
    aux, _ = generic_layer_losses([pred], [t], [generic], THINGS, last=False)
    assert losses["instance"].item() == pytest.approx((one["instance"] + aux["instance"]).item())
    click_last = prompt_layer_loss([clicks], [t.masks], [t.labels], THINGS, last=True)
    click_aux = prompt_layer_loss([clicks], [t.masks], [t.labels], THINGS, last=False)
    assert losses["click"].item() == pytest.approx(0.1 * (click_last + click_aux).item())
    total = sum(v for k, v in losses.items() if k != "total")
    assert losses["total"].item() == pytest.approx(total.item())
    # semantic: every query's logits are equal over the 18 things and 0 for wall / floor and
    # the dropped background; target class 0 (wall): CE = log(2 + 18 e^s) with s = 100 / sqrt 18
    s = LOGIT_SCALE / math.sqrt(18)
    expected = 0.2 * (math.log(2 + 18 * math.exp(s)))
    assert losses["semantic"].item() == pytest.approx(expected, rel=1e-5)


def test_the_components_leave_out_their_terms_alone():
    *_, t, _, out, prototypes = prompted_scene()
    full = OfficialCriterion(lambda_inter=0.1)([out], [t], prototypes)
    assert full["class_distill"].item() > 0  # one click-text pair: contrastive, ranking are 0
    for switches, off in (({"distillation": False}, {"distill"}),
                          ({"contrastive": False}, {"contrastive", "ranking", "class_distill"})):
        losses = OfficialCriterion(0.1, **switches)([out], [t], prototypes)
        for key in full:
            if key != "total":
                expected = 0.0 if key in off else full[key].item()
                assert losses[key].item() == pytest.approx(expected), (switches, key)


def test_distillation_teaches_the_matched_query_where_its_click_is_surest():
    generic = prediction([[0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, 0, 0, 0],
                          [1.0, 1.0, 1.0, 1.0, 1.0, 1, 1, 1, 1, 1]], classes=[3, 5])
    clicks = prediction([[5.0, -1, -1, -1, -1, -1, -1, -1, -1, -1],      # instance 1's click
                         [-1.0, 2.0, -1, -1, -1, -1, -1, -1, -1, -1]],   # instance 0's click
                        classes=[5, 3])
    rows, cols = torch.tensor([0, 1]), torch.tensor([0, 1])  # query 0 -> instance 0, 1 -> 1
    loss = click_distillation(generic.masks, clicks.masks, rows, cols,
                              click_rows=torch.tensor([1, 0]))
    # 10 % of 10 superpoints: superpoint 0 (logit 5, the click of instance 1 -> query 1 at 1.0)
    assert loss.item() == pytest.approx(
        -(torch.sigmoid(torch.tensor(5.0)) * math.log(torch.sigmoid(torch.tensor(1.0)))
          + (1 - torch.sigmoid(torch.tensor(5.0)))
          * math.log(1 - torch.sigmoid(torch.tensor(1.0)))).item(), rel=1e-5)
    assert click_distillation(generic.masks, clicks.masks, rows[:1], cols[:1],
                              click_rows=torch.tensor([1, 0])) is None  # one unmatched


def test_contrastive_ranking_and_class_distillation_by_hand():
    clicks = prediction([[0.0, 0.0]] * 2, classes=[3, 5], queries=[[1.0, 0.0], [0.0, 1.0]])
    texts = prediction([[0.0, 0.0]] * 2, classes=[5, 3], queries=[[0.6, 0.8], [1.0, 0.0]])
    criterion = ContrastiveCriterion()
    contrastive, ranking, classes = criterion(clicks, texts, torch.tensor([0, 1]),
                                              torch.tensor([1, 0]), THINGS)
    # text 0 -> click 1 (cos 0.8; click 0: 0.6), text 1 -> click 0 (cos 1; click 1: 0)
    refer = np.array([[0.0, 1.0], [1.0, 0.0]])
    key = np.array([[0.6, 0.8], [1.0, 0.0]])
    logits = math.log(1 / 0.07) * refer @ key.T

    def ce(rows):
        return np.mean([-row[i] + np.log(np.exp(row).sum()) for i, row in enumerate(rows)])

    assert contrastive.item() == pytest.approx((ce(logits) + ce(logits.T)) / 2, rel=1e-5)
    cos = refer @ key.T  # pair (i, j): relu(cos[i, j] - cos[j, j])
    assert ranking.item() == pytest.approx(max(0, cos[1, 0] - cos[0, 0])
                                           + max(0, cos[0, 1] - cos[1, 1]), abs=1e-6)
    # each text has its click's class: sigmoid 1 there, 0.5 on the other 18 logits of both
    assert classes.item() == pytest.approx(18 / 19 * math.log(2), rel=1e-5)
    contrastive.backward()
    assert criterion.logit_scale.grad is not None  # the scale is learned


def test_targets_of_a_scannet_scene(tmp_path):
    root = tmp_path / "raw"
    scene = read_scannet_scene(write_scannet_scene(root, "scene0000_00", seed=0),
                               read_label_map(write_label_map(tmp_path / "labels.tsv")))
    from uniseg3d.model.official.targets import thing_instances
    sample = Sample(scene, np.zeros(0, np.int64), np.zeros(0, np.int64), [],
                    np.zeros(0, np.int64))
    things = thing_instances(sample)
    sample = dataclasses.replace(sample, click_instances=things,
                                 click_points=np.zeros(len(things), np.int64))
    t = official_targets(sample)
    assert len(t.masks) == len(things) and 0 < len(things) < scene.num_instances  # walls out
    assert t.labels.min() >= 0 and t.labels.max() < 18
    assert t.click_rows.tolist() == list(range(len(things)))
    # a superpoint with no majority class takes class 0, an unlabelled majority is ignored
    semantic = np.array([5, 5, 5, 7, 8, 9, -1, -1, -1, 3])
    superpoints = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    assert official_semantic(semantic, superpoints).tolist() == [5, 0, UNLABELLED]
    with pytest.raises(ValueError, match="pseudo masks"):
        official_targets(sample, novel_masks=np.zeros((2, 3), bool))
