"""The training DataLoader resumes mid-epoch exactly.

Lightning restarts a plain DataLoader's epoch from its first batch when a run resumes from a
mid-epoch checkpoint (a signal, `last.ckpt` every 30 minutes), so the resumed run would see other
batches than an uninterrupted one. Here an `EpochCursor` shared by the datamodule and its
training loader records the shuffling generator's state at the start of the epoch and the batches
training has *consumed* (counted where the loop moves a batch to the device, so the batch
Lightning prefetches is not counted). On resume the loader restores that state (same
permutation) and fast-forwards the consumed batches: they are loaded and dropped, each rank its
own, so any sampler wrapping (Lightning's `DistributedSamplerWrapper` included) stays right;
exactness is preferred to a faster index skip. Random augmentations are seeded per sample by
(seed, epoch draw, index) (`ResumableRandomSampler` + `FindQueryDataset`), so they do not depend
on which worker, or which worker RNG history, loads a sample: with or without data-loader
workers, the batches after a resume are the uninterrupted run's.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler


@dataclass
class EpochCursor:
    """Where training is inside the current epoch (the datamodule checkpoints it)."""

    epoch_start: torch.Tensor | None = None   # generator state before this epoch's draws
    consumed: int = 0                         # batches training took this epoch
    pending_skip: int = 0                     # set by a resume: batches to fast-forward
    draw: int = 0                             # permutations drawn so far (the sampler's epoch)
    draw_at_start: int = 0                    # `draw` when this epoch's permutation was drawn


class ResumableRandomSampler(Sampler[int]):
    """A random permutation per epoch from `generator`, yielding `draw * n + index`.

    The dataset decodes `divmod(item, n)` into (draw, index) and seeds the sample's random
    augmentations with (seed, draw, index) (`FindQueryDataset`): a sample's augmentation then
    depends on neither the worker that loads it nor that worker's RNG history, which a resumed
    run (fresh workers) could not reproduce.
    """

    def __init__(self, num_items: int, generator: torch.Generator, cursor: EpochCursor) -> None:
        self.num_items, self.generator, self.cursor = int(num_items), generator, cursor

    def __iter__(self) -> Iterator[int]:
        draw, self.cursor.draw = self.cursor.draw, self.cursor.draw + 1
        self.cursor.draw_at_start = draw
        offset = draw * self.num_items
        for index in torch.randperm(self.num_items, generator=self.generator).tolist():
            yield offset + index

    def __len__(self) -> int:
        return self.num_items


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
        generator = getattr(self.sampler, "generator", None)  # the permutation's generator
        if skip and generator is not None and cursor.epoch_start is not None:
            generator.set_state(cursor.epoch_start)
            cursor.draw = cursor.draw_at_start
        cursor.epoch_start = generator.get_state() if generator is not None else None
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
