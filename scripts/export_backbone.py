#!/usr/bin/env python
"""Stage-1 checkpoint -> the vision backbone in SAM3's checkpoint format, for stage 2.

    python scripts/export_backbone.py <stage-1 run>/checkpoints/last.ckpt --out backbone.pt
    python train.py experiment=pretrain_tiny_stage2 model.sam3.checkpoint=backbone.pt
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from region_sam3.lit.dense_pretrain import export_backbone


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path, help="Lightning checkpoint of a stage-1 run")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    print(f"wrote {export_backbone(args.checkpoint, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
