"""The comparison's forest plots: differences to a baseline with their bootstrap intervals, one
panel per group of rows, one colour per compared side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from uniseg3d.reports.figure_files import grid, save


def forest_plot(panels: dict[str, pd.DataFrame], path: Path) -> Path:
    """One panel per title: each row's `delta` with its interval [`ci_low`, `ci_high`] against
    its `label`, one colour per compared side (`other`); filled markers where the interval
    excludes zero (`significant`)."""
    height = max(2.0, 0.2 * max(len(frame) for frame in panels.values()) + 1.0)
    figure, axes_list = grid(len(panels), width=6.0, height=height, columns=len(panels))
    for axes, (title, frame) in zip(axes_list, panels.items()):
        labels = list(dict.fromkeys(frame["label"]))
        sides = list(dict.fromkeys(frame["other"]))
        for index, (side, rows) in enumerate(frame.groupby("other", sort=False)):
            y = np.array([labels.index(label) for label in rows["label"]], dtype=float)
            y += 0.6 * (index - (len(sides) - 1) / 2) / max(len(sides), 1)
            colour = f"C{index}"
            axes.hlines(y, rows["ci_low"], rows["ci_high"], color=colour, linewidth=1.2)
            significant = rows["significant"].to_numpy(dtype=bool)
            axes.scatter(rows["delta"][significant], y[significant], color=colour, s=16,
                         zorder=3, label=f"{side} (interval excludes 0)")
            axes.scatter(rows["delta"][~significant], y[~significant], facecolors="white",
                         edgecolors=colour, s=16, zorder=3, label=side)
        axes.axvline(0.0, color="black", linewidth=0.8)
        axes.set_yticks(range(len(labels)), labels, fontsize=7)
        axes.set_ylim(len(labels) - 0.5, -0.5)
        axes.set(xlabel="difference to the baseline", title=title)
        axes.grid(axis="x", alpha=0.3)
        axes.legend(fontsize=7, loc="best")
    return save(figure, path)
