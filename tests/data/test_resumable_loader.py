"""The training loader: per-sample seeded augmentations and an exact mid-epoch fast-forward."""

from __future__ import annotations

import hydra
import torch
from helpers import compose_task

from region_sam3.data.resumable_loader import EpochCursor, ResumableRandomSampler


def test_sampler_encodes_its_draw_and_restarts_from_a_saved_state():
    generator, cursor = torch.Generator().manual_seed(3), EpochCursor()
    sampler = ResumableRandomSampler(5, generator, cursor)
    start = generator.get_state()
    first, second = list(sampler), list(sampler)
    assert sorted(first) == [0, 1, 2, 3, 4] and sorted(second) == [5, 6, 7, 8, 9]
    assert cursor.draw == 2 and cursor.draw_at_start == 1
    generator.set_state(start)
    cursor.draw = 0
    assert list(sampler) == first  # the permutation is a function of the generator state


def _batches(data_dir, tmp_path, workers: int, state: dict | None = None, n: int = 3):
    cfg = compose_task("train", tmp_path, data_dir, [f"data.num_workers={workers}", "seed=5"])
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    if state is not None:
        datamodule.load_state_dict(state)
    loader = datamodule.train_dataloader()
    out = []
    for batch in loader:
        out.append(batch.images.clone())
        datamodule._cursor.consumed += 1  # what the training loop's batch transfer counts
        if len(out) == n:
            break
    cursor = datamodule._cursor
    # what `state_dict()` stores mid-epoch when a trainer is attached
    return out, {**datamodule.state_dict(), "epoch_start_generator": cursor.epoch_start,
                 "batches_consumed": cursor.consumed, "draw_at_start": cursor.draw_at_start}


def test_same_batches_with_or_without_workers_and_after_a_fast_forward(synthetic_data_dir,
                                                                       tmp_path):
    """Augmentations are seeded per sample: one worker gives the main process's batches, and a
    loader restored from a mid-epoch state continues with the uninterrupted batches."""
    reference, _ = _batches(synthetic_data_dir, tmp_path / "a", workers=0)
    with_worker, _ = _batches(synthetic_data_dir, tmp_path / "b", workers=1)
    assert all(torch.equal(a, b) for a, b in zip(reference, with_worker))
    first_two, state = _batches(synthetic_data_dir, tmp_path / "c", workers=0, n=2)
    assert state["batches_consumed"] == 2 and state["epoch_start_generator"] is not None
    (third,), _ = _batches(synthetic_data_dir, tmp_path / "d", workers=1, state=state, n=1)
    assert torch.equal(third, reference[2])
