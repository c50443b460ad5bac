"""The train and eval tasks behind `train.py` / `eval.py` (Hydra configs in `conf/`)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from region_sam3.utils.instantiate import instantiate_callbacks, instantiate_loggers
from region_sam3.utils.resolvers import MissingConfigValueError
from region_sam3.utils.seeding import seed_everything

log = logging.getLogger(__name__)


def _check_file(path: str | None, key: str, hint: str) -> Path | None:
    if path is None:
        return None
    resolved = Path(str(path)).expanduser()
    if not resolved.is_file():
        raise FileNotFoundError(f"{key}={path!r} does not exist. {hint}")
    return resolved


def _float_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        value = float(value.item() if torch.is_tensor(value) else value)
        out[key] = value
    return out


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True))
    log.info("metrics written to %s", path)


def _write_report(metrics_path: Path, metrics: dict[str, float], model: Any, datamodule: Any,
                  **meta: str) -> None:
    """`report.md` next to the metrics JSON (tables, curves, overlays): region_sam3.reporting."""
    from region_sam3.reporting import write_run_report

    splits = list(getattr(datamodule, "test_splits", None) or ["test"])
    write_run_report(metrics_path, metrics, splits, net=getattr(model, "net", None),
                     datamodule=datamodule, meta=meta)


def check_missing_values(cfg: DictConfig) -> None:
    """Fail before anything is built when a required value was not given.

    Covers `???` values and `${required:...}` interpolations (whose message says how to
    provide the value, e.g. the SAM3 checkpoint).
    """
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise MissingConfigValueError(f"Missing required config values: {missing}")
    try:
        OmegaConf.resolve(cfg)
    except InterpolationResolutionError as exc:
        cause = exc.__cause__
        if isinstance(cause, MissingConfigValueError):
            raise cause from None
        raise


def train_task(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit, then test the best checkpoint. Returns (metrics, objects)."""
    check_missing_values(cfg)
    # Fail on a bad resume path before any data is generated or read.
    ckpt_path = _check_file(cfg.get("ckpt_path"), "ckpt_path",
                            "Pass a Lightning checkpoint, e.g. <run>/checkpoints/last.ckpt.")
    seed_everything(cfg.get("seed"))

    log.info("Instantiating model <%s>", cfg.model._target_)
    model: L.LightningModule = hydra.utils.instantiate(cfg.model)
    log.info("Instantiating datamodule <%s>", cfg.data._target_)
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    metrics: dict[str, float] = {}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    fit = cfg.get("train", True)
    if fit and trainable == 0:
        # e.g. a sweep point with the region head at num_iters=0 on a frozen base: that point is
        # the base itself, so it is evaluated rather than failing the sweep.
        log.warning("No trainable parameters (see model.sam3.freeze): skipping fit, testing the "
                    "loaded weights")
        fit = False
    if fit:
        # Our checkpoints carry configs and RNG states (not tensors only): load them fully.
        # Only resume from checkpoints you trust.
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=False)
        metrics.update(_float_metrics(trainer.callback_metrics))
    if cfg.get("test", True):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            log.warning("No best checkpoint (e.g. fast_dev_run): testing the current weights")
        trainer.test(model=model, datamodule=datamodule, ckpt_path=best or None,
                     weights_only=False)
        metrics.update(_float_metrics(trainer.callback_metrics))
    output_dir = Path(cfg.paths.output_dir)
    if trainer.is_global_zero:
        _write_json(output_dir / "metrics.json", metrics)
        if cfg.get("test", True):
            _write_report(output_dir / "metrics.json", metrics, model, datamodule,
                          run=str(output_dir), task=str(cfg.get("task_name")))
    return metrics, {"model": model, "datamodule": datamodule, "trainer": trainer}


def optimized_metric(metrics: dict[str, float], name: str | None) -> float | None:
    """The value a sweeper optimises; a clear error if the config names a metric never logged."""
    if not name:
        return None
    if name not in metrics:
        # Raising here would discard a finished run in a sweep; the run's artefacts are saved.
        log.error("optimized_metric=%r was not logged (no validation ran?); available: %s",
                  name, sorted(metrics)[:20])
        return None
    value = metrics[name]
    return None if math.isnan(value) else value


def eval_task(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Evaluate a checkpoint written by `train.py` on `data.test_split`; write metrics JSON."""
    from region_sam3.lit.module import RegionSam3Module

    check_missing_values(cfg)
    ckpt_path = _check_file(cfg.ckpt_path, "ckpt_path",
                            "Pass a checkpoint written by train.py (<run>/checkpoints/*.ckpt).")
    seed_everything(cfg.get("seed"))
    # mmap: a full-size checkpoint is not read twice into memory (hparams now, weights in test).
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False, mmap=True)
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    if "sam3" not in hparams:
        raise ValueError(f"{ckpt_path} has no model hyper-parameters: was it written by train.py?")
    sam3_cfg = OmegaConf.create(hparams["sam3"])
    # The Lightning checkpoint holds every SAM3 tensor: do not re-read the original weights,
    # which may not exist on this machine.
    sam3_cfg.checkpoint = None
    sam3_cfg.from_hub = False
    sam3_cfg.strict = False
    hparams["sam3"] = sam3_cfg
    model = RegionSam3Module(**hparams)
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=loggers)
    trainer.test(model=model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=False)
    metrics = _float_metrics(trainer.callback_metrics)
    split = cfg.data.get("test_split", "test")
    split = split if isinstance(split, str) else "+".join(split)
    out = cfg.get("metrics_file") or ckpt_path.parent.parent / f"eval_{split}_metrics.json"
    if trainer.is_global_zero:
        _write_json(Path(out), {"checkpoint": str(ckpt_path), "split": split, "metrics": metrics})
        _write_report(Path(out), metrics, model, datamodule, checkpoint=str(ckpt_path))
    return metrics, {"model": model, "datamodule": datamodule, "trainer": trainer}
