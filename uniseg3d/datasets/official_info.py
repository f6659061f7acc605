"""UniSeg3D's data-info pkl (`uniseg3d_infos_train.pkl`), read without running pickled code: the
SAM3D pseudo masks that its training appends to the ground truth as novel objects.

The file is mmdet3d's info layout: a dict with `metainfo` and `data_list`, one entry per scene
(`lidar_points.lidar_path` = `<scene>.bin`, `super_pts_path`, `text_info`, ...), or a bare list
of entries. `sam3d_pseudo_sp_masks` is a bool (masks, superpoints) array per scene. The
unpickler builds plain containers and NumPy arrays only; any other global the file names (a
function such as `os.system`, a class of some package) is refused before it is called.
"""

from __future__ import annotations

import importlib
import pickle
import re
from pathlib import Path

import numpy as np

from uniseg3d.datasets.scene import InputError

PSEUDO_MASKS = "sam3d_pseudo_sp_masks"
NUMPY_GLOBALS = {  # data reconstruction only; NumPy 1 and 2 module paths
    f"{module}.{name}" for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")} | {"numpy.ndarray", "numpy.dtype"}


def is_numpy_data(name: str) -> bool:
    """Whether a pickled global is one of NumPy's array, scalar or dtype reconstructors."""
    return name in NUMPY_GLOBALS or re.fullmatch(r"numpy\.dtypes\.\w+DType", name) is not None


def numpy_global(name: str):
    """The object a NumPy data global names, under NumPy 1 or 2 module paths."""
    module, _, attribute = name.rpartition(".")
    if module.startswith("numpy.core") and hasattr(np, "_core"):
        module = module.replace("numpy.core", "numpy._core", 1)
    return getattr(importlib.import_module(module), attribute)


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle names a global that is not NumPy data."""


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        full = f"{module}.{name}"
        if not is_numpy_data(full):
            raise RefusedGlobal(full)
        return numpy_global(full)


def read_info_entries(path: str | Path) -> list[dict]:
    """The per-scene entries of a data-info pkl, read with the data-only unpickler."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data-info pkl")
    try:
        with path.open("rb") as handle:
            data = _DataUnpickler(handle).load()
    except RefusedGlobal as error:
        raise InputError(path, "pickle", "plain containers and NumPy arrays only",
                         f"the global {error} (refused: it could run code)") from None
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise InputError(path, "pickle", "a readable pickle", str(error)) from None
    entries = data.get("data_list") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InputError(path, "data_list", "a list of per-scene dicts",
                         type(entries).__name__)
    return entries


def scene_of(entry: dict) -> str | None:
    """The scene id of an info entry (`scene0000_00` from `lidar_points.lidar_path`)."""
    lidar = entry.get("lidar_points")
    if isinstance(lidar, dict) and isinstance(lidar.get("lidar_path"), str):
        return Path(lidar["lidar_path"]).stem
    for key in ("scene_id", "sample_idx"):
        if isinstance(entry.get(key), str):
            return entry[key]
    return None


def read_pseudo_masks(path: str | Path) -> dict[str, np.ndarray]:
    """scene id -> (masks, superpoints) bool SAM3D pseudo masks of every entry that has them."""
    masks = {}
    for entry in read_info_entries(path):
        scene, value = scene_of(entry), entry.get(PSEUDO_MASKS)
        if scene is None or value is None:
            continue
        value = np.asarray(value)
        if value.ndim != 2:
            raise InputError(path, f"{scene}.{PSEUDO_MASKS}", "a (masks, superpoints) array",
                             f"shape {value.shape}")
        masks[scene] = value.astype(bool)
    if not masks:
        raise InputError(path, PSEUDO_MASKS, "at least one scene entry with pseudo masks",
                         "none")
    return masks
