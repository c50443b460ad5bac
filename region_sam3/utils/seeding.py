"""Reproducibility switches shared by train.py and eval.py."""

from __future__ import annotations

import lightning as L


def seed_everything(seed: int | None) -> None:
    """Seed Python/NumPy/torch and the data-loader workers for a reproducible run.

    On CPU this alone makes two runs with the same seed bit-identical (tested in
    `tests/lit/test_resume.py`); on GPU set `trainer.deterministic=true` as well.
    """
    if seed is not None:
        L.seed_everything(seed, workers=True)
