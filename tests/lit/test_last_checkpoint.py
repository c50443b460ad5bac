"""`last.ckpt` between validations (`checkpoint.last_every_n_steps` / `last_every_minutes`)."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from unittest import mock

import pytest
import torch
from helpers import RecordLastCheckpointStep, compose_task

from region_sam3.lit.last_checkpoint import PeriodicLastCheckpoint
from region_sam3.lit.resume import resolve_ckpt_path
from region_sam3.tasks import train_task


def test_last_ckpt_written_mid_epoch_every_n_steps(tmp_path, synthetic_data_dir):
    run = tmp_path / "run"
    RecordLastCheckpointStep.seen = []
    cfg = compose_task("train", run, synthetic_data_dir, [
        "model/sam3=tiny", "logger=csv", "test=false", "trainer.max_epochs=1",
        "trainer.limit_train_batches=4", "trainer.limit_val_batches=0",
        "callbacks.model_checkpoint.monitor=null", "~callbacks.metrics_plot", "seed=7",
        "checkpoint.last_every_n_steps=2", "checkpoint.last_every_minutes=null",
        "+callbacks.record._target_=helpers.RecordLastCheckpointStep",
        f"+callbacks.record.dirpath={run / 'checkpoints'}"])
    _, objects = train_task(cfg)
    # before batches 0..3: nothing, nothing, step 2, step 2 (no validation ran)
    assert RecordLastCheckpointStep.seen == [None, None, 2, 2]
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 4  # and at the epoch's end
    assert resolve_ckpt_path("last", run / "checkpoints") == last
    assert not list((run / "checkpoints").glob("last-v*.ckpt"))  # one last.ckpt, two writers
    periodic = [c for c in objects["trainer"].callbacks if isinstance(c, PeriodicLastCheckpoint)]
    assert len(periodic) == 1
    assert objects["trainer"].checkpoint_callback is not periodic[0]  # best-on-val stays first


def test_exactly_one_interval():
    with pytest.raises(ValueError, match="set exactly one"):
        PeriodicLastCheckpoint("ckpts", every_minutes=None, every_n_steps=None)
    with pytest.raises(ValueError, match="set exactly one"):
        PeriodicLastCheckpoint("ckpts", every_minutes=5.0, every_n_steps=10)
    with pytest.raises(ValueError, match="last_every_minutes"):
        PeriodicLastCheckpoint("ckpts", every_minutes=0.0)
    callback = PeriodicLastCheckpoint("ckpts", every_minutes=30.0)
    assert callback._train_time_interval == timedelta(minutes=30)


def test_clock_broadcast_only_every_check_interval():
    """Lightning broadcasts rank 0's time decision at every step; here once per 50 steps."""
    callback = PeriodicLastCheckpoint("ckpts", every_minutes=30.0, check_every_n_steps=50)
    callback._last_time_checked = 0.0
    module = SimpleNamespace(automatic_optimization=True)
    broadcasts = []
    for step in range(1, 101):
        trainer = mock.MagicMock(global_step=step)
        trainer.strategy.broadcast.side_effect = lambda obj, s=step: broadcasts.append(s) or True
        callback.on_train_batch_end(trainer, module, None, None, step)
    assert broadcasts == [50, 100]
