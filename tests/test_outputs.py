"""The output-key contract (`region_sam3.outputs`, issue 21): keys, their parsing, the score."""

from __future__ import annotations

import torch

from region_sam3.outputs import (
    collect_iter_masks,
    iter_mask_items,
    iter_mask_key,
    iter_mask_keys,
    parse_iter_mask_key,
    presence_scores,
    same_tensor,
    split_iter_metric_key,
)


def test_iter_mask_key_round_trip() -> None:
    assert iter_mask_keys(2) == ["pred_masks_iter0", "pred_masks_iter1", "pred_masks_iter2"]
    for t in (0, 1, 7, 12):
        assert parse_iter_mask_key(iter_mask_key(t)) == t


def test_parse_rejects_non_iter_keys() -> None:
    for key in ("pred_masks", "pred_masks_iter", "pred_masks_iter1_o2m", "pred_masks_iterx",
                "xpred_masks_iter1", "loss_mask_iter0", "pred_masks_iter-1"):
        assert parse_iter_mask_key(key) is None, key


def test_iter_mask_items_sorted_numerically() -> None:
    keys = ["pred_masks", "pred_masks_iter10", "pred_masks_iter2", "pred_masks_iter2_o2m"]
    assert iter_mask_items(keys) == [(2, "pred_masks_iter2"), (10, "pred_masks_iter10")]


def test_collect_iter_masks_with_suffix() -> None:
    a, b = torch.zeros(1, 2, 3, 3), torch.ones(1, 2, 3, 3)
    out = {"pred_masks_iter0_o2m": a, "pred_masks_iter1_o2m": b, "pred_masks_iter0": b}
    got = collect_iter_masks(out, 1, suffix="_o2m")
    assert got[0] is a and got[1] is b


def test_same_tensor_identity_and_views() -> None:
    x = torch.randn(2, 3, 4, 4)
    assert same_tensor(x, x)
    assert same_tensor(x, x.view(2, 3, 4, 4))  # another object on the same storage
    assert not same_tensor(x, x.clone())
    assert not same_tensor(x, x[:, :2])  # shares the data pointer, not the shape


def test_split_iter_metric_key() -> None:
    assert split_iter_metric_key("iter2/mask/AP") == (2, "mask/AP")
    assert split_iter_metric_key("iter10/boundary/AP50") == (10, "boundary/AP50")
    assert split_iter_metric_key("mask/AP") is None
    assert split_iter_metric_key("test/iter2/mask/AP") is None


def test_detection_scores_equal_old_expressions() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 1, generator=g) * 4
    presence = torch.randn(3, 1, generator=g) * 4
    got = presence_scores(logits, presence)
    assert got.shape == (3, 5)
    # eval/postprocess.py before issue 21
    assert torch.equal(got, logits[..., 0].sigmoid() * presence.reshape(3, 1).sigmoid())
    # region_query.py before issue 21
    old = (logits.sigmoid() * presence.sigmoid().unsqueeze(1)).squeeze(-1)
    assert torch.equal(got, old)
