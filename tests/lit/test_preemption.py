"""Real signals to a real `python train.py`: TERM and submitit's USR2 save `last.ckpt` at a batch
boundary and exit 128 + signal; the relaunch resumes in the same run folder (issue 19 item 1)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from region_sam3.lit.preemption import PreemptionCheckpoint, preemption_exit_code
from region_sam3.utils.resolvers import _run_folder
from region_sam3.utils.slurm import slurm_job_id

REPO = Path(__file__).resolve().parents[2]
STEPS_PER_EPOCH = 4
EPOCHS = 2


def _command(data_dir: Path, step_file: Path, *overrides: str, sleep_s: float = 0.0) -> list[str]:
    return [sys.executable, "train.py", f"paths.data_dir={data_dir}", "model/sam3=tiny",
            "logger=csv", "test=false", "seed=7", "data.num_workers=0", "data.batch_size=2",
            "data.max_queries_per_image=3", "trainer.accelerator=cpu",
            "model.criterion.num_sample_points=256", "~callbacks.progress_bar",
            "~callbacks.metrics_plot", f"trainer.limit_train_batches={STEPS_PER_EPOCH}",
            f"trainer.max_epochs={EPOCHS}", "trainer.limit_val_batches=0",
            "trainer.log_every_n_steps=1", "callbacks.model_checkpoint.monitor=null",
            "+callbacks.step_file._target_=helpers.StepFile",
            f"+callbacks.step_file.path={step_file}", f"+callbacks.step_file.sleep_s={sleep_s}",
            *overrides]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return {**env, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1",
            "PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{REPO}", **extra}


def _signal_after(cmd: list[str], env: dict[str, str], step_file: Path, at_step: int,
                  signum: int, timeout: float = 240.0) -> subprocess.CompletedProcess:
    """Start `cmd`, send `signum` once `step_file` reads >= `at_step`, wait for the exit."""
    step_file.unlink(missing_ok=True)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            text = step_file.read_text() if step_file.is_file() else ""
            if text.strip() and int(text) >= at_step:
                proc.send_signal(signum)
                break
            time.sleep(0.05)
        out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def _losses(run: Path) -> dict[int, float]:
    """{global step: train/loss_step} from every CSV logger version of the run folder."""
    out = {}
    for path in sorted(run.glob("csv/**/metrics.csv")) + sorted(run.glob("csv/metrics.csv")):
        with path.open() as handle:
            for row in csv.DictReader(handle):
                if row.get("train/loss_step"):
                    out[int(row["step"])] = float(row["train/loss_step"])
    return out


@pytest.mark.slow
def test_sigterm_saves_exits_143_and_the_relaunch_resumes(tmp_path, synthetic_data_dir):
    reference_run = tmp_path / "reference"
    # One data-loader worker (persistent), as real runs: the resumed run's fresh worker must
    # reproduce the augmentations (seeded per sample, data/resumable_loader.py).
    ref = subprocess.run(
        _command(synthetic_data_dir, tmp_path / "ref_step", f"hydra.run.dir={reference_run}",
                 "data.num_workers=1"),
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=240)
    assert ref.returncode == 0, ref.stderr[-3000:]
    reference = _losses(reference_run)
    assert sorted(reference) == list(range(STEPS_PER_EPOCH * EPOCHS)), sorted(reference)

    run, step_file = tmp_path / "run", tmp_path / "step"
    cmd = _command(synthetic_data_dir, step_file, f"hydra.run.dir={run}", "ckpt_path=auto",
                   "data.num_workers=1", sleep_s=0.5)
    first = _signal_after(cmd, _env(), step_file, at_step=STEPS_PER_EPOCH + 1,
                          signum=signal.SIGTERM)
    assert first.returncode == 128 + signal.SIGTERM, first.stdout[-3000:]
    assert "SIGTERM: saved" in first.stdout and "exit status 143" in first.stdout, first.stdout[-3000:]
    assert not (run / "metrics.json").exists()  # an interrupted run claims no results
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    k = saved["global_step"]
    assert STEPS_PER_EPOCH + 1 <= k < STEPS_PER_EPOCH * EPOCHS  # mid-epoch, a batch boundary
    assert not list((run / "checkpoints").glob("*.tmp"))

    second = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True,
                            timeout=240)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"Resuming from {run / 'checkpoints' / 'last.ckpt'}" in second.stdout + second.stderr
    assert torch.load(run / "checkpoints" / "last.ckpt",
                      weights_only=False)["global_step"] == STEPS_PER_EPOCH * EPOCHS
    assert (run / "metrics.json").is_file()
    resumed = _losses(run)
    assert set(range(STEPS_PER_EPOCH * EPOCHS)) <= set(resumed)  # no step lost from the logs
    after = {s: resumed[s] for s in range(k, STEPS_PER_EPOCH * EPOCHS)}
    assert after == pytest.approx({s: reference[s] for s in after}, rel=1e-6, abs=1e-7)


@pytest.mark.slow
def test_usr2_under_slurm_requeues_once_and_the_requeued_job_resumes(tmp_path,
                                                                      synthetic_data_dir):
    """submitit's USR2 in a (fake) SLURM job: checkpoint, `scontrol requeue <job>` (a stub on
    PATH records it), exit 140; the same command again (the requeued job) reopens
    logs/train/runs/slurm-<job> and resumes there without `ckpt_path`."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol_calls"
    bin_dir.mkdir()
    stub = bin_dir / "scontrol"
    stub.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    stub.chmod(0o755)
    env = _env(SLURM_JOB_ID="4242", PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    step_file = tmp_path / "step"
    cmd = _command(synthetic_data_dir, step_file, f"paths.log_dir={tmp_path / 'logs'}",
                   sleep_s=0.5)
    first = _signal_after(cmd, env, step_file, at_step=2, signum=signal.SIGUSR2)
    assert first.returncode == 128 + signal.SIGUSR2, first.stdout[-3000:]
    run = tmp_path / "logs" / "train" / "runs" / "slurm-4242"
    assert calls.read_text().split("\n")[:-1] == ["requeue 4242"]
    k = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    assert 2 <= k < STEPS_PER_EPOCH * EPOCHS
    assert not list(run.glob("hpc_ckpt_*.ckpt"))  # Lightning's mid-step save is out of the way

    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resuming from" in second.stdout + second.stderr
    assert torch.load(run / "checkpoints" / "last.ckpt",
                      weights_only=False)["global_step"] == STEPS_PER_EPOCH * EPOCHS
    assert calls.read_text().count("requeue") == 1
    assert sorted(p.name for p in (tmp_path / "logs" / "train" / "runs").iterdir()) == \
        ["slurm-4242"]


def test_slurm_job_id_and_run_folder(monkeypatch):
    assert slurm_job_id({}) is None
    assert slurm_job_id({"SLURM_JOB_ID": "77"}) == "77"
    assert slurm_job_id({"SLURM_JOB_ID": "78", "SLURM_ARRAY_JOB_ID": "70",
                         "SLURM_ARRAY_TASK_ID": "3"}) == "70_3"
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    assert _run_folder("2026-12-03_07-00-00") == "2026-12-03_07-00-00"
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    assert _run_folder("x") == "slurm-77"
    monkeypatch.setenv("SLURM_STEP_ID", "1")
    assert _run_folder("x") == "slurm-77.1"


def test_bad_signal_name_and_default_exit_code():
    with pytest.raises(ValueError, match="unknown signal 'NOPE'"):
        PreemptionCheckpoint("ckpts", signals=["NOPE"])
    callback = PreemptionCheckpoint("ckpts", signals=["usr2", 15])
    assert callback.signals == [signal.SIGUSR2, signal.SIGTERM]

    class _Trainer:
        callbacks = [callback]

    assert preemption_exit_code(_Trainer()) == 143  # no signal recorded: TERM's code
    callback.exit_code = 140
    assert preemption_exit_code(_Trainer()) == 140
