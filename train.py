"""Train Region-aware SAM3: `python train.py [experiment=...] [key=value ...]` (configs in conf/)."""

from __future__ import annotations

# Before torch is imported: the same CPU kernels on every x86-64 machine (utils/numerics.py).
from region_sam3.utils.numerics import apply_portable_numerics

apply_portable_numerics()

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from region_sam3.reporting.run_outputs import optimized_metric  # noqa: E402
from region_sam3.tasks import train_task  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics, objects = train_task(cfg)
    return optimized_metric(metrics, cfg.get("optimized_metric"), objects.get("trainer"))


if __name__ == "__main__":
    main()
