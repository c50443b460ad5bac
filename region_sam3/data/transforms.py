"""Joint image/mask transforms for find-query samples (torchvision.transforms.v2 + tv_tensors).

Boxes are not pushed through the geometric ops: they are recomputed from the final masks, so a
box always equals its mask's bounding box (nearest-neighbour resizing and crops would otherwise
make them disagree by a pixel or more) and instances cropped away are dropped in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

# SAM3 normalises images with mean = std = 0.5 per channel.
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
CROP_MODES = ("none", "lsj", "random_resized_crop")


@dataclass
class AugmentationConfig:
    """Training-time augmentation knobs (all off for evaluation).

    crop: "none", "lsj" (large-scale jitter: aspect-preserving rescale of the canvas by
    `scale_range`, then a random canvas-sized crop/pad) or "random_resized_crop" (area fraction
    `scale_range`, clipped to [0, 1]).
    """

    hflip_prob: float = 0.5
    crop: str = "lsj"
    scale_range: tuple[float, float] = (0.5, 1.5)
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02

    def __post_init__(self) -> None:
        if self.crop not in CROP_MODES:
            raise ValueError(f"augmentation.crop: {self.crop!r} not in {CROP_MODES}")
        self.scale_range = tuple(float(s) for s in self.scale_range)


@dataclass
class TransformOutput:
    image: torch.Tensor  # [3,R,R] float, normalised
    masks: torch.Tensor  # [K',R,R] bool, non-empty instances only
    boxes_cxcywh: torch.Tensor  # [K',4] float in [0,1]
    kept: torch.Tensor  # [K'] long, indices of the input instances that survived
    valid_size: tuple[int, int]  # (h, w) of the content inside the canvas


@dataclass
class FindQueryTransform:
    """Resize to the model resolution (square, as SAM3 does, or aspect-preserving with
    bottom/right zero padding), optional augmentation, normalisation.

    Call with image [3,H,W] uint8 and masks [K,H,W] (bool/uint8); returns `TransformOutput`.
    """

    resolution: int | None = 1008  # None: keep the original size (no resize, no padding)
    keep_aspect_ratio: bool = False
    augmentation: AugmentationConfig | None = None
    min_mask_pixels: int = 1
    _augment: v2.Transform | None = field(init=False, repr=False, default=None)
    _photometric: v2.Transform | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if isinstance(self.augmentation, dict):
            self.augmentation = AugmentationConfig(**self.augmentation)
        aug = self.augmentation
        if aug is not None and self.resolution is None:
            raise ValueError("FindQueryTransform: augmentation needs a resolution")
        if aug is None:
            return
        geometric: list[v2.Transform] = []
        if aug.hflip_prob > 0:
            geometric.append(v2.RandomHorizontalFlip(aug.hflip_prob))
        if aug.crop == "lsj":
            size = (self.resolution, self.resolution)
            geometric += [
                v2.ScaleJitter(size, scale_range=aug.scale_range, antialias=True),
                v2.RandomCrop(size, pad_if_needed=True, fill=0),
            ]
        elif aug.crop == "random_resized_crop":
            low, high = aug.scale_range
            geometric.append(
                v2.RandomResizedCrop(self.resolution, scale=(low, min(high, 1.0)), antialias=True)
            )
        self._augment = v2.Compose(geometric) if geometric else None
        if max(aug.brightness, aug.contrast, aug.saturation, aug.hue) > 0:
            self._photometric = v2.ColorJitter(
                aug.brightness, aug.contrast, aug.saturation, aug.hue
            )

    def _resize(self, image: tv_tensors.Image, masks: tv_tensors.Mask):
        height, width = image.shape[-2:]
        res = self.resolution
        if res is None:
            return image, masks
        if not self.keep_aspect_ratio:
            size = [res, res]
        else:
            scale = res / max(height, width)
            size = [max(1, round(height * scale)), max(1, round(width * scale))]
        if [height, width] != size:
            image = TF.resize(image, size, antialias=True)
            masks = TF.resize(masks, size, interpolation=v2.InterpolationMode.NEAREST)
        return image, masks

    def _pad_to_canvas(self, image: tv_tensors.Image, masks: tv_tensors.Mask):
        height, width = image.shape[-2:]
        if self.resolution is None:
            return image, masks
        pad = [0, 0, self.resolution - width, self.resolution - height]  # left, top, right, bottom
        if pad[2] or pad[3]:
            image, masks = TF.pad(image, pad, fill=0), TF.pad(masks, pad, fill=0)
        return image, masks

    def __call__(self, image: torch.Tensor, masks: torch.Tensor) -> TransformOutput:
        num_instances = masks.shape[0]
        # The extra all-ones channel tracks where real image content ends up (padding, crops).
        content = torch.ones(1, *image.shape[-2:], dtype=torch.uint8)
        image = tv_tensors.Image(image)
        stacked = tv_tensors.Mask(torch.cat([masks.to(torch.uint8), content]))
        # Colour jitter is per pixel, so run it at whichever resolution is smaller (upscaling
        # 224 px synthetic images to 1008 px would otherwise make it the dominant cost).
        jitter_first = image.shape[-2] * image.shape[-1] < (self.resolution or 0) ** 2
        if self._photometric is not None and jitter_first:
            image = self._photometric(image)
        image, stacked = self._resize(image, stacked)
        if self._augment is not None:
            image, stacked = self._augment(image, stacked)
        if self._photometric is not None and not jitter_first:
            image = self._photometric(image)
        image, stacked = self._pad_to_canvas(image, stacked)
        image = TF.to_dtype(image, torch.float32, scale=True)
        image = TF.normalize(image, IMAGE_MEAN, IMAGE_STD).as_subclass(torch.Tensor)

        stacked = stacked.as_subclass(torch.Tensor).bool()
        masks, content = stacked[:num_instances], stacked[num_instances]
        rows_any, cols_any = masks.any(2), masks.any(1)  # [K,H], [K,W]
        if self.min_mask_pixels > 1:
            big_enough = masks.flatten(1).sum(1, dtype=torch.int32) >= self.min_mask_pixels
        else:
            big_enough = rows_any.any(1)
        kept = torch.nonzero(big_enough).flatten()
        masks, rows_any, cols_any = masks[kept], rows_any[kept], cols_any[kept]
        rows, cols = content.any(1).nonzero(), content.any(0).nonzero()
        valid_size = (int(rows.max()) + 1, int(cols.max()) + 1) if len(rows) else (0, 0)
        return TransformOutput(
            image=image,
            masks=masks,
            boxes_cxcywh=_extent_boxes_cxcywh(rows_any, cols_any),
            kept=kept,
            valid_size=valid_size,
        )


def _extent_boxes_cxcywh(rows_any: torch.Tensor, cols_any: torch.Tensor) -> torch.Tensor:
    """[K,H] / [K,W] bool occupancy of non-empty masks -> [K,4] normalised (cx,cy,w,h).

    A mask covering columns x0..x1 gets the box [x0, x1 + 1): a one-pixel mask has width 1.
    (Projections instead of `masks_to_boxes`: it is several times slower at 1008 px.)
    """
    height, width = rows_any.shape[-1], cols_any.shape[-1]
    if rows_any.shape[0] == 0:
        return torch.zeros(0, 4)

    def extent(occupied: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = occupied.shape[-1]
        first = occupied.to(torch.uint8).argmax(-1)
        last = size - occupied.flip(-1).to(torch.uint8).argmax(-1)
        return first.float(), last.float()

    x0, x1 = extent(cols_any)
    y0, y1 = extent(rows_any)
    boxes = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)
    return boxes / torch.tensor([width, height, width, height], dtype=boxes.dtype)


def mask_boxes_cxcywh(masks: torch.Tensor) -> torch.Tensor:
    """[K,H,W] bool (non-empty) -> [K,4] pixel-extent boxes (cx,cy,w,h) normalised by (W,H)."""
    return _extent_boxes_cxcywh(masks.any(2), masks.any(1))
