"""Best checkpoints by validation metrics, as UniSeg3D's checkpoint hook keeps them."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from scannet_files import described_scenes
from uniseg3d.config import ConfigError, Params, load_params
from uniseg3d.datasets.loader import evaluation_sample
from uniseg3d.pipelines.official_training import official_training
from uniseg3d.pipelines.train import (
    CHECKPOINT_BEST, CHECKPOINT_LAST, load_checkpoint, load_trained_model, save_best, train)
from uniseg3d.pipelines.validation import best_file, improved, metric_epoch, validation_metrics


def test_validated_epochs_follow_the_released_dynamic_intervals():
    # (1, 16), (496, 1) over 512 epochs: 16, 32, ..., 480, then every epoch from 496 on
    validated = [e + 1 for e in range(512) if metric_epoch(e, 512, 16, 16)]
    assert validated == list(range(16, 481, 16)) + list(range(496, 513))
    assert [e + 1 for e in range(20) if metric_epoch(e, 20, 8, 3)] == [8, 16, 17, 18, 19, 20]
    assert [e + 1 for e in range(5) if metric_epoch(e, 5, 16, 0)] == [5]  # the last, always


def test_improved_is_strict_and_skips_missing_and_nan():
    history = [{"val_pq": math.nan}]
    assert not improved(history, "pq")
    history.append({})  # not validated
    assert not improved(history, "pq")
    history.append({"val_pq": 0.2})
    assert improved(history, "pq")
    history.append({"val_pq": 0.2})  # a tie keeps the earlier one (the hook's `>`)
    assert not improved(history, "pq")
    history.append({"val_pq": 0.25})
    assert improved(history, "pq")


def test_best_files_follow_each_metric_and_best_pt_follows_all_ap(tmp_path):
    records = [{}, {"val_all_ap": math.nan, "val_miou": 0.3, "val_pq": 0.1},
               {"val_all_ap": 0.4, "val_miou": 0.2, "val_pq": 0.1},
               {}, {"val_all_ap": 0.4, "val_miou": 0.5, "val_pq": 0.3},
               {"val_all_ap": 0.6, "val_miou": 0.1, "val_pq": 0.2}]

    def save(path):
        path.write_text(str(epoch))

    def written(name):
        return int((tmp_path / name).read_text())

    history, bests = [], []
    for epoch, record in enumerate(records):
        history.append(record)
        save(tmp_path / CHECKPOINT_LAST)
        save_best(tmp_path, history, "metrics", save)
        bests.append(written(CHECKPOINT_BEST))
    assert bests == [0, 1, 2, 2, 2, 5]  # the last epoch's until all_ap has a value
    assert written(best_file("all_ap")) == 5
    assert written(best_file("miou")) == 4
    assert written(best_file("pq")) == 4


def test_best_by_is_checked_and_the_official_recipe_chooses_metrics():
    with pytest.raises(ConfigError, match="train.best_by"):
        dataclasses.replace(Params().train, best_by="accuracy")
    with pytest.raises(ConfigError, match="validate_every"):
        dataclasses.replace(Params().train, validate_every=0)
    assert load_params().train.best_by == "loss"  # ours: by the validation loss
    cfg = official_training(Params()).train
    assert (cfg.best_by, cfg.validate_every, cfg.validate_last) == ("metrics", 16, 16)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return described_scenes(tmp_path_factory.mktemp("raw"), (
        (2, "the chair next to the table"), (3, "the large table in the middle")))


def test_training_keeps_the_metrics_of_the_checkpoints_it_writes(tmp_path, scenes):
    params = Params()
    params = dataclasses.replace(
        params, text=dataclasses.replace(params.text, cache_file=str(tmp_path / "text.pt")),
        train=dataclasses.replace(
            params.train, out=str(tmp_path / "run"), epochs=3, lr=1e-3, best_by="metrics",
            validate_every=2, validate_last=0,
            augment=dataclasses.replace(params.train.augment, elastic=())))
    result = train(params, train_scenes=scenes, val_scenes=scenes, progress=False)
    keys = {"val_all_ap", "val_miou", "val_pq"}
    assert [keys <= set(r) for r in result.history] == [False, True, True]
    # the metrics recorded in training are those of the model in the checkpoint
    model, encoder, classes = load_trained_model(result.last)
    samples = [evaluation_sample(s, params, index) for index, s in enumerate(scenes)]
    assert validation_metrics(model, samples, encoder, classes) == pytest.approx(
        {k[4:]: result.history[-1][k] for k in keys}, nan_ok=True)
    for metric in ("all_ap", "miou", "pq"):
        values = [r[f"val_{metric}"] for r in result.history[1:]]
        expected = 2 if values[1] > values[0] else 1  # epoch of the (strictly) best value
        assert load_checkpoint(result.out / best_file(metric))["epoch"] == expected, metric
    best, by_ap = load_checkpoint(result.best), load_checkpoint(result.out / best_file("all_ap"))
    assert best["epoch"] == by_ap["epoch"]
    assert all(torch.equal(best["model"][k], by_ap["model"][k]) for k in best["model"])


def test_the_official_recipe_validates_as_its_hook_does(tmp_path, scenes):
    params = Params()
    params = dataclasses.replace(
        params, model=dataclasses.replace(params.model, recipe="official"),
        text=dataclasses.replace(params.text, cache_file=None),
        train=dataclasses.replace(params.train, out=str(tmp_path / "run"), epochs=2))
    result = train(params, train_scenes=scenes, val_scenes=scenes, progress=False)
    # two epochs, both within the last 16: both validated
    assert all({"val_all_ap", "val_miou", "val_pq"} <= set(r) for r in result.history)
    model, encoder, classes = load_trained_model(result.out / best_file("miou"))
    samples = [evaluation_sample(s, params, index) for index, s in enumerate(scenes)]
    assert validation_metrics(model, samples, encoder, classes)["miou"] == \
        pytest.approx(max(r["val_miou"] for r in result.history))
