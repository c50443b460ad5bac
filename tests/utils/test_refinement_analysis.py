"""scripts/refinement_analysis.py: the per-iteration table and curves from fabricated T-sweep jobs."""

from __future__ import annotations

import sys
from pathlib import Path

from helpers import load_script

analysis = load_script("refinement_analysis")
Job = sys.modules["aggregate_multirun"].Job


def _job(tmp_path: Path, big_t: int, seed: int, value_of_t) -> Job:
    metrics: dict[str, float] = {}
    for t in range(big_t + 1):
        for _, key in analysis.CURVES:
            metrics[f"test/test/iter{t}/{key}"] = value_of_t(t)
    metrics["test/test/iter0/mask/AP_S"] = -1.0  # COCO's "no data" sentinel: left out, not averaged
    return Job(tmp_path / f"T{big_t}_{seed}", {analysis.T_KEY: str(big_t), "seed": str(seed)}, metrics)


def test_table_has_a_column_per_iterate_of_the_largest_trained_t(tmp_path):
    jobs = [_job(tmp_path, 1, s, lambda t, s=s: 0.1 * t + 0.01 * s) for s in (1, 2)]
    jobs += [_job(tmp_path, 4, s, lambda t: 0.05 * t) for s in (1, 2)]
    table = analysis.curves(jobs, ["test"], tmp_path / "out")

    lines = table.splitlines()
    assert lines[0].endswith("| t=0 | t=1 | t=2 | t=3 | t=4 |")
    assert lines[1].count("---") == 3 + 5
    row_t4 = next(line for line in lines if line.startswith("| test | mask/AP | 4 (n=2)"))
    assert row_t4.split(" | ")[-1].rstrip(" |") == "20.00 ± 0.00"  # t=4: 0.05 * 4, ×100
    row_t1 = next(line for line in lines if line.startswith("| test | mask/AP | 1 (n=2)"))
    cells = [c.strip() for c in row_t1.strip("|").split("|")][3:]
    assert cells[:2] == ["1.50 ± 0.71", "11.50 ± 0.71"] and cells[2:] == ["", "", ""]
    # the -1 sentinel at t=0 drops out: an empty cell; n is the number of jobs of that T
    row_s = next(line for line in lines if line.startswith("| test | mask/AP_S | 1 (n=2)"))
    cells = [c.strip() for c in row_s.strip("|").split("|")][3:]
    assert cells[:2] == ["", "11.50 ± 0.71"]  # t=1 stays in its own column
    assert (tmp_path / "out" / "iteration_curves.png").stat().st_size > 0


def test_an_iterate_with_fewer_seeds_says_how_many(tmp_path):
    jobs = [_job(tmp_path, 1, s, lambda t: 0.1 * t) for s in (1, 2, 3)]
    jobs[2].metrics["test/test/iter1/mask/AP"] = float("nan")  # seed 3 has no value at t=1
    lines = analysis.curves(jobs, ["test"], tmp_path / "out").splitlines()
    row = next(line for line in lines if line.startswith("| test | mask/AP | 1 (n=3)"))
    cells = [c.strip() for c in row.strip("|").split("|")][3:]
    assert cells == ["0.00 ± 0.00", "10.00 ± 0.00 (n=2)"]
