"""ScanNet benchmark submission files: write ours, read anyone's, evaluate, print a table.

Layouts (one `<scene>.txt` per scene in each folder, one line per mesh vertex):

* instance ground truth: `label_id * 1000 + instance` (label_id = nyu40 id; 0 or a label that
  is not one of the 18 thing classes is void); instance prediction: lines
  `relative/path/mask.txt <label_id> <confidence>`, each mask file one integer per vertex
  (nonzero = in the mask), inside the prediction folder (`pred_mask/` when we write it);
* semantic ground truth and prediction: one nyu40 label id per vertex.

A line that repeats a mask path overrides the earlier one (the official reader keeps a dict).
Problems raise `InputError` naming the file (`<file>:<line>` for a line) and the field.
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

import numpy as np

from uniseg3d.datasets.classes import scannet20
from uniseg3d.datasets.scene import InputError
from uniseg3d.metrics.instance import (
    InstanceGT, InstancePredictions, evaluate_instances)
from uniseg3d.metrics.semantic import evaluate_semantic

MASK_FOLDER = "pred_mask"
COLUMNS = {"instance": (("AP", "ap", "ap"), ("AP50", "ap50", "ap50"), ("AP25", "ap25", "ap25")),
           "semantic": (("IoU", "iou", "miou"),)}  # (header, class key, overall key)


def _nyu40(labels: np.ndarray) -> np.ndarray:
    """ScanNet20 class indices -> nyu40 ids (0 for anything else)."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    ids = scannet20().source_ids
    inside = (labels >= 0) & (labels < len(ids))
    return np.where(inside, ids[np.where(inside, labels, 0)], 0)


def write_ids(path: Path, values: np.ndarray) -> None:
    """One integer per line."""
    values = np.asarray(values, dtype=np.int64).reshape(-1)
    if values.size and values.min() >= 0 and values.max() <= 9:  # masks: two bytes a line
        text = np.full(2 * values.size, ord("\n"), dtype=np.uint8)
        text[::2] = ord("0") + values
        path.write_bytes(text.tobytes())
    else:
        path.write_text("".join(f"{v}\n" for v in values.tolist()), encoding="ascii")


def read_ids(path: Path, field: str) -> np.ndarray:
    """One integer per line, as ScanNet's `load_ids` (an empty line is an error)."""
    data = Path(path).read_bytes()
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size % 2 == 0 and (raw[1::2] == ord("\n")).all() \
            and ((raw[::2] >= ord("0")) & (raw[::2] <= ord("9"))).all():
        return raw[::2].astype(np.int64) - ord("0")
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(path, field, "a text file, one integer per line", "binary data") from None
    try:
        return np.array(lines, dtype=np.int64)
    except ValueError:
        for number, line in enumerate(lines, 1):
            try:
                int(line)
            except ValueError:
                raise InputError(f"{path}:{number}", field, "an integer", repr(line)) from None
        raise


def write_instance_submission(pred_dir: str | Path, scene_id: str,
                              predictions: InstancePredictions) -> Path:
    """Write `<scene>.txt` and its masks under `pred_mask/`; labels are ScanNet20 class indices
    (written as nyu40 ids), confidences with full precision."""
    pred_dir = Path(pred_dir)
    (pred_dir / MASK_FOLDER).mkdir(parents=True, exist_ok=True)
    masks = np.asarray(predictions.masks)
    if masks.ndim != 2:  # a flat list of masks; an (0, N) array of no predictions stays as is
        masks = masks.reshape(len(masks), -1)
    masks = masks != 0
    lines = []
    for k, (label, score) in enumerate(zip(_nyu40(predictions.labels).tolist(),
                                           np.asarray(predictions.scores).reshape(-1).tolist())):
        relative = f"{MASK_FOLDER}/{scene_id}_{k:03d}.txt"
        write_ids(pred_dir / relative, masks[k])
        lines.append(f"{relative} {label} {float(score)!r}\n")
    path = pred_dir / f"{scene_id}.txt"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def write_semantic_submission(pred_dir: str | Path, scene_id: str, labels: np.ndarray) -> Path:
    """Write `<scene>.txt` with the nyu40 id of each vertex's ScanNet20 class index."""
    path = Path(pred_dir) / f"{scene_id}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_ids(path, _nyu40(labels))
    return path


def read_instance_predictions(path: str | Path, pred_dir: str | Path, num_vertices: int
                              ) -> InstancePredictions:
    """One scene's instance predictions (labels: nyu40 ids), masks checked against the GT size."""
    path, root = Path(path), Path(os.path.abspath(pred_dir))
    entries: dict[Path, tuple[int, float]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        where, parts = f"{path}:{number}", line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise InputError(where, "fields", "3 fields: mask path, label id, confidence",
                             f"{len(parts)} fields")
        try:
            label = int(float(parts[1]))
        except (ValueError, OverflowError):
            raise InputError(where, "label_id", "an integer label id", repr(parts[1])) from None
        try:
            confidence = float(parts[2])
        except ValueError:
            raise InputError(where, "confidence", "a number", repr(parts[2])) from None
        mask_path = Path(os.path.abspath(path.parent / parts[0]))
        if os.path.isabs(parts[0]) or not mask_path.is_relative_to(root):
            raise InputError(where, "mask_file", "a relative path inside the prediction folder",
                             parts[0])
        if not mask_path.is_file():
            raise InputError(where, "mask_file", "an existing mask file", f"no file {parts[0]}")
        entries[mask_path] = (label, confidence)
    masks = np.zeros((len(entries), num_vertices), dtype=bool)
    for k, mask_path in enumerate(entries):
        mask = read_ids(mask_path, "mask value")
        if len(mask) != num_vertices:
            raise InputError(mask_path, "vertices", f"{num_vertices} lines (one per GT vertex)",
                             f"{len(mask)} lines")
        masks[k] = mask != 0
    values = list(entries.values())
    return InstancePredictions(masks, np.array([v[0] for v in values], dtype=np.int64),
                               np.array([v[1] for v in values], dtype=np.float64))


def _scenes(gt_dir: Path, pred_dir: Path) -> list[str]:
    scenes = sorted(p.stem for p in gt_dir.glob("*.txt"))
    if not scenes:
        raise InputError(gt_dir, "files", "one <scene>.txt per scene", "no .txt files")
    for scene in scenes:
        if not (pred_dir / f"{scene}.txt").is_file():
            raise InputError(pred_dir / f"{scene}.txt", "file",
                             f"a prediction for ground-truth scene {scene}", "no such file")
    for extra in sorted(set(p.stem for p in pred_dir.glob("*.txt")) - set(scenes)):
        raise InputError(pred_dir / f"{extra}.txt", "file",
                         "a scene that has a ground-truth file", f"no {gt_dir / extra}.txt")
    return scenes


def _load(task: str, gt_path: Path, pred_path: Path, pred_dir: Path) -> tuple:
    if task == "instance":
        gt_ids = read_ids(gt_path, "instance id")
        return (InstanceGT(gt_ids // 1000, gt_ids % 1000),
                read_instance_predictions(pred_path, pred_dir, len(gt_ids)))
    gt, pred = read_ids(gt_path, "label id"), read_ids(pred_path, "label id")
    if len(pred) != len(gt):
        raise InputError(pred_path, "vertices", f"{len(gt)} lines (one per GT vertex)",
                         f"{len(pred)} lines")
    return gt, pred


def _json_safe(value: object) -> object:
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    return None if isinstance(value, float) and math.isnan(value) else value


def evaluate_submission(task: str, gt_dir: str | Path, pred_dir: str | Path) -> dict:
    """Evaluate a ScanNet20 submission folder against a ground-truth folder.

    `task`: "instance" (AP / AP50 / AP25 over the 18 thing classes) or "semantic" (IoU over the
    20 classes). Returns a JSON-able dict: task, scenes, the overall metrics and `classes`
    (class name -> metrics); NaN (a class without ground truth) becomes None.
    """
    if task not in COLUMNS:
        raise ValueError(f"task must be one of {sorted(COLUMNS)}, not {task!r}")
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    scenes = _scenes(gt_dir, pred_dir)
    pairs = (_load(task, gt_dir / f"{s}.txt", pred_dir / f"{s}.txt", pred_dir) for s in scenes)
    first, second = itertools.tee(pairs)  # one scene in memory at a time
    gts, preds = (gt for gt, _ in first), (pred for _, pred in second)
    table = scannet20()
    if task == "instance":
        metrics = evaluate_instances(gts, preds, table.source_ids[2:], table.names[2:])
    else:
        metrics = evaluate_semantic(gts, preds, table.source_ids, table.names)
    return _json_safe({"task": task, "scenes": len(scenes), **metrics})


def format_table(result: dict) -> str:
    """`evaluate_submission`'s result as a plain-text table (one row per class, then the mean)."""
    columns = COLUMNS[result["task"]]
    width = max(len(name) for name in [*result["classes"], "average"]) + 2

    def cell(value: float | None) -> str:
        return f"{'-' if value is None else f'{value:.4f}':>8}"

    header = f"{'class':<{width}}" + "".join(f"{title:>8}" for title, _, _ in columns)
    rows = [f"{name:<{width}}" + "".join(cell(values[key]) for _, key, _ in columns)
            for name, values in result["classes"].items()]
    average = f"{'average':<{width}}" + "".join(cell(result[key]) for _, _, key in columns)
    rule = "-" * len(header)
    title = f"{result['task']} segmentation, {result['scenes']} scenes"
    return "\n".join([title, header, rule, *rows, rule, average]) + "\n"
