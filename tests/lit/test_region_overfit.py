"""The closed loop improves a frozen SAM3's masks: on one batch, after the same number of steps,
the T=2 head's final-iteration mask loss is below the T=0 head's (which, with SAM3 frozen as in
`experiment=region_head`, is SAM3's own mask loss)."""

from __future__ import annotations

import torch
from helpers import build_module_and_batch, compose_task


def _final_dice(tmp_path, data_dir, num_iters: int, steps: int = 25) -> float:
    cfg = compose_task("train", tmp_path, data_dir, [
        "experiment=region_head", "model/sam3=tiny", "model.sam3.checkpoint=null",
        "model.sam3.strict=false", f"model.region_head.num_iters={num_iters}",
        "data.augmentation=null"])
    module, batch = build_module_and_batch(cfg)
    module.train()
    params = [p for p in module.parameters() if p.requires_grad]
    if num_iters > 0:
        optimizer = torch.optim.AdamW(params, lr=1e-3)
        for _ in range(steps):
            losses = module._losses(batch)
            optimizer.zero_grad()
            losses["total"].backward()
            optimizer.step()
    torch.manual_seed(1)  # same sampled points for both heads
    with torch.no_grad():
        final = module._losses(batch)
    return float(final[f"loss_dice_iter{num_iters}"])


def test_t2_final_iteration_beats_t0_on_frozen_sam3(tmp_path, synthetic_data_dir):
    dice_t0 = _final_dice(tmp_path, synthetic_data_dir, 0)
    dice_t2 = _final_dice(tmp_path, synthetic_data_dir, 2)
    assert dice_t2 < dice_t0, (dice_t2, dice_t0)
