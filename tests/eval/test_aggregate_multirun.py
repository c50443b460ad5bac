"""scripts/aggregate_multirun.py on a fabricated Hydra multirun directory."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml
from helpers import load_script

agg = load_script("aggregate_multirun")


def make_job(root: Path, num: int, overrides: list[str], metrics: dict | None) -> None:
    job = root / "2026-11-21" / "10-00-00" / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        (job / "test_metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def multirun(tmp_path: Path) -> Path:
    root = tmp_path / "multirun"
    values = {("0", "0"): 0.30, ("0", "1"): 0.34, ("2", "0"): 0.40, ("2", "1"): 0.44}
    num = 0
    for (iters, seed), ap in values.items():
        make_job(
            root,
            num,
            [f"model.iters={iters}", f"seed={seed}"],
            {"mask/AP": ap, "eval": {"miou": 0.5 + ap}, "epoch": 3},
        )
        num += 1
    make_job(root, num, ["model.iters=2", "+seed=2"], {"mask/AP": 0.48, "eval": {"miou": 0.9}})
    make_job(root, num + 1, ["model.iters=4", "seed=0"], None)  # crashed run: no metrics
    return root


def test_groups_mean_std_markdown_and_csv(multirun: Path, tmp_path: Path):
    out = tmp_path / "res" / "table"
    rc = agg.main(
        [
            str(multirun),
            "--metrics-file",
            "test_metrics.json",
            "--metrics",
            "mask/AP,eval/miou",
            "--out",
            str(out),
            "--scale",
            "100",
        ]
    )
    assert rc == 0
    md = out.with_suffix(".md").read_text()
    assert md.splitlines()[0] == "| model.iters | n | mask/AP | eval/miou |"
    # iters=0: 30, 34 -> 32.00 ± 2.83 ; iters=2 (3 seeds, "+seed" also ignored): 44 ± 4.
    assert "| 0 | 2 | 32.00 ± 2.83 | 82.00 ± 2.83 |" in md
    assert "| 2 | 3 | 44.00 ± 4.00 |" in md
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert [r["model.iters"] for r in rows] == ["0", "2"]
    assert float(rows[1]["mask/AP_mean"]) == pytest.approx(0.44)
    assert float(rows[1]["mask/AP_std"]) == pytest.approx(0.04)


def test_all_metrics_by_default_and_single_seed_has_no_std(tmp_path: Path):
    root = tmp_path / "mr"
    make_job(root, 0, ["lr=1e-4", "seed=0"], {"a": 1.0, "b": 2.0})
    make_job(root, 1, ["lr=1e-3", "seed=0"], {"a": 3.0, "b": 4.0})
    for d in (root / "2026-11-21" / "10-00-00").iterdir():
        (d / "test_metrics.json").rename(d / "metrics.json")
    md_path, csv_path = agg.aggregate(root, tmp_path / "t")
    lines = md_path.read_text().splitlines()
    assert lines[0] == "| lr | n | a | b |"
    assert lines[2:] == ["| 1e-3 | 1 | 3.00 | 4.00 |", "| 1e-4 | 1 | 1.00 | 2.00 |"]
    rows = list(csv.DictReader(csv_path.open()))
    assert rows[0]["a_std"] == "nan"


def test_missing_metrics_everywhere_raises(tmp_path: Path):
    root = tmp_path / "empty"
    make_job(root, 0, ["seed=0"], None)
    with pytest.raises(FileNotFoundError):
        agg.aggregate(root, tmp_path / "t", metrics_file="test_metrics.json")


def test_nan_values_are_skipped_in_stats(tmp_path: Path):
    root = tmp_path / "mr"
    make_job(root, 0, ["lr=1e-4", "seed=0"], {"a": 1.0, "b": 2.0})
    make_job(root, 1, ["lr=1e-4", "seed=1"], {"a": 3.0, "b": None})
    for d in (root / "2026-11-21" / "10-00-00").iterdir():
        (d / "test_metrics.json").rename(d / "metrics.json")
    md_path, _ = agg.aggregate(root, tmp_path / "t")
    md = md_path.read_text()
    # b is NaN (an empty metric group) in one run: skipped, and the cell says n=1.
    assert "| 1e-4 | 2 | 2.00 ± 1.41 | 2.00 (n=1) |" in md
    make_job(root, 2, ["lr=1e-3", "seed=0"], {"a": 1.0, "b": None})
    job = root / "2026-11-21" / "10-00-00" / "2"
    (job / "test_metrics.json").rename(job / "metrics.json")
    md = agg.aggregate(root, tmp_path / "t2")[0].read_text()
    assert "| 1e-3 | 1 | 1.00 | n/a (n=0) |" in md
    assert math.isnan(agg.Group({}, []).stats("a")[0])


def test_shared_overrides_leave_the_markdown_columns_but_stay_in_the_csv(tmp_path: Path):
    root = tmp_path / "multirun"
    for num, (iters, seed) in enumerate([("0", "1"), ("0", "2"), ("1", "1"), ("1", "2")]):
        make_job(root, num, [f"model.iters={iters}", f"seed={seed}", "trainer.max_epochs=1"],
                 {"mask/AP": 0.1 * (num + 1)})
    md_path, csv_path = agg.aggregate(root, tmp_path / "t", metrics_file="test_metrics.json")
    lines = md_path.read_text().splitlines()
    assert lines[0] == "| model.iters | n | mask/AP |"
    assert lines[-1] == "Shared overrides: `trainer.max_epochs=1`"
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["trainer.max_epochs"] for r in rows] == ["1", "1"]


def test_tested_checkpoint_is_the_one_besides_last(tmp_path: Path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    (ckpts / "last.ckpt").write_bytes(b"")
    (ckpts / "epoch=1-step=60.ckpt").write_bytes(b"")
    assert agg.tested_checkpoint(tmp_path) == ckpts / "epoch=1-step=60.ckpt"
    (ckpts / "epoch=2-step=90.ckpt").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"epoch=1-step=60.ckpt.*epoch=2-step=90.ckpt"):
        agg.tested_checkpoint(tmp_path)  # two candidates: no silent pick
