"""One loader for checkpoints written by `train.py` (issue 21 item 3).

`eval.py` (`region_sam3.tasks.eval_task`) and `Sam3Predictor.from_lightning_checkpoint` both
rebuild `RegionSam3Module` from the checkpoint's hyper-parameters and load its weights here,
once: eval then runs `trainer.test(model=...)` without `ckpt_path` (Lightning would read the file
a second time and warn about the training run's callbacks, which an evaluation does not have).

Two kinds of checkpoint (`region_sam3/lit/head_only.py`):

* full (`checkpoint.full_weights=true`, or a random base): every SAM3 tensor is in the file, so
  the original SAM3 weights are not re-read (they may not exist on this machine);
* head-only (`base_identity`): the frozen base is rebuilt from its source and its hash checked
  (`restore_frozen_base`, via `RegionSam3Module.complete_checkpoint_state`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.seed import _set_rng_states
from omegaconf import DictConfig, OmegaConf

from region_sam3.lit.head_only import IDENTITY_KEY
from region_sam3.lit.module import RegionSam3Module
from region_sam3.workflow.eval_config import checkpoint_config

MODULE_TARGET = "region_sam3.lit.module.RegionSam3Module"


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint dict at `path` (memory-mapped: a full-size file is paged in once).

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: the file has no model hyper-parameters / state dict (not from train.py).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Lightning checkpoint not found: {path}")
    # Our checkpoints carry configs and RNG states (not tensors only): load them fully. Only
    # load checkpoints you trust.
    checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not hparams or "sam3" not in hparams or "state_dict" not in checkpoint:
        raise ValueError(f"{path} has no model hyper-parameters: was it written by train.py?")
    return checkpoint


def _module_kwargs(model_cfg: DictConfig, checkpoint: dict[str, Any],
                   with_teacher: bool) -> dict[str, Any]:
    kwargs = OmegaConf.to_container(model_cfg, resolve=True)
    kwargs.pop("_target_", None)
    sam3_cfg = OmegaConf.create(kwargs["sam3"])
    if not checkpoint.get(IDENTITY_KEY):  # full checkpoint: every base tensor is in the file
        sam3_cfg.checkpoint = None
        sam3_cfg.from_hub = False
        sam3_cfg.strict = False
    kwargs["sam3"] = sam3_cfg
    if not with_teacher:
        # The distillation teacher (a CLIP model) is training/eval-only; its weights are not in
        # the checkpoint and building it would need them.
        kwargs.update(teacher=None, distill=None, teacher_cache_dir=None)
    return kwargs


def load_module_from_checkpoint(
    path: str | os.PathLike,
    run_cfg: DictConfig | None = None,
    *,
    with_teacher: bool = True,
    restore_rng_states: bool = False,
) -> tuple[RegionSam3Module, DictConfig]:
    """Rebuild the LightningModule of a `train.py` checkpoint and load its weights (once).

    Args:
        path: the `.ckpt` file.
        run_cfg: the eval run's composed config: its command-line overrides are applied to the
            checkpoint's model/data configs (`workflow.eval_config.checkpoint_config`, which
            raises on an override that cannot apply). None: the checkpoint's configs as saved.
        with_teacher: also build the distillation teacher (when the checkpoint has one).
        restore_rng_states: set the RNGs to the checkpoint's saved states, as
            `trainer.test(ckpt_path=...)` did.

    Returns:
        (module on the CPU, `{"model": ..., "data": ...}` config it was built from; `data` is
        None when `run_cfg` is None and the checkpoint saved no datamodule hyper-parameters).

    Raises:
        FileNotFoundError, ValueError: see `read_checkpoint`; `EvalOverrideError` (a
        ValueError) for a bad override; `BaseIdentityError` when a head-only checkpoint's base
        source now holds other weights.
    """
    path = Path(path).expanduser()
    checkpoint = read_checkpoint(path)
    if run_cfg is not None:
        composed = checkpoint_config(run_cfg, checkpoint, path)
    else:
        data = checkpoint.get("datamodule_hyper_parameters")
        composed = OmegaConf.create({
            "model": {"_target_": MODULE_TARGET, **dict(checkpoint["hyper_parameters"])},
            "data": dict(data) if data else None})
    module = RegionSam3Module(**_module_kwargs(composed.model, checkpoint, with_teacher))
    if restore_rng_states and "rng_states" in checkpoint:
        _set_rng_states(checkpoint["rng_states"])
    module.complete_checkpoint_state(checkpoint, where=str(path))
    module.load_state_dict(checkpoint["state_dict"], strict=True)
    return module, composed
