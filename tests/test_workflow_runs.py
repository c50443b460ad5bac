"""`region_sam3.workflow.runs`: the notebooks' in-process training helpers."""

from __future__ import annotations

from region_sam3.workflow.runs import quick_distilled


def test_quick_distilled_runs_the_requested_number_of_steps(tmp_path, synthetic_data_dir):
    """`steps` optimizer steps even when they span several epochs. Regression: with
    `max_epochs=1` + `limit_train_batches=steps`, `steps=60` on the notebooks' 16-image split
    trained 8 steps (one epoch of batch size 2)."""
    small = ["data.synthetic.splits.train.num_images=2", "data.synthetic.splits.val.num_images=2",
             "data.batch_size=1"]  # an epoch is 2 batches
    objects = quick_distilled(tmp_path / "run", synthetic_data_dir, steps=5, extra=small)
    assert objects["trainer"].num_training_batches == 2
    assert objects["trainer"].global_step == 5
