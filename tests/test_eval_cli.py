"""`python eval.py` without a usable ckpt_path: one line, exit 2, no run folder left behind."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import REPO_ROOT
from omegaconf import OmegaConf

from region_sam3.utils.cli_checks import missing_file_message


def _eval(tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "eval.py"), *overrides,  # flags (-m) come first
         f"paths.log_dir={tmp_path / 'logs'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("overrides", "says"), [
    ((), "ckpt_path is required"),
    (("ckpt_path=runs/x/checkpoints/last.ckpt",), "ckpt_path='runs/x/checkpoints/last.ckpt' is not a file"),
    (("-m", "data.test_split=test,val"), "ckpt_path is required"),  # before the sweep folder
])
def test_eval_without_checkpoint_is_one_line_and_leaves_no_run_folder(tmp_path, overrides, says):
    result = _eval(tmp_path, *overrides)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert says in lines[0] and "e.g. python eval.py ckpt_path=" in lines[0]
    # Hydra would have made logs/eval/runs/<date>_<time>/ (with .hydra/ and eval.log)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_passes_the_check(tmp_path):
    # the check lets a real path through to eval_task (which then fails to read this one)
    (tmp_path / "bogus.ckpt").write_bytes(b"not a checkpoint")
    result = _eval(tmp_path, "ckpt_path=bogus.ckpt")
    assert result.returncode != 0
    assert "is required" not in result.stderr and "is not a file" not in result.stderr
    assert list((tmp_path / "logs" / "eval" / "runs").iterdir())


def test_missing_file_message_accepts_an_existing_file(tmp_path):
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"")
    assert missing_file_message(OmegaConf.create({"ckpt_path": str(ckpt)}), "ckpt_path", "x") is None
    assert missing_file_message(OmegaConf.create({"ckpt_path": None}), "ckpt_path", "x") is not None
