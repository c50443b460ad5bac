"""`model.on_nonfinite_loss=skip`: the cap on consecutive skips and the counts in checkpoints."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from helpers import build_module_and_batch, compose_task

from region_sam3.lit.module import NONFINITE_KEY, NonFiniteLossError, RegionSam3Module


class _NaNAt(torch.nn.Module):
    """Wraps the criterion: `loss_dice` is NaN at the training steps in `bad` (None: always)."""

    def __init__(self, inner: torch.nn.Module, bad: set[int] | None = None) -> None:
        super().__init__()
        self.inner, self.bad, self.calls = inner, bad, 0

    def forward(self, outputs, targets):
        losses = self.inner(outputs, targets)
        if self.bad is None or self.calls in self.bad:
            losses["loss_dice"] = losses["loss_dice"] * float("nan")
            losses["total"] = losses["total"] + losses["loss_dice"]
        self.calls += 1
        return losses


def _setup(tmp_path, data_dir, cap, bad=None):
    cfg = compose_task("train", tmp_path, data_dir, [
        "~experiment", "model/sam3=tiny", "data.augmentation=null",
        "model.on_nonfinite_loss=skip", f"model.max_consecutive_nonfinite_skips={cap}"])
    module, batch = build_module_and_batch(cfg)
    module.criterion = _NaNAt(module.criterion, bad)
    module.configure_optimizers = lambda: torch.optim.SGD(
        [p for p in module.parameters() if p.requires_grad], lr=1.0)
    loader = torch.utils.data.DataLoader([batch] * 8, batch_size=None, collate_fn=lambda b: b)
    return module, loader


def _trainer(max_steps: int) -> L.Trainer:
    return L.Trainer(accelerator="cpu", max_steps=max_steps, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False)


def test_config_default_and_validation(tmp_path, synthetic_data_dir):
    cfg = compose_task("train", tmp_path, synthetic_data_dir, [])
    assert cfg.model.max_consecutive_nonfinite_skips == 10
    with pytest.raises(Exception, match="max_consecutive_nonfinite_skips=-1"):
        _setup(tmp_path, synthetic_data_dir, cap=-1)


def test_a_loss_that_stays_nan_stops_after_the_cap(tmp_path, synthetic_data_dir):
    module, loader = _setup(tmp_path, synthetic_data_dir, cap=2)
    with pytest.raises(NonFiniteLossError, match=r"global step 2 .*loss_dice.*3 consecutive "
                       r"non-finite steps exceed model.max_consecutive_nonfinite_skips=2"):
        _trainer(max_steps=6).fit(module, train_dataloaders=loader)
    assert module._nonfinite.total == 3


def test_a_finite_step_resets_the_streak(tmp_path, synthetic_data_dir):
    module, loader = _setup(tmp_path, synthetic_data_dir, cap=2, bad={0, 1, 3, 4})
    trainer = _trainer(max_steps=5)
    trainer.fit(module, train_dataloaders=loader)  # 2 bad, 1 good, 2 bad: never 3 in a row
    assert trainer.global_step == 5
    assert (module._nonfinite.total, module._nonfinite.consecutive) == (4, 2)
    assert trainer.callback_metrics["train/nonfinite_skips"] == 4.0


def test_skip_counts_survive_checkpoint_and_resume(tmp_path, synthetic_data_dir):
    """Resume from a checkpoint continues both counts: the total (`train/nonfinite_skips`)
    and the streak (a run resumed mid-streak still stops after the cap)."""
    module, loader = _setup(tmp_path, synthetic_data_dir, cap=3)
    trainer = _trainer(max_steps=2)
    trainer.fit(module, train_dataloaders=loader)
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    assert checkpoint[NONFINITE_KEY] == {"total": 2, "consecutive": 2}

    loaded = RegionSam3Module.load_from_checkpoint(path, weights_only=False)
    assert (loaded._nonfinite.total, loaded._nonfinite.consecutive) == (2, 2)
    assert loaded._nonfinite.cap == 3  # from the checkpoint's hyper-parameters

    resumed, loader = _setup(tmp_path, synthetic_data_dir, cap=3)
    trainer = _trainer(max_steps=6)
    with pytest.raises(NonFiniteLossError, match=r"global step 3 .*4 consecutive.*4 skipped"):
        trainer.fit(resumed, train_dataloaders=loader, ckpt_path=path, weights_only=False)
    assert trainer.callback_metrics["train/nonfinite_skips"] == 3.0  # step 2 logged 2 + 1


def test_checkpoint_without_counts_loads_with_zero(tmp_path, synthetic_data_dir):
    module, _ = _setup(tmp_path, synthetic_data_dir, cap=3)
    module._nonfinite.total, module._nonfinite.consecutive = 5, 1
    old = {"state_dict": {}}  # written before the counts were saved
    module.on_load_checkpoint(old)
    assert (module._nonfinite.total, module._nonfinite.consecutive) == (0, 0)
