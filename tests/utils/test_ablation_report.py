"""scripts/ablation_report.py on a fabricated multirun with known paired t-statistics."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import yaml

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up in sys.modules
    spec.loader.exec_module(module)
    return module


report = _load("ablation_report")

AP = "test/test/mask/AP"
CROWDED = "test/test_crowded/mask/AP"
SMALL = "test/test_small/mask/AP"


def make_job(root: Path, num: int, overrides: list[str], metrics: dict) -> None:
    job = root / "multirun" / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """T=0 and T=2 (3 seeds each) and a LoRA baseline (2 seeds); T=2 beats T=0 by 0.02, 0.03,
    0.01 AP (paired t = 0.02 / (0.01 / sqrt 3) = 3.4641, 2 dof, p = 0.0742); seed 3 of T=2 has
    no crowded value (NaN); no job has the small split."""
    t0 = {1: 0.10, 2: 0.20, 3: 0.30}
    t2 = {1: 0.12, 2: 0.23, 3: 0.31}
    num = 0
    for seed in (1, 2, 3):
        make_job(tmp_path, num, ["experiment=region_head", "model.region_head.num_iters=0",
                                 f"seed={seed}"],
                 {AP: t0[seed], CROWDED: 0.05, "model/trainable_params": 0})
        num += 1
        make_job(tmp_path, num, ["experiment=region_head", "model.region_head.num_iters=2",
                                 f"seed={seed}"],
                 {AP: t2[seed], CROWDED: None if seed == 3 else 0.05 + 0.01 * seed,
                  "model/trainable_params": 190848})
        num += 1
    for seed in (1, 2):
        make_job(tmp_path, num, ["experiment=region_head", "model.region_head.num_iters=0",
                                 "model/baseline=lora", f"seed={seed}"],
                 {AP: t0[seed] + 0.01, CROWDED: -1, "model/trainable_params": 189312})
        num += 1
    return tmp_path


def _rows(csv_path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with csv_path.open() as f:
        return {(r["model.region_head.num_iters"], r.get("model/baseline", "")): r
                for r in csv.DictReader(f)}


def test_paired_t_test_and_nan_cells(sweep: Path, tmp_path: Path):
    md_path, csv_path = report.write_report(
        sweep, tmp_path / "out" / "ablation", [AP, CROWDED, SMALL],
        {"model.region_head.num_iters": "0"})
    rows = _rows(csv_path)
    t2 = rows[("2", "")]
    assert float(t2[f"{AP}_diff_mean"]) == pytest.approx(0.02)
    assert float(t2[f"{AP}_diff_std"]) == pytest.approx(0.01)
    assert float(t2[f"{AP}_t"]) == pytest.approx(3.4641016, rel=1e-6)
    assert float(t2[f"{AP}_p"]) == pytest.approx(0.0741799, rel=1e-5)
    assert int(t2[f"{AP}_diff_n"]) == 3 and int(t2["n"]) == 3
    assert int(t2["trainable_params"]) == 190848
    # crowded: seed 3 NaN -> 2 values, 2 pairs (diffs 0.01, 0.02)
    assert int(t2[f"{CROWDED}_n"]) == 2 and int(t2[f"{CROWDED}_diff_n"]) == 2
    assert float(t2[f"{CROWDED}_diff_mean"]) == pytest.approx(0.015)
    # the missing split is NaN with n=0, not 0 and not a crash
    assert int(t2[f"{SMALL}_n"]) == 0 and math.isnan(float(t2[f"{SMALL}_mean"]))
    # COCO's -1 ("nothing to average") is no data, not a value
    lora = rows[("0", "lora")]
    assert int(lora[f"{CROWDED}_n"]) == 0
    assert float(lora[f"{AP}_diff_mean"]) == pytest.approx(0.01)
    assert int(lora[f"{AP}_diff_n"]) == 2
    assert math.isnan(float(lora[f"{AP}_t"]))  # zero-variance differences: t undefined
    text = md_path.read_text()
    assert "(n=2/3)" in text and "n/a (n=0/3)" in text and "reference" in text
    assert "+2.00 ± 1.00 (n=3, p=0.074)" in text
    assert "190,848" in text


def test_single_reference_job_is_paired_with_every_seed(tmp_path: Path):
    make_job(tmp_path, 0, ["model.region_head.num_iters=0", "seed=1"], {AP: 0.1})
    for i, (seed, v) in enumerate([(1, 0.11), (2, 0.13), (3, 0.12)], start=1):
        make_job(tmp_path, i, ["model.region_head.num_iters=2", f"seed={seed}"], {AP: v})
    md, rows = report.build_report(
        report.group_settings(report.find_jobs(tmp_path, "metrics.json")[0], "seed"), [AP],
        {"model.region_head.num_iters": "0"})
    t2 = next(r for r in rows if r["model.region_head.num_iters"] == "2")
    assert t2[f"{AP}_diff_n"] == 3 and t2[f"{AP}_diff_mean"] == pytest.approx(0.02)
    assert "seed-independent" in md


def test_cli_writes_default_outputs(sweep: Path, tmp_path: Path, capsys):
    out = tmp_path / "res" / "ablation"
    assert report.main([str(sweep), "--out", str(out)]) == 0
    assert out.with_suffix(".md").is_file() and out.with_suffix(".csv").is_file()
    assert "Paired difference" in capsys.readouterr().out


def test_notes_go_under_the_title(sweep: Path, tmp_path: Path):
    notes = tmp_path / "notes.md"
    notes.write_text("## Reading\n\nNull result.\n")
    out = tmp_path / "ablation"
    assert report.main([str(sweep), "--out", str(out), "--notes", str(notes)]) == 0
    text = out.with_suffix(".md").read_text()
    assert text.index("## Reading") < text.index("## Mean ± std over seeds")
    with pytest.raises(SystemExit):
        report.main([str(sweep), "--out", str(out), "--notes", str(tmp_path / "missing.md")])
