"""`uniseg3d report`: the report built from small fixture results (metrics from the real
accumulation code on two tiny scenes, a training history, a sweep through the sweep's writer, a
latency benchmark and a one-epoch checkpoint) has every section, valid PNGs, parseable HTML whose
images resolve and PLY exports of each scene; missing inputs give notes, not crashes."""

from __future__ import annotations

import dataclasses
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from plyfile import PlyData

from ground_truth import EVALUATION_SCENES as SCENES
from ground_truth import gt_prediction, write_evaluation
from uniseg3d.config import EvaluateConfig, Params
from uniseg3d.datasets.loader import evaluation_sample, read_split
from uniseg3d.metrics.tasks import ScanNetTasks
from uniseg3d.palette import UNLABELLED
from uniseg3d.pipelines.evaluate import (
    METRICS_FILE, metric_section, write_outputs)
from uniseg3d.pipelines.compare import compare_evaluations
from uniseg3d.pipelines.sweep import AXES, HEADLINE_KEYS, OVERALL, flatten_metrics
from uniseg3d.pipelines.sweep import write_outputs as write_sweep_outputs
from uniseg3d.pipelines.interactive import evaluate_protocol
from uniseg3d.pipelines.train import HISTORY_FILE, load_trained_model, train
from uniseg3d.reports.document import MISSING
from uniseg3d.reports.renders import TASK_TITLES, task_views
from uniseg3d.reports.report import SECTIONS, build_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_metrics(params: Params) -> None:
    """metrics.json, per-class CSVs and leaderboards from degraded ground-truth predictions."""
    tasks, rng = ScanNetTasks(), np.random.default_rng(0)
    for index, scene in enumerate(read_split(params.evaluate.cache, list(SCENES))):
        sample = evaluation_sample(scene, params, index)
        tasks.add(sample, gt_prediction(sample, rng))
    results = tasks.evaluate()
    counts = {"scannet_scenes": 2, "replica_scenes": 0, "replica_classes": 0,
              "replica_unseen_classes": 0, "clicks": results["interactive"]["clicks"],
              "descriptions": results["referring"]["count"], "descriptions_unique": 4,
              "descriptions_multiple": 0}
    model, encoder, _ = load_trained_model(params.evaluate.checkpoint)
    protocol = evaluate_protocol(model, read_split(params.evaluate.cache, list(SCENES)),
                                 encoder.dim, params.prompts.min_points, progress=False)
    metrics = {"dataset": params.evaluate.dataset_label,
               **{task: metric_section(result) for task, result in results.items()},
               "interactive_protocol": metric_section(protocol), "counts": counts,
               "timing": {"forward_s": 1.0, "scannet_forward_s": 1.0,
                          "forward_s_per_scene": 0.5, "total_s": 2.0}}
    write_outputs(Path(params.evaluate.out), metrics, results,
                  {"scannet200": ("open_vocab", tasks.open_vocab)})


def write_history(folder: Path) -> None:
    """Six epochs in two stages (the second a fine-tuning stage), with validation losses."""
    terms = ("generic", "click", "text", "distill", "referring_distill", "contrastive")
    history = []
    for epoch in range(6):
        losses = {f"train_{t}": (1 + i) / (1 + epoch) for i, t in enumerate(terms)}
        history.append({"epoch": epoch, "stage": int(epoch >= 4), "lr": 1e-3 * 0.8 ** epoch,
                        "seconds": 2.0, **losses, "train_total": sum(losses.values()),
                        "val_total": 25 / (1 + epoch) + 1})
    folder.mkdir(parents=True)
    (folder / HISTORY_FILE).write_text(json.dumps(history))


def write_sweep(folder: Path, metrics: dict, data: Path) -> None:
    """Five trials through the sweep's writer: two lambdas x two training click strategies
    with scaled copies of `metrics` (and evaluation statistics of `data`), and one that
    failed."""
    rows = []
    for lam in (0.05, 0.2):
        for click in ("random", "rd0.5"):
            scale = 0.5 + lam + (0.2 if click == "random" else 0.0)
            rows.append({"trial": f"t{len(rows)}", "status": "completed", "lambda_inter": lam,
                         "train_click": click, "eval_click": "center",
                         "corrective_click": "deepest", "epochs": 2,
                         "changed": ", ".join([f"lambda_inter={lam}"] * (lam != 0.05)
                                              + [f"train_click={click}"] * (click != "random"))
                         or "base",
                         "val_total": 3.0 - scale, **{key: scale * value for key, value in
                                                      flatten_metrics(metrics).items()},
                         "seed": 0, "folder": str(folder / f"t{len(rows)}")})
            write_evaluation(data, Path(rows[-1]["folder"]) / "eval", len(rows))
    rows.append({**rows[0], "trial": "t4", "status": "error", "overall": float("nan")})
    write_sweep_outputs(pd.DataFrame(rows), folder, list(AXES))


def write_latency(path: Path) -> None:
    """A latency benchmark in `bench_latency`'s format, beside the paper's components."""
    names = ("superpoints", "voxelisation", "backbone", "superpoint pooling",
             "text encoder (cached)", "decoder", *(f"post-processing: {task}" for task in (
                 "semantic", "instance", "panoptic", "interactive", "referring",
                 "open vocabulary")))
    components = [{"name": name, "median_ms": 10.0 + i} for i, name in enumerate(names)]
    total = sum(c["median_ms"] for c in components)
    path.write_text(json.dumps({
        "benchmark": "latency", "config": "tiny", "device": "CPU (x86_64, 2 threads)",
        "points": 2000, "superpoints": 40, "repeats": 3, "components": components,
        "extra": [{"name": "text encoder (uncached)", "median_ms": 12.5}], "total_ms": total,
        "sum_ms": total, "peak_memory_mb": 900.0,
        "paper": {"hardware": "GPU; superpoints on CPU",
                  "components": {"superpoints": 168.0, "backbone": 33.0, "text encoder": 0.03,
                                 "decoder": 29.0, "post-processing": None, "total": 230.03}}}))


@pytest.fixture(scope="module")
def inputs(data: Path) -> tuple[Params, Path]:
    """The evaluate tests' prepared scenes (`data`), a one-epoch checkpoint and every fixture
    result; the params point at them (`root/sweep`, `root/latency.json`: the sweep and
    latency inputs)."""
    root = data
    params = Params()
    params = dataclasses.replace(
        params, text=dataclasses.replace(params.text, cache_file=str(root / "text.pt")),
        train=dataclasses.replace(
            params.train, cache=str(root / "cache"), train_scenes=str(root / "val.txt"),
            val_scenes=None, epochs=1, out=str(root / "report_run"), threads=1,
            augment=dataclasses.replace(params.train.augment, elastic=())),
        evaluate=EvaluateConfig(checkpoint=str(root / "report_run" / "best.pt"),
                                cache=str(root / "cache"), scenes=str(root / "val.txt"),
                                replica_cache=None, out=str(root / "report_evaluate"),
                                dataset_label="unit-test"))
    train(params, progress=False)
    params = dataclasses.replace(params, train=dataclasses.replace(
        params.train, out=str(root / "history")))
    write_history(root / "history")
    write_metrics(params)
    write_sweep(root / "sweep", json.loads((root / "report_evaluate" / METRICS_FILE).read_text()),
                root)
    write_latency(root / "latency.json")
    return params, root


@pytest.fixture(scope="module")
def built(inputs) -> dict:
    params, root = inputs
    return build_report(params, root / "out", scenes=2, sweep_dir=root / "sweep",
                        latency_file=root / "latency.json")


class _Page(HTMLParser):
    """Second-level headings, image sources and links to files of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.headings: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self._in_h2 = tag == "h2"
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag == "a" and not dict(attrs)["href"].startswith("#"):
            self.links.append(dict(attrs)["href"])

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.headings.append(data)
            self._in_h2 = False


def _page(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def test_every_section_in_order_and_every_image_valid(built, inputs):
    _, root = inputs
    markdown = built["markdown"].read_text(encoding="utf-8")
    positions = [markdown.index(f"\n## {title}\n") for title in SECTIONS]
    assert positions == sorted(positions)
    page = _page(built["html"])
    assert page.headings == list(SECTIONS)
    assert built["missing"] == [] and MISSING not in markdown
    # per class, clicks, training, sweep against lambda and click strategies, latency; 6 per
    # scene
    assert len(built["images"]) == 6 + 2 * 6
    for image in built["images"]:
        assert image.read_bytes()[:8] == PNG_MAGIC
        pixels = imread(image)
        assert pixels.ndim == 3 and min(pixels.shape[:2]) > 100
        assert pixels[..., :3].std() > 0.01, image  # not a blank canvas
    sources = {(root / "out" / src).resolve() for src in page.images}
    assert sources == {image.resolve() for image in built["images"]}
    links = {(root / "out" / href).resolve() for href in page.links}
    assert links == sources | {ply.resolve() for ply in built["plys"]}
    for image in built["images"]:
        assert f"]({image.relative_to(root / 'out').as_posix()})" in markdown
    assert "uniseg3d (ours, unit-test)" in markdown
    assert "AGILE3D's protocol" in markdown and "AGILE3D (multi-object, ScanNet40 val)" not in \
        markdown  # the reference is in the figure's legend, its numbers in the leaderboard
    assert "| AGILE3D" in markdown and "NoC@90 (clicks)" in markdown
    assert "the large table in the middle" in markdown  # descriptions in the captions
    assert "Configurations:" in markdown and "overall - base" in markdown
    assert markdown.index("| base") < markdown.index("| lambda_inter=0.2, train_click=rd0.5")
    configurations = pd.read_csv(root / "sweep" / "configurations.csv").set_index("changed")
    assert configurations.loc["base", "overall_delta"] == 0
    for changed, row in configurations.drop(index="base").iterrows():  # every row's interval
        assert f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]" in markdown
        assert row["significant"] == (row["ci_low"] > 0 or row["ci_high"] < 0)
    for title in TASK_TITLES.values():
        assert title in markdown


def test_ply_exports_hold_every_point_of_the_scene(built, inputs):
    params, _ = inputs
    assert len(built["plys"]) == 2 * 6 * 2
    points = {scene.scene_id: scene.num_points
              for scene in read_split(params.evaluate.cache, list(SCENES))}
    for path in built["plys"]:
        vertex = PlyData.read(str(path))["vertex"]
        assert len(vertex.data) == points[path.parent.name]
        assert {"x", "y", "z", "red", "green", "blue"} <= set(vertex.data.dtype.names)


def test_missing_inputs_give_notes_not_crashes(inputs, tmp_path):
    params, root = inputs
    nowhere = tmp_path / "nothing"
    params = dataclasses.replace(
        params, train=dataclasses.replace(params.train, out=str(nowhere)),
        evaluate=dataclasses.replace(params.evaluate, out=str(nowhere),
                                     checkpoint=str(nowhere / "best.pt")))
    result = build_report(params, tmp_path / "out", sweep_dir=nowhere,
                          latency_file=nowhere / "latency.json")
    markdown = result["markdown"].read_text(encoding="utf-8")
    assert _page(result["html"]).headings == list(SECTIONS)
    assert result["images"] == [] and result["plys"] == []
    for command in ("uniseg3d evaluate", "uniseg3d train", "uniseg3d sweep",
                    "uniseg3d bench latency"):
        assert f"`{command}`" in markdown
    assert markdown.count(MISSING) == len(result["missing"]) >= 6
    assert "UniSeg3D" in markdown  # the paper's rows are shown without ours


def test_ground_truth_as_prediction_renders_like_the_ground_truth(inputs):
    params, _ = inputs
    for index, scene in enumerate(read_split(params.evaluate.cache, list(SCENES))):
        sample = evaluation_sample(scene, params, index)
        views = {view.task: view for view in task_views(sample, gt_prediction(sample))}
        assert list(views) == list(TASK_TITLES)
        for task in ("semantic", "panoptic", "interactive", "referring", "open_vocab"):
            np.testing.assert_array_equal(views[task].prediction, views[task].gt, task)
        instance = views["instance"]  # same objects painted, colours numbered by score
        np.testing.assert_array_equal((instance.prediction != UNLABELLED).any(1),
                                      (instance.gt != UNLABELLED).any(1))
        assert len(views["interactive"].clicks) == len(sample.click_points) == 2
        assert [label for label, _ in views["referring"].legend] == [
            f"{k + 1}: {text}" for k, text in enumerate(sample.texts)]


def test_a_baseline_evaluation_is_compared_in_the_summary(inputs, tmp_path):
    params, root = inputs
    evaluated = Path(params.evaluate.out)
    write_evaluation(root, evaluated, 0)  # this run's statistics beside its metrics.json
    baseline = write_evaluation(root, tmp_path / "baseline", 1)
    result = build_report(params, tmp_path / "out", scenes=0, sweep_dir=root / "sweep",
                          latency_file=root / "latency.json", baseline=Path(baseline))
    markdown = result["markdown"].read_text(encoding="utf-8")
    summary = markdown[markdown.index("## Summary"):markdown.index("## Leaderboards")]
    assert "### Against the baseline" in summary
    found = compare_evaluations([baseline, str(evaluated)], composites={OVERALL: HEADLINE_KEYS})
    overall = next(row for row in found["metrics"] if (row["task"], row["metric"]) == OVERALL)
    assert f"| overall overall | {overall['a']:.3f} | {overall['b']:.3f} | " \
           f"{overall['delta']:.3f} | [{overall['ci_low']:+.3f}, {overall['ci_high']:+.3f}]" \
        in re.sub(" +", " ", summary)  # the table's padding collapsed
    other = build_report(params, tmp_path / "other", scenes=0, sweep_dir=root / "sweep",
                         latency_file=root / "latency.json", baseline=tmp_path / "nowhere")
    assert "No comparison with the baseline" in other["markdown"].read_text(encoding="utf-8")
