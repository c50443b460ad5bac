"""Distillation loss: known values, KL, warmup and the empty case."""

import math

import pytest
import torch
import torch.nn.functional as F

from region_sam3.losses.distill import DistillationLoss, cosine_distill_loss, similarity_kl_loss


def test_cosine_zero_for_identical() -> None:
    torch.manual_seed(0)
    x = torch.randn(5, 8)
    assert cosine_distill_loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)
    # scale-invariant: cosine ignores the norm
    assert cosine_distill_loss(3 * x, x).item() == pytest.approx(0.0, abs=1e-6)


def test_cosine_known_value() -> None:
    s = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    t = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    expected = ((1 - 0.0) + (1 - 1 / math.sqrt(2))) / 2
    assert cosine_distill_loss(s, t).item() == pytest.approx(expected, rel=1e-6)


def test_teacher_gets_no_grad() -> None:
    s = torch.randn(3, 4, requires_grad=True)
    t = torch.randn(3, 4, requires_grad=True)
    cosine_distill_loss(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_kl_zero_when_equal_and_positive_otherwise() -> None:
    torch.manual_seed(0)
    s, text = torch.randn(4, 8), torch.randn(6, 8)
    assert similarity_kl_loss(s, s.clone(), text, 0.1).item() == pytest.approx(0.0, abs=1e-6)
    assert similarity_kl_loss(s, torch.randn(4, 8), text, 0.1).item() > 1e-3


def test_kl_matches_manual() -> None:
    torch.manual_seed(1)
    s, t, text = torch.randn(3, 5), torch.randn(3, 5), torch.randn(4, 5)
    tau = 0.5
    ps = F.softmax(F.normalize(s, dim=-1) @ F.normalize(text, dim=-1).T / tau, dim=-1)
    pt = F.softmax(F.normalize(t, dim=-1) @ F.normalize(text, dim=-1).T / tau, dim=-1)
    manual = (pt * (pt.log() - ps.log())).sum(-1).mean()
    assert similarity_kl_loss(s, t, text, tau).item() == pytest.approx(manual.item(), rel=1e-5)


def test_warmup_scaling() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(4, 8), torch.randn(4, 8)
    loss = DistillationLoss(cosine_weight=2.0, warmup_steps=10)
    full = 2.0 * cosine_distill_loss(s, t).item()
    assert loss(s, t, step=0)["loss_distill"].item() == pytest.approx(0.0)
    assert loss(s, t, step=5)["loss_distill"].item() == pytest.approx(0.5 * full, rel=1e-6)
    assert loss(s, t, step=100)["loss_distill"].item() == pytest.approx(full, rel=1e-6)
    out = loss(s, t, step=5)
    assert out["loss_distill_cos"].item() == pytest.approx(full / 2, rel=1e-6)  # unweighted term
    assert out["distill_scale"].item() == pytest.approx(0.5)


def test_weighted_sum_with_kl() -> None:
    torch.manual_seed(0)
    s, t, text = torch.randn(4, 8), torch.randn(4, 8), torch.randn(3, 8)
    out = DistillationLoss(cosine_weight=1.0, kl_weight=0.5, temperature=0.2)(s, t, text)
    expected = cosine_distill_loss(s, t) + 0.5 * similarity_kl_loss(s, t, text, 0.2)
    assert out["loss_distill"].item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError):
        DistillationLoss(kl_weight=1.0)(s, t)


def test_empty_regions_zero_with_grad_path() -> None:
    s = torch.zeros(0, 8, requires_grad=True)
    t = torch.zeros(0, 8)
    out = DistillationLoss(kl_weight=1.0)(s, t, torch.randn(3, 8), step=3)
    assert out["loss_distill"].item() == 0.0
    assert out["loss_distill"].requires_grad
    out["loss_distill"].backward()
    assert s.grad is not None and s.grad.shape == (0, 8)
