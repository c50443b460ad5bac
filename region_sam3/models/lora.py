"""LoRA baseline: low-rank adapters on SAM3's decoder and segmentation head via ``peft``.

``peft.inject_adapter_in_model`` replaces each target ``nn.Linear`` / ``nn.Conv2d`` by a LoRA
layer that holds the original module as ``base_layer`` and adds ``lora_A`` / ``lora_B``
(``lora_B`` zero-initialised, so at init the model's outputs are exactly SAM3's). The base
parameter *objects* are kept, only their names gain ``.base_layer``; LoRA is therefore injected
after the checkpoint is loaded (:func:`region_sam3.models.sam3_factory.build_sam3`), and
:func:`official_key` maps a LoRA'd name back to the official one.

Targets (regex, ``re.fullmatch`` on module names, see ``DEFAULT_TARGETS``): the decoder FFN
``linear1/linear2`` of every layer (changes boxes/scores too, which the region head cannot),
the pixel decoder's 3x3 convs, the three ``mask_embed`` linears and ``instance_seg_head``.
Attention ``out_proj`` layers are not targeted: ``nn.MultiheadAttention`` reads
``out_proj.weight`` directly and never calls the (wrapped) module.

Rank: with ``r=null`` the rank is chosen so the trainable count is closest to ``budget``
(``budget=0``: the default T>=1 region head's count, :func:`region_head_budget`). LoRA adds
``r * (fan_in + fan_out)`` parameters per target (``fan_in = C_in*k*k`` for a conv). Tiny
(d=64): 3,712 per rank, r=51 -> 189,312 vs the head's 190,848. Official (d=256): 37,376 per
rank, r=39 -> 1,457,664 vs 1,448,448.
"""

from __future__ import annotations

import logging
import re

from torch import nn

from region_sam3.models.baselines import count_params, keep_requires_grad, region_head_budget

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_TARGETS", "LoraBaseline", "lora_params_per_rank", "official_key"]

DEFAULT_TARGETS = (
    r"transformer\.decoder\.layers\.\d+\.linear[12]"
    r"|segmentation_head\.pixel_decoder\.conv_layers\.\d+"
    r"|segmentation_head\.mask_predictor\.mask_embed\.layers\.\d+"
    r"|segmentation_head\.instance_seg_head"
)


def official_key(name: str) -> str:
    """State-dict name of a base parameter without peft's ``.base_layer`` wrapper."""
    return name.replace(".base_layer.", ".")


def _fans(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features + module.out_features
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return module.in_channels // module.groups * kh * kw + module.out_channels
    raise TypeError(f"LoRA target {type(module).__name__} is neither nn.Linear nor nn.Conv2d")


def lora_targets(model: nn.Module, pattern: str) -> list[str]:
    """Names of the modules ``pattern`` (``re.fullmatch``) selects, as peft selects them."""
    rx = re.compile(pattern)
    return [n for n, _ in model.named_modules() if n and rx.fullmatch(n)]


def lora_params_per_rank(model: nn.Module, pattern: str) -> int:
    """LoRA parameters added per unit of rank on the modules matching ``pattern``."""
    modules = dict(model.named_modules())
    return sum(_fans(modules[n]) for n in lora_targets(model, pattern))


class LoraBaseline:
    """Inject LoRA adapters (callable on a built ``Sam3Image``; returns the same model).

    Args:
        target_modules: regex over module names (``re.fullmatch``), default ``DEFAULT_TARGETS``.
        r: LoRA rank; None = match ``budget``.
        budget: trainable-parameter target when ``r`` is None; 0 = the default region head's.
        alpha: LoRA alpha; None = ``r`` (scale 1).
        dropout: LoRA dropout.
    """

    def __init__(
        self,
        target_modules: str = DEFAULT_TARGETS,
        r: int | None = None,
        budget: int = 0,
        alpha: float | None = None,
        dropout: float = 0.0,
    ) -> None:
        self.target_modules = target_modules
        self.r = r
        self.budget = int(budget)
        self.alpha = alpha
        self.dropout = float(dropout)

    def rank_for(self, model: nn.Module) -> tuple[int, int, int]:
        """(rank, expected LoRA parameters, budget) for ``model``."""
        per_rank = lora_params_per_rank(model, self.target_modules)
        if per_rank == 0:
            raise ValueError(
                f"model.baseline.target_modules={self.target_modules!r} matches no module"
            )
        budget = self.budget or region_head_budget(_d_model(model))
        r = int(self.r) if self.r else max(1, round(budget / per_rank))
        return r, r * per_rank, budget

    def __call__(self, model: nn.Module) -> nn.Module:
        from peft import LoraConfig, inject_adapter_in_model

        r, expected, budget = self.rank_for(model)
        config = LoraConfig(
            r=r,
            lora_alpha=float(self.alpha) if self.alpha is not None else float(r),
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            bias="none",
        )
        with keep_requires_grad(model):
            inject_adapter_in_model(config, model)
        lora = [p for n, p in model.named_parameters() if ".lora_" in n]
        for p in lora:
            p.requires_grad_(True)
        added = sum(p.numel() for p in lora)
        if added != expected:  # our count is what the ablation table reports: keep it honest
            raise RuntimeError(f"LoRA added {added} parameters, expected {expected}")
        log.info(
            "LoRA r=%d on %d modules: %d parameters (budget %d); %d trainable in the model",
            r, len(lora_targets(model, self.target_modules)), added, budget,
            count_params(model),
        )
        return model


def _d_model(model: nn.Module) -> int:
    head = getattr(model, "segmentation_head", None)
    d = getattr(head, "d_model", None)
    if d is None:
        raise ValueError("cannot read d_model from model.segmentation_head")
    return int(d)
