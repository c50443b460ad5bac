"""workflow.ablation on report-shaped rows: which columns are settings, and the paired plot."""

from __future__ import annotations

import matplotlib
import pytest

from region_sam3.workflow.ablation import plot_paired, setting_label, varying_settings

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
