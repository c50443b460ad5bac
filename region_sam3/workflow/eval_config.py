"""The config `eval.py` builds a checkpoint's model and data from: the checkpoint's saved
configs with this run's command-line overrides on top, or a clear error for those that cannot
apply (`checkpoint_config`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from region_sam3.eval.config import EVALUATION_KEYS

#: `model.*` keys an evaluation may change; everything else is the trained model itself.
EVAL_MODEL_KEYS = ("model.evaluation.", "model.teacher_cache_dir")
#: `data.*` keys an evaluation may add although the checkpoint's data config lacks them: a new
#: COCO-format split (`data.splits.NAME.image_dir` / `.ann_file`) to evaluate on.
EVAL_DATA_ADDABLE = ("data.splits.",)


class EvalOverrideError(ValueError):
    """A command-line override that cannot apply to the checkpoint being evaluated."""


def cli_overrides(cfg: DictConfig) -> list[str]:
    """The command-line overrides of this run (``key=value`` strings, Hydra syntax)."""
    if "hydra" in cfg:  # compose(..., return_hydra_config=True)
        return list(cfg.hydra.overrides.task)
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def addable_split_overrides(argv: list[str]) -> list[str]:
    """``data.splits.NAME.key=v`` -> ``++data.splits.NAME.key=v`` (Hydra's add-or-override), so
    ``python eval.py data.splits.mine.image_dir=... data.splits.mine.ann_file=...`` adds a split
    the composed config lacks instead of Hydra's "Could not override"; other args unchanged."""
    return [f"++{a}" if a.startswith(EVAL_DATA_ADDABLE) and "=" in a else a for a in argv]


def _parse(item: str) -> tuple[str, bool]:
    """``"+data.x=1"`` -> ``("data.x", True)`` (key without prefix, is an addition)."""
    key = item.split("=", 1)[0]
    return key.lstrip("+~"), key.startswith("+")


def _group_swaps(overrides: list[str], group: str) -> list[str]:
    """Keys of the overrides that select a config group (``data=coco``, ``data/x=y``)."""
    return [k for k, _ in map(_parse, overrides) if k == group or k.startswith(group + "/")]


def _override_keys(overrides: list[str], group: str) -> list[tuple[str, bool]]:
    """``[(key under group, is_addition)]`` of the single-key overrides of ``group``."""
    return [(k, add) for k, add in map(_parse, overrides) if k.startswith(group + ".")]


def _model_config(cfg: DictConfig, hparams: dict[str, Any], overrides: list[str],
                  ckpt_path: Path) -> DictConfig:
    if _group_swaps(overrides, "model"):
        raise EvalOverrideError(
            f"{_group_swaps(overrides, 'model')[0]}: config-group overrides of the model cannot "
            f"apply in eval.py (the model comes from {ckpt_path}); override single keys such as "
            f"model.evaluation.x=...")
    model = OmegaConf.create({"_target_": "region_sam3.lit.module.RegionSam3Module", **hparams})
    for key, add in _override_keys(overrides, "model"):
        if not key.startswith(EVAL_MODEL_KEYS):
            raise EvalOverrideError(
                f"{key}: cannot apply to a trained checkpoint (it would describe another model "
                f"than the weights in {ckpt_path}); eval.py accepts "
                f"{', '.join(k + ('*' if k.endswith('.') else '') for k in EVAL_MODEL_KEYS)}")
        sub = key.removeprefix("model.")
        missing = OmegaConf.select(model, sub, default="<missing>") == "<missing>"
        # A known evaluation knob may be absent from an older checkpoint: it is added.
        known = sub.startswith("evaluation.") and sub.split(".")[1] in EVALUATION_KEYS
        if missing and not (add or known):
            raise EvalOverrideError(f"{key}: the checkpoint's model config has no such key")
        OmegaConf.update(model, sub, OmegaConf.select(cfg, key), merge=True, force_add=True)
    return model


def _data_config(cfg: DictConfig, checkpoint: dict[str, Any], overrides: list[str]) -> DictConfig:
    swaps = _group_swaps(overrides, "data")
    if any(k != "data" for k in swaps):
        raise EvalOverrideError(
            f"{swaps[0]}: only a whole data group (data=coco) can be selected in eval.py")
    saved = checkpoint.get("datamodule_hyper_parameters")
    if swaps or not saved:
        # `data=coco` (or a checkpoint without data hparams): this run's composed data config,
        # every `data.*` override already applied by Hydra.
        return OmegaConf.create(OmegaConf.to_container(cfg.data, resolve=True))
    data = OmegaConf.create(dict(saved))
    data._target_ = cfg.data._target_
    for key, _ in _override_keys(overrides, "data"):
        sub = key.removeprefix("data.")
        missing = OmegaConf.select(data, sub, default="<missing>") == "<missing>"
        if missing and not key.startswith(EVAL_DATA_ADDABLE):
            raise EvalOverrideError(
                f"{key}: the checkpoint's data config has no such key (a new split to evaluate "
                f"on is data.splits.NAME.image_dir=... data.splits.NAME.ann_file=...)")
        value = OmegaConf.select(cfg, key)
        value = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        OmegaConf.update(data, sub, value, merge=True, force_add=True)
    return data


def checkpoint_config(cfg: DictConfig, checkpoint: dict[str, Any], ckpt_path: Path) -> DictConfig:
    """Model and data configs of the checkpoint, with this run's command-line overrides.

    * model: the LightningModule hyper-parameters saved in the checkpoint; only
      ``model.evaluation.*`` / ``model.teacher_cache_dir`` overrides apply (any other
      ``model.*`` key, or a ``model=...`` group, would describe a different model than the
      weights: error).
    * data: the datamodule hyper-parameters saved in the checkpoint (else this run's
      ``data`` group), then every ``data.*`` override; keys the saved config lacks are an
      error except a new split ``data.splits.NAME.{image_dir,ann_file}`` (categories come from
      its annotation file). ``data=<group>`` replaces the saved data config by that group.
      ``data.resolution`` always equals the loaded model's input size (an override asking for
      another one is an error).
    * trainer / logger / paths: this run's config.
    """
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    if "sam3" not in hparams:
        raise ValueError(f"{ckpt_path} has no model hyper-parameters: was it written by train.py?")
    overrides = cli_overrides(cfg)
    model = _model_config(cfg, hparams, overrides, ckpt_path)
    data = _data_config(cfg, checkpoint, overrides)
    resolution = OmegaConf.select(model, "sam3.arch.image_size")
    if resolution is not None:
        asked = [k for k, _ in _override_keys(overrides, "data") if k == "data.resolution"]
        if asked and int(cfg.data.resolution) != int(resolution):
            raise EvalOverrideError(
                f"data.resolution={cfg.data.resolution}: the checkpoint's model takes "
                f"{resolution} px inputs; data resolution always follows the loaded model")
        data.resolution = int(resolution)
    return OmegaConf.create({"model": model, "data": data})
