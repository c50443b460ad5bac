"""CLIP-queryable regions: region embeddings from the predictor, zero-shot labels through the
teacher's text tower, and agreement of a distilled tiny head with the teacher."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import compose_task
from PIL import Image

from region_sam3.predict import Sam3Predictor, main, to_uint8_chw
from region_sam3.region_query import (
    agreement_with_chance,
    classify,
    parse_names,
    teacher_from_hparams,
)


def test_classify_picks_the_closest_name():
    text = torch.eye(3)
    regions = torch.tensor([[0.1, 0.9, 0.0], [2.0, 0.0, 0.1], [0.0, 0.2, 0.3]])
    out = classify(regions, text, ["cat", "dog", "car"])
    assert out.labels == ["dog", "cat", "car"]
    assert out.similarities.shape == (3, 3)
    with pytest.raises(ValueError, match="4-d"):
        classify(torch.ones(1, 4), text, ["cat", "dog", "car"])


def test_parse_names_and_chance_levels():
    assert parse_names(" cat, red circle ,dog") == ["cat", "red circle", "dog"]
    with pytest.raises(ValueError, match="comma-separated"):
        parse_names("cat,,dog")
    stats = agreement_with_chance([0, 0, 1, 1], [0, 1, 1, 1], num_classes=4)
    assert stats["agreement"] == 0.75 and stats["chance_uniform"] == 0.25
    assert stats["chance_marginal"] == pytest.approx(0.5 * 0.25 + 0.5 * 0.75)


def test_random_teacher_is_refused_with_a_reason():
    with pytest.raises(ValueError, match=r"pretrained=null"):
        teacher_from_hparams({"teacher": {"model_name": "RegionSAM3-tiny-CLIP", "pretrained": None}})
    with pytest.raises(ValueError, match="without a distillation teacher"):
        teacher_from_hparams({"teacher": None})


def test_labels_need_a_lightning_checkpoint(tmp_path):
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(image)
    with pytest.raises(SystemExit, match="--labels needs --lightning-checkpoint"):
        main([str(image), "red circle", "--labels", "cat,dog", "--model", "tiny"])


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, synthetic_data_dir):
    """The tiny base + region head distilled for 4 steps from a random tiny CLIP teacher
    (`experiment=distill_clip debug=smoke`); the teacher object is kept in process because a
    random teacher's weights are not in checkpoints."""
    from region_sam3.tasks import train_task

    out = tmp_path_factory.mktemp("distill")
    cfg = compose_task("train", out, synthetic_data_dir, [
        "experiment=distill_clip", "debug=smoke", "logger=csv", "trainer.max_epochs=1",
        "trainer.limit_train_batches=4", "trainer.limit_val_batches=0", "test=false",
        "callbacks.model_checkpoint.monitor=null", "model.distill.warmup_steps=0",
        "model.criterion.num_sample_points=256"])
    _, objects = train_task(cfg)
    return objects["model"], objects["datamodule"], out


def _val_regions(predictor, datamodule, num_images):
    image_dir, ann_file = datamodule.split_paths("val")
    coco = json.loads(ann_file.read_text())
    names = [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
    for info in coco["images"][:num_images]:
        image = to_uint8_chw(Image.open(image_dir / info["file_name"]).convert("RGB"))
        cats = sorted({a["category_id"] for a in coco["annotations"] if a["image_id"] == info["id"]})
        for cat in cats:
            pred = predictor.predict(image, names[cat - 1], score_threshold=0.05)
            if len(pred):
                yield image, pred, names


@pytest.mark.slow
def test_predictor_returns_aligned_region_embeddings(distilled):
    module, datamodule, _ = distilled
    predictor = Sam3Predictor(module.net, device="cpu", teacher=module.teacher)
    image, pred, _ = next(_val_regions(predictor, datamodule, 4))
    assert pred.region_embeds.shape == (len(pred), module.teacher.embed_dim)
    torch.testing.assert_close(pred.region_embeds.norm(dim=-1), torch.ones(len(pred)))
    # M^T of the loop is the returned mask: embeddings and masks share the row order
    pred_iter = predictor.predict(image, pred.prompt, 0.05, return_iterations=True)
    num_iters = module.net.segmentation_head.region_head.num_iters
    assert sorted(pred_iter.iter_mask_logits) == list(range(num_iters + 1))
    torch.testing.assert_close(pred_iter.iteration_probs(num_iters), pred.mask_probs)
    torch.testing.assert_close(pred_iter.region_embeds, pred.region_embeds)
