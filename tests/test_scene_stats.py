"""Per-scene statistics: every metric rescored from the statistics of a resample of the scenes
equals the metric computed directly on the resampled scenes; the file format round-trips and
refuses what it cannot read."""

from __future__ import annotations

import math

import numpy as np
import pytest

from test_metrics_instance import as_inputs, random_scene
from uniseg3d.datasets.scene import InputError
from uniseg3d.metrics.instance import InstanceGT, evaluate_instances, instance_stats
from uniseg3d.metrics.interactive import (
    multi_object_clicks, protocol_scene_stats, protocol_stats, summarise)
from uniseg3d.metrics.open_vocab import evaluate_open_vocab, open_vocab_stats
from uniseg3d.metrics.panoptic import PanopticSegmentation, evaluate_panoptic, panoptic_stats
from uniseg3d.metrics.prompt import (
    Clicks, evaluate_interactive, evaluate_referring, interactive_stats, referring_stats)
from uniseg3d.metrics.scene_stats import (
    SCENE_STATS_DIR, multiplicities, read_evaluation, read_stats, write_stats)
from uniseg3d.metrics.semantic import evaluate_semantic, semantic_stats
from uniseg3d.metrics.tasks import task_scores

SCENES = 6
RESAMPLES = 5
VALID = [3, 4, 5, 7]
NAMES = ["a", "b", "c", "d"]


def resamples(rng: np.random.Generator) -> np.ndarray:
    """Every scene once, then random draws with replacement (some scenes left out)."""
    return np.vstack([np.arange(SCENES), rng.integers(0, SCENES, (RESAMPLES - 1, SCENES))])


def assert_row_equals(scores: dict, direct: dict, row: int, path: str = "") -> None:
    """The (R,) arrays of `scores` at `row` equal the plain numbers of `direct` (1e-9; NaN
    where NaN)."""
    for key, expected in direct.items():
        if isinstance(expected, dict):
            assert_row_equals(scores[key], expected, row, f"{path}{key}/")
            continue
        value = float(scores[key][row])
        if math.isnan(expected):
            assert math.isnan(value), path + key
        else:
            assert value == pytest.approx(expected, abs=1e-9, rel=0), path + key


def check_resamples(stats, direct_on, rng: np.random.Generator) -> None:
    """`direct_on(indices)`: the metric computed directly on the scenes `indices`."""
    draws = resamples(rng)
    scores = task_scores(stats, multiplicities(draws, SCENES))
    for row, indices in enumerate(draws):
        assert_row_equals(scores, direct_on(indices), row)


def test_resampled_semantic_equals_direct():
    rng = np.random.default_rng(0)
    gts = [rng.integers(-1, 5, 400) for _ in range(SCENES)]
    preds = [np.where(rng.random(400) < 0.6, gt, rng.integers(-1, 6, 400)) for gt in gts]
    stats = semantic_stats(gts, preds, VALID, NAMES)
    check_resamples(stats, lambda ix: evaluate_semantic([gts[i] for i in ix],
                                                        [preds[i] for i in ix], VALID, NAMES),
                    rng)


@pytest.mark.parametrize("seed", range(3))
def test_resampled_instance_ap_equals_direct(seed):
    rng = np.random.default_rng(seed)
    gts, preds = as_inputs([random_scene(rng, VALID) for _ in range(SCENES)])
    stats = instance_stats(gts, preds, VALID, NAMES)
    check_resamples(stats, lambda ix: evaluate_instances([gts[i] for i in ix],
                                                         [preds[i] for i in ix], VALID, NAMES),
                    rng)


def test_resampled_open_vocab_ap_equals_direct():
    rng = np.random.default_rng(3)
    names = ["x", "a", "b", "c", "d", "e", "f", "g"]  # label values 3, 4, 5, 7 are a, ..., d
    gts, preds = as_inputs([random_scene(rng, VALID) for _ in range(SCENES)])
    subsets, excluded = {"first": ["a", "b"], "none": ["z"]}, ["e"]
    stats = open_vocab_stats(gts, preds, names, subsets, excluded)
    check_resamples(stats, lambda ix: evaluate_open_vocab(
        [gts[i] for i in ix], [preds[i] for i in ix], names, subsets, excluded), rng)


def panoptic_scene(rng: np.random.Generator, n: int = 300
                   ) -> tuple[PanopticSegmentation, PanopticSegmentation]:
    semantic = rng.integers(-1, 5, n)
    instance = np.where(semantic >= 2, rng.integers(0, 4, n), -1)
    noisy = np.where(rng.random(n) < 0.2, rng.integers(0, 5, n), semantic)
    return (PanopticSegmentation(semantic, instance),
            PanopticSegmentation(noisy, np.where(rng.random(n) < 0.1, -1, instance)))


def test_resampled_panoptic_equals_direct():
    rng = np.random.default_rng(4)
    scenes = [panoptic_scene(rng) for _ in range(SCENES)]
    names = ["wall", "floor", "chair", "table", "lamp"]
    stats = panoptic_stats([g for g, _ in scenes], [p for _, p in scenes], names)
    check_resamples(stats, lambda ix: evaluate_panoptic(
        [scenes[i][0] for i in ix], [scenes[i][1] for i in ix], names), rng)


def click_scene(rng: np.random.Generator, n: int = 600) -> Clicks:
    gt_ids = random_scene(rng, VALID, n)[0]
    instances = np.where(np.isin(gt_ids // 1000, VALID), gt_ids % 1000, -1)
    gt = InstanceGT(gt_ids // 1000, instances)
    targets = np.unique(instances[instances >= 0])
    masks = (instances[None] == targets[:, None]) ^ (rng.random((len(targets), n)) < 0.15)
    return Clicks(gt, targets, masks, rng.random(len(targets)))


def test_resampled_interactive_equals_direct():
    rng = np.random.default_rng(5)
    scenes = [click_scene(rng) for _ in range(SCENES)]
    stats = interactive_stats(scenes, VALID, NAMES)
    check_resamples(stats, lambda ix: evaluate_interactive([scenes[i] for i in ix], VALID,
                                                           NAMES), rng)


def test_resampled_referring_equals_direct():
    rng = np.random.default_rng(6)
    scenes = []
    for count in (3, 0, 2, 5, 1, 4):  # a scene without descriptions too
        gt = rng.random((count, 200)) < 0.3
        scenes.append((gt, gt ^ (rng.random((count, 200)) < rng.uniform(0, 0.5)),
                       rng.random(count) < 0.5))
    stats = referring_stats(*zip(*scenes))
    check_resamples(stats, lambda ix: evaluate_referring(*zip(*[scenes[i] for i in ix])), rng)


def test_resampled_click_curves_equal_direct():
    rng = np.random.default_rng(7)
    single = [[np.clip(np.cumsum(rng.uniform(-0.1, 0.3, 20)), 0, 1) for _ in range(k)]
              for k in (2, 0, 3, 1, 2, 4)]
    multi = [np.clip(np.cumsum(rng.uniform(-0.1, 0.2, len(multi_object_clicks(len(s))))), 0, 1)
             if s else None for s in single]
    stats = protocol_stats([protocol_scene_stats(str(i), s, m)
                            for i, (s, m) in enumerate(zip(single, multi))])

    def direct(indices: np.ndarray) -> dict:
        units = [u for i in indices for u in single[i]]
        rounds = [multi[i] for i in indices if multi[i] is not None]
        counts = [multi_object_clicks(len(single[i])) for i in indices if multi[i] is not None]
        return {"single": summarise(units), "multi": summarise(rounds, counts)}

    check_resamples(stats, direct, rng)


def test_statistics_file_round_trip(tmp_path):
    rng = np.random.default_rng(8)
    gts, preds = as_inputs([random_scene(rng, VALID) for _ in range(3)])
    stats = instance_stats(gts, preds, VALID, NAMES, scene_ids=["s0", "s1", "s2"])
    write_stats(tmp_path / SCENE_STATS_DIR / "instance.npz", stats)
    back = read_evaluation(tmp_path)["instance"]
    assert back.scene_ids == ("s0", "s1", "s2") and back.meta == stats.meta
    for name, values in stats.sums.items():
        np.testing.assert_array_equal(back.sums[name], values)
    for column, values in stats.tables["detections"].items():
        np.testing.assert_array_equal(back.tables["detections"][column], values)
    assert not list((tmp_path / SCENE_STATS_DIR).glob("*.partial"))


def test_unreadable_statistics_are_refused_naming_the_file(tmp_path):
    with pytest.raises(InputError, match="per-scene statistics"):
        read_evaluation(tmp_path)
    broken = tmp_path / "semantic.npz"
    broken.write_bytes(b"not an npz")
    with pytest.raises(InputError, match="semantic.npz"):
        read_stats(broken)
    np.savez(tmp_path / "other.npz", scene_ids=np.array(["a"]))
    with pytest.raises(InputError, match="other.npz: field .meta."):
        read_stats(tmp_path / "other.npz")
