"""AdamW parameter groups by name globs and warmup + cosine / inverse-sqrt schedules.

Weight decay is excluded by explicit rules, not name globs (`*embed*` also caught the region
head's `mask_embed.layers.*.weight` and `embed_proj.weight`, which are ordinary matrices):

* biases: the parameter's own name is `bias` or ends with `_bias` (`in_proj_bias`);
* normalisation layers: every parameter of a LayerNorm / GroupNorm / BatchNorm / RMSNorm /
  InstanceNorm module;
* true embedding tables: every parameter of an `nn.Embedding` (SAM3's `query_embed`,
  `reference_points`, `presence_token`, geometry `label_embed`/`cls_embed`, the text
  `token_embedding`), and the positional-embedding / class-token parameters named in
  `EMBEDDING_PARAM_NAMES` (ViT `pos_embed`, text `positional_embedding`).

Everything else decays (linear and conv kernels, `text_projection`, ...). Extra globs in
`optimizer.no_decay` add exclusions.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, nn.RMSNorm,
)
#: parameter names (the last component) of learned positional embeddings and class tokens
EMBEDDING_PARAM_NAMES = frozenset({
    "pos_embed", "positional_embedding", "absolute_pos_embed", "cls_token", "pos_embedding",
})


def no_decay_parameter_names(model: nn.Module, extra: Sequence[str] = ()) -> set[str]:
    """Names of the parameters of `model` that get no weight decay (see the module docstring).

    Args:
        extra: additional `fnmatch` globs on parameter names to exclude.
    """
    names: set[str] = set()
    for module_name, module in model.named_modules():
        whole_module = isinstance(module, (*NORM_TYPES, nn.Embedding))
        for leaf, _ in module.named_parameters(recurse=False):
            if whole_module or leaf == "bias" or leaf.endswith("_bias") or (
                leaf in EMBEDDING_PARAM_NAMES
            ):
                names.add(f"{module_name}.{leaf}" if module_name else leaf)
    if extra:
        names |= {n for n, _ in model.named_parameters()
                  if any(fnmatch.fnmatchcase(n, p) for p in extra)}
    return names


def build_param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    groups: Sequence[Mapping[str, Any]] = (),
    no_decay: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Split the trainable parameters of `model` into AdamW groups.

    Args:
        groups: ordered `{name, patterns: [glob, ...], lr?, weight_decay?}`; a parameter goes
            to the first group whose pattern matches its name, otherwise to `default`.
        no_decay: extra globs whose parameters get weight decay 0, on top of the built-in
            rules (biases, norm layers, embedding tables; `no_decay_parameter_names`).

    Returns:
        torch optimizer groups, each with a `name` (used by the LR monitor) and no empty group.
    """
    specs = [dict(g) for g in groups] + [{"name": "default", "patterns": ["*"]}]
    excluded = no_decay_parameter_names(model, no_decay)
    buckets: dict[tuple[str, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        spec = next(s for s in specs if any(fnmatch.fnmatchcase(name, p) for p in s["patterns"]))
        decay = name not in excluded
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
    """AdamW over `build_param_groups(model, **cfg)` (`cfg`: lr, weight_decay, betas, groups),
    fused where the parameters allow it (`fused_supported`)."""
    groups = build_param_groups(
        model,
        lr=cfg["lr"],
        weight_decay=cfg.get("weight_decay", 0.1),
        groups=cfg.get("groups", ()),
        no_decay=cfg.get("no_decay", ()),
    )
    return torch.optim.AdamW(groups, lr=cfg["lr"], betas=tuple(cfg.get("betas", (0.9, 0.999))),
                             fused=fused_supported(groups))


def fused_supported(groups: Sequence[Mapping[str, Any]]) -> bool:
    """Whether every parameter can use PyTorch's fused AdamW (floating point, on a device with
    fused kernels: CUDA and CPU both have them). Fused is one kernel per step instead of a loop
    and, above all, skips a step on a device flag (`optimizer.found_inf`): the non-finite
    gradient guard (`lit/nonfinite.GradientGuard`) then needs no host sync."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    devices = set(_get_fused_kernels_supported_devices())
    return all(p.device.type in devices and p.is_floating_point()
               for group in groups for p in group["params"])
