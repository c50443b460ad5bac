"""Reproducibility switches shared by train.py and eval.py."""

from __future__ import annotations

import lightning as L
import torch


def seed_everything(seed: int | None, deterministic_cpu: bool = True) -> None:
    """Seed Python/NumPy/torch (and data-loader workers) for a reproducible run."""
    if seed is None:
        return
    L.seed_everything(seed, workers=True)
    if deterministic_cpu and not torch.cuda.is_available():
        torch.use_deterministic_algorithms(True, warn_only=True)
