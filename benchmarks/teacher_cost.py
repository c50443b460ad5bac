"""Teacher forward cost per image (ms) for each family, tiny and base sizes.

Random init on CPU (no weights needed); the text tower of the base models is replaced
by a tiny one via ``model_kwargs`` because only the image path is timed.

    PYTHONPATH=. python benchmarks/teacher_cost.py [--reps 3] [--images 2] [--masks 8]
"""

from __future__ import annotations

import argparse
import time

import torch

from region_sam3.teachers import create_teacher
from region_sam3.teachers.tiny_models import TINY_CLIP, TINY_PE, TINY_SIGLIP

TINY_TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}

CASES: list[tuple[str, str, str, dict]] = [
    ("tiny", "clip_vit", TINY_CLIP, {}),
    ("tiny", "siglip", TINY_SIGLIP, {}),
    ("tiny", "pe_core", TINY_PE, {}),
    ("base", "clip_vit", "ViT-B-16-quickgelu", {"model_kwargs": {"text_cfg": TINY_TEXT}}),
    ("base", "siglip2", "ViT-B-16-SigLIP2", {"model_kwargs": {"text_cfg": TINY_TEXT}}),
    ("base", "pe_core", "PE-Core-B-16", {"model_kwargs": {"text_cfg": TINY_TEXT}}),
]


def time_case(teacher, side: int, n_images: int, n_masks: int, reps: int) -> float:
    """Median ms per image of ``teacher(images, masks)`` (one warm-up call)."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n_images, 3, side, side, generator=g)
    masks = (torch.rand(n_images * n_masks, side, side, generator=g) > 0.5).float()
    idx = torch.arange(n_images).repeat_interleave(n_masks)
    teacher(images, masks, idx)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        teacher(images, masks, idx)
        times.append((time.perf_counter() - t0) * 1000 / n_images)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--masks", type=int, default=8, help="masks per image")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, "
          f"{args.images} images x {args.masks} masks, median of {args.reps}")
    print(f"{'size':5} {'family':9} {'model':22} {'input':>7} {'removal':>7} {'ms/img':>9}")
    for size, family, name, kw in CASES:
        for removal in (False, True):
            t = create_teacher(family, name, None, global_patch_removal=removal, **kw)
            side = t.image_size[0]
            ms = time_case(t, side, args.images, args.masks, args.reps)
            print(f"{size:5} {family:9} {name:22} {side:>7} {str(removal):>7} {ms:9.1f}", flush=True)
            del t


if __name__ == "__main__":
    main()
