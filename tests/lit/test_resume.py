"""Interrupted-then-resumed training ends with exactly the weights of an uninterrupted run."""

from __future__ import annotations

import torch
from helpers import compose_task

from region_sam3.tasks import train_task

COMMON = ["model/sam3=tiny", "logger=csv", "test=false", "trainer.limit_train_batches=2",
          "trainer.limit_val_batches=0", "callbacks.model_checkpoint.monitor=null",
          "~callbacks.metrics_plot", "seed=7"]


def _weights(objects) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in objects["model"].net.state_dict().items()}


def test_resume_matches_uninterrupted(tmp_path, synthetic_data_dir):
    _, full = train_task(compose_task("train", tmp_path / "full", synthetic_data_dir,
                                      [*COMMON, "trainer.max_epochs=2"]))
    reference = _weights(full)
    first = tmp_path / "first"
    train_task(compose_task("train", first, synthetic_data_dir,
                            [*COMMON, "trainer.max_epochs=2", "+callbacks.stop._target_=helpers.StopAfterEpochs"]))
    assert torch.load(first / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2
    _, resumed = train_task(compose_task(
        "train", tmp_path / "resumed", synthetic_data_dir,
        [*COMMON, "trainer.max_epochs=2", f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}"]))
    assert resumed["trainer"].global_step == full["trainer"].global_step == 4
    after = _weights(resumed)
    changed = [k for k in reference if not torch.equal(reference[k], after[k])]
    assert not changed, changed[:5]
    # and the run did train: the trainable weights moved away from initialisation
    untrained = _weights(train_task(compose_task(
        "train", tmp_path / "zero", synthetic_data_dir,
        [*COMMON, "train=false"]))[1])
    assert any(not torch.equal(untrained[k], reference[k]) for k in reference)
