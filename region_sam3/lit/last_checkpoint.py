"""`last.ckpt` every few minutes (or steps) of training, not only at each validation.

At official size an epoch of COCO is hours: a crash or preemption between two validations would
lose all of it. `PeriodicLastCheckpoint` is a second `ModelCheckpoint` next to the one that keeps
the best-on-val file; it writes only `last.ckpt` (`save_top_k=0`), so checkpoint selection on
`val` is unchanged. Both write the same `last.ckpt` (version counter off), so the file is always
the newest state, wherever it came from.

Lightning's own `train_time_interval` broadcasts rank 0's clock decision at *every* training
step (an object broadcast: a host sync per step under DDP). Here the clock is looked at only every
`check_every_n_steps` steps, so the broadcast happens once per that many steps.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint


class PeriodicLastCheckpoint(ModelCheckpoint):
    """Writes `<dirpath>/last.ckpt` every `every_minutes` of training (or `every_n_steps`).

    Args:
        dirpath: the run's checkpoints folder (where `ckpt_path=last | auto` looks).
        every_minutes: wall-clock minutes between saves; None: by steps only.
        every_n_steps: optimizer steps between saves; None: by time only. Exactly one of the two.
        check_every_n_steps: how often the clock is read (and, under DDP, rank 0's decision
            broadcast) when saving by time.
    """

    def __init__(self, dirpath: str, every_minutes: float | None = 30.0,
                 every_n_steps: int | None = None, check_every_n_steps: int = 50,
                 **kwargs: Any) -> None:
        if (every_minutes is None) == (every_n_steps is None):
            raise ValueError(
                "checkpoint.last_every_minutes / checkpoint.last_every_n_steps: set exactly one "
                f"(got {every_minutes!r} and {every_n_steps!r}); null both and drop "
                "callbacks.last_checkpoint to save last.ckpt only at validation")
        if every_minutes is not None and every_minutes <= 0:
            raise ValueError(f"checkpoint.last_every_minutes must be > 0, got {every_minutes!r}")
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"checkpoint.last_every_n_steps must be >= 1, got {every_n_steps!r}")
        if check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps must be >= 1, got {check_every_n_steps!r}")
        super().__init__(
            dirpath=dirpath, monitor=None, save_top_k=0, save_last=True,
            enable_version_counter=False, every_n_train_steps=every_n_steps,
            train_time_interval=(timedelta(minutes=every_minutes)
                                 if every_minutes is not None else None),
            **kwargs)
        self.check_every_n_steps = int(check_every_n_steps)

    @property
    def state_key(self) -> str:
        # Distinct from the best-on-val ModelCheckpoint's key, stable across relaunches.
        return self._generate_state_key(
            every_n_train_steps=self._every_n_train_steps,
            train_time_interval=self._train_time_interval, kind="periodic_last")

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._train_time_interval is not None and \
                trainer.global_step % self.check_every_n_steps != 0:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
