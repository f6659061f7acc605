"""`uniseg3d bench latency`: per-component inference time for one scene, beside the paper's.

Components, in pipeline order: superpoints (the segmentator on the mesh), voxelisation,
backbone, superpoint pooling, text encoder (cached embeddings), decoder, and the
post-processing of each task. Every repeat runs the whole pipeline once under a `Stopwatch`
(CUDA-synchronised on GPU) and is also timed end to end; medians are reported, and the parts
must add up to the measured total. The uncached text encoder (the real model encoding the
descriptions) is timed separately. `recipe` picks the model: `ours` (with the text encoder of
params.yaml) or `official` (UniSeg3D's network with its own CLIP text tower; random weights
and class prototypes, since timing does not depend on their values).
"""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from uniseg3d.benchmarks.data_bench import machine
from uniseg3d.benchmarks.model_bench import benchmark_sample, benchmark_scene, read_first_scene
from uniseg3d.config import Params
from uniseg3d.datasets.classes import scannet20
from uniseg3d.datasets.superpoints import segment_mesh
from uniseg3d.model.inference import predict_scene
from uniseg3d.model.inputs import scene_input
from uniseg3d.model.official.language import OfficialTextEncoder
from uniseg3d.model.official.network import PAPER_TEXT_MODEL, OfficialUniSeg3D
from uniseg3d.model.stopwatch import Stopwatch
from uniseg3d.model.text_encoder import CachedTextEncoder, TextEncoder, class_embeddings
from uniseg3d.model.uniseg3d import UniSeg3D
from uniseg3d.pipelines.train import class_prompt_names, make_text_encoder

PAPER = {  # UniSeg3D appendix, inference time on ScanNet20 val (ms per scene)
    "hardware": "GPU (model not stated; the paper trains on one RTX 4090); superpoints on CPU",
    "components": {"superpoints": 168.0, "backbone": 33.0, "text encoder": 0.03,
                   "decoder": 29.0, "post-processing": None, "total": 230.03},
}
COLUMNS = ("superpoints", "backbone", "text encoder", "decoder", "post-processing", "total")


def _column(name: str) -> str:
    """The paper-table column a component belongs to."""
    if name in ("voxelisation", "backbone", "superpoint pooling"):
        return "backbone"
    if name.startswith("post-processing"):
        return "post-processing"
    return "text encoder" if name.startswith("text encoder") else name


@dataclass
class TimedModel:
    """A model with seeded random weights, in eval mode, and what inference needs beside it."""

    model: UniSeg3D | OfficialUniSeg3D
    raw_encoder: TextEncoder  # the uncached text model
    encoder: CachedTextEncoder
    classes: torch.Tensor  # ScanNet20 class embeddings (ours) or CLIP prototypes (official)
    vocabulary: torch.Tensor  # ScanNet20 class-name embeddings, the open-vocabulary list


def timed_model(params: Params, config: str, recipe: str, device: str) -> TimedModel:
    dims = getattr(params.model, config)
    if recipe == "official":
        torch.manual_seed(0)
        model = OfficialUniSeg3D(dims, PAPER_TEXT_MODEL, device=device).to(device).eval()
        model.class_prototypes.copy_(F.normalize(torch.randn_like(model.class_prototypes), dim=-1))
        raw_encoder = OfficialTextEncoder(model.lang.text_encoder, PAPER_TEXT_MODEL)
        encoder = CachedTextEncoder(raw_encoder, token_dtype=torch.float32)
    else:
        raw_encoder = make_text_encoder(params, device).encoder  # the uncached model itself
        torch.manual_seed(0)
        model = UniSeg3D(dims, raw_encoder.dim, device).to(device).eval()
        encoder = CachedTextEncoder(raw_encoder)
    vocabulary = class_embeddings(encoder, class_prompt_names(scannet20().names)).to(device)
    classes = model.class_prototypes if recipe == "official" else vocabulary
    return TimedModel(model, raw_encoder, encoder, classes, vocabulary)


def bench_latency(params: Params, config: str = "tiny", points: int = 100_000,
                  scenes: str | None = None, repeats: int = 5, device: str = "cpu",
                  recipe: str = "ours") -> dict:
    """Median milliseconds per component for one scene (`scenes`: a raw ScanNet-layout folder,
    whose first scene is used; default: a generated synthetic room of about `points` points)."""
    scene, mesh = read_first_scene(scenes) if scenes else benchmark_scene(points)
    sample = benchmark_sample(scene)
    timed = timed_model(params, config, recipe, device)
    model, encoder, raw_encoder = timed.model, timed.encoder, timed.raw_encoder

    def run(stopwatch: Stopwatch) -> None:
        with stopwatch("superpoints"):
            segment_mesh(mesh.vertices, mesh.faces, params.superpoints.k_thresh,
                         params.superpoints.min_verts)
        with stopwatch("text encoder (cached)"):
            texts = encoder.encode_texts(sample.texts)
        predict_scene(model, scene_input(sample, texts, device), timed.classes,
                      timed.vocabulary, stopwatch=stopwatch)

    run(Stopwatch(device))  # warm-up: kernels compiled, caches filled
    runs, totals = [], []
    for _ in range(repeats):
        stopwatch = Stopwatch(device)
        start = time.perf_counter()
        run(stopwatch)
        totals.append(time.perf_counter() - start)
        runs.append(dict(stopwatch.seconds))
    uncached = []
    for _ in range(repeats):
        start = time.perf_counter()
        CachedTextEncoder(raw_encoder, token_dtype=encoder.token_dtype).encode_texts(
            sample.texts)
        uncached.append(time.perf_counter() - start)
    components = [{"name": name, "median_ms": 1000 * statistics.median(r[name] for r in runs)}
                  for name in runs[0]]
    total_ms = 1000 * statistics.median(totals)
    sum_ms = sum(c["median_ms"] for c in components)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"benchmark": "latency", "recipe": recipe, "config": config,
            "device": _device_name(device),
            "points": scene.num_points, "superpoints": scene.num_superpoints,
            "clicks": len(sample.click_points), "texts": len(sample.texts),
            "text_encoder": raw_encoder.name, "repeats": repeats, "components": components,
            "extra": [{"name": "text encoder (uncached)",
                       "median_ms": 1000 * statistics.median(uncached)}],
            "total_ms": total_ms, "sum_ms": sum_ms,
            "sum_vs_total": sum_ms / total_ms, "peak_memory_mb": peak, "paper": PAPER,
            "machine": machine()}


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({machine()['cpu']}, {torch.get_num_threads()} threads)"


def latency_table(result: dict) -> str:
    """A Markdown table laid out like the paper's inference-time table (ms per scene)."""
    ours = dict.fromkeys(COLUMNS, 0.0)
    for component in result["components"]:
        ours[_column(component["name"])] += component["median_ms"]
    ours["total"] = result["total_ms"]
    cell = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
    rows = [f"| method | hardware | {' | '.join(COLUMNS)} |",
            "|" + "---|" * (len(COLUMNS) + 2),
            f"| UniSeg3D (paper) | {PAPER['hardware']} | "
            + " | ".join(cell(PAPER["components"][c]) for c in COLUMNS) + " |",
            f"| uniseg3d ({result.get('recipe', 'ours')}, {result['config']}) | "
            f"{result['device']}, {result['points']} points | "
            + " | ".join(cell(ours[c]) for c in COLUMNS) + " |"]
    return "\n".join(rows) + "\n"
