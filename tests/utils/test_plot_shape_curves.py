"""scripts/plot_shape_curves.py: table and plot of stage-1 shape curves."""

from __future__ import annotations

import pytest
from helpers import load_script

plot_shape_curves = load_script("plot_shape_curves")

HEADER = ("epoch,step,train/loss,val/large/shape_acc,val/shape_acc,val/coarse/large/shape_acc,"
          "val/colour_acc\n")


def _run(tmp_path, name, values):
    run = tmp_path / name
    (run / "csv").mkdir(parents=True)
    lines = [HEADER, "0,10,2.0,,,,\n"]  # a training row: no probe
    lines += [f"0,{step},,{v},{v / 2},{v / 3},0.9\n" for step, v in values]
    (run / "csv" / "metrics.csv").write_text("".join(lines))
    return run


def test_table_names_best_and_first_step_reaching_the_target(tmp_path):
    a = _run(tmp_path, "a", [(249, 0.5), (499, 0.95), (749, 0.92)])
    b = _run(tmp_path, "b", [(249, 0.3), (499, 0.4)])
    out = tmp_path / "res" / "curves"
    assert plot_shape_curves.main(["--run", "A", str(a), "--run", "B", str(b), "--out",
                                   str(out)]) == 0
    table = out.with_suffix(".md").read_text()
    row_a = next(line for line in table.splitlines() if line.startswith("| A "))
    row_b = next(line for line in table.splitlines() if line.startswith("| B "))
    assert "| 0.950 | 500 | 500 |" in row_a  # best 0.95 at step 500, first >= 0.9 at 500
    assert "not reached" in row_b and "| 0.400 |" in row_b
    assert out.with_suffix(".png").stat().st_size > 1000


def test_run_without_probe_rows_is_an_error(tmp_path):
    run = tmp_path / "empty"
    (run / "csv").mkdir(parents=True)
    (run / "csv" / "metrics.csv").write_text(HEADER + "0,10,2.0,,,,\n")
    with pytest.raises(ValueError, match="no validation rows"):
        plot_shape_curves.read_curve(run)


def test_resumed_runs_join_by_step(tmp_path):
    first = _run(tmp_path, "first", [(249, 0.2), (499, 0.3)])
    resumed = _run(tmp_path, "resumed", [(749, 0.5)])
    rows = plot_shape_curves.read_curve(f"{first},{resumed}")
    assert [r["step"] for r in rows] == [249, 499, 749]
    assert rows[-1]["val/large/shape_acc"] == 0.5
