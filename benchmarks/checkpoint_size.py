"""Checkpoint size, head-only vs full weights (issue 19 item 3).

    python benchmarks/checkpoint_size.py [--sam3 tiny_base]

Builds the module from `conf/model` with `model/sam3=<config>` (a frozen base with a
checkpoint source), writes its state dict with and without the frozen base (as
`on_save_checkpoint` does) and prints both file sizes. Optimizer state is not included (it
covers trainable parameters only, the same in both). The official size (`--sam3 full` with
`model.sam3.checkpoint=<sam3.pt>`) needs the weights and ~10 GB of RAM.

Without the official weights, `--random-base` first writes the randomly initialised base in
the official `sam3.pt` format to a temporary file and builds the module from that file, so the
base has a source (path + hash) and the head-only checkpoint can drop it, as with real weights:

    OMP_NUM_THREADS=1 python benchmarks/checkpoint_size.py --random-base --sam3 full \
        region_head=full +freeze@sam3=all_but_region_head
"""

from __future__ import annotations

import argparse
import copy
import gc
import sys
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

CONF = Path(__file__).resolve().parents[1] / "conf"
sys.path.insert(0, str(CONF.parent))  # this checkout's region_sam3, not an installed copy
from region_sam3.lit.head_only import IDENTITY_KEY, strip_frozen_base  # noqa: E402
from region_sam3.models.checkpoint import save_official_format  # noqa: E402
from region_sam3.models.sam3_factory import REGION_HEAD_PREFIX  # noqa: E402


def _compose(sam3: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF / "model"), version_base="1.3"):
        return compose("default", overrides=[f"sam3={sam3}", *overrides])


def _random_base_file(sam3: str, overrides: list[str], folder: Path) -> Path:
    """The random-init base of `sam3` in the official format (the region head excluded)."""
    module = instantiate(_compose(sam3, [*overrides, "sam3.checkpoint=null"]))
    path = folder / "random_base_sam3.pt"
    save_official_format(module.net, path, exclude_prefixes=(REGION_HEAD_PREFIX,))
    del module
    gc.collect()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sam3", default="tiny_base", help="conf/model/sam3/<name>.yaml")
    parser.add_argument("--random-base", action="store_true",
                        help="write the random-init base to a temp file and build from it")
    parser.add_argument("overrides", nargs="*", help="extra model overrides, e.g. sam3.checkpoint=...")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as base_dir:
        overrides = list(args.overrides)
        if args.random_base:
            base = _random_base_file(args.sam3, overrides, Path(base_dir))
            print(f"random base written to {base} ({base.stat().st_size / 2**20:.2f} MiB)")
            overrides.append(f"sam3.checkpoint={base}")
        _measure(args.sam3, _compose(args.sam3, overrides))


def _measure(sam3: str, cfg) -> None:
    module = instantiate(cfg)
    full = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    head = copy.copy(full)
    head["state_dict"] = dict(full["state_dict"])
    strip_frozen_base(head, module.net, dict(cfg.sam3))
    with tempfile.TemporaryDirectory() as tmp:
        sizes = {}
        for name, ckpt in (("full", full), ("head-only", head)):
            path = Path(tmp) / f"{name}.ckpt"
            torch.save(ckpt, path)
            sizes[name] = path.stat().st_size
            path.unlink()  # free the disk before the next one
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    print(f"model/sam3={sam3}: {trainable} trainable parameters; "
          f"base dropped: {IDENTITY_KEY in head} "
          f"({head.get(IDENTITY_KEY, {}).get('tensors', 0)} tensors)")
    for name, size in sizes.items():
        print(f"  {name:10s} {size / 2**20:10.2f} MiB")
    print(f"  ratio      {sizes['full'] / sizes['head-only']:10.1f}x")


if __name__ == "__main__":
    main()
