"""Per-task leaderboards: the UniSeg3D paper's comparison tables with our measured rows added.

The paper's numbers ship in `resources/paper_reference.csv` (task, metric, method, value,
dataset, source). A leaderboard has one row per method and the task's metrics as columns, in
percent: our `metrics.json` fractions are multiplied by 100. Every row names the data it was
measured on (`dataset`: "ScanNet20 val", "ScanRefer val", "ScanNet200 val", "Replica" for the
paper, the evaluation's dataset label for ours), so rows on different data never mix unnoticed.
Tables render to Markdown, CSV, LaTeX and HTML (pandas, with tabulate and jinja2).
"""

from __future__ import annotations

import html
from functools import cache
from importlib import resources
from pathlib import Path

import pandas as pd

REFERENCE_FILE = "paper_reference.csv"
OURS = "uniseg3d (ours, {})"
OUR_SOURCE = "measured (metrics.json)"
LEADERBOARDS_DIR = "leaderboards"  # under `evaluate.out`
NOTE = ("Numbers in percent (ours: metrics.json fractions x 100), NoC in clicks per object. The "
        "dataset column names the data each row was measured on; rows on different data are "
        "not comparable.")

PROTOCOL_CLICKS = (1, 3, 5, 10, 15)  # metrics.interactive.IOU_CLICKS
PROTOCOL_TARGETS = (50, 65, 80, 85, 90)  # metrics.interactive.NOC_THRESHOLDS, in percent
TASKS: dict[str, tuple[str, tuple[tuple[str, str | None], ...]]] = {
    # task: (title, ((metric column, its path in metrics.json or None), ...))
    "panoptic": ("Panoptic segmentation", (
        ("PQ", "panoptic.pq"), ("PQ things", "panoptic.pq_things"),
        ("PQ stuff", "panoptic.pq_stuff"), ("SQ", "panoptic.sq"), ("RQ", "panoptic.rq"))),
    "semantic": ("Semantic segmentation", (("mIoU", "semantic.miou"),)),
    "instance": ("Instance segmentation", (
        ("mAP", "instance.ap"), ("mAP50", "instance.ap50"), ("mAP25", "instance.ap25"),
        ("mask mIoU", None))),
    # the paper's interactive AP is UniSeg3D's own evaluator (`metrics.prompt.click_ap`)
    "interactive": ("Interactive segmentation (one click per object)", (
        ("AP", "interactive.click_ap"), ("AP50", "interactive.click_ap50"),
        ("AP25", "interactive.click_ap25"), ("mask mIoU", "interactive.miou"),
        ("AP (ScanNet evaluator)", "interactive.ap"))),
    # ours reads ScanRefer_filtered_*.json: the "filtered" column
    "referring": ("Referring segmentation", (
        ("mIoU (filtered)", "referring.miou"), ("mIoU (complete)", None),
        ("Acc@0.25", "referring.acc25"), ("Acc@0.5", "referring.acc50"),
        ("Acc@0.5 unique", "referring.unique.acc50"),
        ("Acc@0.5 multiple", "referring.multiple.acc50"))),
    "open_vocab": ("Open-vocabulary instance segmentation, ScanNet200", (
        ("AP", "open_vocab.ap"), ("AP50", "open_vocab.ap50"), ("AP25", "open_vocab.ap25"),
        ("AP base", "open_vocab.base.ap"), ("AP novel", "open_vocab.novel.ap"),
        ("AP head", "open_vocab.head.ap"), ("AP common", "open_vocab.common.ap"),
        ("AP tail", "open_vocab.tail.ap"))),
    "open_vocab_replica": ("Open-vocabulary instance segmentation, Replica (zero-shot)", (
        ("AP", "replica.ap"), ("AP50", "replica.ap50"), ("AP25", "replica.ap25"),
        ("AP unseen classes", "replica.unseen.ap"))),
    # AGILE3D's protocol (`pipelines.interactive`): IoU after k clicks per object, and the
    # clicks per object needed for an IoU (NoC, a count, not a percentage)
    **{f"interactive_{mode}": (f"Interactive segmentation, {title} (AGILE3D's protocol)", tuple(
        (f"{name}@{value}", f"interactive_protocol.{mode}.{name.lower()}@{value}")
        for name, values in (("IoU", PROTOCOL_CLICKS), ("NoC", PROTOCOL_TARGETS))
        for value in values))
       for mode, title in (("multi", "multi-object"), ("single", "single-object"))},
}


def is_count(metric: str) -> bool:
    """NoC is a number of clicks; every other metric a fraction, shown in percent."""
    return metric.startswith("NoC")


def column(metric: str) -> str:
    """A leaderboard column header: the metric, in percent (NoC: in clicks)."""
    return f"{metric} (clicks)" if is_count(metric) else f"{metric} (%)"


@cache
def _reference() -> pd.DataFrame:
    with resources.files("uniseg3d.resources").joinpath(REFERENCE_FILE).open() as handle:
        return pd.read_csv(handle)


def reference_table() -> pd.DataFrame:
    """The paper's numbers: task, metric, method, value (percent), dataset, source."""
    return _reference().copy()


def _lookup(measured: dict, path: str) -> float | None:
    """A number from `metrics.json` by dotted path; None where the file has no such entry."""
    value: object = measured
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float("nan") if value is None else float(value)


def _our_row(measured: dict, dataset_label: str, metrics: tuple) -> dict | None:
    values = {metric: _lookup(measured, path) if path else None for metric, path in metrics}
    if all(value is None for value in values.values()):
        return None  # the evaluation did not cover this task (e.g. no Replica scenes)
    method = OURS.format(dataset_label) if "method" not in measured \
        else f"{measured['method']} ({dataset_label})"  # `evaluate-predictions`: another method
    return {"method": method, "dataset": dataset_label,
            **{column(metric): float("nan") if value is None
               else value if is_count(metric) else 100.0 * value
               for metric, value in values.items()},
            "source": OUR_SOURCE}


def _paper_rows(task: str) -> list[dict]:
    """The paper's methods for `task` in its order, one row per (method, dataset), with every
    source of the row's numbers."""
    reference = _reference()
    rows: dict[tuple[str, str], dict] = {}
    for entry in reference[reference["task"] == task].itertuples(index=False):
        row = rows.setdefault((entry.method, entry.dataset),
                              {"method": entry.method, "dataset": entry.dataset, "source": []})
        row[column(entry.metric)] = float(entry.value)
        if entry.source not in row["source"]:
            row["source"].append(entry.source)
    return [{**row, "source": "; ".join(row["source"])} for row in rows.values()]


def leaderboards(measured: dict | None, dataset_label: str) -> dict[str, pd.DataFrame]:
    """One table per task (`TASKS`): the paper's methods in its order, then our row measured on
    `dataset_label` when `measured` (a `metrics.json` dict) covers the task."""
    if measured is not None and measured.get("dataset", dataset_label) != dataset_label:
        raise ValueError(f"the metrics were measured on {measured['dataset']!r}, "
                         f"not on {dataset_label!r}")
    tables = {}
    for task, (_, metrics) in TASKS.items():
        columns = ["method", "dataset", *(column(metric) for metric, _ in metrics), "source"]
        rows = _paper_rows(task)
        unknown = {key for row in rows for key in row} - set(columns)
        if unknown:
            raise ValueError(f"{REFERENCE_FILE}: metrics {sorted(unknown)} of task {task!r} "
                             "have no leaderboard column")
        ours = _our_row(measured, dataset_label, metrics) if measured is not None else None
        tables[task] = pd.DataFrame(rows + ([ours] if ours else []), columns=columns)
    return tables


def _markdown(title: str, table: pd.DataFrame) -> str:
    cells = table.astype(object).where(table.notna(), None)
    body = cells.to_markdown(index=False, floatfmt=".1f", missingval="–")
    return f"# {title}\n\n{NOTE}\n\n{body}\n"


def _latex(title: str, table: pd.DataFrame) -> str:
    return table.to_latex(index=False, float_format="%.1f", na_rep="--", escape=True,
                          caption=f"{title}. {NOTE}")


def _html(title: str, table: pd.DataFrame) -> str:
    body = table.to_html(index=False, float_format="{:.1f}".format, na_rep="–", border=0)
    heading = html.escape(title)
    return (f"<!DOCTYPE html>\n<html>\n<head><meta charset=\"utf-8\"><title>{heading}</title>"
            f"</head>\n<body>\n<h1>{heading}</h1>\n<p>{html.escape(NOTE)}</p>\n{body}\n"
            "</body>\n</html>\n")


def write_leaderboards(tables: dict[str, pd.DataFrame], out_dir: str | Path) -> list[Path]:
    """Each table as `<task>.md`, `.csv`, `.tex` and `.html` under `out_dir`; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for task, table in tables.items():
        title = TASKS[task][0] if task in TASKS else task
        for suffix, text in ((".md", _markdown(title, table)), (".tex", _latex(title, table)),
                             (".html", _html(title, table))):
            path = out_dir / f"{task}{suffix}"
            path.write_text(text, encoding="utf-8")
            written.append(path)
        path = out_dir / f"{task}.csv"
        table.to_csv(path, index=False)
        written.append(path)
    return written


def write_evaluation_leaderboards(metrics: dict, evaluate_out: str | Path) -> list[Path]:
    """The leaderboards of an `evaluate` run's metrics, under `<evaluate.out>/leaderboards/`."""
    return write_leaderboards(leaderboards(metrics, metrics["dataset"]),
                              Path(evaluate_out) / LEADERBOARDS_DIR)
