"""Shared fixtures (CPU, seeded). Helpers live in `tests/helpers.py`."""

from __future__ import annotations

import os

import pytest

from helpers import build_tiny_sam3, make_find_batch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")


@pytest.fixture
def tiny_sam3():
    return build_tiny_sam3()


@pytest.fixture
def find_batch():
    return make_find_batch()
