"""Colours for rendering labels: ScanNet's 20-class palette and distinct colours for instances."""

from __future__ import annotations

import numpy as np

SCANNET20_COLORS = np.array([
    (174, 199, 232), (152, 223, 138), (31, 119, 180), (255, 187, 120), (188, 189, 34),
    (140, 86, 75), (255, 152, 150), (214, 39, 40), (197, 176, 213), (148, 103, 189),
    (196, 156, 148), (23, 190, 207), (247, 182, 210), (219, 219, 141), (255, 127, 14),
    (158, 218, 229), (44, 160, 44), (112, 128, 144), (227, 119, 194), (82, 84, 163)],
    dtype=np.uint8)
UNLABELLED = np.array((80, 80, 80), dtype=np.uint8)


def distinct_colors(count: int, seed: int = 0) -> np.ndarray:
    """`count` well-separated saturated colours (golden-ratio hue steps), deterministic."""
    hue = (seed * 0.1 + np.arange(count) * 0.618033988749895) % 1.0
    value = np.where(np.arange(count) % 2 == 0, 0.95, 0.75)
    sector = (hue * 6).astype(int) % 6
    f = hue * 6 - np.floor(hue * 6)
    p, q, t = value * 0.25, value * (1 - 0.75 * f), value * (1 - 0.75 * (1 - f))
    rgb = np.select([sector[:, None] == i for i in range(6)], [
        np.stack(c, 1) for c in ((value, t, p), (q, value, p), (p, value, t), (p, q, value),
                                 (t, p, value), (value, p, q))])
    return (rgb * 255).astype(np.uint8)


def color_labels(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(N, 3) colours for per-point labels; negative labels get the unlabelled grey."""
    colors = np.tile(UNLABELLED, (len(labels), 1))
    valid = labels >= 0
    colors[valid] = palette[labels[valid] % len(palette)]
    return colors


THING_COLORS = distinct_colors(64, seed=3)


def panoptic_colors(classes: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Things (id >= 0) in one colour per instance, stuff in its ScanNet20 class colour."""
    return np.where((ids >= 0)[:, None], color_labels(ids, THING_COLORS),
                    color_labels(classes, SCANNET20_COLORS))


def color_masks(masks: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Paint each (K, N) mask in its own colour over a dimmed copy of `base` colours; later
    masks win where masks overlap."""
    colors = (base.astype(np.float32) * 0.35).astype(np.uint8)
    for color, mask in zip(distinct_colors(len(masks)), masks):
        colors[mask] = color
    return colors
