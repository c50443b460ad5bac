"""`trainer=ddp_sim`: train.py's task under DDP on 2 CPU ranks (gloo), as `trainer=ddp` runs.

The ranks are forked from the test process with the environment a launcher gives them
(LOCAL_RANK, NODE_RANK, MASTER_ADDR/PORT), so Lightning takes the same DDPStrategy path as
`python train.py trainer=ddp_sim` (processes created externally, as under torchrun/SLURM)
without re-importing torch and sam3 in every rank (spawn: ~15 s per rank on 2 cores). Each
rank runs `train_task` (fit with validation, then test of the best checkpoint) and then
`trainer.validate`, and writes what it saw to `rank<k>.json`.

One run feeds most tests: on rank 1 only, the loss of global step 1 is made NaN under
`model.on_nonfinite_loss=skip`. A second run does the same under `stop`, a third keeps rank 1
NaN from step 1 on under `skip` with a cap on consecutive skips.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.multiprocessing as mp
from helpers import compose_task
from omegaconf import OmegaConf

WORLD = 2
NAN_RANK, NAN_STEP = 1, 1
TRAIN_STEPS = 3
NAN_FOREVER_ENV = "REGION_SAM3_TEST_NAN_FOREVER"  # set: rank 1 stays NaN from NAN_STEP on
INF_GRAD_ENV = "REGION_SAM3_TEST_INF_GRAD"  # set: rank 1 gets an Inf gradient (finite loss) instead
RUN_TIMEOUT_S = 240  # a rank stuck in a collective would otherwise hang until gloo's timeout
DDP_OVERRIDES = [
    "trainer=ddp_sim",
    "logger=csv",
    "trainer.max_epochs=1",
    f"trainer.limit_train_batches={TRAIN_STEPS}",
    "trainer.log_every_n_steps=1",
    # One image per batch: a single process and each rank run the identical per-image
    # forwards, so their metrics can be compared exactly (batch composition changes float
    # rounding in the convolutions).
    "data.batch_size=1",
    "data.test_split=small",
]


# ---------------------------------------------------------------------------- rank side
class _Recorder(L.Callback):
    """Per rank: image ids of every batch by stage, and whether a train step moved weights."""

    def __init__(self, record: dict) -> None:
        self.record = record
        self._before: list[torch.Tensor] = []

    def _seen(self, trainer: L.Trainer, loop: str, batch) -> None:
        key = f"{trainer.state.fn.value}/{loop}"
        self.record["seen"].setdefault(key, []).extend(batch.image_ids.tolist())

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._seen(trainer, "train", batch)
        self._before = [p.detach().clone() for p in pl_module.parameters() if p.requires_grad]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        after = [p.detach() for p in pl_module.parameters() if p.requires_grad]
        moved = any(not torch.equal(a, b) for a, b in zip(self._before, after))
        self.record["weights_moved"].append(moved)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._seen(trainer, "val", batch)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._seen(trainer, "test", batch)


def _inject_nan_at(step: int, forever: bool = False) -> None:
    """Make this process's loss NaN at `global_step == step` (the term `loss_dice`), or at
    every step from `step` on (`forever`)."""
    from region_sam3.lit.module import RegionSam3Module

    original = RegionSam3Module._losses

    def corrupted(self, batch):
        losses = original(self, batch)
        if self.training and (self.global_step == step or (forever and self.global_step > step)):
            losses["loss_dice"] = losses["loss_dice"] * float("nan")
            losses["total"] = losses["total"] + losses["loss_dice"]
        return losses

    RegionSam3Module._losses = corrupted  # forked child: the test process is unaffected


def _inject_inf_gradient_at(step: int) -> None:
    """Make one gradient of this process Inf at `global_step == step`, after DDP's all-reduce
    (so only this rank sees it: the guard's own all-reduce must tell the other rank)."""
    from region_sam3.lit.module import RegionSam3Module

    original = RegionSam3Module.on_before_optimizer_step

    def corrupted(self, optimizer):
        if self.global_step == step:
            grad = next(p.grad for g in optimizer.param_groups for p in g["params"]
                        if p.grad is not None)
            grad.view(-1)[0] = float("inf")
        return original(self, optimizer)

    RegionSam3Module.on_before_optimizer_step = corrupted


def _floats(metrics) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def _rank_main(rank: int, port: int, cfgs: list, out_dir: str) -> None:
    import region_sam3.tasks as tasks

    cfg = cfgs[rank]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK=str(rank),
                      NODE_RANK="0")
    torch.set_num_threads(1)
    record: dict = {"rank": rank, "seen": {}, "weights_moved": []}
    if rank == NAN_RANK and os.environ.get(INF_GRAD_ENV):
        _inject_inf_gradient_at(NAN_STEP)
    elif rank == NAN_RANK:
        _inject_nan_at(NAN_STEP, forever=bool(os.environ.get(NAN_FOREVER_ENV)))
    recorder = _Recorder(record)
    build_callbacks = tasks.instantiate_callbacks
    tasks.instantiate_callbacks = lambda c: [*build_callbacks(c), recorder]
    try:
        metrics, objects = tasks.train_task(cfg)
        trainer, model = objects["trainer"], objects["model"]
        record.update(fit_test=metrics, global_step=trainer.global_step,
                      best=trainer.checkpoint_callback.best_model_path)
        optimizer = trainer.optimizers[0]
        record["adam_steps"] = sorted({int(s["step"]) for s in optimizer.state.values()})
        trainer.validate(model, datamodule=objects["datamodule"], ckpt_path=record["best"],
                         weights_only=False)
        record["validate"] = _floats(trainer.callback_metrics)
    except Exception as exc:  # recorded for the test; the other rank must fail alike
        record["error"] = f"{type(exc).__name__}: {exc}"
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(record))


# ---------------------------------------------------------------------------- test side
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ddp(tmp: Path, data_dir: Path, overrides: list[str]) -> list[dict]:
    """Fork 2 ranks running `train_task`; fail (not hang) if they are not done in time."""
    cfgs = []
    for rank in range(WORLD):
        # Rank 1 gets its own output dir: anything it writes there (instead of leaving the
        # writing to rank 0) shows up. Lightning broadcasts rank 0's checkpoint dir anyway.
        cfg = compose_task("train", tmp / f"out{rank}", data_dir, [*DDP_OVERRIDES, *overrides])
        OmegaConf.resolve(cfg)
        cfgs.append(cfg)
    return _fork_ranks(_rank_main, (_free_port(), cfgs, str(tmp)), tmp)


def _fork_ranks(target, args: tuple, tmp: Path) -> list[dict]:
    """Fork WORLD processes `target(rank, *args)`; their `rank<k>.json` records, or a test
    failure (not a hang) when they are not done within RUN_TIMEOUT_S."""
    context = mp.start_processes(target, args=args, nprocs=WORLD, join=False,
                                 start_method="fork")
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"DDP ranks still running after {RUN_TIMEOUT_S} s (hang in a collective?)")
    return [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(WORLD)]


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-6, abs=1e-7)


@pytest.fixture(scope="module")
def skip_run(tmp_path_factory, synthetic_data_dir):
    tmp = tmp_path_factory.mktemp("ddp_skip")
    return tmp, run_ddp(tmp, synthetic_data_dir, ["model.on_nonfinite_loss=skip"])


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT_S + 120)
def test_skip_on_one_rank_skips_that_step_on_every_rank(skip_run):
    _, records = skip_run
    for record in records:
        assert "error" not in record, record.get("error")
        assert record["global_step"] == TRAIN_STEPS  # training went on after the bad step
        expected = [step != NAN_STEP for step in range(TRAIN_STEPS)]
        assert record["weights_moved"] == expected, record["rank"]
        # The optimizer step was skipped, not run with zero gradients (AdamW would still move
        # the weights with its moments and decay): its per-parameter step count is one short.
        assert record["adam_steps"] == [TRAIN_STEPS - 1]
        assert record["fit_test"]["train/nonfinite_skips"] == 1.0


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT_S + 120)
def test_ranks_see_disjoint_shards_covering_each_split(skip_run, synthetic_data_dir):
    tmp, records = skip_run
    cfg = compose_task("train", tmp / "ids", synthetic_data_dir, DDP_OVERRIDES)
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    datamodule.setup("test")
    ids = {role: sorted(r.image_id for r in ds.records) for role, ds in datamodule.datasets.items()}
    seen = [record["seen"] for record in records]
    assert seen[0].keys() == seen[1].keys() == {
        "fit/train", "fit/val", "test/test", "validate/val"}
    for key, role in [("fit/val", "val"), ("validate/val", "val"), ("test/test", "test")]:
        assert not set(seen[0][key]) & set(seen[1][key]), key
        assert sorted(seen[0][key] + seen[1][key]) == ids[role], key
    train0, train1 = seen[0]["fit/train"], seen[1]["fit/train"]
    assert len(train0) == len(train1) == TRAIN_STEPS
    assert not set(train0) & set(train1)
    assert set(train0) | set(train1) <= set(ids["train"])


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT_S + 120)
def test_only_rank_zero_writes_files_and_checkpoints(skip_run):
    tmp, records = skip_run
    rank0 = tmp / "out0"
    assert Path(records[0]["best"]).parent == rank0 / "checkpoints"
    assert records[1]["best"] == records[0]["best"]  # rank 1 tests the same checkpoint
    for name in ("checkpoints/last.ckpt", "metrics.json", "metrics_history.json",
                 "csv/metrics.csv"):
        assert (rank0 / name).is_file(), name
    written = sorted(str(p.relative_to(tmp)) for p in (tmp / "out1").rglob("*"))
    assert written == [], written


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT_S + 180)
def test_ddp_metrics_equal_a_single_process_run(skip_run, synthetic_data_dir):
    from region_sam3.tasks import eval_task

    tmp, records = skip_run
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the ranks: same float rounding
    try:
        cfg = compose_task("eval", tmp / "single", synthetic_data_dir, [
            f"ckpt_path={records[0]['best']}", "data.batch_size=1", "data.test_split=[val,small]",
            f"metrics_file={tmp / 'single' / 'metrics.json'}"])
        single, _ = eval_task(cfg)
    finally:
        torch.set_num_threads(threads)
    pairs = []  # (key under DDP, key in the single-process run)
    for key in single:
        if key.startswith("test/val/"):
            pairs += [("fit_test", "val/" + key.removeprefix("test/val/"), key),
                      ("validate", "val/" + key.removeprefix("test/val/"), key)]
        elif key.startswith("test/small/"):
            pairs.append(("fit_test", "test/" + key.removeprefix("test/small/"), key))
    assert len(pairs) > 30 and single["test/val/mask/AP50"] > 0  # a meaningful comparison
    for record in records:
        for source, ddp_key, single_key in pairs:
            got, want = record[source][ddp_key], single[single_key]
            assert _same(got, want), (record["rank"], source, ddp_key, got, want)


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT_S + 120)
def test_stop_on_one_rank_raises_on_every_rank(tmp_path, synthetic_data_dir):
    records = run_ddp(tmp_path, synthetic_data_dir, ["model.on_nonfinite_loss=stop"])
    for record in records:
        assert record["error"].startswith("NonFiniteLossError"), record
        assert f"global step {NAN_STEP}" in record["error"]
        assert f"rank(s) [{NAN_RANK}]" in record["error"]
    assert "loss_dice" in records[NAN_RANK]["error"]
    assert records[0]["weights_moved"] == [True]  # step 0 trained; nobody got past step 1


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT_S + 120)
def test_skip_cap_raises_on_every_rank_at_the_same_step(tmp_path, synthetic_data_dir,
                                                        monkeypatch):
    """Rank 1 stays NaN: step 1 is skipped everywhere, step 2 exceeds the cap (1) everywhere."""
    monkeypatch.setenv(NAN_FOREVER_ENV, "1")  # inherited by the forked ranks
    records = run_ddp(tmp_path, synthetic_data_dir, [
        "model.on_nonfinite_loss=skip", "model.max_consecutive_nonfinite_skips=1"])
    for record in records:
        assert record["error"].startswith("NonFiniteLossError"), record
        assert f"global step {NAN_STEP + 1}" in record["error"]
        assert "2 consecutive non-finite steps exceed" in record["error"]
        assert record["weights_moved"] == [True, False]  # trained, skipped, then stopped


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT_S + 120)
def test_inf_gradient_on_one_rank_skips_that_step_on_every_rank(tmp_path, synthetic_data_dir,
                                                                monkeypatch):
    """Finite loss, an Inf gradient on rank 1 only (after DDP's all-reduce): both ranks skip the
    same optimizer step on the device and count it, weights stay equal and finite."""
    monkeypatch.setenv(INF_GRAD_ENV, "1")
    records = run_ddp(tmp_path, synthetic_data_dir, ["model.on_nonfinite_loss=skip"])
    for record in records:
        assert "error" not in record, record.get("error")
        assert record["global_step"] == TRAIN_STEPS
        assert record["weights_moved"] == [step != NAN_STEP for step in range(TRAIN_STEPS)]
        assert record["adam_steps"] == [TRAIN_STEPS - 1]  # fused AdamW rolled its count back
        assert record["fit_test"]["train/nonfinite_skips"] == 1.0
    assert records[0]["validate"] == records[1]["validate"]


def test_ddp_sim_config_is_two_gloo_ranks_with_the_script_launcher(tmp_path):
    """`python train.py trainer=ddp_sim` re-runs the command for rank 1 (as `trainer=ddp`)."""
    from hydra.utils import instantiate
    from lightning.pytorch.strategies import DDPStrategy
    from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher

    cfg = compose_task("train", tmp_path, tmp_path / "data", ["trainer=ddp_sim"])
    trainer = instantiate(cfg.trainer, logger=False)
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.strategy._get_process_group_backend() == "gloo"
    assert isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher)
    assert trainer.num_devices == WORLD and trainer.strategy.root_device.type == "cpu"


# ---------------------------------------------------------------------------- signals
SIGNAL_STEP = 1


def _rank_signal_main(rank: int, port: int, cfgs: list, out_dir: str, signal_rank: int) -> None:
    """One rank of a run where only `signal_rank` receives SIGUSR1 during step SIGNAL_STEP."""
    import signal

    import region_sam3.tasks as tasks

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK=str(rank),
                      NODE_RANK="0")
    torch.set_num_threads(1)
    record: dict = {"rank": rank, "steps": []}

    class _Signal(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            record["steps"].append(trainer.global_step)
            if rank == signal_rank and trainer.global_step == SIGNAL_STEP:
                os.kill(os.getpid(), signal.SIGUSR1)  # as a scheduler would: this rank only

    build_callbacks = tasks.instantiate_callbacks
    tasks.instantiate_callbacks = lambda c: [*build_callbacks(c), _Signal()]
    try:
        tasks.train_task(cfgs[rank])
        record["exit"] = 0
    except SystemExit as exc:
        record["exit"] = exc.code
    except Exception as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(record))


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT_S + 120)
@pytest.mark.parametrize("signal_rank", [0, 1])
def test_signal_on_one_rank_saves_and_stops_every_rank(tmp_path, synthetic_data_dir,
                                                       signal_rank):
    """USR1 reaches one rank only: both ranks stop after the same batch, rank 0 writes one
    resumable last.ckpt at that step, both exit 128 + SIGUSR1, nothing hangs."""
    import signal

    cfgs = []
    for rank in range(WORLD):
        cfg = compose_task("train", tmp_path / f"out{rank}", synthetic_data_dir,
                           [*DDP_OVERRIDES, "trainer.limit_train_batches=4", "test=false",
                            "trainer.limit_val_batches=0"])
        OmegaConf.resolve(cfg)
        cfgs.append(cfg)
    records = _fork_ranks(_rank_signal_main,
                          (_free_port(), cfgs, str(tmp_path), signal_rank), tmp_path)
    for record in records:
        assert "error" not in record, record
        assert record["exit"] == 128 + signal.SIGUSR1, record
        assert record["steps"] == [0, 1], record  # stopped after the signalled batch, together
    saved = torch.load(tmp_path / "out0" / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == SIGNAL_STEP + 1
    assert not (tmp_path / "out1" / "checkpoints" / "last.ckpt").exists()  # rank 0 writes
    assert not (tmp_path / "out0" / "metrics.json").exists()
