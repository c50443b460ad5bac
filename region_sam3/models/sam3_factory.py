"""The SAM3 model factory: architecture + (optional) region head + checkpoint + freezing.

Every size comes from `conf/model/sam3/*.yaml`; this function is their `_target_`:

    model = hydra.utils.instantiate(cfg.model.sam3)           # -> Sam3Image

Order matters: the region head is attached before the checkpoint is loaded (so strict loading
can tell SAM3 tensors from new ones), then freezing, then the ablation baseline (LoRA / HQ
token / mask-head fine-tune, `conf/model/baseline/`), which adds tensors that are not SAM3's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from sam3.model.sam3_image import Sam3Image
from torch import nn

from region_sam3.models.checkpoint import (
    CheckpointError,
    download_from_hub,
    load_sam3_checkpoint,
    read_checkpoint,
)
from region_sam3.models.freeze import apply_freeze

log = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
REGION_HEAD_PREFIX = "segmentation_head.region_head"


def resolve_checkpoint_path(checkpoint: str | os.PathLike) -> Path:
    """Map `builtin:<file>` to the weights shipped in `region_sam3/assets/`."""
    checkpoint = str(checkpoint)
    if checkpoint.startswith(BUILTIN_PREFIX):
        path = ASSETS_DIR / checkpoint[len(BUILTIN_PREFIX):]
        if not path.is_file():
            shipped = sorted(p.name for p in ASSETS_DIR.glob("*.pt")) if ASSETS_DIR.is_dir() else []
            raise CheckpointError(
                f"model.sam3.checkpoint={checkpoint!r}: no such built-in checkpoint "
                f"(shipped: {shipped}). Re-create it with `python train.py experiment=pretrain_tiny`."
            )
        return path
    return Path(checkpoint).expanduser()


def build_sam3(
    arch: Callable[..., Sam3Image],
    *,
    checkpoint: str | None = None,
    from_hub: bool = False,
    strict: bool = False,
    freeze: Sequence[str] = (),
    unfreeze: Sequence[str] = (),
    region_head: nn.Module | None = None,
    baseline: Callable[[Sam3Image], Sam3Image] | None = None,
    compile: bool = False,
) -> Sam3Image:
    """Build a SAM3 image model.

    Args:
        arch: partial of `region_sam3.models.sam3_arch.build_sam3_architecture` with sizes.
        checkpoint: official-format file (`sam3.pt`), or `builtin:<name>` for shipped weights.
        from_hub: download the official checkpoint with `huggingface_hub` (gated; opt-in).
        strict: fail when the checkpoint lacks any SAM3 tensor.
        freeze / unfreeze: parameter-name globs (see `region_sam3.models.freeze`).
        region_head: a `RegionHead`; when given, the segmentation head is replaced by the
            region-aware subclass that reuses every upstream submodule.
        baseline: an ablation baseline (`region_sam3.models.baselines`: LoRA, HQ token,
            mask-head fine-tune), applied last: after the checkpoint (its new tensors are not
            SAM3's) and after freezing (it keeps frozen parameters frozen).
        compile: `torch.compile` the base as SAM3's builder does (`compile=True` there: mode
            "default" for the ViT trunk and the pixel decoder) and the region head
            (`nn.Module.compile`, dynamic shapes: the prompt count varies per batch; in
            place, so parameter names and checkpoints are unchanged). Compiles on first call.

    Raises:
        CheckpointError: checkpoint requested but missing/unreadable/incompatible. Asking for
            weights never falls back to random initialisation.
    """
    if checkpoint and from_hub:
        raise ValueError("Set either model.sam3.checkpoint or model.sam3.from_hub=true, not both")
    # Resolve (and fail on) the checkpoint path before spending time building the model.
    ckpt_path = resolve_checkpoint_path(checkpoint) if checkpoint else None
    if ckpt_path is not None and not ckpt_path.is_file():
        read_checkpoint(ckpt_path)  # raises CheckpointError saying how to get the weights
    if from_hub:
        ckpt_path = Path(download_from_hub())

    model = arch(compile_mode="default") if compile else arch()
    if region_head is not None:
        from region_sam3.models.region_seg_head import build_region_seg_head

        model.segmentation_head = build_region_seg_head(
            model.segmentation_head, region_head,
            num_o2o_queries=model.transformer.decoder.num_queries,
        )
    if ckpt_path is not None:
        load_sam3_checkpoint(
            model, ckpt_path, strict=strict, new_module_prefixes=(REGION_HEAD_PREFIX,)
        )
    elif strict:
        log.warning("model.sam3.strict=true has no effect without a checkpoint")
    apply_freeze(model, freeze, unfreeze, config_key="model.sam3.freeze")
    if baseline is not None:
        model = baseline(model)
    if compile and region_head is not None:
        region_head.compile(dynamic=True)
    return model
