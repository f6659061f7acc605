"""Report figures as PNG files (matplotlib, headless): training curves, per-class metrics, the
sweep (each task's metric against lambda and against the click strategies, like the paper's
ablation tables) and the latency breakdown as stacked bars beside the paper's.

Every function takes plain data (lists of dicts, DataFrames, the latency JSON), writes one PNG
and returns its path.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from matplotlib.ticker import MaxNLocator
import numpy as np
import pandas as pd

from uniseg3d.datasets.clicks import STRATEGIES
from uniseg3d.pipelines.sweep import AXES
from uniseg3d.reports.figure_files import grid, plt, save

LAMBDA, TRAIN_CLICK, EVAL_CLICK, CORRECTIVE_CLICK = AXES  # the sweep's axes: results.csv columns


def training_curves(history: list[dict], path: Path) -> Path:
    """Every loss term per epoch (log scale; validation dashed) and the learning rate; vertical
    lines mark the start of each fine-tuning stage."""
    frame = pd.DataFrame(history).sort_values("epoch")
    figure, (losses, rate) = plt.subplots(1, 2, figsize=(12, 4.5), width_ratios=(2, 1),
                                          layout="constrained")
    terms = [c for c in frame.columns if c.startswith("train_") and c != "train_total"]
    plotted = [c for c in ("train_total", *terms, "val_total") if c in frame.columns]
    for name in plotted:
        losses.plot(frame["epoch"], frame[name], marker="o", markersize=3,
                    linestyle="--" if name.startswith("val") else "-",
                    linewidth=2.2 if name.endswith("_total") else 1.0,
                    label=name.replace("_", " "))
    if frame[plotted].min().min() > 0:
        losses.set_yscale("log")
    rate.plot(frame["epoch"], frame["lr"], marker="o", markersize=3, color="tab:gray")
    for axes, title in ((losses, "losses"), (rate, "learning rate (start of epoch)")):
        for epoch in frame.loc[frame["stage"].diff() > 0, "epoch"]:
            axes.axvline(epoch - 0.5, color="black", linestyle=":", linewidth=1)
        axes.set(xlabel="epoch", title=title)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    losses.set_ylabel("loss")
    figure.legend(loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    return save(figure, path)


def per_class_bars(tables: dict[str, tuple[pd.DataFrame, str]], path: Path) -> Path:
    """One horizontal bar panel per task: `tables` maps a title to (per-class table, metric
    column as a fraction); classes without a value are left out."""
    figure, panels = grid(len(tables), width=4.5, height=5.5)
    for axes, (title, (table, metric)) in zip(panels, tables.items()):
        rows = table.dropna(subset=[metric])
        axes.barh(rows["class"], 100 * rows[metric], color="tab:blue")
        axes.invert_yaxis()
        axes.set(xlim=(0, 100), xlabel=f"{metric} (%)", title=title)
        axes.tick_params(axis="y", labelsize=8)
        axes.grid(axis="x", alpha=0.3)
    return save(figure, path)


def _strategies(values: pd.Index) -> list[str]:
    """Click strategies in `STRATEGIES` order ('rd0.5' with rd), others after them."""
    def rank(value: str) -> tuple[int, str]:
        base = "rd" if value.startswith("rd") else value
        return (STRATEGIES.index(base) if base in STRATEGIES else len(STRATEGIES), value)
    return sorted(values, key=rank)


def sweep_lambda(results: pd.DataFrame, metrics: list[str], path: Path) -> Path:
    """Each metric against lambda_inter (a tick per value tried), one line per combination of
    the click strategies that vary (trials with the same settings averaged)."""
    groups = [c for c in (TRAIN_CLICK, EVAL_CLICK, CORRECTIVE_CLICK) if results[c].nunique() > 1]
    figure, panels = grid(len(metrics))
    for axes, metric in zip(panels, metrics):
        means = results.groupby([*groups, LAMBDA])[metric].mean().reset_index()
        for key, rows in (means.groupby(groups) if groups else [((), means)]):
            label = ", ".join(f"{c.replace('_click', '')}: {v}" for c, v in zip(groups, key))
            axes.plot(rows[LAMBDA], 100 * rows[metric], marker="o", label=label or "all trials")
        axes.set_xticks(sorted(results[LAMBDA].unique()))
        axes.set(xlabel="λ (lambda_inter)", ylabel=f"{metric} (%)", title=metric)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    return save(figure, path)


def sweep_clicks(results: pd.DataFrame, metrics: list[str], path: Path) -> Path:
    """Each metric per training click strategy (groups of bars) and evaluation click strategy
    (one bar each), averaged over the other settings (lambda)."""
    figure, panels = grid(len(metrics))
    for axes, metric in zip(panels, metrics):
        means = results.groupby([TRAIN_CLICK, EVAL_CLICK])[metric].mean().unstack(EVAL_CLICK)
        means = means.reindex(index=_strategies(means.index), columns=_strategies(means.columns))
        width = 0.8 / means.shape[1]
        x = np.arange(len(means))
        for i, name in enumerate(means.columns):
            axes.bar(x + (i - (means.shape[1] - 1) / 2) * width, 100 * means[name], width,
                     label=f"evaluation: {name}")
        axes.set_xticks(x, means.index)
        axes.set(xlabel="training click strategy", ylabel=f"{metric} (%)", title=metric)
        axes.grid(axis="y", alpha=0.3)
        axes.legend(fontsize=7)
    return save(figure, path)


def _colour_key(name: str) -> str:
    """Components of the same part share a colour ('text encoder (cached)', 'text encoder')."""
    return name.split(" (")[0]


def latency_bars(latency: dict, path: Path) -> Path:
    """Our median milliseconds per component stacked beside the paper's components."""
    ours = [(c["name"], c["median_ms"]) for c in latency["components"]]
    paper = [(name, value) for name, value in latency.get("paper", {}).get("components", {}).items()
             if value is not None and name != "total"]
    keys = list(dict.fromkeys(_colour_key(name) for name, _ in ours + paper))
    palette = dict(zip(keys, plt.get_cmap("tab20")(np.linspace(0, 1, 20))[:len(keys)]))
    labels = [f"ours ({latency.get('config', '?')}):\n{latency.get('device', '')}",
              "paper:\n" + textwrap.fill(latency.get("paper", {}).get("hardware", ""), 30)]
    figure, axes = plt.subplots(figsize=(10, 4.5))
    shown = set()
    for row, parts in enumerate((ours, paper)):
        left = 0.0
        for name, value in parts:
            key = _colour_key(name)
            axes.barh(row, value, left=left, color=palette[key], edgecolor="white",
                      label=None if key in shown else key)
            shown.add(key)
            left += value
        axes.text(left, row, f" {left:.1f} ms", va="center", fontsize=9)
    axes.set_yticks([0, 1], labels, fontsize=8)
    axes.invert_yaxis()
    axes.set(xlabel="milliseconds per scene (median)", title="inference time per component")
    axes.grid(axis="x", alpha=0.3)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return save(figure, path)


def click_curves(curves: dict[str, list[float | None]],
                 references: dict[str, dict[int, float]], one_click: tuple[str, float] | None,
                 path: Path) -> Path:
    """IoU (%) against the number of clicks per object: our protocol curves (fractions), the
    reference methods' published points (percent) and the paper's one-click number (a star)."""
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for name, curve in curves.items():
        points = [(k, 100 * v) for k, v in enumerate(curve, 1) if v is not None]
        if points:
            axes.plot(*zip(*points), marker=".", label=name)
    for name, values in references.items():
        axes.plot(list(values), list(values.values()), linestyle="none", marker="s",
                  label=name)
    if one_click is not None:
        axes.plot([1], [one_click[1]], linestyle="none", marker="*", markersize=14,
                  color="black", label=one_click[0])
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set(xlabel="clicks per object", ylabel="IoU (%)", ylim=(0, 100),
             title="interactive segmentation over clicks (AGILE3D's protocol)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    return save(figure, path)

