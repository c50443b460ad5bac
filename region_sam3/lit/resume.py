"""`ckpt_path=last | auto | <path>`: which checkpoint a run resumes from.

Lightning's own `ckpt_path="last"` only looks at the ModelCheckpoint callback's `last.ckpt` and
warns (then starts fresh) when there is none; here `last` means "the newest checkpoint of this
run's checkpoints folder, or a clear error", and `auto` means "that one if it exists, else start
fresh" - the value a requeued SLURM job or a relaunch of a crashed run wants.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL = ("last", "auto")


def newest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The most recently written `*.ckpt` in `checkpoint_dir` (not recursive), or None.

    Ties in mtime (coarse filesystems) go to `last*.ckpt`, then to the name, so the choice is
    deterministic. Temp files of an interrupted atomic save end in `.tmp` and are never picked.
    """
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return None
    candidates = [p for p in folder.glob("*.ckpt") if p.is_file()]
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p.stat().st_mtime_ns, p.name.startswith("last"), p.name))


def resolve_ckpt_path(value: str | Path | None, checkpoint_dir: str | Path,
                      key: str = "ckpt_path") -> Path | None:
    """`ckpt_path` config value -> the file to resume from (None: start fresh).

    None / "" -> None; "last" -> newest checkpoint in `checkpoint_dir` (FileNotFoundError naming
    the folder when there is none); "auto" -> the same, or None; anything else -> that file,
    which must exist.
    """
    if value is None or str(value) == "":
        return None
    text = str(value)
    if text in SPECIAL:
        found = newest_checkpoint(checkpoint_dir)
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
