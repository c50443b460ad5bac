"""Lightning's common Trainer arguments work as Lightning users type them (issue 19 item 6)."""

from __future__ import annotations

import hydra
import pytest

from tests.helpers import compose_task

KNOBS = {
    "max_steps": 7,
    "accumulate_grad_batches": 4,
    "val_check_interval": 3,
    "limit_train_batches": 5,
    "limit_val_batches": 2,
    "max_time": "00:01:00:00",
}


def test_trainer_knobs_compose_without_plus(tmp_path):
    overrides = [f"trainer.{key}={value}" for key, value in KNOBS.items()]
    cfg = compose_task("train", tmp_path / "out", tmp_path / "data", overrides)
    for key, value in KNOBS.items():
        assert cfg.trainer[key] == value, key


def test_trainer_knobs_reach_the_trainer(tmp_path):
    cfg = compose_task("train", tmp_path / "out", tmp_path / "data",
                       ["trainer.max_steps=7", "trainer.accumulate_grad_batches=4",
                        "trainer.val_check_interval=3", "trainer.limit_train_batches=5"])
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert trainer.max_steps == 7
    assert trainer.accumulate_grad_batches == 4
    assert trainer.val_check_interval == 3
    assert trainer.limit_train_batches == 5


def test_unknown_trainer_key_is_still_rejected(tmp_path):
    from hydra.errors import ConfigCompositionException as HydraCompositionError

    with pytest.raises(HydraCompositionError, match="max_stepz"):
        compose_task("train", tmp_path / "out", tmp_path / "data", ["trainer.max_stepz=7"])
