"""Preemption and time limits: a signal saves a resumable checkpoint, requeues, exits non-zero.

What arrives on a cluster: SIGUSR2 from submitit (`signal_delay_s` before the time limit),
SIGUSR1 from `sbatch --signal=USR1@...`, SIGTERM on preemption or `scancel`. Lightning alone
bypasses TERM (the run stops at the next batch, saves nothing and exits 0) and, with a
`SLURMEnvironment`, saves `hpc_ckpt_<n>.ckpt` from inside the signal handler, i.e. possibly in the
middle of an optimizer step, into the run folder rather than `checkpoints/`.

`PreemptionCheckpoint` routes every configured signal into Lightning's own clean stop
(`received_sigterm`: the loops raise `SIGTERMException` at the next batch boundary). At the end of
the training batch, where ModelCheckpoint itself saves (so a resume equals an uninterrupted run),
every rank saves `<checkpoints>/last.ckpt` (atomic; the file `ckpt_path=last | auto` resumes
from). Under DDP a signal may reach one rank only, or the ranks at different batches: the ranks
agree through one scalar all-reduce per step (the largest signal number any rank received), so
all of them save and stop after the same batch; in one process nothing is added to the step.
In `on_exception` rank 0 runs `scontrol requeue <job>` under SLURM when the signal asks for it,
and `exit_code` (128 + signal number) is what `train.py` exits with, so the scheduler and the
user see an interrupted run, not a finished one (no `metrics.json`).
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from region_sam3.lit.csv_logger import ResumableCSVLogger
from region_sam3.utils.slurm import slurm_job_id

log = logging.getLogger(__name__)


def _signal_number(name: str | int) -> signal.Signals:
    if isinstance(name, int):
        return signal.Signals(name)
    text = str(name).upper()
    try:
        return signal.Signals[text if text.startswith("SIG") else f"SIG{text}"]
    except KeyError:
        raise ValueError(f"callbacks.preemption: unknown signal {name!r} (e.g. TERM, USR1, USR2)")\
            from None


class PreemptionCheckpoint(L.Callback):
    """Save `last.ckpt` at the next batch boundary after a signal; requeue; exit 128 + signum.

    Args:
        dirpath: the run's checkpoints folder.
        signals: the signals that stop the run this way (names such as "TERM", "USR2").
        requeue_signals: those after which the job is requeued under SLURM (`scontrol requeue`);
            a preempted job is requeued by SLURM itself when the partition allows it.
    """

    def __init__(self, dirpath: str, signals: Sequence[str | int] = ("TERM", "USR1", "USR2"),
                 requeue_signals: Sequence[str | int] = ("USR1", "USR2")) -> None:
        self.dirpath = Path(dirpath)
        self.signals = [_signal_number(s) for s in signals]
        self.requeue_signals = {_signal_number(s) for s in requeue_signals}
        self.received: signal.Signals | None = None
        self.exit_code: int | None = None
        self.saved: Path | None = None
        self._previous: dict[signal.Signals, Any] = {}
        self._trainer: L.Trainer | None = None

    # handlers
    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)
            log.warning("Received %s: saving a checkpoint at the next batch boundary",
                        self.received.name)
        # One process: stop at this batch's end. Under DDP only the batch-end all-reduce sets
        # it, on every rank at once: a flag set here between that all-reduce and Lightning's
        # check would stop this rank alone and leave the others waiting in a collective.
        if self._trainer is not None and self._trainer.world_size == 1:
            self._trainer._signal_connector.received_sigterm = True
        previous = self._previous.get(signal.Signals(signum))
        # TERM: Lightning's notifier (it also stops a launcher's child processes). USR1/USR2
        # replace Lightning's SLURM handler (a mid-step hpc_ckpt save plus its own requeue:
        # chaining it would save twice and requeue twice).
        if signum == signal.SIGTERM and callable(previous):
            previous(signum, frame)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After Lightning registered its handlers in `trainer.fit`: chain them rather than lose
        # them. Signal handlers can only be set from the main thread.
        self._trainer = trainer
        if threading.current_thread() is not threading.main_thread():
            log.warning("callbacks.preemption: not in the main thread, signals not handled")
            return
        for signum in self.signals:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A resumed run: rows the interrupted attempt logged after its checkpoint are redone now.
        if trainer.global_step > 0:
            for logger in trainer.loggers:
                if isinstance(logger, ResumableCSVLogger):
                    dropped = logger.drop_rows_from(trainer.global_step)
                    if dropped:
                        log.info("metrics.csv: %d rows after step %d dropped (redone now)",
                                 dropped, trainer.global_step)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, previous in self._previous.items():
            if previous is not None and threading.current_thread() is threading.main_thread():
                signal.signal(signum, previous)
        self._previous = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        # Save where ModelCheckpoint saves (after the batch, before the step's LR update): a
        # resume from here equals an uninterrupted run. Under DDP the ranks decide together (one
        # scalar all-reduce per step; a signal may reach the ranks at different batches).
        signum = int(self.received) if self.received is not None else 0
        if trainer.world_size > 1:  # every rank learns the (largest) signal any rank received
            signum = int(trainer.strategy.reduce(
                torch.tensor(signum, device=pl_module.device), reduce_op="max").item())
        if signum and self.saved is None:
            self.received = signal.Signals(signum)
            trainer._signal_connector.received_sigterm = True  # Lightning stops after this batch
            self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        path = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(path)  # every rank: it has a barrier inside
        self.saved = path
        log.warning("%s: saved %s at step %d", self.received.name if self.received else "signal",
                    path, trainer.global_step)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        self.received = self.received or signal.SIGTERM  # a TERM Lightning saw first
        if self.saved is None:  # stopped outside a training batch (e.g. during validation)
            self._save(trainer)
        self.exit_code = 128 + int(self.received)
        log.warning("%s: stopping; exit status %d", self.received.name, self.exit_code)
        received = self.received
        job = slurm_job_id()
        if job and received in self.requeue_signals and trainer.is_global_zero:
            requeue(job)


def requeue(job_id: str) -> int:
    """`scontrol requeue <job_id>`; returns its exit status (logged, never raised)."""
    if not re.fullmatch(r"[0-9_]+", job_id):
        log.error("not requeueing: unexpected SLURM job id %r", job_id)
        return 1
    try:
        status = subprocess.call(["scontrol", "requeue", job_id])
    except FileNotFoundError:
        log.error("scontrol not found: the job %s is not requeued", job_id)
        return 127
    if status == 0:
        log.warning("requeued SLURM job %s", job_id)
    else:
        log.error("scontrol requeue %s failed with status %d", job_id, status)
    return status


def preemption_exit_code(trainer: L.Trainer) -> int:
    """What `train.py` exits with after a `SIGTERMException` (128 + the signal; 143 if no
    `PreemptionCheckpoint` recorded one)."""
    for callback in trainer.callbacks:
        if isinstance(callback, PreemptionCheckpoint) and callback.exit_code is not None:
            return callback.exit_code
    return 128 + int(signal.SIGTERM)
