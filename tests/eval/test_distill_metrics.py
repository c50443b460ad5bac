"""Distillation metrics on constructed embeddings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from region_sam3.eval import (
    DistillationEvaluator,
    RegionPairs,
    mean_cosine,
    zero_shot_accuracy,
)
from tests.eval.records import detections, ground_truth

E = torch.eye(6)  # text embedding of class c is e_c


def test_mean_cosine_constructed():
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    t = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, -1.0]])
    assert mean_cosine(s, t) == pytest.approx((1.0 + 1 / math.sqrt(2) - 1.0) / 3)
    assert math.isnan(mean_cosine(torch.zeros(0, 2), torch.zeros(0, 2)))


def test_zero_shot_top1_top5():
    # Region 0 points at class 2 (correct). Region 1 is closest to class 0 then class 3
    # (true = 3: top-1 wrong, top-5 right). Region 2 is anti-aligned with its class 5 and
    # positive on all others, so the true class is ranked last: wrong even at top-5.
    regions = torch.stack([E[2], 0.9 * E[0] + 0.5 * E[3], torch.tensor([1.0, 1, 1, 1, 1, -1])])
    acc = zero_shot_accuracy(regions, E, torch.tensor([2, 3, 5]), topk=(1, 2, 5))
    assert acc[1] == pytest.approx(1 / 3)
    assert acc[2] == pytest.approx(2 / 3)
    assert acc[5] == pytest.approx(2 / 3)


def test_constant_embedding_is_not_counted_correct():
    acc = zero_shot_accuracy(torch.ones(2, 6), E, torch.tensor([0, 1]), topk=(1,))
    assert acc[1] == 0.0  # all classes tie: ties count against the true class


def masks(n: int) -> torch.Tensor:
    m = torch.zeros(n, 16, 16, dtype=torch.bool)
    for i in range(n):
        m[i, 4 * i : 4 * i + 3, :5] = True
    return m


def test_evaluator_on_matcher_pairs():
    # Pairs as the module builds them from SAM3's matcher: student/teacher per GT instance.
    student = torch.stack([E[1], -E[0], E[2]])
    teacher = torch.stack([E[1], E[0], E[2]])
    d = detections(0, [np.zeros((4, 4), bool)], [0.5], [10])
    d.region_pairs = RegionPairs(student.numpy(), teacher.numpy(), np.array([11, 10, 10]))
    ev = DistillationEvaluator(E[:3], category_ids=[10, 11, 12])
    ev.process([d], [ground_truth(0, [np.zeros((4, 4), bool)], [10])])
    m = ev.evaluate()
    assert m["distill/num_regions"] == 3
    assert m["distill/cosine"] == pytest.approx((1 - 1 + 1) / 3)
    # E1 -> 11 correct; -E0 ranks class 10 last; E2 says 12, not 10.
    assert m["distill/top1"] == pytest.approx(1 / 3)
    assert m["distill/teacher_top1"] == pytest.approx(2 / 3)
    assert not any(k.startswith("iter") for k in m)


def test_evaluator_without_pairs_is_nan_with_count_zero():
    ev = DistillationEvaluator(E[:3], category_ids=[10, 11, 12])
    ev.process([detections(0, [np.zeros((4, 4), bool)], [0.5], [10])],
               [ground_truth(0, [np.zeros((4, 4), bool)], [10])])
    m = ev.evaluate()
    assert np.isnan(m["distill/cosine"]) and m["distill/num_regions"] == 0
