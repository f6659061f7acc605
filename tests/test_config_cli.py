"""params.yaml -> typed dataclasses, and the command line's help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from uniseg3d.cli import build_parser
from uniseg3d.config import ConfigError, Params, load_params

REPO = Path(__file__).resolve().parents[1]


def test_repository_params_load():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    assert params.superpoints.k_thresh == 0.01 and params.superpoints.min_verts == 20
    assert params.prepare.jobs >= 1


def test_values_are_typed_and_nested(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("superpoints:\n  k_thresh: 1\n  min_verts: 5\n"
                    "prepare:\n  scannet:\n    raw: /data/scannet\n    out: cache\n  jobs: 4\n")
    params = load_params(path)
    assert params.superpoints.k_thresh == 1.0 and isinstance(params.superpoints.k_thresh, float)
    assert params.prepare.scannet.raw == "/data/scannet" and params.prepare.scannet.scenes is None
    assert params.prepare.replica.out == "data/cache/replica"  # untouched sections keep defaults


@pytest.mark.parametrize("text, message", [
    ("superpoints:\n  k_tresh: 0.1\n", "unknown keys ['k_tresh']"),
    ("superpoints:\n  min_verts: many\n", "superpoints.min_verts: expected int"),
    ("prepare:\n  recompute_superpoints: 'yes'\n", "expected bool"),
    ("prepare:\n  scannet:\n    out: x\n", "prepare.scannet"),
    ("prepare: [1, 2]\n", "expected a mapping"),
    ("train:\n  loader_workers: -1\n", "train.loader_workers must be >= 0 or null"),
])
def test_schema_errors_name_the_key(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_params(path)


def test_every_verb_has_help():
    parser = build_parser()
    verbs = parser._subparsers._group_actions[0].choices
    top = subprocess.run([sys.executable, "-m", "uniseg3d.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for verb in verbs:
        assert verb in top
        result = subprocess.run([sys.executable, "-m", "uniseg3d.cli", verb, "--help"],
                                capture_output=True, text=True)
        assert result.returncode == 0 and f"usage: uniseg3d {verb}" in result.stdout


def test_train_takes_a_loader_worker_count():
    parser = build_parser()
    assert parser.parse_args(["train", "--loader-workers", "0"]).loader_workers == 0
    assert parser.parse_args(["train"]).loader_workers is None  # params.yaml's
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--loader-workers", "-1"])
