"""A CSV logger that continues a resumed run's `metrics.csv` instead of deleting it.

Lightning's `CSVLogger` deletes `<run>/csv/metrics.csv` when its folder exists, so a run resumed
in its own folder (`ckpt_path=last | auto`, a requeued SLURM job) loses every row logged before
the interruption. `ResumableCSVLogger` keeps the file and its header; when training resumes at
global step `k` (`drop_rows_from(k)`, called by the preemption callback on `on_train_start`) it
drops rows logged at steps >= k by the interrupted attempt (work after the checkpoint that is
redone), so each step appears once.
"""

from __future__ import annotations

import csv
import os
from typing import Any

from lightning.pytorch.loggers.csv_logs import CSVLogger, ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only


class _ContinuingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Keep an existing metrics.csv (Lightning's writer deletes it) and continue its header.
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as handle:
                header = next(csv.reader(handle), [])
            self.metrics_keys = sorted(header)

    def drop_rows_from(self, step: int) -> int:
        """Remove rows with `step >= step` from the file; returns how many were removed."""
        self.save()
        if not os.path.isfile(self.metrics_file_path):
            return 0
        with open(self.metrics_file_path, newline="") as handle:
            reader = csv.DictReader(handle)
            fields = list(reader.fieldnames or [])
            rows = list(reader)
        kept = [r for r in rows if not r.get("step") or int(float(r["step"])) < step]
        if len(kept) == len(rows):
            return 0
        tmp = f"{self.metrics_file_path}.tmp"
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(kept)
        os.replace(tmp, self.metrics_file_path)
        return len(rows) - len(kept)


class ResumableCSVLogger(CSVLogger):
    """`CSVLogger` whose `metrics.csv` survives a resume in the same folder (module docstring)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def drop_rows_from(self, step: int) -> int:
        """See `_ContinuingWriter.drop_rows_from` (rank 0 only: other ranks do not log)."""
        return self.experiment.drop_rows_from(step)
