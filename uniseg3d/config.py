"""Typed configuration loaded from `params.yaml`, the single source of truth for every knob.

Each section of `params.yaml` maps to one frozen dataclass; unknown keys and wrong types are
errors that name the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(ValueError):
    """`params.yaml` does not match the expected schema."""


@dataclass(frozen=True)
class SuperpointConfig:
    """ScanNet segmentator parameters (kThresh, segMinVerts)."""

    k_thresh: float = 0.01
    min_verts: int = 20


@dataclass(frozen=True)
class DatasetPaths:
    """Where one dataset's raw files are read and its cache is written."""

    raw: str
    out: str
    scenes: str | None = None  # a text file of scene ids, one per line; None = every scene
    label_map: str | None = None  # ScanNet only; None = <raw>/scannetv2-labels.combined.tsv
    scanrefer: str | None = None  # ScanNet only; folder of ScanRefer_filtered_*.json; None = raw


@dataclass(frozen=True)
class PrepareConfig:
    """The `prepare` stage: raw datasets -> superpoint caches."""

    scannet: DatasetPaths = field(default_factory=lambda: DatasetPaths(
        raw="data/raw/synthetic", out="data/cache/scannet"))
    replica: DatasetPaths = field(default_factory=lambda: DatasetPaths(
        raw="data/raw/synthetic/replica", out="data/cache/replica"))
    jobs: int = 2
    recompute_superpoints: bool = False


@dataclass(frozen=True)
class Params:
    """Everything in `params.yaml`."""

    superpoints: SuperpointConfig = field(default_factory=SuperpointConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)


def _build(cls: type, data: object, where: str):
    """Instantiate dataclass `cls` from a YAML mapping, checking keys and types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, found {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; expected some of {sorted(names)}")
    values = {}
    for name, value in data.items():
        values[name] = _coerce(hints[name], value, f"{where}.{name}")
    try:
        return cls(**values)
    except TypeError as error:
        raise ConfigError(f"{where}: {error}") from None


def _coerce(hint, value, where: str):
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{where}: a value is required")
    for option in options:
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option in (int, str, bool) and type(value) is option:
            return value
    expected = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(f"{where}: expected {expected}, found {value!r}")


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Read `params.yaml` into `Params` (a missing file gives the built-in defaults)."""
    path = Path(path)
    if not path.is_file():
        return Params()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return _build(Params, data, str(path))
