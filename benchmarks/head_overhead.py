"""Forward time and parameter count of SAM3 with the region head at T=0..3 vs plain SAM3.

Two modes, both side by side in one run:

* ``--mode model`` (default): the whole ``Sam3Image`` built by the project factory
  (``conf/model/sam3/<size>.yaml``), one image + one text prompt, eval, no_grad. The plain
  segmentation head and the region-aware ones share every upstream module (the builder reuses
  them), so all variants run the same weights.
* ``--mode head``: only the segmentation head (``UniversalSegmentationHead``) on synthetic inputs
  at the size's dims (full: 256-d, FPN 288^2/144^2/72^2, memory 72^2, Q=200): isolates the
  head's overhead from the ~850M-parameter backbone (practical on CPU at full size).

CPU fp32 by default; on CUDA the forward runs under bf16 autocast.

    PYTHONPATH=. python benchmarks/head_overhead.py --size tiny
    PYTHONPATH=. python benchmarks/head_overhead.py --size tiny_base --prompts 30 --threads 1
    PYTHONPATH=. python benchmarks/head_overhead.py --size full --mode head --iters 0 1 2
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from region_sam3.models.region_head import RegionHead
from region_sam3.models.region_seg_head import build_region_seg_head
from region_sam3.utils.timing import synchronize as _sync

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"




def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def build_model(size: str) -> tuple[nn.Module, int]:
    """Plain SAM3 from the project factory config ``conf/model/sam3/<size>.yaml``.

    Returns:
        (model, input image size).
    """
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(CONF_DIR / "model" / "sam3"), version_base="1.3"):
        cfg = compose(size)
    torch.manual_seed(0)
    return instantiate(cfg), int(cfg.arch.image_size)


def make_batch(image_size: int, device: torch.device, prompts: int = 1):
    """One image with `prompts` text prompts, no geometric prompt (``BatchedDatapoint``): the
    evaluation runs every category of an image at once (30 on the synthetic benchmark, 80 on
    COCO), so the head's share of the cost grows with it while the backbone's does not."""
    from sam3.model.data_misc import BatchedDatapoint, FindStage

    p = int(prompts)
    fi = FindStage(
        img_ids=torch.zeros(p, dtype=torch.long, device=device),
        text_ids=torch.arange(p, device=device),
        input_boxes=torch.zeros(0, p, 4, device=device),
        input_boxes_mask=torch.zeros(p, 0, dtype=torch.bool, device=device),
        input_boxes_label=torch.zeros(0, p, dtype=torch.long, device=device),
        input_points=torch.zeros(0, p, 257, device=device),
        input_points_mask=torch.zeros(p, 0, dtype=torch.bool, device=device),
    )
    g = torch.Generator().manual_seed(0)
    return BatchedDatapoint(
        img_batch=torch.randn(1, 3, image_size, image_size, generator=g).to(device),
        find_text_batch=[f"object {i}" for i in range(p)],
        find_inputs=[fi],
        find_targets=[None],
        find_metadatas=[None],
    )


def standalone_head(size: str) -> tuple[nn.Module, dict]:
    """A SAM3 ``UniversalSegmentationHead`` at the size's dims + matching synthetic inputs."""
    from sam3.model.maskformer_segmentation import PixelDecoder, UniversalSegmentationHead
    from sam3.model.model_misc import MultiheadAttentionWrapper

    d, s, q, layers = (256, 288, 200, 6) if size == "full" else (64, 64, 24, 2)
    torch.manual_seed(0)
    head = UniversalSegmentationHead(
        hidden_dim=d,
        upsampling_stages=3,
        pixel_decoder=PixelDecoder(hidden_dim=d, num_upsampling_stages=3),
        act_ckpt=False,
        cross_attend_prompt=MultiheadAttentionWrapper(
            num_heads=8 if d == 256 else 4, dropout=0, embed_dim=d
        ),
    )
    g = torch.Generator().manual_seed(1)
    grids = (s, s // 2, s // 4)
    inputs = dict(
        backbone_feats=[torch.randn(1, d, k, k, generator=g) for k in grids],
        obj_queries=torch.randn(layers, 1, q, d, generator=g),
        image_ids=torch.zeros(1, dtype=torch.long),
        encoder_hidden_states=torch.randn(grids[-1] ** 2, 1, d, generator=g),
        prompt=torch.randn(32, 1, d, generator=g),
        prompt_mask=torch.zeros(1, 32, dtype=torch.bool),
    )
    return head, inputs


def region_head_for(d_model: int, num_iters: int) -> RegionHead:
    # conf/model/region_head/default.yaml knobs (num_heads 8 divides 64 and 256)
    torch.manual_seed(1)
    return RegionHead(d_model=d_model, num_iters=num_iters, num_heads=8, dim_feedforward=1024)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--size", choices=["tiny", "tiny_base", "full"], default="tiny",
                   help="conf/model/sam3/<size>.yaml; tiny_base: the shipped base (tiny_p7_stem)")
    p.add_argument("--prompts", type=int, default=1, help="text prompts per image (model mode)")
    p.add_argument("--mode", choices=["model", "head"], default="model")
    p.add_argument("--iters", type=int, nargs="*", default=[0, 1, 2, 3])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument(
        "--flops-only", action="store_true", help="count FLOPs (one forward per variant), no timing"
    )
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )

    if args.mode == "model":
        model, image_size = build_model(args.size)
        model = model.to(device).eval()
        plain_head = model.segmentation_head
        batch = make_batch(image_size, device, args.prompts)
        total = n_params(model)

        def run(head: nn.Module) -> None:
            model.segmentation_head = head
            with torch.no_grad(), autocast:
                model(batch)

    else:
        plain_head, inputs = standalone_head(args.size)
        plain_head = plain_head.to(device).eval()
        inputs = {
            k: (v.to(device) if isinstance(v, torch.Tensor) else [t.to(device) for t in v])
            for k, v in inputs.items()
        }
        total = n_params(plain_head)

        def run(head: nn.Module) -> None:
            with torch.no_grad(), autocast:
                head(**inputs)

    d_model = plain_head.d_model
    what = "whole Sam3Image" if args.mode == "model" else "segmentation head only"
    dev = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"CPU x{torch.get_num_threads()}"
    )
    prec = "bf16 autocast" if device.type == "cuda" else "fp32"
    print(f"== {what} ({args.size}, {args.prompts} prompt(s)) on {dev}, {prec}, eval, no_grad ==")
    print(
        f"{'variant':>10} {'params':>14} {'+region_head':>13} {'median ms':>10} {'vs plain':>9} "
        f"{'min ms':>10} {'vs plain':>9} {'GFLOP':>9} {'vs plain':>9}"
    )
    variants: list[tuple[str, nn.Module, int]] = [("plain", plain_head, 0)]
    for t in args.iters:
        rh = region_head_for(d_model, t).to(device)
        # the builder reuses plain_head's modules; plain_head itself stays usable
        variants.append((f"T={t}", build_region_seg_head(plain_head, rh).eval(), n_params(rh)))
    # Round-robin over variants (not variant after variant) so a load change on a shared machine
    # hits every variant alike; report the median and the min over rounds.
    for _name, head, _extra in variants if not args.flops_only else []:  # warm-up
        run(head)
    times: list[list[float]] = [[] for _ in variants]
    for _ in range(0 if args.flops_only else args.repeats):
        for i, (_name, head, _extra) in enumerate(variants):
            _sync(device)
            t0 = time.perf_counter()
            run(head)
            _sync(device)
            times[i].append((time.perf_counter() - t0) * 1e3)
    med = [sorted(t)[len(t) // 2] if t else float("nan") for t in times]
    # Noise-free companion: counted FLOPs (matmul/conv/attention) of one forward per variant.
    gflops = []
    for _name, head, _extra in variants:
        with FlopCounterMode(display=False) as fc:
            run(head)
        gflops.append(fc.get_total_flops() / 1e9)
    mins = [min(t) if t else float("nan") for t in times]
    for (name, _head, extra), m, mn, gf in zip(variants, med, mins, gflops):
        print(
            f"{name:>10} {total + extra:>14,} {extra:>13,} {m:10.1f} {m / med[0]:8.2f}x "
            f"{mn:10.1f} {mn / mins[0]:8.2f}x {gf:9.2f} {gf / gflops[0]:8.3f}x"
        )


if __name__ == "__main__":
    main()
