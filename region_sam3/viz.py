"""Draw predictions on images with PIL only (no OpenCV): coloured masks, boxes, score labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from region_sam3.data.image_io import pil_to_uint8_hwc


class Detections(Protocol):
    """What is drawn (e.g. a `region_sam3.predict.Prediction`; typed structurally so drawing
    does not depend on the predictor): masks `[N,H,W]`, boxes `[N,4]` xyxy px, scores `[N]`."""

    masks: torch.Tensor | np.ndarray
    boxes: torch.Tensor | np.ndarray
    scores: torch.Tensor | np.ndarray

# Distinct, saturated colours (tab10-like); cycled when there are more detections.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)


def overlay_predictions(
    image: Image.Image | np.ndarray,
    prediction: Detections,
    *,
    labels: Sequence[str] | str | None = None,
    alpha: float = 0.5,
    box_width: int = 2,
) -> Image.Image:
    """Blend `prediction` onto `image`.

    Args:
        image: PIL image or `[H,W,3]` uint8 array, at the size the prediction was made for.
        prediction: masks `[N,H,W]`, boxes `[N,4]` xyxy pixels, scores `[N]`.
        labels: one label per detection, or one label for all (e.g. the prompt); the score is
            appended to it.
        alpha: mask opacity in [0, 1].

    Returns:
        A new RGB image of the same size as `image`.
    """
    rgb = pil_to_uint8_hwc(image) if isinstance(image, Image.Image) else np.asarray(image)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an [H,W,3] image, got shape {rgb.shape}")
    masks = _numpy(prediction.masks).astype(bool)
    if masks.shape[1:] != rgb.shape[:2]:
        raise ValueError(
            f"masks are {masks.shape[1:]} but the image is {rgb.shape[:2]}: draw on the image "
            "the prediction was made for"
        )
    out = rgb.astype(np.float32)
    # Paint lower-scoring masks first so the best detection is on top where they overlap.
    scores = _numpy(prediction.scores)
    order = np.argsort(scores, kind="stable")
    for i in order:
        colour = np.array(PALETTE[i % len(PALETTE)], dtype=np.float32)
        out[masks[i]] = (1 - alpha) * out[masks[i]] + alpha * colour
    canvas = Image.fromarray(out.round().clip(0, 255).astype(np.uint8))

    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    if isinstance(labels, str) or labels is None:
        labels = [labels or ""] * len(scores)
    boxes = _numpy(prediction.boxes)
    for i in order:
        colour = PALETTE[i % len(PALETTE)]
        x0, y0, x1, y1 = (float(v) for v in boxes[i])
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=box_width)
        text = f"{labels[i]} {scores[i]:.2f}".strip()
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        # Label above the box, or inside it when the box touches the top edge.
        ty = y0 - (bottom - top) - 2 if y0 - (bottom - top) - 2 >= 0 else y0 + 1
        draw.rectangle([x0, ty, x0 + (right - left) + 2, ty + (bottom - top) + 2], fill=colour)
        draw.text((x0 + 1, ty - top + 1), text, fill=(255, 255, 255), font=font)
    return canvas


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
