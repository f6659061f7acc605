"""Speed of the `evaluate` stage: the full evaluation of the configured checkpoint and split."""

from __future__ import annotations

import dataclasses
import tempfile
import time

from uniseg3d.benchmarks.data_bench import machine
from uniseg3d.config import Params
from uniseg3d.pipelines.evaluate import run_evaluate


def bench_evaluate(params: Params, device: str = "cpu") -> dict:
    """Wall time of `run_evaluate` (checkpoint load, one forward per scene, every metric, every
    file) on `params.evaluate`'s validation split and Replica cache; the outputs go to a
    temporary folder, so the stage's own outputs are left untouched."""
    with tempfile.TemporaryDirectory(prefix="uniseg3d-evaluate-bench-") as out:
        bench_params = dataclasses.replace(
            params, evaluate=dataclasses.replace(params.evaluate, out=out))
        start = time.perf_counter()
        metrics = run_evaluate(bench_params, progress=False, device=device)
        seconds = time.perf_counter() - start
    return {"benchmark": "evaluate", "checkpoint": params.evaluate.checkpoint,
            "dataset": metrics["dataset"], "device": device, "seconds": seconds,
            **metrics["counts"], **metrics["timing"], "machine": machine()}
