"""A training run interrupted at an epoch, then resumed from its last checkpoint."""

from __future__ import annotations

import pytest

from uniseg3d.pipelines import train as train_module


def interrupted_then_resumed(monkeypatch, params, scenes, epoch: int):
    """Train per `params` until `epoch` starts (a KeyboardInterrupt there), then resume; the
    resumed run's `TrainResult`."""
    real_run_epoch = train_module.run_epoch

    def crash(*args, **kwargs):
        if args[7] == epoch:
            raise KeyboardInterrupt
        return real_run_epoch(*args, **kwargs)

    monkeypatch.setattr(train_module, "run_epoch", crash)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(params, train_scenes=scenes, progress=False)
    monkeypatch.setattr(train_module, "run_epoch", real_run_epoch)
    return train_module.train(params, resume=True, train_scenes=scenes, progress=False)
