"""`uniseg3d import-official` on a checkpoint in the released layout: every one of the official
model's 626 keys with its shape (the manifest in tests/data, taken from the official modules at
dk-liang/UniSeg3D c272954) in an mmengine checkpoint beside its metadata, random weights. It
converts strictly and loads into the official model; missing, extra and mis-shaped keys fail
naming them; a checkpoint that pickles code is refused without running it; `predict` and
`evaluate` run on the imported checkpoint (`tests/official_files.py`; the `released` fixture:
conftest)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from plyfile import PlyData

from official_files import RELEASED_PROTOTYPES, manifest
from uniseg3d.cli import main
from uniseg3d.config import EvaluateConfig, ModelConfig, Params
from uniseg3d.model.official.checkpoint import (OfficialCheckpointError, convert_state_dict,
                                                official_key, read_official_checkpoint,
                                                released_key)
from uniseg3d.model.official.network import OfficialUniSeg3D
from uniseg3d.palette import SCANNET20_COLORS
from uniseg3d.pipelines.evaluate import run_evaluate
from uniseg3d.pipelines.train import load_trained_model


def test_released_layout_converts_strictly_and_loads(released):
    model, encoder, prototypes = load_trained_model(released["out"])
    assert isinstance(model, OfficialUniSeg3D) and not model.training
    ours = model.state_dict()
    official = released["state"]
    assert len(official) == 626
    for key, value in official.items():
        if key.startswith("criterion."):
            continue
        assert torch.equal(ours[official_key(key)], value), key
    torch.testing.assert_close(prototypes, released["prototypes"])
    assert tuple(prototypes.shape) == RELEASED_PROTOTYPES and prototypes.dtype == torch.float32
    saved = torch.load(released["out"], weights_only=True)
    assert saved["recipe"] == "official" and saved["text_model"] == "convnext_large_d_320"
    assert torch.equal(saved["criterion"]["contrastive_criterion.logit_scale"],
                       official["criterion.contrastive_criterion.logit_scale"])
    # referring runs on the checkpoint's own CLIP tower: no other download
    assert encoder.encoder.tower is model.lang.text_encoder
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(171.0e6, rel=1e-3)


def test_missing_extra_and_misshaped_keys_fail_naming_them():
    with torch.device("meta"):
        expected = OfficialUniSeg3D(ModelConfig()).state_dict()
        official = {key: torch.empty(shape) for key, shape, _ in manifest()}
    convert_state_dict(official, expected)  # the manifest fits
    broken = dict(official)
    del broken["decoder.x_mask.0.weight"]
    broken["decoder.extra_head.weight"] = torch.empty(3, device="meta")
    broken["unet.u.conv.2.weight"] = torch.empty(96, 2, 2, 2, 32, device="meta")
    with pytest.raises(OfficialCheckpointError) as error:
        convert_state_dict(broken, expected)
    message = str(error.value)
    assert "3 problems" in message
    assert "missing: decoder.x_mask.0.weight" in message
    assert "unexpected: decoder.extra_head.weight" in message
    assert "shape of unet.u.conv.2.weight: (96, 2, 2, 2, 32), expected (96, 2, 2, 2, 64)" \
        in message


def test_the_key_map_is_one_to_one_both_ways():
    with torch.device("meta"):
        ours = OfficialUniSeg3D(ModelConfig()).state_dict()
    released = {key for key, _, _ in manifest() if not key.startswith("criterion.")}
    assert {released_key(k) for k in ours if k != "class_prototypes"} == released
    assert all(released_key(official_key(k)) == k for k in released)
    assert official_key("unet.u.blocks_tail.block0.i_branch.0.weight") == \
        "backbone.unet.inner.decoder.0.shortcut.0.weight"


def test_an_incomplete_checkpoint_fails_in_the_cli_naming_the_keys(tmp_path, released, caplog):
    state = {"input_conv.0.weight": torch.zeros(32, 3, 3, 3, 6),
             "decoder.bogus.weight": torch.zeros(2)}
    torch.save({"state_dict": state}, tmp_path / "partial.pth")
    code = main(["import-official", str(tmp_path / "partial.pth"), "--class-embeddings",
                 str(released["root"] / "scannet_cls_embedding.pth"), "--out",
                 str(tmp_path / "out.pt")])
    assert code == 2 and not (tmp_path / "out.pt").exists()
    assert "unexpected: decoder.bogus.weight" in caplog.text
    assert "missing: decoder.out_norm.weight" in caplog.text


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_that_pickles_code_is_refused_without_running_it(tmp_path, released,
                                                                      caplog):
    marker = tmp_path / "ran"
    torch.save({"state_dict": {"type_embedding.weight": torch.zeros(3, 32)},
                "meta": Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(OfficialCheckpointError, match="system"):
        read_official_checkpoint(tmp_path / "evil.pth")
    code = main(["import-official", str(tmp_path / "evil.pth"), "--class-embeddings",
                 str(released["root"] / "scannet_cls_embedding.pth"), "--out",
                 str(tmp_path / "out.pt")])
    assert code == 2 and "refused" in caplog.text
    assert not marker.exists() and not (tmp_path / "out.pt").exists()


def test_bad_class_embeddings_are_a_clear_error(tmp_path, released, caplog):
    torch.save(torch.zeros(18, 768), tmp_path / "cls.pth")
    code = main(["import-official", str(released["root"] / "model_best.pth"),
                 "--class-embeddings", str(tmp_path / "cls.pth"), "--out",
                 str(tmp_path / "out.pt")])
    assert code == 2 and "expected class embeddings of shape (20, prototypes, 768)" in caplog.text


def test_predict_on_the_imported_checkpoint(tmp_path, released, scannet_raw):
    mesh = scannet_raw / "scans" / "scene0000_00" / "scene0000_00_vh_clean_2.ply"
    out = tmp_path / "out"
    assert main(["predict", str(mesh), "--checkpoint", str(released["out"]), "--click",
                 "0.75,0.75,0.9", "--click", "2.0,1.6,0.75", "--text", "the chair",
                 "--classes", "chair,table,lamp", "--out", str(out)]) == 0
    arrays = np.load(out / "predictions.npz")
    vertices = PlyData.read(str(mesh))["vertex"].count
    assert set(arrays.files) == {
        "format_version", "semantic", "instance_masks", "instance_labels", "instance_scores",
        "panoptic_semantic", "panoptic_instance", "click_masks", "click_class_probs",
        "text_masks", "open_vocab_masks", "open_vocab_labels", "open_vocab_scores"}
    assert arrays["format_version"] == 1
    assert arrays["click_masks"].shape == (2, vertices)
    assert arrays["click_class_probs"].shape == (2, 20)
    assert arrays["text_masks"].shape == (1, vertices)
    semantic = PlyData.read(str(out / "semantic.ply"))["vertex"].data
    assert np.array_equal(semantic["label"], arrays["semantic"])
    colours = np.stack([semantic["red"], semantic["green"], semantic["blue"]], 1)
    assert np.array_equal(colours, SCANNET20_COLORS[arrays["semantic"]])
    panoptic = PlyData.read(str(out / "panoptic.ply"))["vertex"].data
    assert np.array_equal(panoptic["label"], arrays["panoptic_semantic"])
    assert np.array_equal(panoptic["instance"], arrays["panoptic_instance"])
    clicks = PlyData.read(str(out / "interactive.ply"))["vertex"].data["mask"]
    masks = arrays["click_masks"]
    for k, mask in enumerate(masks):  # a point in one object's mask only goes to that object
        assert (clicks[mask & (masks.sum(0) == 1)] == k).all()
        assert mask[clicks == k].all()
    assert (clicks[~masks.any(0)] == -1).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["open_vocabulary"]["classes"] == ["chair", "table", "lamp"]
    assert len(summary["instances"]) == len(arrays["instance_labels"])


def test_evaluate_on_the_imported_checkpoint(data, released):
    params = Params()
    params = dataclasses.replace(params, evaluate=EvaluateConfig(
        checkpoint=str(released["out"]), cache=str(data / "cache"), scenes=str(data / "val.txt"),
        replica_cache=str(data / "replica"), out=str(data / "official_reports"),
        dataset_label="unit-test"))
    metrics = run_evaluate(params, progress=False)
    for section in ("semantic", "instance", "panoptic", "interactive", "referring",
                    "open_vocab", "replica"):
        assert section in metrics, section
    assert 0 <= metrics["semantic"]["miou"] <= 1
    assert (data / "official_reports" / "metrics.json").is_file()
