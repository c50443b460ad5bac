"""Benchmark mask-guided pooling: batched matmul vs per-region loop vs query-chunked.

Shapes follow the official model: Q=200 regions, C=256 channels, the 72^2 memory grid and the
288^2 pixel-embedding grid, one find-query (B=1). Prints ms, achieved GFLOP/s and GB/s next to
peaks measured in the same run (a large matmul and a large memcpy), so the numbers say how
close pooling is to the machine's limits. Pooling is ``2*Q*C*N`` FLOPs and reads the masks
(Q*N) and features (C*N) once, so it is a skinny GEMM: memory-bound at small Q, compute-bound
when Q*C is large.

    PYTHONPATH=. python benchmarks/pooling.py [--q 200] [--c 256] [--grids 72 288] [--repeats 5]

fp32 on CPU; additionally bf16 inputs (fp32 accumulation) when CUDA is available.
"""

from __future__ import annotations

import argparse

import torch

from region_sam3.models.pooling import mask_pool
from region_sam3.utils.timing import timeit


def measure_peaks(device: torch.device, dtype: torch.dtype, repeats: int) -> tuple[float, float]:
    """(matmul GFLOP/s, memcpy GB/s) measured on this machine now."""
    n = 2048 if device.type == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    ms = timeit(lambda: a @ b, device, repeats)
    gflops = 2 * n**3 / (ms * 1e-3) / 1e9
    src = torch.empty(64 * 2**20, device=device, dtype=torch.float32)  # 256 MiB
    dst = torch.empty_like(src)
    ms = timeit(lambda: dst.copy_(src), device, repeats)
    gbs = 2 * src.numel() * 4 / (ms * 1e-3) / 1e9  # read + write
    return gflops, gbs


def loop_pool(masks: torch.Tensor, feats: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-region Python loop (one mat-vec per region): the baseline the batched path replaces.

    Args:
        masks: [B,Q,H,W]; feats: [B,C,H,W] (same grid).

    Returns:
        [B,Q,C] fp32.
    """
    f = feats.float().flatten(2)  # [B,C,N]
    a = masks.float().flatten(2)  # [B,Q,N]
    out = torch.empty(a.shape[0], a.shape[1], f.shape[1], device=f.device)
    for b in range(a.shape[0]):
        for k in range(a.shape[1]):
            out[b, k] = f[b] @ a[b, k] / (a[b, k].sum() + eps)
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--q", type=int, default=200)
    p.add_argument("--c", type=int, default=256)
    p.add_argument("--grids", type=int, nargs="+", default=[72, 288])
    p.add_argument("--chunk", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    configs = [(torch.device("cpu"), torch.float32)]
    if torch.cuda.is_available():
        configs += [(torch.device("cuda"), torch.float32), (torch.device("cuda"), torch.bfloat16)]

    for device, dtype in configs:
        peak_f, peak_b = measure_peaks(
            device, torch.float32 if dtype == torch.float32 else dtype, args.repeats
        )
        name = (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else f"CPU x{torch.get_num_threads()} threads"
        )
        print(f"\n== {name}, inputs {str(dtype).replace('torch.', '')} (fp32 accumulation) ==")
        print(f"peak: matmul {peak_f:8.1f} GFLOP/s   memcpy {peak_b:7.1f} GB/s")
        print(
            f"{'grid':>5} {'method':>14} {'ms':>9} {'GFLOP/s':>9} {'%peak':>6} {'GB/s':>8} {'%peak':>6}"
        )
        for g in args.grids:
            n = g * g
            masks = torch.rand(1, args.q, g, g, device=device).to(dtype)
            feats = torch.randn(1, args.c, g, g, device=device).to(dtype)
            flops = 2 * args.q * args.c * n + args.q * n  # matmul + denominators
            bytes_ = (args.q * n + args.c * n) * masks.element_size() + args.q * args.c * 4
            methods = {
                "batched": lambda m=masks, f=feats: mask_pool(m, f),
                f"chunked({args.chunk})": lambda m=masks, f=feats: mask_pool(
                    m, f, chunk_size=args.chunk
                ),
                "loop": lambda m=masks, f=feats: loop_pool(m, f),
            }
            ref = mask_pool(masks, feats)
            assert torch.allclose(loop_pool(masks, feats), ref, rtol=1e-3, atol=1e-4)
            for mname, fn in methods.items():
                reps = max(1, args.repeats // 2) if mname == "loop" else args.repeats
                ms = timeit(fn, device, reps)
                gf = flops / (ms * 1e-3) / 1e9
                gb = bytes_ / (ms * 1e-3) / 1e9
                print(
                    f"{g:>4}² {mname:>14} {ms:9.2f} {gf:9.1f} {100 * gf / peak_f:5.0f}% "
                    f"{gb:8.1f} {100 * gb / peak_b:5.0f}%"
                )


if __name__ == "__main__":
    main()
