"""scripts/run_ablation.sh issues the right `train.py` multiruns: tuned learning rates read back
from the Optuna results, one sweep dir per factor, and a loud failure when tuning is missing.

`train.py` is replaced by a recorder (PYTHON points at a wrapper that logs `train.py ...` calls
and runs everything else, the lr lookup, with the real interpreter)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "run_ablation.sh"


def _fake_python(tmp_path: Path) -> tuple[Path, Path]:
    log = tmp_path / "calls.txt"
    wrapper = tmp_path / "fakepy"
    wrapper.write_text(
        "#!/usr/bin/env bash\n"
        f'if [[ $1 == train.py ]]; then echo "$*" >> {log}; exit 0; fi\n'
        f'exec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper, log


def _tuned(root: Path, method: str, lr: float) -> None:
    d = root / "tune" / method
    d.mkdir(parents=True)
    (d / "optimization_results.yaml").write_text(yaml.safe_dump(
        {"name": "optuna", "best_params": {"model.optimizer.lr": lr}, "best_value": 0.1}))


def _run(tmp_path: Path, root: Path, **env: str) -> subprocess.CompletedProcess:
    wrapper, _ = _fake_python(tmp_path)
    full = {**os.environ, "ROOT": str(root), "PYTHON": str(wrapper), "REPORT": "0", **env}
    return subprocess.run(["bash", str(SCRIPT)], env=full, capture_output=True, text=True,
                          cwd=REPO, check=False)


def test_parts_use_each_methods_tuned_lr(tmp_path: Path):
    root = tmp_path / "abl"
    _tuned(root, "region_head", 0.003)
    _tuned(root, "lora", 0.0001)
    res = _run(tmp_path, root, PARTS="ref T baseline blocks pooling", BASELINES="lora",
               POOL_MODES="sharpened,roi_align")
    assert res.returncode == 0, res.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    by_dir = {next(a for a in c.split() if a.startswith("hydra.sweep.dir=")).split("/", 1)[1]: c
              for c in calls}
    rel = str(root).lstrip("/")
    t = by_dir[f"{rel}/T"]
    assert "model.region_head.num_iters=1,2,3" in t and "model.optimizer.lr=0.003" in t
    assert "model.evaluation.per_iteration=true" in t and "seed=1,2,3" in t
    assert "model.optimizer.lr=0.0001" in by_dir[f"{rel}/baseline/lora"]
    assert "model/baseline=lora" in by_dir[f"{rel}/baseline/lora"]
    ref = by_dir[f"{rel}/ref"]
    assert "seed=1" in ref and "model.optimizer.lr" not in ref  # trains nothing: one job
    deep = by_dir[f"{rel}/blocks/no_deep_supervision"]
    assert "model.region_head.iter_loss_weights=[0.0,0.0,1.0]" in deep
    assert "model.optimizer.lr=0.003" in by_dir[f"{rel}/blocks/use_self_attn"]
    assert "model.region_head.pool_mode=roi_align" in by_dir[f"{rel}/pooling/roi_align"]
    assert all("experiment=ablation" in c for c in calls)
    # ref + T + 1 baseline + 5 blocks + 2 pooling modes, each its own sweep dir
    assert len(calls) == len(by_dir) == 10


def test_tune_part_runs_the_lr_grid_per_method(tmp_path: Path):
    res = _run(tmp_path, tmp_path / "abl", PARTS="tune", BASELINES="mask_head,hq_token")
    assert res.returncode == 0, res.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert len(calls) == 3 and all("hparams_search=ablation_lr" in c for c in calls)
    assert "model/baseline=hq_token" in calls[2] and "tune/hq_token" in calls[2]


def test_missing_tuning_fails_loudly(tmp_path: Path):
    res = _run(tmp_path, tmp_path / "abl", PARTS="T")
    assert res.returncode == 3
    assert "tune/region_head/optimization_results.yaml" in res.stderr
    assert not (tmp_path / "calls.txt").exists()
