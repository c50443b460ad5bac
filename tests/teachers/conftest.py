"""Fixtures for teacher tests."""

import pytest
import torch
from teacher_helpers import make_images


@pytest.fixture
def images() -> torch.Tensor:
    """``[2, 3, 64, 64]`` seeded RGB in [0, 1]."""
    return make_images()
