"""Atomic, crash-safe checkpoint files (issue 19 item 2).

Lightning's `TorchCheckpointIO` writes through fsspec's `_atomic_save`, which renames a file
from the temporary folder; when that folder is on another filesystem than the run folder
(node-local /tmp vs shared storage) the rename becomes a copy, and a kill mid-copy leaves a
truncated `last.ckpt` with the previous good one already gone. Here the temporary file lives
in the destination folder (same filesystem, so `os.replace` is an atomic rename), is fsynced
before the rename, and the folder is fsynced after it so the rename itself is durable.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import _load as pl_load
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

# What `torch.load` raises on a truncated or garbled file (zip reader, legacy pickle, EOF, and
# OSError from seeking before the start of a file shorter than the zip trailer).
_UNREADABLE = (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError,
               OSError)


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be read (truncated, garbled, partially copied)."""


def _is_local(path: str | os.PathLike) -> bool:
    protocol = get_filesystem(path).protocol
    return "file" in (protocol if isinstance(protocol, (tuple, list)) else (protocol,))


def _fsync_dir(folder: Path) -> None:
    # Makes the rename durable; some filesystems/OSes cannot open a folder, which is harmless.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _is_loadable(path: Path) -> bool:
    """Whether `torch.load` reads `path` (a zip checkpoint, memory-mapped: no full copy in RAM)."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception:
        return False
    return True


def newest_loadable_checkpoint(folder: str | os.PathLike, exclude: Path | None = None,
                               skipped: list[Path] | None = None) -> Path | None:
    """The most recently written `*.ckpt` in `folder` (not recursive) that loads, or None.

    Ties in mtime (coarse filesystems) go to `last*.ckpt`, then to the name, so the choice is
    deterministic. Temp files of an interrupted atomic save end in `.tmp` and are never
    candidates; `exclude` is left out; newer files that do not load are appended to `skipped`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    candidates = [p for p in folder.glob("*.ckpt")
                  if p.is_file() and (exclude is None or p.resolve() != exclude.resolve())]
    order = sorted(candidates, reverse=True,
                   key=lambda p: (p.stat().st_mtime_ns, p.name.startswith("last"), p.name))
    for candidate in order:
        if _is_loadable(candidate):
            return candidate
        if skipped is not None:
            skipped.append(candidate)
    return None


def remove_stale_temp_files(target: Path) -> list[Path]:
    """Delete temp files a killed earlier save of `target` left behind; returns them.

    Only the saving rank writes a given target, so a temp file of the same name at the start of
    a save is never another writer's file in progress.
    """
    stale = sorted(target.parent.glob(f".{target.name}.*.tmp"))
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return stale


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose local saves are atomic and whose loads name a broken file.

    Save: temp file in the destination folder -> `torch.save` -> flush + fsync -> `os.replace`
    onto the target -> fsync the folder. Any exception removes the temp file and leaves the
    previous target untouched. Remote (fsspec) paths fall back to Lightning's behaviour.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path).expanduser().absolute()
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(target)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        _fsync_dir(target.parent)

    def load_checkpoint(self, path: str | os.PathLike,
                        map_location: Callable | None = lambda storage, loc: storage,
                        weights_only: bool | None = None) -> dict[str, Any]:
        if not _is_local(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        target = Path(path)
        if not target.exists():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        try:
            return pl_load(path, map_location=map_location, weights_only=weights_only)
        except _UNREADABLE as err:
            if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError)):
                raise  # no access is not corruption
            if "Weights only load failed" in str(err) and zipfile.is_zipfile(target):
                raise  # an intact file refused by the weights_only unpickler: not corruption
            alternative = newest_loadable_checkpoint(target.parent, exclude=target)
            hint = (f"; the newest loadable checkpoint in the same folder is {alternative}"
                    if alternative is not None else "; no other loadable *.ckpt in its folder")
            size = target.stat().st_size
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise CorruptCheckpointError(
                f"Checkpoint file {target} ({size} bytes) cannot be read (truncated or corrupt: "
                f"{type(err).__name__}: {first_line}){hint}") from err
