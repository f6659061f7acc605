"""Shared fixtures: raw scenes written in the true ScanNet / ScanRefer / Replica layouts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from ground_truth import write_evaluation_data  # noqa: E402
from scannet_files import write_label_map, write_scannet_scene  # noqa: E402


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
