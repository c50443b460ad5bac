"""Parity: SAM3's post-processor + pycocotools on a COCO json == this project's path.

Small COCO-format set: non-square originals, several prompts per image (all categories, as
COCO evaluation asks), a crowd region. Model outputs are random logits correlated with the GT.
Reference: ``sam3.eval.postprocessors.PostProcessImage`` (per image, forced labels, original
sizes, RLE) pruned to the top-K per image as its ``process_results`` does, then pycocotools
``COCO(json).loadRes`` + ``COCOeval``. Ours: ``PostProcessor`` + ``COCOMaskEvaluator`` with the
dataset's original-frame annotations.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
import torch.nn.functional as F
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from region_sam3.data.coco import original_frame_annotations
from region_sam3.data.coco_index import load_coco_index
from region_sam3.eval import BatchLayout, COCOMaskEvaluator, ImageGroundTruth, PostProcessor

SIZES = {1: (40, 56), 2: (48, 30), 3: (36, 36)}
CATS = (1, 2, 3)
QUERIES, LOW, CANVAS, K = 24, 16, 64, 10


def rect(h, w, y0, x0, y1, x1):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def write_coco(path):
    anns = []

    def add(img, cat, m, crowd=0):
        r = mask_utils.encode(np.asfortranarray(m))
        anns.append({"id": len(anns) + 1, "image_id": img, "category_id": cat,
                     "segmentation": {"size": r["size"], "counts": r["counts"].decode()},
                     "area": float(m.sum()), "iscrowd": crowd,
                     "bbox": [float(v) for v in mask_utils.toBbox(r)]})

    add(1, 1, rect(40, 56, 2, 3, 18, 25))
    add(1, 1, rect(40, 56, 20, 30, 38, 54))
    add(1, 2, rect(40, 56, 5, 30, 15, 50))
    add(1, 2, rect(40, 56, 25, 0, 40, 20), crowd=1)  # crowd region
    add(2, 3, rect(48, 30, 4, 4, 30, 26))
    add(2, 1, rect(48, 30, 34, 2, 46, 12))
    add(3, 2, rect(36, 36, 8, 8, 28, 28))
    data = {"images": [{"id": i, "file_name": f"{i}.png", "height": h, "width": w}
                       for i, (h, w) in SIZES.items()],
            "categories": [{"id": c, "name": f"c{c}"} for c in CATS], "annotations": anns}
    path.write_text(json.dumps(data))
    return data


def model_outputs(data, seed=0):
    """One prompt per (image, category); queries 0..n-1 of a positive prompt imitate its GT."""
    g = torch.Generator().manual_seed(seed)
    n = len(SIZES) * len(CATS)
    masks = torch.randn(n, QUERIES, LOW, LOW, generator=g) * 2 - 2
    p = 0
    for img in SIZES:
        for cat in CATS:
            gts = [a for a in data["annotations"] if a["image_id"] == img
                   and a["category_id"] == cat]
            for q, a in enumerate(gts):
                m = torch.from_numpy(mask_utils.decode(a["segmentation"]).astype(np.float32))
                low = F.interpolate(m[None, None], (LOW, LOW), mode="bilinear")[0, 0]
                masks[p, q] = (low - 0.5) * 8 + torch.randn(LOW, LOW, generator=g)
            p += 1
    return {
        "pred_logits": torch.randn(n, QUERIES, 1, generator=g) * 2,
        "presence_logit_dec": torch.randn(n, 1, generator=g),
        "pred_boxes": torch.rand(n, QUERIES, 4, generator=g) * 0.3 + 0.3,
        "pred_masks": masks,
    }


def sam3_results(out):
    """Detections by SAM3's own post-processor, pruned per image like ``process_results``."""
    from sam3.eval.postprocessors import PostProcessImage

    post = PostProcessImage(max_dets_per_img=K, iou_type="segm", to_cpu=True,
                            convert_mask_to_rle=True, always_interpolate_masks_on_gpu=False)
    results = []
    for i, (img, (h, w)) in enumerate(SIZES.items()):
        sl = slice(i * len(CATS), (i + 1) * len(CATS))
        per = post({k: v[sl] for k, v in out.items()},
                   torch.tensor([[h, w]] * len(CATS)), torch.tensor([[h, w]] * len(CATS)),
                   forced_labels=torch.tensor(CATS))
        scores = torch.cat([r["scores"] for r in per])
        labels = torch.cat([r["labels"] for r in per])
        rles = [m for r in per for m in r["masks_rle"]]
        for j in torch.topk(scores, K).indices.tolist():
            results.append({"image_id": img, "category_id": int(labels[j]),
                            "segmentation": rles[j], "score": float(scores[j])})
    return results


def test_mask_ap_matches_sam3_postprocessor_plus_pycocotools(tmp_path):
    ann_file = tmp_path / "instances.json"
    data = write_coco(ann_file)
    out = model_outputs(data)

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(ann_file))
        ref = COCOeval(coco, coco.loadRes(sam3_results(out)), iouType="segm")
        ref.evaluate()
        ref.accumulate()
        ref.summarize()

    index = load_coco_index(ann_file, tmp_path, check_image_files=False)
    layout = BatchLayout(
        query_image_index=torch.arange(len(SIZES)).repeat_interleave(len(CATS)),
        category_ids=torch.tensor(CATS * len(SIZES)), image_ids=list(SIZES),
        orig_sizes=list(SIZES.values()), valid_sizes=[(CANVAS, CANVAS)] * len(SIZES),
        canvas_size=(CANVAS, CANVAS))
    dets = PostProcessor(max_dets_per_image=K)(out, layout)
    assert [len(d) for d in dets] == [K] * len(SIZES)
    gts = []
    for rec in index.images:
        anns = original_frame_annotations(rec)
        gts.append(ImageGroundTruth(rec.image_id, rec.height, rec.width, anns, CATS,
                                    sum(1 for a in anns if not a["iscrowd"])))
    assert sum(a["iscrowd"] for g in gts for a in g.annotations) == 1  # the crowd reached us
    ev = COCOMaskEvaluator()
    ev.process(dets, gts)
    ours = ev.evaluate()

    assert 0.05 < ref.stats[0] < 0.95  # a non-degenerate case
    for i, name in enumerate(["AP", "AP50", "AP75"]):
        assert ours[f"mask/{name}"] == pytest.approx(ref.stats[i], abs=1e-6)
    assert ours["mask/AR100"] == pytest.approx(ref.stats[8], abs=1e-6)
