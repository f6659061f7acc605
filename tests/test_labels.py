"""The ScanNet label map: raw category -> ScanNet20 / ScanNet200 class indices."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from scannet_files import write_label_map
from uniseg3d.datasets.classes import scannet20, scannet200
from uniseg3d.datasets.labels import read_label_map, report_unmapped
from uniseg3d.datasets.scene import IGNORE_INDEX, InputError


def test_class_tables_match_the_benchmarks():
    table20, table200 = scannet20(), scannet200()
    assert len(table20) == 20 and len(table200) == 200
    assert table20.names[:2] == ("wall", "floor") and table20.names[-1] == "otherfurniture"
    assert table20.source_ids.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28,
                                           33, 34, 36, 39]
    assert Counter(table200.frequency) == {"head": 66, "common": 68, "tail": 66}
    assert Counter(table200.open_vocab_split) == {"base": 51, "novel": 149}


def test_mapping_through_the_tsv(tmp_path):
    label_map = read_label_map(write_label_map(tmp_path / "labels.tsv"))
    unmapped = Counter()
    sem20, sem200 = label_map.classify(
        ["wall", "office chair", "ceiling", "kitchen cabinet", "unicorn", "unicorn", "chair",
         "hoverboard"], unmapped)
    # wall: nyu40 1 -> class 0, raw id 1 -> ScanNet200 index 0; office chair: nyu40 5 -> chair
    # (4), raw id 22 -> its own ScanNet200 class; ceiling: nyu40 22 is not a ScanNet20 class
    # hoverboard: in the TSV but neither a ScanNet20 nor a ScanNet200 class -> ignore, not unmapped
    assert sem20.tolist() == [0, 4, IGNORE_INDEX, 2, IGNORE_INDEX, IGNORE_INDEX, 4, IGNORE_INDEX]
    index200 = scannet200().index_of_name()
    assert sem200.tolist() == [index200["wall"], index200["office chair"], index200["ceiling"],
                               index200["kitchen cabinet"], IGNORE_INDEX, IGNORE_INDEX,
                               index200["chair"], IGNORE_INDEX]
    assert unmapped == {"unicorn": 2}


def test_unmapped_categories_reported_once(caplog, tmp_path):
    report_unmapped(Counter({"unicorn": 3, "dragon": 1}), tmp_path / "labels.tsv")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "'unicorn' x3" in messages[0] and "dragon" in messages[0]


def test_lookup_ignores_unknown_and_negative_ids():
    assert scannet20().lookup(np.array([1, 13, 39, -5, 1000])).tolist() == [0, -1, 19, -1, -1]


def test_bad_label_maps(tmp_path):
    missing_column = tmp_path / "a.tsv"
    missing_column.write_text("id\traw_category\n1\twall\n")
    with pytest.raises(InputError, match="nyu40id"):
        read_label_map(missing_column)
    bad_number = tmp_path / "b.tsv"
    bad_number.write_text("id\traw_category\tnyu40id\n1\twall\tone\n")
    with pytest.raises(InputError, match=r"b.tsv:2.*nyu40id"):
        read_label_map(bad_number)
    with pytest.raises(InputError, match="no such file"):
        read_label_map(tmp_path / "missing.tsv")
