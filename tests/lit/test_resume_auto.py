"""`ckpt_path=last | auto | <path>` resolution, and a real `python train.py` relaunch that
resumes from the newest checkpoint of the same run folder."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from region_sam3.lit.resume import resolve_ckpt_path

REPO = Path(__file__).resolve().parents[2]


def _touch(path: Path, mtime_ns: int, loadable: bool = True) -> Path:
    if loadable:
        torch.save({"global_step": 0}, path)
    else:
        path.write_bytes(b"PK\x03\x04 truncated")  # a killed copy: not a full zip
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def test_resolution_last_auto_path_none(tmp_path, caplog):
    folder = tmp_path / "checkpoints"
    assert resolve_ckpt_path(None, folder) is None
    assert resolve_ckpt_path("auto", folder) is None  # no folder yet: start fresh
    with pytest.raises(FileNotFoundError, match=str(folder)):
        resolve_ckpt_path("last", folder)
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match="ckpt_path=last"):
        resolve_ckpt_path("last", folder)
    _touch(folder / "epoch_000.ckpt", 1_000_000_000)
    newest = _touch(folder / "epoch_001.ckpt", 3_000_000_000)
    _touch(folder / "last.ckpt", 2_000_000_000)
    _touch(folder / ".last.ckpt.abc.tmp", 9_000_000_000)  # a killed atomic save: never picked
    assert resolve_ckpt_path("last", folder) == newest
    assert resolve_ckpt_path("auto", folder) == newest
    broken = _touch(folder / "epoch_002.ckpt", 4_000_000_000, loadable=False)
    with caplog.at_level(logging.WARNING, logger="region_sam3.lit.resume"):
        assert resolve_ckpt_path("last", folder) == newest  # the newest *loadable* one
    assert str(broken) in caplog.text
    explicit = folder / "epoch_000.ckpt"
    assert resolve_ckpt_path(str(explicit), folder) == explicit
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        resolve_ckpt_path(str(folder / "nope.ckpt"), folder)


def _train(run_dir: Path, data_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "train.py", f"hydra.run.dir={run_dir}", f"paths.data_dir={data_dir}",
           "model/sam3=tiny", "logger=csv", "test=false", "seed=7", "data.num_workers=0",
           "data.batch_size=2", "data.max_queries_per_image=3", "trainer.accelerator=cpu",
           "model.criterion.num_sample_points=256", "~callbacks.progress_bar",
           "~callbacks.metrics_plot", "trainer.limit_train_batches=2",
           "trainer.limit_val_batches=0", "callbacks.model_checkpoint.monitor=null", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_train_py_relaunch_with_last_resumes(tmp_path, synthetic_data_dir):
    run = tmp_path / "run"
    first = _train(run, synthetic_data_dir, "trainer.max_epochs=1", "ckpt_path=auto")
    assert first.returncode == 0, first.stderr[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 2
    second = _train(run, synthetic_data_dir, "trainer.max_epochs=2", "ckpt_path=last")
    assert second.returncode == 0, second.stderr[-3000:]
    out = second.stdout + second.stderr
    assert f"Resuming from {last}" in out, out[-3000:]
    # the relaunch continued the first run's 2 steps instead of starting at step 0
    state = torch.load(last, weights_only=False)
    assert state["global_step"] == 4
    # last.ckpt's final writer may be the epoch end or the train end (the periodic last
    # checkpoint saves once there): either way both epochs are complete in the loop state.
    assert state["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] == 2


def test_slurm_submitit_trainer_listens_on_usr2():
    """submitit sends SIGUSR2 (the default SLURMEnvironment listens on SIGUSR1): the preemption
    callback handles it, and Lightning's own requeue is off so the job is requeued once."""
    import signal

    import hydra
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["trainer=slurm_submitit", "callbacks.preemption.dirpath=ckpts"])
    envs = [hydra.utils.instantiate(p) for p in cfg.trainer.plugins]
    slurm = [e for e in envs if type(e).__name__ == "SLURMEnvironment"]
    assert len(slurm) == 1 and not slurm[0].auto_requeue
    assert slurm[0].requeue_signal == signal.SIGUSR2
    preemption = hydra.utils.instantiate(cfg.callbacks.preemption)
    assert signal.SIGUSR2 in preemption.signals and signal.SIGUSR2 in preemption.requeue_signals
    assert signal.SIGTERM in preemption.signals
