"""Regenerate tests/models/golden/region_head_golden.pt (run only on code known to be right).

    python tests/models/golden/make_region_head_golden.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from region_head_cases import CASES, run_case  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    golden = {name: run_case(name) for name in CASES}
    torch.save(golden, HERE / "region_head_golden.pt")
    print(f"wrote {len(golden)} cases to {HERE / 'region_head_golden.pt'}")


if __name__ == "__main__":
    main()
