"""Released checkpoints in every spconv weight layout: a checkpoint of the official manifest
written in each layout imports to tensors equal to the native one's; the layout is found from
the layers that decide it and said in the log; an all-square file is refused naming the
candidates and accepted with the layout named; mixed files and wrong names are refused; the
SSTNet initialisation reads a `[k,k,k,in,out]` file. The layouts are written here by explicit
permutes of the native `[out,k,k,k,in]` weights, independently of `conv_layout`."""

from __future__ import annotations

import logging

import pytest
import torch

from official_files import random_state_dict, save_mmengine_checkpoint
from uniseg3d.cli import main
from uniseg3d.config import ModelConfig
from uniseg3d.model.official.checkpoint import (OfficialCheckpointError, convert_state_dict,
                                                official_key)
from uniseg3d.model.official.conv_layout import ConvLayoutError, all_layouts, to_native
from uniseg3d.model.official.network import OfficialUniSeg3D
from uniseg3d.pipelines.official_training import init_backbone
from uniseg3d.pipelines.train import load_checkpoint

SMALL_CLIP = "ViT-S-32-alt"  # the smallest built-in open_clip text tower
# native [out, k0, k1, k2, in] -> the stored layout
STORED = {
    "out,k,k,k,in": lambda w: w,
    "k,k,k,in,out": lambda w: w.permute(1, 2, 3, 4, 0),  # spconv 1.x, 2.0, 2.1 (SSTNet)
    "k,k,in,out,k": lambda w: w.permute(1, 2, 4, 0, 3),  # OneFormer3D users' reports
    "out,in,k,k,k": lambda w: w.permute(0, 4, 1, 2, 3),  # UniSeg3D issue 12's report
}


@pytest.fixture(scope="module")
def native():
    with torch.device("meta"):
        expected = OfficialUniSeg3D(ModelConfig()).state_dict()
    state = random_state_dict()
    return state, expected, convert_state_dict(state, expected)[0]


def stored_in(state: dict, layout: str) -> dict:
    return {k: STORED[layout](v).contiguous() if v.dim() == 5 else v for k, v in state.items()}


def test_twenty_layouts_the_four_known_first():
    layouts = all_layouts()
    assert len(layouts) == len(set(layouts)) == 20
    assert [",".join(layout) for layout in layouts[:4]] == list(STORED)


@pytest.mark.parametrize("layout", list(STORED))
def test_every_layout_imports_to_the_native_tensors(native, layout, caplog):
    state, expected, reference = native
    stored = stored_in(state, layout)
    if layout != "out,k,k,k,in":
        assert stored["unet.conv.2.weight"].shape != state["unet.conv.2.weight"].shape
    with caplog.at_level(logging.INFO):
        converted, _ = convert_state_dict(stored, expected)
    assert converted.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(converted[key], value), key
    assert f"spconv weight layout [{layout}]" in caplog.text
    convs = sum(v.dim() == 5 for v in state.values())
    assert f"{0 if layout == 'out,k,k,k,in' else convs} convolution weights converted" \
        in caplog.text


def test_the_cli_imports_a_spconv1_checkpoint(tmp_path, released, caplog):
    state = released["state"]
    save_mmengine_checkpoint(tmp_path, tmp_path / "spconv1.pth", stored_in(state, "k,k,k,in,out"))
    embeddings = str(released["root"] / "scannet_cls_embedding.pth")
    with caplog.at_level(logging.INFO):
        assert main(["import-official", str(tmp_path / "spconv1.pth"), "--class-embeddings",
                     embeddings, "--out", str(tmp_path / "a.pt")]) == 0
    assert "spconv weight layout [k,k,k,in,out] (spconv 1.x, 2.0 and 2.1" in caplog.text
    imported = load_checkpoint(tmp_path / "a.pt")["model"]
    for key, value in state.items():
        if not key.startswith("criterion."):
            assert torch.equal(imported[official_key(key)], value), key
    # naming the right layout gives the same; a wrong one is refused, naming the keys
    assert main(["import-official", str(tmp_path / "spconv1.pth"), "--class-embeddings",
                 embeddings, "--out", str(tmp_path / "b.pt"),
                 "--spconv-layout", "[k,k,k,in,out]"]) == 0
    named = load_checkpoint(tmp_path / "b.pt")["model"]
    assert all(torch.equal(named[k], v) for k, v in imported.items())
    assert main(["import-official", str(tmp_path / "spconv1.pth"), "--class-embeddings",
                 embeddings, "--out", str(tmp_path / "c.pt"),
                 "--spconv-layout", "out,k,k,k,in"]) == 2
    assert "[out,k,k,k,in] named does not fit" in caplog.text
    assert "unet.conv.2.weight (2, 2, 2, 32, 64) fits [k,k,k,in,out]" in caplog.text
    assert not (tmp_path / "c.pt").exists()


def test_an_all_square_file_is_ambiguous_until_named(native):
    state, expected, reference = native
    square = {official_key(k): STORED["k,k,k,in,out"](v) for k, v in state.items()
              if v.dim() == 5 and v.shape[0] == v.shape[-1]}
    assert len(square) == 32
    with pytest.raises(ConvLayoutError) as error:
        to_native(square, expected)
    message = str(error.value)
    assert "fit [k,k,k,in,out] and [k,k,k,out,in]" in message
    assert "backbone.unet.encoder.0.body.2.weight" in message and "--spconv-layout" in message
    converted, finding = to_native(square, expected, "k,k,k,in,out")
    assert finding.named and finding.converted == 32
    for key in square:
        assert torch.equal(converted[key], reference[key]), key


def test_mixed_layouts_and_bad_names_are_refused(native):
    state, expected, _ = native
    mixed = stored_in(state, "out,k,k,k,in")
    mixed["unet.conv.2.weight"] = STORED["k,k,k,in,out"](state["unet.conv.2.weight"])
    with pytest.raises(OfficialCheckpointError, match="mixed spconv weight layouts") as error:
        convert_state_dict(mixed, expected)
    assert "unet.conv.2.weight (2, 2, 2, 32, 64) is [k,k,k,in,out]" in str(error.value)
    with pytest.raises(OfficialCheckpointError, match="expected the axes out, in and three k"):
        convert_state_dict(state, expected, "out,k,k,in")


def test_the_sstnet_backbone_loads_from_a_spconv1_file(tmp_path, caplog):
    state = random_state_dict()
    backbone = {k: v for k, v in state.items() if official_key(k).startswith("backbone.")}
    stored = stored_in(backbone, "k,k,k,in,out")
    stored["semantic_linear.weight"] = torch.zeros(20, 32)  # SSTNet's own heads: ignored
    save_mmengine_checkpoint(tmp_path, tmp_path / "sstnet_scannet.pth",
                             {f"module.{k}": v for k, v in stored.items()})
    model = OfficialUniSeg3D(ModelConfig(), text_model=SMALL_CLIP)
    with caplog.at_level(logging.INFO):
        assert init_backbone(model, tmp_path / "sstnet_scannet.pth") == len(backbone)
    assert "spconv weight layout [k,k,k,in,out]" in caplog.text
    loaded = model.state_dict()
    for key, value in backbone.items():
        assert torch.equal(loaded[official_key(key)], value), key
    model = OfficialUniSeg3D(ModelConfig(), text_model=SMALL_CLIP)
    with pytest.raises(OfficialCheckpointError, match="named does not fit"):
        init_backbone(model, tmp_path / "sstnet_scannet.pth", "out,k,k,k,in")
