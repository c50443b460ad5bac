"""RegionHead forward/backward is bit-identical to outputs saved from the pre-refactor code.

Golden tensors: tests/models/golden/region_head_golden.pt, made by
tests/models/golden/make_region_head_golden.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
sys.path.insert(0, str(GOLDEN_DIR))
from region_head_cases import CASES, run_case  # noqa: E402


@pytest.fixture(scope="module")
def golden() -> dict:
    return torch.load(GOLDEN_DIR / "region_head_golden.pt")


@pytest.mark.parametrize("name", sorted(CASES))
def test_region_head_matches_golden(name: str, golden: dict) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # same reduction order as when the golden file was made
    try:
        got = run_case(name)
    finally:
        torch.set_num_threads(threads)
    ref = golden[name]
    assert sorted(got) == sorted(ref), name
    for key, val in ref.items():
        assert torch.equal(got[key], val), f"{name}/{key}: max diff {(got[key] - val).abs().max()}"
