"""The train and eval tasks behind `train.py` / `eval.py` (Hydra configs in `conf/`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from region_sam3.lit.preemption import preemption_exit_code
from region_sam3.lit.resume import resolve_ckpt_path
from region_sam3.reporting.run_outputs import (
    float_metrics,
    report_iteration_gain,
    write_json,
    write_report,
)
from region_sam3.utils.instantiate import instantiate_callbacks, instantiate_loggers
from region_sam3.utils.run_config import (
    check_file,
    check_missing_values,
    checkpoint_dir,
    set_torch_threads,
)
from region_sam3.utils.seeding import seed_everything

log = logging.getLogger(__name__)


def train_task(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit, then test the best checkpoint. Returns (metrics, objects)."""
    check_missing_values(cfg)
    # Fail on a bad resume path before any data is generated or read.
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), checkpoint_dir(cfg))
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
        try:
            trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path,
                        weights_only=False)
        except SIGTERMException:
            # A signal stopped the run (region_sam3/lit/preemption.py saved last.ckpt): exit
            # non-zero so the scheduler / the user see an interrupted run; no metrics.json.
            raise SystemExit(preemption_exit_code(trainer)) from None
        metrics.update(float_metrics(trainer.callback_metrics))
    if cfg.get("test", True):
        # COCO results files: <output_dir>/results/<split>/coco_instances_results.json
        model.results_dir = Path(cfg.paths.output_dir) / "results"
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            log.warning("No best checkpoint (e.g. fast_dev_run): testing the current weights")
        trainer.test(model=model, datamodule=datamodule, ckpt_path=best or None,
                     weights_only=False)
        metrics.update(float_metrics(trainer.callback_metrics))
    output_dir = Path(cfg.paths.output_dir)
    if trainer.is_global_zero:
        write_json(output_dir / "metrics.json", metrics)
        report_iteration_gain(metrics, model, output_dir, echo=not cfg.get("test", True))
        if cfg.get("test", True):
            write_report(output_dir / "metrics.json", metrics, model, datamodule,
                          run=str(output_dir), task=str(cfg.get("task_name")))
    return metrics, {"model": model, "datamodule": datamodule, "trainer": trainer}


def eval_task(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Evaluate a checkpoint written by `train.py` on `data.test_split`; write metrics JSON.

    The model and data configs come from the checkpoint, then this run's command-line
    overrides (see `region_sam3.workflow.eval_config.checkpoint_config`); the trainer is this run's.
    """
    from region_sam3.lit.loading import load_module_from_checkpoint

    check_missing_values(cfg)
    ckpt_path = check_file(cfg.ckpt_path, "ckpt_path",
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
    metrics = float_metrics(trainer.callback_metrics)
    if trainer.is_global_zero:
        write_json(Path(out), {"checkpoint": str(ckpt_path), "split": split,
                                "resolution": composed.data.get("resolution"),
                                "metrics": metrics})
        write_report(Path(out), metrics, model, datamodule, checkpoint=str(ckpt_path))
    return metrics, {"model": model, "datamodule": datamodule, "trainer": trainer}
