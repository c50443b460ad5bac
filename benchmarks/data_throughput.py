"""Data pipeline figures on this machine: synthetic generation time and loader throughput.

Usage: python benchmarks/data_throughput.py [--root DIR] [--images 64]
Prints the generation time of the default synthetic splits, then training-loader throughput
(images/s, with augmentation, masks and collation) at 224 and 1008 px for 0 and 2 workers.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from region_sam3.data.datamodule import FindQueryDataModule
from region_sam3.data.synthetic import SyntheticConfig, ensure_synthetic_dataset


def time_generation(root: str) -> None:
    cfg = SyntheticConfig()
    total = 0.0
    for split, spec in cfg.splits.items():
        start = time.perf_counter()
        ensure_synthetic_dataset(root, split, cfg)
        elapsed = time.perf_counter() - start
        total += elapsed
        print(f"generate {split:8s} {spec.num_images:4d} images: {elapsed:6.1f} s")
    print(f"generate all default splits: {total:.1f} s")


def time_loader(root: str, resolution: int, num_workers: int, num_images: int) -> float:
    datamodule = FindQueryDataModule(
        synthetic={"root": root},
        resolution=resolution,
        batch_size=8,
        num_workers=num_workers,
        max_queries_per_image=16,
        augmentation={"crop": "lsj"},
    )
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    seen, start = 0, None
    for step, batch in enumerate(loader):
        if step == 1:  # exclude worker start-up and the first batch
            start, seen = time.perf_counter(), 0
        seen += batch.images.shape[0]
        if seen >= num_images and start is not None:
            break
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=None, help="cache root (default: a fresh temp dir)")
    parser.add_argument("--images", type=int, default=64, help="images timed per setting")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads in the main process (workers always use 1); more threads "
        "than free cores slows the 0-worker case ~10x on a shared 2-core machine",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or tmp
        time_generation(root)
        for resolution in (224, 1008):
            for num_workers in (0, 2):
                rate = time_loader(root, resolution, num_workers, args.images)
                print(
                    f"train loader {resolution:4d} px, {num_workers} workers: {rate:6.1f} images/s"
                )


if __name__ == "__main__":
    main()
