"""The ScanNet label map (`scannetv2-labels.combined.tsv`): raw category -> ScanNet20 / ScanNet200."""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uniseg3d.datasets.classes import scannet20, scannet200
from uniseg3d.datasets.scene import IGNORE_INDEX, InputError

log = logging.getLogger(__name__)

LABEL_MAP_FILE = "scannetv2-labels.combined.tsv"
REQUIRED_COLUMNS = ("id", "raw_category", "nyu40id")


@dataclass(frozen=True)
class LabelMap:
    """Raw category name -> (ScanNet20 class index, ScanNet200 class index)."""

    to_scannet20: dict[str, int]
    to_scannet200: dict[str, int]

    def classify(self, raw_categories: list[str], unmapped: Counter | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Class indices for each raw category; unknown names map to IGNORE_INDEX and are counted
        in `unmapped` (the caller reports them once per run)."""
        sem20 = np.full(len(raw_categories), IGNORE_INDEX, dtype=np.int64)
        sem200 = np.full(len(raw_categories), IGNORE_INDEX, dtype=np.int64)
        for i, name in enumerate(raw_categories):
            if name in self.to_scannet20:
                sem20[i] = self.to_scannet20[name]
                sem200[i] = self.to_scannet200[name]
            elif unmapped is not None:
                unmapped[name] += 1
        return sem20, sem200


def _int_field(path: Path, line: int, column: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InputError(f"{path}:{line}", column, "an integer", repr(value)) from None


def read_label_map(path: str | Path) -> LabelMap:
    """Read ScanNet's tab-separated label map (columns include id, raw_category, nyu40id)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "label map", "an existing scannetv2-labels.combined.tsv file",
                         "no such file")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(path, "header", f"tab-separated columns {list(REQUIRED_COLUMNS)}",
                             f"missing {missing}")
        raw_ids, nyu_ids, names = [], [], []
        for line, row in enumerate(reader, start=2):
            names.append(row["raw_category"])
            raw_ids.append(_int_field(path, line, "id", row["id"]))
            nyu = row["nyu40id"].strip()
            nyu_ids.append(_int_field(path, line, "nyu40id", nyu) if nyu else 0)
    sem20 = scannet20().lookup(np.array(nyu_ids, dtype=np.int64))
    sem200 = scannet200().lookup(np.array(raw_ids, dtype=np.int64))
    return LabelMap(
        to_scannet20={n: int(s) for n, s in zip(names, sem20)},
        to_scannet200={n: int(s) for n, s in zip(names, sem200)},
    )


def report_unmapped(unmapped: Counter, label_map_path: str | Path) -> None:
    """Log, once, every raw category that the label map does not know."""
    if unmapped:
        listing = ", ".join(f"'{name}' x{count}" for name, count in unmapped.most_common())
        log.warning("%d raw categories are missing from %s and were mapped to ignore: %s",
                    len(unmapped), label_map_path, listing)
