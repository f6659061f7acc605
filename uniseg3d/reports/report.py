"""The `report` stage: one report answering how good, how fast, what the sweep showed and what
the predictions look like, as `report.md` and a self-contained `index.html` side by side.

Sections, in order: summary (the six headline numbers beside the paper's, with the data each
was measured on, and, given a baseline evaluation, each headline difference to it with its
paired bootstrap interval), leaderboards, per-task and per-class metrics, training curves, sweep
(every configuration's mean over its seeds and its difference to the base configuration with an
interval, significant ones marked), latency and predictions (ground truth beside prediction for
a few validation scenes, with PLY exports).
Figures are PNG files under `figures/` and `scenes/<scene>/`, referenced relatively. A section
whose input is missing says which file it lacks and which command writes it.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import pandas as pd
import torch

from uniseg3d.benchmarks.latency import latency_table
from uniseg3d.benchmarks.leaderboard import (NOTE, OURS, TASKS, column, leaderboards,
                                             reference_table)
from uniseg3d.config import Params
from uniseg3d.datasets.cache import cached_scene_ids
from uniseg3d.pipelines.compare import compare_evaluations
from uniseg3d.pipelines.evaluate import METRICS_FILE, PER_CLASS_FILE
from uniseg3d.pipelines.sweep import (AXES, BEST_FILE, CONFIGURATIONS_FILE, HEADLINE,
                                      HEADLINE_KEYS, OVERALL, RESULTS_FILE)
from uniseg3d.pipelines.sweep import PROTOCOL as PROTOCOL_IOUS
from uniseg3d.pipelines.checkpoints import HISTORY_FILE
from uniseg3d.reports import plots
from uniseg3d.reports.document import (
    Block, Figure, Heading, Links, Missing, Table, Text, to_html, to_markdown)
from uniseg3d.reports.renders import TASK_TITLES, render_scene, validation_predictions

log = logging.getLogger(__name__)

TITLE = "UniSeg3D reproduction report"
SECTIONS = ("Summary", "Leaderboards", "Per-task and per-class metrics", "Training curves",
            "Sweep", "Latency", "Predictions")
SWEEP_DIR = Path("reports/sweep")
LATENCY_FILE = Path("benchmarks/latency.json")
FIGURES_DIR, SCENES_DIR = "figures", "scenes"
HEADLINE_TASKS = ("semantic", "instance", "panoptic", "interactive", "referring", "open_vocab")
PROTOCOL = "interactive_protocol"  # metrics.json's section of AGILE3D's protocol
PER_CLASS = {"semantic": "iou", "instance": "ap", "panoptic": "pq", "open_vocab": "ap"}


def _read_json(path: Path) -> dict | list | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _flatten(section: dict, prefix: str = "") -> dict[str, object]:
    """Nested metrics as dotted keys ('unique.miou')."""
    flat: dict[str, object] = {}
    for key, value in section.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class _Report:
    """Collects the blocks and the files written while the sections are built."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.blocks: list[Block] = []
        self.images: list[Path] = []
        self.plys: list[Path] = []
        self.missing: list[str] = []

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)
        self.missing += [block.what for block in blocks if isinstance(block, Missing)]

    def figure(self, path: Path, caption: str) -> None:
        self.images.append(path)
        self.add(Figure(path.relative_to(self.out).as_posix(), caption))


def summary(report: _Report, metrics: dict | None, label: str, metrics_file: Path) -> None:
    """The six headline numbers beside the paper's UniSeg3D, each with its dataset."""
    report.add(Heading(SECTIONS[0]))
    if metrics is None:
        report.add(Missing(str(metrics_file), "uniseg3d evaluate"))
    else:
        counts = metrics["counts"]
        report.add(Text(
            f"Our numbers were measured on **{label}**: {counts['scannet_scenes']} validation "
            f"scenes, {counts['clicks']} clicks, {counts['descriptions']} descriptions and "
            f"{counts['replica_scenes']} Replica scenes. The paper's were measured on the "
            "datasets named in its rows; numbers on different data are not comparable."))
    boards = leaderboards(metrics, label)
    rows = []
    for task in HEADLINE_TASKS:
        title, task_metrics = TASKS[task]
        metric = column(task_metrics[0][0])
        board = boards[task].set_index("method")
        ours = board.loc[OURS.format(label)] if OURS.format(label) in board.index else None
        rows.append({"task": title, "metric": metric,
                     "ours": None if ours is None else ours[metric],
                     "ours measured on": label, "paper (UniSeg3D)": board.loc["UniSeg3D", metric],
                     "paper measured on": board.loc["UniSeg3D", "dataset"]})
    report.add(Table(pd.DataFrame(rows), "Headline metric of each task, in percent."))


def baseline_comparison(report: _Report, baseline: Path, evaluated: Path) -> None:
    """Each headline metric and Overall of `evaluated` against the `baseline` evaluation
    folder: the difference with its paired bootstrap interval over the scenes
    (`uniseg3d compare` has every metric)."""
    try:
        found = compare_evaluations([str(baseline), str(evaluated)],
                                    composites={OVERALL: HEADLINE_KEYS})
    except (OSError, ValueError) as error:
        report.add(Text(f"No comparison with the baseline {baseline}: {error}"))
        return
    rows = {(row["task"], row["metric"]): row for row in found["metrics"]}
    table = pd.DataFrame([
        {"metric": " ".join(key), "baseline": row["a"], "this run": row["b"],
         "difference": row["delta"], "interval": f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]",
         "p": row["p_value"], "significant": "*" if row["significant"] else ""}
        for key in (*HEADLINE_KEYS, OVERALL) if (row := rows.get(key)) is not None])
    report.add(Heading("Against the baseline", 3), Table(
        table, f"This evaluation ({evaluated}) against the baseline ({baseline}) on the same "
        f"scenes: {found['resamples']} paired bootstrap resamples, "
        f"{100 * found['confidence']:.0f} % intervals; `*`: the interval excludes 0.", ".3f"))


def leaderboard_section(report: _Report, metrics: dict | None, label: str) -> None:
    """The paper's comparison tables with our row (`benchmarks.leaderboard`)."""
    report.add(Heading(SECTIONS[1]), Text(NOTE))
    for task, table in leaderboards(metrics, label).items():
        report.add(Heading(TASKS[task][0], 3), Table(table))


def _task_table(section: dict) -> pd.DataFrame:
    """A metrics.json section in percent: one row for the whole task, one per subset."""
    rows = {"all": {k: v for k, v in section.items() if not isinstance(v, dict)},
            **{k: v for k, v in section.items() if isinstance(v, dict)}}
    frame = 100 * pd.DataFrame.from_dict(rows, orient="index").astype(float)
    return frame.rename(columns=lambda name: f"{name} (%)").rename_axis("subset").reset_index()


def _protocol_table(scores: dict[str, dict]) -> pd.DataFrame:
    """Rows of NoC (clicks) and IoU@k (percent) scores, keyed by the row's name."""
    rows = [{"": name, **{(f"{k} (%)" if k.startswith("iou") else k): (
        100 * v if k.startswith("iou") and v is not None else v)
        for k, v in values.items() if not isinstance(v, (dict, list))}}
        for name, values in scores.items()]
    return pd.DataFrame(rows)


def protocol_section(report: _Report, protocol: dict) -> None:
    """AGILE3D's protocol: the scores per mode and per scene, and IoU against clicks."""
    report.add(Heading("Interactive segmentation over clicks (AGILE3D's protocol)", 3))
    modes = {mode: protocol[mode] for mode in ("single", "multi")}
    report.add(Table(_protocol_table(modes), (
        f"Up to {protocol['max_clicks']} clicks per object; NoC@t: clicks per object to reach "
        "IoU t (the budget when never reached); IoU@k after k clicks per object; objects: "
        "single-object units (objects), multi-object units (scenes)."), ".3g"))
    for mode, values in modes.items():
        report.add(Table(_protocol_table(values["per_scene"]), f"{mode}-object, per scene.",
                         ".3g"))
    reference = reference_table()
    multi = reference[(reference["task"] == "interactive_multi")
                      & reference["metric"].str.startswith("IoU@")]
    references = {f"{method} (multi-object, {rows['dataset'].iloc[0]})": {
        int(metric[4:]): value for metric, value in zip(rows["metric"], rows["value"])}
        for method, rows in multi.groupby("method", sort=False)}
    paper = reference[(reference["task"] == "interactive") & (reference["method"] == "UniSeg3D")
                      & (reference["metric"] == "mask mIoU")]
    one_click = (f"UniSeg3D paper, one click ({paper['dataset'].iloc[0]})",
                 float(paper["value"].iloc[0])) if len(paper) else None
    curves = {f"ours, {mode}-object": values["curve"] for mode, values in modes.items()}
    report.figure(plots.click_curves(curves, references, one_click,
                                     report.out / FIGURES_DIR / "click_curves.png"),
                  "Mean IoU after each click per object: ours on the validation scenes, the "
                  "reference methods' numbers on theirs, and the paper's one-click mask mIoU.")


def metrics_section(report: _Report, metrics: dict | None, folder: Path) -> None:
    """Every metric of `metrics.json` (a table per task), counts and timing, and the
    per-class tables and bars."""
    report.add(Heading(SECTIONS[2]))
    if metrics is None:
        report.add(Missing(str(folder / METRICS_FILE), "uniseg3d evaluate"))
    else:
        for task, section in metrics.items():
            if isinstance(section, dict) and task not in ("counts", "timing", PROTOCOL):
                report.add(Table(_task_table(section), f"**{task}** (metrics.json)"))
        if PROTOCOL in metrics:
            protocol_section(report, metrics[PROTOCOL])
        quantities = _flatten({"counts": metrics["counts"], "timing": metrics["timing"]})
        report.add(Table(pd.DataFrame(quantities.items(), columns=["quantity", "value"]),
                         "Evaluation counts and seconds.", ".4g"))
    panels = {}
    for task, metric in PER_CLASS.items():
        path = folder / PER_CLASS_FILE.format(task)
        report.add(Heading(f"Per class: {TASK_TITLES[task]}", 3))
        if not path.is_file():
            report.add(Missing(str(path), "uniseg3d evaluate"))
            continue
        table = pd.read_csv(path)
        fractions = list(table.select_dtypes("float").columns)
        shown = table.dropna(subset=fractions, how="all")
        shown = shown.assign(**{c: 100 * shown[c] for c in fractions}).rename(
            columns={c: f"{c} (%)" for c in fractions})
        report.add(Table(shown, f"{len(table) - len(shown)} classes without ground truth or "
                                "predictions in the validation scenes left out."))
        if task != "open_vocab":
            panels[f"{TASK_TITLES[task]}: {metric}"] = (table, metric)
    if panels:
        report.figure(plots.per_class_bars(panels, report.out / FIGURES_DIR / "per_class.png"),
                      "Per-class metrics (classes present in the validation scenes).")


def training_section(report: _Report, history_file: Path) -> None:
    """Loss and learning-rate curves of `history.json` and its last epochs."""
    report.add(Heading(SECTIONS[3]))
    history = _read_json(history_file)
    if not history:
        report.add(Missing(str(history_file), "uniseg3d train"))
        return
    report.figure(plots.training_curves(history, report.out / FIGURES_DIR / "training.png"),
                  f"Training losses and learning rate over {len(history)} epochs.")
    report.add(Table(pd.DataFrame(history).tail(5), "The last epochs (history.json).", ".4g"))


def interval_table(configurations: pd.DataFrame) -> pd.DataFrame:
    """Each configuration as the paper's ablation tables lay it out: what it changes, its
    seeds, the headline metrics' and Overall's means, Overall's standard deviation over the
    seeds, and Overall's difference to the base with its interval, `*` marking the
    significant ones (`pipelines.sweep.configuration_table`), the base first."""
    table = configurations[["changed", "n"]].copy()
    for metric in (*HEADLINE, "overall"):
        table[metric] = configurations[f"{metric}_mean"]
    table["overall std"] = configurations["overall_std"]
    table["overall - base"] = configurations["overall_delta"]
    table["interval"] = [f"[{low:+.3f}, {high:+.3f}]" if pd.notna(low) else ""
                         for low, high in zip(configurations["ci_low"],
                                              configurations["ci_high"])]
    table["significant"] = ["*" if flag in (True, "True") else ""
                            for flag in configurations["significant"]]
    return table.sort_values("changed", key=lambda c: c != "base", kind="stable")


def sweep_section(report: _Report, folder: Path) -> None:
    """The trials, each headline metric and Overall against lambda and against the click
    strategies (completed trials), and the best configuration (`pipelines.sweep` outputs)."""
    report.add(Heading(SECTIONS[4]))
    path = folder / RESULTS_FILE
    if not path.is_file():
        report.add(Missing(str(path), "uniseg3d sweep"))
        return
    results = pd.read_csv(path)
    lacking = sorted({"trial", "status", *AXES, "overall"} - set(results.columns))
    if lacking:
        report.add(Missing(f"the columns {', '.join(lacking)} of {path}", "uniseg3d sweep"))
        return
    metrics = [c for c in (*HEADLINE, *PROTOCOL_IOUS, "overall") if c in results.columns]
    completed = results[results["status"] == "completed"]
    report.add(Text(f"{len(results)} trials, {len(completed)} completed; every metric of every "
                    f"trial is in `{path}`. Metrics as fractions; Overall is the mean of the six "
                    "headline metrics; `interactive_protocol_*_iou@5`: AGILE3D's protocol, IoU "
                    "after 5 clicks per object."),
               Table(results[["trial", "status", *AXES, *metrics]].sort_values(
                   "overall", ascending=False), "", ".3f"))
    configurations_file = folder / CONFIGURATIONS_FILE
    if configurations_file.is_file():
        configurations = pd.read_csv(configurations_file)
        report.add(Table(interval_table(configurations), "Configurations: each by what it "
                         "changes from the first value of every axis (`base`), over its "
                         "completed trials (`n` seeds): the six headline metrics' and "
                         "Overall's means, Overall's standard deviation over the seeds, and "
                         "Overall's difference to the base with its 95 % paired bootstrap "
                         "interval over the validation scenes and the seeds; `*`: the interval "
                         "excludes 0. A difference without `*` is not a result.", ".3f"))
    else:
        report.add(Missing(str(configurations_file), "uniseg3d sweep"))
    if completed.empty:
        report.add(Text("No completed trial: nothing to plot."))
    else:
        report.figure(plots.sweep_lambda(completed, metrics, report.out / FIGURES_DIR
                                         / "sweep_lambda.png"),
                      "Each headline metric and Overall against the inter-task loss weight λ.")
        report.figure(plots.sweep_clicks(completed, metrics, report.out / FIGURES_DIR
                                         / "sweep_clicks.png"),
                      "Each headline metric and Overall per training and evaluation click "
                      "strategy (mean over λ and the corrective click strategy).")
    best = _read_json(folder / BEST_FILE)
    if best is None:
        report.add(Missing(str(folder / BEST_FILE), "uniseg3d sweep"))
    else:
        values = {key: f"{value:.4g}" if isinstance(value, float) else str(value)
                  for key, value in _flatten(best).items()}
        report.add(Table(pd.DataFrame(values.items(), columns=["best trial", "value"]),
                         f"{BEST_FILE}: the configuration with the best mean Overall and its "
                         "difference to the runner-up (`runner_up.significantly_better`: its "
                         "interval lies above 0)."))


def latency_section(report: _Report, path: Path) -> None:
    """The paper-style inference-time table and the stacked component bars."""
    report.add(Heading(SECTIONS[5]))
    latency = _read_json(path)
    if latency is None:
        report.add(Missing(str(path), "uniseg3d bench latency"))
        return
    lines = [line.strip().strip("|").split("|") for line in
             latency_table(latency).strip().splitlines()]
    table = pd.DataFrame([[cell.strip() for cell in row] for row in lines[2:]],
                         columns=[cell.strip() for cell in lines[0]])
    extra = "; ".join(f"{e['name']}: {e['median_ms']:.2f} ms" for e in latency.get("extra", []))
    report.add(Text(
        f"Ours: the {latency['config']} model on {latency['device']}, one scene of "
        f"{latency['points']} points and {latency['superpoints']} superpoints, median of "
        f"{latency['repeats']} runs; the parts sum to {latency['sum_ms']:.1f} ms of "
        f"{latency['total_ms']:.1f} ms measured end to end; peak memory "
        f"{latency['peak_memory_mb']:.0f} MB. {extra}"),
        Table(table, "Milliseconds per scene, with the hardware of each row.", ".2f"))
    report.figure(plots.latency_bars(latency, report.out / FIGURES_DIR / "latency.png"),
                  "Inference time per component: ours beside the paper's.")


def predictions_section(report: _Report, params: Params, count: int, device: str) -> None:
    """Ground truth beside prediction for `count` validation scenes, and PLY exports."""
    report.add(Heading(SECTIONS[6]))
    cfg = params.evaluate
    if not Path(cfg.checkpoint).is_file():
        report.add(Missing(f"the checkpoint {cfg.checkpoint}", "uniseg3d train"))
        return
    for needed in (cfg.cache, cfg.scenes):
        if needed is not None and not Path(needed).exists():
            report.add(Missing(str(needed), "uniseg3d prepare"))
            return
    if count < 1 or not cached_scene_ids(cfg.cache):
        report.add(Text(f"No scenes rendered ({count} asked for; cache {cfg.cache})."))
        return
    report.add(Text(f"Validation scenes through {cfg.checkpoint} with the evaluation prompts "
                    f"({params.prompts.eval_click} clicks, every description), seen from above. "
                    "PLY files (points without faces) open in MeshLab and CloudCompare."))
    for sample, prediction in validation_predictions(params, count, device):
        scene = sample.scene.scene_id
        render = render_scene(sample, prediction, report.out / SCENES_DIR / scene)
        report.add(Heading(f"Scene {scene}", 3))
        for task, image in render.images.items():
            report.figure(image, f"{TASK_TITLES[task]}. {render.captions[task]}")
        report.plys += render.plys
        report.add(Links("PLY exports", tuple(
            (path.stem, path.relative_to(report.out).as_posix()) for path in render.plys)))


def build_report(params: Params, out: Path = Path("reports"), scenes: int = 3,
                 sweep_dir: Path = SWEEP_DIR, latency_file: Path = LATENCY_FILE,
                 device: str = "cpu", baseline: Path | None = None) -> dict:
    """Write `<out>/report.md` and `<out>/index.html` (figures under `<out>/figures`, scene
    renders and PLYs under `<out>/scenes`) from the outputs of evaluate (`evaluate.out`), train
    (`train.out`), the sweep and the latency benchmark; `scenes` validation scenes go through
    `evaluate.checkpoint` on `device`; `baseline`, an evaluation folder of the same scenes, is
    compared against in the summary. Returns the paths written ("markdown", "html",
    "images", "plys") and the inputs found missing ("missing")."""
    start = time.perf_counter()
    torch.set_num_threads(params.train.threads)
    out = Path(out)
    for folder in (FIGURES_DIR, SCENES_DIR):
        shutil.rmtree(out / folder, ignore_errors=True)  # no stale figures or scenes
    metrics_dir = Path(params.evaluate.out)
    metrics = _read_json(metrics_dir / METRICS_FILE)
    label = metrics["dataset"] if metrics else params.evaluate.dataset_label
    report = _Report(out)
    summary(report, metrics, label, metrics_dir / METRICS_FILE)
    if baseline is not None:
        baseline_comparison(report, Path(baseline), metrics_dir)
    leaderboard_section(report, metrics, label)
    metrics_section(report, metrics, metrics_dir)
    training_section(report, Path(params.train.out) / HISTORY_FILE)
    sweep_section(report, Path(sweep_dir))
    latency_section(report, Path(latency_file))
    predictions_section(report, params, scenes, device)
    out.mkdir(parents=True, exist_ok=True)
    markdown, page = out / "report.md", out / "index.html"
    markdown.write_text(to_markdown(report.blocks, TITLE), encoding="utf-8")
    page.write_text(to_html(report.blocks, TITLE), encoding="utf-8")
    log.info("report: %d figures, %d PLY files, %d missing inputs -> %s (%.1f s)",
             len(report.images), len(report.plys), len(report.missing), page,
             time.perf_counter() - start)
    return {"markdown": markdown, "html": page, "images": report.images, "plys": report.plys,
            "missing": report.missing}
