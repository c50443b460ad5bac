"""report.md rendering from a metrics dict: one row per split and iteration, NaN groups."""

from __future__ import annotations

import math

from PIL import Image

from region_sam3.reporting import main_table, split_metrics, write_run_report
from region_sam3.reporting.markdown import MAIN_COLUMNS
from region_sam3.reporting.run_report import report_path

NAN = math.nan
SPLITS = ["val", "small", "crowded"]


def _metrics() -> dict[str, float]:
    m: dict[str, float] = {}
    for split, ap, n in (("val", 0.5, 4.0), ("small", 0.2, 4.0)):
        for prefix, bonus in ((f"test/{split}/", 0.1), (f"test/{split}/iter0/", 0.0),
                              (f"test/{split}/iter1/", 0.1)):
            m[prefix + "mask/AP"] = ap + bonus
            m[prefix + "mask/AP50"] = ap + bonus + 0.2
            m[prefix + "mask/AP_L"] = NAN if split == "small" else 0.7   # no large GT
            m[prefix + "miou/mIoU"] = 0.6
        m[f"test/{split}/mask/num_images"] = n
    # an empty split: every metric NaN, 0 images
    m["test/crowded/mask/AP"] = NAN
    m["test/crowded/mask/num_images"] = 0.0
    m["train/loss"] = 1.0
    return m


def test_rows_per_split_and_iteration():
    table = main_table(_metrics(), SPLITS)
    lines = table.strip().splitlines()
    rows = [line for line in lines[2:]]
    # val, small: final + t=0 + t=1; crowded: final only
    assert [r.split("|")[1:3] for r in rows] == [
        [" val ", " final "], [" val ", " t=0 "], [" val ", " t=1 "],
        [" small ", " final "], [" small ", " t=0 "], [" small ", " t=1 "],
        [" crowded ", " final "]]
    val_t0 = rows[1].split("|")
    assert val_t0[4].strip() == "0.500" and val_t0[3].strip() == "4"   # AP at t=0, images
    assert rows[0].split("|")[4].strip() == "0.600"                     # final AP


def test_nan_groups_say_why():
    table = main_table(_metrics(), SPLITS)
    crowded = [r for r in table.splitlines() if r.startswith("| crowded")][0]
    assert crowded.count("n/a (0 images)") == len(MAIN_COLUMNS) and "| 0 |" in crowded
    small = [r for r in table.splitlines() if r.startswith("| small | final")][0]
    # AP_L is NaN although the split had images: not "0 images"
    assert "n/a (4 images, none in this group)" in small
    assert "nan" not in table.lower().replace("n/a", "")


def test_single_split_keys_have_no_split_name():
    per = split_metrics({"test/mask/AP": 0.3, "test/iter0/mask/AP": 0.2}, ["crowded"])
    assert per == {"crowded": {"final": {"mask/AP": 0.3}, 0: {"mask/AP": 0.2}}}


def test_write_run_report_links_pngs_that_exist(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "metrics.png")   # the training curve of a run
    path = write_run_report(tmp_path / "metrics.json", _metrics(), SPLITS)
    assert path == tmp_path / "report.md"
    text = path.read_text()
    assert "](report_curves.png)" in text and "](metrics.png)" in text
    assert (tmp_path / "report_curves.png").is_file()
    assert "| crowded | final | 0 |" in text
    assert "`train/loss`" in text  # every metric is listed under "All metrics"


def test_report_name_follows_the_metrics_file():
    assert report_path("/r/eval_crowded_metrics.json").name == "eval_crowded_report.md"
    assert report_path("/r/metrics.json").name == "report.md"
    assert report_path("/r/scores.json").name == "scores_report.md"


def test_no_iterations_no_curves(tmp_path):
    path = write_run_report(tmp_path / "m.json", {"test/mask/AP": 0.1}, ["val"])
    assert "curves" not in path.read_text() and not list(tmp_path.glob("*.png"))


def test_best_iou_and_rle_forms():
    import torch
    from pycocotools import mask as mask_utils

    from region_sam3.data.coco_index import segmentation_to_rle
    from region_sam3.workflow.refinement import best_iou

    gt = torch.zeros(2, 4, 4, dtype=torch.bool)
    gt[0, :2, :2] = True
    gt[1, 2:, 2:] = True
    pred = torch.zeros(1, 4, 4, dtype=torch.bool)
    pred[0, :2, :] = True   # covers gt 0 (4 px) within 8 px
    assert best_iou(gt, pred).tolist() == [0.5, 0.0]
    assert best_iou(gt, pred[:0]).tolist() == [0.0, 0.0]
    compressed = mask_utils.encode(gt[0].numpy().astype("uint8").copy(order="F"))
    as_json = {"size": compressed["size"], "counts": compressed["counts"].decode()}
    polygon = [[0.0, 0.0, 2.0, 0.0, 2.0, 2.0, 0.0, 2.0]]
    for seg in (as_json, polygon):
        decoded = mask_utils.decode(segmentation_to_rle(seg, 4, 4))
        assert decoded[:2, :2].all() and decoded.sum() >= 4
