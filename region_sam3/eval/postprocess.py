"""Model outputs -> per-image detections in the original frame (SAM3 ``PostProcessImage``
semantics, done on the device where the logits live).

Semantics (``sam3.eval.postprocessors.PostProcessImage`` with ``use_presence=True``,
``detection_threshold=-1``, original sizes for boxes and masks, ``process_results`` pruning):

* score of query ``q`` of prompt ``p``: ``sigmoid(pred_logits[p, q]) * sigmoid(presence[p])``;
* label: the prompted category id (SAM3's ``forced_labels``);
* boxes: ``pred_boxes`` cxcywh (normalised to the model canvas) -> xyxy in original pixels;
* the detections of *all prompts of an image* compete for ``max_dets_per_image`` slots
  (SAM3 prunes with ``torch.topk`` over the concatenated prompts; here a stable descending sort,
  so ties keep prompt-then-query order and runs are deterministic);
* masks: bilinear (``align_corners=False``) resize of the logits to the original image size,
  thresholded at probability 0.5 (logit > 0), COCO RLE.

Differences from SAM3's implementation, not from its results: SAM3 resizes and RLE-encodes all
``P x Q`` masks of an image and prunes afterwards; here the top-K is selected from the scores
first and only those ``K`` masks are resized (same masks, ``P*Q/K`` times less work: 160x at
80 prompts x 200 queries). A padded canvas (``keep_aspect_ratio``) is handled by mapping the
content window of the canvas onto the original image (SAM3 itself always squashes to a square,
where the window is the whole canvas).

Memory at official size (80 prompts x 200 queries, 288^2 mask logits, 640x480 originals, T=3):
per image the device holds ``K x 288^2`` gathered logits per source (33 MB fp32) and one chunk of
resized logits (``chunk_pixels`` elements, 64 MB fp32 by default; that buffer, its fp32 input
chunk and on CPU the thresholded chunk are kept by the ``PostProcessor`` and reused for every
chunk and image: freshly allocated, such blocks cost more in page faults than the resize);
only the ``K`` boxes, scores, labels, stability scores and RLEs reach the host (on CUDA the RLE
runs are computed on the device by sam3's ``rle_encode``; on CPU pycocotools encodes a
``K x H x W`` uint8 chunk).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
import torch
from torch import Tensor

__all__ = ["BatchLayout", "PostProcessor", "detection_scores", "iteration_sources",
           "masks_to_original", "top_per_image"]

from region_sam3.eval.bands import bands_numpy, bands_torch, boundary_width
from region_sam3.eval.candidates import ImageCandidates
from region_sam3.eval.masks import encode_masks, stability_score
from region_sam3.eval.resize import ResizeWorkspace, masks_to_original
from region_sam3.eval.types import ImageDetections, IterationMasks
from region_sam3.outputs import parse_iter_mask_key, presence_scores, same_tensor


@dataclass
class BatchLayout:
    """What post-processing needs to know about an evaluation batch.

    Attributes:
        query_image_index: ``[B]`` long, image (row of the batch) of each prompt.
        category_ids: ``[B]`` long, prompted category of each prompt.
        image_ids / orig_sizes / valid_sizes: per image of the batch (``N_img`` entries);
            ``valid_size`` is the ``(h, w)`` of the image content inside the canvas.
        canvas_size: ``(H, W)`` of the model input canvas.
    """

    query_image_index: Tensor
    category_ids: Tensor
    image_ids: list[int]
    orig_sizes: list[tuple[int, int]]
    valid_sizes: list[tuple[int, int]]
    canvas_size: tuple[int, int]

    @classmethod
    def from_batch(cls, batch: Any) -> BatchLayout:
        """From a ``FindQueryBatch``."""
        return cls(
            query_image_index=batch.query_image_index,
            category_ids=batch.category_ids,
            image_ids=[int(i) for i in batch.image_ids.tolist()],
            orig_sizes=[tuple(int(v) for v in s) for s in batch.orig_sizes.tolist()],
            valid_sizes=[tuple(int(v) for v in s) for s in batch.valid_sizes.tolist()],
            canvas_size=tuple(int(v) for v in batch.images.shape[-2:]),
        )


def detection_scores(out: Mapping[str, Tensor]) -> Tensor:
    """``[B, Q]`` float32 ``sigmoid(pred_logits[..., 0]) * sigmoid(presence_logit_dec)``."""
    logits = out["pred_logits"].float()
    return presence_scores(logits, out["presence_logit_dec"].float().reshape(logits.shape[0], 1))


def top_per_image(
    scores: Tensor, query_image_index: Tensor, num_images: int, k: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Top-``k`` (prompt, query) pairs of every image over all its prompts, in one sort.

    Args:
        scores: ``[B, Q]`` in [0, 1].  query_image_index: ``[B]`` image of each prompt.
    Returns:
        ``(prompt [N, k], query [N, k], score [N, k])``; rows sorted by descending score,
        score -1 on the padding of images with fewer than ``k`` candidates.
    """
    b, q = scores.shape
    flat = scores.reshape(-1)
    owner = query_image_index.to(scores.device).repeat_interleave(q)
    # Other images' candidates get -1 (scores are >= 0) and sort after every real one.
    table = torch.full((num_images, b * q), -1.0, device=scores.device, dtype=flat.dtype)
    table[owner, torch.arange(b * q, device=scores.device)] = flat
    k = min(k, b * q)
    values, order = torch.sort(table, dim=1, descending=True, stable=True)
    values, order = values[:, :k], order[:, :k]
    return order // q, order % q, values


def iteration_sources(out: Mapping[str, Any]) -> tuple[dict[int, Tensor], int | None]:
    """``({t: pred_masks_iter{t}}, final_t)``: the iterates other than the final masks, and the
    ``t`` whose tensor *is* ``pred_masks`` (the region head returns the final iterate itself)."""
    final = out["pred_masks"]
    sources, final_t = {}, None
    for key, value in out.items():
        t = parse_iter_mask_key(key)
        if t is None:
            continue
        if same_tensor(value, final):
            final_t = t
        else:
            sources[t] = value
    return dict(sorted(sources.items())), final_t


class PostProcessor:
    """Per-batch post-processing (module docstring). Call with the model's final output dict
    (``pred_logits [B,Q,1]``, ``presence_logit_dec [B,1]``, ``pred_boxes [B,Q,4]``,
    ``pred_masks [B,Q,h,w]``, optional ``pred_masks_iter{t}``) and a ``BatchLayout``.

    Two stages, so the expensive one runs once per image when its prompts span batches:

    * ``select``: scores, per-image top-K of the batch, boxes in original pixels, and the
      *low-res* logits of the kept candidates gathered per mask source (``ImageCandidates``,
      on the logits' device; no resize, no host copy of masks);
    * ``finalize``: once an image's top-K is final (``DetectionPool`` releases it), resize
      exactly those ``K`` masks per source to the original size, stability score, threshold,
      RLE-encode (chunked). ``__call__`` = ``select`` then ``finalize`` (one-batch images).

    Args:
        max_dets_per_image: K, detections kept per image over all its prompts (COCO: 100).
        per_iteration: also encode the per-iteration masks of the same K detections.
        stability_delta: delta of the SAM stability score computed per kept mask (original
            frame, where the mask is evaluated).
        chunk_pixels: resized logits held at once on the device (elements; bounds memory for
            large originals).
        boundary_ratio: also make the boundary band RLE of every kept mask (dilation ratio of
            Boundary AP, 0.02), in one batched operation per chunk on the logits' device while
            the thresholded masks are there; None: Boundary AP decodes the RLEs itself.
    """

    def __init__(
        self,
        max_dets_per_image: int = 100,
        per_iteration: bool = True,
        stability_delta: float = 1.0,
        chunk_pixels: int = 1 << 24,
        boundary_ratio: float | None = None,
    ) -> None:
        if max_dets_per_image < 1:
            raise ValueError(f"max_dets_per_image must be >= 1, got {max_dets_per_image}")
        self.max_dets = int(max_dets_per_image)
        self.per_iteration = per_iteration
        self.delta = stability_delta
        self.chunk_pixels = int(chunk_pixels)
        self.boundary_ratio = boundary_ratio
        # Resize buffers reused across chunks and images (exact, see ``ResizeWorkspace``).
        self._resize = ResizeWorkspace()
        self._scratch = np.empty(0, dtype=np.bool_)  # the thresholded chunk, reused likewise

    @torch.no_grad()
    def select(
        self,
        out: Mapping[str, Any],
        layout: BatchLayout,
        score_floors: Mapping[int, float] | None = None,
    ) -> list[ImageCandidates]:
        """Top-K candidates of every image of the batch, low-res masks kept on the device.

        ``score_floors``: ``{image_id: s}``, the K-th score an image already holds from earlier
        batches; candidates scoring ``<= s`` could never enter its top-K and are not gathered.
        """
        scores = detection_scores(out)
        num_images = len(layout.image_ids)
        prompt, query, top_scores = top_per_image(scores, layout.query_image_index, num_images,
                                                  self.max_dets)
        floors = torch.tensor([(score_floors or {}).get(i, -0.5) for i in layout.image_ids],
                              device=top_scores.device, dtype=top_scores.dtype)
        valid = top_scores > floors[:, None]
        iters, final_t = iteration_sources(out) if self.per_iteration else ({}, None)
        boxes_all = out["pred_boxes"].float()
        cats = layout.category_ids.to(scores.device)
        counts = valid.sum(1).tolist()  # the one host sync of the selection
        results = []
        for n, image_id in enumerate(layout.image_ids):
            p, q = prompt[n, : counts[n]], query[n, : counts[n]]
            oh, ow = layout.orig_sizes[n]
            (ch, cw), (vh, vw) = layout.canvas_size, layout.valid_sizes[n]
            # Normalised canvas coords -> original pixels via the content window.
            scale = torch.tensor([cw * ow / vw, ch * oh / vh] * 2, device=boxes_all.device)
            cx, cy, w, h = boxes_all[p, q].unbind(-1)
            boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1) * scale
            results.append(ImageCandidates(
                image_id=int(image_id), orig_size=(oh, ow), valid_size=layout.valid_sizes[n],
                canvas_size=layout.canvas_size, scores=scores[p, q], labels=cats[p].long(),
                boxes=boxes, masks=out["pred_masks"][p, q],  # gathers: a copy of K masks
                iterations={t: src[p, q] for t, src in iters.items()},
                final_iteration=final_t,
            ))
        return results

    @torch.no_grad()
    def finalize(self, cand: ImageCandidates) -> ImageDetections:
        """Resize, stability-score, threshold and RLE-encode the kept masks of one image;
        only boxes, scores, labels, stability and RLEs reach the host."""
        if cand.rank is not None:  # merged in place: restore descending-score order
            cand = cand.sorted()
        oh, ow = cand.orig_size
        final = self._encode(cand.masks, cand)
        return ImageDetections(
            image_id=cand.image_id, height=oh, width=ow,
            scores=cand.scores.float().cpu().numpy(),
            labels=cand.labels.cpu().numpy().astype("int64"),
            boxes=cand.boxes.float().cpu().numpy(),
            rles=final.rles, stability=final.stability,
            iterations={t: self._encode(m, cand) for t, m in cand.iterations.items()},
            final_iteration=cand.final_iteration,
            region_pairs=cand.region_pairs,
            boundaries=final.boundaries, boundary_ratio=self.boundary_ratio,
        )

    def _encode(self, logits: Tensor, cand: ImageCandidates) -> IterationMasks:
        """``[K, h, w]`` canvas logits -> RLEs + stability in the original frame.

        One resize per chunk (``masks_to_original`` into reused buffers); on CUDA
        threshold/stability/RLE runs stay on the device. On CPU the resized float32 chunk is read through numpy (its comparisons and
        counts are ~5x faster than torch's single-threaded bool kernels here): one strided
        ``> 0`` pass writes the Fortran-ordered uint8 array pycocotools encodes without a copy,
        and per-mask ``count_nonzero`` of ``> delta`` / ``> -delta`` give the stability score.
        """
        oh, ow = cand.orig_size
        chunk = max(1, self.chunk_pixels // max(1, oh * ow))
        d = None if self.boundary_ratio is None else boundary_width(oh, ow, self.boundary_ratio)
        rles, stab, bands = [], [], []
        for start in range(0, logits.shape[0], chunk):
            full = self._resize.resize(logits[start:start + chunk], cand.canvas_size,
                                       cand.valid_size, (oh, ow))
            if full.device.type == "cpu":
                k = full.shape[0]
                if self._scratch.size < k * oh * ow:  # reused: a fresh one is page-faulted in
                    self._scratch = np.empty(k * oh * ow, dtype=np.bool_)
                r, s, b = _encode_cpu(full.numpy(), self.delta, d, self._scratch)
                rles.extend(r)
                stab.append(s)
                bands.extend(b)
            else:
                stab.append(stability_score(full, self.delta).cpu().numpy())
                binary = full > 0
                rles.extend(encode_masks(binary))
                if d is not None:
                    bands.extend(encode_masks(bands_torch(binary, d)))
            del full
        stability = np.concatenate(stab) if stab else np.zeros(0)
        return IterationMasks(rles, stability.astype("float32"), bands if d is not None else None)

    @torch.no_grad()
    def __call__(
        self,
        out: Mapping[str, Any],
        layout: BatchLayout,
        score_floors: Mapping[int, float] | None = None,
    ) -> list[ImageDetections]:
        """``ImageDetections`` of every image of the batch (top-K within this batch):
        ``finalize(select(...))``. Images whose prompts span batches go through
        ``DetectionPool`` with ``select`` instead, so each mask is encoded once."""
        return [self.finalize(c) for c in self.select(out, layout, score_floors)]


def _encode_cpu(
    full: np.ndarray, delta: float, band_width: int | None = None,
    scratch: np.ndarray | None = None,
) -> tuple[list[dict[str, Any]], np.ndarray, list[dict[str, Any]]]:
    """``[K, H, W]`` float32 logits -> (K RLEs of ``> 0``, ``[K]`` SAM stability scores, K RLEs
    of the boundary bands at ``band_width``, or [] without one). ``scratch``: optional flat
    bool buffer of ``>= K*H*W`` elements for the thresholded masks (overwritten)."""
    k, h, w = full.shape
    if scratch is None:
        scratch = np.empty(k * w * h, dtype=np.bool_)
    fortran = scratch[: k * w * h].reshape(k, w, h)  # == [H, W, K] in Fortran order
    np.greater(full, 0, out=fortran.transpose(0, 2, 1))
    rles = mask_utils.encode(fortran.view(np.uint8).transpose(2, 1, 0)) if k else []
    bands = []
    if band_width is not None and k:
        # The [K, W, H] stack erodes like [K, H, W] (square element); back to Fortran [H, W, K].
        bands = mask_utils.encode(bands_numpy(fortran, band_width).transpose(2, 1, 0))
    for r in [*rles, *bands]:
        r["counts"] = r["counts"].decode("ascii")
    flat = full.reshape(k, -1)
    inter = np.array([np.count_nonzero(m > delta) for m in flat], dtype=np.float64)
    union = np.array([np.count_nonzero(m > -delta) for m in flat], dtype=np.float64)
    # Same convention as ``stability_score``: 1.0 where the lower-threshold mask is empty.
    stability = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return rles, stability, bands
