"""Speed and memory of the data pipeline: the superpoint kernel and the `prepare` stage."""

from __future__ import annotations

import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from uniseg3d.datasets.ply import read_mesh
from uniseg3d.datasets.primitives import box_surface, merge_meshes
from uniseg3d.datasets.superpoints import segment_mesh
from uniseg3d.pipelines.prepare import prepare_dataset


def machine() -> dict:
    import os

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version()}


def benchmark_room(num_vertices: int = 100_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A scan-like test mesh: a 6 x 5 x 3 m room with box furniture and 3 mm vertex noise,
    its vertex spacing chosen so that the mesh has about `num_vertices` vertices."""
    rng = np.random.default_rng(seed)
    room = ([0, 0, 0], [6, 5, 3])
    furniture = [([x, y, 0], [x + w, y + d, h]) for x, y, w, d, h in
                 rng.uniform([0.2, 0.2, 0.4, 0.4, 0.4], [4.5, 3.5, 1.4, 1.4, 1.2], (12, 5))]
    area = 2 * (6 * 5 + 6 * 3 + 5 * 3) + sum(
        2 * ((hi[0] - lo[0]) * (hi[1] - lo[1]) + (hi[2] - lo[2]) * (hi[0] - lo[0] + hi[1] - lo[1]))
        for lo, hi in furniture)
    spacing = float(np.sqrt(area / num_vertices))
    vertices, faces = merge_meshes([box_surface(lo, hi, spacing) for lo, hi in [room, *furniture]])
    vertices = vertices + rng.normal(0.0, 0.003, vertices.shape)
    return vertices.astype(np.float32), faces


def bench_superpoints(mesh: str | None = None, num_vertices: int = 100_000, repeats: int = 5,
                      k_thresh: float = 0.01, min_verts: int = 20) -> dict:
    """Median time of `segment_mesh` (after one warm-up run that compiles the kernel)."""
    if mesh is not None:
        loaded = read_mesh(mesh)
        vertices, faces, source = loaded.vertices, loaded.faces, str(mesh)
    else:
        vertices, faces = benchmark_room(num_vertices)
        source = f"generated room, ~{num_vertices} vertices"
    segment_mesh(vertices, faces, k_thresh, min_verts)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        segments = segment_mesh(vertices, faces, k_thresh, min_verts)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"benchmark": "superpoints", "mesh": source, "vertices": int(len(vertices)),
            "faces": int(len(faces)), "segments": int(segments.max() + 1), "repeats": repeats,
            "seconds_median": median, "seconds_all": times,
            "vertices_per_second": len(vertices) / median, "machine": machine()}


def bench_prepare(raw: str, jobs: int = 2, scenes: str | None = None,
                  label_map: str | None = None) -> dict:
    """Scenes per second and peak memory per worker of a cold `prepare` into a fresh folder."""
    with tempfile.TemporaryDirectory(prefix="uniseg3d-bench-") as out:
        summary = prepare_dataset("scannet", raw, Path(out), scenes=scenes, label_map=label_map,
                                  jobs=jobs, progress=False)
    written = [r for r in summary.results if r.status == "written"]
    if not written:
        raise RuntimeError(f"no scene of {raw} could be prepared; see the errors above")
    points = [r.num_points for r in written]
    return {"benchmark": "prepare", "raw": str(raw), "jobs": jobs, "scenes": len(written),
            "failed": len(summary.failed), "seconds": summary.seconds,
            "scenes_per_second": len(written) / summary.seconds,
            "seconds_per_scene_median": statistics.median(r.seconds for r in written),
            "points_per_scene_mean": float(np.mean(points)),
            "peak_rss_mb_per_worker": max(r.peak_rss_mb for r in written),
            "parent_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "machine": machine()}


def bench_synth(scenes: int = 100, jobs: int = 2, seed: int = 0) -> dict:
    """Scenes per second and vertices per scene of a cold `synth` run into a fresh folder
    (ScanNet-format scenes, 4/5 train and 1/5 val, with their descriptions)."""
    from uniseg3d.pipelines.synth import run_synth

    val = scenes // 5
    with tempfile.TemporaryDirectory(prefix="uniseg3d-bench-") as out:
        summary = run_synth(Path(out), scenes - val, val, 0, seed, jobs=jobs, progress=False)
    return {"benchmark": "synth", "scenes": scenes, "jobs": jobs, "seed": seed,
            "seconds": summary["seconds"], "scenes_per_second": summary["scenes_per_second"],
            "vertices_per_scene": summary["vertices_per_scene"],
            "descriptions": summary["descriptions"], "machine": machine()}
