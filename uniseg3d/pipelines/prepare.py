"""The `prepare` stage: raw ScanNet / Replica scenes -> one cache folder per scene.

`prepare_scene` is a pure function of one scene (read, label, superpoints, write atomically),
mapped over a process pool by `prepare_dataset`. A scene whose source files and parameters are
unchanged since its cache was written is skipped; a scene that fails is listed at the end while
every good scene is kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import resource
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

from tqdm import tqdm

from uniseg3d.datasets.cache import (FORMAT_VERSION, read_meta, remove_stale_temporaries,
                                     write_scene)
from uniseg3d.datasets.labels import LABEL_MAP_FILE, LabelMap, read_label_map, report_unmapped
from uniseg3d.datasets.replica import read_replica_scene, replica_files
from uniseg3d.datasets.scannet import read_scannet_scene, scene_files
from uniseg3d.datasets.scanrefer import attach_descriptions, read_scanrefer_dir
from uniseg3d.datasets.scene import Description, InputError

log = logging.getLogger(__name__)

DATASETS = ("scannet", "replica")


@dataclass(frozen=True)
class SceneJob:
    """Everything one worker needs to prepare one scene."""

    dataset: str
    scene_dir: str
    out_root: str
    params: dict
    label_map: str | None = None
    descriptions: tuple[Description, ...] = ()


@dataclass
class SceneResult:
    scene_id: str
    status: str  # "written", "skipped" or "failed"
    error: str | None = None
    num_points: int = 0
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    unmapped: Counter = field(default_factory=Counter)
    dropped_descriptions: int = 0


@dataclass
class PrepareSummary:
    dataset: str
    out: str
    results: list[SceneResult]
    seconds: float

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def failed(self) -> list[SceneResult]:
        return [r for r in self.results if r.status == "failed"]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _source_files(job: SceneJob) -> dict[str, Path]:
    files = scene_files(job.scene_dir) if job.dataset == "scannet" else replica_files(job.scene_dir)
    if job.label_map is not None:
        files["label_map"] = Path(job.label_map)
    return {name: path for name, path in files.items() if path.is_file()}


def _fingerprint(job: SceneJob) -> dict:
    sources = {name: _sha256(path) for name, path in sorted(_source_files(job).items())}
    if job.descriptions:
        text = json.dumps([asdict(d) for d in job.descriptions], sort_keys=True)
        sources["scanrefer"] = hashlib.sha256(text.encode()).hexdigest()
    return {"dataset": job.dataset, "sources": sources, "params": job.params}


@cache
def _label_map(path: str) -> LabelMap:
    return read_label_map(path)


def prepare_scene(job: SceneJob) -> SceneResult:
    """Read one raw scene and write its cache folder; never raises for bad input."""
    start = time.perf_counter()
    scene_id = Path(job.scene_dir).name
    result = SceneResult(scene_id=scene_id, status="written")
    try:
        fingerprint = _fingerprint(job)
        meta = read_meta(Path(job.out_root) / scene_id)
        if meta is not None and meta.get("format_version") == FORMAT_VERSION and \
                all(meta.get(key) == value for key, value in fingerprint.items()):
            result.status = "skipped"
            return result
        k, min_verts = job.params["k_thresh"], job.params["min_verts"]
        if job.dataset == "scannet":
            scene = read_scannet_scene(
                job.scene_dir, _label_map(job.label_map) if job.label_map else None,
                result.unmapped, job.params["recompute_superpoints"], k, min_verts)
            scene, dropped = attach_descriptions(scene, list(job.descriptions))
            result.dropped_descriptions = len(dropped)
        else:
            scene = read_replica_scene(job.scene_dir, k, min_verts)
        write_scene(scene, job.out_root, fingerprint)
        result.num_points = scene.num_points
    except (InputError, ValueError, OSError) as error:
        result.status, result.error = "failed", str(error)
    finally:
        result.seconds = time.perf_counter() - start
        result.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def list_scenes(dataset: str, raw: Path, scenes_file: str | None) -> list[Path]:
    """Scene folders to prepare: those named in `scenes_file`, or every one found under `raw`."""
    root = raw / "scans" if dataset == "scannet" else raw
    if scenes_file is not None:
        names = [line.strip() for line in Path(scenes_file).read_text().splitlines()
                 if line.strip()]
        return [root / name for name in names]
    if not root.is_dir():
        raise InputError(root, "scenes", "a folder of scene folders"
                         + (" (<raw>/scans/<scene>/)" if dataset == "scannet" else
                            " (<raw>/<scene>/habitat/)"), "no such folder")
    marker = (lambda d: scene_files(d)["mesh"]) if dataset == "scannet" else \
        (lambda d: replica_files(d)["mesh"])
    return sorted(d for d in root.iterdir() if d.is_dir() and marker(d).is_file())


def prepare_dataset(dataset: str, raw: str | Path, out: str | Path, *, scenes: str | None = None,
                    label_map: str | None = None, scanrefer: str | None = None, jobs: int = 2,
                    k_thresh: float = 0.01, min_verts: int = 20,
                    recompute_superpoints: bool = False, progress: bool = True) -> PrepareSummary:
    """Prepare every scene of one dataset into `out`, `jobs` scenes at a time."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    start = time.perf_counter()
    raw, out = Path(raw), Path(out)
    scene_dirs = list_scenes(dataset, raw, scenes)
    params = {"k_thresh": k_thresh, "min_verts": min_verts,
              "recompute_superpoints": recompute_superpoints}
    descriptions: dict[str, list[Description]] = {}
    if dataset == "scannet":
        label_map = label_map or str(raw / LABEL_MAP_FILE)
        read_label_map(label_map)  # fail early, once, on a bad label map
        descriptions = read_scanrefer_dir(scanrefer or raw)
    else:
        label_map = None
    removed = remove_stale_temporaries(out)
    if removed:
        log.info("removed %d leftovers of an interrupted run in %s", removed, out)
    jobs_list = [SceneJob(dataset, str(d), str(out), params, label_map,
                          tuple(descriptions.get(d.name, ()))) for d in scene_dirs]
    results: list[SceneResult] = []
    bar = tqdm(total=len(jobs_list), desc=f"prepare {dataset}", unit="scene", disable=not progress)
    if jobs <= 1 or len(jobs_list) <= 1:
        for job in jobs_list:
            results.append(prepare_scene(job))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for future in as_completed([pool.submit(prepare_scene, job) for job in jobs_list]):
                results.append(future.result())
                bar.update()
    bar.close()
    results.sort(key=lambda r: r.scene_id)
    summary = PrepareSummary(dataset, str(out), results, time.perf_counter() - start)
    _report(summary, label_map, descriptions)
    return summary


def _report(summary: PrepareSummary, label_map: str | None,
            descriptions: dict[str, list[Description]]) -> None:
    unmapped = sum((r.unmapped for r in summary.results), Counter())
    report_unmapped(unmapped, label_map)
    dropped = sum(r.dropped_descriptions for r in summary.results)
    if dropped:
        log.warning("dropped %d ScanRefer descriptions that name objects missing from their scene",
                    dropped)
    prepared = {r.scene_id for r in summary.results}
    orphans = sorted(set(descriptions) - prepared)
    if orphans:
        log.info("ScanRefer names %d scenes that were not prepared (e.g. %s)", len(orphans),
                    ", ".join(orphans[:3]))
    log.info("%s: %d written, %d unchanged, %d failed in %.1f s -> %s", summary.dataset,
             summary.count("written"), summary.count("skipped"), len(summary.failed),
             summary.seconds, summary.out)
    for failure in summary.failed:
        log.error("failed scene %s: %s", failure.scene_id, failure.error)
