"""Evaluate a checkpoint: `python eval.py ckpt_path=<run>/checkpoints/last.ckpt [data.test_split=crowded]`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from region_sam3.tasks import eval_task


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    eval_task(cfg)


if __name__ == "__main__":
    main()
