"""LightningModule behaviour: overfitting one batch, non-finite losses, optimiser groups."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from helpers import build_module_and_batch, compose_task

from region_sam3.lit.module import NonFiniteLossError


def _module_and_batch(tmp_path, data_dir, overrides=()):
    cfg = compose_task("train", tmp_path, data_dir,
                       ["~experiment", "model/sam3=tiny", "data.augmentation=null", *overrides])
    return build_module_and_batch(cfg)


def test_overfit_one_batch_halves_the_loss(tmp_path, synthetic_data_dir):
    module, batch = _module_and_batch(tmp_path, synthetic_data_dir,
                                      ["model.sam3.freeze=[backbone.*]"])
    module.train()
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-3)
    torch.manual_seed(0)
    losses = []
    for _ in range(40):
        total = module._losses(batch)["total"]
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(float(total))
    assert losses[-1] <= 0.5 * losses[0], losses[::5]


class _NaNCriterion(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, outputs, targets):
        losses = self.inner(outputs, targets)
        losses["loss_dice"] = losses["loss_dice"] * float("nan")
        losses["total"] = losses["total"] + losses["loss_dice"]
        return losses


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_nonfinite_loss_is_reported_with_step_and_term(policy, tmp_path, synthetic_data_dir):
    module, batch = _module_and_batch(tmp_path, synthetic_data_dir,
                                      [f"model.on_nonfinite_loss={policy}"])
    module.criterion = _NaNCriterion(module.criterion)
    before = {k: v.clone() for k, v in module.net.state_dict().items()}
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    loader = torch.utils.data.DataLoader([batch, batch], batch_size=None, collate_fn=lambda b: b)
    module.configure_optimizers = lambda: torch.optim.SGD(
        [p for p in module.parameters() if p.requires_grad], lr=1.0)
    if policy == "stop":
        with pytest.raises(NonFiniteLossError, match=r"global step 0.*loss_dice"):
            trainer.fit(module, train_dataloaders=loader)
    else:
        trainer.fit(module, train_dataloaders=loader)
        after = module.net.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)  # every step was skipped


def test_optimizer_groups_follow_globs_and_exclude_frozen(tmp_path, synthetic_data_dir):
    from region_sam3.lit.optim import build_param_groups

    module, _ = _module_and_batch(tmp_path, synthetic_data_dir, ["model.sam3.freeze=[backbone.vision_backbone.*]"])
    groups = build_param_groups(module.net, lr=1e-4, weight_decay=0.1, groups=[
        {"name": "text", "patterns": ["backbone.language_backbone.*"], "lr": 5e-6}])
    by_name = {g["name"]: g for g in groups}
    assert by_name["text"]["lr"] == 5e-6 and by_name["text_no_decay"]["weight_decay"] == 0.0
    in_groups = {id(p) for g in groups for p in g["params"]}
    for name, param in module.net.named_parameters():
        assert (id(param) in in_groups) == param.requires_grad, name
