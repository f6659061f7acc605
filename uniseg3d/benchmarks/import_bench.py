"""`uniseg3d bench import-official`: time and peak memory of importing a full-size checkpoint.

The checkpoint is made here in the released layout (an mmengine dict with `meta` and the
official model's 626 `state_dict` keys and shapes, the frozen CLIP text tower included, from
our official modules renamed by `released_key`; seeded random weights), with class
embeddings of the released shape (20, 65, 768). It is written twice: with the convolution
weights in spconv >= 2.2's layout (ours) and in spconv 1.x's `[k,k,k,in,out]`, which the import
detects and converts. Each import runs as `uniseg3d import-official` in a child process, so
that its peak resident memory is its own.
"""

from __future__ import annotations

import json
import os
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
from uniseg3d.model.official.conv_layout import NATIVE, parse_layout, to_layout
from uniseg3d.model.official.network import OfficialUniSeg3D


RELEASED_PROTOTYPES_PER_CLASS = 65  # scannet_cls_embedding.pth: (20, 65, 768)
SPCONV1_LAYOUT = "k,k,k,in,out"


def write_released_layout(folder: Path, prototypes_per_class: int = RELEASED_PROTOTYPES_PER_CLASS,
                          layout: str = ",".join(NATIVE)) -> tuple[Path, Path]:
    """(checkpoint, class embeddings) of the released shapes in `folder`, the convolution
    weights stored in the spconv `layout`."""
    torch.manual_seed(0)
    model = OfficialUniSeg3D(ModelConfig(), prototypes_per_class=prototypes_per_class)
    stored = parse_layout(layout)
    state = {released_key(k): to_layout(v, stored).contiguous() if v.dim() == 5 else v
             for k, v in model.state_dict().items() if k != PROTOTYPES_KEY}
    state[CRITERION_PREFIX + "contrastive_criterion.logit_scale"] = torch.tensor(2.6593)
    checkpoint, embeddings = folder / "model_best.pth", folder / "scannet_cls_embedding.pth"
    torch.save({"meta": {"epoch": 512}, "state_dict": state}, checkpoint)
    torch.save(F.normalize(torch.randn_like(model.class_prototypes), dim=-1), embeddings)
    return checkpoint, embeddings


def timed_import(folder: Path, layout: str) -> dict:
    """One `uniseg3d import-official` of a checkpoint written in `layout`, in a child process."""
    source = folder / layout.replace(",", "")
    source.mkdir()
    checkpoint, embeddings = write_released_layout(source, layout=layout)
    command = [sys.executable, "-m", "uniseg3d.cli", "import-official", str(checkpoint),
               "--class-embeddings", str(embeddings), "--out", str(source / "official.pt")]
    with open(source / "stdout", "w+") as out, open(source / "stderr", "w+") as err:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak memory
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if child.returncode:
        raise RuntimeError(f"import-official failed ({child.returncode}): {stderr[-2000:]}")
    summary = json.loads(stdout)
    found = [line for line in stderr.splitlines() if "spconv weight layout" in line]
    return {"stored_layout": f"[{layout}]", "checkpoint_mb": checkpoint.stat().st_size / 2**20,
            "keys": summary["keys"], "values": summary["values"],
            "command_seconds": seconds, "import_seconds": summary["seconds"],
            "peak_memory_mb": usage.ru_maxrss / 1024,
            "log": found[0].split("spconv weight layout", 1)[-1].strip() if found else None}


def bench_import_official() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        runs = [timed_import(Path(tmp), layout) for layout in (",".join(NATIVE), SPCONV1_LAYOUT)]
    return {"benchmark": "import-official", "runs": runs,
            "note": "command_seconds: the whole command, Python start-up and imports included; "
                    "import_seconds: reading, mapping, layout detection and conversion, checking "
                    "and writing; peak_memory_mb: the import process's own peak resident memory",
            "machine": machine()}
