"""A finite loss with a non-finite gradient (`lit/nonfinite.GradientGuard`, issue 19 item 4).

Before: gradients were never checked; norm clipping turned one Inf into NaN in every gradient
and the optimizer wrote NaN into every trainable weight.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from helpers import build_module_and_batch, compose_task
from torch import nn

from region_sam3.lit.nonfinite import (
    GradientGuard,
    NonFiniteGradientError,
    NonFiniteLossError,
    check_losses,
)

INF = float("inf")


def test_fused_adamw_skips_the_step_on_the_device_flag_even_after_clipping():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1, fused=True)
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()  # a normal step fills the moments
    before = [p.detach().clone() for p in model.parameters()]
    optimizer.zero_grad()
    model(torch.randn(3, 4)).sum().backward()
    model.weight.grad[0, 0] = INF
    guard = GradientGuard()
    assert guard.check(optimizer, step=1, names={id(model.weight): "weight"}) is None  # pending
    nn.utils.clip_grad_norm_(model.parameters(), 0.1)  # every gradient is NaN now
    optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert {int(s["step"]) for s in optimizer.state.values()} == {1}  # rolled back
    check = check_losses({"total": torch.tensor(1.0)}, pending_gradient=guard.take_pending())
    assert check.gradient_bad is True and not check.bad
    assert "global step 1" in guard.describe() and "weight=inf" in guard.describe()
    assert guard.take_pending() is None  # read once


def test_a_finite_gradient_passes_and_the_next_step_moves():
    model = nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)
    model(torch.randn(3, 4)).sum().backward()
    guard = GradientGuard()
    assert guard.check(optimizer, step=0) is None
    before = model.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, model.weight)
    assert check_losses({"total": torch.tensor(1.0)},
                        pending_gradient=guard.take_pending()).gradient_bad is False


class _InfGradAt:
    """Gradient hook on one parameter: Inf at the training steps in `bad`; finite loss."""

    def __init__(self, bad: set[int]) -> None:
        self.bad, self.calls = bad, 0

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        step, self.calls = self.calls, self.calls + 1
        return grad + INF if step in self.bad else grad


class _Weights(L.Callback):
    def __init__(self) -> None:
        self.history: list[list[torch.Tensor]] = []

    def on_train_batch_end(self, trainer, module, *args) -> None:
        self.history.append([p.detach().clone() for p in module.parameters() if p.requires_grad])


def _fit(tmp_path, data_dir, policy, bad, steps, sgd=False):
    cfg = compose_task("train", tmp_path, data_dir, [
        "~experiment", "model/sam3=tiny", "data.augmentation=null",
        f"model.on_nonfinite_loss={policy}", "model.max_consecutive_nonfinite_skips=3"])
    module, batch = build_module_and_batch(cfg)
    if sgd:  # not fused: the guard reads its flag at once and drops the gradients
        module.configure_optimizers = lambda: torch.optim.SGD(
            [p for p in module.parameters() if p.requires_grad], lr=0.1)
    name, param = next((n, p) for n, p in module.named_parameters() if p.requires_grad)
    param.register_hook(_InfGradAt(bad))
    weights = _Weights()
    start = [p.detach().clone() for p in module.parameters() if p.requires_grad]
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, gradient_clip_val=0.1, callbacks=[weights])
    loader = torch.utils.data.DataLoader([batch] * 8, batch_size=None, collate_fn=lambda b: b)
    return module, trainer, loader, weights, [start, *weights.history], name


@pytest.mark.parametrize("sgd", [False, True], ids=["fused-adamw", "sgd"])
def test_skip_leaves_the_weights_unchanged_and_finite(tmp_path, synthetic_data_dir, sgd):
    module, trainer, loader, weights, _, _ = _fit(tmp_path, synthetic_data_dir, "skip", {1}, 4,
                                                 sgd=sgd)
    start = [p.detach().clone() for p in module.parameters() if p.requires_grad]
    trainer.fit(module, train_dataloaders=loader)
    history = [start, *weights.history]
    assert trainer.global_step == 4
    for step in range(4):
        moved = any(not torch.equal(a, b) for a, b in zip(history[step], history[step + 1]))
        assert moved == (step != 1), step
    assert all(torch.isfinite(p).all() for p in history[-1])
    assert (module._nonfinite.total, module._nonfinite.consecutive) == (1, 0)
    assert trainer.callback_metrics["train/nonfinite_skips"] == 1.0


def test_stop_raises_naming_the_step_and_the_parameter(tmp_path, synthetic_data_dir):
    module, trainer, loader, weights, _, name = _fit(tmp_path, synthetic_data_dir, "stop", {1}, 4)
    with pytest.raises(NonFiniteGradientError,
                       match=rf"non-finite gradient at global step 1 .*{name}=(inf|nan)"):
        trainer.fit(module, train_dataloaders=loader)
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_stop_on_the_last_step_is_read_at_the_end_of_fit(tmp_path, synthetic_data_dir):
    module, trainer, loader, _, _, _ = _fit(tmp_path, synthetic_data_dir, "stop", {2}, 3)
    with pytest.raises(NonFiniteGradientError, match="global step 2"):
        trainer.fit(module, train_dataloaders=loader)


def test_gradients_that_stay_inf_hit_the_cap(tmp_path, synthetic_data_dir):
    module, trainer, loader, _, _, _ = _fit(tmp_path, synthetic_data_dir, "skip",
                                            set(range(8)), 8)
    with pytest.raises(NonFiniteLossError, match="4 consecutive non-finite steps exceed"):
        trainer.fit(module, train_dataloaders=loader)
    assert all(torch.isfinite(p).all() for p in module.parameters())
