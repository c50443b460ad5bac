"""Run-config checks and setup shared by `train.py` / `eval.py` (`region_sam3.tasks`)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from region_sam3.utils.numerics import numerics_summary
from region_sam3.utils.resolvers import MissingConfigValueError
from region_sam3.utils.threads import apply_num_threads

log = logging.getLogger(__name__)


def check_file(path: str | None, key: str, hint: str) -> Path | None:
    """`path` as a `Path` (None stays None); FileNotFoundError naming `key` when missing."""
    if path is None:
        return None
    resolved = Path(str(path)).expanduser()
    if not resolved.is_file():
        raise FileNotFoundError(f"{key}={path!r} does not exist. {hint}")
    return resolved


def checkpoint_dir(cfg: DictConfig) -> Path:
    """The run's checkpoints folder: the ModelCheckpoint callback's dirpath, else
    <output_dir>/checkpoints (where `ckpt_path=last | auto` looks)."""
    dirpath = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath", default=None)
    if dirpath:
        return Path(str(dirpath))
    return Path(str(cfg.paths.output_dir)) / "checkpoints"


def check_missing_values(cfg: DictConfig) -> None:
    """Fail before anything is built when a required value was not given.

    Covers `???` values and `${required:...}` interpolations (whose message says how to
    provide the value, e.g. the SAM3 checkpoint).
    """
    try:
        # missing_keys reads (resolves) every value too: a `${required:...}` fires in either.
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise MissingConfigValueError(f"Missing required config values: {missing}")
        OmegaConf.resolve(cfg)
    except InterpolationResolutionError as exc:
        # OmegaConf re-raises wrappers inside `except` blocks: the resolver's error is down the
        # chain of contexts.
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, MissingConfigValueError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        raise


def set_torch_threads(cfg: DictConfig) -> int:
    """`cfg.num_threads` (auto | int | null) -> `torch.set_num_threads`, before any model is built.

    "auto" leaves one core per data-loader worker and splits the rest between the processes of
    this machine (`trainer.devices` when it is an int, e.g. DDP ranks).
    """
    devices = cfg.trainer.get("devices", 1) if cfg.get("trainer") is not None else 1
    processes = devices if isinstance(devices, int) and devices > 0 else 1
    num_workers = int(cfg.data.get("num_workers", 0) or 0) if cfg.get("data") is not None else 0
    log.info(numerics_summary())
    return apply_num_threads(cfg.get("num_threads", "auto"), num_workers, processes)
