"""torch's intra-op thread count from the CPUs this process may actually use.

torch defaults to one thread per *visible* core. In a container with a CPU quota, with a
restricted affinity mask, or next to data-loader workers, that oversubscribes the CPU: on the
2-core machine of issue 12, torch's default 2 threads ran a training step in 8.8 s while another
process held one core, against 1.4 s with 1 thread. `num_threads: auto` (conf/train.yaml,
conf/eval.yaml) therefore uses

    threads = max(1, floor(usable CPUs / processes on this machine) - data-loader workers)

where usable CPUs = min(affinity mask, cgroup CPU quota); an explicit `OMP_NUM_THREADS` in the
environment is an upper bound. An int forces the count; null leaves torch's default.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs granted by the cgroup CPU quota (v2 `cpu.max` or v1 `cpu.cfs_quota_us`), or None.

    Returns None when no quota is set or the files cannot be read.
    """
    try:
        v2 = root / "cpu.max"
        if v2.is_file():
            quota, _, period = v2.read_text().strip().partition(" ")
            if quota == "max":
                return None
            return int(quota) / int(period or 100000)
        for v1 in (root / "cpu", root / "cpu,cpuacct"):
            quota_file = v1 / "cpu.cfs_quota_us"
            if quota_file.is_file():
                quota_us = int(quota_file.read_text().strip())
                if quota_us <= 0:  # -1: no quota
                    return None
                return quota_us / int((v1 / "cpu.cfs_period_us").read_text().strip())
    except (OSError, ValueError):
        return None
    return None


def available_cpus(root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may run on: affinity mask, capped by the cgroup quota (>= 1)."""
    if hasattr(os, "sched_getaffinity"):
        cpus = len(os.sched_getaffinity(0))
    else:  # macOS / Windows
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(root)
    if quota is not None:
        # A quota of 1.5 CPUs keeps 2 threads busy only 75% of the time: round down.
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)


def resolve_num_threads(
    setting: int | str | None,
    num_workers: int = 0,
    processes: int = 1,
    cpus: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> int | None:
    """The intra-op thread count for `setting` (`num_threads` in the task config).

    Args:
        setting: "auto", a positive int (forced), or None (keep torch's default).
        num_workers: data-loader worker processes of this process (each takes a core).
        processes: training processes sharing this machine (e.g. DDP ranks on CPU).
        cpus: usable CPUs (default: `available_cpus()`).
        environ: where to read an explicit `OMP_NUM_THREADS`, an upper bound for "auto"
            (default: `os.environ`).

    Returns:
        The thread count, or None for `setting=None`.
    """
    if setting is None:
        return None
    if isinstance(setting, bool) or (not isinstance(setting, (int, str))):
        raise ValueError(f"num_threads={setting!r}: use auto, a positive int or null")
    if isinstance(setting, str) and setting.strip().lower() != "auto":
        if not setting.strip().isdigit():
            raise ValueError(f"num_threads={setting!r}: use auto, a positive int or null")
        setting = int(setting)
    if isinstance(setting, int):
        if setting < 1:
            raise ValueError(f"num_threads={setting}: must be >= 1 (or auto / null)")
        return setting
    cpus = available_cpus() if cpus is None else cpus
    threads = max(1, cpus // max(1, processes) - max(0, num_workers))
    env = (os.environ if environ is None else environ).get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        threads = min(threads, int(env))
    return threads


def apply_num_threads(setting: int | str | None, num_workers: int = 0,
                      processes: int = 1) -> int:
    """Resolve `setting` and call `torch.set_num_threads`; returns the count in effect."""
    threads = resolve_num_threads(setting, num_workers, processes)
    if threads is not None:
        torch.set_num_threads(threads)
        log.info("torch threads: %d (num_threads=%s, %d usable CPUs, %d data workers, "
                 "%d processes)", threads, setting, available_cpus(), num_workers, processes)
    return torch.get_num_threads()
