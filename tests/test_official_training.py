"""Training the official recipe: the released config's choices applied, the prompt sampling on
a ScanNet-layout scene, a short run whose losses fall and whose checkpoint `predict` reads (and
`import-official`'s loader takes, criterion included), the SSTNet backbone init, the
restricted data-info pkl reader and the pseudo masks reaching the losses."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from resume import interrupted_then_resumed
from scannet_files import described_scenes
from official_files import random_state_dict, save_mmengine_checkpoint
from uniseg3d.cli import main
from uniseg3d.config import ModelConfig, Params
from uniseg3d.datasets.loader import make_sample
from uniseg3d.datasets.official_info import read_pseudo_masks
from uniseg3d.datasets.scene import InputError
from uniseg3d.model.official.checkpoint import OfficialCheckpointError, official_key
from uniseg3d.model.official.network import OfficialUniSeg3D
from uniseg3d.model.official.targets import thing_instances
from uniseg3d.pipelines.official_training import (OFFICIAL_AUGMENT, PAPER_EPOCHS, init_backbone,
                                                  official_training)
from uniseg3d.pipelines.train import load_checkpoint, load_trained_model, train

SMALL_CLIP = "ViT-S-32-alt"  # the smallest built-in open_clip text tower (width 256, 10 layers)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("raw")
    return root, described_scenes(root, ((2, "the chair next to the table"),
                                         (2, "a chair by the table"),
                                         (3, "the large table in the middle")))


def official_params(out: Path, epochs: int, **train) -> Params:
    params = Params()
    return dataclasses.replace(
        params, model=dataclasses.replace(params.model, recipe="official"),
        text=dataclasses.replace(params.text, clip_model=SMALL_CLIP, cache_file=None),
        train=dataclasses.replace(params.train, out=str(out), epochs=epochs, val_scenes=None,
                                  **train))


def test_the_released_config_choices_replace_ours(tmp_path):
    params = official_training(official_params(tmp_path, 3))
    assert (params.train.lr, params.train.weight_decay, params.train.batch_size,
            params.train.grad_clip, params.train.poly_power) == (1e-4, 0.05, 4, 10.0, 0.9)
    assert params.train.epochs == 3  # the schedule's length stays the user's (paper: 512)
    assert PAPER_EPOCHS == 512
    augment = params.train.augment
    assert augment == OFFICIAL_AUGMENT and not augment.flip and augment.elastic_probability == 0.5
    # 2 cm voxel units: granularities 6 and 20, magnitudes 40 and 160
    np.testing.assert_allclose(np.array(augment.elastic) / 0.02, [[6, 40], [20, 160]])
    assert params.prompts.train_click == "sampled" and params.prompts.corrective_rounds == 0


def test_official_prompts_click_every_thing_and_describe_each_object_once(raw):
    _, scenes = raw
    params = official_training(official_params(Path("unused"), 1))
    sample = make_sample(scenes[0], params.prompts, np.random.default_rng(0),
                         params.train.augment, training=True)
    things = thing_instances(sample)
    assert sorted(sample.click_instances.tolist()) == sorted(things.tolist())
    assert len(sample.texts) == 2  # objects 2 and 3: one of object 2's two descriptions
    assert sorted(sample.text_instances.tolist()) == sorted(
        {scenes[0].instance_index(2), scenes[0].instance_index(3)})
    for point, instance in zip(sample.click_points, sample.click_instances):
        assert sample.scene.instance[point] == instance


def test_a_short_official_run_learns_and_predict_reads_its_checkpoint(tmp_path, raw):
    root, scenes = raw
    result = train(official_params(tmp_path / "run", 6), train_scenes=scenes, progress=False)
    totals = [h["train_total"] for h in result.history]
    assert totals[-1] < 0.85 * totals[0], totals
    for key in ("instance", "click", "text", "semantic", "distill", "contrastive"):
        assert f"train_{key}" in result.history[0]
    state = load_checkpoint(result.last)
    assert state["recipe"] == "official" and state["text_model"] == SMALL_CLIP
    assert set(state["criterion"]) == {"contrastive_criterion.logit_scale"}
    model, _, prototypes = load_trained_model(result.last)
    assert isinstance(model, OfficialUniSeg3D) and prototypes.shape[:2] == (20, 1)
    mesh = root / "scans" / "scene0000_00" / "scene0000_00_vh_clean_2.ply"
    out = tmp_path / "predicted"
    assert main(["predict", str(mesh), "--checkpoint", str(result.last), "--click",
                 "0.75,0.75,0.9", "--text", "the chair", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert "instances" in summary


def test_resume_restores_the_contrastive_scale(tmp_path, raw, monkeypatch):
    _, scenes = raw
    whole = train(official_params(tmp_path / "whole", 3), train_scenes=scenes, progress=False)
    resumed = interrupted_then_resumed(monkeypatch, official_params(tmp_path / "split", 3),
                                       scenes, epoch=2)
    assert resumed.history[2]["train_total"] == pytest.approx(whole.history[2]["train_total"],
                                                              rel=1e-5)
    scale = load_checkpoint(whole.last)["criterion"]["contrastive_criterion.logit_scale"]
    assert float(scale) != pytest.approx(np.log(1 / 0.07))  # learned
    assert float(load_checkpoint(resumed.last)["criterion"][
        "contrastive_criterion.logit_scale"]) == pytest.approx(float(scale), rel=1e-5)


def test_the_sstnet_backbone_loads_strictly(tmp_path):
    state = random_state_dict()
    backbone = {k: v for k, v in state.items() if official_key(k).startswith("backbone.")}
    extra = {"semantic_linear.weight": torch.zeros(20, 32)}  # SSTNet's own heads: ignored
    save_mmengine_checkpoint(tmp_path, tmp_path / "sstnet_scannet.pth",
                             {f"module.{k}": v for k, v in {**backbone, **extra}.items()})
    model = OfficialUniSeg3D(ModelConfig(), text_model=SMALL_CLIP)
    assert init_backbone(model, tmp_path / "sstnet_scannet.pth") == len(backbone)
    loaded = model.state_dict()
    for key, value in backbone.items():
        assert torch.equal(loaded[official_key(key)], value)
    missing = dict(list(backbone.items())[1:])
    (tmp_path / "b").mkdir()
    save_mmengine_checkpoint(tmp_path / "b", tmp_path / "partial.pth", missing)
    with pytest.raises(OfficialCheckpointError, match="1 tensors missing"):
        init_backbone(model, tmp_path / "partial.pth")


class Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_the_info_pkl_gives_pseudo_masks_and_refuses_code(tmp_path):
    masks = np.zeros((2, 7), dtype=bool)
    masks[0, :3] = masks[1, 5:] = True
    info = {"metainfo": {"dataset": "scannet"}, "data_list": [
        {"lidar_points": {"lidar_path": "scene0000_00.bin", "num_pts_feats": 6},
         "super_pts_path": "scene0000_00.bin", "sam3d_pseudo_sp_masks": masks,
         "text_info": {"2": {"label_id": 2, "text": ["a chair"]}}},
        {"lidar_points": {"lidar_path": "scene0001_00.bin"}}]}  # no pseudo masks: skipped
    (tmp_path / "info.pkl").write_bytes(pickle.dumps(info))
    read = read_pseudo_masks(tmp_path / "info.pkl")
    assert list(read) == ["scene0000_00"] and np.array_equal(read["scene0000_00"], masks)
    marker = tmp_path / "ran"
    info["data_list"][0]["extra"] = Exploit(marker)
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps(info))
    with pytest.raises(InputError, match="refused"):
        read_pseudo_masks(tmp_path / "bad.pkl")
    assert not marker.exists()


def test_pseudo_masks_reach_the_losses(tmp_path, raw):
    _, scenes = raw
    num_sp = int(scenes[0].superpoints.max()) + 1
    masks = np.zeros((3, num_sp), dtype=bool)
    masks[np.arange(3), np.arange(3)] = True  # three one-superpoint pseudo objects
    info = {"data_list": [{"lidar_points": {"lidar_path": f"{scenes[0].scene_id}.bin"},
                           "sam3d_pseudo_sp_masks": masks}]}
    (tmp_path / "info.pkl").write_bytes(pickle.dumps(info))
    params = official_params(tmp_path / "run", 1, pseudo_masks=str(tmp_path / "info.pkl"))
    result = train(params, train_scenes=scenes[:1], progress=False)
    assert result.history[0]["train_novel"] > 0
    without = train(official_params(tmp_path / "plain", 1), train_scenes=scenes[:1],
                    progress=False)
    assert without.history[0]["train_novel"] == 0
