"""ScanNet20 and ScanNet200 class tables (names, source ids, frequency and open-vocabulary splits).

The table ships inside the package (`resources/scannet_classes.csv`): for ScanNet20, `raw_id` is
the nyu40 id; for ScanNet200 it is the raw category id of `scannetv2-labels.combined.tsv`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

from uniseg3d.datasets.scene import IGNORE_INDEX

STUFF_CLASSES20 = ("wall", "floor")


@dataclass(frozen=True)
class ClassTable:
    """One benchmark's classes, in benchmark order (class index = position)."""

    names: tuple[str, ...]
    source_ids: np.ndarray  # nyu40 id (ScanNet20) or raw category id (ScanNet200)
    frequency: tuple[str, ...]  # head / common / tail (ScanNet200), empty strings otherwise
    open_vocab_split: tuple[str, ...]  # base / novel (ScanNet200), empty strings otherwise

    def __len__(self) -> int:
        return len(self.names)

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Map source ids (any shape, any int) to class indices, IGNORE_INDEX where unknown."""
        table = np.full(int(max(self.source_ids.max(), np.max(ids, initial=0))) + 2, IGNORE_INDEX,
                        dtype=np.int64)
        table[self.source_ids] = np.arange(len(self.names))
        ids = np.asarray(ids, dtype=np.int64)
        valid = ids >= 0
        return np.where(valid, table[np.where(valid, ids, 0)], IGNORE_INDEX)

    def index_of_name(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}


@cache
def _load(benchmark: str) -> ClassTable:
    rows = []
    with resources.files("uniseg3d.resources").joinpath("scannet_classes.csv").open() as handle:
        for row in csv.DictReader(handle):
            if row["benchmark"] == benchmark:
                rows.append(row)
    rows.sort(key=lambda r: int(r["index"]))
    return ClassTable(
        names=tuple(r["name"] for r in rows),
        source_ids=np.array([int(r["raw_id"]) for r in rows], dtype=np.int64),
        frequency=tuple(r["frequency"] for r in rows),
        open_vocab_split=tuple(r["open_vocab_split"] for r in rows),
    )


def scannet20() -> ClassTable:
    """The 20 ScanNet benchmark classes (wall and floor are stuff, the other 18 things)."""
    return _load("scannet20")


def scannet200() -> ClassTable:
    """The 200 ScanNet200 benchmark classes with head/common/tail and base/novel splits."""
    return _load("scannet200")
