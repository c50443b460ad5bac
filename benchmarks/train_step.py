"""Training-step time of the LightningModule, split into forward / loss / backward / optimizer.

Composes `conf/train.yaml` (plus any Hydra overrides), builds `RegionSam3Module` and the
DataModule, and times full training steps on real synthetic batches (the first `--warmup`
steps are discarded). Variants run side by side in one process:

* ``pretrain``: `experiment=pretrain_tiny` (random tiny SAM3, everything trainable);
* ``main``: the `python train.py` default (`experiment=main`: frozen base + region head, T=2);
* ``region_head``: `experiment=region_head` (frozen base + region head, T=2, full epochs).

CPU fp32 by default; on CUDA the forward runs under bf16 autocast like `trainer=gpu`. Besides
wall time per phase, ``cpu`` is the median process CPU time of a whole step: with one thread
it measures the work itself, and stays comparable when other jobs share the machine (wall time
then mostly measures the contention).

    PYTHONPATH=. python benchmarks/train_step.py
    PYTHONPATH=. python benchmarks/train_step.py --variants pretrain --steps 10
    PYTHONPATH=. python benchmarks/train_step.py --variants pretrain -o model/sam3=full \
        -o model.sam3.checkpoint=null -o data.batch_size=2       # full size (GPU)
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import torch

from region_sam3.utils.timing import synchronize

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
VARIANTS = {
    "pretrain": ["experiment=pretrain_tiny"],
    "main": [],
    "region_head": ["experiment=region_head"],
}


def build(overrides: list[str], data_dir: str, device: torch.device):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from region_sam3.lit.optim import build_optimizer

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.data_dir={data_dir}", *overrides])
    torch.manual_seed(0)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = instantiate(cfg.model).to(device).train()
    optimizer = build_optimizer(module.net, cfg.model.optimizer)
    return module, datamodule, optimizer


def time_steps(module, datamodule, optimizer, device, steps: int, warmup: int) -> dict:
    """Median seconds per phase over `steps` training steps (after `warmup` steps)."""
    from region_sam3.data.sam3_adapter import to_sam3_batch

    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    phases: dict[str, list[float]] = {"forward": [], "loss": [], "backward": [], "optimizer": []}
    batches = iter(datamodule.train_dataloader())
    queries, cpu = [], []
    for index in range(warmup + steps):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(datamodule.train_dataloader())
            batch = next(batches)
        sam3_batch = to_sam3_batch(
            batch, device, semantic=module.criterion.needs_semantic_masks)
        cpu_start = time.process_time()
        marks = [time.perf_counter()]
        with autocast:
            outputs = module.net(sam3_batch)
            synchronize(device)
            marks.append(time.perf_counter())
            targets = [module.net.back_convert(t) for t in sam3_batch.find_targets]
            loss = module.criterion(outputs, targets)["total"]
        synchronize(device)
        marks.append(time.perf_counter())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        synchronize(device)
        marks.append(time.perf_counter())
        optimizer.step()
        synchronize(device)
        marks.append(time.perf_counter())
        if index >= warmup:
            cpu.append(time.process_time() - cpu_start)
            queries.append(batch.num_queries)
            for name, start, end in zip(phases, marks, marks[1:]):
                phases[name].append(end - start)
    result = {name: statistics.median(values) for name, values in phases.items()}
    result["step"] = sum(result.values())
    result["cpu"] = statistics.median(cpu)
    result["queries"] = statistics.mean(queries)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--data-dir", default=None,
                        help="synthetic data root (default: a temporary directory)")
    parser.add_argument("-o", "--override", action="append", default=[],
                        help="extra Hydra override for every variant (repeatable)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's / OMP_NUM_THREADS)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    overrides = ["data.num_workers=0", *args.override]
    with contextlib.ExitStack() as stack:
        data_dir = args.data_dir or stack.enter_context(tempfile.TemporaryDirectory())
        print(f"device={device} threads={torch.get_num_threads()} steps={args.steps} "
              f"(median seconds per phase)")
        print(f"{'variant':12s} {'trainable':>10s} {'queries':>7s} {'forward':>8s} {'loss':>7s} "
              f"{'backward':>8s} {'optim':>7s} {'step':>7s} {'cpu':>7s}")
        for name in args.variants:
            module, datamodule, optimizer = build(VARIANTS[name] + overrides, data_dir, device)
            trainable = sum(p.numel() for p in module.net.parameters() if p.requires_grad)
            r = time_steps(module, datamodule, optimizer, device, args.steps, args.warmup)
            print(f"{name:12s} {trainable:10,d} {r['queries']:7.1f} {r['forward']:8.3f} "
                  f"{r['loss']:7.3f} {r['backward']:8.3f} {r['optimizer']:7.3f} {r['step']:7.3f} "
                  f"{r['cpu']:7.3f}", flush=True)


if __name__ == "__main__":
    main()
