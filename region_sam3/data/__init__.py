"""Find-query data: COCO-format reader, transforms, batch, SAM3 adapter, synthetic benchmark.

Names are imported lazily so `import region_sam3.data` does not pull in sam3 or lightning.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "FindQueryBatch": "region_sam3.data.batch",
    "FindQuerySample": "region_sam3.data.batch",
    "collate_find_queries": "region_sam3.data.batch",
    "FindQueryDataset": "region_sam3.data.coco",
    "FindQueryDataModule": "region_sam3.data.datamodule",
    "FindQueryTransform": "region_sam3.data.transforms",
    "AugmentationConfig": "region_sam3.data.transforms",
    "to_sam3_batch": "region_sam3.data.sam3_adapter",
    "SyntheticConfig": "region_sam3.data.synthetic",
    "ensure_synthetic_dataset": "region_sam3.data.synthetic",
    "OODConfig": "region_sam3.data.ood_synthetic",
    "ensure_ood_dataset": "region_sam3.data.ood_synthetic",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'region_sam3.data' has no attribute {name!r}")
