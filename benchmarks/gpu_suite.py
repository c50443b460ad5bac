"""GPU verification suite for training at official size, in one command.

Random weights at official size (`conf/model/sam3/full.yaml`: 1008 px, 848M parameters,
200 queries) built by the project's own factories, bf16 autocast on CUDA:

1. training steps of `experiment=region_head_full` (frozen SAM3 + region head, T = 0..3), of
   `experiment=distill_clip` (real-size ViT-B/16 teacher, random weights) and of full fine-tuning
   (plain SAM3, nothing frozen; the reference): largest batch per device (doubling + bisection,
   OOM caught), then images/s, step time, peak memory and host-device syncs per step at it;
2. one validation step with 80 prompts per image through the module's evaluation hooks
   (`on_validation_epoch_start` / `validation_step` / `on_validation_epoch_end`);
3. head overhead: parameters and eval forward latency at T = 0..3 vs plain SAM3, side by side;
4. mask pooling at Q=200, C=256 on the 72² and 288² grids vs the roofline from the matmul and
   copy peaks measured in the same run (bf16 on CUDA).

It prints markdown tables and the issue's goals; `--out results/gpu.md` also writes them with
the device named. `--size tiny --device cpu` runs the same code paths on the tiny model (224 px)
in about a minute; `tests/benchmarks/test_gpu_suite.py` runs it so the suite stays ready.

    PYTHONPATH=. python benchmarks/gpu_suite.py --out results/gpu.md          # on a GPU
    PYTHONPATH=. python benchmarks/gpu_suite.py --size tiny --device cpu
"""

from __future__ import annotations

import argparse
import gc
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path

import gpu_suite_parts as parts
import torch


@dataclass
class SizePreset:
    """Everything that differs between the official and the tiny run."""

    sam3: list[str]
    teacher: list[str]
    image_size: int
    train_queries: int  # prompts per training image (data=coco: max_queries_per_image 16)
    train_positives: int
    max_batch: int
    steps: int
    latency_prompts: list[int]
    val_prompts: int  # prompts per validation image (COCO evaluation asks all 80 categories)
    pool: dict = field(default_factory=dict)
    peaks: dict = field(default_factory=dict)
    repeats: int = 5


PRESETS = {
    "full": SizePreset(
        sam3=["model.sam3.checkpoint=null", "model.sam3.strict=false"],
        teacher=["teacher.pretrained=null"], image_size=1008, train_queries=16,
        train_positives=4, max_batch=32, steps=5, latency_prompts=[1, 80], val_prompts=80,
        pool={"q": 200, "c": 256, "grids": [72, 288]},
        peaks={"matmul_n": 8192, "copy_mib": 1024}),
    "tiny": SizePreset(
        sam3=["model/sam3=tiny", "model.sam3.checkpoint=null", "model.sam3.strict=false",
              "model.criterion.num_sample_points=256"],
        teacher=["teacher=tiny_clip"], image_size=224, train_queries=4, train_positives=2,
        max_batch=2, steps=1, latency_prompts=[1, 2], val_prompts=8,
        pool={"q": 24, "c": 64, "grids": [16, 64]},
        peaks={"matmul_n": 512, "copy_mib": 16}, repeats=2),
}
NUM_ITERS = (0, 1, 2, 3)
CATEGORIES = 80


def training_configs(preset: SizePreset) -> dict[str, list[str]]:
    """Name -> Hydra overrides of the training setups the suite measures."""
    configs = {f"region_head_full T={t}": [
        "experiment=region_head_full", *preset.sam3, f"model.region_head.num_iters={t}"]
        for t in NUM_ITERS}
    configs["distill_clip (T=2)"] = ["experiment=distill_clip", *preset.sam3, *preset.teacher]
    configs["full fine-tuning (plain SAM3)"] = [
        "experiment=region_head_full", "model.region_head=null", *preset.sam3, "model.sam3.freeze=[]"]
    return configs


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / parts.GIB:.0f} GiB)"
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if isinstance(value, float) and math.isnan(value) else f"{value:.{digits}f}"


def run_suite(size: str, device: torch.device) -> str:
    """Run every measurement; return the markdown report."""
    preset = PRESETS[size]
    category_names = [f"category {i}" for i in range(CATEGORIES)]
    precision = "bf16 autocast" if device.type == "cuda" else "fp32"
    mem_label = "peak GPU mem GiB" if device.type == "cuda" else "process max RSS GiB"
    lines = [f"# GPU verification suite ({size} size)", "",
             f"Device: {device_name(device)}; {precision}; random weights; torch "
             f"{torch.__version__}.", ""]

    # 1. training -------------------------------------------------------------------------
    lines += ["## Training steps", "",
              f"{preset.train_queries} prompts/image ({preset.train_positives} positive), "
              f"{preset.image_size} px; largest batch searched up to {preset.max_batch}.", "",
              f"| config | trainable params | largest batch/device | images/s | step ms | "
              f"{mem_label} | host syncs/step |", "|---|---|---|---|---|---|---|"]
    train: dict[str, dict] = {}
    val_module = None
    for name, overrides in training_configs(preset).items():
        module, optimizer = parts.build_module(overrides, device, category_names)
        r = parts.measure_training(
            module, optimizer, device, image_size=preset.image_size,
            queries=preset.train_queries, positives=preset.train_positives,
            max_batch=preset.max_batch, steps=preset.steps)
        r["trainable"] = parts.count_params(module, trainable_only=True)
        if optimizer is None:
            name += " (nothing trains: forward + losses)"
        train[name.split(" (nothing")[0]] = r
        batch = f"{'≥' if r['capped'] else ''}{r['largest_batch']}"
        lines.append(f"| {name} | {r['trainable'] / 1e6:.2f}M | {batch} | "
                     f"{_fmt(r['images_per_s'])} | {_fmt(r['step_ms'], 1)} | "
                     f"{_fmt(r['peak_gib'])} | {_fmt(r['syncs'], 0)} |")
        if name == "region_head_full T=2":
            val_module = module
        else:
            del module
        del optimizer
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    # 2. validation -----------------------------------------------------------------------
    v = parts.measure_validation(val_module, device, image_size=preset.image_size,
                                 prompts=preset.val_prompts, positives=4)
    del val_module
    gc.collect()
    lines += ["", "## Validation step (region_head_full T=2, evaluation hooks)", "",
              f"| prompts/image | step ms | images/s | {mem_label} |", "|---|---|---|---|",
              f"| {preset.val_prompts} | {_fmt(v['step_ms'], 1)} | {_fmt(v['images_per_s'])} | "
              f"{_fmt(v['peak_gib'])} |"]

    # 3. head overhead --------------------------------------------------------------------
    from hydra.utils import instantiate

    cfg = parts.compose_model_cfg(["experiment=region_head_full", *preset.sam3])
    torch.manual_seed(0)
    plain = instantiate(cfg.sam3)
    heads = {f"+ region head T={t}": instantiate(cfg.region_head, num_iters=t)
             for t in NUM_ITERS}
    rows = parts.measure_head_overhead(plain, heads, device, image_size=preset.image_size,
                                       prompts=preset.latency_prompts, repeats=preset.repeats)
    del plain, heads
    gc.collect()
    lines += ["", "## Head overhead (eval forward, one image)", "",
              "| variant | prompts | params | Δ params | latency ms | Δ latency |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['prompts']} | {r['params'] / 1e6:.2f}M | "
              f"+{r['params_pct']:.2f}% | {_fmt(r['ms'], 1)} | {r['ms_pct']:+.1f}% |"
              for r in rows]

    # 4. pooling --------------------------------------------------------------------------
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peaks = parts.measure_peaks(device, dtype, repeats=preset.repeats, **preset.peaks)
    pool = parts.measure_pooling(device, dtype, peaks=peaks, repeats=preset.repeats,
                                 **preset.pool)
    lines += ["", f"## Mask pooling (Q={preset.pool['q']}, C={preset.pool['c']}, "
              f"{str(dtype).removeprefix('torch.')})", "",
              f"Measured peaks: matmul {peaks[0] / 1e9:.1f} GFLOP/s, copy "
              f"{peaks[1] / 1e9:.0f} GB/s.", "",
              "| grid | ms | roofline ms | × roofline | GFLOP/s |", "|---|---|---|---|---|"]
    lines += [f"| {r['grid']}² | {r['ms']:.3f} | {r['roofline_ms']:.3f} | "
              f"{r['x_roofline']:.2f} | {r['tflops'] * 1e3:.1f} |" for r in pool]

    lines += ["", "## Goals (one H100/H200)", ""] + goals(train, rows, pool) + [""]
    return "\n".join(lines)


def goals(train: dict, overhead: list[dict], pool: list[dict]) -> list[str]:
    """The issue's targets, each with the measured value and met / not met."""
    t2, ft = train["region_head_full T=2"], train["full fine-tuning (plain SAM3)"]
    t1 = [r for r in overhead if r["variant"] == "+ region head T=1"]
    speedup = t2["images_per_s"] / ft["images_per_s"]
    checks = [
        ("frozen base + head (T=2): ≥ 8 images/device", t2["largest_batch"] >= 8,
         f"{t2['largest_batch']}"),
        ("… ≥ 10× the images/s of full fine-tuning", speedup >= 10, f"{_fmt(speedup, 1)}×"),
        ("head T=1: ≤ +1% parameters", t1[0]["params_pct"] <= 1, f"+{t1[0]['params_pct']:.2f}%"),
        *[(f"head T=1: ≤ +5% latency ({r['prompts']} prompts)", r["ms_pct"] <= 5,
           f"{r['ms_pct']:+.1f}%") for r in t1],
        *[(f"pooling {r['grid']}²: ≤ 2× roofline", r["x_roofline"] <= 2,
           f"{r['x_roofline']:.2f}×") for r in pool],
    ]
    return ["| goal | measured | met |", "|---|---|---|"] + [
        f"| {text} | {value} | {'yes' if ok else 'no'} |" for text, ok, value in checks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(PRESETS), default="full")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--max-batch", type=int, default=None, help="batch search cap")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    args = parser.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.max_batch:
        PRESETS[args.size].max_batch = args.max_batch
    report = run_suite(args.size, device)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)


if __name__ == "__main__":
    main()
