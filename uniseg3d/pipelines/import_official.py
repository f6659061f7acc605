"""`uniseg3d import-official`: a released UniSeg3D checkpoint -> a uniseg3d checkpoint.

Reads the mmengine checkpoint (`model_best.pth`, `model_best_2.pth`) and the class embeddings
(`scannet_cls_embedding.pth`) without running pickled code, maps every key onto the `official`
recipe's modules strictly (`uniseg3d.model.official.checkpoint`; sparse convolution weights
from the file's spconv layout, `conv_layout`), and writes one file that
`predict`, `evaluate`, `bench` and the other verbs load as they load a trained one: the model
state (the frozen CLIP text tower included, so referring needs no other download; the class
prototypes as a buffer), the model dimensions, the text model's name, and the training-only
criterion state. The file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch

from uniseg3d.config import ModelConfig
from uniseg3d.datasets.classes import scannet20
from uniseg3d.model.official.checkpoint import (
    PROTOTYPES_KEY, class_prototypes, convert_state_dict, official_state_dict,
    read_official_checkpoint)
from uniseg3d.model.official.language import clip_text_config
from uniseg3d.model.official.network import PAPER_TEXT_MODEL, OfficialUniSeg3D

log = logging.getLogger(__name__)


def sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def import_official(checkpoint: str | Path, class_embeddings: str | Path, out: str | Path,
                    text_model: str = PAPER_TEXT_MODEL, spconv_layout: str | None = None
                    ) -> dict:
    """Convert; returns a summary (keys, parameters, seconds, sources); `spconv_layout`
    names the file's convolution weight layout where the shapes cannot decide it."""
    checkpoint, class_embeddings, out = Path(checkpoint), Path(class_embeddings), Path(out)
    start = time.perf_counter()
    official = official_state_dict(read_official_checkpoint(checkpoint), checkpoint)
    prototypes = class_prototypes(class_embeddings, len(scannet20().names),
                                  clip_text_config(text_model)["embed_dim"])
    config = ModelConfig()  # the paper's dimensions: the released model's
    with torch.device("meta"):  # shapes only: no memory, no random initialisation
        expected = OfficialUniSeg3D(config, text_model, prototypes.shape[1]).state_dict()
    model_state, criterion_state = convert_state_dict(official, expected, spconv_layout)
    model_state[PROTOTYPES_KEY] = prototypes
    state = {"recipe": "official", "model": model_state, "criterion": criterion_state,
             "model_config": json.dumps(asdict(config)), "text_model": text_model,
             "history": "[]", "epoch": 0, "stage": 0,
             "source": json.dumps({"checkpoint": str(checkpoint), "sha256": sha256(checkpoint),
                                   "class_embeddings": str(class_embeddings),
                                   "class_embeddings_sha256": sha256(class_embeddings)})}
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        torch.save(state, temp)
        os.replace(temp, out)
    finally:
        temp.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    parameters = sum(v.numel() for k, v in model_state.items() if v.is_floating_point())
    log.info("imported %d keys (%.1f M values) from %s into %s in %.1f s", len(official),
             parameters / 1e6, checkpoint, out, seconds)
    return {"checkpoint": str(checkpoint), "class_embeddings": str(class_embeddings),
            "out": str(out), "keys": len(official), "values": parameters,
            "prototypes_per_class": int(prototypes.shape[1]), "seconds": seconds}
