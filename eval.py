"""Evaluate a checkpoint: `python eval.py ckpt_path=<run>/checkpoints/last.ckpt [data.test_split=crowded]`.

Without an existing `ckpt_path` it exits with status 2 and a one-line message before Hydra
creates a run folder (the `hydra.callbacks` of `conf/eval.yaml`). Evaluate on your own COCO-format
data: `python eval.py ckpt_path=... data.splits.mine.image_dir=<dir> data.splits.mine.ann_file=<json>
data.test_split=mine`.
"""

from __future__ import annotations

import sys

# Before torch is imported: the same CPU kernels on every x86-64 machine (utils/numerics.py).
from region_sam3.utils.numerics import apply_portable_numerics

apply_portable_numerics()

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from region_sam3.workflow.eval_config import addable_split_overrides  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    # Imported here: torch and Lightning load only once the arguments passed the checks.
    from region_sam3.tasks import eval_task

    eval_task(cfg)


if __name__ == "__main__":
    # `data.splits.NAME.image_dir=...` adds a split to evaluate on (no `+` needed).
    sys.argv[1:] = addable_split_overrides(sys.argv[1:])
    main()
