"""Region-embedding distillation from a frozen TextRegion teacher.

The student predicts one embedding per matched region; the teacher gives the target
for the same region (``region_sam3.teachers``). Teacher tensors are always detached.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


def _zero_with_grad(student: Tensor) -> Tensor:
    """0 that is still connected to the student graph (keeps DDP's used-params stable)."""
    return student.sum() * 0.0


def _check_weight(student: Tensor, weight: Tensor | None) -> None:
    if weight is not None and weight.shape != student.shape[:1]:
        raise ValueError(f"weight must be [N]={tuple(student.shape[:1])}, got {tuple(weight.shape)}")


def _masked_teacher(teacher: Tensor, weight: Tensor | None) -> Tensor:
    """Detached teacher ``[N, D]`` with the rows of weight 0 zeroed (whatever they held: an
    empty-mask embedding, a cache placeholder), so that they cannot put NaN into the loss."""
    teacher = teacher.detach()
    if weight is None:
        return teacher
    return torch.where(weight[:, None] > 0, teacher, torch.zeros((), dtype=teacher.dtype,
                                                                 device=teacher.device))


def _weighted_mean(per_row: Tensor, weight: Tensor | None) -> Tensor:
    """``sum_i w_i x_i / max(sum_i w_i, 1)`` of ``per_row [N]`` (plain mean when ``w`` is None).

    With 0/1 weights this is the mean over the rows of weight 1, i.e. exactly what boolean
    indexing of those rows gave, and 0 when no row has weight (the clamp), computed without
    reading the count back to the host. Student rows are not masked: a non-finite student row
    still makes the loss non-finite, so the step's non-finite check sees it.
    """
    if weight is None:
        return per_row.mean()
    weight = weight.to(per_row.dtype)
    return (per_row * weight).sum() / weight.sum().clamp(min=1.0)


def cosine_distill_loss(student: Tensor, teacher: Tensor, weight: Tensor | None = None) -> Tensor:
    """``mean(1 - cos(student_i, teacher_i))`` over ``N`` matched regions.

    Args:
        student: ``[N, D]`` student embeddings (any norm).
        teacher: ``[N, D]`` teacher embeddings (detached here).
        weight: ``[N]`` non-negative row weights, e.g. 0/1 validity (None: all 1). The mean
            is ``sum(w * (1 - cos)) / max(sum(w), 1)``; rows of weight 0 do not count.

    Returns:
        Scalar in ``[0, 2]``; a grad-connected 0 when ``N == 0`` or all weights are 0.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"shape mismatch {tuple(student.shape)} vs {tuple(teacher.shape)}")
    _check_weight(student, weight)
    if student.shape[0] == 0:
        return _zero_with_grad(student)
    teacher = _masked_teacher(teacher, weight).to(student.dtype)
    cos = F.cosine_similarity(student, teacher, dim=-1)
    return _weighted_mean(1.0 - cos, weight)


def similarity_kl_loss(student: Tensor, teacher: Tensor, text_embeds: Tensor, temperature: float = 0.01,
                       weight: Tensor | None = None) -> Tensor:
    """``KL(p_teacher || p_student)`` of region-vs-text softmax distributions.

    ``p = softmax(normalize(x) @ normalize(text).T / temperature)`` over the ``K`` texts,
    averaged over the ``N`` regions (batchmean), or over the rows of non-zero ``weight``.

    Args:
        student: ``[N, D]``; teacher: ``[N, D]``; text_embeds: ``[K, D]`` (teacher space).
        temperature: softmax temperature tau (CLIP's learned scale is ~1/100).
        weight: ``[N]`` row weights as in :func:`cosine_distill_loss` (None: all 1).

    Returns:
        Scalar; a grad-connected 0 when ``N == 0``, ``K == 0`` or all weights are 0.
    """
    _check_weight(student, weight)
    if student.shape[0] == 0 or text_embeds.shape[0] == 0:
        return _zero_with_grad(student)
    text = F.normalize(text_embeds.detach().to(student.dtype), dim=-1)
    s_logits = F.normalize(student, dim=-1) @ text.T / temperature
    teacher = _masked_teacher(teacher, weight).to(student.dtype)
    t_logits = F.normalize(teacher, dim=-1) @ text.T / temperature
    per_row = F.kl_div(F.log_softmax(s_logits, dim=-1), F.log_softmax(t_logits, dim=-1),
                       reduction="none", log_target=True).sum(dim=-1)  # [N]
    return _weighted_mean(per_row, weight)


class DistillationLoss(nn.Module):
    """Weighted cosine (+ optional similarity-KL) distillation with a linear warmup.

    Args:
        cosine_weight: weight of :func:`cosine_distill_loss`.
        kl_weight: weight of :func:`similarity_kl_loss` (0 disables; needs ``text_embeds``).
        temperature: KL softmax temperature.
        warmup_steps: the weights ramp linearly from 0 to full over this many steps
            (``scale = min(1, step / warmup_steps)``); 0 = no warmup.

    ``forward`` returns ``{"loss_distill": total, "loss_distill_cos": ..., "loss_distill_kl": ...,
    "distill_scale": ...}`` where the per-term values are unweighted (for logging) and
    ``loss_distill`` is the weighted, warmup-scaled sum to add to the training loss.
    """

    def __init__(
        self,
        cosine_weight: float = 1.0,
        kl_weight: float = 0.0,
        temperature: float = 0.01,
        warmup_steps: int = 0,
    ) -> None:
        super().__init__()
        self.cosine_weight = float(cosine_weight)
        self.kl_weight = float(kl_weight)
        self.temperature = float(temperature)
        self.warmup_steps = int(warmup_steps)

    def scale(self, step: int | None) -> float:
        """Warmup factor in ``[0, 1]`` for a global step (None = fully warmed up)."""
        if self.warmup_steps <= 0 or step is None:
            return 1.0
        return min(1.0, max(0.0, step / self.warmup_steps))

    def forward(
        self,
        student: Tensor,
        teacher: Tensor,
        text_embeds: Tensor | None = None,
        step: int | None = None,
        weight: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Args: ``student [N, D]``, ``teacher [N, D]``, ``text_embeds [K, D]`` or None,
        ``step`` = trainer global step for the warmup, ``weight [N]`` per-row weights (0/1
        validity of the teacher rows; None = all rows count). Weighting instead of dropping
        rows keeps every shape static: no data-dependent size, no host-device sync."""
        scale = self.scale(step)
        cos = cosine_distill_loss(student, teacher, weight)
        out = {"loss_distill_cos": cos}
        total = self.cosine_weight * cos
        if self.kl_weight > 0:
            if text_embeds is None:
                raise ValueError("kl_weight > 0 needs text_embeds")
            kl = similarity_kl_loss(student, teacher, text_embeds, self.temperature, weight)
            out["loss_distill_kl"] = kl
            total = total + self.kl_weight * kl
        out["loss_distill"] = total * scale
        # A fill kernel, not `torch.tensor(scale, device=...)`: a blocking host->device copy syncs.
        out["distill_scale"] = torch.full((), scale, device=student.device)
        return out
