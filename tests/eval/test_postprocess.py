"""Post-processing: per-image top-K over prompts, original frame, candidate pool, iterates."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch

from region_sam3.eval import BatchLayout, DetectionPool, ImageGroundTruth, PostProcessor
from region_sam3.eval.postprocess import masks_to_original, top_per_image


def outputs(num_prompts: int, queries: int, side: int = 16, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "pred_logits": torch.randn(num_prompts, queries, 1, generator=g),
        "presence_logit_dec": torch.randn(num_prompts, 1, generator=g),
        "pred_boxes": torch.rand(num_prompts, queries, 4, generator=g) * 0.4 + 0.3,
        "pred_masks": torch.randn(num_prompts, queries, side, side, generator=g),
    }


def layout(image_of_prompt, cats, orig, canvas=64, valid=None) -> BatchLayout:
    n = max(image_of_prompt) + 1
    return BatchLayout(torch.tensor(image_of_prompt), torch.tensor(cats), list(range(7, 7 + n)),
                       [orig] * n, [valid or (canvas, canvas)] * n, (canvas, canvas))


def test_three_prompts_by_200_queries_yield_exactly_k_detections_over_the_image():
    out = outputs(3, 200)
    dets = PostProcessor(max_dets_per_image=100)(out, layout([0, 0, 0], [1, 2, 3], (30, 50)))
    assert len(dets) == 1 and len(dets[0]) == 100  # not 3 x 100
    scores = (out["pred_logits"][..., 0].sigmoid() * out["presence_logit_dec"].sigmoid())
    expected = torch.sort(scores.flatten(), descending=True).values[:100]
    np.testing.assert_allclose(dets[0].scores, expected.numpy(), rtol=1e-6)
    assert set(dets[0].labels.tolist()) <= {1, 2, 3} and len(set(dets[0].labels.tolist())) > 1
    assert all(r["size"] == [30, 50] for r in dets[0].rles)  # original frame, non-square


def test_top_per_image_separates_images_in_one_sort():
    scores = torch.tensor([[0.9, 0.1], [0.5, 0.8], [0.7, 0.2]])
    prompt, query, top = top_per_image(scores, torch.tensor([0, 1, 0]), 2, 3)
    valid = top >= 0
    assert prompt[0].tolist() == [0, 2, 2] and query[0].tolist() == [0, 0, 1]
    assert prompt[1, :2].tolist() == [1, 1] and valid[1].tolist() == [True, True, False]


def test_masks_follow_sam3_bilinear_resize_and_threshold():
    out = outputs(2, 5)
    dets = PostProcessor(4)(out, layout([0, 0], [1, 2], (37, 53)))
    d = dets[0]
    for rle, score, lab in zip(d.rles, d.scores, d.labels):
        p = [1, 2].index(int(lab))
        probs = (out["pred_logits"][p, :, 0].sigmoid() * out["presence_logit_dec"][p].sigmoid())
        q = int(torch.argmin((probs - float(score)).abs()))
        ref = torch.nn.functional.interpolate(out["pred_masks"][p, q][None, None], (37, 53),
                                              mode="bilinear", align_corners=False)[0, 0] > 0
        assert np.array_equal(mask_utils.decode(rle).astype(bool), ref.numpy())


def test_padded_canvas_maps_content_window_onto_original():
    # Canvas 64, content 64x32 (a 2:1 portrait image padded on the right): logits positive
    # exactly on the content window must cover the whole original, and boxes scale by it.
    logits = torch.full((1, 16, 16), -5.0)
    logits[:, :, :8] = 5.0
    full = masks_to_original(logits, (64, 64), (64, 32), (100, 50))
    assert full.shape == (1, 100, 50) and bool((full > 0).all())
    out = outputs(1, 1)
    out["pred_boxes"] = torch.tensor([[[0.25, 0.5, 0.5, 1.0]]])  # the whole content window
    d = PostProcessor(1)(out, layout([0], [1], (100, 50), valid=(64, 32)))[0]
    np.testing.assert_allclose(d.boxes[0], [0, 0, 50, 100], atol=1e-4)


def test_final_iterate_is_not_recomputed_and_iterates_share_the_selection():
    out = outputs(2, 10)
    out["pred_masks_iter0"] = torch.randn_like(out["pred_masks"])
    out["pred_masks_iter1"] = out["pred_masks"]  # the region head returns M^T itself
    d = PostProcessor(5)(out, layout([0, 0], [1, 2], (20, 24)))[0]
    assert d.final_iteration == 1 and list(d.iterations) == [0]
    assert len(d.iterations[0].rles) == 5 and d.view(1) is d
    assert d.view(0).rles != d.rles
    assert list(PostProcessor(5, per_iteration=False)(out, layout([0, 0], [1, 2], (20, 24)))[0]
                .iterations) == []


def test_pool_merges_prompts_split_across_batches_into_one_top_k():
    out = outputs(4, 30)
    whole = PostProcessor(20)(out, layout([0, 0, 0, 0], [1, 2, 3, 4], (24, 24)))[0]
    pool = DetectionPool(20)
    gt = ImageGroundTruth(7, 24, 24, [], (1, 2), 0)
    for part, cats in ((slice(0, 2), [1, 2]), (slice(2, 4), [3, 4])):
        chunk = {k: v[part] for k, v in out.items()}
        floors = pool.score_floors([7])  # 2nd batch: only candidates beating the 20th score
        new = PostProcessor(20)(chunk, layout([0, 0], cats, (24, 24)), floors)
        if floors:
            assert len(new[0]) < 20 and (new[0].scores > floors[7]).all()
        pool.add(new, [gt])
        assert all(len(d) <= 20 for d in pool._dets.values())  # bounded candidate pool
        assert pool.pop_finished([7]) == ([], [])  # still active: not released
    (dets,), (gts,) = pool.flush()
    np.testing.assert_array_equal(dets.scores, whole.scores)
    assert dets.rles == whole.rles and dets.labels.tolist() == whole.labels.tolist()
    assert gts.prompted_category_ids == (1, 2)


def test_bad_k_is_rejected():
    with pytest.raises(ValueError, match="max_dets_per_image"):
        PostProcessor(0)


def test_candidate_pool_encodes_each_kept_mask_once_and_equals_one_batch(monkeypatch):
    out = outputs(6, 30, seed=3)
    out["pred_masks_iter0"] = torch.randn_like(out["pred_masks"])
    out["pred_masks_iter1"] = out["pred_masks"]
    lay = layout([0] * 6, [1, 2, 3, 4, 5, 6], (21, 26))
    whole = PostProcessor(20)(out, lay)[0]
    post = PostProcessor(20)
    pool = DetectionPool(20, post)
    resized = []
    real = post._encode
    monkeypatch.setattr(post, "_encode", lambda m, c: resized.append(len(m)) or real(m, c))
    gt = ImageGroundTruth(7, 21, 26, [], (1,), 0)
    for part in (slice(0, 2), slice(2, 4), slice(4, 6)):
        chunk = {k: v[part] for k, v in out.items()}
        floors = pool.score_floors([7])  # only candidates beating the K-th score are gathered
        new = post.select(chunk, layout([0, 0], [1, 2], (21, 26)), floors)
        pool.add(new, [gt])
        cand = pool._dets[7]
        assert len(cand) == 20 and cand.masks.shape == (20, 16, 16)  # low-res, bounded by K
        assert list(cand.iterations) == [0] and resized == []  # nothing encoded yet
        assert pool.pop_finished([7]) == ([], [])
    (dets,), _ = pool.flush()
    assert resized == [20, 20]  # exactly K masks per source (final + iter0), once
    np.testing.assert_array_equal(dets.scores, whole.scores)
    assert dets.rles == whole.rles and dets.iterations[0].rles == whole.iterations[0].rles
    assert dets.final_iteration == 1


def test_cpu_stability_equals_sam3_formula():
    from region_sam3.eval.masks import stability_score

    out = outputs(1, 8, seed=5)
    out["pred_masks"][0, :2] = -9.0  # empty masks: stability 1.0 by SAM's convention
    d = PostProcessor(8)(out, layout([0], [1], (30, 40)))[0]
    q = torch.sort(out["pred_logits"][0, :, 0], descending=True, stable=True).indices
    full = masks_to_original(out["pred_masks"][0, q], (64, 64), (64, 64), (30, 40))
    np.testing.assert_allclose(d.stability, stability_score(full).numpy(), rtol=1e-6)
    assert (d.stability == 1.0).sum() >= 2


def test_candidate_merge_keeps_earlier_batches_on_tied_scores():
    out = outputs(4, 10, seed=1)
    out["pred_logits"][:] = 0.0
    out["presence_logit_dec"][:] = 0.0  # every candidate scores 0.25: ties everywhere
    whole = PostProcessor(12)(out, layout([0] * 4, [1, 2, 3, 4], (20, 20)))[0]
    post = PostProcessor(12)
    pool = DetectionPool(12, post)
    gt = ImageGroundTruth(7, 20, 20, [], (1,), 0)
    for part in (slice(0, 1), slice(1, 2), slice(2, 4)):  # no floors: exercise the merge
        chunk = {k: v[part] for k, v in out.items()}
        n = part.stop - part.start
        pool.add(post.select(chunk, layout([0] * n, list(range(1, n + 1)), (20, 20))), [gt])
    (dets,), _ = pool.flush()
    assert dets.rles == whole.rles and len(dets) == 12
