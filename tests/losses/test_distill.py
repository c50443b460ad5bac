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


def _boolean_indexed_reference(s, t, text, keep, cos_w, kl_w, tau, scale):
    """The previous implementation, verbatim: rows dropped by `[keep]`, then plain means."""
    s, t = s[keep], t[keep]
    cos = (1.0 - F.cosine_similarity(s, t, dim=-1)).mean()
    out = {"loss_distill_cos": cos}
    total = cos_w * cos
    if kl_w > 0:
        text = F.normalize(text, dim=-1)
        kl = F.kl_div(F.log_softmax(F.normalize(s, dim=-1) @ text.T / tau, dim=-1),
                      F.log_softmax(F.normalize(t, dim=-1) @ text.T / tau, dim=-1),
                      reduction="batchmean", log_target=True)
        out["loss_distill_kl"] = kl
        total = total + kl_w * kl
    out["loss_distill"] = total * scale
    return out


@pytest.mark.parametrize("kl_weight", [0.0, 0.7])
def test_row_weights_equal_boolean_indexing(kl_weight: float) -> None:
    """0/1 weights give the losses and gradients of the old `student[keep], teacher[keep]`."""
    g = torch.Generator().manual_seed(3)
    s0, t, text = torch.randn(7, 8, generator=g), torch.randn(7, 8, generator=g), torch.randn(5, 8, generator=g)
    keep = torch.tensor([True, False, True, True, False, True, False])
    t[~keep] = float("nan")  # whatever an invalid teacher row holds, it cannot leak in
    loss = DistillationLoss(cosine_weight=2.0, kl_weight=kl_weight, temperature=0.1)
    s_old, s_new = s0.clone().requires_grad_(), s0.clone().requires_grad_()
    old = _boolean_indexed_reference(s_old, t, text, keep, 2.0, kl_weight, 0.1, scale=0.5)
    new = loss(s_new, t, text, step=None, weight=keep.float())
    new["loss_distill"] = new["loss_distill"] * 0.5  # the warmup scale, as in the reference
    assert set(old) <= set(new)
    for key in old:
        torch.testing.assert_close(new[key], old[key], atol=1e-6, rtol=1e-6)
    old["loss_distill"].backward()
    new["loss_distill"].backward()
    torch.testing.assert_close(s_new.grad, s_old.grad, atol=1e-6, rtol=1e-6)
    assert not s_new.grad[~keep].any()


def test_all_zero_weights_give_a_grad_connected_zero() -> None:
    s = torch.randn(3, 8, requires_grad=True)
    out = DistillationLoss(kl_weight=1.0)(s, torch.randn(3, 8), torch.randn(4, 8),
                                          weight=torch.zeros(3))
    assert out["loss_distill"].item() == 0.0 and out["loss_distill"].requires_grad
    out["loss_distill"].backward()
    assert s.grad is not None and not s.grad.any()
    with pytest.raises(ValueError, match="weight"):
        cosine_distill_loss(s, s.detach(), torch.ones(2))


def test_a_nonfinite_student_row_still_shows_in_the_loss() -> None:
    """Weights mask teacher rows only: a NaN student (a broken model) must reach the
    non-finite check instead of being hidden by a zero weight."""
    s, t = torch.randn(2, 8), torch.randn(2, 8)
    s[1] = float("nan")
    assert torch.isnan(cosine_distill_loss(s, t, torch.tensor([1.0, 0.0])))
