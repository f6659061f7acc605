"""Per-component wall-clock timing of the forward pass (CUDA-synchronised on GPU).

Model code marks its components with `with stopwatch("backbone"):`; the default `NO_TIMING`
does nothing, so inference pays no cost unless a benchmark passes a real `Stopwatch`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext

import torch


class Stopwatch:
    """Accumulates seconds per component name."""

    def __init__(self, device: str | torch.device = "cpu"):
        self.cuda = torch.device(device).type == "cuda"
        self.seconds: dict[str, float] = defaultdict(float)

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    @contextmanager
    def __call__(self, name: str):
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] += time.perf_counter() - start


class _NoTiming:
    def __call__(self, name: str):
        return nullcontext()


NO_TIMING = _NoTiming()
