"""The compact console summary: right labels and numbers, n/a for no data, M^0 vs M^T rows."""

from __future__ import annotations

import math

from region_sam3.reporting.summary import SUMMARY_COLUMNS, summary_table, summary_tables

VALUES = {"mask/AP": 0.4123, "mask/AP50": 0.6011, "mask/AP75": 0.4402, "mask/AP_S": 0.1234,
          "mask/AP_M": 0.3456, "mask/AP_L": 0.5678, "boundary/AP": 0.2222,
          "cgf1/cgF1": 0.3131, "cgf1/IL_MCC": 0.7777, "miou/mIoU_topk": 0.6543}


def _cells(table: str, label: str) -> dict[str, str]:
    """{column title: cell} of the row whose second cell is `label`."""
    lines = [line.strip().strip("|").split("|") for line in table.strip().splitlines()]
    header = [c.strip() for c in lines[0]]
    for row in lines[2:]:
        row = [c.strip() for c in row]
        if row[1] == label:
            return dict(zip(header, row))
    raise AssertionError(f"no row {label!r} in\n{table}")


def test_single_split_values_under_their_labels_and_counts():
    metrics = {f"test/{k}": v for k, v in VALUES.items()}
    metrics.update({"test/mask/num_images": 12.0, "test/mask/num_gt": 57.0,
                    "test/mask/AR100": 0.9, "val/mask/AP": 0.01})
    table = summary_table(metrics, "test")
    row = _cells(table, "final")
    assert row["split"] == "test"
    for title, key in SUMMARY_COLUMNS:
        assert row[title] == f"{VALUES[key]:.3f}", (title, table)
    assert row["images"] == "12" and row["GT"] == "57"
    assert "AR100" not in table and "M^0" not in table  # no iter keys: no before/after rows


def test_nan_missing_and_coco_minus_one_read_na_never_zero():
    metrics = {"test/mask/AP": 0.5, "test/mask/AP_S": math.nan, "test/mask/AP_L": -1.0,
               "test/mask/num_images": 0.0}
    row = _cells(summary_table(metrics, "test"), "final")
    assert row["AP"] == "0.500"
    assert row["AP_S"] == "n/a" and row["AP_L"] == "n/a"
    assert row["boundary AP"] == "n/a" and row["cgF1"] == "n/a"  # not logged at all
    assert row["images"] == "0"
    assert "GT" not in row  # no count key: no count column


def test_iteration_rows_m0_vs_mT_and_change():
    metrics = {"test/mask/AP": 0.40, "test/boundary/AP": 0.20, "test/iter0/mask/AP": 0.30,
               "test/iter0/boundary/AP": math.nan, "test/iter2/mask/AP": 0.40}
    table = summary_table(metrics, "test")
    after, before = _cells(table, "M^T (region head)"), _cells(table, "M^0 (SAM3, iter0)")
    change = _cells(table, "M^T − M^0")
    assert after["AP"] == "0.400" and before["AP"] == "0.300" and change["AP"] == "+0.100"
    assert before["boundary AP"] == "n/a" and change["boundary AP"] == "n/a"
    assert before["cgF1"] == "n/a"  # iter0 has no cgF1: not borrowed from the final row


def test_several_splits_one_table_each_with_own_numbers():
    metrics = {"test/a/mask/AP": 0.11, "test/b/mask/AP": 0.22, "test/b/iter0/mask/AP": 0.05,
               "test/a/mask/num_images": 3.0}
    text = summary_tables(metrics, ["a", "b"])
    table_a, table_b = text.split("\n\n")
    assert _cells(table_a, "final")["AP"] == "0.110" and "M^0" not in table_a
    assert _cells(table_a, "final")["images"] == "3"
    assert _cells(table_b, "M^T (region head)")["AP"] == "0.220"
    assert _cells(table_b, "M^0 (SAM3, iter0)")["AP"] == "0.050"
    assert "0.220" not in table_a and "0.110" not in table_b


def test_split_without_metrics_is_all_na():
    row = _cells(summary_table({"val/mask/AP": 0.3}, "test"), "final")
    assert row["AP"] == "n/a" and row["mIoU top-K"] == "n/a"


def test_log_summary_shows_val_and_test_once(tmp_path, caplog):
    """M^0 vs M^T of val and test sit in the one end-of-run summary (the train task no longer
    prints a second iteration-gain table when it tests)."""
    import logging

    from region_sam3.reporting.run_outputs import log_summary

    metrics = {"val/mask/AP": 0.5, "val/iter0/mask/AP": 0.25,
               "test/mask/AP": 0.4, "test/iter0/mask/AP": 0.3}
    with caplog.at_level(logging.INFO, logger="region_sam3.tasks"):
        log_summary(metrics, ["test"], tmp_path / "m.json", tmp_path / "report.md")
    (message,) = [r.getMessage() for r in caplog.records if "Test summary" in r.getMessage()]
    assert "| val | M^T − M^0 |" in message and "+0.250" in message
    assert "| test | M^T − M^0 |" in message and "+0.100" in message
    assert message.index("| val |") < message.index("| test |")
