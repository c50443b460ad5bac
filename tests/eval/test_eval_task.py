"""eval.py: model/data from the checkpoint, command-line overrides on top, clear errors."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from helpers import compose_task

from region_sam3.tasks import eval_task, train_task
from region_sam3.workflow.eval_config import addable_split_overrides

pytestmark = pytest.mark.slow  # trains a tiny model once (~40 s on 2 cores)

RES = 112  # not the eval default (224): the checkpoint's own resolution must be used


@pytest.fixture(scope="module")
def ckpt_112(tmp_path_factory, synthetic_data_dir):
    out = tmp_path_factory.mktemp("run112")
    cfg = compose_task("train", out, synthetic_data_dir, [
        "model/sam3=tiny", "logger=csv", f"model.sam3.arch.image_size={RES}",
        f"model.sam3.arch.vit_pretrain_image_size={RES}", "trainer.max_epochs=1",
        "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "test=false",
        "model.evaluation.boundary=false"])
    train_task(cfg)
    return out / "checkpoints" / "last.ckpt"


def compose_eval(tmp_path, data_dir, overrides):
    """Compose like `python eval.py <overrides>` (compose_task records the overrides)."""
    return compose_task("eval", tmp_path, data_dir, overrides)


def test_eval_uses_checkpoint_resolution_and_applies_evaluation_overrides(
        ckpt_112, synthetic_data_dir, tmp_path, caplog):
    assert torch.load(ckpt_112, weights_only=False)["hyper_parameters"]["sam3"]["arch"][
        "image_size"] == RES
    cfg = compose_eval(tmp_path, synthetic_data_dir, [
        f"ckpt_path={ckpt_112}", "data.test_split=crowded", "+trainer.limit_test_batches=1",
        "model.evaluation.boundary=false", "model.evaluation.cgf1=true",
        "model.evaluation.max_dets_per_image=7", "data.num_workers=0"])
    assert cfg.data.resolution == 224  # what the eval config alone would have used
    with caplog.at_level(logging.INFO, logger="region_sam3.tasks"):
        metrics, objects = eval_task(cfg)
    summaries = [r.getMessage() for r in caplog.records if "Test summary" in r.getMessage()]
    assert len(summaries) == 1  # one compact table at the end, AP and cgF1 under their labels
    assert "| crowded |" in summaries[0] and "cgF1" in summaries[0]
    for key in ("test/mask/AP", "test/mask/AP50", "test/cgf1/cgF1"):
        value = metrics[key]  # a weak tiny model may have NaN: it must read n/a, not 0
        assert ("n/a" if math.isnan(value) else f"| {value:.3f} |") in summaries[0], key
    assert objects["datamodule"].hparams.resolution == RES
    assert objects["model"].postprocessor.max_dets == 7
    assert not any("boundary" in k for k in metrics), sorted(metrics)
    assert "test/cgf1/cgF1" in metrics and "test/mask/AP" in metrics
    written = json.loads((ckpt_112.parent.parent / "eval_crowded_metrics.json").read_text())
    assert written["resolution"] == RES


@pytest.mark.parametrize(("override", "match"), [
    ("model.sam3.arch.d_model=32", "model.sam3.arch.d_model: cannot apply"),
    ("+model.evaluation.bogus=1", r"model.evaluation: unknown key\(s\) \['bogus'\]"),
    ("data.resolution=224", "data.resolution=224: the checkpoint's model takes 112"),
    ("+data.no_such_key=1", "data.no_such_key: the checkpoint's data config has no such key"),
    ("+data.synthetic.splits.mine.num_images=3",
     "data.synthetic.splits.mine.num_images: the checkpoint's data config has no such key"),
    ("model=default", "model: config-group overrides of the model cannot apply"),
])
def test_overrides_that_cannot_apply_are_errors_naming_the_key(
        ckpt_112, synthetic_data_dir, tmp_path, override, match):
    cfg = compose_eval(tmp_path, synthetic_data_dir, [f"ckpt_path={ckpt_112}", override])
    with pytest.raises(ValueError, match=match):
        eval_task(cfg)


#: categories of the user's dataset: ids and names the synthetic checkpoint never saw
MY_CATEGORIES = {7: "teapot", 42: "striped kite"}


def write_my_coco(root):
    """Two non-square images (60x80, 50x70) with polygon instances of MY_CATEGORIES."""
    import numpy as np
    from PIL import Image

    image_dir = root / "images"
    image_dir.mkdir(parents=True)
    images, annotations = [], []
    rng = np.random.default_rng(0)
    for image_id, (h, w) in ((3, (60, 80)), (9, (50, 70))):
        pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        pixels[10:30, 10:40] = (200, 30, 30)
        Image.fromarray(pixels).save(image_dir / f"im{image_id}.png")
        images.append({"id": image_id, "file_name": f"im{image_id}.png", "height": h, "width": w})
        for k, (cat, (x, y, s)) in enumerate(zip(MY_CATEGORIES, ((10, 10, 20), (40, 25, 15)))):
            annotations.append({
                "id": 100 * image_id + k, "image_id": image_id, "category_id": cat, "iscrowd": 0,
                "segmentation": [[x, y, x + s, y, x + s, y + s, x, y + s]],
                "area": float(s * s), "bbox": [x, y, s, s]})
    ann_file = root / "my_instances.json"
    ann_file.write_text(json.dumps({
        "images": images, "annotations": annotations,
        "categories": [{"id": i, "name": n} for i, n in MY_CATEGORIES.items()]}))
    return image_dir, ann_file


@pytest.mark.parametrize("group", [[], ["data=coco"]], ids=["checkpoint_data", "data=coco"])
def test_checkpoint_evaluates_on_a_new_coco_split_with_its_categories(
        ckpt_112, synthetic_data_dir, tmp_path, group):
    image_dir, ann_file = write_my_coco(tmp_path / "mydata")
    out = tmp_path / "eval_mine_metrics.json"
    # as `python eval.py ...` passes them (eval.py makes the split keys addable for Hydra)
    args = addable_split_overrides([
        f"ckpt_path={ckpt_112}", *group, f"data.splits.mine.image_dir={image_dir}",
        f"data.splits.mine.ann_file={ann_file}", "data.test_split=mine", f"metrics_file={out}",
        "data.num_workers=0", "model.evaluation.boundary=false"])
    assert args[len(group) + 1].startswith("++data.splits.mine.")
    metrics, objects = eval_task(compose_eval(tmp_path, synthetic_data_dir, args))
    assert objects["datamodule"].category_names == MY_CATEGORIES
    assert objects["datamodule"].hparams.resolution == RES  # model still the checkpoint's
    written = json.loads(out.read_text())
    assert written["split"] == "mine" and "test/mask/AP" in written["metrics"]
    results = json.loads((tmp_path / "eval_results" / "mine" / "coco_instances_results.json")
                         .read_text())
    assert results, "no detections written"
    assert {r["category_id"] for r in results} <= set(MY_CATEGORIES)
    assert {r["image_id"] for r in results} <= {3, 9}


@pytest.mark.parametrize("predictions", ["checkpoint", "gt_correlated"])
def test_eval_results_file_rescored_by_pycocotools_gives_the_logged_metrics(
        ckpt_112, synthetic_data_dir, tmp_path, monkeypatch, predictions):
    """End to end through `eval_task`: the `coco_instances_results.json` it writes, re-scored
    with plain pycocotools (segm, and the official Boundary AP recipe) against the split's
    *original* annotation file, gives the logged AP / AP50 / AR100 exactly. The dataset (drawn
    with PIL by the results-file test) has non-square images, crowd regions as uncompressed RLE,
    overlapping and sub-pixel objects, float polygon areas and non-contiguous ids.

    The 1-step tiny checkpoint recalls nothing here (every number 0), so a second run replaces
    only its final outputs by ones correlated with the batch's GT (the results-file test's
    `fake_outputs`); data loading, post-processing, pooling, the results file, the evaluators
    and the logged metrics are the task's own."""
    import region_sam3.lit.evaluation as evaluation
    from tests.eval.test_results_file import (
        OfficialBoundaryCOCOeval,
        draw_dataset,
        fake_outputs,
        rescore,
    )

    if predictions == "gt_correlated":
        seen, g = {}, torch.Generator().manual_seed(0)
        to_sam3 = evaluation.to_sam3_batch

        def remember(batch, device):
            seen["batch"] = batch
            return to_sam3(batch, device)

        monkeypatch.setattr(evaluation, "to_sam3_batch", remember)
        monkeypatch.setattr(evaluation, "final_output", lambda _: fake_outputs(seen["batch"], g))

    root = tmp_path / "drawn"
    root.mkdir()
    ann_file = draw_dataset(root)
    args = addable_split_overrides([
        f"ckpt_path={ckpt_112}", f"data.splits.drawn.image_dir={root}",
        f"data.splits.drawn.ann_file={ann_file}", "data.test_split=drawn",
        f"metrics_file={tmp_path / 'eval_drawn_metrics.json'}", "data.num_workers=0",
        "model.evaluation.boundary=true", "model.evaluation.cgf1=false"])
    metrics, _ = eval_task(compose_eval(tmp_path, synthetic_data_dir, args))
    path = tmp_path / "eval_results" / "drawn" / "coco_instances_results.json"
    results = json.loads(path.read_text())
    data = json.loads(ann_file.read_text())
    assert len(results) == metrics["test/mask/num_dets"] > 0
    assert metrics["test/mask/num_gt"] == sum(1 for a in data["annotations"] if not a["iscrowd"])
    def no_box():  # fresh dicts per call: loadRes writes ids, areas and boxes into them
        return [{k: v for k, v in r.items() if k != "bbox"} for r in results]

    ref = rescore(ann_file, no_box())
    ref_boundary = rescore(ann_file, no_box(), eval_cls=OfficialBoundaryCOCOeval)
    if predictions == "gt_correlated":  # non-degenerate: not just 0 == 0
        assert 0.05 < ref["AP"] < 0.95 and ref_boundary["AP50"] > 0.02, (ref, ref_boundary)
    for name in ("AP", "AP50", "AR100"):
        assert metrics[f"test/mask/{name}"] == pytest.approx(ref[name], abs=1e-6), (name, ref)
        assert metrics[f"test/boundary/{name}"] == pytest.approx(ref_boundary[name], abs=1e-6), (
            name, ref_boundary)
