"""Every config in conf/ composes, and instantiates where the machine allows it."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
from helpers import CONF_DIR, compose_task
from hydra.errors import ConfigCompositionException
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import OmegaConf

from region_sam3.utils.run_config import check_missing_values

# Prompt-free backbone pretraining has its own model and data: composed and smoke-run in
# tests/lit/test_dense_pretrain.py.
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")
                     if p.stem != "pretrain_tiny_stage1")
DEBUGS = sorted(p.stem for p in (CONF_DIR / "debug").glob("*.yaml"))


def _group(name: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / name).glob("*.yaml"))


@pytest.mark.parametrize("experiment", [None, *EXPERIMENTS])
@pytest.mark.parametrize("debug", [None, *DEBUGS])
def test_train_configs_compose(experiment, debug, tmp_path):
    overrides = [f"experiment={experiment}"] if experiment else []
    overrides += [f"debug={debug}"] if debug else []
    cfg = compose_task("train", tmp_path, tmp_path, overrides)
    assert cfg.model._target_ == "region_sam3.lit.module.RegionSam3Module"
    assert cfg.data._target_.endswith("FindQueryDataModule")
    if debug == "smoke":
        # The smoke run is the same pipeline on the tiny base, synthetic data and CPU.
        assert cfg.model.sam3.checkpoint == "builtin:sam3_tiny_synthetic.pt"
        assert cfg.data.synthetic is not None and cfg.trainer.accelerator == "cpu"


@pytest.mark.parametrize("experiment", ["region_head_full", "distill_clip"])
def test_real_experiments_fail_fast_without_weights(experiment, tmp_path):
    cfg = compose_task("train", tmp_path, tmp_path, [f"experiment={experiment}"])
    with pytest.raises(ValueError, match=r"model\.sam3\.checkpoint is required: download the official sam3\.pt"):
        check_missing_values(cfg)


@pytest.mark.parametrize("experiment", ["region_head_full", "distill_clip"])
def test_real_experiments_take_the_checkpoint_from_the_hub(experiment, tmp_path):
    # from_hub=true satisfies the required checkpoint (sam3_factory downloads it); the checkpoint
    # resolves to None so the factory does not see both.
    cfg = compose_task("train", tmp_path, tmp_path, [f"experiment={experiment}",
                                                     "model.sam3.from_hub=true"])
    check_missing_values(cfg)
    assert cfg.model.sam3.checkpoint is None and cfg.model.sam3.from_hub is True
    cfg = compose_task("train", tmp_path, tmp_path, [f"experiment={experiment}",
                                                     "model.sam3.checkpoint=/w/sam3.pt"])
    check_missing_values(cfg)
    assert cfg.model.sam3.checkpoint == "/w/sam3.pt" and cfg.model.sam3.from_hub is False


@pytest.mark.parametrize("experiment", [None, "pretrain_tiny", "region_head"])
def test_train_configs_instantiate(experiment, tmp_path, synthetic_data_dir):
    overrides = ["model/sam3=tiny", "model.sam3.checkpoint=null", "model.sam3.strict=false"]
    overrides += [f"experiment={experiment}"] if experiment else []
    cfg = compose_task("train", tmp_path, synthetic_data_dir, overrides)
    OmegaConf.resolve(cfg)
    module = hydra.utils.instantiate(cfg.model)
    assert any(p.requires_grad for p in module.parameters())
    if experiment == "region_head":
        trainable = {n for n, p in module.net.named_parameters() if p.requires_grad}
        assert trainable and all(".region_head." in n for n in trainable)
    datamodule = hydra.utils.instantiate(cfg.data)
    callbacks = [hydra.utils.instantiate(c) for c in cfg.callbacks.values()]
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=False)
    assert trainer.max_epochs == cfg.trainer.max_epochs
    # data resolution and model input size come from one config value
    assert datamodule.hparams.resolution == cfg.model.sam3.arch.image_size


@pytest.mark.parametrize("name", [g for g in _group("data") if g != "synthetic_stream"])
def test_data_configs_instantiate_without_touching_data(name, tmp_path):
    cfg = compose_task("train", tmp_path, tmp_path / "absent", [f"data={name}"])
    OmegaConf.resolve(cfg)
    hydra.utils.instantiate(cfg.data)
    assert not (tmp_path / "absent").exists()


@pytest.mark.parametrize("name", _group("logger"))
def test_logger_configs_instantiate(name, tmp_path):
    cfg = compose_task("train", tmp_path, tmp_path, [f"logger={name}"])
    OmegaConf.resolve(cfg)
    from region_sam3.utils.instantiate import instantiate_loggers

    assert instantiate_loggers(cfg.logger)


@pytest.mark.parametrize("name", _group("trainer"))
def test_trainer_configs(name, tmp_path, monkeypatch):
    if name == "slurm_submitit":  # SLURMEnvironment reads the job's variables: a fake 1-node job
        for key, value in {"SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "4", "SLURM_NODEID": "0",
                           "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_JOB_ID": "1",
                           "SLURM_JOB_NAME": "test", "SLURM_NODELIST": "localhost"}.items():
            monkeypatch.setenv(key, value)
    cfg = compose_task("train", tmp_path, tmp_path, [f"trainer={name}"])
    OmegaConf.resolve(cfg)
    if cfg.trainer.accelerator == "gpu":
        pytest.importorskip("torch")
        import torch

        if not torch.cuda.is_available():
            with pytest.raises(MisconfigurationException):
                hydra.utils.instantiate(cfg.trainer)
            return
    hydra.utils.instantiate(cfg.trainer)


@pytest.mark.parametrize("name", _group("model/region_head"))
def test_region_head_configs_instantiate(name, tmp_path):
    cfg = compose_task("train", tmp_path, tmp_path, [f"model/region_head={name}"])
    OmegaConf.resolve(cfg)
    head = hydra.utils.instantiate(cfg.model.region_head)
    assert len(head.iter_loss_weights) == head.num_iters + 1


def test_unknown_key_names_the_key(tmp_path):
    with pytest.raises(ConfigCompositionException, match="model.no_such_knob"):
        compose_task("train", tmp_path, tmp_path, ["model.no_such_knob=1"])


def test_bad_value_names_the_key(tmp_path, synthetic_data_dir):
    cfg = compose_task("train", tmp_path, synthetic_data_dir,
                       ["model/sam3=tiny", "model.on_nonfinite_loss=maybe"])
    OmegaConf.resolve(cfg)
    with pytest.raises(Exception, match=r"model\.on_nonfinite_loss='maybe'"):
        hydra.utils.instantiate(cfg.model)


def test_eval_config_composes(tmp_path):
    cfg = compose_task("eval", tmp_path, tmp_path, ["ckpt_path=x.ckpt", "~model.criterion"])
    assert cfg.ckpt_path == "x.ckpt"
    assert Path(CONF_DIR / "eval.yaml").is_file()
