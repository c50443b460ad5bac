"""Baselines of the closed-loop ablation, selected by `conf/model/baseline/*.yaml`.

A baseline is a callable applied to the built SAM3 model *after* its checkpoint was loaded and
its freeze patterns applied (see :func:`region_sam3.models.sam3_factory.build_sam3`):

* ``none``: nothing (the region head, if any, is the only new module);
* ``mask_head`` (:class:`UnfreezeBaseline`): fine-tune SAM3's own segmentation head (the
  project's original "mask-head fine-tune"), no new parameters;
* ``lora`` (:class:`region_sam3.models.lora.LoraBaseline`): LoRA on the decoder and the
  segmentation head through ``peft``;
* ``hq_token`` (:class:`region_sam3.models.hq_token.HQTokenBaseline`): an HQ-SAM-style output
  token with global-local feature fusion.

Every baseline leaves the frozen part of SAM3 frozen: parameters that were frozen before it ran
are frozen after it, whatever the adapter library does in between (:func:`keep_requires_grad`).
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
from collections.abc import Iterator, Sequence

from torch import nn

log = logging.getLogger(__name__)

__all__ = ["UnfreezeBaseline", "count_params", "keep_requires_grad", "region_head_budget"]


def count_params(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameter elements of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def region_head_budget(d_model: int) -> int:
    """Trainable parameters of the default region head (`conf/model/region_head/default.yaml`,
    shared weights: the same count for every T >= 1) at hidden size ``d_model``: the budget the
    baselines are matched to (190,848 at the tiny d_model=64; 1,448,448 at the official 256)."""
    from region_sam3.models.region_head import RegionHead

    return count_params(RegionHead(d_model=d_model, num_iters=1))


@contextlib.contextmanager
def keep_requires_grad(model: nn.Module) -> Iterator[None]:
    """Restore every pre-existing parameter's ``requires_grad`` on exit.

    ``peft`` marks every non-adapter parameter of the model frozen when it injects; a wrapped
    layer keeps its parameter *objects* (under ``base_layer``), so restoring by identity keeps
    the region head trainable and the frozen base frozen. Parameters created inside the block
    keep whatever the block set.
    """
    before = {id(p): p.requires_grad for p in model.parameters()}
    yield
    for p in model.parameters():
        if id(p) in before:
            p.requires_grad_(before[id(p)])


class UnfreezeBaseline:
    """The mask-head fine-tune: make SAM3's own parameters matching ``patterns`` trainable.

    Args:
        patterns: ``fnmatch`` globs on parameter names; each must match at least one parameter.
        exclude: globs kept as they are (default: the region head and other adapters).
    """

    def __init__(
        self,
        patterns: Sequence[str] = ("segmentation_head.*",),
        exclude: Sequence[str] = ("segmentation_head.region_head.*", "segmentation_head.hq_token.*"),
    ) -> None:
        self.patterns = list(patterns)
        self.exclude = list(exclude)

    def __call__(self, model: nn.Module) -> nn.Module:
        names = [n for n, _ in model.named_parameters()]
        for pattern in self.patterns:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                raise ValueError(
                    f"model.baseline.patterns: {pattern!r} matches no parameter of "
                    f"{type(model).__name__}"
                )
        for name, p in model.named_parameters():
            if any(fnmatch.fnmatchcase(name, g) for g in self.exclude):
                continue
            if any(fnmatch.fnmatchcase(name, g) for g in self.patterns):
                p.requires_grad_(True)
        log.info("mask-head fine-tune: %d trainable parameters in the model", count_params(model))
        return model
