"""Hydra teacher configs: tiny ones instantiate; real ones name valid open_clip tags."""

from pathlib import Path

import open_clip
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from region_sam3.teachers import RegionTeacher

CONF = Path(__file__).resolve().parents[2] / "conf" / "teacher"


@pytest.mark.parametrize("name", ["tiny_clip", "tiny_siglip", "tiny_pe"])
def test_tiny_configs_instantiate(name: str) -> None:
    torch.manual_seed(0)
    teacher = instantiate(OmegaConf.load(CONF / f"{name}.yaml"))
    assert isinstance(teacher, RegionTeacher)
    out = teacher(torch.rand(1, 3, 64, 64), torch.ones(2, 64, 64))
    assert out.shape[0] == 2 and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["clip_vit_b16", "siglip2_b16", "pe_core_b16"])
def test_real_configs_reference_known_tags(name: str) -> None:
    cfg = OmegaConf.load(CONF / f"{name}.yaml")  # not instantiated: no weights offline
    assert cfg.model_name in open_clip.list_models()
    assert cfg.pretrained in open_clip.list_pretrained_tags_by_model(cfg.model_name)
