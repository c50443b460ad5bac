"""The GPU verification suite runs end to end at tiny size on the CPU, so it is ready for a GPU."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO_ROOT / "benchmarks"


def _rows(markdown: str, heading: str) -> list[list[str]]:
    """Body rows (cells) of the first table under `## heading...`."""
    section = markdown.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]


def _number(cell: str) -> float:
    match = re.search(r"[-+]?\d+(\.\d+)?", cell)
    assert match, f"no number in {cell!r}"
    return float(match.group(0))


def test_search_largest_batch_bisects_to_the_oom_boundary():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from gpu_suite_parts import search_largest_batch
    finally:
        sys.path.remove(str(BENCHMARKS))
    tried = []

    def fits_below(limit):
        def fits(b):
            tried.append(b)
            return b <= limit
        return fits

    assert search_largest_batch(fits_below(11), 32) == (11, False)
    assert tried == [1, 2, 4, 8, 16, 12, 10, 11]
    assert search_largest_batch(fits_below(100), 24) == (24, True)
    assert search_largest_batch(fits_below(0), 8) == (0, False)


@pytest.mark.slow
def test_tiny_suite_on_cpu_end_to_end(tmp_path):
    out = tmp_path / "gpu.md"
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_suite.py"), "--size", "tiny", "--device", "cpu",
         "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = out.read_text()
    assert report.strip() in proc.stdout
    assert "Device: CPU" in report

    train = {r[0].split(" (")[0] if r[0].startswith("region") else r[0]: r
             for r in _rows(report, "Training steps")}
    expected = {f"region_head_full T={t}" for t in range(4)} | {
        "distill_clip (T=2)", "full fine-tuning (plain SAM3)"}
    assert set(train) == expected
    for name, (_, _params, batch, ips, step_ms, mem, _syncs) in train.items():
        assert _number(batch) >= 1, name
        assert all(math.isfinite(_number(c)) and _number(c) > 0 for c in (ips, step_ms, mem)), name
    # frozen base: only the head trains; full fine-tuning trains everything
    assert _number(train["region_head_full T=0"][1]) == 0
    assert _number(train["region_head_full T=2"][1]) < _number(
        train["full fine-tuning (plain SAM3)"][1])

    (val,) = _rows(report, "Validation step")
    assert val[0] == "8" and _number(val[1]) > 0  # tiny preset: 8 prompts (official: 80)

    overhead = _rows(report, "Head overhead")
    variants = {(r[0], r[1]) for r in overhead}
    assert variants == {(v, p) for p in ("1", "2") for v in
                        ["plain SAM3", *[f"+ region head T={t}" for t in range(4)]]}
    assert all(math.isfinite(_number(r[4])) and _number(r[4]) > 0 for r in overhead)

    pooling = _rows(report, "Mask pooling")
    assert [r[0] for r in pooling] == ["16²", "64²"]
    assert all(math.isfinite(_number(r[3])) and _number(r[3]) > 0 for r in pooling)

    goals = _rows(report, "Goals")
    assert len(goals) == 7 and all(r[2] in {"yes", "no"} for r in goals)
