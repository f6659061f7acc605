"""Shared fixtures: raw scenes written in the true ScanNet / ScanRefer / Replica layouts."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from ground_truth import write_evaluation_data  # noqa: E402
from official_files import write_and_import_released  # noqa: E402
from scannet_files import write_label_map, write_scannet_scene  # noqa: E402
from uniseg3d.config import Params  # noqa: E402
from uniseg3d.datasets.labels import read_label_map  # noqa: E402
from uniseg3d.datasets.scannet import read_scannet_scene, scene_files  # noqa: E402
from uniseg3d.pipelines.train import train  # noqa: E402


@pytest.fixture
def scannet_raw(tmp_path: Path) -> Path:
    """A raw ScanNet folder with two annotated scenes and the label map."""
    raw = tmp_path / "raw"
    write_scannet_scene(raw, "scene0000_00", seed=0)
    write_scannet_scene(raw, "scene0001_00", seed=1)
    write_label_map(raw / "scannetv2-labels.combined.tsv")
    return raw


@pytest.fixture(scope="session")
def data(tmp_path_factory) -> Path:
    """Two ScanNet-layout scenes with descriptions and one Replica scene, prepared (shared by
    the evaluate and report tests)."""
    return write_evaluation_data(tmp_path_factory.mktemp("evaluate"))


@pytest.fixture(scope="session")
def trained_scan(tmp_path_factory) -> tuple[Path, Path]:
    """(mesh, checkpoint): one ScanNet-layout scene's mesh and a one-epoch tiny checkpoint
    trained on it (shared by the predict and serve tests)."""
    root = tmp_path_factory.mktemp("trained_scan")
    label_map = read_label_map(write_label_map(root / "labels.tsv"))
    scene_dir = write_scannet_scene(root)
    scene = read_scannet_scene(scene_dir, label_map)
    params = Params()
    params = dataclasses.replace(
        params, text=dataclasses.replace(params.text, cache_file=str(root / "text.pt")),
        train=dataclasses.replace(params.train, out=str(root / "run"), epochs=1, val_scenes=None))
    result = train(params, train_scenes=[scene], progress=False)
    return scene_files(scene_dir)["mesh"], result.last


@pytest.fixture(scope="session")
def released(tmp_path_factory) -> dict:
    """A released UniSeg3D checkpoint and class embeddings (random weights, the released
    layout and shapes) and their `import-official` result: {root, state, prototypes, out}."""
    return write_and_import_released(tmp_path_factory.mktemp("official"))
