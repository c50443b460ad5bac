"""Export and check the shipped tiny SAM3 base (`region_sam3/assets/sam3_tiny_synthetic.pt`).

The recorded metrics (`sam3_tiny_synthetic.json`) are measured on a fixed synthetic subset
(`REFERENCE_SPLIT`) so that `tests/utils/test_tiny_base.py` can check that the shipped weights
still load and behave exactly as recorded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from region_sam3.models.checkpoint import save_official_format

ASSETS = Path(__file__).resolve().parents[1] / "assets"
WEIGHTS = ASSETS / "sam3_tiny_synthetic.pt"
RECORD = ASSETS / "sam3_tiny_synthetic.json"
# A fixed 16-image synthetic split (default generator seed); every other split is kept tiny so
# the check generates little data.
REFERENCE_OVERRIDES = [
    "data.synthetic.splits.train.num_images=4",
    "data.synthetic.splits.val.num_images=16",
    "data.synthetic.splits.small.num_images=4",
    "data.synthetic.splits.crowded.num_images=4",
    "data.test_split=val",
    "data.eval_batch_size=8",
    "data.num_workers=0",
    "model.evaluation.boundary=false",
    "trainer.accelerator=cpu",
    "seed=0",
]


def export_tiny_base(lightning_ckpt: str | Path, out: Path = WEIGHTS) -> Path:
    """Write the SAM3 weights of a `train.py` checkpoint in the official format, as float16.

    The module is rebuilt through the one checkpoint loader (`lit.loading`), so a head-only
    checkpoint (a run with a frozen backbone, e.g. stage 2) gets its frozen base back from its
    recorded source, hash-checked, instead of exporting only the tensors that trained.
    """
    from region_sam3.lit.loading import load_module_from_checkpoint

    module, _ = load_module_from_checkpoint(lightning_ckpt, with_teacher=False)
    save_official_format(module.net, out, dtype=torch.float16,
                         exclude_prefixes=("segmentation_head.region_head",))
    return out


def evaluate_tiny_base(data_dir: str | Path, output_dir: str | Path) -> dict[str, float]:
    """Mask metrics of the shipped base (as loaded by `conf/model/sam3/tiny_base.yaml`) on the
    reference split, through the same LightningModule and evaluators as training."""
    import hydra
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    conf_dir = Path(__file__).resolve().parents[2] / "conf"
    # `~experiment`: the base alone (plain SAM3), not the main job's region head.
    overrides = [f"paths.data_dir={data_dir}", f"paths.output_dir={output_dir}",
                 f"paths.work_dir={output_dir}", "logger=csv", "~experiment",
                 *REFERENCE_OVERRIDES]
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    OmegaConf.resolve(cfg)
    torch.manual_seed(0)
    module = hydra.utils.instantiate(cfg.model)
    datamodule = hydra.utils.instantiate(cfg.data)
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, enable_progress_bar=False,
                                      enable_model_summary=False)
    trainer.test(module, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items()
            if k.startswith("test/mask/") or k.startswith("test/miou/")}


def write_record(metrics: dict[str, float], provenance: dict[str, Any]) -> None:
    RECORD.write_text(json.dumps({"reference_overrides": REFERENCE_OVERRIDES,
                                  "metrics": metrics, **provenance}, indent=2, sort_keys=True))
