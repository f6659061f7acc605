"""`predictions.npz`, the versioned per-scene prediction format: written by `uniseg3d predict`,
read back (checked key by key) by `uniseg3d evaluate-predictions`.

Format version 1 (docs/segment-a-scan.md): every key of `KEYS`, no other; `format_version` is a
0-d int64 holding 1. Reading refuses, naming the file and the key, anything that is not an npz,
a missing or unknown key, a wrong dtype kind or shape (a point count that is not the scene's, a
mask that is not boolean), labels outside their class list and NaN or infinite scores.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uniseg3d.datasets.classes import scannet20
from uniseg3d.datasets.scene import InputError
from uniseg3d.model.postprocess import Instances, PromptMasks, ScenePrediction

PREDICTIONS_FILE = "predictions.npz"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Key:
    """One array of the format: its dtype kind ('b' bool, 'i' integer, 'f' float), its shape
    (symbols: N points, C the 20 ScanNet classes, or the name of a row count) and the range of
    its integer values (`low`; `high` a symbol: values < it)."""

    kind: str
    shape: tuple[str, ...]
    low: int | None = None
    high: str | None = None


KEYS = {
    "format_version": Key("i", ()),
    "semantic": Key("i", ("N",), 0, "C"),
    "instance_masks": Key("b", ("K", "N")),
    "instance_labels": Key("i", ("K",), 0, "C"),
    "instance_scores": Key("f", ("K",)),
    "panoptic_semantic": Key("i", ("N",), -1, "C"),
    "panoptic_instance": Key("i", ("N",), -1),
    "click_masks": Key("b", ("O", "N")),
    "click_class_probs": Key("f", ("O", "C")),
    "text_masks": Key("b", ("T", "N")),
    "open_vocab_masks": Key("b", ("V", "N")),
    "open_vocab_labels": Key("i", ("V",), 0, "L"),
    "open_vocab_scores": Key("f", ("V",)),
}
SYMBOLS = {"N": "the scene's points", "C": "the 20 ScanNet classes",
           "O": "the clicked objects of the prompts", "T": "the prompts' descriptions",
           "L": "the prompts' open-vocabulary classes"}
_DTYPES = {"b": np.bool_, "i": np.int64, "f": np.float32}


def prediction_arrays(prediction: ScenePrediction, num_points: int) -> dict[str, np.ndarray]:
    """Every task's arrays, as `predictions.npz` holds them."""
    open_vocab = prediction.open_vocab or Instances(
        np.zeros((0, num_points), dtype=bool), np.zeros(0), np.zeros(0))
    values = {
        "format_version": np.int64(FORMAT_VERSION),
        "semantic": prediction.semantic,
        "instance_masks": prediction.instances.masks.reshape(-1, num_points),
        "instance_labels": prediction.instances.labels,
        "instance_scores": prediction.instances.scores,
        "panoptic_semantic": prediction.panoptic_classes,
        "panoptic_instance": prediction.panoptic_ids,
        "click_masks": prediction.clicks.masks.reshape(-1, num_points),
        "click_class_probs": prediction.clicks.class_probs.reshape(-1, len(scannet20().names)),
        "text_masks": prediction.texts.masks.reshape(-1, num_points),
        "open_vocab_masks": open_vocab.masks.reshape(-1, num_points),
        "open_vocab_labels": open_vocab.labels,
        "open_vocab_scores": open_vocab.scores,
    }
    return {key: np.asarray(value).astype(_DTYPES[KEYS[key].kind], copy=False)
            for key, value in values.items()}


def _load(path: Path) -> dict[str, np.ndarray]:
    expected = "an npz archive (numpy.savez) without pickled objects"
    if not path.is_file():
        raise InputError(path, "file", f"a {PREDICTIONS_FILE} for the scene", "no such file")
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError):
        raise InputError(path, "file", expected, "something else") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise InputError(path, "file", expected, "a single .npy array")
    with npz:
        try:
            return {key: npz[key] for key in npz.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
            raise InputError(path, "file", expected, f"an unreadable member ({error})") from None


def _check(path: Path, key: str, array: np.ndarray, sizes: dict[str, int]) -> None:
    spec = KEYS[key]
    if array.dtype.kind != spec.kind and not (spec.kind == "i" and array.dtype.kind == "u"):
        expected = {"b": "boolean", "i": "integer", "f": "floating-point"}[spec.kind]
        raise InputError(path, key, f"a {expected} array", f"dtype {array.dtype}")
    if array.ndim != len(spec.shape):
        raise InputError(path, key, f"shape ({', '.join(spec.shape)})", f"shape {array.shape}")
    for symbol, size in zip(spec.shape, array.shape):
        if sizes.setdefault(symbol, size) != size:
            raise InputError(path, key, f"{symbol} = {sizes[symbol]} "
                             f"({SYMBOLS.get(symbol, 'as in the other keys')})", f"{size}")
    if spec.kind == "f" and not np.isfinite(array).all():
        raise InputError(path, key, "finite values", "NaN or infinite values")
    if spec.low is not None and array.size:
        high = sizes[spec.high] if spec.high else None
        if array.min() < spec.low or (high is not None and array.max() >= high):
            raise InputError(path, key, f"values in [{spec.low}, "
                             f"{high - 1 if high is not None else 'inf'}]",
                             f"values from {array.min()} to {array.max()}")


def read_predictions(path: str | Path, points: int, objects: int, texts: int, classes: int
                     ) -> ScenePrediction:
    """One scene's `predictions.npz`, checked against its prompts: `points` in the scene,
    `objects` clicked, `texts` descriptions, `classes` open-vocabulary class names."""
    path = Path(path)
    arrays = _load(path)
    for key in KEYS:
        if key not in arrays:
            raise InputError(path, key, f"a key of format version {FORMAT_VERSION}", "no such key")
    for key in arrays:
        if key not in KEYS:
            raise InputError(path, key, f"only the keys of format version {FORMAT_VERSION} "
                             f"({', '.join(KEYS)})", "an unknown key")
    sizes = {"N": points, "C": len(scannet20().names), "O": objects, "T": texts, "L": classes}
    for key, array in arrays.items():
        _check(path, key, array, sizes)
    if int(arrays["format_version"]) != FORMAT_VERSION:
        raise InputError(path, "format_version", str(FORMAT_VERSION),
                         str(arrays["format_version"]))
    no_probs = np.zeros((texts, 0), dtype=np.float32)
    return ScenePrediction(
        semantic=arrays["semantic"],
        instances=Instances(arrays["instance_masks"], arrays["instance_labels"],
                            arrays["instance_scores"]),
        panoptic_classes=arrays["panoptic_semantic"], panoptic_ids=arrays["panoptic_instance"],
        clicks=PromptMasks(arrays["click_masks"], arrays["click_class_probs"],
                           np.zeros(objects, dtype=np.float32)),
        texts=PromptMasks(arrays["text_masks"], no_probs, np.zeros(texts, dtype=np.float32)),
        open_vocab=Instances(arrays["open_vocab_masks"], arrays["open_vocab_labels"],
                             arrays["open_vocab_scores"]))
