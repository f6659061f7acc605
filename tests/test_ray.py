"""Ray Train and Ray Tune: DDP equals one process on the combined batch, a crashed worker
resumes from its checkpoint, a killed run resumes with `resume=True`, a sweep writes its table,
clear resource errors, and no Ray process outlives a command."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import ray
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ground_truth import write_evaluation
from uniseg3d.benchmarks.process_cpu import ProcessTreeCPU, process_role
from uniseg3d.benchmarks.ray_bench import TRAIN_WORKER_ROLE, bench_ray_overhead
from uniseg3d.config import ConfigError, EvaluateConfig, Params, RayConfig, SweepConfig
from uniseg3d.datasets.classes import scannet20
from uniseg3d.datasets.loader import make_sample, read_split
from uniseg3d.datasets.streaming import epoch_shard
from uniseg3d.metrics.scene_stats import first_row, read_evaluation
from uniseg3d.metrics.tasks import task_scores
from uniseg3d.model.criterion import Criterion
from uniseg3d.model.inputs import scene_targets
from uniseg3d.model.text_encoder import EncodedTexts, class_embeddings
from uniseg3d.pipelines import ray_train
from uniseg3d.pipelines.prepare import prepare_dataset
from uniseg3d.pipelines.ray_train import DDP_KWARGS, RayError, run_ray_train
from uniseg3d.pipelines.samples import Example
from uniseg3d.pipelines.sweep import (AXES, HEADLINE, changed, click_prompts,
                                      configuration_table, flatten_metrics, results_table,
                                      run_sweep, search_space, switch_axes,
                                      trial_configurations, trial_params, write_outputs)
from uniseg3d.pipelines.synth import run_synth
from uniseg3d.pipelines.train import (
    build_model, class_prompt_names, forward_losses, load_trained_model, make_text_encoder, train)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Two small synthetic ScanNet-layout scenes (ScanRefer descriptions included) and their
    prepared cache; the text-embedding cache beside them is shared by every test."""
    root = tmp_path_factory.mktemp("ray")
    run_synth(root / "raw", train=1, val=1, replica=0, seed=0, jobs=1, spacing=0.1)
    prepare_dataset("scannet", root / "raw", root / "cache", jobs=1, progress=False)
    return root


@pytest.fixture(scope="module")
def scenes(root) -> list:
    return read_split(root / "cache")


def params_for(root: Path, out: Path, **train) -> Params:
    params = Params()
    return dataclasses.replace(
        params, text=dataclasses.replace(params.text, cache_file=str(root / "text.pt")),
        train=dataclasses.replace(
            params.train, cache=str(root / "cache"), train_scenes=None, val_scenes=None,
            out=str(out / "run"), threads=1,
            augment=dataclasses.replace(params.train.augment, elastic=()), **train),
        evaluate=EvaluateConfig(checkpoint=str(out / "run" / "best.pt"), cache=str(root / "cache"),
                                scenes=None, replica_cache=None, out=str(out / "reports"),
                                dataset_label="unit-test"))


def ray_config(out: Path, **fields) -> RayConfig:
    return RayConfig(**{"num_workers": 1, "cpus_per_worker": 1, "storage": str(out / "ray"),
                        **fields})


def start_local_ray() -> None:
    """A local Ray for the commands to join (kept for the next tests, shut down at the end)."""
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False)


@pytest.fixture(scope="module", autouse=True)
def ray_environment():
    """Ray Train's controller polls its workers every 0.5 s instead of 2 s (quicker tests);
    whatever Ray the tests leave is shut down at the end."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
        yield
    ray.shutdown()


@pytest.fixture
def no_ray():
    """No Ray running in this process when the test starts."""
    ray.shutdown()


def ray_processes() -> set[int]:
    """Ray's raylet and GCS server started by this process (not other users' Rays)."""
    found = subprocess.run(["pgrep", "-P", str(os.getpid()), "-f", "raylet|gcs_server"],
                           capture_output=True, text=True)
    return {int(pid) for pid in found.stdout.split()}


def assert_no_ray_left() -> None:
    assert not ray.is_initialized()
    deadline = time.monotonic() + 15
    while ray_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ray_processes()


REGISTRATION_GRACE_S = 3.0


def crash_once_at_epoch_1(marker: Path, calls: Path):
    """A train_loop_per_worker whose run_epoch logs each epoch to `calls` and raises at epoch 1
    while `marker` exists (deleting it: once)."""
    def loop(config):
        from uniseg3d.pipelines import ray_train
        from uniseg3d.pipelines import train as module

        real_run_epoch = module.run_epoch

        def run_epoch(*args):
            with calls.open("a") as handle:
                handle.write(f"{args[7]}\n")
            if args[7] == 1 and marker.exists():
                marker.unlink(missing_ok=True)
                # Ray's controller registers a reported checkpoint when it next polls the
                # workers: a worker dying at once can beat it to epoch 0's (seen on a busy
                # machine: the restart then began from scratch)
                time.sleep(REGISTRATION_GRACE_S)
                raise RuntimeError("injected worker failure at epoch 1")
            return real_run_epoch(*args)

        module.run_epoch = run_epoch
        try:
            ray_train.train_loop_per_worker(config)
        finally:
            module.run_epoch = real_run_epoch

    return loop


def epochs_run(calls: Path) -> list[int]:
    return [int(line) for line in calls.read_text().split()]


# ------------------------------------------------------------------ (a) DDP = combined batch


class EmbeddedTexts:
    """The text encoder's answers for known texts (spawned processes skip loading MiniLM)."""

    def __init__(self, encoder, texts: list[str]):
        self.rows = dict(zip(texts, encoder.encode(texts)))
        self.tokens = dict(zip(texts, encoder.encode_tokens(texts)))

    def encode_texts(self, texts: list[str]) -> EncodedTexts:
        return EncodedTexts.from_rows(torch.stack([self.rows[text] for text in texts]),
                                      [self.tokens[text] for text in texts])


def ddp_step(rank: int, world_size: int, port: int, inputs: tuple, out: Path) -> None:
    """One DDP step of `rank` on its epoch-0 shard; gradients and parameters to `out`."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size)
    try:
        params, scenes, texts, classes = inputs
        shard = epoch_shard(len(scenes), rank, world_size, params.train.seed, 0)
        gradients, after = one_step(params, [scenes[i] for i in shard], texts, classes,
                                    DDP_KWARGS)
        torch.save({"gradients": gradients, "parameters": after}, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def one_step(params: Params, batch: list, texts: EmbeddedTexts, classes: torch.Tensor,
             ddp: dict | None = None) -> tuple[dict, dict]:
    """Gradients and parameters after one SGD step on `batch`, in eval mode: BatchNorm
    normalises with its running statistics and every superpoint seeds a query, so no scene's
    loss depends on the other scenes of its batch or on random draws (in training mode,
    BatchNorm's batch statistics would differ between one scene and two)."""
    torch.manual_seed(params.train.seed)
    model = build_model(params, classes.shape[1])
    wrapped = torch.nn.parallel.DistributedDataParallel(model, **ddp) if ddp else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    wrapped.eval()
    rng, generator = np.random.default_rng(0), torch.Generator().manual_seed(0)
    samples = [make_sample(scene, params.prompts, rng, training=False) for scene in batch]
    examples = [Example(sample, scene_targets(sample)) for sample in samples]
    losses = forward_losses(wrapped, Criterion(params.loss, len(scannet20())), examples, params,
                            texts, classes, rng, generator, training=False)
    losses["total"].backward()
    gradients = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    optimizer.step()
    return gradients, {n: p.detach().clone() for n, p in model.named_parameters()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_workers_match_one_process_on_the_combined_batch(root, scenes, tmp_path):
    """Two scenes of one geometry (the second recoloured): the backbone's voxel grid of a
    batch spans its largest scene, and its strided convolutions drop boundary voxels of odd
    grid sizes, so scenes of different extents train slightly differently alone and batched."""
    params = params_for(root, tmp_path)
    scenes = [scenes[0], dataclasses.replace(scenes[0], scene_id="recoloured",
                                             colors=255 - scenes[0].colors)]
    encoder = make_text_encoder(params)
    classes = class_embeddings(encoder, class_prompt_names(scannet20().names))
    texts = EmbeddedTexts(encoder, [d.text for scene in scenes for d in scene.referring])
    mp.start_processes(ddp_step, args=(2, free_port(), (params, scenes, texts, classes),
                                       tmp_path), nprocs=2, start_method="fork")
    gradients, after = one_step(params, scenes, texts, classes)
    for rank in range(2):
        state = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert state["gradients"].keys() == gradients.keys()
        for name, gradient in gradients.items():
            torch.testing.assert_close(state["gradients"][name], gradient, rtol=1e-4, atol=1e-6,
                                       msg=name)
        for name, parameter in after.items():
            torch.testing.assert_close(state["parameters"][name], parameter, rtol=1e-4,
                                       atol=1e-6, msg=name)


def test_epoch_shards_cover_every_scene_with_equal_counts():
    for size, world in ((10, 1), (10, 2), (7, 3), (1, 2)):
        for epoch in range(3):
            shards = [epoch_shard(size, rank, world, 0, epoch) for rank in range(world)]
            assert len({len(s) for s in shards}) == 1
            assert set(np.concatenate(shards)) == set(range(size))
            assert sum(map(len, shards)) == -(-size // world) * world
    assert np.array_equal(epoch_shard(5, 0, 1, 0, 4), np.arange(5))
    assert not np.array_equal(epoch_shard(10, 0, 2, 0, 0), epoch_shard(10, 0, 2, 0, 1))


def test_click_strategies_and_sweep_errors():
    params = Params()
    rd = click_prompts(params, "rd0.5", training=True).prompts
    assert (rd.train_click, rd.rd, rd.eval_click) == ("rd", 0.5, params.prompts.eval_click)
    agile = click_prompts(params, "agile", training=False).prompts
    assert (agile.eval_click, agile.rd) == ("agile", params.prompts.rd)
    with pytest.raises(ConfigError, match="unknown click strategy 'middle'"):
        click_prompts(params, "middle", training=True)
    with pytest.raises(ConfigError, match="sweep.search: expected one of grid, random, ablation"):
        run_sweep(params, SweepConfig(search="bayes"), RayConfig())
    with pytest.raises(ConfigError, match="sweep: no values for lambda_inter"):
        run_sweep(params, SweepConfig(lambdas=()), RayConfig())
    with pytest.raises(ConfigError, match="sweep.corrective_clicks: unknown \\['edge'\\]"):
        run_sweep(params, SweepConfig(corrective_clicks=("deepest", "edge")), RayConfig())
    assert not ray.is_initialized()
    trained, evaluated = trial_params(params, {"lambda_inter": 0.2, "train_click": "random",
                                               "eval_click": "agile",
                                               "corrective_click": "random"},
                                      SweepConfig(epochs=1), Path("trial"))
    assert trained.prompts.corrective_click == "random" and trained.loss.lambda_inter == 0.2
    assert (trained.prompts.train_click, evaluated.prompts.eval_click) == ("random", "agile")


def test_an_ablation_changes_one_axis_at_a_time_and_switches_reach_the_trial():
    sweep_cfg = SweepConfig(lambdas=(0.1, 0.3), train_clicks=("random",), search="ablation",
                            switches=("loss.matcher=hungarian,sparse",
                                      "model.switches.word_attention=true,false",
                                      "model.recipe=ours,official"))
    configs = trial_configurations(sweep_cfg)
    assert [changed(c, sweep_cfg) for c in configs] == [
        "base", "lambda_inter=0.3", "loss.matcher=sparse",
        "model.switches.word_attention=False", "model.recipe=official"]
    trained, _ = trial_params(Params(), configs[3], sweep_cfg, Path("trial"))
    assert trained.model.switches.word_attention is False and trained.loss.matcher == "hungarian"
    assert trained.model.selected().switches.word_attention is False
    grid = trial_configurations(dataclasses.replace(sweep_cfg, search="grid"))
    assert len(grid) == 2 * 2 * 2 * 2
    with pytest.raises(ConfigError, match="loss.match: no field 'match'"):
        run_sweep(Params(), dataclasses.replace(sweep_cfg, switches=("loss.match=a,b",)),
                  RayConfig())
    with pytest.raises(ConfigError, match="expected bool"):
        run_sweep(Params(), dataclasses.replace(
            sweep_cfg, switches=("model.switches.word_attention=maybe",)), RayConfig())


def test_metrics_flatten_with_the_overall_mean():
    metrics = {"dataset": "x", "counts": {"clicks": 3}, "semantic": {"miou": 0.5},
               "instance": {"ap": 0.2}, "panoptic": {"pq": 0.3},
               "interactive": {"click_ap": 0.4, "miou": 0.9},
               "referring": {"miou": 0.1, "unique": {"acc50": None}}, "open_vocab": {"ap": 0.0},
               "interactive_protocol": {"single": {"iou@5": 0.7, "curve": [0.5, 0.7],
                                                   "per_scene": {"s0": {"iou@5": 0.7}}}}}
    flat = flatten_metrics(metrics)
    assert flat["interactive_protocol_single_iou@5"] == 0.7
    assert not any("per_scene" in key or "curve" in key for key in flat)
    assert flat["overall"] == pytest.approx((0.5 + 0.2 + 0.3 + 0.4 + 0.1 + 0.0) / 6)
    assert np.isnan(flat["referring_unique_acc50"]) and "counts_clicks" not in flat


# --------------------------------------------------- (e) resource errors before anything starts


def test_too_many_cpus_is_a_clear_error_before_ray_starts(root, tmp_path, no_ray):
    params = params_for(root, tmp_path, epochs=1)
    with pytest.raises(RayError, match=r"training workers \(3 x 2 CPUs\) need 6 CPUs but "
                                       r"this machine has \d: lower ray\.num_workers"):
        run_ray_train(params, ray_config(tmp_path, num_workers=3, cpus_per_worker=2))
    with pytest.raises(RayError, match=r"sweep trials \(1 x 64 CPUs\) need 64 CPUs.*"
                                       r"sweep\.cpus_per_trial"):
        run_sweep(params, SweepConfig(cpus_per_trial=64, out=str(tmp_path / "sweep")),
                  ray_config(tmp_path))
    assert not list((tmp_path / "ray").glob("*/epoch_*"))
    assert_no_ray_left()


def test_a_request_beyond_the_cluster_is_refused_before_a_worker_starts(root, tmp_path):
    start_local_ray()  # 2 CPUs
    with pytest.raises(RayError, match=r"need 3 CPUs but the Ray cluster has 2"):
        run_ray_train(params_for(root, tmp_path, epochs=1), ray_config(tmp_path, num_workers=3))
    assert not (tmp_path / "ray" / "run").exists()


def test_unreachable_address_is_a_clear_error(root, tmp_path, no_ray):
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(RayError, match=rf"cannot reach a Ray cluster at {address}.*ray start"):
        run_ray_train(params_for(root, tmp_path, epochs=1),
                      ray_config(tmp_path, address=address))
    assert_no_ray_left()


def test_starting_ray_keeps_the_commands_logging(no_ray, caplog):
    root = logging.getLogger()
    with caplog.at_level(logging.INFO):
        handlers = list(root.handlers)
        with ray_train.ray_session(None, ray_train.Request("test workers", 1, 1, 0, "keys")):
            assert root.level == logging.INFO and root.handlers == handlers
            logging.getLogger("uniseg3d.test").info("still heard after ray.init")
    assert "still heard after ray.init" in caplog.text
    assert_no_ray_left()


def test_a_local_ray_runs_its_workers_at_normal_priority(no_ray, monkeypatch):
    for name in ray_train.LOCAL_RAY_ENV:
        monkeypatch.delenv(name, raising=False)

    @ray.remote(num_cpus=1)
    def niceness() -> int:
        return os.nice(0)

    with ray_train.ray_session(None, ray_train.Request("test workers", 1, 1, 0, "keys")):
        assert ray.get(niceness.remote()) == 0  # Ray's own default is 15
    assert os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "0"
    assert_no_ray_left()


# ---------------------------------------------- (f) no Ray left after an interrupted command


def test_ctrl_c_leaves_no_ray_process(root, tmp_path, no_ray, monkeypatch):
    from ray.train.torch import TorchTrainer

    running = set()

    def interrupted(self):
        running.update(ray_processes())
        raise KeyboardInterrupt

    monkeypatch.setattr(TorchTrainer, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_ray_train(params_for(root, tmp_path, epochs=1), ray_config(tmp_path))
    assert running  # Ray was up when Ctrl-C came
    assert_no_ray_left()


# ------------------------------------- (d) a killed run resumes from its last epoch; (f) again


def test_killed_run_resumes_from_the_last_epoch(root, scenes, tmp_path, no_ray, monkeypatch):
    params = params_for(root, tmp_path, epochs=3)
    marker, calls = tmp_path / "crash", tmp_path / "calls"
    marker.touch()
    monkeypatch.setattr(ray_train, "train_loop_per_worker", crash_once_at_epoch_1(marker, calls))
    with pytest.raises(RayError, match="continue with --resume"):
        run_ray_train(params, ray_config(tmp_path, max_failures=0), train_scenes=scenes)
    assert_no_ray_left()  # also after a failed run
    start_local_ray()
    resumed = run_ray_train(params, ray_config(tmp_path, max_failures=0), resume=True,
                            train_scenes=scenes)
    assert epochs_run(calls) == [0, 1, 1, 2]  # epoch 0 is not trained again
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2]
    assert json.loads((resumed.out / "history.json").read_text()) == resumed.history
    direct = train(dataclasses.replace(params, train=dataclasses.replace(
        params.train, out=str(tmp_path / "direct"))), train_scenes=scenes, progress=False)
    for ours, reference in zip(resumed.history, direct.history):  # one worker = train()
        assert ours["train_total"] == pytest.approx(reference["train_total"], rel=1e-4)


# -------------------------------- (b) a worker crash is survived with max_failures=1 (2 workers)


def test_crashed_worker_restarts_from_its_checkpoint(root, tmp_path, monkeypatch):
    start_local_ray()
    params = params_for(root, tmp_path, epochs=3)
    params = dataclasses.replace(  # corrective clicks: they run inside the DDP model's forward
        params, prompts=dataclasses.replace(params.prompts, corrective_rounds=2),
        train=dataclasses.replace(params.train,
                                  val_scenes=str(root / "raw" / "scannetv2_val.txt")))
    marker, calls = tmp_path / "crash", tmp_path / "calls"
    marker.touch()
    monkeypatch.setattr(ray_train, "train_loop_per_worker", crash_once_at_epoch_1(marker, calls))
    result = run_ray_train(params, ray_config(tmp_path, num_workers=2, max_failures=1))
    assert not marker.exists()  # it did crash
    assert epochs_run(calls).count(0) == 2  # one epoch 0 per worker: not trained again
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    assert all(np.isfinite(h["val_total"]) for h in result.history)
    assert (tmp_path / "ray" / "run" / "epoch_00002" / "last.pt").is_file()
    assert load_trained_model(result.best)[0].training is False  # the format train() writes
    assert ray.is_initialized()  # the caller's Ray is left running


def test_a_worker_removes_the_folders_of_killed_workers(tmp_path, monkeypatch):
    """A worker Ray killed mid-run never removes its scratch folder; the next worker to start
    on the same host removes the folders whose process is gone, and no other (a living
    process's, another host's sharing the temporary folder, a stranger's)."""
    monkeypatch.setattr(ray_train.tempfile, "tempdir", str(tmp_path))
    host = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    killed = tmp_path / f"uniseg3d-worker-{host}.{dead}-abc"
    (killed / "epoch").mkdir(parents=True)
    (killed / "epoch" / "last.pt").write_bytes(b"left behind")
    kept = [tmp_path / f"uniseg3d-worker-{host}.{os.getppid()}-def",  # alive
            tmp_path / f"uniseg3d-worker-{host}x.{dead}-ghi",  # another host's
            tmp_path / f"uniseg3d-worker-{host}.notapid-jkl"]
    for other in kept:
        other.mkdir()
    with ray_train.worker_folder() as folder:
        assert Path(folder).parent == tmp_path
        assert Path(folder).name.startswith(f"uniseg3d-worker-{host}.{os.getpid()}-")
        assert not killed.exists() and all(other.is_dir() for other in kept)
    assert not Path(folder).exists()


# ------------------------------------------------------------ (c) a 2-trial sweep writes its table


def test_two_trial_sweep_writes_its_table(root, tmp_path):
    start_local_ray()
    sweep_cfg = SweepConfig(lambdas=(0.1, 0.3), train_clicks=("rd0.5",), epochs=1,
                            cpus_per_trial=1, out=str(tmp_path / "sweep"))
    summary = run_sweep(params_for(root, tmp_path), sweep_cfg, ray_config(tmp_path))
    table = pd.read_csv(tmp_path / "sweep" / "results.csv")
    assert summary["trials"] == summary["completed"] == len(table) == 2
    assert sorted(table["lambda_inter"]) == [0.1, 0.3] and set(table["train_click"]) == {"rd0.5"}
    assert set(table["corrective_click"]) == {"deepest"}
    assert table["interactive_protocol_multi_iou@5"].between(0, 1).all()
    assert set(table["status"]) == {"completed"}
    assert {*HEADLINE, "overall", "panoptic_sq", "referring_acc50", "open_vocab_tail_ap"} <= \
        set(table.columns)
    assert table["overall"].between(0, 1).all()
    best = json.loads((tmp_path / "sweep" / "best.json").read_text())
    assert best["lambda_inter"] in (0.1, 0.3) and Path(best["checkpoint"]).is_file()
    configurations = pd.read_csv(tmp_path / "sweep" / "configurations.csv")
    assert sorted(configurations["changed"]) == ["base", "lambda_inter=0.3"]
    assert (configurations["n"] == 1).all() and (table["seed"] == 0).all()
    runner_up = best["runner_up"]  # the trials' own statistics give the interval
    assert runner_up["ci_low"] <= runner_up["delta"] <= runner_up["ci_high"]
    plots = json.loads((tmp_path / "sweep" / "sweep_plot_data.json").read_text())
    assert plots["lambda_inter"]["x"] == [0.1, 0.3]
    assert len(plots["lambda_inter"]["series"]["overall"]) == 2


def test_batch_norm_is_synchronised_across_gpu_workers_only():
    def norms(model, kind):
        return sum(isinstance(m, kind) for m in model.modules())

    model = build_model(Params(), 384)
    batch_norms = norms(model, torch.nn.BatchNorm1d)
    assert batch_norms > 0
    for use_gpu, world_size in ((False, 2), (True, 1)):
        assert ray_train.synchronised_batch_norm(model, use_gpu, world_size) is model
    synced = ray_train.synchronised_batch_norm(build_model(Params(), 384), True, 2)
    assert norms(synced, torch.nn.SyncBatchNorm) == batch_norms
    assert norms(synced, torch.nn.BatchNorm1d) == 0
    # a checkpoint of either loads into the other
    assert synced.load_state_dict(model.state_dict()).missing_keys == []
    assert model.load_state_dict(synced.state_dict()).unexpected_keys == []


# ------------------------------------------------- the overhead benchmark compares equal runs


def test_ray_overhead_benchmark_times_the_same_training_both_ways(root, tmp_path):
    start_local_ray()
    result = bench_ray_overhead(params_for(root, tmp_path), epochs=1, repeats=1)
    assert result["train_scenes"] == 2 and result["epochs"] == 1
    assert result["texts_cached"] > 0  # the descriptions were encoded before either run
    assert [len(run["epochs_s"]) for side in ("direct", "ray") for run in result["runs"][side]] \
        == [1, 1]
    assert result["max_loss_rel_diff"] < 1e-4  # one Ray worker trains exactly as train()
    assert 0 < result["direct_epoch_s"] < result["direct_s"]
    assert 0 < result["ray_epoch_s"] < result["ray_s"]
    assert result["overhead_pct"] == pytest.approx(
        100 * (result["ray_s"] - result["direct_s"]) / result["direct_s"])
    # CPU: the direct run trains in this process; the Ray run in its training worker
    direct_cpu, ray_cpu = result["runs"]["direct"][0]["cpu_s"], result["runs"]["ray"][0]["cpu_s"]
    assert direct_cpu["driver"] > result["direct_epoch_s"] * 0.5
    assert ray_cpu["by_role"][TRAIN_WORKER_ROLE] > ray_cpu["driver"]
    assert result["ray_other_cpu_s"] == pytest.approx(
        result["ray_cpu_s"] - ray_cpu["by_role"][TRAIN_WORKER_ROLE])
    assert result["ray_other_core_share_pct"] == pytest.approx(
        100 * result["ray_other_cpu_s"] / (result["ray_s"] * result["threads"]))
    assert ray.is_initialized()  # the caller's Ray is left running


def test_process_tree_cpu_counts_a_child_by_its_role(tmp_path):
    script = tmp_path / "spin.py"
    script.write_text("import time\nend = time.process_time() + 0.6\n"
                      "while time.process_time() < end:\n    pass\n"
                      "time.sleep(0.3)\n")  # idle past a few samples, so one sees all its CPU
    with ProcessTreeCPU(interval=0.1) as cpu:
        subprocess.run([sys.executable, str(script)], check=True)
    result = cpu.result()
    role = f"{Path(sys.executable).name} spin.py"
    assert 0.6 <= result["by_role"][role] < 1.5
    assert result["children"] == pytest.approx(sum(result["by_role"].values()))
    assert process_role(["ray::TrainController.run"]) == "ray::TrainController"
    assert process_role(["/opt/ray/core/src/ray/raylet/raylet", "--node_id=1"]) == "raylet"
    assert process_role([]) == "?"


def test_list_values_on_an_axis_are_separated_by_semicolons(tmp_path, data):
    sweep_cfg = SweepConfig(lambdas=(0.1,), train_clicks=("random",), search="ablation",
                            switches=("prompts.train_tasks=[interactive, referring]; "
                                      "[interactive]; []",
                                      "train.augment.elastic=[[0.12, 0.048]]; [[0.12, 0.8]]"))
    axes = switch_axes(sweep_cfg)
    assert axes["prompts.train_tasks"] == (["interactive", "referring"], ["interactive"], [])
    assert axes["train.augment.elastic"] == ([[0.12, 0.048]], [[0.12, 0.8]])
    configs = trial_configurations(sweep_cfg)
    assert [changed(c, sweep_cfg) for c in configs] == [
        "base", "prompts.train_tasks=[interactive]", "prompts.train_tasks=[]",
        "train.augment.elastic=[[0.12, 0.8]]"]
    trained, _ = trial_params(Params(), configs[2], sweep_cfg, Path("trial"))
    assert trained.prompts.train_tasks == ()
    trained, _ = trial_params(Params(), configs[3], sweep_cfg, Path("trial"))
    assert trained.train.augment.elastic == ((0.12, 0.8),)
    with pytest.raises(ConfigError, match="prompts.train_tasks: unknown"):
        trial_params(Params(), {**configs[0], "prompts.train_tasks": ["panoptic"]}, sweep_cfg,
                     Path("trial"))
    # the results table takes list values (Tune's results as `results_table` reads them)
    results = [SimpleNamespace(config={"trial": {**c, "seed": 0}}, error=None,
                               path=f"/runs/t{i}",
                               metrics={"trial_id": f"t{i}", "epoch": 5,
                                        "evaluation": {"overall": 0.1 * i}})
               for i, c in enumerate(configs)]
    table = results_table(results, tmp_path / "trials", sweep_cfg)
    assert sorted(table["prompts.train_tasks"]) == [
        "[]", "[interactive, referring]", "[interactive, referring]", "[interactive]"]
    for i in range(len(configs)):
        write_evaluation(data, tmp_path / "trials" / f"t{i}" / "eval", i)
    best = write_outputs(table, tmp_path, [*AXES, *switch_axes(sweep_cfg)])
    assert best["changed"] == "train.augment.elastic=[[0.12, 0.8]]"
    two_stage = dataclasses.replace(sweep_cfg, switches=("train.fine_tune_epochs=0,2",))
    trained, _ = trial_params(Params(), trial_configurations(two_stage)[1], two_stage,
                              Path("trial"))
    assert trained.train.fine_tune_epochs == 2  # the two-stage row reaches its trial


def test_seeds_are_an_axis_and_configurations_carry_their_interval(tmp_path, data):
    sweep_cfg = SweepConfig(lambdas=(0.1, 0.3), train_clicks=("random",), seeds=(0, 1))
    trials = search_space(sweep_cfg)["trial"]["grid_search"]
    assert [(t["lambda_inter"], t["seed"]) for t in trials] == [(0.1, 0), (0.1, 1), (0.3, 0),
                                                                (0.3, 1)]
    assert trial_params(Params(), trials[1], sweep_cfg, Path("trial"))[0].train.seed == 1
    with pytest.raises(ConfigError, match="sweep.seeds: expected distinct training seeds"):
        run_sweep(Params(), dataclasses.replace(sweep_cfg, seeds=(0, 0)), RayConfig())
    # each trial evaluated on the same scenes; its metrics.json numbers from its statistics
    results = []
    for index, config in enumerate(trials):
        folder = write_evaluation(data, tmp_path / "trials" / f"t{index}" / "eval", index)
        stats = read_evaluation(folder)
        metrics = {task: first_row(task_scores(found)) for task, found in stats.items()}
        results.append(SimpleNamespace(
            config={"trial": config}, error=None, path=f"/runs/t{index}",
            metrics={"trial_id": f"t{index}", "epoch": 1,
                     "evaluation": flatten_metrics(metrics)}))
    table = results_table(results, tmp_path / "trials", sweep_cfg)
    assert table["seed"].tolist() == [0, 1, 0, 1]
    axes = list(AXES)
    configurations = configuration_table(table, axes).set_index("changed")
    overall = table.groupby("lambda_inter")["overall"]
    for name, lam in (("base", 0.1), ("lambda_inter=0.3", 0.3)):
        row = configurations.loc[name]
        assert row["n"] == 2 and row["seeds"] == "0,1"
        assert row["overall_mean"] == pytest.approx(overall.mean()[lam], abs=1e-12)
        assert row["overall_std"] == pytest.approx(overall.std()[lam], abs=1e-12)
    base, other = configurations.loc["base"], configurations.loc["lambda_inter=0.3"]
    assert (base["overall_delta"], base["ci_low"], base["ci_high"]) == (0.0, 0.0, 0.0)
    assert not base["significant"] and base["p_value"] == 1.0
    # the bootstrap's point difference: the seeds' mean Overall from the statistics
    assert other["overall_delta"] == pytest.approx(
        other["overall_mean"] - base["overall_mean"], abs=1e-9)
    assert other["ci_low"] <= other["overall_delta"] <= other["ci_high"]
    assert other["significant"] == (other["ci_low"] > 0 or other["ci_high"] < 0)
    best = write_outputs(table, tmp_path / "out", axes)
    winner = configurations["overall_mean"].idxmax()
    loser = "base" if winner != "base" else "lambda_inter=0.3"
    assert best["changed"] == winner and best["n"] == 2
    runner = best["runner_up"]
    assert runner["changed"] == loser
    assert runner["delta"] == pytest.approx(configurations.loc[winner, "overall_mean"]
                                            - configurations.loc[loser, "overall_mean"], abs=1e-9)
    assert runner["significantly_better"] == (runner["ci_low"] > 0)
    written = pd.read_csv(tmp_path / "out" / "configurations.csv")
    assert len(written) == 2 and {"overall_mean", "overall_std", "ci_low", "ci_high",
                                  "p_value", "significant"} <= set(written.columns)
