"""Figures as PNG files: headless matplotlib, a grid of panels, and writing a figure to disk
(shared by the report's plots and the comparison's forest plots)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display, files only

import matplotlib.pyplot as plt  # noqa: E402

DPI = 110


def save(figure: plt.Figure, path: Path) -> Path:
    """Write `figure` as a PNG (parent folders created) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    return path


def grid(count: int, width: float = 4.2, height: float = 3.2, columns: int = 3
         ) -> tuple[plt.Figure, list[plt.Axes]]:
    """A figure of `count` panels, `columns` per row; unused panels hidden."""
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows),
                                squeeze=False, layout="constrained")
    flat = list(axes.ravel())
    for unused in flat[count:]:
        unused.set_visible(False)
    return figure, flat[:count]
