"""COCO results file: re-scored with plain pycocotools against the split's *original* annotation
file, it gives exactly the logged metrics (mask AP, and Boundary AP by the official recipe).

The dataset is drawn here with PIL (not the project's drawing code): non-square images, float
polygons whose file ``area`` is the polygon's (not the mask's), overlapping objects, sub-pixel
objects (some rasterise to an empty mask, which COCO still counts as ground truth), crowd
regions as uncompressed RLE interleaved with the instances, non-contiguous ids. Detections go
through the project's whole evaluation path: ``FindQueryDataset`` (original-frame GT) ->
collate -> ``PostProcessor.select`` -> ``DetectionPool`` -> evaluators + ``CocoResultsWriter``.
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
from PIL import Image, ImageDraw
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy import ndimage
from torch.utils.data import DataLoader

from region_sam3.data.batch import collate_find_queries
from region_sam3.data.coco import FindQueryDataset
from region_sam3.data.transforms import FindQueryTransform
from region_sam3.eval import (
    BatchLayout,
    BoundaryAPEvaluator,
    COCOMaskEvaluator,
    DetectionPool,
    EvaluatorList,
    PostProcessor,
    ground_truth_from_batch,
)
from region_sam3.eval.results_file import RESULTS_FILE, CocoResultsWriter

SIZES = [(48, 72), (80, 44), (60, 60), (37, 91), (70, 50), (45, 45)]
IMAGE_IDS = [101, 7, 230, 55, 999, 12]
CATS = {3: "red thing", 7: "green thing", 11: "blue thing", 20: "yellow thing"}
COLORS = {3: (220, 30, 30), 7: (30, 200, 40), 11: (30, 40, 220), 20: (230, 220, 20)}
STATS = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "AR1", "AR10", "AR100")
RES, LOW, QUERIES, K = 64, 32, 12, 20


def _shoelace(poly):
    x, y = np.asarray(poly[0::2]), np.asarray(poly[1::2])
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _uncompressed_rle(mask):
    """Column-major run lengths starting with zeros (COCO's uncompressed RLE), by hand."""
    flat = mask.astype(np.uint8).flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs = [0] + runs
    return {"counts": [int(r) for r in runs], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def draw_dataset(root, seed=0):
    """PNG images + a COCO instances json; returns the json path."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for image_id, (h, w) in zip(IMAGE_IDS, SIZES):
        img = Image.new("RGB", (w, h), (90, 90, 90))
        draw = ImageDraw.Draw(img)
        n_obj = int(rng.integers(4, 9))
        for k in range(n_obj):
            cat = int(rng.choice(list(CATS)))
            if k % 4 == 3:  # sub-pixel object: may rasterise to nothing
                cx, cy = rng.uniform(2, w - 2), rng.uniform(2, h - 2)
                s = rng.uniform(0.2, 0.9)
                poly = [cx, cy, cx + s, cy, cx + s, cy + s * 0.7]
            else:  # a random quad, overlapping the others in these small images
                cx, cy = rng.uniform(0.2 * w, 0.8 * w), rng.uniform(0.2 * h, 0.8 * h)
                rx, ry = rng.uniform(2, 0.35 * w), rng.uniform(2, 0.35 * h)
                ang = np.sort(rng.uniform(0, 2 * np.pi, 4))
                poly = [v for a in ang for v in (float(np.clip(cx + rx * np.cos(a), 0, w)),
                                                 float(np.clip(cy + ry * np.sin(a), 0, h)))]
            draw.polygon(poly, fill=COLORS[cat])
            anns.append({"image_id": image_id, "category_id": cat, "segmentation": [poly],
                         "area": _shoelace(poly), "iscrowd": 0})
            if k == 1:  # a crowd region between the instances (file order matters)
                crowd = Image.new("L", (w, h), 0)
                x0, y0 = rng.uniform(0, w / 2), rng.uniform(0, h / 2)
                ImageDraw.Draw(crowd).ellipse([x0, y0, x0 + w / 2, y0 + h / 2], fill=1)
                m = np.asarray(crowd, dtype=np.uint8)
                anns.append({"image_id": image_id, "category_id": cat,
                             "segmentation": _uncompressed_rle(m), "area": float(m.sum()),
                             "iscrowd": 1})
        img.save(root / f"img_{image_id}.png")
        images.append({"id": image_id, "file_name": f"img_{image_id}.png",
                       "height": h, "width": w})
    ids = rng.permutation(len(anns)) * 3 + 17  # non-contiguous, not in file order
    for a, i in zip(anns, ids):
        a["id"] = int(i)
    data = {"images": images, "annotations": anns,
            "categories": [{"id": c, "name": n} for c, n in CATS.items()]}
    path = root / "instances.json"
    path.write_text(json.dumps(data))
    return path


def fake_outputs(batch, g):
    """Outputs correlated with the GT: the first queries of a prompt imitate its targets."""
    b = len(batch.category_ids)
    masks = torch.randn(b, QUERIES, LOW, LOW, generator=g) * 2 - 3
    logits = torch.randn(b, QUERIES, 1, generator=g) * 1.5 - 1
    for t, q in enumerate(batch.target_query_index.tolist()):
        slot = int((batch.target_query_index[:t] == q).sum())
        if slot >= QUERIES:
            continue
        low = F.interpolate(batch.masks[t].float()[None, None], (LOW, LOW), mode="bilinear")
        masks[q, slot] = (low[0, 0] - 0.5) * 8 + torch.randn(LOW, LOW, generator=g) * 1.5
        logits[q, slot] += 2.5
    return {"pred_logits": logits, "presence_logit_dec": torch.randn(b, 1, generator=g),
            "pred_boxes": torch.rand(b, QUERIES, 4, generator=g) * 0.3 + 0.3,
            "pred_masks": masks}


def run_project_eval(ann_file, image_dir, out_dir, boundary_ratio=None):
    """The project's evaluation path; returns (logged metrics, results file path).
    ``boundary_ratio``: the post-processor makes the boundary bands (as the module does)."""
    ds = FindQueryDataset(image_dir, ann_file, FindQueryTransform(RES, keep_aspect_ratio=True),
                          all_categories=True, eval_annotations=True)
    post = PostProcessor(K, boundary_ratio=boundary_ratio)
    pool = DetectionPool(K, post)
    evaluators = EvaluatorList([COCOMaskEvaluator(), BoundaryAPEvaluator()])
    writer = CocoResultsWriter(out_dir)
    g = torch.Generator().manual_seed(0)

    def release(dets, gts):
        writer.write(dets)
        evaluators.process(dets, gts)

    for batch in DataLoader(ds, batch_size=2, collate_fn=collate_find_queries):
        layout = BatchLayout.from_batch(batch)
        pool.add(post.select(fake_outputs(batch, g), layout), ground_truth_from_batch(batch))
        release(*pool.pop_finished(batch.image_ids.tolist()))
    release(*pool.flush())
    writer.close()
    metrics = evaluators.evaluate()
    (path,) = writer.finish()
    return metrics, path


def _boundary_rle(rle, h, w):
    """Official Boundary IoU band: 1-px zero pad, d iterations of a 3x3 erosion, mask - eroded."""
    m = mask_utils.decode(rle)
    d = max(1, int(round(0.02 * np.sqrt(h**2 + w**2))))
    padded = np.pad(m, 1)
    eroded = ndimage.binary_erosion(padded, np.ones((3, 3)), iterations=d)[1:-1, 1:-1]
    return mask_utils.encode(np.asfortranarray((m > 0) & ~eroded).astype(np.uint8))


class OfficialBoundaryCOCOeval(COCOeval):
    """boundary-iou-api's ``computeBoundaryIoU``: min(mask, boundary IoU), crowd GT: mask IoU."""

    def computeIoU(self, imgId, catId):  # noqa: N802 - pycocotools API
        gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
        if len(gt) == 0 and len(dt) == 0:
            return []
        dt = [dt[i] for i in np.argsort([-d["score"] for d in dt], kind="mergesort")]
        dt = dt[: self.params.maxDets[-1]]
        crowd = [int(o["iscrowd"]) for o in gt]
        ious = np.array(mask_utils.iou([d["segmentation"] for d in dt],
                                       [g["segmentation"] for g in gt], crowd))
        if len(gt) and len(dt):
            img = self.cocoGt.imgs[imgId]
            h, w = img["height"], img["width"]
            b = np.array(mask_utils.iou([_boundary_rle(d["segmentation"], h, w) for d in dt],
                                        [_boundary_rle(g["segmentation"], h, w) for g in gt],
                                        crowd))
            keep = np.asarray(crowd) == 0
            ious[:, keep] = np.minimum(ious[:, keep], b[:, keep])
        return ious


def rescore(ann_file, results, eval_cls=COCOeval, max_dets=100):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        ev = eval_cls(gt, gt.loadRes(results), iouType="segm")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(STATS, ev.stats))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("drawn")
    ann_file = draw_dataset(root)
    metrics, path = run_project_eval(ann_file, root, root / "results")
    return ann_file, metrics, path


def test_dataset_has_what_the_parity_needs(evaluated):
    ann_file, metrics, _ = evaluated
    data = json.loads(ann_file.read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(ann_file))
    areas = [float(mask_utils.area(coco.annToRLE(a))) for a in data["annotations"]]
    assert any(a["iscrowd"] for a in data["annotations"])
    assert any(a == 0 for a in areas)  # sub-pixel objects with an empty mask
    assert any(abs(a["area"] - m) > 1 for a, m in zip(data["annotations"], areas))
    assert len({(h, w) for h, w in SIZES}) > 1 and any(h != w for h, w in SIZES)
    assert metrics["mask/num_gt"] == sum(1 for a in data["annotations"] if not a["iscrowd"])


def test_results_file_format(evaluated):
    ann_file, metrics, path = evaluated
    assert path.name == RESULTS_FILE
    results = json.loads(path.read_text())
    assert len(results) == metrics["mask/num_dets"] > 0
    sizes = {i: (h, w) for i, (h, w) in zip(IMAGE_IDS, SIZES)}
    for r in results:
        assert set(r) == {"image_id", "category_id", "segmentation", "bbox", "score"}
        assert r["category_id"] in CATS and r["image_id"] in sizes
        assert tuple(r["segmentation"]["size"]) == sizes[r["image_id"]]  # original frame
        assert len(r["bbox"]) == 4 and r["bbox"][2] >= 0 and r["bbox"][3] >= 0
    assert not (path.parent / ".parts").exists()


def test_rescoring_the_file_gives_the_logged_mask_ap(evaluated):
    ann_file, metrics, path = evaluated
    results = json.loads(path.read_text())
    as_is = rescore(ann_file, results)
    assert 0.05 < as_is["AP"] < 0.95, as_is  # non-degenerate
    # With `bbox` present pycocotools uses box areas for the S/M/L buckets: AP, AR unaffected.
    for name in ("AP", "AP50", "AP75", "AR1", "AR10", "AR100"):
        assert metrics[f"mask/{name}"] == pytest.approx(as_is[name], abs=1e-6), name
    # Mask results as detectron2 scores them (bbox dropped): every number equal.
    no_box = rescore(ann_file, [{k: v for k, v in r.items() if k != "bbox"} for r in results])
    for name in STATS:
        ref = no_box[name]
        if ref < 0:
            assert np.isnan(metrics[f"mask/{name}"]), name
        else:
            assert metrics[f"mask/{name}"] == pytest.approx(ref, abs=1e-6), name


def test_rescoring_the_file_gives_the_logged_boundary_ap(evaluated):
    ann_file, metrics, path = evaluated
    results = [{k: v for k, v in r.items() if k != "bbox"} for r in json.loads(path.read_text())]
    ref = rescore(ann_file, results, eval_cls=OfficialBoundaryCOCOeval)
    assert ref["AP50"] > 0.02, ref
    for name in ("AP", "AP50", "AP75", "AR100"):
        assert metrics[f"boundary/{name}"] == pytest.approx(ref[name], abs=1e-6), name


def test_bands_made_by_the_post_processor_give_the_same_metrics(evaluated, tmp_path):
    """Boundary bands made next to the masks (``PostProcessor(boundary_ratio=0.02)``, what the
    module uses) give exactly the metrics of bands decoded from the RLEs by the evaluator."""
    ann_file, metrics, _ = evaluated
    again, _ = run_project_eval(ann_file, ann_file.parent, tmp_path / "results",
                                boundary_ratio=0.02)
    assert again.keys() == metrics.keys()
    for k, v in metrics.items():
        assert again[k] == pytest.approx(v, abs=1e-12, nan_ok=True), k


def test_ranks_parts_are_merged_once_per_image(tmp_path):
    """Two ranks (DistributedSampler padding repeats an image): rank 0 merges, no duplicate."""
    from region_sam3.eval.types import ImageDetections

    def dets(image_id, score):
        rle = mask_utils.encode(np.asfortranarray(np.ones((4, 6), np.uint8)))
        rle["counts"] = rle["counts"].decode()
        return ImageDetections(image_id, 4, 6, np.array([score], np.float32),
                               np.array([3]), np.array([[0, 0, 6, 4]], np.float32), [rle],
                               np.ones(1, np.float32))

    w0 = CocoResultsWriter(tmp_path, rank=0, world_size=2)
    w1 = CocoResultsWriter(tmp_path, rank=1, world_size=2)
    w0.write([dets(1, 0.5), dets(2, 0.25)])
    w1.write([dets(3, 0.75), dets(1, 0.5)])
    w1.write([ImageDetections.empty(4, 4, 6)])
    w1.close()
    assert w1.finish() == []  # only rank 0 writes the file
    (path,) = w0.finish()
    results = json.loads(path.read_text())
    assert sorted(r["image_id"] for r in results) == [1, 2, 3]
    assert results[0]["bbox"] == [0.0, 0.0, 6.0, 4.0]
    assert not (tmp_path / ".parts").exists()
