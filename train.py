"""Train Region-aware SAM3: `python train.py [experiment=...] [key=value ...]` (configs in conf/)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from region_sam3.reporting.run_outputs import optimized_metric
from region_sam3.tasks import train_task


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics, _ = train_task(cfg)
    return optimized_metric(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
