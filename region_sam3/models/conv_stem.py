"""A convolutional stem in front of SAM3's ViT patch embedding (a size knob of the tiny model).

SAM3's `PatchEmbed` is one linear projection of each p x p patch. In the tiny model a patch is
all the ViT ever sees of an object's outline at pixel level: the backbone diagnosis found it
encodes colour (a per-patch statistic) but barely shape. A few stride-1 3x3 convolutions before
the patchify projection give each token edge and corner features of its patch and its
neighbours (a CNN's locality bias; Xiao et al. 2021, "Early convolutions help transformers see
better"). The patchify projection keeps its name (`patch_embed.proj`), so the rest of the ViT
and every downstream shape are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ConvStemPatchEmbed(nn.Module):
    """3x3 conv + GELU layers, then the patchify conv; output [B,H/p,W/p,D] like `PatchEmbed`."""

    def __init__(self, channels: Sequence[int], patch_size: int, embed_dim: int,
                 in_chans: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_chans
        for width in channels:
            layers += [nn.Conv2d(previous, width, kernel_size=3, padding=1), nn.GELU()]
            previous = width
        self.stem = nn.Sequential(*layers)
        self.proj = nn.Conv2d(previous, embed_dim, kernel_size=patch_size, stride=patch_size,
                              bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,3,H,W] -> tokens [B,H/p,W/p,D]."""
        return self.proj(self.stem(x)).permute(0, 2, 3, 1)


def add_conv_stem_(vit: nn.Module, channels: Sequence[int], patch_size: int) -> None:
    """Replace `vit.patch_embed` by a `ConvStemPatchEmbed` (no-op for an empty `channels`)."""
    if not channels:
        return
    embed_dim = vit.patch_embed.proj.out_channels
    vit.patch_embed = ConvStemPatchEmbed(channels, patch_size, embed_dim)
