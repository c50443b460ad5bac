"""Compose `conf/` and run train/eval tasks from Python (notebooks, scripts)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

#: CI / quick-look knob: `REGION_SAM3_FAST=1` shrinks every notebook's work (fewer steps,
#: images and batches) so all notebooks execute on 2 CPU cores in a few minutes.
FAST = os.environ.get("REGION_SAM3_FAST", "0") not in ("", "0", "false", "False")


def compose(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """`conf/<config_name>.yaml` with Hydra overrides, as `train.py` / `eval.py` would see it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from region_sam3.predict import find_conf_dir

    with initialize_config_dir(config_dir=str(find_conf_dir()), version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides))


def tiny_run_overrides(out_dir: str | Path, data_dir: str | Path, images: int = 16) -> list[str]:
    """CPU-sized settings: outputs in `out_dir`, synthetic data in `data_dir`, `images` images
    per split, no progress bar, no loader workers."""
    return [
        f"paths.output_dir={out_dir}", f"paths.work_dir={out_dir}", f"paths.data_dir={data_dir}",
        "trainer.accelerator=cpu", "data.num_workers=0", "logger=csv",
        "~callbacks.progress_bar", "~callbacks.model_summary",
        *(f"data.synthetic.splits.{s}.num_images={images}"
          for s in ("train", "val", "small", "crowded")),
    ]


def steps_overrides(steps: int) -> list[str]:
    """Exactly `steps` optimizer steps, over as many epochs as that takes (one epoch of a
    16-image split is only 8 batches: `limit_train_batches` alone would cap `steps` there)."""
    return ["trainer.max_epochs=-1", "trainer.limit_train_batches=1.0",
            f"++trainer.max_steps={int(steps)}"]


def train(overrides: Sequence[str]) -> tuple[dict[str, float], dict[str, Any]]:
    """`python train.py <overrides>` in process; returns (metrics, {model, datamodule, trainer})."""
    from region_sam3.tasks import train_task

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    return train_task(compose("train", overrides))


def quick_region_head(out_dir: str | Path, data_dir: str | Path, steps: int = 60,
                      extra: Sequence[str] = ()) -> tuple[Path, dict[str, float], dict[str, Any]]:
    """Train the region head (T=2) on the frozen shipped tiny base for `steps` steps (no test
    stage: evaluate with `evaluate_checkpoint`); returns (last.ckpt, metrics, objects). About a
    minute on 2 cores at the default size."""
    out_dir = Path(out_dir)
    metrics, objects = train([
        "experiment=region_head", *tiny_run_overrides(out_dir, data_dir),
        *steps_overrides(steps),
        "trainer.limit_val_batches=0", "callbacks.model_checkpoint.monitor=null", "test=false",
        "data.batch_size=2",
        "data.max_queries_per_image=3", "model.criterion.num_sample_points=512",
        "model.evaluation.boundary=false", "model.evaluation.max_dets_per_image=20", *extra])
    return out_dir / "checkpoints" / "last.ckpt", metrics, objects


def quick_distilled(out_dir: str | Path, data_dir: str | Path, steps: int = 40,
                    extra: Sequence[str] = ()) -> dict[str, Any]:
    """The region head distilled from a random tiny CLIP teacher for `steps` steps
    (`experiment=distill_clip debug=smoke`); returns {model, datamodule, trainer}: the teacher
    must stay in memory (random teacher weights are never saved in checkpoints)."""
    _, objects = train([
        "experiment=distill_clip", "debug=smoke", *tiny_run_overrides(out_dir, data_dir),
        *steps_overrides(steps),
        "trainer.limit_val_batches=0", "test=false", "callbacks.model_checkpoint.monitor=null",
        "model.distill.warmup_steps=0", "model.criterion.num_sample_points=256", *extra])
    return objects


def evaluate_checkpoint(checkpoint: str | Path, splits: Sequence[str], out_dir: str | Path,
                        data_dir: str | Path, limit_batches: int | None = None,
                        images: int | None = None,
                        extra: Sequence[str] = ()) -> tuple[dict[str, float], dict[str, Any]]:
    """`python eval.py ckpt_path=... data.test_split=[...]` in process: metrics (keys
    `test/<split>/...` for several splits) and {model, datamodule, trainer}; writes
    `out_dir/metrics.json` and `out_dir/report.md`. `images`: synthetic images per split (the
    size `tiny_run_overrides` trains with; None = the data config's, generated on first use)."""
    from region_sam3.tasks import eval_task

    out_dir = Path(out_dir)
    overrides = [
        f"ckpt_path={Path(checkpoint).resolve()}", f"metrics_file={out_dir / 'metrics.json'}",
        f"paths.output_dir={out_dir}", f"paths.work_dir={out_dir}", f"paths.data_dir={data_dir}",
        "trainer.accelerator=cpu", "data.num_workers=0", "logger=csv",
        f"data.test_split=[{','.join(splits)}]", *extra]
    if images is not None:
        overrides += [f"data.synthetic.splits.{s}.num_images={images}"
                      for s in ("train", "val", "small", "crowded")]
    if limit_batches is not None:
        overrides.append(f"+trainer.limit_test_batches={limit_batches}")
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    return eval_task(compose("eval", overrides))
