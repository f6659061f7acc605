"""`uniseg3d <verb>`: the command-line entry point (one sub-command per pipeline step)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from uniseg3d.config import DEFAULT_PARAMS, ConfigError, load_params
from uniseg3d.datasets.scene import InputError

log = logging.getLogger("uniseg3d")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _write_json(document: dict, out: str | None) -> None:
    text = json.dumps(document, indent=2)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n", encoding="utf-8")
        log.info("wrote %s", out)
    print(text)


def cmd_prepare(args: argparse.Namespace) -> int:
    from uniseg3d.pipelines.prepare import prepare_dataset

    params = load_params(args.params)
    paths = getattr(params.prepare, args.dataset)
    summary = prepare_dataset(
        args.dataset, args.raw or paths.raw, args.out or paths.out,
        scenes=args.scenes or paths.scenes, label_map=args.label_map or paths.label_map,
        scanrefer=args.scanrefer or paths.scanrefer, jobs=args.jobs or params.prepare.jobs,
        k_thresh=args.k or params.superpoints.k_thresh,
        min_verts=args.min_verts or params.superpoints.min_verts,
        recompute_superpoints=args.recompute_superpoints or params.prepare.recompute_superpoints)
    if summary.failed:
        log.error("%d of %d scenes failed: %s", len(summary.failed), len(summary.results),
                  ", ".join(r.scene_id for r in summary.failed))
        return 1
    return 0


def cmd_superpoints(args: argparse.Namespace) -> int:
    from uniseg3d.datasets.ply import read_mesh
    from uniseg3d.datasets.scannet import write_segs_json
    from uniseg3d.datasets.superpoints import segment_mesh

    mesh = read_mesh(args.mesh, face_lengths=(3, 4))
    segments = segment_mesh(mesh.vertices, mesh.faces, args.k, args.min_verts)
    out = args.out or str(Path(args.mesh).with_suffix("")) + ".0.010000.segs.json"
    scene_id = Path(args.mesh).name.split("_vh_clean")[0].removesuffix(".ply")
    write_segs_json(out, segments, scene_id, args.k, args.min_verts)
    log.info("%d vertices -> %d superpoints -> %s", len(segments), segments.max() + 1, out)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from uniseg3d.benchmarks import data_bench

    if args.target == "superpoints":
        result = data_bench.bench_superpoints(args.mesh, args.vertices, args.repeats)
    else:
        params = load_params(args.params)
        result = data_bench.bench_prepare(args.raw or params.prepare.scannet.raw,
                                          args.jobs or params.prepare.jobs, args.scenes)
    _write_json(result, args.out or f"benchmarks/{args.target}.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default=str(DEFAULT_PARAMS),
                        help="params.yaml holding the defaults (default: %(default)s)")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser = argparse.ArgumentParser(
        prog="uniseg3d",
        description="Unified 3D scene segmentation (UniSeg3D): data pipeline, benchmarks.",
        epilog="Run 'uniseg3d VERB --help' for the options of each verb.")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB",
                                  parser_class=lambda **kw: argparse.ArgumentParser(
                                      parents=[common], **kw))

    prepare = verbs.add_parser(
        "prepare", help="raw ScanNet/Replica scenes -> per-scene caches (.npy + meta.json)",
        description="Read raw scenes, compute labels, normals and superpoints, and write one "
                    "cache folder per scene. Unchanged scenes are skipped; failed scenes are "
                    "listed at the end and make the exit status 1. Unset options come from "
                    "params.yaml (section 'prepare').")
    prepare.add_argument("--dataset", choices=["scannet", "replica"], default="scannet",
                         help="raw layout to read (default: %(default)s)")
    prepare.add_argument("--raw", help="ScanNet: folder holding scans/<scene>/, the label map "
                         "and ScanRefer files; Replica: folder of <scene>/habitat/")
    prepare.add_argument("--out", help="cache folder (one sub-folder per scene)")
    prepare.add_argument("--scenes", help="text file of scene ids to prepare (default: all)")
    prepare.add_argument("--label-map", help="scannetv2-labels.combined.tsv "
                         "(default: <raw>/scannetv2-labels.combined.tsv)")
    prepare.add_argument("--scanrefer", help="folder of ScanRefer_filtered_{train,val}.json "
                         "(default: <raw>)")
    prepare.add_argument("--jobs", type=_positive_int, help="worker processes")
    prepare.add_argument("--k", type=_positive_float, help="segmentator kThresh")
    prepare.add_argument("--min-verts", type=_positive_int, help="segmentator segMinVerts")
    prepare.add_argument("--recompute-superpoints", action="store_true",
                         help="run the segmentator even where a segs.json is shipped")
    prepare.set_defaults(func=cmd_prepare)

    superpoints = verbs.add_parser(
        "superpoints", help="compute superpoints of a mesh (ScanNet segs.json layout)",
        description="Run ScanNet's mesh segmentator on a PLY mesh and write segIndices in "
                    "the layout of ScanNet's *_vh_clean_2.0.010000.segs.json.")
    superpoints.add_argument("mesh", help="PLY mesh (triangle or quad faces)")
    superpoints.add_argument("--out", help="output JSON (default: MESH.0.010000.segs.json)")
    superpoints.add_argument("--k", type=_positive_float, default=0.01,
                             help="kThresh (default: %(default)s)")
    superpoints.add_argument("--min-verts", type=_positive_int, default=20,
                             help="segMinVerts (default: %(default)s)")
    superpoints.set_defaults(func=cmd_superpoints)

    bench = verbs.add_parser(
        "bench", help="speed and memory benchmarks, written as JSON",
        description="superpoints: vertices per second of the segmentator on one mesh. "
                    "prepare: scenes per second and peak memory per worker of a cold prepare.")
    bench.add_argument("target", choices=["superpoints", "prepare"], help="what to measure")
    bench.add_argument("--out", help="JSON file (default: benchmarks/TARGET.json)")
    bench.add_argument("--mesh", help="superpoints: PLY mesh (default: a generated room)")
    bench.add_argument("--vertices", type=_positive_int, default=100_000,
                       help="superpoints: size of the generated mesh (default: %(default)s)")
    bench.add_argument("--repeats", type=_positive_int, default=5,
                       help="superpoints: timed runs after a warm-up (default: %(default)s)")
    bench.add_argument("--raw", help="prepare: raw ScanNet-layout folder "
                       "(default: params.yaml prepare.scannet.raw)")
    bench.add_argument("--scenes", help="prepare: text file of scene ids")
    bench.add_argument("--jobs", type=_positive_int, help="prepare: worker processes")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (InputError, ConfigError) as error:
        log.error("%s", error)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
