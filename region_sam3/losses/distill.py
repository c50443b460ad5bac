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


def cosine_distill_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """``mean(1 - cos(student_i, teacher_i))`` over ``N`` matched regions.

    Args:
        student: ``[N, D]`` student embeddings (any norm).
        teacher: ``[N, D]`` teacher embeddings (detached here).

    Returns:
        Scalar in ``[0, 2]``; a grad-connected 0 when ``N == 0``.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"shape mismatch {tuple(student.shape)} vs {tuple(teacher.shape)}")
    if student.shape[0] == 0:
        return _zero_with_grad(student)
    cos = F.cosine_similarity(student, teacher.detach().to(student.dtype), dim=-1)
    return (1.0 - cos).mean()


def similarity_kl_loss(student: Tensor, teacher: Tensor, text_embeds: Tensor, temperature: float = 0.01) -> Tensor:
    """``KL(p_teacher || p_student)`` of region-vs-text softmax distributions.

    ``p = softmax(normalize(x) @ normalize(text).T / temperature)`` over the ``K`` texts,
    averaged over the ``N`` regions (batchmean).

    Args:
        student: ``[N, D]``; teacher: ``[N, D]``; text_embeds: ``[K, D]`` (teacher space).
        temperature: softmax temperature tau (CLIP's learned scale is ~1/100).
    """
    if student.shape[0] == 0 or text_embeds.shape[0] == 0:
        return _zero_with_grad(student)
    text = F.normalize(text_embeds.detach().to(student.dtype), dim=-1)
    s_logits = F.normalize(student, dim=-1) @ text.T / temperature
    t_logits = F.normalize(teacher.detach().to(student.dtype), dim=-1) @ text.T / temperature
    return F.kl_div(F.log_softmax(s_logits, dim=-1), F.log_softmax(t_logits, dim=-1),
                    reduction="batchmean", log_target=True)


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
    ) -> dict[str, Tensor]:
        """Args: ``student [N, D]``, ``teacher [N, D]``, ``text_embeds [K, D]`` or None,
        ``step`` = trainer global step for the warmup."""
        scale = self.scale(step)
        cos = cosine_distill_loss(student, teacher)
        out = {"loss_distill_cos": cos}
        total = self.cosine_weight * cos
        if self.kl_weight > 0:
            if text_embeds is None:
                raise ValueError("kl_weight > 0 needs text_embeds")
            kl = similarity_kl_loss(student, teacher, text_embeds, self.temperature)
            out["loss_distill_kl"] = kl
            total = total + self.kl_weight * kl
        out["loss_distill"] = total * scale
        out["distill_scale"] = torch.tensor(scale, device=student.device)
        return out
