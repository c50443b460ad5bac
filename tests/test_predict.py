"""`region_sam3.predict`: predictor API, overlay, notebook validity (tiny random model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO_ROOT, build_tiny_sam3
from PIL import Image

from region_sam3.predict import Prediction, Sam3Predictor, model_resolution, to_uint8_chw
from region_sam3.viz import overlay_predictions

H, W = 150, 260  # non-square, neither side a multiple of the 224 model resolution
PROMPT = "red circle"


@pytest.fixture(scope="module")
def predictor() -> Sam3Predictor:
    return Sam3Predictor(build_tiny_sam3(seed=0), device="cpu")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    img[40:100, 60:140] = (220, 30, 30)  # some structure, not only noise
    return img


@pytest.fixture(scope="module")
def prediction(predictor: Sam3Predictor, image: np.ndarray) -> Prediction:
    return predictor.predict(image, PROMPT, score_threshold=0.0)


def test_resolution_read_from_vit(predictor):
    assert predictor.resolution == 224 == model_resolution(predictor.model)
    assert not predictor.model.training


def test_outputs_at_original_size(prediction):
    n = len(prediction)
    assert n == 24  # every query of the tiny model survives threshold 0
    assert prediction.masks.shape == (n, H, W) and prediction.masks.dtype == torch.bool
    assert prediction.mask_probs.shape == (n, H, W)
    assert prediction.mask_probs.dtype == torch.float32
    assert prediction.boxes.shape == (n, 4) and prediction.scores.shape == (n,)
    assert prediction.image_size == (H, W)
    assert torch.equal(prediction.masks, prediction.mask_probs > 0.5)
    assert prediction.mask_probs.min() >= 0 and prediction.mask_probs.max() <= 1
    assert prediction.prompt == PROMPT


def test_boxes_inside_image_and_scores_sorted(prediction):
    x0, y0, x1, y1 = prediction.boxes.unbind(-1)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= W).all() and (y1 <= H).all()
    assert (x1 >= x0).all() and (y1 >= y0).all()
    scores = prediction.scores
    assert ((scores > 0) & (scores <= 1)).all()
    assert torch.equal(scores, scores.sort(descending=True).values)


def test_threshold_filters(predictor, image, prediction):
    cut = float(prediction.scores[5])
    kept = predictor.predict(image, PROMPT, score_threshold=cut)
    assert len(kept) == int((prediction.scores > cut).sum()) > 0
    torch.testing.assert_close(kept.scores, prediction.scores[: len(kept)])
    none = predictor.predict(image, PROMPT, score_threshold=1.0)
    assert len(none) == 0
    assert none.masks.shape == (0, H, W) and none.boxes.shape == (0, 4)


def test_pil_numpy_tensor_inputs_agree(predictor, image, prediction):
    chw = torch.from_numpy(image).permute(2, 0, 1)
    # Every input is first converted to the same [3,H,W] uint8 tensor...
    assert torch.equal(to_uint8_chw(chw.float() / 255), chw)
    assert torch.equal(to_uint8_chw(Image.fromarray(image)), chw)
    # ...and the end-to-end results agree bit for bit.
    for name, img in {"pil": Image.fromarray(image), "tensor": chw}.items():
        other = predictor.predict(img, PROMPT, score_threshold=0.0)
        for field in ("masks", "mask_probs", "boxes", "scores"):
            assert torch.equal(getattr(other, field), getattr(prediction, field)), (name, field)


def test_prompts_share_image_features(predictor, image, prediction):
    preds = predictor.predict_prompts(image, ["blue square", PROMPT], score_threshold=0.0)
    assert torch.equal(preds[1].scores, prediction.scores)
    assert not torch.equal(preds[0].scores, prediction.scores)  # text actually conditions


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match=r"\[H,W,3\]"):
        to_uint8_chw(np.zeros((H, W), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        to_uint8_chw(np.zeros((H, W, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[3,H,W\]"):
        to_uint8_chw(torch.zeros(H, W, 3, dtype=torch.uint8))
    assert to_uint8_chw(Image.new("L", (W, H), 7)).shape == (3, H, W)  # grey -> RGB


def test_overlay(image, prediction):
    overlay = overlay_predictions(image, prediction, labels=PROMPT)
    assert overlay.size == (W, H) and overlay.mode == "RGB"
    pixels = np.asarray(overlay)
    assert not np.array_equal(pixels, image)
    # Pixels no mask covers and no box/label touches keep their value.
    empty = Prediction(prediction.masks[:0], prediction.mask_probs[:0], prediction.boxes[:0],
                       prediction.scores[:0])
    assert np.array_equal(np.asarray(overlay_predictions(image, empty)), image)
    with pytest.raises(ValueError, match="image"):
        overlay_predictions(image[:, :100], prediction)


def test_missing_weights_fail_clearly(tmp_path, image):
    from region_sam3.models.checkpoint import CheckpointError

    missing = tmp_path / "sam3.pt"
    with pytest.raises(CheckpointError, match="sam3.pt"):
        Sam3Predictor.from_config("tiny", checkpoint=missing, device="cpu")


def test_unknown_model_config():
    with pytest.raises(ValueError, match="tiny_base"):
        Sam3Predictor.from_config("huge", device="cpu")


def test_lightning_checkpoint_roundtrip(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    overrides = ["sam3=tiny", "region_head=default", "region_head.d_model=64",
                 "region_head.num_heads=4", "region_head.dim_feedforward=128"]
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf" / "model"), version_base="1.3"):
        cfg = compose("default", overrides=overrides)
    torch.manual_seed(1)
    module = instantiate(cfg)
    path = tmp_path / "last.ckpt"
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path)

    loaded = Sam3Predictor.from_lightning_checkpoint(path, device="cpu")
    assert type(loaded.model.segmentation_head).__name__ == "RegionAwareSegmentationHead"
    assert not loaded.model.training and loaded.resolution == 224
    # Built under another RNG state: equal tensors mean the weights came from the file.
    expected = module.net.state_dict()
    got = loaded.model.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        Sam3Predictor.from_lightning_checkpoint(tmp_path / "missing.ckpt")


def test_notebook_is_valid_json():
    path = REPO_ROOT / "notebooks" / "quickstart.ipynb"
    nb = json.loads(Path(path).read_text())
    assert nb["nbformat"] == 4
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "Sam3Predictor.from_config" in code and "render_scene" in code
    compile(code, "quickstart.ipynb", "exec")  # every code cell is valid Python


def test_predict_batch_equals_predict_prompts(predictor, image, tmp_path):
    """Batched image encoder, mixed sizes, paths and arrays: same detections as one by one."""
    other = np.ascontiguousarray(image[:120, :200][::-1])
    path = tmp_path / "other.png"
    Image.fromarray(other).save(path)
    prompts = [PROMPT, "blue square"]
    # batch_size 2 over 3 images: one full batch and one partial batch.
    batched = predictor.predict_batch([image, path, image], prompts, batch_size=2,
                                      score_threshold=0.2)
    assert [len(per_image) for per_image in batched] == [2, 2, 2]
    for got, img in zip(batched, [image, other, image]):
        want = predictor.predict_prompts(img, prompts, score_threshold=0.2)
        for g, w in zip(got, want):
            assert g.prompt == w.prompt and g.image_size == w.image_size == img.shape[:2]
            assert len(g) == len(w)
            torch.testing.assert_close(g.scores, w.scores, atol=1e-5, rtol=0)
            torch.testing.assert_close(g.mask_probs, w.mask_probs, atol=1e-4, rtol=0)
    assert sum(len(p) for per_image in batched for p in per_image) > 0
    with pytest.raises(ValueError, match="batch_size"):
        predictor.predict_batch([image], prompts, batch_size=0)


def test_sixteen_bit_png_is_scaled_like_the_training_reader(predictor, tmp_path):
    """PIL's convert("RGB") turns a 16-bit PNG white; the predictor decodes it like training."""
    from region_sam3.data.coco import read_image
    from region_sam3.data.coco_index import ImageRecord

    rng = np.random.default_rng(3)
    grey16 = rng.integers(0, 65536, (H, W), dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(grey16).save(path)
    with Image.open(path) as im:
        assert im.mode == "I;16"
        from_pil = to_uint8_chw(im)
    expected = torch.from_numpy((grey16 >> 8).astype(np.uint8))[None].expand(3, H, W)
    assert torch.equal(from_pil, expected)  # today: all 255
    assert torch.equal(to_uint8_chw(path), expected)
    record = ImageRecord(image_id=1, file_name=path.name, path=path, height=H, width=W)
    assert torch.equal(read_image(record), expected)  # training: uint16 before, now uint8
    eight_bit = predictor.predict(expected.permute(1, 2, 0).numpy(), PROMPT, 0.0)
    sixteen_bit = predictor.predict(Image.open(path), PROMPT, 0.0)
    assert torch.equal(sixteen_bit.scores, eight_bit.scores)
