"""Numeric precision: fp32 by default everywhere; on CUDA, bf16 or fp16 autocast.

Training (`train.precision`) runs each step's forward and losses under autocast, with a
gradient scaler for fp16 (bf16 keeps fp32's exponent range and needs none). Inference
(`--precision` of `evaluate`, `predict`, `serve`) runs the sparse backbone under autocast (spconv's
half-precision kernels: most of a forward's time at the paper's size) and hands fp32
superpoint features to the decoder, whose prompt masks and post-processing stay fp32. On a
CPU only fp32 is accepted: autocast there would change the numbers without a faster kernel
behind it.
"""

from __future__ import annotations

import contextlib

import torch

from uniseg3d.config import PRECISIONS

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class PrecisionError(ValueError):
    """A precision this device cannot run."""


def check_precision(precision: str, device: str | torch.device, what: str = "--precision"
                    ) -> str:
    """`precision` when `device` can run it; otherwise an error naming `what` set it."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"{what} {precision!r}: expected one of {', '.join(PRECISIONS)}")
    kind = torch.device(device).type
    if precision != "fp32" and kind != "cuda":
        raise PrecisionError(
            f"{what} {precision}: mixed precision runs on a CUDA device only; on {kind} use "
            "fp32 (the default)")
    return precision


def autocast(precision: str, device: str | torch.device):
    """The autocast context of `precision` on `device` (no context for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=DTYPES[precision])


def grad_scaler(precision: str, device: str | torch.device) -> torch.amp.GradScaler:
    """fp16's loss scaler; a disabled one (a pass-through) for fp32 and bf16."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=precision == "fp16")


def set_precision(model: torch.nn.Module, precision: str, device: str | torch.device) -> None:
    """Run `model`'s sparse backbone (either recipe's) under `precision` at inference."""
    model.backbone.precision = check_precision(precision, device)
