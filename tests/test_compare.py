"""`uniseg3d compare` on evaluation folders written as `evaluate` writes them: a self-comparison
is all zeros, a constant shift of one side's per-prompt IoUs moves the difference and its
interval by exactly that shift, a fixed seed reproduces the bootstrap, seeds are resampled, and
evaluations of other scenes or datasets are refused before anything is written."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ground_truth import EVALUATION_SCENES as SCENES
from ground_truth import write_evaluation
from uniseg3d.cli import main
from uniseg3d.datasets.scene import InputError
from uniseg3d.metrics.bootstrap import interval
from uniseg3d.metrics.scene_stats import read_evaluation
from uniseg3d.metrics.semantic import semantic_scores
from uniseg3d.pipelines.evaluate import write_scene_stats
from uniseg3d.pipelines.compare import compare_evaluations
from uniseg3d.reports.comparison import COLUMNS, FILES, run_compare, side_labels

RESAMPLES = 200


@pytest.fixture(scope="module")
def evaluations(data, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("evaluations")
    return {name: write_evaluation(data, root / name, seed)
            for name, seed in (("a", 0), ("b", 1), ("a2", 2))}


def rows(document: dict) -> list[dict]:
    return document["metrics"] + document["classes"]


def same(first: list[dict], second: list[dict]) -> bool:
    """Equal rows, NaN equal to NaN."""
    return json.dumps(first) == json.dumps(second)


def test_self_comparison_is_zero_everywhere(evaluations):
    a = evaluations["a"]
    document = compare_evaluations([a, a], resamples=RESAMPLES)
    assert {row["task"] for row in document["metrics"]} == {
        "semantic", "instance", "panoptic", "interactive", "referring", "open_vocab",
        "interactive_protocol"}
    defined = [row for row in rows(document) if not math.isnan(row["a"])]
    assert len(defined) > 50
    for row in defined:
        assert row["a"] == row["b"] and row["delta"] == 0.0, row
        assert row["ci_low"] == row["ci_high"] == 0.0, row
        assert row["p_value"] == 1.0 and not row["significant"], row


def test_several_seeds_of_identical_evaluations_are_zero_too(evaluations):
    side = f"{evaluations['a']},{evaluations['a2']}"
    document = compare_evaluations([side, side], resamples=RESAMPLES)
    for row in document["metrics"]:
        if not math.isnan(row["a"]):
            assert row["delta"] == 0.0 and not row["significant"], row
    # a side of several seeds: their mean on all scenes
    single = compare_evaluations([evaluations["a"], evaluations["b"]], resamples=RESAMPLES)
    seeds = compare_evaluations([side, evaluations["b"]], resamples=RESAMPLES)
    value = {r["metric"]: r for r in single["metrics"] if r["task"] == "semantic"}["miou"]
    both = {r["metric"]: r for r in seeds["metrics"] if r["task"] == "semantic"}["miou"]
    a = read_evaluation(evaluations["a"])
    a2 = read_evaluation(evaluations["a2"])
    mean = (semantic_scores(a["semantic"])["miou"][0]
            + semantic_scores(a2["semantic"])["miou"][0]) / 2
    assert both["a"] == pytest.approx(mean, abs=1e-12) and value["a"] != both["a"]


def shifted(folder: str, out: Path, shift: float) -> str:
    """`folder`'s statistics with `shift` added to every prompt's IoU (clicks, descriptions)."""
    stats = read_evaluation(folder)
    for task, table in (("interactive", "clicks"), ("referring", "prompts")):
        columns = stats[task].tables[table]
        stats[task] = replace(stats[task], tables={
            **stats[task].tables, table: {**columns, "iou": columns["iou"] + shift}})
    write_scene_stats(out, stats, stats["semantic"].meta["dataset"])
    return str(out)


def test_a_constant_shift_moves_the_difference_and_interval_by_the_shift(evaluations, tmp_path):
    a, b = evaluations["a"], evaluations["b"]
    moved = shifted(b, tmp_path / "moved", 0.125)
    before = compare_evaluations([a, b], resamples=RESAMPLES, seed=3)
    after = compare_evaluations([a, moved], resamples=RESAMPLES, seed=3)
    pairs = {(r["task"], r["metric"]): r for r in before["metrics"]}
    checked = 0
    for row in after["metrics"]:
        old = pairs[(row["task"], row["metric"])]
        if (row["task"], row["metric"]) in {("interactive", "miou"), ("referring", "miou"),
                                            ("referring", "unique/miou")}:
            for key in ("delta", "ci_low", "ci_high"):
                assert row[key] == pytest.approx(old[key] + 0.125, abs=1e-12), (row, key)
            checked += 1
        elif row["task"] not in ("interactive", "referring"):
            assert same([row], [{**old, "other": row["other"]}])  # other tasks untouched
    assert checked == 3


def test_a_fixed_seed_reproduces_the_bootstrap(evaluations):
    a, b = evaluations["a"], evaluations["b"]
    first = compare_evaluations([a, b], resamples=RESAMPLES, seed=7)
    again = compare_evaluations([a, b], resamples=RESAMPLES, seed=7)
    other = compare_evaluations([a, b], resamples=RESAMPLES, seed=8)
    assert same(rows(first), rows(again))
    assert not same(rows(first), rows(other))


def test_outputs_and_the_command_line(evaluations, tmp_path):
    a, b = evaluations["a"], evaluations["b"]
    out = tmp_path / "cli"
    assert main(["compare", a, b, "--out", str(out), "--baseline", b, "--resamples", "50",
                 "--confidence", "0.9", "--seed", "2"]) == 0
    document = json.loads((out / FILES["json"]).read_text())
    assert document["baseline"] == b and document["resamples"] == 50
    assert document["confidence"] == 0.9 and document["scenes"]["semantic"] == 2
    assert {row["other"] for row in document["metrics"]} == {a}
    table = pd.read_csv(out / FILES["csv"])
    assert list(table.columns) == COLUMNS
    assert len(table) == len(document["metrics"]) + len(document["classes"])
    assert {m.split("/")[-1] for m in table.loc[table["task"] == "instance", "metric"]} >= {
        "ap", "ap50", "ap25"}
    for row in document["metrics"]:
        if row["ci_low"] is not None:
            assert row["ci_low"] <= row["ci_high"]
            assert row["significant"] == (row["ci_low"] > 0 or row["ci_high"] < 0)
            assert 0 <= row["p_value"] <= 1 and math.isclose(row["delta"], row["b"] - row["a"])
    page = (out / FILES["html"]).read_text()
    assert FILES["forest"] in page and FILES["classes"] in page
    assert (out / FILES["forest"]).stat().st_size > 0 and (out / FILES["classes"]).is_file()
    markdown = (out / FILES["md"]).read_text()
    assert f"]({FILES['forest']})" in markdown and "ci_low" in markdown
    # the sides are named once with their labels; the rows use the labels
    assert f"A = `{a}`; B = `{b}`; the baseline is B" in markdown
    assert markdown.count(a) == 1 and "| B          | A       |" in markdown


def test_sides_of_several_seeds_get_short_labels(evaluations, tmp_path):
    a, b = evaluations["a"], evaluations["b"]
    document = run_compare([f"{a},{b}", b], tmp_path / "seeds", resamples=20)
    assert {row["other"] for row in document["metrics"]} == {b}
    markdown = (tmp_path / "seeds" / FILES["md"]).read_text()
    assert f"A = `{a}`, `{b}` (2 seeds); B = `{b}`; the baseline is A" in markdown
    assert markdown.count(a) == 1
    assert side_labels([str(i) for i in range(28)])["27"] == "B2"


def test_other_scenes_or_datasets_are_refused_and_nothing_is_written(evaluations, data,
                                                                     tmp_path):
    a = evaluations["a"]
    fewer = read_evaluation(a)
    fewer = {task: replace(stats, scene_ids=("scene0000_00", "scene0009_00"))
             for task, stats in fewer.items()}
    write_scene_stats(tmp_path / "fewer", fewer, "unit-test")
    out = tmp_path / "out"
    with pytest.raises(InputError, match="scene0009_00") as error:
        run_compare([a, str(tmp_path / "fewer")], out, resamples=10)
    assert "scene0001_00" in str(error.value)
    other = write_evaluation(data, tmp_path / "other", 0, dataset="another")
    with pytest.raises(InputError, match="dataset"):
        run_compare([a, other], out, resamples=10)
    assert main(["compare", a, other, "--out", str(out)]) == 2
    assert not out.exists()


def test_interval_and_p_value_by_hand():
    # percentiles 25 and 75 of (-1, 1, 2, 3) interpolate at positions 0.75 and 2.25; one of
    # four differences is <= 0, three are >= 0: p = 2 * 1/4; NaN resamples are left out
    low, high, p = interval(np.array([3.0, np.nan, -1.0, 2.0, 1.0]), 0.5)
    assert (low, high, p) == (0.5, 2.25, 0.5)
    assert interval(np.zeros(7), 0.95) == (0.0, 0.0, 1.0)
    assert all(math.isnan(v) for v in interval(np.full(3, np.nan), 0.95))
