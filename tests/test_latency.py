"""`uniseg3d bench latency`: every component timed, the parts adding up to the total."""

from __future__ import annotations

import json

import pytest

from uniseg3d.benchmarks.latency import PAPER, latency_table
from uniseg3d.cli import main

COMPONENTS = ["superpoints", "text encoder (cached)", "voxelisation", "backbone",
              "superpoint pooling", "decoder", "post-processing: instance",
              "post-processing: semantic", "post-processing: panoptic",
              "post-processing: interactive", "post-processing: referring",
              "post-processing: open vocabulary"]


@pytest.fixture(scope="module")
def latency(tmp_path_factory):
    root = tmp_path_factory.mktemp("latency")
    params = root / "params.yaml"
    params.write_text(f"text:\n  cache_file: {root / 'text.pt'}\n")
    out = root / "latency.json"
    assert main(["bench", "latency", "--params", str(params), "--points", "20000",
                 "--repeats", "2", "--out", str(out)]) == 0
    return json.loads(out.read_text()), out


def test_every_component_is_timed_and_they_sum_to_the_total(latency):
    result, _ = latency
    assert [c["name"] for c in result["components"]] == COMPONENTS
    assert all(c["median_ms"] > 0 for c in result["components"])
    assert result["extra"][0]["name"] == "text encoder (uncached)"
    assert result["sum_ms"] == pytest.approx(sum(c["median_ms"] for c in result["components"]))
    assert 0.95 <= result["sum_vs_total"] <= 1.05
    assert 15_000 < result["points"] < 25_000 and result["texts"] > 0
    assert result["paper"] == PAPER and result["device"].startswith("CPU")
    assert result["recipe"] == "ours"


def test_markdown_table_like_the_papers(latency):
    result, out = latency
    table = out.with_suffix(".md").read_text()
    assert table == latency_table(result)
    lines = table.strip().splitlines()
    assert lines[0].startswith("| method | hardware | superpoints | backbone | text encoder")
    assert lines[2].startswith("| UniSeg3D (paper) |") and "230.03" in lines[2]
    assert lines[3].startswith("| uniseg3d (ours, tiny) | CPU")
    ours_total = float(lines[3].rsplit("|", 2)[1])
    assert ours_total == pytest.approx(result["total_ms"], abs=0.01)


def test_paper_numbers_are_the_appendix_table():
    assert PAPER["components"] == {"superpoints": 168.0, "backbone": 33.0, "text encoder": 0.03,
                                   "decoder": 29.0, "post-processing": None, "total": 230.03}


def test_the_official_recipe_is_timed_component_by_component(tmp_path):
    out = tmp_path / "official.json"
    assert main(["bench", "latency", "--recipe", "official", "--points", "20000",
                 "--repeats", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["recipe"] == "official"
    assert [c["name"] for c in result["components"]] == COMPONENTS
    assert result["text_encoder"] == "official-clip:convnext_large_d_320"
    assert out.with_suffix(".md").read_text().splitlines()[3].startswith(
        "| uniseg3d (official, tiny) | CPU")
