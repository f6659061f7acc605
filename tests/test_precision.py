"""Mixed precision is for CUDA: on a CPU every verb and training refuse bf16 and fp16 with a
message that names the option, before any work and without writing anything; fp32 stays the
default and changes nothing; `bench gpu` without CUDA says it skipped and exits 0."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from uniseg3d.benchmarks import gpu_bench
from uniseg3d.cli import build_parser, main
from uniseg3d.config import ConfigError, Params
from uniseg3d.model.precision import (PrecisionError, autocast, check_precision, grad_scaler,
                                      set_precision)
from uniseg3d.pipelines.train import load_trained_model, train


def test_only_fp32_runs_on_a_cpu():
    assert check_precision("fp32", "cpu") == "fp32"
    for precision in ("bf16", "fp16"):
        with pytest.raises(PrecisionError, match=f"train.precision {precision}: mixed "
                           "precision runs on a CUDA device only; on cpu use fp32"):
            check_precision(precision, "cpu", "train.precision")
    with pytest.raises(PrecisionError, match="expected one of fp32, bf16, fp16"):
        check_precision("fp8", "cuda")
    assert not grad_scaler("fp32", "cpu").is_enabled()
    assert not grad_scaler("bf16", "cuda").is_enabled()  # bf16 needs no loss scaling


@pytest.mark.parametrize("verb", ["predict", "serve", "evaluate"])
def test_the_verbs_refuse_half_precision_on_a_cpu(verb, trained_scan, tmp_path, caplog):
    mesh, checkpoint = trained_scan
    arguments = {"predict": ["predict", str(mesh), "--checkpoint", str(checkpoint), "--out",
                             str(tmp_path / "out")],
                 "serve": ["serve", str(mesh), "--checkpoint", str(checkpoint)],
                 "evaluate": ["evaluate"]}[verb]
    assert main([*arguments, "--precision", "bf16"]) == 2
    assert "--precision bf16: mixed precision runs on a CUDA device only" in caplog.text
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):
        build_parser().parse_args([*arguments, "--precision", "fp8"])


def test_fp32_is_the_default_and_changes_nothing(trained_scan):
    mesh, checkpoint = trained_scan
    model, _, _ = load_trained_model(checkpoint)
    assert model.backbone.precision == "fp32"
    coords = torch.rand(500, 3) * 2
    inputs = ([coords], [torch.rand(500, 3) * 255], [torch.arange(500) % 7])
    with torch.no_grad():
        before = model.backbone(*inputs)[0]
        set_precision(model, "fp32", "cpu")
        with autocast("fp32", "cpu"):
            after = model.backbone(*inputs)[0]
    assert after.dtype == torch.float32
    np.testing.assert_array_equal(before.numpy(), after.numpy())
    with pytest.raises(PrecisionError):
        set_precision(model, "fp16", "cpu")
    assert model.backbone.precision == "fp32"


def test_training_refuses_half_precision_on_a_cpu_before_it_starts(tmp_path):
    params = Params()
    with pytest.raises(ConfigError, match="train.precision: expected one of"):
        dataclasses.replace(params.train, precision="fp8")
    params = dataclasses.replace(params, train=dataclasses.replace(
        params.train, precision="fp16", out=str(tmp_path / "run")))
    with pytest.raises(PrecisionError, match="train.precision fp16: mixed precision runs on a "
                       "CUDA device only; on cpu use fp32"):
        train(params, train_scenes=[], progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_the_train_command_refuses_half_precision_without_gpus(tmp_path, caplog):
    params = tmp_path / "params.yaml"
    text = Path("params.yaml").read_text().replace("  precision: fp32", "  precision: bf16", 1)
    params.write_text(text)
    assert main(["train", "--params", str(params)]) == 2
    assert "train.precision bf16: mixed precision runs on a CUDA device only" in caplog.text


def test_bench_gpu_reports_a_failed_figure_and_measures_the_rest(tmp_path, monkeypatch, caplog):
    """On a GPU machine a figure that raises (here spconv without a kernel for the card, then
    the rooms' generation) is reported with its exception, the figures after it still run, the
    ones that need the failed rooms do not, and the command exits 1 with its JSON written."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_bench, "versions", lambda: {"device": "a card"})

    def no_kernel(*args):
        raise RuntimeError("CUDA error: no kernel image is available for execution")

    ran = []
    monkeypatch.setattr(gpu_bench, "spconv_agreement", no_kernel)
    monkeypatch.setattr(gpu_bench, "step_per_precision",
                        lambda *args: ran.append("step") or [{"precision": "fp32"}])
    monkeypatch.setattr(gpu_bench, "latencies", lambda *args: ran.append("latency") or [])
    monkeypatch.setattr(gpu_bench, "generated_dataset", no_kernel)
    monkeypatch.setattr(gpu_bench, "ray_gpu_epoch", lambda data: ran.append("ray"))
    monkeypatch.setattr(gpu_bench, "data_wait", lambda data, workers: ran.append("wait"))
    out = tmp_path / "gpu.json"
    assert main(["bench", "gpu", "--out", str(out)]) == 1
    result = json.loads(out.read_text())
    failure = "RuntimeError: CUDA error: no kernel image is available for execution"
    assert result["errors"] == {"spconv_gpu_vs_cpu_native": failure, "generated_rooms": failure}
    assert ran == ["step", "latency"]
    assert result["training_step"] == [{"precision": "fp32"}] and result["latency"] == []
    assert not {"spconv_gpu_vs_cpu_native", "ray_train_gpu_epoch", "data_wait"} & set(result)
    assert "2 figure(s) failed: spconv_gpu_vs_cpu_native, generated_rooms" in caplog.text


def test_bench_gpu_without_cuda_says_skipped_and_exits_0(tmp_path, caplog):
    assert not torch.cuda.is_available()  # this machine, CI's: the skipped path
    out = tmp_path / "gpu.json"
    assert main(["bench", "gpu", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "gpu" and "no CUDA device" in result["skipped"]
    assert "bench gpu skipped" in caplog.text
