"""Freezing parameters by module-name globs (`fnmatch` syntax on parameter names)."""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence

from torch import nn

log = logging.getLogger(__name__)


def _matches(name: str, pattern: str) -> bool:
    # "backbone.vision_backbone" freezes everything under it, as "backbone.vision_backbone.*".
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern.rstrip(".*") + ".*")


def apply_freeze(
    model: nn.Module,
    freeze: Sequence[str] = (),
    unfreeze: Sequence[str] = (),
    *,
    config_key: str = "freeze",
) -> dict[str, int]:
    """Set `requires_grad=False` on parameters matching `freeze`, then re-enable `unfreeze`.

    A pattern that matches no parameter is a configuration error (a typo would otherwise
    silently train the whole backbone): it raises `ValueError` naming `config_key`.

    Returns:
        `{"frozen": n, "trainable": n}` parameter-tensor counts.
    """
    names = [n for n, _ in model.named_parameters()]
    for key, patterns in ((config_key, freeze), (f"un{config_key}", unfreeze)):
        for pattern in patterns:
            if not any(_matches(n, pattern) for n in names):
                raise ValueError(
                    f"{key}: pattern {pattern!r} matches no parameter of "
                    f"{type(model).__name__} (top-level modules: "
                    f"{sorted({n.split('.')[0] for n in names})})"
                )
    counts = {"frozen": 0, "trainable": 0}
    for name, param in model.named_parameters():
        frozen = any(_matches(name, p) for p in freeze) and not any(
            _matches(name, p) for p in unfreeze
        )
        param.requires_grad_(not frozen)
        counts["frozen" if frozen else "trainable"] += 1
    log.info("freeze: %d parameter tensors frozen, %d trainable", counts["frozen"], counts["trainable"])
    return counts
