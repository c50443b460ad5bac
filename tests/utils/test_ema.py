"""`callbacks=ema`: EMA of the trainable weights, evaluated and checkpointed (issue 20 item 6)."""

from __future__ import annotations

import lightning as L
import torch
from helpers import build_module_and_batch, compose_task

from region_sam3.utils.ema import TrainableEMAWeightAveraging
from region_sam3.utils.instantiate import instantiate_callbacks

DECAY = 0.5


class _Record(L.Callback):
    """Trainable weights after each step, and those the validation loop sees."""

    def __init__(self, path=None) -> None:
        self.path = path
        self.steps: list[dict[str, torch.Tensor]] = []
        self.in_validation: list[dict[str, torch.Tensor]] = []

    @staticmethod
    def _trainable(module) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}

    def on_train_batch_end(self, trainer, module, *args) -> None:
        self.steps.append(self._trainable(module))
        if self.path is not None and trainer.global_step == 3:  # mid-fit, as ModelCheckpoint
            trainer.save_checkpoint(self.path)

    def on_validation_batch_start(self, trainer, module, *args) -> None:
        self.in_validation.append(self._trainable(module))


def test_config_group_adds_the_callback(tmp_path, synthetic_data_dir):
    cfg = compose_task("train", tmp_path, synthetic_data_dir, ["callbacks=ema"])
    callbacks = instantiate_callbacks(cfg.callbacks)
    assert any(isinstance(c, TrainableEMAWeightAveraging) for c in callbacks)
    assert any(isinstance(c, L.pytorch.callbacks.ModelCheckpoint) for c in callbacks)


def test_ema_of_trainable_weights_is_validated_and_checkpointed(tmp_path, synthetic_data_dir):
    cfg = compose_task("train", tmp_path, synthetic_data_dir, [
        "~experiment", "model/sam3=tiny", "data.augmentation=null"])
    module, batch = build_module_and_batch(cfg)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in module.named_parameters() if not p.requires_grad}
    assert frozen and trainable
    path = tmp_path / "ema.ckpt"
    ema, record = TrainableEMAWeightAveraging(decay=DECAY), _Record(path)
    module.validation_step = lambda *a, **k: None  # the swap is what is checked here
    module.on_validation_epoch_end = lambda: None
    loader = torch.utils.data.DataLoader([batch] * 3, batch_size=None, collate_fn=lambda b: b)
    trainer = L.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[ema, record], limit_val_batches=1, val_check_interval=3,
                        num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader)
    # Only the trainable tensors are averaged (not the frozen base, not the teacher).
    averaged_numel = sum(p.numel() for p in ema._average_model.module.parameters())
    assert averaged_numel == sum(p.numel() for n, p in module.named_parameters() if n in trainable)
    expected = dict(record.steps[0])  # AveragedModel: the first update copies, then EMA
    for weights in record.steps[1:]:
        expected = {n: DECAY * expected[n] + (1 - DECAY) * weights[n] for n in expected}
    for name in trainable:
        torch.testing.assert_close(ema.averaged()[name], expected[name])
        torch.testing.assert_close(record.in_validation[0][name], expected[name])  # swapped in
    assert len(record.in_validation) == 1
    live = record.steps[-1]
    assert any(not torch.equal(live[n], expected[n]) for n in trainable)

    checkpoint = torch.load(path, weights_only=False)
    for name in trainable:  # eval.py / load_from_checkpoint read `state_dict`: the average
        torch.testing.assert_close(checkpoint["state_dict"][name], expected[name])
        assert torch.equal(checkpoint["current_model_state"][name], live[name])
    assert set(checkpoint["current_model_state"]) == trainable
    for name, value in frozen.items():
        assert torch.equal(checkpoint["state_dict"][name], value)
    assert int(checkpoint["averaging_state"]["n_averaged"]) == 3
    for name in trainable:  # end of fit: Lightning leaves the average in the model
        torch.testing.assert_close(dict(module.named_parameters())[name].detach(), expected[name])


def test_resume_restores_live_weights_and_average(tmp_path, synthetic_data_dir):
    cfg = compose_task("train", tmp_path, synthetic_data_dir, [
        "~experiment", "model/sam3=tiny", "data.augmentation=null"])
    module, batch = build_module_and_batch(cfg)
    path = tmp_path / "ema.ckpt"
    loader = torch.utils.data.DataLoader([batch] * 3, batch_size=None, collate_fn=lambda b: b)

    def fit(module, steps, record, ckpt_path=None):
        ema = TrainableEMAWeightAveraging(decay=DECAY)
        L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False,
                  callbacks=[ema, record]).fit(module, train_dataloaders=loader,
                                               ckpt_path=ckpt_path, weights_only=False)
        return ema

    first = _Record(path)
    fit(module, 3, first)
    checkpoint = torch.load(path, weights_only=False)
    resumed_module, _ = build_module_and_batch(cfg)
    second = _Record()
    ema = fit(resumed_module, 4, second, ckpt_path=path)
    assert int(ema._average_model.n_averaged) == 4
    straight_module, _ = build_module_and_batch(cfg)
    straight = _Record()
    reference = fit(straight_module, 4, straight)
    # the resumed step started from the live weights (not the average) and the average went on
    for name in checkpoint["current_model_state"]:
        torch.testing.assert_close(second.steps[0][name], straight.steps[3][name])
        torch.testing.assert_close(ema.averaged()[name], reference.averaged()[name])
