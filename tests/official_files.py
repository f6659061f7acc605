"""Official checkpoints in the released layout, written here: every one of the official model's
626 keys with its shape (the manifest in tests/data, taken from the official modules at
dk-liang/UniSeg3D c272954) in an mmengine checkpoint beside its metadata, random weights; the
class embeddings as the released `scannet_cls_embedding.pth` holds them: a plain float32 tensor
of shape (20, 65, 768), 65 prompt templates per ScanNet20 class, every row of unit length."""

from __future__ import annotations

import sys
from collections import OrderedDict
from pathlib import Path

import torch

from uniseg3d.cli import main

RELEASED_PROTOTYPES = (20, 65, 768)  # scannet_cls_embedding.pth

MANIFEST = Path(__file__).parent / "data" / "official_state_dict.tsv"
HISTORY_BUFFER = """
import numpy as np


class HistoryBuffer:
    def __init__(self):
        self._log_history = np.array([0.5, 0.25])
        self._count_history = np.array([1, 1])
        self.max_length = 1000000
"""


def manifest() -> list[tuple[str, tuple[int, ...], str]]:
    rows = [line.rstrip("\n").split("\t") for line in MANIFEST.read_text().splitlines()
            if not line.startswith("#")][1:]
    return [(key, () if shape == "scalar" else tuple(int(s) for s in shape.split("x")), dtype)
            for key, shape, dtype in rows]


def random_state_dict(seed: int = 0) -> OrderedDict:
    g = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for key, shape, dtype in manifest():
        if dtype == "int64":
            state[key] = torch.zeros(shape, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("text_attn_mask"):
            state[key] = torch.full(shape, float("-inf")).triu(1)
        else:
            state[key] = torch.randn(shape, generator=g) * 0.05
    return state


def save_mmengine_checkpoint(root: Path, path: Path, state: OrderedDict) -> None:
    """An mmengine checkpoint: `meta`, `state_dict` and a `message_hub` holding a
    `HistoryBuffer` of mmengine's module path, as mmengine pickles it. The module exists only
    while saving, so loading must not need it."""
    package = root / "fake_site" / "mmengine" / "logging"
    package.mkdir(parents=True)
    (package.parent / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "history_buffer.py").write_text(HISTORY_BUFFER)
    sys.path.insert(0, str(root / "fake_site"))
    try:
        from mmengine.logging.history_buffer import HistoryBuffer

        hub = {"log_scalars": {"train/loss": HistoryBuffer()}, "runtime_info": {"epoch": 512}}
        torch.save({"meta": {"epoch": 512, "mmengine_version": "0.10.3",
                             "dataset_meta": {"classes": ("wall", "floor")}},
                    "state_dict": state, "message_hub": hub}, path)
    finally:
        sys.path.remove(str(root / "fake_site"))
        for name in [n for n in sys.modules if n.startswith("mmengine")]:
            del sys.modules[name]


def released_class_embeddings(seed: int = 1) -> torch.Tensor:
    """Random class embeddings of the released file's shape, dtype and unit rows."""
    return torch.nn.functional.normalize(
        torch.randn(RELEASED_PROTOTYPES, generator=torch.Generator().manual_seed(seed)), dim=-1)


def write_and_import_released(root: Path) -> dict:
    """A released checkpoint and class embeddings in `root`, imported by the CLI."""
    state = random_state_dict()
    save_mmengine_checkpoint(root, root / "model_best.pth", state)
    prototypes = released_class_embeddings()
    torch.save(prototypes, root / "scannet_cls_embedding.pth")
    out = root / "official.pt"
    assert main(["import-official", str(root / "model_best.pth"), "--class-embeddings",
                 str(root / "scannet_cls_embedding.pth"), "--out", str(out)]) == 0
    return {"root": root, "state": state, "prototypes": prototypes, "out": out}
