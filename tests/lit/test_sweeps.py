"""Sweeps as researchers run them: the Optuna search space, the SLURM/local submitit launchers,
and a real 2-trial Optuna sweep of `train.py` on the tiny base."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import yaml
from helpers import CONF_DIR, REPO_ROOT, TINY_SPLITS
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

SEARCH_SPACES = sorted(p.stem for p in (CONF_DIR / "hparams_search").glob("*.yaml"))


def _compose_with_hydra(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("name", SEARCH_SPACES)
def test_every_swept_key_exists_in_the_config(name, tmp_path):
    """A search space naming a key the config no longer has fails here, not after N trials."""
    cfg = _compose_with_hydra([f"hparams_search={name}", f"paths.output_dir={tmp_path}"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert sweeper.direction == "maximize"
    params = dict(sweeper.params)
    assert params
    absent = object()
    for key in params:
        assert OmegaConf.select(cfg, key, default=absent) is not absent, f"{name}: {key}"
    assert cfg.optimized_metric


def test_region_head_search_tunes_the_region_head_group(tmp_path):
    cfg = _compose_with_hydra(["hparams_search=region_head_optuna", f"paths.output_dir={tmp_path}"])
    # the index in the search space points at the region-head optimiser group
    assert cfg.model.optimizer.groups[2].name == "region_head"
    assert cfg.task_name == "region_head" and cfg.model.region_head is not None


@pytest.mark.parametrize("launcher", ["submitit_slurm", "submitit_local"])
def test_launcher_configs_compose_with_the_real_experiment(launcher, tmp_path):
    cfg = _compose_with_hydra(["experiment=region_head_full", "trainer=ddp", "trainer.devices=8",
                               f"hydra/launcher={launcher}", f"paths.output_dir={tmp_path}"])
    launcher_cfg = cfg.hydra.launcher
    if launcher == "submitit_slurm":
        assert launcher_cfg._target_.endswith("submitit_launcher.SlurmLauncher")
        # one SLURM task per GPU so Lightning's SLURMEnvironment maps tasks to DDP ranks
        assert launcher_cfg.tasks_per_node == 8 == launcher_cfg.gpus_per_node
        assert launcher_cfg.nodes == 1 and launcher_cfg.name == "region_head_full"
        # ours (conf/hydra/launcher/), not the plugin's built-in defaults (256, 0)
        assert launcher_cfg.array_parallelism == 8 and launcher_cfg.max_num_timeout == 3
    else:
        assert launcher_cfg._target_.endswith("submitit_launcher.LocalLauncher")
    # the plugin accepts exactly these keys: instantiate its launcher with them (no submission)
    from hydra.utils import instantiate

    plugin = instantiate(launcher_cfg)
    assert type(plugin).__name__ in {"SlurmLauncher", "LocalLauncher"}
    assert plugin.params["timeout_min"] == launcher_cfg.timeout_min


@pytest.mark.slow
def test_two_trial_optuna_sweep_returns_the_metric(tmp_path, synthetic_data_dir):
    """`python train.py -m hparams_search=region_head_optuna` with 2 trials of 2 steps each."""
    sweep_dir = tmp_path / "sweep"
    overrides = [
        "hparams_search=region_head_optuna", "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2", f"hydra.sweep.dir={sweep_dir}",
        f"paths.data_dir={synthetic_data_dir}", f"paths.log_dir={tmp_path / 'logs'}",
        "data.num_workers=0", "data.batch_size=2", "data.max_queries_per_image=2",
        "model.criterion.num_sample_points=256", "model.evaluation.boundary=false",
        "model.evaluation.max_dets_per_image=10", "trainer.accelerator=cpu", "trainer.max_epochs=1",
        "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "test=false",
        "logger=csv", "~callbacks.progress_bar", "~callbacks.model_summary",
        *TINY_SPLITS,
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), HYDRA_FULL_ERROR="1")
    proc = subprocess.run([sys.executable, "train.py", "-m", *overrides], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna"
    assert set(results["best_params"]) == {
        "model.optimizer.groups.2.lr", "model.optimizer.weight_decay",
        "model.region_head.num_iters", "model.region_head.dropout",
        "model.region_head.use_writeback"}
    # the value Optuna got is the metric each trial wrote: the best of the two
    trial_values = []
    for trial in ("0", "1"):
        metrics = yaml.safe_load((sweep_dir / trial / "metrics.json").read_text())
        trial_values.append(metrics["val/mask/AP50"])
    assert all(math.isfinite(v) for v in trial_values)
    assert results["best_value"] == pytest.approx(max(trial_values))


def test_ablation_lr_search_is_a_grid_over_the_one_lr_on_val_only(tmp_path):
    """Issue 22: every method's lr is tuned on val with a seed the report does not use, and the
    swept key is the only lr of experiment=ablation (no group overrides it)."""
    cfg = _compose_with_hydra(["hparams_search=ablation_lr", "model/baseline=lora",
                               "model.region_head.num_iters=0", f"paths.output_dir={tmp_path}"])
    assert cfg.hydra.sweeper.sampler._target_ == "optuna.samplers.GridSampler"
    assert list(cfg.hydra.sweeper.params) == ["model.optimizer.lr"]
    assert cfg.seed == 0 and cfg.test is False and cfg.optimized_metric.startswith("val/")
    assert cfg.task_name == "ablation" and list(cfg.model.optimizer.groups) == []
    from torch import nn

    from region_sam3.lit.optim import build_param_groups

    class Adapter(nn.Module):  # a LoRA-named parameter: no group may capture it
        def __init__(self):
            super().__init__()
            self.lora_A = nn.Linear(2, 2)

    groups = build_param_groups(Adapter(), lr=cfg.model.optimizer.lr,
                                weight_decay=cfg.model.optimizer.weight_decay,
                                groups=cfg.model.optimizer.groups)
    assert {g["lr"] for g in groups} == {cfg.model.optimizer.lr}
