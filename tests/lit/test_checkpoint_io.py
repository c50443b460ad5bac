"""Atomic checkpoints and clear errors on truncated ones (issue 19 item 2)."""

from __future__ import annotations

import os

import hydra
import pytest
import torch

from region_sam3.lit.checkpoint_io import AtomicCheckpointIO, CorruptCheckpointError
from tests.helpers import compose_task


def _state(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"state_dict": {"w": torch.randn(64, 64, generator=g)}, "epoch": seed}


def _leftovers(folder) -> list[str]:
    return sorted(name for name in os.listdir(folder) if not name.endswith(".ckpt"))


def test_round_trip_leaves_no_temp_file(tmp_path):
    io = AtomicCheckpointIO()
    target = tmp_path / "sub" / "last.ckpt"
    io.save_checkpoint(_state(1), target)
    io.save_checkpoint(_state(2), target)  # overwrite through os.replace
    loaded = io.load_checkpoint(target)
    assert loaded["epoch"] == 2
    assert torch.equal(loaded["state_dict"]["w"], _state(2)["state_dict"]["w"])
    assert os.listdir(target.parent) == ["last.ckpt"]


def test_failed_write_keeps_previous_file_and_removes_temp(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint(_state(1), target)
    before = target.read_bytes()

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial checkpoint bytes")
        raise OSError("disk quota exceeded mid-write")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="quota"):
        io.save_checkpoint(_state(2), target)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert io.load_checkpoint(target)["epoch"] == 1
    assert _leftovers(tmp_path) == []


def test_truncated_file_names_itself_and_newest_loadable_alternative(tmp_path):
    io = AtomicCheckpointIO()
    io.save_checkpoint(_state(1), tmp_path / "epoch_000.ckpt")
    io.save_checkpoint(_state(2), tmp_path / "epoch_001.ckpt")
    os.utime(tmp_path / "epoch_000.ckpt", (1_000, 1_000))  # epoch_001 is the newest good one
    good = (tmp_path / "epoch_001.ckpt").read_bytes()
    (tmp_path / "last.ckpt").write_bytes(good[: len(good) // 3])  # a copy killed a third through
    with pytest.raises(CorruptCheckpointError) as info:
        io.load_checkpoint(tmp_path / "last.ckpt")
    message = str(info.value)
    assert "last.ckpt" in message
    assert "epoch_001.ckpt" in message
    assert isinstance(info.value, RuntimeError)


def test_truncated_file_without_alternative_says_so(tmp_path):
    (tmp_path / "last.ckpt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CorruptCheckpointError, match=r"last\.ckpt.*no other loadable"):
        AtomicCheckpointIO().load_checkpoint(tmp_path / "last.ckpt")


def test_missing_file_is_still_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        AtomicCheckpointIO().load_checkpoint(tmp_path / "nope.ckpt")


@pytest.mark.parametrize("trainer_cfg", ["default", "ddp_sim"])
def test_composed_trainer_uses_atomic_checkpoint_io(tmp_path, trainer_cfg):
    cfg = compose_task("train", tmp_path / "out", tmp_path / "data", [f"trainer={trainer_cfg}"])
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_gpu_ddp_config_still_composes_with_the_plugin(tmp_path):
    cfg = compose_task("train", tmp_path / "out", tmp_path / "data", ["trainer=ddp"])
    targets = [p["_target_"] for p in cfg.trainer.plugins]
    assert targets == ["region_sam3.lit.checkpoint_io.AtomicCheckpointIO"]


def test_trainer_fit_writes_checkpoints_through_the_plugin(tmp_path):
    from lightning.pytorch import Trainer, seed_everything
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.demos.boring_classes import BoringModel

    seed_everything(0)
    ckpt_dir = tmp_path / "checkpoints"
    trainer = Trainer(default_root_dir=tmp_path, max_epochs=2, limit_train_batches=2,
                      limit_val_batches=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, accelerator="cpu",
                      plugins=[AtomicCheckpointIO()],
                      callbacks=[ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=-1)])
    trainer.fit(BoringModel())
    names = sorted(os.listdir(ckpt_dir))
    assert "last.ckpt" in names and len(names) == 3, names  # two epochs + last, no temp files
    assert AtomicCheckpointIO().load_checkpoint(ckpt_dir / "last.ckpt")["epoch"] == 1


_KILLED_WRITER = """
import sys, time, torch
from region_sam3.lit.checkpoint_io import AtomicCheckpointIO

def stalled_save(obj, f, *args, **kwargs):
    f.write(b"PK\\x03\\x04 half of a checkpoint")
    f.flush()
    print("writing", flush=True)
    time.sleep(60)  # killed here, mid-write

torch.save = stalled_save
AtomicCheckpointIO().save_checkpoint({"epoch": 2}, sys.argv[1])
"""


def test_sigkill_mid_save_leaves_previous_checkpoint_loadable(tmp_path):
    import signal
    import subprocess
    import sys

    from tests.helpers import REPO_ROOT

    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(_state(1), target)
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target)], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert AtomicCheckpointIO().load_checkpoint(target)["epoch"] == 1


def test_next_save_removes_temp_files_a_killed_save_left(tmp_path):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint(_state(1), target)
    (tmp_path / ".last.ckpt.abc123.tmp").write_bytes(b"half a checkpoint")  # SIGKILL mid-save
    (tmp_path / ".epoch_000.ckpt.x.tmp").write_bytes(b"another target's")
    io.save_checkpoint(_state(2), target)
    assert sorted(os.listdir(tmp_path)) == [".epoch_000.ckpt.x.tmp", "last.ckpt"]
    assert io.load_checkpoint(target)["epoch"] == 2
