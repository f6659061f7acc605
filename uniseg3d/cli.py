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


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or a positive integer, got {text}")
    return value


def _positive_ints(text: str) -> tuple[int, ...]:
    """`100,1000` -> (100, 1000)."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, "
                                         f"got {text!r}")
    return values


def _nonnegative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected 0 or a positive number, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


class TaggedAppend(argparse.Action):
    """Append (tag, value) to one list, so that several options keep their order on the
    command line (predict's --click and --negative)."""

    def __init__(self, *args, tag: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.tag = tag

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, [*getattr(namespace, self.dest), (self.tag, values)])


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


def cmd_synth(args: argparse.Namespace) -> int:
    from uniseg3d.pipelines.synth import run_synth

    cfg = load_params(args.params).synth
    pick = lambda value, default: default if value is None else value  # noqa: E731
    summary = run_synth(Path(pick(args.out, cfg.out)), pick(args.train, cfg.train),
                        pick(args.val, cfg.val), pick(args.replica, cfg.replica),
                        pick(args.seed, cfg.seed), pick(args.jobs, cfg.jobs),
                        pick(args.spacing, cfg.spacing))
    log.info("synth: %s", json.dumps({k: summary[k] for k in ("seconds", "vertices_per_scene",
                                                               "descriptions")}))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from uniseg3d.model.precision import PrecisionError
    from uniseg3d.pipelines.ray_train import RayError, run_ray_train
    from uniseg3d.pipelines.train import with_overrides

    params = _with_ray_overrides(load_params(args.params), args)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("out", args.out),
                                   ("fine_tune_epochs", args.fine_tune_epochs),
                                   ("best_by", args.best_by),
                                   ("loader_workers", args.loader_workers)) if v is not None}
    params = with_overrides(params, **overrides)
    import dataclasses

    for field, value in (("config", args.config), ("recipe", args.recipe)):
        if value:
            params = dataclasses.replace(params, model=dataclasses.replace(
                params.model, **{field: value}))
    try:
        result = run_ray_train(params, params.ray, resume=args.resume)
    except (RayError, PrecisionError) as error:
        log.error("%s", error)
        return 2
    log.info("checkpoints: %s (last), %s (best)", result.last, result.best)
    return 0


def _with_ray_overrides(params, args: argparse.Namespace):
    import dataclasses

    changes = {k: v for k, v in (("address", args.address),
                                 ("num_workers", getattr(args, "workers", None)))
               if v is not None}
    return dataclasses.replace(params, ray=dataclasses.replace(params.ray, **changes))


def cmd_sweep(args: argparse.Namespace) -> int:
    import dataclasses

    from uniseg3d.pipelines.ray_train import RayError
    from uniseg3d.pipelines.sweep import run_sweep

    params = _with_ray_overrides(load_params(args.params), args)
    sweep = params.sweep if args.out is None else dataclasses.replace(params.sweep, out=args.out)
    try:
        summary = run_sweep(params, sweep, params.ray)
    except RayError as error:
        log.error("%s", error)
        return 2
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from uniseg3d.benchmarks.leaderboard import write_evaluation_leaderboards
    from uniseg3d.model.precision import PrecisionError, check_precision
    from uniseg3d.pipelines.evaluate import run_evaluate

    params = load_params(args.params)
    try:
        check_precision(args.precision, args.device)
    except PrecisionError as error:
        log.error("%s", error)
        return 2
    if args.workers < 1:
        log.error("--workers %d: expected a number of processes >= 1", args.workers)
        return 2
    metrics = run_evaluate(params, device=args.device, precision=args.precision,
                           workers=args.workers)
    write_evaluation_leaderboards(metrics, params.evaluate.out)
    headline = {task: {k: v for k, v in section.items() if not isinstance(v, dict)}
                for task, section in metrics.items() if isinstance(section, dict)
                and task not in ("counts", "timing")}
    print(json.dumps(headline, indent=2))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from uniseg3d.reports.report import build_report

    result = build_report(load_params(args.params), Path(args.out), args.scenes,
                          sweep_dir=Path(args.sweep), latency_file=Path(args.latency),
                          device=args.device,
                          baseline=Path(args.baseline) if args.baseline else None)
    for what in result["missing"]:
        log.warning("report: missing %s", what)
    log.info("wrote %s and %s", result["html"], result["markdown"])
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from uniseg3d.model.precision import PrecisionError
    from uniseg3d.pipelines.predict import (PredictRequest, PromptError, parse_click,
                                            parse_negative, run_predict)

    if args.prompts:
        return predict_evaluation_prompts(args)
    if not args.scan:
        log.error("predict needs a scan (or --prompts DIR)")
        return 2
    try:
        clicks = tuple(parse_negative(text) if option == "negative" else parse_click(text)
                       for option, text in args.clicks)
        request = PredictRequest(
            mesh=Path(args.scan), checkpoint=Path(args.checkpoint), out=Path(args.out),
            clicks=clicks, texts=tuple(args.text),
            classes=tuple(c.strip() for c in args.classes.split(",") if c.strip())
            if args.classes else (), precision=args.precision)
        summary = run_predict(request, device=args.device)
    except (PromptError, PrecisionError) as error:
        log.error("%s", error)
        return 2
    print(json.dumps({k: summary[k] for k in ("points", "superpoints", "files")}, indent=2))
    return 0


def predict_evaluation_prompts(args: argparse.Namespace) -> int:
    """`predict --prompts DIR`: the evaluation scenes with the prompts evaluate gave them."""
    import dataclasses

    from uniseg3d.model.precision import PrecisionError, check_precision
    from uniseg3d.pipelines.predict import PromptError, run_predict_prompts

    if args.scan or args.clicks or args.text or args.classes:
        log.error("--prompts takes the scans and prompts from evaluate's prompts/ folder: "
                  "give no scan, --click, --negative, --text or --classes")
        return 2
    params = load_params(args.params)
    params = dataclasses.replace(params, evaluate=dataclasses.replace(
        params.evaluate, checkpoint=args.checkpoint))
    try:
        check_precision(args.precision, args.device)
        written = run_predict_prompts(params, args.prompts, args.out, args.device, args.precision)
    except (PromptError, PrecisionError) as error:
        log.error("%s", error)
        return 2
    print(json.dumps({"scenes": len(written), "out": args.out}, indent=2))
    return 0


def cmd_import_official(args: argparse.Namespace) -> int:
    from uniseg3d.model.official.checkpoint import OfficialCheckpointError
    from uniseg3d.pipelines.import_official import import_official

    try:
        summary = import_official(args.checkpoint, args.class_embeddings, args.out,
                                  args.text_model, args.spconv_layout)
    except OfficialCheckpointError as error:
        log.error("%s", error)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from uniseg3d.model.precision import PrecisionError, check_precision, set_precision
    from uniseg3d.pipelines.train import load_trained_model
    from uniseg3d.serve.app import ServeOptions, serve
    from uniseg3d.serve.session import Model

    params = load_params(args.params)
    scans = [Path(s) for s in args.scans]
    missing = [str(s) for s in scans if not s.is_file()]
    if missing:
        log.error("no such scan: %s", ", ".join(missing))
        return 2
    try:
        check_precision(args.precision, args.device)
    except PrecisionError as error:
        log.error("%s", error)
        return 2
    model, encoder, classes = load_trained_model(args.checkpoint or params.evaluate.checkpoint,
                                                 args.device)
    set_precision(model, args.precision, args.device)
    options = ServeOptions(host=args.host, port=args.port, max_upload_mb=args.max_upload_mb,
                           k_thresh=params.superpoints.k_thresh,
                           min_verts=params.superpoints.min_verts)
    cache = Path(args.cache or params.evaluate.cache)
    serve(Model(model, encoder, classes, args.device), scans, cache, options)
    return 0


def cmd_evaluate_predictions(args: argparse.Namespace) -> int:
    from uniseg3d.metrics.submission import evaluate_submission, format_table

    if args.task == "all":
        return score_all(args)
    if not args.gt:
        log.error("--task %s needs --gt (the ground-truth folder)", args.task)
        return 2
    result = evaluate_submission(args.task, args.gt, args.pred)
    print(format_table(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
        log.info("wrote %s", args.out)
    return 0


def score_all(args: argparse.Namespace) -> int:
    """`evaluate-predictions --task all`: per-scene predictions.npz against evaluate's prompts."""
    from uniseg3d.benchmarks.leaderboard import write_evaluation_leaderboards
    from uniseg3d.pipelines.score_predictions import score_predictions

    if not args.prompts or not args.out:
        log.error("--task all needs --prompts (evaluate's prompts/ folder) and --out (a folder)")
        return 2
    metrics = score_predictions(load_params(args.params), args.prompts, args.pred, args.out,
                                args.method or Path(args.pred).name)
    write_evaluation_leaderboards(metrics, args.out)
    print(json.dumps({task: {k: v for k, v in section.items() if not isinstance(v, dict)}
                      for task, section in metrics.items() if isinstance(section, dict)
                      and task != "counts"}, indent=2))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from uniseg3d.reports.comparison import run_compare

    try:
        document = run_compare(args.evaluations, args.out, args.baseline, args.resamples,
                               args.confidence, args.seed)
    except ValueError as error:  # refused: different scenes, datasets or classes; bad options
        log.error("%s", error)
        return 2
    significant = [f"{row['other']} {row['task']}/{row['metric']}: {row['delta']:+.4f}"
                   for row in document["metrics"] if row["significant"]]
    print("\n".join(significant) or "no difference excludes zero from its interval")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from uniseg3d.benchmarks import data_bench

    params = load_params(args.params)
    if args.repeats is None:
        args.repeats = 1 if args.target == "ray-overhead" else 5
    if args.target == "superpoints":
        result = data_bench.bench_superpoints(args.mesh, args.vertices, args.repeats)
    elif args.target == "prepare":
        result = data_bench.bench_prepare(args.raw or params.prepare.scannet.raw,
                                          args.jobs or params.prepare.jobs, args.scenes)
    elif args.target == "synth":
        result = data_bench.bench_synth(args.scenes_count or 100, args.jobs or params.synth.jobs)
    elif args.target == "latency":
        from uniseg3d.benchmarks.latency import bench_latency, latency_table

        result = bench_latency(params, args.config, args.points, args.scenes, args.repeats,
                               args.device, args.recipe or params.model.recipe)
        out = Path(args.out or "benchmarks/latency.json")
        out.with_suffix(".md").parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(latency_table(result))
    elif args.target == "evaluate":
        from uniseg3d.benchmarks.evaluate_bench import bench_evaluate

        result = bench_evaluate(params)
    elif args.target == "serve":
        from uniseg3d.benchmarks.serve_bench import bench_serve

        result = bench_serve(params, points=args.points)
    elif args.target == "corrective":
        from uniseg3d.benchmarks.corrective_bench import bench_corrective

        result = bench_corrective(params, args.checkpoint, args.config, args.points,
                                  device=args.device)
    elif args.target == "import-official":
        from uniseg3d.benchmarks.import_bench import bench_import_official

        result = bench_import_official()
    elif args.target == "instance-ap":
        from uniseg3d.benchmarks.metrics_bench import bench_instance_ap

        result = bench_instance_ap()
    elif args.target == "ray-overhead":
        from uniseg3d.benchmarks.ray_bench import bench_ray_overhead

        result = bench_ray_overhead(params, args.epochs, args.repeats)
    elif args.target == "compare":
        from uniseg3d.benchmarks.compare_bench import bench_compare

        result = bench_compare(args.scenes_count, args.resamples)
    elif args.target == "sweep":
        from uniseg3d.benchmarks.ray_bench import bench_sweep

        result = bench_sweep(params, params.sweep)
    elif args.target == "scale":
        from uniseg3d.benchmarks.scale_bench import ScaleSettings, VertexCounts, bench_scale

        try:
            settings = ScaleSettings(
                rooms=args.rooms, vertices=VertexCounts.scannet_like(args.mean_vertices),
                memory_scenes=args.memory_scenes, sleep_ms=args.sleep_ms,
                steps=args.train_steps or 4, eval_scenes=args.eval_scenes,
                protocol_scenes=args.protocol_scenes, jobs=args.jobs or params.prepare.jobs,
                work=args.work)
            settings.check(params.train.batch_size)
        except ValueError as error:  # settings that cannot be measured
            log.error("%s", error)
            return 2
        result = bench_scale(params, settings)
    elif args.target == "gpu":
        from uniseg3d.benchmarks.gpu_bench import bench_gpu

        result = bench_gpu(params, points=args.points, repeats=args.repeats)
        if "skipped" in result:
            log.warning("bench gpu skipped: %s", result["skipped"])
    else:
        from uniseg3d.benchmarks.model_bench import bench_model

        result = bench_model(params, args.points, args.repeats, args.train_steps or 10)
    _write_json(result, args.out or f"benchmarks/{args.target}.json")
    if result.get("errors"):
        log.error("bench %s: %d figure(s) failed: %s (their exceptions are in the JSON's "
                  "`errors`)", args.target, len(result["errors"]), ", ".join(result["errors"]))
        return 1
    return 0


def add_precision(verb: argparse.ArgumentParser) -> None:
    verb.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                      help="the sparse backbone's precision: bf16 or fp16 autocast on a CUDA "
                      "device (the decoder and post-processing stay fp32); a CPU runs fp32 "
                      "only (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default=str(DEFAULT_PARAMS),
                        help="params.yaml holding the defaults (default: %(default)s)")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser = argparse.ArgumentParser(
        prog="uniseg3d",
        description="Unified 3D scene segmentation (UniSeg3D): panoptic, semantic, instance, "
                    "interactive, referring and open-vocabulary segmentation of indoor scans.",
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

    synth = verbs.add_parser(
        "synth", help="generate the synthetic benchmark in raw ScanNet/ScanRefer/Replica layouts",
        description="Write rooms as ScanNet scans (mesh, segs.json, aggregation), the label map, "
                    "split lists, ScanRefer descriptions and Replica zero-shot scenes. The same "
                    "seed gives byte-identical files. Unset options come from params.yaml "
                    "(section 'synth').")
    synth.add_argument("--out", help="output folder (default: params synth.out)")
    synth.add_argument("--train", type=int, help="ScanNet-format training scenes")
    synth.add_argument("--val", type=int, help="ScanNet-format validation scenes")
    synth.add_argument("--replica", type=int, help="Replica-format zero-shot scenes")
    synth.add_argument("--seed", type=int, help="random seed")
    synth.add_argument("--jobs", type=_positive_int, help="worker processes")
    synth.add_argument("--spacing", type=_positive_float, help="mean vertex spacing (m)")
    synth.set_defaults(func=cmd_synth)

    train = verbs.add_parser(
        "train", help="train UniSeg3D on the prepared caches",
        description="Train the model through Ray Train (params.yaml sections model, text, "
                    "loss, prompts, train, ray), either recipe (--recipe official: as UniSeg3D's "
                    "released code trains): AdamW with a poly schedule, gradient clipping "
                    "and augmentations; one or more DDP workers (gloo on CPU, NCCL on GPU); a "
                    "checkpoint per epoch; a crashed worker resumes from the last one. Writes "
                    "last.pt, best.pt and history.json to train.out.")
    train.add_argument("--config", choices=["tiny", "paper"], help="model configuration")
    train.add_argument("--recipe", choices=["ours", "official"],
                       help="ours (default of params.yaml model.recipe) or official: the released "
                            "code's losses, matcher, prompts, augmentation and optimiser")
    train.add_argument("--epochs", type=_positive_int, help="training epochs")
    train.add_argument("--fine-tune-epochs", type=int,
                       help="second stage from best.pt at lr and weight decay x 0.001")
    train.add_argument("--best-by", choices=["loss", "metrics"],
                       help="best.pt by the validation loss (default of params.yaml "
                            "train.best_by) or by metrics: the official hook's best all_ap, "
                            "miou and pq checkpoints (best_<metric>.pt; best.pt follows all_ap)")
    train.add_argument("--out", help="run folder (default: params train.out)")
    train.add_argument("--loader-workers", type=_count,
                       help="processes preparing the samples ahead of the step (default: "
                            "params train.loader_workers; 0: in the training process)")
    train.add_argument("--resume", action="store_true",
                       help="continue the interrupted run from its last epoch")
    train.add_argument("--address", help="join this Ray cluster ('auto' or HOST:PORT; default: "
                       "params ray.address, null = a local Ray)")
    train.add_argument("--workers", type=_positive_int,
                       help="Ray Train workers (default: params ray.num_workers)")
    train.set_defaults(func=cmd_train)

    sweep = verbs.add_parser(
        "sweep", help="Ray Tune sweep of lambda and the click strategies",
        description="Train and evaluate one model per point of the search space in params.yaml "
                    "(section 'sweep': lambdas, train_clicks, eval_clicks; grid or random "
                    "search; optional ASHA early stopping). Writes results.csv (one row per "
                    "trial, every task metric), best.json and sweep_plot_data.json.")
    sweep.add_argument("--address", help="join this Ray cluster (default: params ray.address)")
    sweep.add_argument("--out", help="output folder (default: params sweep.out)")
    sweep.set_defaults(func=cmd_sweep)

    evaluate = verbs.add_parser(
        "evaluate", help="evaluate the trained checkpoint on all six tasks",
        description="Run evaluate.checkpoint on the validation caches (and zero-shot on the "
                    "Replica caches) and write metrics.json, per-class CSVs, leaderboards "
                    "against the paper's numbers and the predictions in the ScanNet "
                    "submission format to evaluate.out.")
    evaluate.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    add_precision(evaluate)
    evaluate.add_argument("--workers", type=int, default=1,
                          help="processes that share the scenes, each with its own copy of the "
                          "model (on CUDA one device each, in turn; train.threads divided among "
                          "them); the metrics do not depend on the count (default: %(default)s)")
    evaluate.set_defaults(func=cmd_evaluate)

    report = verbs.add_parser(
        "report", help="the HTML/Markdown report of every stage's results",
        description="Write OUT/index.html and OUT/report.md: headline numbers beside the "
                    "paper's, leaderboards, per-task and per-class metrics, training curves, the "
                    "sweep, the latency breakdown, and ground truth beside prediction (PNG + "
                    "PLY) for a few validation scenes. A section whose input is missing names "
                    "the command that writes it.")
    report.add_argument("--out", default="reports", help="report folder (default: %(default)s)")
    report.add_argument("--scenes", type=int, default=3,
                        help="validation scenes to render (0: none; default: %(default)s)")
    report.add_argument("--sweep", default="reports/sweep",
                        help="the sweep's output folder (default: %(default)s)")
    report.add_argument("--latency", default="benchmarks/latency.json",
                        help="bench latency JSON (default: %(default)s)")
    report.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    report.add_argument("--baseline", metavar="DIR",
                        help="an evaluation folder of the same scenes (another run's "
                        "evaluate.out): the summary compares every headline metric against it "
                        "with a paired bootstrap interval")
    report.set_defaults(func=cmd_report)

    predict = verbs.add_parser(
        "predict", help="run all six tasks on one mesh or point cloud",
        description="One forward pass on a PLY scan: semantic, instance, panoptic, interactive "
                    "(one mask per clicked object), referring (one mask per --text) and "
                    "open-vocabulary instances (against --classes). Writes a coloured PLY per "
                    "task and summary.json to --out.")
    predict.add_argument("scan", nargs="?",
                         help="PLY mesh (superpoints by the segmentator) or point cloud")
    predict.add_argument("--prompts", metavar="DIR",
                         help="instead of a scan and prompts: every scene of evaluate's "
                              "prompts/ folder, read from evaluate.cache (Replica scenes: "
                              "evaluate.replica_cache) of --params, with its prompts; writes "
                              "<out>/<scene>/predictions.npz for evaluate-predictions --task all")
    predict.add_argument("--checkpoint", required=True, help="a checkpoint from uniseg3d train")
    predict.add_argument("--click", dest="clicks", action=TaggedAppend, tag="click",
                         default=[], metavar="X,Y,Z[@K]",
                         help="a click on an object to segment (repeatable): X,Y,Z starts a "
                              "new object, X,Y,Z@K adds a click to object K (0 = the first)")
    predict.add_argument("--negative", dest="clicks", action=TaggedAppend, tag="negative",
                         default=[], metavar="X,Y,Z",
                         help="a negative click: background, where no object is (repeatable)")
    predict.add_argument("--text", action="append", default=[], metavar="DESCRIPTION",
                         help="a description of one object (repeatable)")
    predict.add_argument("--classes", help="comma-separated class names for open vocabulary "
                         "(default: the 20 ScanNet classes)")
    predict.add_argument("--out", required=True, help="output folder")
    predict.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    add_precision(predict)
    predict.set_defaults(func=cmd_predict)

    import_official = verbs.add_parser(
        "import-official", help="convert a released UniSeg3D checkpoint for every verb",
        description="Reads an official UniSeg3D checkpoint (mmengine: model_best.pth or "
                    "model_best_2.pth of the GitHub release v1.0) and its class embeddings "
                    "(scannet_cls_embedding.pth) without running pickled code, maps every key "
                    "onto the official recipe's modules (a missing, unexpected or mis-shaped "
                    "key is an error listing them), and writes a uniseg3d checkpoint that "
                    "predict, evaluate and bench load (evaluate.checkpoint / --checkpoint). "
                    "The frozen CLIP text tower inside the checkpoint is kept, so referring "
                    "needs no other download. Sparse convolution weights are read in any "
                    "spconv layout ([out,k,k,k,in] of spconv >= 2.2, [k,k,k,in,out] of "
                    "spconv 1.x-2.1, ...), found from their shapes and said in the log.")
    import_official.add_argument("checkpoint", help="the official .pth checkpoint")
    import_official.add_argument("--class-embeddings", required=True, metavar="PTH",
                                 help="scannet_cls_embedding.pth: the CLIP class prototypes")
    import_official.add_argument("--out", required=True, help="the uniseg3d checkpoint to write")
    import_official.add_argument("--text-model", default="convnext_large_d_320",
                                 help="open_clip name of the text tower (default: %(default)s)")
    import_official.add_argument("--spconv-layout", metavar="AXES",
                                 help="the file's convolution weight layout, e.g. k,k,k,in,out, "
                                 "when its shapes cannot decide it (default: found from them)")
    import_official.set_defaults(func=cmd_import_official)

    serve_verb = verbs.add_parser(
        "serve", help="the browser app: all six tasks live on a scan",
        description="Starts a local web app (viser; the page works offline) showing a scan as "
                    "a point cloud with a panel: open one of SCAN.ply, a prepared scene of "
                    "--cache or an uploaded .ply; switch between the input colours and the "
                    "semantic, instance and panoptic layers (with a legend); click a point to "
                    "segment its object; type a description (referring) or a comma-separated "
                    "class list (open vocabulary); download the result as PLY or JSON. Only "
                    "the decoder reruns for a prompt. Binds to 127.0.0.1 unless --host says "
                    "otherwise.")
    serve_verb.add_argument("scans", nargs="*", metavar="SCAN.ply",
                            help="meshes or point clouds to offer (superpoints as predict)")
    serve_verb.add_argument("--checkpoint",
                            help="any checkpoint uniseg3d loads, an imported official one "
                                 "included (default: params evaluate.checkpoint)")
    serve_verb.add_argument("--cache", help="prepared scenes to offer (default: params "
                                            "evaluate.cache)")
    serve_verb.add_argument("--host", default="127.0.0.1",
                            help="address to bind (default: %(default)s, this machine only)")
    serve_verb.add_argument("--port", type=_positive_int, default=8080,
                            help="port (default: %(default)s)")
    serve_verb.add_argument("--max-upload-mb", type=_positive_float, default=200.0,
                            help="largest upload accepted (default: %(default)s)")
    serve_verb.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    add_precision(serve_verb)
    serve_verb.set_defaults(func=cmd_serve)

    evaluate_predictions = verbs.add_parser(
        "evaluate-predictions", help="score another method's predictions as evaluate scores ours",
        description="all: a folder of <scene>/predictions.npz (the format `predict` writes) "
                    "made with the prompts of evaluate's prompts/ folder, scored on all six "
                    "tasks against evaluate.cache (and evaluate.replica_cache) of --params; "
                    "--out gets metrics.json, per-class CSVs, scene_stats/ and leaderboards, "
                    "for `uniseg3d compare`. instance: per scene <scene>.txt listing "
                    "'mask.txt label_id confidence' lines against GT <scene>.txt of "
                    "label_id*1000+instance per vertex; semantic: one label id per vertex for "
                    "both (ScanNet benchmark format). Prints a table; --out writes JSON.")
    evaluate_predictions.add_argument("--task", required=True,
                                      choices=["all", "instance", "semantic"])
    evaluate_predictions.add_argument("--pred", required=True, help="predictions folder")
    for option, text in (  # which --task each option serves
            ("--gt", "ground-truth folder (instance, semantic)"),
            ("--prompts", "evaluate's prompts/ folder (all)"),
            ("--method", "the method's name in metrics.json and the leaderboards (all; "
                         "default: the --pred folder's name)"),
            ("--out", "JSON output file (instance, semantic); output folder (all)")):
        evaluate_predictions.add_argument(option, help=text)
    evaluate_predictions.set_defaults(func=cmd_evaluate_predictions)

    compare = verbs.add_parser(
        "compare", help="paired bootstrap comparison of evaluations",
        description="Compare evaluation folders (from `uniseg3d evaluate`, or a sweep trial's "
                    "eval/ folder) on every task metric: each side's value, its difference to "
                    "the baseline and a paired bootstrap interval over the scenes, from the "
                    "folders' per-scene statistics (scene_stats/). Join several folders with "
                    "commas for the seeds of one configuration: seeds are resampled too. "
                    "Writes comparison.json, .csv, .md and .html (with a forest plot and the "
                    "per-class differences) to --out. Evaluations of different scenes, datasets "
                    "or class lists are refused.")
    compare.add_argument("evaluations", nargs="+", metavar="EVAL[,EVAL...]",
                         help="evaluation folders; commas join one configuration's seeds")
    compare.add_argument("--out", required=True, help="output folder")
    compare.add_argument("--baseline", help="the side the others are compared with (default: "
                         "the first)")
    compare.add_argument("--resamples", type=_positive_int, default=1000,
                         help="bootstrap resamples (default: %(default)s)")
    compare.add_argument("--confidence", type=_positive_float, default=0.95,
                         help="interval coverage in (0, 1) (default: %(default)s)")
    compare.add_argument("--seed", type=int, default=0,
                         help="seed of the resampling (default: %(default)s)")
    compare.set_defaults(func=cmd_compare)

    bench = verbs.add_parser(
        "bench", help="speed and memory benchmarks, written as JSON",
        description="superpoints: vertices per second of the segmentator on one mesh. "
                    "prepare: scenes per second and peak memory per worker of a cold prepare. "
                    "synth: scenes per second of the generator. instance-ap: evaluation time of "
                    "20 scenes x 100k points x 50 predictions. evaluate: time of the whole "
                    "evaluate stage on the validation split. model: forward latency of the "
                    "tiny and paper configurations and training steps per second of tiny. latency: "
                    "per-component inference time of one scene beside the paper's table "
                    "(JSON plus a Markdown table next to it). ray-overhead: the training run "
                    "as `uniseg3d train` makes it (a local Ray started and stopped, one Ray "
                    "Train worker) against the plain epoch loop at the same thread count, on "
                    "the train.* scenes of params.yaml, in wall time and in CPU time by "
                    "process. sweep: trials per hour "
                    "of the sweep in params.yaml. import-official: time and peak memory of "
                    "importing a full-size checkpoint in the released layout (random "
                    "weights). serve: the browser app's time to first view, click-to-mask and "
                    "text-to-mask (median, 95th percentile over 50 prompts) and memory with one "
                    "and three scenes open, for tiny and paper. corrective: milliseconds per "
                    "corrective click of AGILE3D's multi-object protocol on a generated room "
                    "(the backbone once, then the prompt decoder and the click simulation). "
                    "compare: seconds of `uniseg3d compare` of two evaluations of 20 and of 312 "
                    "scenes (generated per-scene statistics of every task). gpu: the first "
                    "command on a GPU machine: spconv's GPU algorithm against the CPU's, a "
                    "training step per precision, the latency at the paper's size, a Ray Train "
                    "epoch on the GPU and the loader's data-wait fraction (without CUDA: "
                    "\"skipped\" in its JSON, exit 0). scale: at ScanNet's sizes (--rooms "
                    "generated rooms, vertex counts log-normal around --mean-vertices) "
                    "prepare throughput and cache bytes per scene, the loader's samples per "
                    "second per worker at the paper's settings, steps per second and the "
                    "share of each step spent waiting for data with 0, 1 and 2 loader workers "
                    "(the real tiny and paper steps, and a stand-in accelerator sleeping "
                    "--sleep-ms per step), the training process's peak memory after one epoch "
                    "over each of --memory-scenes scenes (hard links to the rooms, each epoch "
                    "in a fresh process) and evaluation seconds per scene; long: see "
                    "docs/benchmarks-and-reports.md.")
    bench.add_argument("target", choices=["superpoints", "prepare", "synth", "instance-ap",
                                          "evaluate", "model", "latency", "ray-overhead",
                                          "sweep", "import-official", "serve", "corrective",
                                          "compare", "gpu", "scale"],
                       help="what to measure")
    bench.add_argument("--out", help="JSON file (default: benchmarks/TARGET.json)")
    bench.add_argument("--mesh", help="superpoints: PLY mesh (default: a generated room)")
    bench.add_argument("--vertices", type=_positive_int, default=100_000,
                       help="superpoints: size of the generated mesh (default: %(default)s)")
    bench.add_argument("--repeats", type=_positive_int,
                       help="superpoints, model, latency: timed runs after a warm-up (default: "
                            "5); ray-overhead: runs of each side, the fastest counts (default: 1)")
    bench.add_argument("--epochs", type=_positive_int, default=2,
                       help="ray-overhead: training epochs per run (default: %(default)s)")
    bench.add_argument("--raw", help="prepare: raw ScanNet-layout folder "
                       "(default: params.yaml prepare.scannet.raw)")
    bench.add_argument("--scenes", help="prepare: text file of scene ids; latency: a raw "
                       "ScanNet-layout folder whose first scene is timed (default: a "
                       "generated room)")
    bench.add_argument("--config", choices=["tiny", "paper"], default="tiny",
                       help="latency, corrective: model configuration (default: %(default)s)")
    bench.add_argument("--checkpoint", help="corrective: a trained checkpoint (default: random "
                       "weights of --config)")
    bench.add_argument("--recipe", choices=["ours", "official"],
                       help="latency: the model recipe (default: params.yaml model.recipe)")
    bench.add_argument("--device", default="cpu", help="latency: cpu or cuda")
    bench.add_argument("--jobs", type=_positive_int,
                       help="prepare, synth, scale: worker processes generating and preparing "
                            "scenes (default: params.yaml prepare.jobs)")
    bench.add_argument("--scenes-count", type=_positive_int,
                       help="synth: scenes to generate (default: 100); compare: scenes per "
                            "evaluation (default: 20 and 312, ScanNet's validation split)")
    bench.add_argument("--resamples", type=_positive_int, default=1000,
                       help="compare: bootstrap resamples (default: %(default)s)")
    bench.add_argument("--points", type=_positive_int, default=100_000,
                       help="model, latency, serve, corrective, gpu: points of the generated "
                            "scene (default: %(default)s)")
    bench.add_argument("--train-steps", type=_positive_int,
                       help="model: timed training steps of tiny (default: 10); scale: timed "
                            "real steps per configuration and loader-worker count, after one "
                            "warm-up batch (default: 4)")
    bench.add_argument("--rooms", type=_positive_int, default=100,
                       help="scale: distinct rooms generated and prepared; the --memory-scenes "
                            "caches link to them (default: %(default)s)")
    bench.add_argument("--mean-vertices", type=_positive_int, default=150_000,
                       help="scale: mean vertices per room, drawn log-normal (sigma 0.55) and "
                            "clipped to [mean / 5, mean x 11 / 3] (default: %(default)s, "
                            "ScanNet's)")
    bench.add_argument("--memory-scenes", type=_positive_ints, default=(100, 1000),
                       metavar="N,N", help="scale: scenes of each memory epoch "
                       "(default: 100,1000)")
    bench.add_argument("--sleep-ms", type=_nonnegative_float, default=300.0,
                       help="scale: the stand-in accelerator's step in milliseconds "
                            "(default: %(default)s)")
    bench.add_argument("--eval-scenes", type=_positive_int, default=3,
                       help="scale: rooms evaluated with the tiny model (default: %(default)s)")
    bench.add_argument("--protocol-scenes", type=_count, default=0,
                       help="scale: of them, rooms also run through AGILE3D's click protocol, "
                            "minutes each (default: %(default)s, left out)")
    bench.add_argument("--work", help="scale: where the temporary folder goes (about 16 MB "
                       "per 150k-vertex room; removed afterwards) (default: the system's "
                       "temporary folder)")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)  # spconv import noise
    try:
        return args.func(args)
    except (InputError, ConfigError, FileNotFoundError) as error:
        log.error("%s", error)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
