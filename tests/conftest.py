"""Shared fixtures (CPU, seeded). Helpers live in `tests/helpers.py`."""

from __future__ import annotations

import os

import pytest
import torch
from helpers import build_tiny_sam3, make_find_batch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")
# Two cores: extra intra-op threads only add contention between test processes. An explicit
# OMP_NUM_THREADS (e.g. 1 on a shared machine) wins: torch already follows it.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def tiny_sam3():
    return build_tiny_sam3()


@pytest.fixture
def find_batch():
    return make_find_batch()


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory):
    """One synthetic dataset root shared by the whole session (generated on first use)."""
    return tmp_path_factory.mktemp("data")
