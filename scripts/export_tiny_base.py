"""Export a pretrain_tiny checkpoint as the shipped tiny base and record its reference metrics.

    python scripts/export_tiny_base.py logs/pretrain_tiny/runs/<run>/checkpoints/last.ckpt \
        --val-metrics logs/pretrain_tiny/runs/<run>/metrics.json --command "python train.py ..."
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from region_sam3.utils.tiny_base import (
    RECORD,
    WEIGHTS,
    evaluate_tiny_base,
    export_tiny_base,
    write_record,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--val-metrics", type=Path, help="metrics.json of the training run")
    parser.add_argument("--command", default="python train.py experiment=pretrain_tiny")
    args = parser.parse_args()
    path = export_tiny_base(args.checkpoint)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    with tempfile.TemporaryDirectory() as tmp:
        metrics = evaluate_tiny_base(Path(tmp) / "data", Path(tmp) / "out")
    run_metrics = json.loads(args.val_metrics.read_text()) if args.val_metrics else {}
    write_record(metrics, {
        "command": args.command,
        "source_checkpoint": str(args.checkpoint),
        "training_run_metrics": {k: v for k, v in run_metrics.items()
                                 if k.startswith(("val/mask", "test/mask", "val/miou", "test/miou"))},
        "weights_file": WEIGHTS.name,
    })
    print(f"wrote {RECORD}")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
