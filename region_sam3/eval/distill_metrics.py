"""Distillation metrics: cosine to the teacher and zero-shot region classification.

``mean_cosine`` and ``zero_shot_accuracy`` are pure functions usable anywhere (e.g. on the
matched pairs the training loss already has). ``DistillationEvaluator`` computes them over a
dataset from ``ImageDetections.region_pairs``: for every non-crowd GT instance, the student
region embedding of the query SAM3's matcher assigns to it (box + class costs, independent of
the per-image top-K and of mask quality) paired with the teacher embedding of the instance;
every pair is classified against the category text embeddings (label = the prompted category).

Keys (prefix ``"distill"``): ``cosine``, ``top1``, ``top5``, ``teacher_top1``,
``teacher_top5`` (the teacher's own zero-shot accuracy on the same regions: the ceiling the
student is distilled towards), ``num_regions``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from region_sam3.eval.base import DatasetEvaluator, GatherFn, ImageRecord
from region_sam3.eval.types import ImageDetections, ImageGroundTruth


def cosine_per_pair(student: Tensor, teacher: Tensor) -> Tensor:
    """``[N, D] x [N, D] -> [N]`` cosine similarity of aligned rows."""
    return F.cosine_similarity(student.float(), teacher.float(), dim=-1)


def mean_cosine(student: Tensor, teacher: Tensor) -> float:
    """Mean cosine between aligned ``[N, D]`` student and teacher embeddings (nan if N=0)."""
    if student.shape[0] == 0:
        return float("nan")
    return float(cosine_per_pair(student, teacher).mean())


def label_ranks(region_embeds: Tensor, text_embeds: Tensor, labels: Tensor) -> Tensor:
    """Rank (0 = top-1) of the true class for each region under cosine similarity.

    Args:
        region_embeds: ``[N, D]``.  text_embeds: ``[C, D]``.  labels: ``[N]`` indices into C.
    Returns:
        ``[N]`` long. Ties count against the true class (strictly-greater rivals + ties), so a
        degenerate constant embedding does not score as correct.
    """
    sim = F.normalize(region_embeds.float(), dim=-1) @ F.normalize(text_embeds.float(), dim=-1).T
    true = sim.gather(1, labels.long()[:, None])
    others = torch.ones_like(sim, dtype=torch.bool)
    others.scatter_(1, labels.long()[:, None], False)
    return ((sim >= true) & others).sum(1)


def zero_shot_accuracy(
    region_embeds: Tensor, text_embeds: Tensor, labels: Tensor, topk: Sequence[int] = (1, 5)
) -> dict[int, float]:
    """Top-k accuracy of classifying ``[N, D]`` regions against ``[C, D]`` text embeddings."""
    if region_embeds.shape[0] == 0:
        return {k: float("nan") for k in topk}
    ranks = label_ranks(region_embeds, text_embeds, labels)
    return {k: float((ranks < k).float().mean()) for k in topk}


@dataclass
class DistillSummary:
    cosines: list[float]
    student_ranks: list[int]
    teacher_ranks: list[int]


class DistillationEvaluator(DatasetEvaluator):
    """Dataset-level distillation metrics (see module docstring).

    Args:
        text_embeds: ``[C, D]`` text embeddings of the category names (teacher text tower).
        category_ids: ``C`` category ids, row ``i`` of ``text_embeds`` is ``category_ids[i]``.
        topk: accuracies to report.
    """

    uses_iterations = False  # region embeddings exist for the final queries only

    def __init__(
        self,
        text_embeds: Tensor,
        category_ids: Sequence[int],
        prefix: str = "distill",
        topk: Sequence[int] = (1, 5),
        crowded_thresholds: Sequence[int] = (),
        gather_fn: GatherFn | None = None,
        broadcast_fn=None,
    ) -> None:
        super().__init__(prefix, crowded_thresholds, gather_fn, broadcast_fn)
        if text_embeds.shape[0] != len(category_ids):
            raise ValueError("one text embedding per category id")
        self.text_embeds = text_embeds.detach().float().cpu()
        self.cat_to_row = {int(c): i for i, c in enumerate(category_ids)}
        self.topk = tuple(topk)

    def summarize(self, dets: ImageDetections, gt: ImageGroundTruth) -> DistillSummary:
        pairs = dets.region_pairs
        if pairs is None or len(pairs.category_ids) == 0:
            return DistillSummary([], [], [])
        student = torch.from_numpy(pairs.student).float()
        teacher = torch.from_numpy(pairs.teacher).float()
        summary = DistillSummary(cosine_per_pair(student, teacher).tolist(), [], [])
        rows = [self.cat_to_row.get(int(c)) for c in pairs.category_ids]
        known = torch.tensor([r is not None for r in rows], dtype=torch.bool)
        if known.any():
            labels = torch.tensor([r for r in rows if r is not None], dtype=torch.long)
            summary.student_ranks = label_ranks(student[known], self.text_embeds, labels).tolist()
            summary.teacher_ranks = label_ranks(teacher[known], self.text_embeds, labels).tolist()
        return summary

    def compute(self, records: Sequence[ImageRecord]) -> dict[str, float]:
        cos = np.array([v for r in records for v in r.data.cosines], dtype=np.float64)
        s_ranks = np.array([v for r in records for v in r.data.student_ranks])
        t_ranks = np.array([v for r in records for v in r.data.teacher_ranks])
        out = {"cosine": float(cos.mean()) if cos.size else float("nan")}
        for k in self.topk:
            out[f"top{k}"] = float((s_ranks < k).mean()) if s_ranks.size else float("nan")
            out[f"teacher_top{k}"] = float((t_ranks < k).mean()) if t_ranks.size else float("nan")
        out["num_regions"] = float(cos.size)
        return out
