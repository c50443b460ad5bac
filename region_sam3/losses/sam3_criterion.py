"""SAM3's own training criterion (matcher + class/presence, box and mask losses).

We reuse `sam3.train.loss` as is: `Sam3LossWrapper` (one-to-one + DAC one-to-many), `IABCEMdetr`
(IoU-aware classification + presence), `Boxes` (L1 + GIoU) and `Masks`, whose
`num_sample_points` path is the PointRend/Mask2Former uncertainty-sampled focal + dice loss.
Two things are added:

* `PointSampledMasks` applies the mask loss to every refinement iterate `pred_masks_iter{t}`
  of the region head (deep supervision), weighted per iteration, and never draws more points
  than the predicted mask has pixels (see `PointSampledMasks._sampled_loss`).
* SAM3's semantic-segmentation head is supervised with `sam3`'s own `SemanticSegCriterion`
  (per query: the union of its instance masks, all-zero for negatives) when its weights are
  non-zero. It is a dense, matching-free signal; training a SAM3 from scratch needs it to break
  the early DETR symmetry in which every query predicts the same empty mask.
* `sam3`'s focal loss defaults to a triton kernel that needs CUDA; `_focal_loss_backend` picks
  the plain PyTorch path whenever the tensors are not on a GPU.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from sam3.train.loss import loss_fns
from sam3.train.loss.loss_fns import (
    CORE_LOSS_KEY,
    Boxes,
    IABCEMdetr,
    Masks,
    SemanticSegCriterion,
)
from sam3.train.loss.mask_sampling import (
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    point_sample,
)
from sam3.train.loss.sam3_loss import Sam3LossWrapper
from sam3.train.matcher import BinaryOneToManyMatcher

from region_sam3.models.sam3_arch import build_matcher
from region_sam3.outputs import iter_mask_items

_UPSTREAM_FOCAL = loss_fns.sigmoid_focal_loss


@contextlib.contextmanager
def _focal_loss_backend(use_triton: bool) -> Iterator[None]:
    """Route `sam3.train.loss.loss_fns.sigmoid_focal_loss` to the triton or PyTorch path.

    The loss classes look the function up as a module global at call time, so swapping the
    global for the duration of the call is enough; nothing in site-packages is edited.
    """
    if use_triton:
        yield
        return
    loss_fns.sigmoid_focal_loss = functools.partial(_UPSTREAM_FOCAL, triton=False)
    try:
        yield
    finally:
        loss_fns.sigmoid_focal_loss = _UPSTREAM_FOCAL


class PointSampledMasks(Masks):
    """Mask focal + dice on uncertainty-sampled points, for every refinement iteration.

    Args:
        num_sample_points: K points per mask (Mask2Former uses 112² = 12544).
        oversample_ratio / importance_sample_ratio: PointRend sampling (3, 0.75).
        iter_loss_weights: weight of `pred_masks_iter{t}` for t = 0..T; when the outputs carry
            no per-iteration masks (plain SAM3) the loss is computed on `pred_masks`.
    """

    def __init__(
        self,
        weight_dict: Mapping[str, float],
        num_sample_points: int = 112 * 112,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        iter_loss_weights: Sequence[float] | None = None,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__(
            weight_dict=dict(weight_dict),
            compute_aux=False,
            focal_alpha=focal_alpha,
            focal_gamma=focal_gamma,
            num_sample_points=num_sample_points,
            oversample_ratio=oversample_ratio,
            importance_sample_ratio=importance_sample_ratio,
        )
        self.iter_loss_weights = list(iter_loss_weights) if iter_loss_weights is not None else None

    def _sampled_loss(self, src_masks, target_masks, num_boxes):
        """Focal + dice of matched masks on K points, never more points than mask pixels.

        Args:
            src_masks: [N,H,W] predicted logits (H=W=288 official, 64 tiny).
            target_masks: [N,Ht,Wt] binary targets (any resolution, typically the input's).

        Three regimes (K = `num_sample_points`, P = H·W, r = `oversample_ratio`):

        * K·r <= P (official: 112² · 3 = 37,632 <= 288² = 82,944): SAM3's PointRend sampling,
          unchanged (the same code path and RNG draws as `Masks._sampled_loss`).
        * K < P < K·r: the same sampling with the candidate pool capped at P points (at 64²
          with K = 56², SAM3 would draw 9,408 candidates on 4,096 pixels).
        * K >= P: every pixel once, no random points and no `grid_sample`; the targets are
          bilinearly resized to H×W, which is exactly what `point_sample` at the pixel centres
          returns.
        """
        num_pixels = src_masks.shape[-2] * src_masks.shape[-1]
        if self.num_sample_points >= num_pixels:
            logits = src_masks.flatten(1)  # [N,P]
            with torch.no_grad():
                labels = F.interpolate(target_masks[:, None], size=src_masks.shape[-2:],
                                       mode="bilinear", align_corners=False).flatten(1)
        else:
            # +0.5: int(K * ratio) inside sam3 must not round the capped pool down to P - 1.
            ratio = min(self.oversample_ratio, (num_pixels + 0.5) / self.num_sample_points)
            with torch.no_grad():
                coords = get_uncertain_point_coords_with_randomness(
                    src_masks[:, None], calculate_uncertainty, self.num_sample_points, ratio,
                    self.importance_sample_ratio,
                )  # [N,K,2]
                labels = point_sample(target_masks[:, None], coords,
                                      align_corners=False).squeeze(1)  # [N,K]
            logits = point_sample(src_masks[:, None], coords, align_corners=False).squeeze(1)
        # Looked up at call time: `_focal_loss_backend` swaps the module global.
        return {
            "loss_mask": loss_fns.sigmoid_focal_loss(
                logits, labels, num_boxes, alpha=self.focal_alpha, gamma=self.focal_gamma),
            "loss_dice": loss_fns.dice_loss(logits, labels, num_boxes),
        }

    def get_loss(self, outputs, targets, indices, num_boxes):  # noqa: D102
        iter_keys = iter_mask_items(outputs)
        if not iter_keys:
            return super().get_loss(outputs, targets, indices, num_boxes)
        weights = self.iter_loss_weights or [1.0] * len(iter_keys)
        if len(weights) != len(iter_keys):
            raise ValueError(
                f"model.region_head.iter_loss_weights has {len(weights)} entries but the head "
                f"produces {len(iter_keys)} iterates (num_iters + 1)"
            )
        losses: dict[str, torch.Tensor] = {}
        total_mask, total_dice = 0.0, 0.0
        for (t, key), weight in zip(iter_keys, weights):
            per_iter = super().get_loss({**outputs, "pred_masks": outputs[key]}, targets,
                                        indices, num_boxes)
            losses[f"loss_mask_iter{t}"] = per_iter["loss_mask"].detach()
            losses[f"loss_dice_iter{t}"] = per_iter["loss_dice"].detach()
            total_mask = total_mask + weight * per_iter["loss_mask"]
            total_dice = total_dice + weight * per_iter["loss_dice"]
        losses["loss_mask"] = total_mask
        losses["loss_dice"] = total_dice
        return losses


class Sam3Criterion(torch.nn.Module):
    """SAM3's loss on a `Sam3Image` output, returning named terms and the weighted total.

    Default weights follow SAM3's recipe (DESIGN §6): class 20, presence 20, L1 5, GIoU 2,
    mask focal 200, dice 10. `semantic_seg` / `semantic_dice` weight the semantic head's BCE
    and dice (0 disables the term).
    """

    def __init__(
        self,
        *,
        loss_ce: float = 20.0,
        presence_loss: float = 20.0,
        loss_bbox: float = 5.0,
        loss_giou: float = 2.0,
        loss_mask: float = 200.0,
        loss_dice: float = 10.0,
        pos_weight: float = 10.0,
        num_sample_points: int = 112 * 112,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        iter_loss_weights: Sequence[float] | None = None,
        o2m_weight: float = 2.0,
        o2m_topk: int = 4,
        normalization: str = "local",
        semantic_seg: float = 0.0,
        semantic_dice: float = 0.0,
    ) -> None:
        super().__init__()
        semantic = None
        #: whether `forward` reads `semantic_segments` (`to_sam3_batch(..., semantic=...)`)
        self.needs_semantic_masks = bool(semantic_seg or semantic_dice)
        if semantic_seg or semantic_dice:
            semantic = SemanticSegCriterion(
                weight_dict={"loss_semantic_seg": semantic_seg,
                             "loss_semantic_dice": semantic_dice},
                focal=False,
                downsample=True,
                presence_head=False,
            )
        self.wrapper = Sam3LossWrapper(
            loss_fns_find=[
                IABCEMdetr(
                    pos_weight=pos_weight,
                    weight_dict={"loss_ce": loss_ce, "presence_loss": presence_loss},
                    weak_loss=False,
                    alpha=0.25,
                    gamma=2,
                    use_presence=True,
                    pos_focal=False,
                ),
                Boxes(weight_dict={"loss_bbox": loss_bbox, "loss_giou": loss_giou}),
                PointSampledMasks(
                    weight_dict={"loss_mask": loss_mask, "loss_dice": loss_dice},
                    num_sample_points=num_sample_points,
                    oversample_ratio=oversample_ratio,
                    importance_sample_ratio=importance_sample_ratio,
                    iter_loss_weights=iter_loss_weights,
                ),
            ],
            normalization=normalization,
            matcher=build_matcher(),
            o2m_matcher=BinaryOneToManyMatcher(alpha=0.3, threshold=0.4, topk=o2m_topk),
            o2m_weight=o2m_weight,
            loss_fn_semantic_seg=semantic,
        )

    def forward(self, find_stages, find_targets: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        """Losses of `Sam3Image.forward`'s output against `model.back_convert(find_target)`s.

        Returns:
            dict of scalar tensors; `"total"` is the weighted sum used for backprop.
        """
        if self.wrapper.normalization == "global" and not (
            torch.distributed.is_available() and torch.distributed.is_initialized()
        ):
            self.wrapper.normalization = "local"
        on_gpu = find_targets[0]["boxes"].is_cuda
        with _focal_loss_backend(use_triton=on_gpu):
            losses = self.wrapper(find_stages, find_targets)
        losses["total"] = losses.pop(CORE_LOSS_KEY)
        return losses
