"""`ckpt_path=last | auto | <path>`: which checkpoint a run resumes from.

Lightning's own `ckpt_path="last"` only looks at the ModelCheckpoint callback's `last.ckpt` and
warns (then starts fresh) when there is none; here `last` means "the newest checkpoint of this
run's checkpoints folder, or a clear error", and `auto` means "that one if it exists, else start
fresh" - the value a requeued SLURM job or a relaunch of a crashed run wants.
"""

from __future__ import annotations

import logging
from pathlib import Path

from region_sam3.lit.checkpoint_io import newest_loadable_checkpoint

log = logging.getLogger(__name__)

SPECIAL = ("last", "auto")


def resolve_ckpt_path(value: str | Path | None, checkpoint_dir: str | Path,
                      key: str = "ckpt_path") -> Path | None:
    """`ckpt_path` config value -> the file to resume from (None: start fresh).

    None / "" -> None; "last" -> newest *loadable* checkpoint in `checkpoint_dir` (a newer
    truncated one is skipped with a warning; FileNotFoundError naming the folder when there is
    none); "auto" -> the same, or None; anything else -> that file,
    which must exist.
    """
    if value is None or str(value) == "":
        return None
    text = str(value)
    if text in SPECIAL:
        skipped: list[Path] = []
        found = newest_loadable_checkpoint(checkpoint_dir, skipped=skipped)
        for path in skipped:
            log.warning("%s=%s: skipping %s (truncated or not a checkpoint)", key, text, path)
        if found is None and text == "last":
            raise FileNotFoundError(
                f"{key}=last: no *.ckpt in {Path(checkpoint_dir)!s}. Relaunch in the same run "
                f"folder (paths.output_dir=<run> or hydra.run.dir=<run>), pass a checkpoint "
                f"file, or use {key}=auto to start fresh when there is none.")
        return found
    resolved = Path(text).expanduser()
    if not resolved.is_file():
        raise FileNotFoundError(
            f"{key}={text!r} does not exist. Pass a Lightning checkpoint, e.g. "
            f"<run>/checkpoints/last.ckpt, or {key}=last / {key}=auto.")
    return resolved
