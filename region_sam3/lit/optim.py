"""AdamW parameter groups by name globs and warmup + cosine / inverse-sqrt schedules."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

_NO_DECAY_DEFAULT = ("*.bias", "*norm*.weight", "*.ln_*", "*embed*", "*query_embed*", "*.pos_embed")


def build_param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    groups: Sequence[Mapping[str, Any]] = (),
    no_decay: Sequence[str] = _NO_DECAY_DEFAULT,
) -> list[dict[str, Any]]:
    """Split the trainable parameters of `model` into AdamW groups.

    Args:
        groups: ordered `{name, patterns: [glob, ...], lr?, weight_decay?}`; a parameter goes
            to the first group whose pattern matches its name, otherwise to `default`.
        no_decay: globs whose parameters get weight decay 0 (biases, norms, embeddings).

    Returns:
        torch optimizer groups, each with a `name` (used by the LR monitor) and no empty group.
    """
    specs = [dict(g) for g in groups] + [{"name": "default", "patterns": ["*"]}]
    buckets: dict[tuple[str, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        spec = next(s for s in specs if any(fnmatch.fnmatchcase(name, p) for p in s["patterns"]))
        decay = not any(fnmatch.fnmatchcase(name, p) for p in no_decay)
        key = (spec["name"], decay)
        if key not in buckets:
            buckets[key] = {
                "name": spec["name"] if decay else f"{spec['name']}_no_decay",
                "params": [],
                "lr": float(spec.get("lr", lr)),
                "weight_decay": float(spec.get("weight_decay", weight_decay)) if decay else 0.0,
            }
        buckets[key]["params"].append(param)
    if not buckets:
        raise ValueError("No trainable parameters: check model.sam3.freeze / unfreeze")
    return list(buckets.values())


def lr_lambda(schedule: str, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0):
    """Multiplier of the base LR at a step: linear warmup, then `cosine`, `inverse_sqrt` or
    `constant`."""
    if schedule not in {"cosine", "inverse_sqrt", "constant"}:
        raise ValueError(f"model.scheduler.name={schedule!r}: use cosine, inverse_sqrt or constant")

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        if schedule == "inverse_sqrt":
            return math.sqrt(max(warmup_steps, 1) / max(step, 1))
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def build_optimizer(model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """AdamW over `build_param_groups(model, **cfg)` (`cfg`: lr, weight_decay, betas, groups)."""
    groups = build_param_groups(
        model,
        lr=cfg["lr"],
        weight_decay=cfg.get("weight_decay", 0.1),
        groups=cfg.get("groups", ()),
        no_decay=cfg.get("no_decay", _NO_DECAY_DEFAULT),
    )
    return torch.optim.AdamW(groups, lr=cfg["lr"], betas=tuple(cfg.get("betas", (0.9, 0.999))))
