"""`region_sam3.predict_io`: COCO results records of a prediction (with zero-shot labels)."""

from __future__ import annotations

import json

import pycocotools.mask as mask_utils
import pytest
import torch

from region_sam3.predict import Prediction
from region_sam3.predict_io import ResultsWriter, coco_results, read_prompts
from region_sam3.region_query import classify


def _prediction() -> Prediction:
    masks = torch.zeros(2, 20, 30, dtype=torch.bool)
    masks[0, 2:8, 3:13] = True
    masks[1, 10:20, 0:5] = True
    return Prediction(masks=masks, mask_probs=masks.float(),
                      boxes=torch.tensor([[3.0, 2.0, 13.0, 8.0], [0.0, 10.0, 5.0, 20.0]]),
                      scores=torch.tensor([0.9, 0.4]), prompt="a dog",
                      region_embeds=torch.eye(2, 4))


def test_records_are_coco_results_with_prompt_and_labels(tmp_path):
    pred = _prediction()
    labels = classify(pred.region_embeds, torch.eye(2, 4).flip(0), ["cat", "dog"])
    records = coco_results(pred, image_id=7, category_id=2, file_name="x.png", labels=labels)
    assert [r["label"] for r in records] == ["dog", "cat"]
    assert [r["label_score"] for r in records] == [1.0, 1.0]
    assert records[0]["bbox"] == [3.0, 2.0, 10.0, 6.0]  # xywh
    for record, mask in zip(records, pred.masks):
        assert (record["image_id"], record["category_id"], record["prompt"]) == (7, 2, "a dog")
        assert torch.equal(torch.from_numpy(mask_utils.decode(record["segmentation"])).bool(),
                           mask)
    writer = ResultsWriter(tmp_path / "p.json")
    writer.write(records)
    writer.write(coco_results(pred, image_id=8, category_id=1, file_name="y.png"))
    writer.close()
    loaded = json.loads((tmp_path / "p.json").read_text())
    assert len(loaded) == writer.count == 4 and "label" not in loaded[2]
    assert not list(tmp_path.glob(".*.tmp"))


def test_prompts_dedup_and_errors(tmp_path):
    (tmp_path / "p.txt").write_text("a cat\n# skip\n\na dog\n")
    assert read_prompts(["a dog", " a bird "], tmp_path / "p.txt") == ["a dog", "a bird", "a cat"]
    with pytest.raises(ValueError, match="no prompt"):
        read_prompts([], None)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_prompts([], tmp_path / "nope.txt")
