"""The training DataLoader resumes mid-epoch exactly.

Lightning restarts a plain DataLoader's epoch from its first batch when a run resumes from a
mid-epoch checkpoint (a signal, `last.ckpt` every 30 minutes), so the resumed run would see other
batches than an uninterrupted one. Here an `EpochCursor` shared by the datamodule and its
training loader records the shuffling generator's state at the start of the epoch and the batches
training has *consumed* (counted where the loop moves a batch to the device, so the batch
Lightning prefetches is not counted). On resume the loader restores that state (same permutation,
same worker seeds) and fast-forwards the consumed batches: they are loaded and dropped, each rank
its own, so any sampler (`DistributedSampler` included) stays right; exactness is preferred to a
faster index skip. With data-loader workers (`data.num_workers >= 1`, the real setting) random
augmentations draw from the workers' seeded RNGs and the resume is exact; with `num_workers=0`
they share the main process's RNG with the model, and the batches after a mid-epoch resume get
other augmentation draws than an uninterrupted run (same images, same order).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader


@dataclass
class EpochCursor:
    """Where training is inside the current epoch (the datamodule checkpoints it)."""

    epoch_start: torch.Tensor | None = None   # generator state before this epoch's draws
    consumed: int = 0                         # batches training took this epoch
    pending_skip: int = 0                     # set by a resume: batches to fast-forward


class ResumableDataLoader(DataLoader):
    """`DataLoader` whose iteration follows an `EpochCursor` (module docstring).

    It also has `state_dict` / `load_state_dict` (empty: the state is the datamodule's), which
    tells Lightning the loader resumes by itself.
    """

    def __init__(self, *args: Any, cursor: EpochCursor | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cursor = cursor if cursor is not None else EpochCursor()

    def __iter__(self) -> Iterator:
        cursor, skip = self.cursor, self.cursor.pending_skip
        cursor.pending_skip = 0
        if skip and self.generator is not None and cursor.epoch_start is not None:
            self.generator.set_state(cursor.epoch_start)
        cursor.epoch_start = self.generator.get_state() if self.generator is not None else None
        inner = super().__iter__()
        # The dropped batches were drawn before the checkpoint's RNG snapshot: loading them
        # again (in-process augmentations, num_workers=0) must not move the main RNG.
        with torch.random.fork_rng(devices=[]):
            for _ in range(skip):
                next(inner)
        cursor.consumed = skip
        return inner

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass
