"""`uniseg3d compare`'s outputs: evaluations side by side, every task metric's difference to a
baseline with its paired bootstrap interval over scenes (`uniseg3d.pipelines.compare`, from the
evaluations' per-scene statistics, never from their masks).

Writes `comparison.json` (settings, sides, one row per metric and per class),
`comparison.csv` (the rows), `comparison.md` and `comparison.html` with two figures: every
metric's difference with its interval (`forest.png`) and the per-class differences of semantic
IoU and instance AP (`classes.png`). Evaluations of different scenes, datasets or class lists are
refused before anything is written.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from uniseg3d.metrics.bootstrap import PER_CLASS
from uniseg3d.pipelines.compare import compare_evaluations
from uniseg3d.reports.document import Figure, Heading, Table, Text, to_html, to_markdown
from uniseg3d.reports.forest import forest_plot

log = logging.getLogger(__name__)

TITLE = "uniseg3d comparison"
FILES = {"json": "comparison.json", "csv": "comparison.csv", "md": "comparison.md",
         "html": "comparison.html", "forest": "forest.png", "classes": "classes.png"}
COLUMNS = ["baseline", "other", "task", "metric", "a", "b", "delta", "ci_low", "ci_high",
           "p_value", "significant"]


def _json_value(value: object) -> object:
    return None if isinstance(value, float) and math.isnan(value) else value


def _label(row: pd.Series) -> str:
    return f"{row['task']}: {row['metric']}"


def _figures(metrics: pd.DataFrame, classes: pd.DataFrame, out: Path) -> list[Figure]:
    clicks = metrics["metric"].str.contains("noc@")
    frames = {"differences (fractions)": metrics[~clicks], "differences (clicks)": metrics[clicks]}
    frames = {title: frame.dropna(subset=["delta"]) for title, frame in frames.items()}
    figures = [Figure(forest_plot({title: frame.assign(label=frame.apply(_label, axis=1))
                                   for title, frame in frames.items() if len(frame)},
                                  out / FILES["forest"]).name,
                      "Each metric's difference to the baseline with its bootstrap interval "
                      "(filled: the interval excludes zero).")]
    per_class = {f"{task} {metric} per class":
                 classes[classes["task"] == task].dropna(subset=["delta"])
                 for task, metric in PER_CLASS.items()}
    per_class = {title: frame.assign(label=frame["metric"].str.split("/").str[1])
                 for title, frame in per_class.items() if len(frame)}
    if per_class:
        figures.append(Figure(forest_plot(per_class, out / FILES["classes"]).name,
                              "Per-class differences of semantic IoU and instance AP with "
                              "their bootstrap intervals."))
    return figures


def side_labels(sides: Sequence[str]) -> dict[str, str]:
    """A short label per side (A, B, ..., then A2, B2, ...), for the tables and figures: a
    side of several seeds is several folder paths long."""
    return {side: chr(ord("A") + i % 26) + (str(i // 26 + 1) if i >= 26 else "")
            for i, side in enumerate(sides)}


def _side(spec: str, label: str) -> str:
    folders = spec.split(",")
    seeds = f" ({len(folders)} seeds)" if len(folders) > 1 else ""
    return f"{label} = " + ", ".join(f"`{folder}`" for folder in folders) + seeds


def write_comparison(settings: dict, out: Path) -> None:
    """A `compare_evaluations` result as JSON, CSV (both with the sides' folders), Markdown and
    HTML (with its figures; the sides by their labels, `side_labels`) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = pd.DataFrame(settings["metrics"], columns=COLUMNS)
    classes = pd.DataFrame(settings["classes"], columns=COLUMNS)
    labels = side_labels(settings["sides"])
    document = {**settings, **{part: [{k: _json_value(v) for k, v in row.items()}
                                      for row in settings[part]]
                               for part in ("metrics", "classes")}}
    (out / FILES["json"]).write_text(json.dumps(document, indent=2, allow_nan=False) + "\n",
                                     encoding="utf-8")
    pd.concat([metrics, classes], ignore_index=True).to_csv(out / FILES["csv"], index=False)
    sides = "; ".join(_side(side, labels[side]) for side in settings["sides"])
    metrics, classes = (frame.replace({"baseline": labels, "other": labels})
                        for frame in (metrics, classes))
    blocks = [
        Text(f"Sides {sides}; the baseline is {labels[settings['baseline']]}: "
             f"{settings['resamples']} paired bootstrap resamples of the scenes (seed "
             f"{settings['seed']}), {100 * settings['confidence']:g} % percentile intervals of "
             "the difference b - a; `significant` when the interval excludes zero; p-value: "
             "two-sided bootstrap proportion."),
        Heading("Metrics"),
        Table(metrics, "Every task metric (fractions; NoC in clicks).", floatfmt=".4f"),
        *_figures(metrics, classes, out),
        Heading("Per class"),
        Table(classes, "Semantic IoU and instance AP per class.", floatfmt=".4f"),
    ]
    (out / FILES["md"]).write_text(to_markdown(blocks, TITLE), encoding="utf-8")
    (out / FILES["html"]).write_text(to_html(blocks, TITLE), encoding="utf-8")


def run_compare(specs: Sequence[str], out: str | Path, baseline: str | None = None,
                resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Compare the evaluations `specs` (`compare_evaluations`); write the outputs to `out` and
    return the JSON document."""
    write_comparison(compare_evaluations(specs, baseline, resamples, confidence, seed), Path(out))
    log.info("comparison -> %s", out)
    return json.loads((Path(out) / FILES["json"]).read_text(encoding="utf-8"))
