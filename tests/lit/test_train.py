"""train.py / eval.py tasks end to end on CPU with the tiny model (fast settings)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import compose_task

from region_sam3.tasks import eval_task, train_task

TINY = ["model/sam3=tiny", "logger=csv"]
SHORT = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
         "++trainer.limit_test_batches=1", "trainer.log_every_n_steps=1"]


def test_fast_dev_run_train(tmp_path, synthetic_data_dir):
    cfg = compose_task("train", tmp_path, synthetic_data_dir, [*TINY, "debug=fdr"])
    metrics, objects = train_task(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss_step"]))
    assert {"test/mask/AP", "test/mask/AP50", "test/miou/mIoU"} <= set(metrics)
    assert (tmp_path / "metrics.json").is_file()


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, synthetic_data_dir):
    """A 2-step training run with one validation: its checkpoints feed the eval tests."""
    out = tmp_path_factory.mktemp("short_run")
    cfg = compose_task("train", out, synthetic_data_dir, [*TINY, *SHORT, "test=false"])
    metrics, _ = train_task(cfg)
    return out, metrics


def test_short_run_writes_checkpoints_curves_and_metrics(short_run):
    out, metrics = short_run
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert "val/mask/AP50" in metrics
    assert (out / "metrics.png").is_file()
    history = json.loads((out / "metrics_history.json").read_text())
    assert history[-1]["step"] == 2 and history[-1]["val/mask/AP50"] == metrics["val/mask/AP50"]
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    assert "rng_states" in checkpoint and checkpoint["global_step"] == 2


@pytest.mark.parametrize("debug", [None, "fdr"])
def test_eval_writes_metrics_json(short_run, synthetic_data_dir, tmp_path, debug):
    out, _ = short_run
    overrides = [f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}", "data.test_split=crowded",
                 "+trainer.limit_test_batches=2"]
    overrides += [f"debug={debug}"] if debug else []
    cfg = compose_task("eval", tmp_path, synthetic_data_dir, overrides)
    metrics, _ = eval_task(cfg)
    written = json.loads((out / "eval_crowded_metrics.json").read_text())
    assert written["split"] == "crowded"
    expected = {"test/mask/AP", "test/mask/AP50", "test/mask/AP_S", "test/boundary/AP",
                "test/miou/mIoU", "test/stability/num_masks"}
    assert expected <= set(written["metrics"]), sorted(written["metrics"])
    assert written["metrics"]["test/mask/AP"] == pytest.approx(metrics["test/mask/AP"])


def test_eval_on_several_splits_prefixes_metrics_by_split(short_run, synthetic_data_dir, tmp_path):
    out, _ = short_run
    overrides = [f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}", "data.test_split=[val,crowded]",
                 "+trainer.limit_test_batches=1", "model.evaluation.boundary=false"]
    cfg = compose_task("eval", tmp_path, synthetic_data_dir, overrides)
    metrics, _ = eval_task(cfg)
    written = json.loads((out / "eval_val+crowded_metrics.json").read_text())
    for split in ("val", "crowded"):
        assert f"test/{split}/mask/AP50" in written["metrics"], sorted(written["metrics"])
    assert not any("dataloader_idx" in key for key in metrics)
    # different images -> the two splits' metrics are computed separately
    assert written["metrics"]["test/val/miou/num_gt"] != written["metrics"]["test/crowded/miou/num_gt"]


def test_eval_on_out_of_distribution_splits(short_run, synthetic_data_dir, tmp_path):
    """`data.test_split=[val,ood,ood_touching]` needs no other config: generated on first use."""
    out, _ = short_run
    overrides = [f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}",
                 "data.test_split=[val,ood,ood_touching]", "+trainer.limit_test_batches=1",
                 "model.evaluation.boundary=false", "data.synthetic.ood_splits.ood.num_images=2",
                 "data.synthetic.ood_splits.ood_touching.num_images=2"]
    metrics, _ = eval_task(compose_task("eval", tmp_path, synthetic_data_dir, overrides))
    for split in ("ood", "ood_touching"):
        assert metrics[f"test/{split}/miou/num_gt"] > 0, sorted(metrics)
    assert metrics["test/ood_touching/miou/num_gt"] != metrics["test/val/miou/num_gt"]


def test_nothing_trainable_skips_fit_and_tests_every_split(tmp_path, synthetic_data_dir):
    """A sweep point with num_iters=0 on the frozen base is evaluated, not failed."""
    overrides = [*TINY, "experiment=region_head", "model.region_head.num_iters=0",
                 "model.evaluation.boundary=false", "+trainer.limit_test_batches=1"]
    cfg = compose_task("train", tmp_path, synthetic_data_dir, overrides)
    metrics, objects = train_task(cfg)
    assert objects["trainer"].global_step == 0
    assert not (tmp_path / "checkpoints").exists()
    for split in ("test", "test_small", "test_crowded"):
        assert f"test/{split}/mask/AP50" in metrics, sorted(metrics)
    assert json.loads((tmp_path / "metrics.json").read_text()).keys() == metrics.keys()


def test_missing_resume_checkpoint_fails_before_data_is_touched(tmp_path):
    data_dir = tmp_path / "data"
    cfg = compose_task("train", tmp_path, data_dir, [*TINY, f"ckpt_path={tmp_path}/nope.ckpt"])
    with pytest.raises(FileNotFoundError, match=r"ckpt_path=.*nope\.ckpt"):
        train_task(cfg)
    assert not data_dir.exists()


def test_missing_eval_checkpoint_names_the_path(tmp_path):
    cfg = compose_task("eval", tmp_path, tmp_path / "data", [f"ckpt_path={tmp_path}/gone.ckpt"])
    with pytest.raises(FileNotFoundError, match="gone.ckpt"):
        eval_task(cfg)
