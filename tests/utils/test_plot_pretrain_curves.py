"""scripts/plot_pretrain_curves.py on a fabricated record and run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import load_script

curves = load_script("plot_pretrain_curves")


def _run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "csv").mkdir(parents=True)
    lines = ["step,train/loss_step,val/mask/AP50"]
    lines += [f"{s},{10.0 + s},"for s in range(0, 200, 10)]  # steps 0..190, loss 10+step
    lines += ["99,,0.25", "199,,nan"]                         # one validation, one NaN
    (run / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
    return run


def test_run_curve_windows_views_and_skips_nan(tmp_path):
    curve = curves.run_curve(_run_dir(tmp_path), batch_size=4, offset=1000, window=100)
    # window 0: steps 0..90 -> mean loss 10 + 45; centred at 50 steps * 4 views + 1000
    assert curve["loss"] == [(1200.0, 55.0), (1600.0, 155.0)]
    assert curve["ap50"] == [(99 * 4 + 1000, 0.25)]   # the NaN validation is not a point


def test_record_curve_and_plot(tmp_path):
    record = tmp_path / "base.json"
    record.write_text(json.dumps({"training_curve": [
        {"step": 74, "train/loss_epoch": 65.0},
        {"step": 149, "train/loss_epoch": 50.0, "val/mask/AP50": 0.02}]}))
    curve = curves.record_curve(record, batch_size=8)
    assert curve == {"loss": [(592, 65.0), (1192, 50.0)], "ap50": [(1192, 0.02)]}
    out = tmp_path / "plots" / "curves.png"
    assert curves.main(["--record", str(record), "--run", "run", str(_run_dir(tmp_path)), "4", "0",
                        "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_errors_name_the_file(tmp_path):
    record = tmp_path / "empty.json"
    record.write_text("{}")
    with pytest.raises(ValueError, match="empty.json"):
        curves.record_curve(record, 8)
    with pytest.raises(FileNotFoundError, match="metrics.csv"):
        curves.run_curve(tmp_path / "nope", 8, 0)
