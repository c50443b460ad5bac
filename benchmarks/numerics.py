"""Cost of portable CPU numerics (`region_sam3/utils/numerics.py`): training-step time with the
AVX2 kernel set against the CPU's native one, measured alternately in fresh processes.

Each round runs `benchmarks/train_step.py` once per setting (a process per run, because the
kernel set is fixed when torch loads) and reads its median process CPU time per step (stable
when other jobs share the machine). Prints per-setting medians over rounds and the ratio.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/numerics.py --variants main pretrain --rounds 3
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

from region_sam3.utils.numerics import PORTABLE_ENV, SWITCH

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"portable (AVX2)": "portable", "native": "native"}


def cpu_per_step(variant: str, mode: str, steps: int) -> float:
    """Median CPU seconds per step of `variant` under `REGION_SAM3_NUMERICS=mode`."""
    code = ("import sys, runpy\n"
            "from region_sam3.utils.numerics import apply_portable_numerics\n"
            "apply_portable_numerics()\n"
            f"sys.argv = ['train_step.py', '--variants', {variant!r}, '--steps', '{steps}', "
            "'--threads', '1']\n"
            f"runpy.run_path({str(ROOT / 'benchmarks' / 'train_step.py')!r}, run_name='__main__')")
    env = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV}
    env.update({SWITCH: mode, "PYTHONPATH": str(ROOT)})
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    # the variant's table row; its last column is `cpu`
    match = re.search(rf"^{re.escape(variant)}\s.*?([0-9.]+)\s*$", out, re.M)
    if match is None:
        raise RuntimeError(f"no cpu figure for {variant} in train_step.py output:\n{out}")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="*", default=["main"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    for variant in args.variants:
        times: dict[str, list[float]] = {name: [] for name in SETTINGS}
        for _ in range(args.rounds):
            for name, mode in SETTINGS.items():
                times[name].append(cpu_per_step(variant, mode, args.steps))
        med = {name: statistics.median(v) for name, v in times.items()}
        print(f"{variant}: " + ", ".join(f"{n} {m:.3f} s/step" for n, m in med.items())
              + f"; portable / native = {med['portable (AVX2)'] / med['native']:.2f}"
              f" ({args.rounds} rounds, CPU time, 1 thread)")


if __name__ == "__main__":
    main()
