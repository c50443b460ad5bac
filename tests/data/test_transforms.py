import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from region_sam3.data.transforms import (
    AugmentationConfig,
    FindQueryTransform,
    mask_boxes_cxcywh,
)


def _scene(height=60, width=90):
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)
    masks = torch.zeros(4, height, width, dtype=torch.bool)
    masks[0, 5:20, 10:30] = True
    masks[1, 30:58, 60:88] = True
    masks[2, 0:2, 0:2] = True  # tiny: vanishes under crops/downscaling sometimes
    masks[3, 25:35, 40:70] = True
    masks[3, 28:32, 50:60] = False  # a hole: box is the outer extent
    return image, masks


def _assert_boxes_match_masks(out):
    assert out.masks.dtype == torch.bool and out.masks.flatten(1).any(1).all()
    assert torch.equal(out.boxes_cxcywh, mask_boxes_cxcywh(out.masks))
    height, width = out.masks.shape[-2:]
    for mask, box in zip(out.masks, out.boxes_cxcywh):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        cx, cy, w, h = (box * torch.tensor([width, height, width, height])).tolist()
        assert (cx - w / 2, cx + w / 2) == pytest.approx((xs.min().item(), xs.max().item() + 1))
        assert (cy - h / 2, cy + h / 2) == pytest.approx((ys.min().item(), ys.max().item() + 1))


@pytest.mark.parametrize("keep_aspect_ratio", [False, True])
@pytest.mark.parametrize("crop", ["none", "lsj", "random_resized_crop"])
def test_boxes_equal_mask_boxes_after_every_transform(crop, keep_aspect_ratio):
    torch.manual_seed(0)
    transform = FindQueryTransform(
        64, keep_aspect_ratio, AugmentationConfig(crop=crop, scale_range=(0.3, 2.0))
    )
    image, masks = _scene()
    dropped = 0
    for _ in range(8):
        out = transform(image, masks)
        assert out.image.shape == (3, 64, 64) and out.image.dtype == torch.float32
        assert out.image.min() >= -1 and out.image.max() <= 1
        assert out.masks.shape[1:] == (64, 64) and len(out.kept) == len(out.masks)
        _assert_boxes_match_masks(out)
        dropped += 4 - len(out.kept)
    if crop != "none":
        assert dropped > 0  # crops do remove instances, and they are dropped with their boxes


def test_eval_square_resize_and_normalisation():
    image, masks = _scene()
    out = FindQueryTransform(120)(image, masks)
    expected = TF.resize(image, [120, 120], antialias=True).float() / 255 * 2 - 1
    assert torch.allclose(out.image, expected, atol=1e-6)
    assert out.valid_size == (120, 120) and out.kept.tolist() == [0, 1, 2, 3]
    _assert_boxes_match_masks(out)


def test_keep_aspect_ratio_pads_bottom_right():
    image, masks = _scene(60, 90)
    out = FindQueryTransform(45, keep_aspect_ratio=True)(image, masks)
    assert out.valid_size == (30, 45)
    assert (out.image[:, 30:] == -1).all()  # zero padding, normalised
    assert not out.masks[:, 30:].any()


def test_flip_twice_is_identity():
    image, masks = _scene()
    flip = FindQueryTransform(None, augmentation=None)
    base = flip(image, masks)
    twice = flip(
        TF.horizontal_flip(TF.horizontal_flip(image)), TF.horizontal_flip(TF.horizontal_flip(masks))
    )
    assert torch.equal(base.image, twice.image) and torch.equal(base.masks, twice.masks)
    always_flip = FindQueryTransform(
        90,
        augmentation=AugmentationConfig(
            hflip_prob=1.0, crop="none", brightness=0, contrast=0, saturation=0, hue=0
        ),
    )
    once = always_flip(image, masks)
    again = always_flip(((once.image + 1) * 127.5).round().byte(), once.masks)
    assert torch.equal(again.masks, _resized(masks, 90))
    _assert_boxes_match_masks(once)
    # a flip mirrors box centres: cx -> 1 - cx
    plain = FindQueryTransform(90)(image, masks)
    assert torch.allclose(once.boxes_cxcywh[:, 0], 1 - plain.boxes_cxcywh[:, 0])


def _resized(masks, size):
    return TF.resize(
        masks.to(torch.uint8), [size, size], interpolation=TF.InterpolationMode.NEAREST
    ).bool()


def test_augmentation_needs_resolution_and_valid_crop_mode():
    with pytest.raises(ValueError, match="crop"):
        AugmentationConfig(crop="zoom")
    with pytest.raises(ValueError, match="resolution"):
        FindQueryTransform(None, augmentation=AugmentationConfig())
