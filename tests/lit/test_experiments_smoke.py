"""Every `conf/experiment/*.yaml` runs (lightning-hydra-template habit): a config that drifts
from the code fails here, not on the cluster.

Each experiment is composed exactly as a user would (`experiment=<name>`), then its real-weight
requirements are swapped for what ships with the repo through `debug=smoke`: the shipped tiny
SAM3 base (`model/sam3=tiny_base`, `builtin:` checkpoint), a random tiny CLIP teacher
(`teacher=tiny_clip`), synthetic data and the CPU trainer. Everything else the experiment sets
(region-head variant, freeze globs, loss weights, distillation, optimiser groups, evaluation
options) is kept, and `trainer.fast_dev_run=true` pushes one batch through fit, validation and
test. New experiment files are picked up by the glob.
"""

from __future__ import annotations

import math

import pytest
from helpers import CONF_DIR, compose_task

from region_sam3.tasks import train_task

#: prompt-free backbone pretraining (no prompts, no COCO evaluation): smoke-run in
#: tests/lit/test_dense_pretrain.py.
DENSE_EXPERIMENTS = {"pretrain_tiny_stage1"}
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")
                     if p.stem not in DENSE_EXPERIMENTS)
SMOKE = ["debug=smoke", "++trainer.fast_dev_run=true", "logger=csv",
         "model.criterion.num_sample_points=256", "model.evaluation.boundary=false",
         # evaluation post-processing dominates a fast_dev_run on CPU: score fewer detections
         "model.evaluation.max_dets_per_image=10", "data.batch_size=1", "data.max_queries_per_image=2"]


def test_glob_found_the_experiments():
    assert {"distill_clip", "region_head", "region_head_full"} <= set(EXPERIMENTS)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_fast_dev_run(experiment, tmp_path, synthetic_data_dir):
    cfg = compose_task("train", tmp_path, synthetic_data_dir,
                       [f"experiment={experiment}", *SMOKE])
    # The swap really happened: no real weights, no real data are needed.
    assert cfg.model.sam3.checkpoint == "builtin:sam3_tiny_synthetic.pt"
    assert cfg.data._target_.endswith("FindQueryDataModule") and cfg.data.synthetic is not None
    if cfg.model.get("teacher") is not None:
        assert cfg.model.teacher.model_name == "RegionSAM3-tiny-CLIP"
        assert cfg.model.teacher.pretrained is None

    metrics, objects = train_task(cfg)

    trainer = objects["trainer"]
    trainable = sum(p.numel() for p in objects["model"].parameters() if p.requires_grad)
    if trainable:
        # one optimiser step, and its loss is a number
        assert trainer.global_step == 1
        assert math.isfinite(metrics["train/loss_step"])
    test_keys = [k for k in metrics if k.startswith("test/") and k.endswith("mask/AP50")]
    assert test_keys, sorted(metrics)
    if cfg.model.get("teacher") is not None:
        assert any(k.startswith("test") and "/distill/cosine" in k for k in metrics), sorted(metrics)
    assert (tmp_path / "metrics.json").is_file()
    # the test stage writes a readable report with an overlay grid of the test splits
    report = (tmp_path / "report.md").read_text()
    assert "| split | iteration |" in report and "](report_overlays.png)" in report, report
    assert (tmp_path / "report_overlays.png").is_file()


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_an_experiment_that_loads_the_shipped_base_builds_its_architecture(experiment, tmp_path):
    """`debug=smoke` swaps every experiment onto `tiny_base`, which would hide an experiment
    that loads the shipped weights into another architecture (pretrain_tiny_ft built the
    patch-14 `tiny` after the base became `tiny_p7_stem`): compare the arch as composed."""
    from helpers import compose_sam3
    from omegaconf import OmegaConf

    cfg = compose_task("train", tmp_path, tmp_path, [f"experiment={experiment}"])
    # `${required:...}` checkpoints (official weights, a stage-1 backbone) are not the base
    checkpoint = OmegaConf.select(cfg, "model.sam3.checkpoint", throw_on_resolution_failure=False)
    if checkpoint != "builtin:sam3_tiny_synthetic.pt":
        pytest.skip("does not load the shipped base")
    shipped = OmegaConf.to_container(compose_sam3("tiny_base").arch)
    assert OmegaConf.to_container(cfg.model.sam3.arch) == shipped
