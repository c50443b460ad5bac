"""Generate a dataset split once into a shared cache folder, safely under concurrency.

Used by the built-in synthetic benchmark (`data/synthetic.py`) and the out-of-distribution
splits (`data/ood_synthetic.py`): the split is written in a temporary directory and moved into
place with one atomic rename, so concurrent processes (DDP ranks, data-loader workers) never
see a half-written split; the loser of a race discards its copy.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def ensure_split(base: Path, split: str, write: Callable[[Path], None],
                 config: Mapping[str, Any]) -> tuple[Path, Path]:
    """(image_dir, ann_json) of `base/split`, calling `write(tmp_dir)` if it is not there yet;
    `config` (what determines the split) is saved once as `base/config.json`."""
    final = base / split
    if not (final / "instances.json").is_file():
        base.mkdir(parents=True, exist_ok=True)
        tmp = base / f".tmp-{split}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            write(tmp)
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / "instances.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        config_file = base / "config.json"
        if not config_file.exists():
            tmp_config = base / f".config-{uuid.uuid4().hex[:8]}.json"
            tmp_config.write_text(json.dumps(config, indent=1, default=list))
            os.replace(tmp_config, config_file)
    return final / "images", final / "instances.json"
