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

from region_sam3.lit.resume import resolve_ckpt_path
from region_sam3.utils.instantiate import instantiate_callbacks, instantiate_loggers
from region_sam3.utils.resolvers import MissingConfigValueError
from region_sam3.utils.seeding import seed_everything
from region_sam3.utils.threads import apply_num_threads
from region_sam3.workflow.eval_config import (  # noqa: F401  (re-exported)
    EvalOverrideError,
    checkpoint_config,
    cli_overrides,
)

log = logging.getLogger(__name__)


def _check_file(path: str | None, key: str, hint: str) -> Path | None:
    if path is None:
        return None
    resolved = Path(str(path)).expanduser()
    if not resolved.is_file():
        raise FileNotFoundError(f"{key}={path!r} does not exist. {hint}")
    return resolved


def _checkpoint_dir(cfg: DictConfig) -> Path:
    """The run's checkpoints folder: the ModelCheckpoint callback's dirpath, else
    <output_dir>/checkpoints (where `ckpt_path=last | auto` looks)."""
    dirpath = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath", default=None)
    if dirpath:
        return Path(str(dirpath))
    return Path(str(cfg.paths.output_dir)) / "checkpoints"


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
    report = write_run_report(metrics_path, metrics, splits, net=getattr(model, "net", None),
                              datamodule=datamodule, meta=meta)
    _log_summary(metrics, splits, metrics_path, report)


def _log_summary(metrics: dict[str, float], splits: list[str], metrics_path: Path,
                 report: Path) -> None:
    """The compact per-split table (AP ... mIoU top-K, M^0 vs M^T) at the end of the console;
    every other metric is in the JSON and report.md. Called on rank 0 only."""
    from region_sam3.reporting import summary_tables

    log.info("Test summary (all metrics: %s, %s):\n%s", metrics_path, report,
             summary_tables(metrics, splits))


def check_missing_values(cfg: DictConfig) -> None:
    """Fail before anything is built when a required value was not given.

    Covers `???` values and `${required:...}` interpolations (whose message says how to
    provide the value, e.g. the SAM3 checkpoint).
    """
    try:
        # missing_keys reads (resolves) every value too: a `${required:...}` fires in either.
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise MissingConfigValueError(f"Missing required config values: {missing}")
        OmegaConf.resolve(cfg)
    except InterpolationResolutionError as exc:
        # OmegaConf re-raises wrappers inside `except` blocks: the resolver's error is down the
        # chain of contexts.
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, MissingConfigValueError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        raise


def set_torch_threads(cfg: DictConfig) -> int:
    """`cfg.num_threads` (auto | int | null) -> `torch.set_num_threads`, before any model is built.

    "auto" leaves one core per data-loader worker and splits the rest between the processes of
    this machine (`trainer.devices` when it is an int, e.g. DDP ranks).
    """
    devices = cfg.trainer.get("devices", 1) if cfg.get("trainer") is not None else 1
    processes = devices if isinstance(devices, int) and devices > 0 else 1
    num_workers = int(cfg.data.get("num_workers", 0) or 0) if cfg.get("data") is not None else 0
    return apply_num_threads(cfg.get("num_threads", "auto"), num_workers, processes)


def train_task(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit, then test the best checkpoint. Returns (metrics, objects)."""
    check_missing_values(cfg)
    # Fail on a bad resume path before any data is generated or read.
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), _checkpoint_dir(cfg))
    if ckpt_path is not None:
        log.info("Resuming from %s", ckpt_path)
    seed_everything(cfg.get("seed"))
    set_torch_threads(cfg)

    log.info("Instantiating model <%s>", cfg.model._target_)
    model: L.LightningModule = hydra.utils.instantiate(cfg.model)
    # checkpoint.full_weights=false: checkpoints omit the frozen base (region_sam3/lit/head_only.py)
    model.checkpoint_full_weights = bool((cfg.get("checkpoint") or {}).get("full_weights", False))
    log.info("Instantiating datamodule <%s>", cfg.data._target_)
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    metrics: dict[str, float] = {"model/trainable_params": float(trainable)}
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
        # COCO results files: <output_dir>/results/<split>/coco_instances_results.json
        model.results_dir = Path(cfg.paths.output_dir) / "results"
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            log.warning("No best checkpoint (e.g. fast_dev_run): testing the current weights")
        trainer.test(model=model, datamodule=datamodule, ckpt_path=best or None,
                     weights_only=False)
        metrics.update(_float_metrics(trainer.callback_metrics))
    output_dir = Path(cfg.paths.output_dir)
    if trainer.is_global_zero:
        _write_json(output_dir / "metrics.json", metrics)
        _report_iteration_gain(metrics, model, output_dir)
        if cfg.get("test", True):
            _write_report(output_dir / "metrics.json", metrics, model, datamodule,
                          run=str(output_dir), task=str(cfg.get("task_name")))
    return metrics, {"model": model, "datamodule": datamodule, "trainer": trainer}


def _report_iteration_gain(metrics: dict[str, float], model: L.LightningModule,
                           output_dir: Path) -> None:
    """Print and save the M^0 vs M^T table (val: last validation; test: tested checkpoint)."""
    from region_sam3.utils.iteration_gain import format_iteration_gain

    head = getattr(getattr(getattr(model, "net", None), "segmentation_head", None),
                   "region_head", None)
    table = format_iteration_gain(metrics, getattr(head, "num_iters", None))
    if table:
        (output_dir / "iteration_gain.md").write_text(table + "\n")
        print(f"\nClosed loop, before (M^0 = SAM3) / after (M^T):\n{table}\n", flush=True)


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
    """Evaluate a checkpoint written by `train.py` on `data.test_split`; write metrics JSON.

    The model and data configs come from the checkpoint, then this run's command-line
    overrides (see `region_sam3.workflow.eval_config.checkpoint_config`); the trainer is this run's.
    """
    from region_sam3.lit.loading import load_module_from_checkpoint

    check_missing_values(cfg)
    ckpt_path = _check_file(cfg.ckpt_path, "ckpt_path",
                            "Pass a checkpoint written by train.py (<run>/checkpoints/*.ckpt).")
    seed_everything(cfg.get("seed"))
    set_torch_threads(cfg)
    # Built and loaded once (region_sam3/lit/loading.py); the RNGs are the checkpoint's, as
    # `trainer.test(ckpt_path=...)` left them.
    model, composed = load_module_from_checkpoint(ckpt_path, cfg, restore_rng_states=True)
    log.info("evaluating %s at %s px on %s", ckpt_path, composed.data.get("resolution"),
             composed.data.get("test_split"))
    datamodule: L.LightningDataModule = hydra.utils.instantiate(composed.data)
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=loggers)
    split = composed.data.get("test_split", "test")
    split = split if isinstance(split, str) else "+".join(split)
    out = cfg.get("metrics_file") or ckpt_path.parent.parent / f"eval_{split}_metrics.json"
    # COCO results files: <metrics dir>/eval_results/<split>/coco_instances_results.json
    model.results_dir = Path(out).parent / "eval_results"
    # No ckpt_path: the weights are loaded (a second read would also warn about the training
    # run's callbacks, which an evaluation does not have).
    trainer.test(model=model, datamodule=datamodule)
    metrics = _float_metrics(trainer.callback_metrics)
    if trainer.is_global_zero:
        _write_json(Path(out), {"checkpoint": str(ckpt_path), "split": split,
                                "resolution": composed.data.get("resolution"),
                                "metrics": metrics})
        _write_report(Path(out), metrics, model, datamodule, checkpoint=str(ckpt_path))
    return metrics, {"model": model, "datamodule": datamodule, "trainer": trainer}
