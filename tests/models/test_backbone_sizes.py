"""Backbone size knobs of the tiny model: patch 7, the neck's levels, the conv stem."""

from __future__ import annotations

import pytest
import torch
from helpers import compose_sam3
from hydra.utils import instantiate

from region_sam3.models.conv_stem import ConvStemPatchEmbed


@pytest.mark.parametrize("name", ["tiny", "tiny_p7", "tiny_p7_stem"])
def test_candidates_keep_every_downstream_shape(name):
    torch.manual_seed(0)
    model = instantiate(compose_sam3(name))
    out = model.backbone.forward_image(torch.zeros(1, 3, 224, 224))
    # mask grid 64², the fusion encoder's 16² memory: identical for every candidate
    assert [tuple(f.shape[-2:]) for f in out["backbone_fpn"]] == [(64, 64), (32, 32), (16, 16)]
    assert tuple(out["vision_features"].shape) == (1, 64, 16, 16)


def test_patch7_has_four_times_the_tokens():
    model = instantiate(compose_sam3("tiny_p7"))
    trunk = model.backbone.vision_backbone.trunk
    tokens = trunk.patch_embed(torch.zeros(1, 3, 224, 224))
    assert tuple(tokens.shape[1:3]) == (32, 32)


def test_conv_stem_feeds_the_patch_projection():
    model = instantiate(compose_sam3("tiny_p7_stem"))
    embed = model.backbone.vision_backbone.trunk.patch_embed
    assert isinstance(embed, ConvStemPatchEmbed)
    assert [m.out_channels for m in embed.stem if isinstance(m, torch.nn.Conv2d)] == [16, 16]
    keys = model.state_dict().keys()
    assert "backbone.vision_backbone.trunk.patch_embed.proj.weight" in keys
    assert "backbone.vision_backbone.trunk.patch_embed.stem.0.weight" in keys
    # a stride-1 stem: one changed pixel changes only the tokens of its neighbourhood
    x = torch.zeros(1, 3, 224, 224)
    y = x.clone()
    y[0, :, 100, 100] = 1.0
    with torch.no_grad():
        changed = (embed(x) - embed(y)).abs().sum(-1)[0] > 0
    assert changed.sum() <= 4 and changed[100 // 7, 100 // 7]
