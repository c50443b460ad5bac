"""torch thread count from usable CPUs (affinity, cgroup quota), workers and processes."""

from __future__ import annotations

import pytest
import torch
from helpers import compose_task

from region_sam3.utils.run_config import set_torch_threads
from region_sam3.utils.threads import available_cpus, cgroup_cpu_quota, resolve_num_threads


def test_auto_leaves_a_core_per_worker_and_splits_between_processes():
    assert resolve_num_threads("auto", num_workers=0, cpus=8, environ={}) == 8
    assert resolve_num_threads("auto", num_workers=2, cpus=8, environ={}) == 6
    assert resolve_num_threads("auto", num_workers=2, processes=2, cpus=8, environ={}) == 2
    # never below one thread, even when the workers already take every core
    assert resolve_num_threads("auto", num_workers=2, cpus=2, environ={}) == 1
    # an explicit OMP_NUM_THREADS caps auto
    assert resolve_num_threads("auto", num_workers=0, cpus=8, environ={"OMP_NUM_THREADS": "3"}) == 3


def test_auto_reads_omp_num_threads_from_the_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert resolve_num_threads("auto", cpus=16) == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert resolve_num_threads("auto", cpus=16) == 16
    assert resolve_num_threads("auto", cpus=16, environ={"OMP_NUM_THREADS": ""}) == 16


def test_forced_and_default_settings():
    assert resolve_num_threads(3, num_workers=2, cpus=1) == 3
    assert resolve_num_threads("4", cpus=1) == 4
    assert resolve_num_threads(None) is None
    for bad in (0, -1, "many", 1.5, True):
        with pytest.raises(ValueError, match="num_threads"):
            resolve_num_threads(bad)


def test_cgroup_quota_v2_and_v1(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(v2) == pytest.approx(1.5)
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(v2) is None
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("200000")
    (v1 / "cpu.cfs_period_us").write_text("100000")
    assert cgroup_cpu_quota(tmp_path / "v1") == pytest.approx(2.0)
    (v1 / "cpu.cfs_quota_us").write_text("-1")
    assert cgroup_cpu_quota(tmp_path / "v1") is None
    assert cgroup_cpu_quota(tmp_path / "absent") is None


def test_quota_caps_the_affinity_mask(tmp_path):
    (tmp_path / "cpu.max").write_text("100000 100000\n")  # one CPU
    assert available_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path) == available_cpus(tmp_path / "absent") >= 1


@pytest.mark.parametrize("config_name", ["train", "eval"])
def test_task_config_sets_torch_threads(config_name, tmp_path, monkeypatch):
    previous = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        # train: the config's own default, not the main job's pinned 1 thread (numerics.py)
        extra = ["ckpt_path=x.ckpt"] if config_name == "eval" else ["~experiment"]
        cfg = compose_task(config_name, tmp_path, tmp_path, [*extra, "num_threads=1"])
        assert set_torch_threads(cfg) == torch.get_num_threads() == 1
        cfg = compose_task(config_name, tmp_path, tmp_path, extra)
        assert cfg.num_threads == "auto"
        # helpers compose with data.num_workers=0 and one device
        assert set_torch_threads(cfg) == available_cpus()
        if config_name == "train":
            assert compose_task("train", tmp_path, tmp_path).num_threads == 1  # experiment=main
    finally:
        torch.set_num_threads(previous)
