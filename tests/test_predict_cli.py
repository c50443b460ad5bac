"""`region-sam3-predict` (region_sam3.predict_cli): folder / glob / list inputs, several
prompts, batches, overlays and one COCO-results JSON; start-up without upstream noise."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO_ROOT
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from region_sam3.predict_cli import main

H, W = 150, 260
PROMPTS = ["red circle", "blue square"]
TINY = ["--model", "tiny_base", "--device", "cpu", "--threshold", "0.05", "--quiet"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three images of different sizes (one 16-bit), plus a non-image file to skip."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(H, W), (100, 120), (H, W)]):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        img[20:60, 30:90] = (220, 30, 30)
        Image.fromarray(img).save(root / f"img{i}.png")
    Image.fromarray(rng.integers(0, 65536, (64, 80), dtype=np.uint16)).save(root / "deep.png")
    (root / "notes.txt").write_text("not an image")
    return root


def _records(out_dir):
    return json.loads((out_dir / "predictions.json").read_text())


def test_folder_several_prompts_writes_overlays_and_coco_results(folder, tmp_path, capsys):
    out = tmp_path / "out"
    main([str(folder), *PROMPTS, "--out-dir", str(out), "--batch-size", "2", *TINY])
    files = sorted(p.name for p in folder.glob("*.png"))
    assert sorted(p.name for p in out.glob("*_pred.png")) == [
        f.replace(".png", "_pred.png") for f in files]
    records = _records(out)
    assert records, "threshold 0.05 keeps detections of the shipped tiny base"
    assert {r["prompt"] for r in records} <= set(PROMPTS)
    for r in records:
        assert r["category_id"] == PROMPTS.index(r["prompt"]) + 1
        assert files[r["image_id"] - 1] in r["file_name"]
        assert r["score"] > 0.05 and len(r["bbox"]) == 4
    # A valid COCO results file: pycocotools loads it against a ground truth of these images.
    gt = COCO()
    gt.dataset = {
        "images": [{"id": i + 1, **dict(zip(("height", "width"),
                                              Image.open(folder / f).size[::-1]))}
                   for i, f in enumerate(files)],
        "categories": [{"id": i + 1, "name": p} for i, p in enumerate(PROMPTS)],
        "annotations": []}
    gt.createIndex()
    dt = gt.loadRes(str(out / "predictions.json"))
    assert len(dt.anns) == len(records)
    for r in records[:5]:  # RLE at the image's own size
        image = gt.imgs[r["image_id"]]
        assert r["segmentation"]["size"] == [image["height"], image["width"]]
    assert "in 4 image(s)" in capsys.readouterr().err


def test_glob_list_and_prompts_file_agree_with_folder(folder, tmp_path):
    (tmp_path / "prompts.txt").write_text("# prompts\nred circle\n\nblue square\n")
    (tmp_path / "list.txt").write_text("".join(f"{p}\n" for p in sorted(folder.glob("*.png"))))
    runs = {
        "folder": [str(folder), *PROMPTS],
        "glob": [str(folder / "img*.png"), "--prompts-file", str(tmp_path / "prompts.txt")],
        "list": [str(tmp_path / "list.txt"), *PROMPTS, "--batch-size", "3"],
    }
    results = {}
    for name, args in runs.items():
        main([*args, "--out-dir", str(tmp_path / name), "--no-overlays", *TINY])
        results[name] = [(r["file_name"], r["prompt"], r["score"]) for r in _records(
            tmp_path / name)]
        assert not list((tmp_path / name).glob("*.png"))
    # Other batch sizes: the same detections up to the batched encoder's float rounding.
    assert [r[:2] for r in results["list"]] == [r[:2] for r in results["folder"]]
    np.testing.assert_allclose([r[2] for r in results["list"]],
                               [r[2] for r in results["folder"]], atol=1e-4)
    assert results["glob"] == [r for r in results["folder"] if "deep" not in r[0]]


def test_bad_inputs_name_what_is_wrong(folder, tmp_path):
    with pytest.raises(SystemExit, match="nope"):
        main([str(tmp_path / "nope.png"), "a dog", *TINY])
    with pytest.raises(SystemExit, match="no prompt"):
        main([str(folder), *TINY])
    with pytest.raises(SystemExit, match="no files match"):
        main([str(tmp_path / "*.jpg"), "a dog", *TINY])
    (tmp_path / "bad.txt").write_text("missing.png\n")
    with pytest.raises(SystemExit, match=r"bad.txt:1.*missing.png"):
        main([str(tmp_path / "bad.txt"), "a dog", *TINY])
    with pytest.raises(SystemExit, match="batch-size"):
        main([str(folder), "a dog", "--batch-size", "0", *TINY])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(SystemExit, match="broken.png"):
        main([str(broken), "a dog", "--out-dir", str(tmp_path / "o"), *TINY])
    with pytest.raises(SystemExit, match="sam3.pt"):
        main([str(folder), "a dog", "--model", "tiny", "--checkpoint", str(tmp_path / "sam3.pt")])
    with pytest.raises(SystemExit, match="missing.ckpt"):
        main([str(folder), "a dog", "--lightning-checkpoint", str(tmp_path / "missing.ckpt")])


def test_sixteen_bit_png_predicts_like_its_8_bit_decode(tmp_path):
    """Today's CLI read 16-bit PNGs through PIL convert("RGB"): a white image."""
    rng = np.random.default_rng(1)
    grey16 = rng.integers(0, 65536, (H, W), dtype=np.uint16)
    grey16[30:90, 40:120] = 60000
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(grey16).save(tmp_path / "a" / "x.png")
    Image.fromarray(np.repeat((grey16 >> 8).astype(np.uint8)[..., None], 3, 2)).save(
        tmp_path / "b" / "x.png")
    for d in "ab":
        main([str(tmp_path / d / "x.png"), "a dog", "--out-dir", str(tmp_path / f"o{d}"),
              *TINY[:-3], "--threshold", "0", "--quiet"])
    strip = [{k: v for k, v in r.items() if k != "file_name"} for r in _records(tmp_path / "oa")]
    assert strip == [{k: v for k, v in r.items() if k != "file_name"}
                     for r in _records(tmp_path / "ob")]
    overlay = np.asarray(Image.open(tmp_path / "oa" / "x_pred.png"))
    assert overlay.mean() < 250  # not a white image


@pytest.mark.slow
def test_start_up_prints_no_upstream_warnings(tmp_path):
    """A real process: --help imports nothing heavy; a run prints no torch/sam3 warnings."""
    env_cmd = [sys.executable, "-m", "region_sam3.predict_cli"]
    help_run = subprocess.run([*env_cmd, "--help"], capture_output=True, text=True,
                              cwd=REPO_ROOT, timeout=60, check=True)
    assert "--batch-size" in help_run.stdout
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp_path / "x.png")
    run = subprocess.run([*env_cmd, str(tmp_path / "x.png"), "a dog", "--out-dir",
                          str(tmp_path / "o"), *TINY], capture_output=True, text=True,
                         cwd=REPO_ROOT, timeout=300, check=True)
    assert "Warning" not in run.stderr, run.stderr
    assert "detection(s)" in run.stderr


EXAMPLES = {"synthetic_test_006_red_circle.png": (6, "red circle"),
            "synthetic_test_029_purple_circle.png": (29, "purple circle")}


def test_readme_quickstart_finds_the_prompted_objects_on_the_shipped_examples(tmp_path):
    """The README's first predict command, as written (plus an output folder): on each shipped
    example, with the README's threshold, the shipped base finds its category's object."""
    import shlex

    import torch

    from region_sam3.data.synthetic import SyntheticConfig, render_scene

    readme = (REPO_ROOT / "README.md").read_text().splitlines()
    command = next(line for line in readme
                   if line.startswith("region-sam3-predict region_sam3/assets/examples"))
    args = shlex.split(command)[1:]
    args[0] = str(REPO_ROOT / args[0])
    main([*args, "--out-dir", str(tmp_path), "--device", "cpu", "--quiet"])
    records = _records(tmp_path)
    cfg = SyntheticConfig()
    names = [c["name"] for c in cfg.categories()]
    for file_name, (index, prompt) in EXAMPLES.items():
        scene = render_scene(cfg, "test", index)
        # The shipped pixels are the generator's (the example can be re-made and re-scored).
        shipped = np.asarray(Image.open(REPO_ROOT / "region_sam3/assets/examples" / file_name))
        assert np.array_equal(shipped, scene.image), file_name
        gt = torch.from_numpy(scene.masks[[names[c - 1] == prompt for c in scene.category_ids]])
        found = [r for r in records if r["file_name"].endswith(file_name) and r["prompt"] == prompt]
        assert found, f"no {prompt!r} detection on {file_name}"
        best = max(found, key=lambda r: r["score"])
        det = torch.from_numpy(mask_utils.decode(best["segmentation"])).bool()
        inter = (det & gt).flatten(1).sum(1)
        union = (det | gt).flatten(1).sum(1)
        assert float((inter / union).max()) >= 0.5, (file_name, prompt)
    assert (tmp_path / "synthetic_test_006_red_circle_pred.png").is_file()
