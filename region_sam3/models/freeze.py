"""Freezing parameters by module-name globs (`fnmatch` syntax on parameter names), and keeping
fully frozen submodules in eval mode while the rest trains."""

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


def fully_frozen_modules(model: nn.Module, include_root: bool = True) -> list[tuple[str, nn.Module]]:
    """The maximal submodules of `model` whose every parameter is frozen.

    A module qualifies when it (with all its descendants) holds at least one parameter and
    none has `requires_grad=True`. Only the top-most qualifying module of each subtree is
    returned (its descendants follow it). Parameter-free modules (dropout, drop-path,
    activations) are never listed on their own: they follow their nearest listed ancestor.
    A *mixed* module (frozen and trainable descendants, e.g. SAM3's `segmentation_head` with
    a trainable `region_head`) is not listed; only its fully frozen children are.
    `include_root=False` never lists `model` itself (its fully frozen children instead).

    Returns:
        `[(qualified name, module), ...]` in `named_modules` order ("" = `model` itself).
    """
    # One post-order pass: has_params / all_frozen per module, O(#modules + #params).
    state: dict[int, tuple[bool, bool]] = {}

    def visit(module: nn.Module) -> tuple[bool, bool]:
        has = False
        frozen = True
        for p in module.parameters(recurse=False):
            has = True
            frozen = frozen and not p.requires_grad
        for child in module.children():
            c_has, c_frozen = visit(child)
            has = has or c_has
            frozen = frozen and c_frozen
        state[id(module)] = (has, frozen)
        return has, frozen

    visit(model)
    out: list[tuple[str, nn.Module]] = []
    covered: set[int] = set()  # descendants of a module already listed (pre-order walk)
    for name, module in model.named_modules():
        if id(module) in covered or (module is model and not include_root):
            continue
        has, frozen = state[id(module)]
        if has and frozen:
            out.append((name, module))
            covered.update(id(m) for m in module.modules())
    return out


def eval_frozen_modules(model: nn.Module) -> list[str]:
    """Put every fully frozen submodule of `model` (see `fully_frozen_modules`) in eval mode.

    Call after `model.train()`: a frozen module must behave as at inference (no dropout, no
    drop-path, no batch-norm statistics updates), or a trainable head on top of it learns from
    noisy features it never sees at test time. `model` itself keeps its mode even when nothing
    in it trains: `Sam3Image.training` also selects the training *task* (matching, DAC
    one-to-many queries, auxiliary outputs the loss reads), not only dropout. Side effect of
    eval: SAM3's activation checkpointing (gated by `training`) is off in frozen modules, which
    is free when no gradient flows through them (frozen base under a trainable head) but costs
    activation memory if a frozen module sits between trainable ones.

    Returns:
        names of the modules switched to eval.
    """
    names = []
    for name, module in fully_frozen_modules(model, include_root=False):
        module.eval()
        names.append(name)
    return names


def has_trainable(module: nn.Module) -> bool:
    """True when any parameter of `module` (or its descendants) has `requires_grad`."""
    return any(p.requires_grad for p in module.parameters())
