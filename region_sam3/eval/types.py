"""Input records of the evaluation suite.

One *find query* is one (image, text prompt) pair, exactly what SAM3 calls a query and what the
heads batch over. Every evaluator consumes a list of ``QueryPrediction`` and an aligned list of
``QueryTarget`` (same length, same order). All tensors are per query, on any device (they are
moved to CPU when summarised) and at one evaluation resolution ``H x W`` shared by prediction and
target of the same query.

The LightningModule converts model outputs into these records: resize ``pred_masks`` to the GT
resolution, take ``scores = sigmoid(pred_logits) * sigmoid(presence_logit)``, and pass the
refinement iterates as a mapping ``{t: [QueryPrediction, ...]}`` to get per-iteration metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pycocotools.mask as mask_utils
import torch
from torch import Tensor

MaskKind = Literal["logits", "probs", "binary"]


@dataclass
class QueryPrediction:
    """Predictions of one find query.

    Attributes:
        masks: ``[Q, H, W]`` mask logits (``mask_kind="logits"``, thresholded at 0), probabilities
            (``"probs"``, thresholded at 0.5) or bool masks (``"binary"``).
        scores: ``[Q]`` confidence in [0, 1] used for ranking (COCO AP) and score thresholds.
        boxes: optional ``[Q, 4]`` xyxy boxes in pixels of the ``H x W`` frame (not used by the
            mask metrics; kept so box metrics can be added without changing the record).
        mask_kind: how to read ``masks``.
        region_embeds: optional ``[Q, D]`` student region embeddings (distillation metrics).
        gt_index: optional ``[Q]`` long, index into the target's GT masks of the query that owns
            it (e.g. from the training matcher), ``-1`` for unmatched. When absent the
            distillation evaluator matches by mask IoU (Hungarian).
    """

    masks: Tensor
    scores: Tensor
    boxes: Tensor | None = None
    mask_kind: MaskKind = "logits"
    region_embeds: Tensor | None = None
    gt_index: Tensor | None = None
    # Several evaluators binarise / RLE-encode the same prediction: cache per query index
    # (masks are never mutated). Only requested indices are converted, so the ~200 SAM3
    # queries are not all moved to CPU when only the top ones are kept.
    _bin_cache: dict[int, Tensor] = field(default_factory=dict, init=False, repr=False)
    _rle_cache: dict[int, dict] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.masks.dim() != 3:
            raise ValueError(f"masks must be [Q,H,W], got {tuple(self.masks.shape)}")
        if self.scores.shape != self.masks.shape[:1]:
            raise ValueError(
                f"scores {tuple(self.scores.shape)} do not match masks {tuple(self.masks.shape)}"
            )

    def binary_masks(self, idx: Tensor | None = None) -> Tensor:
        """``[K, H, W]`` bool CPU masks of the queries ``idx`` (``[K]`` long; all when None)."""
        ids = list(range(self.masks.shape[0])) if idx is None else [int(i) for i in idx]
        missing = [i for i in dict.fromkeys(ids) if i not in self._bin_cache]
        if missing:
            sel = torch.tensor(missing, dtype=torch.long, device=self.masks.device)
            # Threshold where the masks live (GPU in validation), move only bools.
            for i, m in zip(missing, binarize(self.masks[sel], self.mask_kind)):
                self._bin_cache[i] = m
        if not ids:
            return torch.zeros(0, *self.masks.shape[-2:], dtype=torch.bool)
        return torch.stack([self._bin_cache[i] for i in ids])

    def rles(self, idx: Tensor | None = None) -> list[dict]:
        """COCO RLEs of the binary masks of ``idx`` (all when None), cached."""
        ids = list(range(self.masks.shape[0])) if idx is None else [int(i) for i in idx]
        missing = [i for i in dict.fromkeys(ids) if i not in self._rle_cache]
        if missing:
            enc = encode_masks(self.binary_masks(torch.tensor(missing, dtype=torch.long)))
            self._rle_cache.update(zip(missing, enc))
        return [self._rle_cache[i] for i in ids]


@dataclass
class QueryTarget:
    """Ground truth of one find query.

    Attributes:
        image_id: id of the image; the COCO ``imgId``.
        category_id: id of the prompted category; the COCO ``catId``. One query per
            (image_id, category_id) (plus ``query_id`` when one category is prompted twice).
        masks: ``[T, H, W]`` bool GT instance masks (``T`` may be 0: a negative prompt; its
            predictions are then all false positives, as in COCO).
        iscrowd: optional ``[T]`` bool crowd flags (crowd GT is ignored as in COCO).
        orig_size: optional ``(height, width)`` of the original image. COCO size buckets
            (small < 32^2 <= medium < 96^2 <= large) are defined in original-image pixels, so
            areas measured at ``H x W`` are rescaled by ``orig_h*orig_w / (H*W)``.
        image_num_instances: optional number of GT instances in the whole image (all
            categories), for the crowded split. When absent it is the sum of ``T`` over the
            queries of the image that were evaluated.
        teacher_embeds: optional ``[T, D]`` teacher region embedding of each GT instance.
        query_id: optional extra key to tell apart several prompts of the same category.
    """

    image_id: int
    category_id: int
    masks: Tensor
    iscrowd: Tensor | None = None
    orig_size: tuple[int, int] | None = None
    image_num_instances: int | None = None
    teacher_embeds: Tensor | None = None
    query_id: int | None = None
    _rles: list[dict] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.masks.dim() != 3:
            raise ValueError(f"masks must be [T,H,W], got {tuple(self.masks.shape)}")

    def binary_masks(self) -> Tensor:
        """``[T, H, W]`` bool GT masks on CPU."""
        return self.masks.detach().cpu().bool()

    def rles(self) -> list[dict]:
        """COCO RLEs of the GT masks, cached."""
        if self._rles is None:
            self._rles = encode_masks(self.binary_masks())
        return self._rles

    def crowd_flags(self) -> np.ndarray:
        """``[T]`` bool numpy array of crowd flags."""
        if self.iscrowd is None:
            return np.zeros(self.masks.shape[0], dtype=bool)
        return self.iscrowd.detach().cpu().numpy().astype(bool).reshape(-1)

    def area_scale(self) -> float:
        """Factor mapping an area in ``H x W`` pixels to original-image pixels."""
        if self.orig_size is None:
            return 1.0
        h, w = self.masks.shape[-2:]
        return float(self.orig_size[0] * self.orig_size[1]) / float(h * w)


def encode_masks(masks: Tensor) -> list[dict]:
    """``[N, H, W]`` bool -> N COCO RLE dicts (``counts`` as bytes)."""
    if masks.shape[0] == 0:
        return []
    arr = np.asfortranarray(masks.numpy().astype(np.uint8).transpose(1, 2, 0))
    return mask_utils.encode(arr)


def binarize(masks: Tensor, kind: MaskKind) -> Tensor:
    """Threshold ``[..., H, W]`` masks into bool on CPU (logits > 0, probs > 0.5)."""
    masks = masks.detach()
    if kind == "logits":
        out = masks > 0
    elif kind == "probs":
        out = masks > 0.5
    elif kind == "binary":
        out = masks.bool()
    else:  # pragma: no cover - guarded by the Literal
        raise ValueError(f"unknown mask kind {kind!r}")
    return out.cpu()


def keep_top(scores: Tensor, score_threshold: float | None, max_keep: int | None) -> Tensor:
    """Indices ``[K]`` of predictions kept: score >= threshold, highest ``max_keep``, by score.

    The sort is stable so ties keep query order (deterministic across runs).
    """
    scores = scores.detach().float().cpu()
    order = torch.sort(scores, descending=True, stable=True).indices
    if score_threshold is not None:
        order = order[scores[order] >= score_threshold]
    if max_keep is not None:
        order = order[:max_keep]
    return order
