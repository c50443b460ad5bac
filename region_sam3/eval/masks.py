"""Bottom layer of `region_sam3.eval`: operations on one stack of masks.

Both the post-processor (which turns model outputs into detections) and the evaluators use
these; keeping them here lets `postprocess.py` depend on nothing above `types.py` (issue 21:
the post-processor used to import the stability evaluator -> matching -> boundary -> COCO AP).

`stability_score` is SAM's stability score: ``|l > +delta| / |l > -delta|`` on mask logits
``l`` with ``delta = 1``, the IoU between the mask thresholded slightly above and slightly
below 0. The formula and the empty-mask convention (1.0 when nothing exceeds ``-delta``) follow
``sam3.sam.mask_decoder.MaskDecoder._get_stability_scores``, a method reading its delta from
the decoder instance, so it is re-stated here as a function (parity is tested).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pycocotools import mask as mask_utils
from torch import Tensor

MaskKind = Literal["logits", "probs", "binary"]

STABILITY_DELTA = 1.0


def stability_score(
    masks: Tensor, delta: float = STABILITY_DELTA, mask_kind: MaskKind = "logits"
) -> Tensor:
    """SAM stability score.

    Args:
        masks: ``[..., H, W]`` logits (or probabilities with ``mask_kind="probs"``).
    Returns:
        ``[...]`` float32 scores in [0, 1]; 1.0 where the lower-threshold mask is empty.
    """
    if mask_kind == "logits":
        hi, lo = delta, -delta
    elif mask_kind == "probs":
        hi, lo = 1.0 / (1.0 + math.exp(-delta)), 1.0 / (1.0 + math.exp(delta))
    else:
        raise ValueError("stability needs soft masks (logits or probs), not binary")
    flat = masks.detach().flatten(-2)
    inter = (flat > hi).sum(-1).float()
    union = (flat > lo).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def encode_masks(masks: Tensor) -> list[dict[str, Any]]:
    """``[N, H, W]`` bool masks (any device) -> N COCO RLEs with ``counts`` as str.

    CUDA: sam3's ``rle_encode`` finds the runs on the device, only run lengths reach the host.
    CPU: pycocotools on a Fortran-ordered view, built by transposing on the tensor side so no
    extra host copy is made (``[N, W, H]`` C-order == ``[H, W, N]`` F-order).
    """
    if masks.shape[0] == 0:
        return []
    if masks.device.type == "cuda":
        from sam3.train.masks_ops import rle_encode

        return rle_encode(masks.bool())
    arr = masks.detach().to(torch.uint8).transpose(1, 2).contiguous().cpu().numpy()
    rles = mask_utils.encode(arr.transpose(2, 1, 0))
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles

