"""SAM stability score and perturbation stability."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from region_sam3.eval import StabilityEvaluator
from region_sam3.eval.masks import stability_score
from region_sam3.eval.stability import perturbation_stability, translate
from tests.eval.records import box_mask, detections, ground_truth


def known_logits() -> torch.Tensor:
    """10x10 logits: 20 px at +5, 30 px at +0.5, 50 px at -3 -> |l>1| / |l>-1| = 20 / 50."""
    flat = torch.cat([torch.full((20,), 5.0), torch.full((30,), 0.5), torch.full((50,), -3.0)])
    return flat.reshape(1, 10, 10)


def test_stability_known_value_logits_and_probs():
    assert stability_score(known_logits()).tolist() == pytest.approx([0.4])
    probs = torch.sigmoid(known_logits())
    assert stability_score(probs, mask_kind="probs").tolist() == pytest.approx([0.4])


def test_stability_empty_mask_is_one_and_binary_rejected():
    assert stability_score(torch.full((2, 4, 4), -5.0)).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError):
        stability_score(torch.zeros(1, 4, 4), mask_kind="binary")


def test_stability_matches_sam3_implementation():
    mask_decoder = pytest.importorskip("sam3.sam.mask_decoder")
    logits = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2
    # The sam3 method only reads its delta from the instance.
    fake_self = types.SimpleNamespace(dynamic_multimask_stability_delta=1.0)
    ref = mask_decoder.MaskDecoder._get_stability_scores(fake_self, logits)
    assert torch.allclose(stability_score(logits), ref)


def test_stability_evaluator_thresholded_and_threshold_free():
    g = box_mask(16, 16, 0, 0, 8, 8)
    other = box_mask(16, 16, 10, 10, 16, 16)
    # Detections: a confident FP (stability 0.4), the GT's match at low score (0.9), a
    # confident duplicate-less mask elsewhere (1.0).
    d = detections(0, [other, g, other], [0.9, 0.2, 0.8], [1, 1, 1], stability=[0.4, 0.9, 1.0])
    ev = StabilityEvaluator(score_threshold=0.5)
    ev.process([d], [ground_truth(0, [g], [1])])
    m = ev.evaluate()
    assert m["stability/score"] == pytest.approx((0.4 + 1.0) / 2)
    assert m["stability/num_masks"] == 2
    # Threshold-free: the best-IoU detection of the GT, whatever its score.
    assert m["stability/score_topk"] == pytest.approx(0.9)
    assert m["stability/num_gt_matched"] == 1


def test_stability_evaluator_empty_is_nan_with_count():
    m = StabilityEvaluator().evaluate()
    assert np.isnan(m["stability/score"]) and m["stability/num_masks"] == 0


def test_translate_moves_content_with_zero_fill():
    x = torch.arange(16.0).reshape(4, 4)
    y = translate(x, 1, -1)
    assert y[1, 0] == x[0, 1] and y[0].abs().sum() == 0 and y[:, 3].abs().sum() == 0
    assert torch.equal(translate(translate(x, 2, 0), -2, 0)[:2], x[:2])


def images() -> list[torch.Tensor]:
    out = []
    for y0, x0 in [(8, 8), (12, 5)]:
        img = torch.zeros(3, 32, 32)
        img[:, y0 : y0 + 10, x0 : x0 + 10] = 1.0
        out.append(img)
    return out


def equivariant_fn(img: torch.Tensor):
    """Segments the bright square: follows the input exactly."""
    return (img[0] > 0.5).float()[None], torch.tensor([0.9])


def fixed_fn(img: torch.Tensor):
    """Ignores the input: always the same square, so it does not follow shifts."""
    m = torch.zeros(1, 32, 32)
    m[0, 10:20, 10:20] = 1.0
    return m, torch.tensor([0.9])


def test_equivariant_predictor_is_perfectly_stable():
    r = perturbation_stability(equivariant_fn, images(), scales=(0.9, 1.1), mask_kind="probs")
    assert r["perturb/shift_mIoU"] == pytest.approx(1.0)
    assert r["perturb/scale_mIoU"] > 0.8
    assert r["perturb/num_images"] == 2


def test_input_blind_predictor_loses_iou_under_shift():
    # Prediction mapped back from a 4-row shift lands on rows 6:16 vs 10:20: 60 / 140.
    r = perturbation_stability(
        fixed_fn, images()[:1], shifts=[(4, 0)], scales=(), mask_kind="probs"
    )
    assert r["perturb/shift_mIoU"] == pytest.approx(60 / 140)
    assert r["perturb/mIoU"] == pytest.approx(60 / 140)
