"""OmegaConf resolvers used by the configs (registered when `region_sam3` is imported)."""

from __future__ import annotations

import os
from typing import Any

from omegaconf import OmegaConf

from region_sam3.utils.slurm import slurm_job_id


class MissingConfigValueError(ValueError):
    """A config value that has no usable default was not given on the command line."""


def _missing(hint: str, node: Any) -> MissingConfigValueError:
    return MissingConfigValueError(f"{node._get_full_key(None)} is required: {hint}")


def _required(hint: str, *, _node_: Any) -> Any:
    # `???` cannot express "required in this experiment" because merging MISSING onto a group
    # default (e.g. `checkpoint: null`) keeps the default; this resolver fails on first use.
    raise _missing(hint, _node_)


def _required_unless(alternative: Any, hint: str, *, _node_: Any) -> Any:
    # `${required_unless:${.from_hub},"..."}`: the value is required unless another key provides
    # the same thing (e.g. the checkpoint comes from the hub). Resolves to None when it does, so
    # consumers see "not given" rather than a placeholder.
    if alternative is True or (isinstance(alternative, str) and alternative.lower() == "true"):
        return None
    raise _missing(hint, _node_)


def _run_folder(default: str) -> str:
    # `${run_folder:<timestamp>}` in hydra.run.dir: under SLURM the job id (and step), so a
    # requeued job (same id) reopens its own run folder and every rank of one job agrees on it;
    # elsewhere the timestamp. The step keeps two `srun python train.py` of one allocation apart.
    job = slurm_job_id()
    if job is None:
        return default
    step = os.environ.get("SLURM_STEP_ID")
    return f"slurm-{job}" + (f".{step}" if step and step.isdigit() else "")


def _under_slurm(inside: Any, outside: Any) -> Any:
    # `ckpt_path: ${under_slurm:auto,null}`: a (requeued) SLURM job resumes from its own folder.
    return inside if slurm_job_id() is not None else outside


def register_resolvers() -> None:
    """Register `${required:"how to provide it"}`, `${required_unless:${.other},"how"}`,
    `${run_folder:<default>}` and `${under_slurm:<inside>,<outside>}` (idempotent)."""
    if not OmegaConf.has_resolver("required"):
        OmegaConf.register_new_resolver("required", _required)
    if not OmegaConf.has_resolver("required_unless"):
        OmegaConf.register_new_resolver("required_unless", _required_unless)
    if not OmegaConf.has_resolver("run_folder"):
        OmegaConf.register_new_resolver("run_folder", _run_folder)
    if not OmegaConf.has_resolver("under_slurm"):
        OmegaConf.register_new_resolver("under_slurm", _under_slurm)
