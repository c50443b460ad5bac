"""The SLURM job this process runs in (read from the environment SLURM sets)."""

from __future__ import annotations

import os
from collections.abc import Mapping


def slurm_job_id(env: Mapping[str, str] | None = None) -> str | None:
    """`<array job>_<task>` or `<job>` of this SLURM job, None outside SLURM."""
    env = os.environ if env is None else env
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None
