"""workflow.ablation on report-shaped rows: which columns are settings, and the paired plot."""

from __future__ import annotations

import matplotlib
import pytest

from region_sam3.workflow.ablation import (
    plot_paired,
    plot_paired_grid,
    setting_label,
    short_keys,
    varying_settings,
)

matplotlib.use("Agg")

M = "test/ood/mask/AP"


def _rows() -> list[dict[str, str]]:
    # the column order of scripts/ablation_report.py: overrides, n, then statistics
    base = {"model.region_head.num_iters": "0", "model/baseline": "", "n": "1",
            "trainable_params": "0", f"{M}_mean": "0.1", f"{M}_diff_mean": "nan",
            f"{M}_diff_std": "nan", f"{M}_p_holm": "nan"}
    t2 = {**base, "model.region_head.num_iters": "2", "n": "3", f"{M}_diff_mean": "0.02",
          f"{M}_diff_std": "0.01", f"{M}_p_holm": "0.01"}
    lora = {**base, "model/baseline": "lora", "n": "3", f"{M}_diff_mean": "-0.01",
            f"{M}_diff_std": "0.005", f"{M}_p_holm": "0.4"}
    return [base, t2, lora]


def test_only_override_columns_are_settings():
    rows = _rows()
    assert varying_settings(rows) == ["model.region_head.num_iters", "model/baseline"]
    assert setting_label(rows[2], varying_settings(rows)) == "num_iters=0, baseline=lora"


def test_paired_plot_skips_the_reference_and_stars_holm_significant_rows():
    ax = plot_paired(_rows(), M)
    bars = [p.get_width() for p in ax.patches]
    assert bars == pytest.approx([2.0, -1.0])  # x100; the reference row has no test
    assert [t.get_text() for t in ax.texts] == [" *"]  # only T=2 passes Holm
    with pytest.raises(KeyError, match="ablation_report"):
        plot_paired(_rows(), "test/none/mask/AP")


def test_paired_grid_one_row_per_metric_one_column_per_split():
    rows = _rows()
    extra = {"test/ood/miou/mIoU_topk", "test/test/mask/AP", "test/test/miou/mIoU_topk"}
    for r in rows:
        for m in extra:
            r.update({f"{m}_diff_mean": r[f"{M}_diff_mean"], f"{m}_diff_std": "0.0",
                      f"{m}_p_holm": "0.5"})
    rows[1]["test/test/miou/mIoU_topk_diff_mean"] = "nan"  # T=2 untested there: its own rows
    fig = plot_paired_grid(rows, ["test/test/mask/AP", M, "test/test/miou/mIoU_topk",
                                  "test/ood/miou/mIoU_topk"])
    titles = [[ax.get_title() for ax in fig.axes[i:i + 2]] for i in (0, 2)]
    assert titles == [["test/mask/AP", "ood/mask/AP"], ["test/miou/mIoU_topk", "ood/miou/mIoU_topk"]]
    mask_ood, miou_test, miou_ood = fig.axes[1], fig.axes[2], fig.axes[3]
    assert not any(t.get_visible() for t in mask_ood.get_yticklabels())  # same rows as its left
    assert len(miou_test.patches) == 1 and len(miou_ood.patches) == 2
    assert any(t.get_text() for t in miou_ood.get_yticklabels())  # different rows: labelled


def test_short_keys_stay_unambiguous():
    keys = ["model.optimizer.lr", "model.teacher.lr", "model.region_head.num_iters", "model/baseline"]
    assert short_keys(keys) == {"model.optimizer.lr": "optimizer.lr", "model.teacher.lr": "teacher.lr",
                                "model.region_head.num_iters": "num_iters",
                                "model/baseline": "baseline"}


@pytest.mark.parametrize("metrics", [
    ["val/test/mask/AP", M],  # two stages: no split x metric grid
    ["test/test/mask/AP", "test/ood/miou/mIoU_topk", "AP"],  # an incomplete grid, a bare key
])
def test_paired_grid_falls_back_to_the_metrics_as_given(metrics):
    rows = _rows()
    for r in rows:
        for m in metrics:
            r.setdefault(f"{m}_diff_mean", r[f"{M}_diff_mean"])
            r.setdefault(f"{m}_diff_std", "0.0")
            r.setdefault(f"{m}_p_holm", "0.5")
    fig = plot_paired_grid(rows, metrics)
    shown = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert shown == [m.split("/", 1)[-1] for m in metrics]  # each asked-for metric, once
