"""Training: the tiny model learns, checkpoints round-trip, and resume repeats the run."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from resume import interrupted_then_resumed
from scannet_files import described_scenes
from uniseg3d.config import Params
from uniseg3d.datasets.loader import make_sample
from uniseg3d.model.inference import predict_scene
from uniseg3d.model.inputs import scene_input
from uniseg3d.model.targets import semantic_log_prior
from uniseg3d.model.text_encoder import class_embeddings
from uniseg3d.pipelines.train import (build_model, class_prompt_names, load_checkpoint,
                                      load_trained_model, make_text_encoder, train)
from uniseg3d.datasets.classes import scannet20


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return described_scenes(tmp_path_factory.mktemp("raw"), (
        (2, "the chair next to the table"), (3, "the large table in the middle")))


def params_for(tmp_path, **train) -> Params:
    params = Params()
    augment = dataclasses.replace(params.train.augment, elastic=())
    return dataclasses.replace(
        params, text=dataclasses.replace(params.text, cache_file=str(tmp_path / "text.pt")),
        train=dataclasses.replace(params.train, out=str(tmp_path / "run"), augment=augment,
                                  val_scenes=None, **train))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_checkpoint_round_trip(tmp_path, scenes):
    params = params_for(tmp_path, epochs=1)
    result = train(params, train_scenes=scenes, progress=False)
    state = load_checkpoint(result.last)
    assert state["epoch"] == 0 and len(state["history"]) == 1
    model = build_model(params, 384)
    model.load_state_dict(state["model"])
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state["model"][name]), name
    prior = torch.from_numpy(semantic_log_prior(scenes)).float()  # of the training scenes
    assert torch.equal(state["model"]["semantic_log_prior"], prior)
    assert torch.equal(load_trained_model(result.last)[0].semantic_log_prior, prior)
    del state["model"]["semantic_log_prior"]  # a checkpoint from before the prior: no adjustment
    torch.save({**state, "history": "[]"}, tmp_path / "old.pt")
    assert not load_trained_model(tmp_path / "old.pt")[0].semantic_log_prior.any()
    assert result.best.is_file()
    assert not list(result.out.glob("best_*.pt"))  # best_by loss: no metric checkpoints
    assert not any(key.startswith("val_") for key in result.history[0])
    assert not list(result.out.glob("*.tmp*"))


def test_resume_reproduces_the_uninterrupted_run(tmp_path, scenes, monkeypatch):
    full = train(params_for(tmp_path / "a", epochs=3), train_scenes=scenes, progress=False)
    resumed = interrupted_then_resumed(monkeypatch, params_for(tmp_path / "b", epochs=3),
                                       scenes, epoch=2)
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2]
    assert resumed.history[2]["train_total"] == pytest.approx(full.history[2]["train_total"],
                                                              rel=1e-5)


def test_two_stage_fine_tuning_lowers_the_learning_rate(tmp_path, scenes):
    result = train(params_for(tmp_path, epochs=1, fine_tune_epochs=1, lr=1e-3),
                   train_scenes=scenes, progress=False)
    assert [h["stage"] for h in result.history] == [0, 1]
    # stage 1 starts from the best checkpoint at lr x 0.001
    assert result.history[0]["lr"] == pytest.approx(1e-3)
    assert result.history[1]["lr"] == pytest.approx(1e-6)


def test_tiny_model_overfits_two_scenes(tmp_path, scenes):
    params = params_for(tmp_path, epochs=150, lr=2e-3, batch_size=2, weight_decay=0.0)
    params = dataclasses.replace(params, loss=dataclasses.replace(params.loss, prompt_weight=1.0))
    result = train(params, train_scenes=scenes, progress=False)
    assert result.history[-1]["train_total"] < result.history[0]["train_total"] / 2
    encoder = make_text_encoder(params)
    classes = class_embeddings(encoder, class_prompt_names(scannet20().names))
    model = build_model(params, classes.shape[1])
    model.load_state_dict(load_checkpoint(result.last)["model"])
    for scene in scenes:
        sample = make_sample(scene, params.prompts, np.random.default_rng(0), training=False)
        prediction = predict_scene(model, scene_input(sample, encoder.encode_texts(sample.texts)),
                                   classes)
        for k, target in enumerate(sample.click_instances):
            assert iou(prediction.clicks.masks[k], scene.instance == target) > 0.8
            assert max(iou(m, scene.instance == target) for m in prediction.instances.masks) > 0.8
        for k, target in enumerate(sample.text_instances):
            assert iou(prediction.texts.masks[k], scene.instance == target) > 0.8
