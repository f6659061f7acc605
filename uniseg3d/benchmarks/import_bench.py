"""`uniseg3d bench import-official`: time and peak memory of importing a full-size checkpoint.

The checkpoint is made here in the released layout (an mmengine dict with `meta` and the
official model's 626 `state_dict` keys and shapes, the frozen CLIP text tower included, from
our official modules renamed by `released_key`; seeded random weights), with class
embeddings of the released shape. The import then runs as `uniseg3d import-official` in a
child process, so that its peak resident memory is its own.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from uniseg3d.benchmarks.data_bench import machine
from uniseg3d.config import ModelConfig
from uniseg3d.model.official.checkpoint import CRITERION_PREFIX, PROTOTYPES_KEY, released_key
from uniseg3d.model.official.network import OfficialUniSeg3D


def write_released_layout(folder: Path, prototypes_per_class: int = 4) -> tuple[Path, Path]:
    """(checkpoint, class embeddings) of the released shapes in `folder`."""
    torch.manual_seed(0)
    model = OfficialUniSeg3D(ModelConfig(), prototypes_per_class=prototypes_per_class)
    state = {released_key(k): v for k, v in model.state_dict().items() if k != PROTOTYPES_KEY}
    state[CRITERION_PREFIX + "contrastive_criterion.logit_scale"] = torch.tensor(2.6593)
    checkpoint, embeddings = folder / "model_best.pth", folder / "scannet_cls_embedding.pth"
    torch.save({"meta": {"epoch": 512}, "state_dict": state}, checkpoint)
    torch.save(F.normalize(torch.randn_like(model.class_prototypes), dim=-1), embeddings)
    return checkpoint, embeddings


def bench_import_official() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        checkpoint, embeddings = write_released_layout(folder)
        size = checkpoint.stat().st_size
        command = [sys.executable, "-m", "uniseg3d.cli", "import-official", str(checkpoint),
                   "--class-embeddings", str(embeddings), "--out", str(folder / "official.pt")]
        start = time.perf_counter()
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        summary = json.loads(done.stdout)
    return {"benchmark": "import-official", "checkpoint_mb": size / 2**20,
            "keys": summary["keys"], "values": summary["values"],
            "command_seconds": seconds, "import_seconds": summary["seconds"],
            "peak_memory_mb": peak,
            "note": "command_seconds: the whole command, Python start-up and imports included; "
                    "import_seconds: reading, mapping, checking and writing",
            "machine": machine()}
