"""Measurements of `benchmarks/gpu_suite.py`: model building, synthetic batches, training-step
throughput / memory / largest batch, one validation step, head overhead and pooling roofline.

Every function works on CUDA (bf16 autocast, synchronised timers, `max_memory_allocated`,
OOM-tolerant batch search) and on the CPU (fp32, process max RSS instead of GPU memory).
"""

from __future__ import annotations

import contextlib
import gc
import resource
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from region_sam3.data.batch import FindQuerySample, collate_find_queries
from region_sam3.utils.timing import synchronize, timeit

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
GIB = 2**30


# ---------------------------------------------------------------------------- building
def compose_model_cfg(overrides: Sequence[str]):
    """`cfg.model` of `conf/train.yaml` composed with `overrides` (no data is built)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["paths.data_dir=/nonexistent", *overrides])
    OmegaConf.resolve(cfg.model)
    return cfg.model


def build_module(overrides: Sequence[str], device: torch.device, category_names: Sequence[str]):
    """`RegionSam3Module` with random weights on `device`, train mode, and its AdamW optimiser
    (None when nothing is trainable, e.g. the frozen base with a T=0 head).

    The teacher's category text embeddings are computed on the CPU *before* `.to(device)`, as
    Lightning's `setup` does, so the suite also checks that the buffer follows the module.
    """
    from hydra.utils import instantiate

    from region_sam3.lit.optim import build_optimizer

    cfg = compose_model_cfg(overrides)
    torch.manual_seed(0)
    module = instantiate(cfg)
    if module.teacher is not None:
        module._category_ids = list(range(1, len(category_names) + 1))
        module._text_embeds = module.teacher.encode_text(list(category_names))
    module = module.to(device).train()
    if not any(p.requires_grad for p in module.net.parameters()):
        return module, None
    optimizer = build_optimizer(module.net, cfg.optimizer)
    return module, optimizer


def count_params(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# ---------------------------------------------------------------------------- batches
def make_batch(num_images: int, image_size: int, queries_per_image: int, positives: int,
               targets_per_positive: int = 2, seed: int = 0):
    """A collated `FindQueryBatch` of random images with rectangle instances.

    Each image gets `queries_per_image` text prompts, the first `positives` of which own
    `targets_per_positive` instances each; the rest are negatives (as COCO training with
    negatives and COCO evaluation, which asks all 80 categories, do).
    """
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(num_images):
        k = positives * targets_per_positive
        masks = torch.zeros(k, image_size, image_size, dtype=torch.bool)
        boxes = torch.zeros(k, 4)
        for j in range(k):
            x0, y0 = (torch.rand(2, generator=g) * 0.6).tolist()
            w, h = (0.1 + torch.rand(2, generator=g) * 0.3).tolist()
            masks[j, int(y0 * image_size):int((y0 + h) * image_size),
                  int(x0 * image_size):int((x0 + w) * image_size)] = True
            boxes[j] = torch.tensor([x0 + w / 2, y0 + h / 2, w, h])
        rows = [list(range(q * targets_per_positive, (q + 1) * targets_per_positive))
                if q < positives else [] for q in range(queries_per_image)]
        samples.append(FindQuerySample(
            image=torch.randn(3, image_size, image_size, generator=g),
            masks=masks, boxes_cxcywh=boxes, annotation_ids=torch.arange(k) + 1000 * i,
            prompts=[f"category {q}" for q in range(queries_per_image)],
            category_ids=list(range(1, queries_per_image + 1)), target_rows=rows,
            is_exhaustive=[True] * queries_per_image, image_id=i, file_name=f"{i}.jpg",
            orig_size=(image_size, image_size), valid_size=(image_size, image_size)))
    return collate_find_queries(samples)


# ---------------------------------------------------------------------------- train steps
def autocast_for(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(module, optimizer, batch, device: torch.device) -> None:
    """One optimisation step: the module's losses (as `training_step`) -> backward -> AdamW.
    Without an optimiser (nothing trains) only the forward and the losses run."""
    with autocast_for(device), torch.set_grad_enabled(optimizer is not None):
        loss = module._losses(batch)["total"]
    if optimizer is None:
        return
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _release(device: torch.device, optimizer=None) -> None:
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def fits(step: Callable[[int], None], batch_size: int, device: torch.device, optimizer) -> bool:
    """Whether one training step at `batch_size` runs without CUDA out-of-memory."""
    try:
        step(batch_size)
        synchronize(device)
        return True
    except torch.cuda.OutOfMemoryError:
        return False  # the traceback (and the activations it holds) is dropped on return
    finally:
        _release(device, optimizer)


def search_largest_batch(fits_at: Callable[[int], bool], max_batch: int) -> tuple[int, bool]:
    """Largest batch `b <= max_batch` with `fits_at(b)`: doubling, then bisection.

    Returns:
        (b, capped): `capped` is True when `max_batch` itself fit (b is then a lower bound);
        b = 0 when not even one image fits.
    """
    good, bad, b = 0, max_batch + 1, 1
    while good < b < bad:
        if fits_at(b):
            good, b = b, min(2 * b, max_batch)
        else:
            bad = b
    while bad - good > 1:
        mid = (good + bad) // 2
        if fits_at(mid):
            good = mid
        else:
            bad = mid
    return good, good == max_batch


def peak_memory_gib(device: torch.device) -> float:
    """Peak GPU memory allocated since the last reset (GiB); on the CPU the process max RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / GIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # KiB on Linux


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def count_cuda_syncs(fn: Callable[[], None], device: torch.device) -> float:
    """Host-device syncs during `fn` (`torch.cuda.set_sync_debug_mode("warn")`); NaN on CPU."""
    if device.type != "cuda":
        return float("nan")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
            synchronize(device)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return float(sum("synchroniz" in str(w.message) for w in caught))


def measure_training(module, optimizer, device: torch.device, *, image_size: int,
                     queries: int, positives: int, max_batch: int, steps: int,
                     warmup: int = 1) -> dict[str, Any]:
    """Largest batch per device, then images/s, step time and peak memory at that batch."""
    # Batches go to the device before the step, as Lightning's transfer hook does (the module's
    # distillation path reads the batch's masks and ids directly).
    def step(batch_size: int) -> None:
        train_step(module, optimizer,
                   make_batch(batch_size, image_size, queries, positives).to(device), device)

    largest, capped = search_largest_batch(
        lambda b: fits(step, b, device, optimizer), max_batch)
    result = {"largest_batch": largest, "capped": capped, "images_per_s": float("nan"),
              "step_ms": float("nan"), "peak_gib": float("nan"), "syncs": float("nan")}
    if largest == 0:
        return result
    batch = make_batch(largest, image_size, queries, positives).to(device)
    for _ in range(warmup):
        train_step(module, optimizer, batch, device)
    result["syncs"] = count_cuda_syncs(lambda: train_step(module, optimizer, batch, device), device)
    reset_peak_memory(device)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        train_step(module, optimizer, batch, device)
    synchronize(device)
    seconds = time.perf_counter() - start
    result.update(images_per_s=largest * steps / seconds, step_ms=1e3 * seconds / steps,
                  peak_gib=peak_memory_gib(device))
    _release(device, optimizer)
    return result


# ---------------------------------------------------------------------------- validation
def measure_validation(module, device: torch.device, *, image_size: int, prompts: int,
                       positives: int, num_images: int = 1) -> dict[str, float]:
    """One `validation_step` (model + post-processing + evaluator update) with `prompts` per
    image, through the module's public evaluation hooks; then the epoch-end metrics."""
    batch = make_batch(num_images, image_size, prompts, positives, seed=1).to(device)
    module.eval()
    module.log = module.log_dict = lambda *a, **k: None  # no trainer attached
    module.on_validation_epoch_start()
    with torch.no_grad(), autocast_for(device):
        module.validation_step(batch, 0)  # warm-up (kernels, allocator)
        module.on_validation_epoch_start()
        reset_peak_memory(device)
        synchronize(device)
        start = time.perf_counter()
        module.validation_step(batch, 0)
        synchronize(device)
        seconds = time.perf_counter() - start
    peak = peak_memory_gib(device)
    module.on_validation_epoch_end()
    module.train()
    return {"step_ms": 1e3 * seconds, "images_per_s": num_images / seconds, "peak_gib": peak,
            "queries": float(batch.num_queries)}


# ---------------------------------------------------------------------------- head overhead
def measure_head_overhead(plain_net, region_heads: dict[str, torch.nn.Module],
                          device: torch.device, *, image_size: int, prompts: Sequence[int],
                          repeats: int) -> list[dict[str, Any]]:
    """Parameters and eval forward latency of plain SAM3 vs the same model with region heads.

    The region-aware heads reuse every upstream module of `plain_net`'s head
    (`build_region_seg_head`), so all variants run the same weights; variants are timed
    round-robin so load changes hit them alike. Latency: one image with `p` text prompts.
    """
    from region_sam3.data.sam3_adapter import to_sam3_batch
    from region_sam3.models.region_seg_head import build_region_seg_head

    plain_net = plain_net.to(device).eval()
    plain_head = plain_net.segmentation_head
    variants = {"plain SAM3": (plain_head, 0)}
    for name, rh in region_heads.items():
        variants[name] = (build_region_seg_head(plain_head, rh.to(device)).eval(),
                          count_params(rh))
    base = count_params(plain_net)
    rows = []
    for p in prompts:
        batch = to_sam3_batch(make_batch(1, image_size, p, min(p, 4), seed=2), device)

        def run(head, batch=batch):
            plain_net.segmentation_head = head
            with torch.no_grad(), autocast_for(device):
                plain_net(batch)

        for head, _ in variants.values():
            run(head)  # warm-up
        times: dict[str, list[float]] = {n: [] for n in variants}
        for _ in range(repeats):
            for name, (head, _) in variants.items():
                times[name].append(timeit(lambda h=head: run(h), device, repeats=1, warmup=0))
        plain_ms = sorted(times["plain SAM3"])[len(times["plain SAM3"]) // 2]
        for name, (_, extra) in variants.items():
            ms = sorted(times[name])[len(times[name]) // 2]
            rows.append({"variant": name, "prompts": p, "params": base + extra,
                         "params_pct": 100 * extra / base, "ms": ms,
                         "ms_pct": 100 * (ms - plain_ms) / plain_ms})
    plain_net.segmentation_head = plain_head
    return rows


# ---------------------------------------------------------------------------- pooling
def measure_peaks(device: torch.device, dtype: torch.dtype, matmul_n: int, copy_mib: int,
                  repeats: int) -> tuple[float, float]:
    """(matmul FLOP/s, copy bytes/s) measured now on `device` with `dtype` operands."""
    a = torch.randn(matmul_n, matmul_n, device=device, dtype=dtype)
    b = torch.randn(matmul_n, matmul_n, device=device, dtype=dtype)
    ms = timeit(lambda: a @ b, device, repeats)
    flops = 2 * matmul_n**3 / (ms * 1e-3)
    src = torch.empty(copy_mib * 2**20 // 4, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    ms = timeit(lambda: dst.copy_(src), device, repeats)
    return flops, 2 * src.numel() * 4 / (ms * 1e-3)  # read + write


def measure_pooling(device: torch.device, dtype: torch.dtype, *, q: int, c: int,
                    grids: Sequence[int], peaks: tuple[float, float],
                    repeats: int) -> list[dict[str, float]]:
    """`mask_pool` time per grid vs its roofline max(FLOPs / matmul peak, bytes / copy peak)."""
    from region_sam3.models.pooling import mask_pool

    peak_flops, peak_bytes = peaks
    rows = []
    for g in grids:
        n = g * g
        masks = torch.rand(1, q, g, g, device=device).to(dtype)
        feats = torch.randn(1, c, g, g, device=device).to(dtype)
        flops = 2 * q * c * n + q * n  # matmul + denominators
        nbytes = (q * n + c * n) * masks.element_size() + q * c * 4
        ms = timeit(lambda m=masks, f=feats: mask_pool(m, f), device, repeats)
        roof_ms = 1e3 * max(flops / peak_flops, nbytes / peak_bytes)
        rows.append({"grid": g, "ms": ms, "roofline_ms": roof_ms, "x_roofline": ms / roof_ms,
                     "tflops": flops / (ms * 1e-3) / 1e12})
    return rows
