"""Command-line checks that run before Hydra creates a run directory.

Hydra makes `hydra.run.dir` (with `.hydra/` and the log file) before the task function runs, so a
task that fails on a missing argument leaves an empty run folder behind. `RequireFiles` is a
Hydra callback (`hydra.callbacks` in `conf/eval.yaml`): `on_run_start` / `on_multirun_start` run
after composition and before any directory exists, and end the process with a one-line message.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


def missing_file_message(cfg: DictConfig, key: str, example: str) -> str | None:
    """The one-line error for `cfg.<key>` (a path that must name an existing file), or None."""
    if OmegaConf.is_missing(cfg, key) or OmegaConf.select(cfg, key) is None:
        return f"error: {key} is required, e.g. {example}"
    value = OmegaConf.select(cfg, key)
    if not Path(str(value)).expanduser().is_file():
        return f"error: {key}={value!r} is not a file, e.g. {example}"
    return None


class RequireFiles(Callback):
    """Exit with status 2 and a one-line message when a required file argument is absent.

    Args:
        files: config key -> an example command that gives it.
    """

    def __init__(self, files: dict[str, str]) -> None:
        self.files = dict(files)

    def _check(self, config: DictConfig, skip: frozenset[str] = frozenset()) -> None:
        for key, example in self.files.items():
            message = None if key in skip else missing_file_message(config, key, example)
            if message is not None:
                # SystemExit passes through Hydra's error reporting (it catches Exception).
                print(message, file=sys.stderr)
                raise SystemExit(2)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # A swept key (ckpt_path=a.ckpt,b.ckpt) is not in the sweep's base config: each job's
        # task checks it.
        given = {o.split("=", 1)[0].lstrip("+~") for o in config.hydra.overrides.task}
        self._check(config, skip=frozenset(given))
