"""Shared fixtures: raw scenes written in the true ScanNet / ScanRefer / Replica layouts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from scannet_files import write_label_map, write_scannet_scene  # noqa: E402


@pytest.fixture
def scannet_raw(tmp_path: Path) -> Path:
    """A raw ScanNet folder with two annotated scenes and the label map."""
    raw = tmp_path / "raw"
    write_scannet_scene(raw, "scene0000_00", seed=0)
    write_scannet_scene(raw, "scene0001_00", seed=1)
    write_label_map(raw / "scannetv2-labels.combined.tsv")
    return raw
