"""Model speed: forward latency of the tiny and paper configurations on a ~100k-point synthetic
room (all six tasks, post-processing included), and training steps per second of tiny."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from uniseg3d.benchmarks.data_bench import machine
from uniseg3d.config import Params, PromptConfig
from uniseg3d.datasets.labels import LABEL_MAP_FILE, read_label_map
from uniseg3d.datasets.loader import Sample, make_sample
from uniseg3d.datasets.ply import Mesh, read_mesh
from uniseg3d.datasets.scannet import read_scannet_scene, scene_files
from uniseg3d.datasets.scanrefer import attach_descriptions, read_scanrefer_dir
from uniseg3d.datasets.scene import Scene
from uniseg3d.datasets.synthetic.generate import DEFAULT_SPACING
from uniseg3d.model.criterion import Criterion
from uniseg3d.model.inference import predict_scene
from uniseg3d.model.inputs import scene_input, scene_targets
from uniseg3d.model.text_encoder import EncodedTexts
from uniseg3d.model.uniseg3d import UniSeg3D
from uniseg3d.pipelines.synth import run_synth

TEXT_DIM = 384  # MiniLM's width; the benchmark uses random unit text embeddings
SYNTH_VERTICES_AT_DEFAULT = 47_000  # mean vertices of a synthetic room at the default spacing


def read_first_scene(raw: str | Path) -> tuple[Scene, Mesh]:
    """The first scene of a raw ScanNet-layout folder (with its ScanRefer descriptions, if
    any) and its mesh."""
    raw = Path(raw)
    scene_dir = min((raw / "scans").iterdir())
    scene = read_scannet_scene(scene_dir, read_label_map(raw / LABEL_MAP_FILE))
    descriptions = read_scanrefer_dir(raw).get(scene_dir.name, [])
    return attach_descriptions(scene, descriptions)[0], read_mesh(scene_files(scene_dir)["mesh"])


def benchmark_scene(points: int = 100_000, seed: int = 0) -> tuple[Scene, Mesh]:
    """One synthetic room (the `synth` generator) with about `points` vertices (one spacing
    correction after a first try), read back through the ScanNet reader, and its mesh."""
    spacing = DEFAULT_SPACING * float(np.sqrt(SYNTH_VERTICES_AT_DEFAULT / points))
    for attempt in range(2):
        with tempfile.TemporaryDirectory(prefix="uniseg3d-bench-") as raw:
            run_synth(Path(raw), 1, 0, 0, seed, jobs=1, spacing=spacing, progress=False)
            scene, mesh = read_first_scene(raw)
        if abs(scene.num_points - points) <= 0.1 * points:
            break
        spacing *= float(np.sqrt(scene.num_points / points))
    return scene, mesh


def benchmark_sample(scene: Scene, prompts: int = 10) -> Sample:
    """Evaluation prompts of `scene`: centre clicks and descriptions, at most `prompts` each."""
    sample = make_sample(scene, PromptConfig(eval_click="center"), np.random.default_rng(0),
                         training=False)
    keep = slice(0, prompts)
    return Sample(scene, sample.click_points[keep], sample.click_instances[keep],
                  sample.texts[keep], sample.text_instances[keep])


def _text(count: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(count, TEXT_DIM), dim=1)


def _descriptions(count: int, tokens: int = 24) -> EncodedTexts:
    """Random stand-ins for `count` encoded descriptions of `tokens` tokens each."""
    return EncodedTexts.from_rows(_text(count), list(torch.randn(count, tokens, TEXT_DIM)))


def bench_model(params: Params, points: int = 100_000, repeats: int = 5, train_steps: int = 10
                ) -> dict:
    """Median forward latency per configuration and tiny's training steps per second."""
    torch.manual_seed(0)
    sample = benchmark_sample(benchmark_scene(points)[0])
    classes = _text(20)
    inputs = scene_input(sample, _descriptions(len(sample.texts)))
    result = {"benchmark": "model", "points": sample.scene.num_points,
              "superpoints": sample.scene.num_superpoints, "clicks": len(sample.click_points),
              "texts": len(sample.texts), "threads": torch.get_num_threads(), "configs": {}}
    for name in ("tiny", "paper"):
        model = UniSeg3D(getattr(params.model, name), TEXT_DIM).eval()
        predict_scene(model, inputs, classes)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            predict_scene(model, inputs, classes)
            times.append(time.perf_counter() - start)
        result["configs"][name] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "forward_seconds_median": statistics.median(times), "forward_seconds_all": times}
    model = UniSeg3D(params.model.tiny, TEXT_DIM).train()
    criterion = Criterion(params.loss, 20)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    targets = scene_targets(sample)
    generator = torch.Generator().manual_seed(0)
    step_times = []
    for step in range(train_steps + 1):
        start = time.perf_counter()
        losses = criterion(model([inputs], generator), [targets], classes)
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
        if step:  # the first step is a warm-up
            step_times.append(time.perf_counter() - start)
    result["tiny_train_steps_per_second"] = 1 / statistics.median(step_times)
    result["tiny_train_step_seconds_median"] = statistics.median(step_times)
    result["machine"] = machine()
    return result


