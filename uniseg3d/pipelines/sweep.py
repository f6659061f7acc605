"""The `sweep` stage: the paper's ablations as a Ray Tune experiment.

The search space (params.yaml section `sweep`) spans lambda (`loss.lambda_inter`, the weight of
the distillation and contrastive terms), the training click strategy, the evaluation click
strategy (a strategy is `center`, `random`, `agile`, `rd` (at `prompts.rd`) or `rd<value>`,
`rd0.5`: rd at 0.5) and where training's corrective clicks go (`prompts.corrective_click`:
`deepest`, AGILE3D's, or `random`), and any params.yaml field `sweep.switches` names
(`"model.switches.word_attention=true,false"`, `"model.recipe=ours,official"`): the departures
of `ours` and the recipe. `grid` tries every combination, `random` draws `num_samples` of them
(seeded by `train.seed`), `ablation` the first value of every axis and then each other value
alone (the paper's ablation tables, one change per row; the `changed` column says which).
Each trial trains one worker in its own process for `sweep.epochs` epochs, then the trial's
`train.fine_tune_epochs` of the second stage (0 unless an axis or params.yaml sets it; the
paper's two-stage row) (`train.fit`, the epoch loop, reporting every epoch, so the optional ASHA
scheduler can stop weak trials early on the validation loss), then evaluates its `best.pt` on
every task (`run_evaluate`, with the trial's evaluation clicks) and reports every metric and the
paper's "Overall": the mean of the six headline metrics. As many trials run at once as
`sweep.cpus_per_trial` fits into Ray's CPUs.

Every configuration trains once per seed of `sweep.seeds` (`train.seed`; `[0]` by default), so
that a difference between configurations can be told from the spread between seeds.

Outputs in `sweep.out`: `results.csv` (one row per trial: its configuration and seed, status,
final losses, Overall and every task metric), `configurations.csv` (one row per configuration:
the mean, standard deviation and number of its completed trials for Overall and the headline
metrics, and Overall's difference to the base configuration, the first value of every axis,
with a paired bootstrap interval over the validation scenes and the seeds from the trials'
per-scene statistics, `uniseg3d.metrics.bootstrap`), `best.json` (the configuration with the
best mean Overall, and whether it is significantly better than the runner-up) and
`sweep_plot_data.json` (each headline metric and Overall against each axis, for the report's
plots). Trial folders (checkpoints, evaluation outputs) stay in `<ray.storage>/sweep`.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import yaml

from uniseg3d.config import (CORRECTIVE_CLICKS, ConfigError, Params, RayConfig, SweepConfig,
                             with_setting)
from uniseg3d.datasets.clicks import STRATEGIES
from uniseg3d.datasets.streaming import SceneSet
from uniseg3d.metrics.bootstrap import Side, paired_bootstrap
from uniseg3d.metrics.scene_stats import read_evaluation
from uniseg3d.pipelines.checkpoints import epoch_score
from uniseg3d.pipelines.ray_train import (
    Request, absolute_paths, checkpoint_folder, ray_session, worker_logging)
from uniseg3d.pipelines.train import WorkerSession, fit, scene_sets

if TYPE_CHECKING:
    from ray.tune import ResultGrid

log = logging.getLogger(__name__)

SWEEP_NAME = "sweep"
RESULTS_FILE = "results.csv"
CONFIGURATIONS_FILE = "configurations.csv"
BEST_FILE = "best.json"
PLOT_DATA_FILE = "sweep_plot_data.json"
AXES = ("lambda_inter", "train_click", "eval_click", "corrective_click")
SEARCHES = ("grid", "random", "ablation")
# The paper's six headline numbers (the first column of each task's leaderboard): their mean is
# its "Overall".
HEADLINE = ("panoptic_pq", "semantic_miou", "instance_ap", "interactive_click_ap",
            "referring_miou", "open_vocab_ap")
# the same as (metrics.json section, key): the per-scene statistics' names
HEADLINE_KEYS = (("panoptic", "pq"), ("semantic", "miou"), ("instance", "ap"),
                 ("interactive", "click_ap"), ("referring", "miou"), ("open_vocab", "ap"))
OVERALL = ("overall", "overall")  # the bootstrap's composite: the mean of HEADLINE_KEYS
SEED = "seed"  # the trial configuration's training seed (not an axis of the tables)
RESAMPLES, CONFIDENCE = 1000, 0.95  # the configurations' intervals (as `uniseg3d compare`)
# AGILE3D's protocol: the IoU after 5 clicks per object, single- and multi-object (plotted too)
PROTOCOL = ("interactive_protocol_single_iou@5", "interactive_protocol_multi_iou@5")
NOT_METRICS = ("dataset", "counts", "timing")  # sections of metrics.json that are not tasks


def click_prompts(params: Params, spec: str, training: bool) -> Params:
    """`params` with the training (or evaluation) click strategy set from `spec`."""
    strategy, value = (spec[:2], spec[2:]) if spec.startswith("rd") else (spec, "")
    if strategy not in STRATEGIES or (value and strategy != "rd"):
        raise ConfigError(f"sweep: unknown click strategy {spec!r}: expected one of "
                          f"{', '.join(STRATEGIES)} or rd<value> such as rd0.5")
    try:
        rd = float(value) if value else params.prompts.rd
    except ValueError:
        raise ConfigError(f"sweep: click strategy {spec!r}: {value!r} is not a number") from None
    field = "train_click" if training else "eval_click"
    return replace(params, prompts=replace(params.prompts, rd=rd, **{field: strategy}))


def flatten_metrics(metrics: dict) -> dict[str, float]:
    """The numbers of `run_evaluate`'s result as flat `task_metric` keys (nested subsets
    joined by '_'; null as NaN), with `overall`."""
    flat: dict[str, float] = {}

    def walk(prefix: str, node: dict) -> None:
        for key, value in node.items():
            if key == "per_scene":  # the interactive protocol's scores per scene
                continue
            if isinstance(value, dict):
                walk(f"{prefix}_{key}", value)
            elif value is None or isinstance(value, (int, float)):
                flat[f"{prefix}_{key}"] = math.nan if value is None else float(value)

    for task, section in metrics.items():
        if task not in NOT_METRICS and isinstance(section, dict):
            walk(task, section)
    flat["overall"] = float(np.mean([flat.get(key, math.nan) for key in HEADLINE]))
    return flat


def switch_axes(sweep_cfg: SweepConfig) -> dict[str, tuple]:
    """The axes of `sweep.switches`: dotted params.yaml path -> its values (YAML; separated
    by "," or, when a value holds commas, by ";")."""
    axes = {}
    for spec in sweep_cfg.switches:
        path, _, values = spec.partition("=")
        separator = ";" if ";" in values else ","
        parsed = tuple(yaml.safe_load(v.strip()) for v in values.split(separator) if v.strip())
        if not path.strip() or not parsed:
            raise ConfigError(f"sweep.switches: {spec!r}: expected 'dotted.path=value,value'")
        axes[path.strip()] = parsed
    return axes


def trial_configurations(sweep_cfg: SweepConfig) -> list[dict]:
    """The trials of a grid (every combination) or an ablation (the first value of every axis,
    then each other value of each axis alone, the rest at their first values)."""
    axes = _axes(sweep_cfg)
    if sweep_cfg.search == "grid":
        return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    base = {name: values[0] for name, values in axes.items()}
    return [base] + [{**base, name: value} for name, values in axes.items()
                     for value in values[1:]]


def axis_value(value: object) -> object:
    """An axis value for tables: a list or mapping as the YAML flow text it was written in
    (`[interactive]`), anything else as it is."""
    if isinstance(value, (list, tuple, dict)):
        return yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip()
    return value


def changed(config: dict, sweep_cfg: SweepConfig) -> str:
    """What a trial changes from the first value of every axis ('base' for none)."""
    differing = [f"{name}={axis_value(config[name])}" for name, values in _axes(sweep_cfg).items()
                 if config[name] != values[0]]
    return ", ".join(differing) or "base"


def trial_params(params: Params, config: dict, sweep_cfg: SweepConfig, trial_dir: Path
                 ) -> tuple[Params, Params]:
    """The trial's training parameters and its evaluation parameters."""
    for path in switch_axes(sweep_cfg):
        params = with_setting(params, path, config[path])
    params = replace(
        params, loss=replace(params.loss, lambda_inter=float(config["lambda_inter"])),
        train=replace(params.train, epochs=sweep_cfg.epochs,
                      seed=int(config.get(SEED, params.train.seed)),
                      threads=sweep_cfg.cpus_per_trial, out=str(trial_dir / "train")))
    params = replace(params, prompts=replace(params.prompts,
                                             corrective_click=config["corrective_click"]))
    trained = click_prompts(params, config["train_click"], training=True)
    evaluated = click_prompts(params, config["eval_click"], training=False)
    evaluated = replace(evaluated, evaluate=replace(
        evaluated.evaluate, checkpoint=str(trial_dir / "train" / "best.pt"),
        out=str(trial_dir / "eval")))
    return trained, evaluated


def run_trial(config: dict, params: Params, sweep_cfg: SweepConfig, train_set: SceneSet,
              val_set: SceneSet, trials: str) -> None:
    """One Tune trial: train (reporting every epoch), evaluate, report every metric; its
    checkpoints and evaluation outputs go to `<trials>/<trial id>/{train,eval}`."""
    from ray import tune

    from uniseg3d.pipelines.evaluate import run_evaluate

    worker_logging()
    config = config.get("trial", config)
    trial_dir = Path(trials) / tune.get_context().get_trial_id()
    train_params, eval_params = trial_params(params, config, sweep_cfg, trial_dir)
    workdir = Path(train_params.train.out)
    workdir.mkdir(parents=True, exist_ok=True)
    with checkpoint_folder(tune.get_checkpoint()) as resume_from:
        session = WorkerSession(
            report=lambda metrics, folder: tune.report(
                metrics, checkpoint=tune.Checkpoint.from_directory(folder)),
            resume_from=resume_from, threads=sweep_cfg.cpus_per_trial)
        history = fit(train_params, session, train_set, val_set, workdir)
    metrics = flatten_metrics(run_evaluate(eval_params, progress=False))
    tune.report({**history[-1], "score": epoch_score(history[-1]), "evaluation": metrics})


def search_space(sweep_cfg: SweepConfig) -> dict:
    """Tune's param_space: the listed trial configurations (grid, ablation) or a uniform
    choice on every axis (random), each with every seed of `sweep.seeds`."""
    from ray import tune

    if sweep_cfg.search == "random":
        return {**{name: tune.choice(list(values)) for name, values in _axes(sweep_cfg).items()},
                SEED: tune.grid_search(list(sweep_cfg.seeds))}
    return {"trial": tune.grid_search([{**config, SEED: seed}
                                       for config in trial_configurations(sweep_cfg)
                                       for seed in sweep_cfg.seeds])}


def _axes(sweep_cfg: SweepConfig) -> dict[str, tuple]:
    return {**dict(zip(AXES, (sweep_cfg.lambdas, sweep_cfg.train_clicks, sweep_cfg.eval_clicks,
                              sweep_cfg.corrective_clicks))), **switch_axes(sweep_cfg)}


def _check(params: Params, sweep_cfg: SweepConfig) -> None:
    """Refuse a malformed sweep before Ray starts."""
    if sweep_cfg.search not in SEARCHES:
        raise ConfigError(f"sweep.search: expected one of {', '.join(SEARCHES)}, found "
                          f"{sweep_cfg.search!r}")
    if sweep_cfg.scheduler not in ("none", "asha"):
        raise ConfigError(f"sweep.scheduler: expected none or asha, found "
                          f"{sweep_cfg.scheduler!r}")
    if sweep_cfg.epochs < 1 or sweep_cfg.cpus_per_trial < 1 or sweep_cfg.num_samples < 1:
        raise ConfigError("sweep.epochs, sweep.cpus_per_trial and sweep.num_samples must be "
                          ">= 1")
    if not sweep_cfg.seeds or len(set(sweep_cfg.seeds)) != len(sweep_cfg.seeds):
        raise ConfigError(f"sweep.seeds: expected distinct training seeds, found "
                          f"{list(sweep_cfg.seeds)}")
    for name, values in _axes(sweep_cfg).items():
        if not values:
            raise ConfigError(f"sweep: no values for {name}")
    for spec in {*sweep_cfg.train_clicks, *sweep_cfg.eval_clicks}:
        click_prompts(params, spec, training=True)
    for path, values in switch_axes(sweep_cfg).items():
        for value in values:
            with_setting(params, path, value)
    unknown = set(sweep_cfg.corrective_clicks) - set(CORRECTIVE_CLICKS)
    if unknown:
        raise ConfigError(f"sweep.corrective_clicks: unknown {sorted(unknown)}; expected "
                          f"{', '.join(CORRECTIVE_CLICKS)}")


def results_table(results: ResultGrid, trials: Path, sweep_cfg: SweepConfig) -> pd.DataFrame:
    """One row per trial of a Tune `ResultGrid`: configuration, what it changes from the first
    value of every axis, status, final losses, Overall, every task metric and the trial's
    folder (under `trials`)."""
    axes = list(_axes(sweep_cfg))
    rows = []
    for result in results:
        config = result.config.get("trial", result.config)
        metrics = result.metrics or {}
        evaluation = metrics.get("evaluation", {})
        status = "error" if result.error is not None else \
            "completed" if evaluation else "stopped"
        trial = metrics.get("trial_id", Path(result.path).name)
        rows.append({"trial": trial, "status": status,
                     **{axis: axis_value(config[axis]) for axis in axes}, SEED: config[SEED],
                     "changed": changed(config, sweep_cfg),
                     "epochs": metrics.get("epoch", -1) + 1,
                     **{key: metrics[key] for key in ("train_total", "val_total")
                        if key in metrics},
                     "overall": evaluation.get("overall", math.nan),
                     **{key: value for key, value in evaluation.items() if key != "overall"},
                     "folder": str(trials / trial),
                     "error": "" if result.error is None else
                     str(result.error).strip().partition("\n")[0]})
    return pd.DataFrame(rows).sort_values([*axes, SEED], kind="stable").reset_index(drop=True)


def configuration_table(table: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """One row per configuration (the `axes` values) of the completed trials of `table`: what
    it changes, its seeds, and the mean, standard deviation and count of Overall and every
    headline metric over them; then Overall's difference to the base configuration ("base")
    with its paired bootstrap interval and p-value over the scenes and seeds, from the trials'
    `eval/scene_stats` (the base's own row: 0; NaN without a base configuration). Sorted by
    mean Overall, best first."""
    done = table[table["status"] == "completed"]
    rows, sides = [], {}
    for _, group in done.groupby(axes, sort=False, dropna=False):
        first = group.iloc[0]
        row = {**{axis: first[axis] for axis in axes}, "changed": first["changed"],
               "seeds": ",".join(str(s) for s in group[SEED]), "n": len(group)}
        for metric in ("overall", *HEADLINE):
            values = group[metric].astype(float) if metric in group else pd.Series([math.nan])
            row[f"{metric}_mean"] = float(values.mean())
            row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        sides[row["changed"]] = configuration_side(group)
        rows.append(row)
    configurations = pd.DataFrame(rows)
    for key in ("overall_delta", "ci_low", "ci_high", "p_value"):
        configurations[key] = math.nan
    configurations["significant"] = False
    if "base" in sides:
        for index, row in configurations.iterrows():
            found = overall_difference(sides["base"], sides[row["changed"]]) \
                if row["changed"] != "base" else {"overall_delta": 0.0, "ci_low": 0.0,
                                                  "ci_high": 0.0, "p_value": 1.0,
                                                  "significant": False}
            for key in ("overall_delta", "ci_low", "ci_high", "p_value", "significant"):
                configurations.at[index, key] = found[key]
    return configurations.sort_values("overall_mean", ascending=False, kind="stable",
                                      na_position="last").reset_index(drop=True)


def configuration_side(trials: pd.DataFrame) -> Side:
    """One configuration's completed `trials` as a bootstrap side: each trial's evaluation
    statistics (`<folder>/eval/scene_stats`), read once."""
    folders = [str(Path(folder) / "eval") for folder in trials["folder"]]
    return Side(",".join(folders), [read_evaluation(folder) for folder in folders])


def overall_difference(baseline: Side, other: Side) -> dict:
    """Overall of `other` minus `baseline` (one evaluation per seed each): `delta`,
    `ci_low`, `ci_high`, `p_value`, `significant` (`uniseg3d.metrics.bootstrap`)."""
    rows = paired_bootstrap([baseline, other], 0, RESAMPLES, CONFIDENCE,
                            composites={OVERALL: HEADLINE_KEYS})["metrics"]
    found = next(row for row in rows if (row["task"], row["metric"]) == OVERALL)
    return {"overall_delta": found["delta"], **{key: found[key] for key in
                                                ("ci_low", "ci_high", "p_value", "significant")}}


def best_configuration(table: pd.DataFrame, configurations: pd.DataFrame) -> dict:
    """The configuration with the best mean Overall (NaN never wins), its best trial's
    checkpoint, and whether its Overall is significantly above the runner-up's."""
    scored = configurations[np.isfinite(configurations["overall_mean"].astype(float))]
    if scored.empty:
        return {"trial": None, "reason": "no trial finished its evaluation with a finite Overall"}
    best = scored.iloc[0]
    trials = table[(table["status"] == "completed") & (table["changed"] == best["changed"])]
    top = trials.loc[trials["overall"].astype(float).idxmax()]
    result = {"trial": top["trial"], **{axis: _plain(best[axis]) for axis in AXES},
              "changed": best["changed"], "seeds": best["seeds"], "n": int(best["n"]),
              "overall": float(best["overall_mean"]),
              "overall_std": _json_number(best["overall_std"]),
              **{key: _json_number(best[f"{key}_mean"]) for key in HEADLINE},
              "checkpoint": str(Path(top["folder"]) / "train" / "best.pt")}
    if len(scored) < 2:
        return {**result, "runner_up": None}
    runner = scored.iloc[1]
    completed = table[table["status"] == "completed"]
    versus = overall_difference(*(configuration_side(completed[completed["changed"]
                                                                == row["changed"]])
                                  for row in (runner, best)))
    return {**result, "runner_up": {
        "changed": runner["changed"], "overall": float(runner["overall_mean"]),
        "delta": versus["overall_delta"], "ci_low": versus["ci_low"],
        "ci_high": versus["ci_high"], "p_value": versus["p_value"],
        "significantly_better": bool(versus["significant"] and versus["overall_delta"] > 0)}}


def _plain(value):
    """A numpy scalar as the Python value (for JSON)."""
    return value.item() if isinstance(value, np.generic) else value


def _json_number(value) -> float | None:
    return None if value is None or not np.isfinite(float(value)) else float(value)


def plot_data(table: pd.DataFrame) -> dict:
    """For each axis: its values and, per headline metric and Overall, the mean over the
    finished trials at each value (null where none)."""
    done = table[table["status"] == "completed"]
    data = {}
    for axis in AXES:
        values = sorted(table[axis].unique().tolist())  # plain Python values
        data[axis] = {"x": values, "series": {
            metric: [_json_number(done.loc[done[axis] == value, metric].astype(float).mean())
                     if metric in done and (done[axis] == value).any() else None
                     for value in values]
            for metric in (*HEADLINE, "overall")}}
    return data


def write_outputs(table: pd.DataFrame, out: Path, axes: list[str]) -> dict:
    """`results.csv`, `configurations.csv`, `best.json` and `sweep_plot_data.json` in `out`;
    returns the best."""
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / RESULTS_FILE, index=False)
    configurations = configuration_table(table, axes)
    configurations.to_csv(out / CONFIGURATIONS_FILE, index=False)
    best = best_configuration(table, configurations)
    (out / BEST_FILE).write_text(json.dumps(best, indent=2) + "\n", encoding="utf-8")
    (out / PLOT_DATA_FILE).write_text(json.dumps(plot_data(table), indent=2) + "\n",
                                      encoding="utf-8")
    return best


def run_sweep(params: Params, sweep_cfg: SweepConfig, ray_cfg: RayConfig) -> dict:
    """Run the sweep; write `results.csv`, `best.json` and `sweep_plot_data.json` to
    `sweep.out`. Returns {"trials", "completed", "best", "out"}."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    _check(params, sweep_cfg)
    train_set, val_set = scene_sets(params)
    storage = Path(ray_cfg.storage).resolve()
    shutil.rmtree(storage / SWEEP_NAME, ignore_errors=True)
    trials = storage / SWEEP_NAME / "trials"
    cpus = sweep_cfg.cpus_per_trial
    with ray_session(ray_cfg.address, Request("sweep trials", 1, cpus, 0,
                                              "sweep.cpus_per_trial")):
        import ray

        parallel = max(1, int(ray.cluster_resources().get("CPU", 1)) // cpus)
        scheduler = None
        if sweep_cfg.scheduler == "asha":  # its horizon: the longest trial, + 1 for the
            #                                evaluation's report
            longest = sweep_cfg.epochs + max(
                trial_params(params, config, sweep_cfg, trials)[0].train.fine_tune_epochs
                for config in trial_configurations(sweep_cfg))
            scheduler = ASHAScheduler(max_t=longest + 1, grace_period=1)
        trainable = tune.with_parameters(run_trial, params=absolute_paths(params),
                                         sweep_cfg=sweep_cfg, train_set=train_set,
                                         val_set=val_set, trials=str(trials))
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": cpus}),
            param_space=search_space(sweep_cfg),
            tune_config=tune.TuneConfig(
                metric="score", mode="min", scheduler=scheduler,
                num_samples=sweep_cfg.num_samples if sweep_cfg.search == "random" else 1,
                max_concurrent_trials=parallel,
                search_alg=BasicVariantGenerator(random_state=params.train.seed)),
            run_config=tune.RunConfig(
                name=SWEEP_NAME, storage_path=str(storage), verbose=0,
                failure_config=tune.FailureConfig(max_failures=ray_cfg.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
        log.info("sweep: up to %d trials at once, %d CPU(s) each", parallel, cpus)
        results = tuner.fit()
    table = results_table(results, trials, sweep_cfg)
    best = write_outputs(table, Path(sweep_cfg.out), list(_axes(sweep_cfg)))
    completed = int((table["status"] == "completed").sum())
    for _, row in table[table["status"] == "error"].iterrows():
        log.warning("trial %s (%s) failed: %s", row["trial"],
                    row["changed"], row["error"])
    log.info("sweep: %d trials, %d completed; best %s -> %s", len(table), completed, best,
             sweep_cfg.out)
    return {"trials": len(table), "completed": completed, "best": best, "out": sweep_cfg.out}
