"""No host-device syncs in the project's own training-step code (structural, on the CPU).

On a GPU every `.item()` / `.tolist()` / `bool(t)` / `int(t)` / `.cpu()` / `.nonzero()` /
boolean-mask indexing of a device tensor blocks the host until the GPU queue drains. CPU tests
cannot observe that, so this test records those calls whose *caller* is a `region_sam3` file
while `training_step` runs. Upstream `sam3` code (the Hungarian matcher solves on the CPU) is
out of scope here; `benchmarks/gpu_suite.py` counts all syncs with `torch.cuda.set_sync_debug_mode`.
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import build_module_and_batch, compose_task
from torch.overrides import TorchFunctionMode

import region_sam3

PACKAGE_DIR = str(Path(region_sam3.__file__).resolve().parent)
SYNC_METHODS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu",
                "numpy", "nonzero")
# Host data straight onto a device (`torch.tensor(x, device=cuda)`) is a blocking copy that
# waits for the GPU queue; build on the CPU and `.to(device, non_blocking=True)`, or use a fill
# kernel (`torch.full`). Flagged whatever the device, since the tests run on the CPU.
HOST_DATA_FACTORIES = ("tensor", "as_tensor")


def _is_bool_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


class _SyncRecorder(TorchFunctionMode):
    """Counts sync-type tensor calls whose Python caller is a `region_sam3` file."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        sync = name in SYNC_METHODS or (
            name in ("__getitem__", "__setitem__") and len(args) > 1 and _is_bool_index(args[1])
        ) or (name in HOST_DATA_FACTORIES and (kwargs or {}).get("device") is not None)
        if sync:
            frame = sys._getframe(1)
            if frame.f_code.co_filename.startswith(PACKAGE_DIR):
                self.calls[f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno} {name}"] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def record_sync_calls() -> Iterator[Counter[str]]:
    """Counter of `file:line method` for sync-type tensor calls made from region_sam3 code
    (a TorchFunctionMode: patching `Tensor.__getitem__` would make 0-d tensors sequences)."""
    recorder = _SyncRecorder()
    with recorder:
        yield recorder.calls


def test_instrumentation_sees_syncs_from_project_code():
    from region_sam3.data.batch import FindQueryBatch

    with record_sync_calls() as calls:
        FindQueryBatch.host_targets(_FakeBatch())  # no host copies: one read-back
        torch.ones(2).tolist()  # made from this test file: not counted
    assert sum(calls.values()) == 1 and "batch.py" in next(iter(calls)), calls


class _FakeBatch:
    num_targets_host = None
    target_object_host = None
    num_queries = 2
    num_targets = torch.tensor([1, 0])
    target_object_index = torch.tensor([3])


def test_training_step_has_at_most_one_sync(tmp_path, synthetic_data_dir, monkeypatch):
    cfg = compose_task("train", tmp_path, synthetic_data_dir, [
        "model/sam3=tiny", "model/region_head=default", "model.region_head.iter_loss_weights=null",
        "model.sam3.freeze=[backbone.*,transformer.*]", "data.augmentation=null"])
    module, batch = build_module_and_batch(cfg)
    module.train()
    monkeypatch.setattr(module, "log", lambda *a, **k: None)
    monkeypatch.setattr(module, "log_dict", lambda *a, **k: None)
    assert batch.num_targets_host is not None  # the collator's host copies travel with the batch
    with record_sync_calls() as calls:
        loss = module.training_step(batch, 0)
    assert torch.isfinite(loss)
    # One sync per step is allowed: the non-finite-loss check reads one flag for all terms.
    assert sum(calls.values()) <= 1, dict(calls)


def test_adapter_reads_nothing_back_and_builds_semantic_masks_on_demand():
    from region_sam3.data.batch import FindQueryBatch
    from region_sam3.data.sam3_adapter import to_sam3_batch

    masks = torch.rand(3, 8, 8) > 0.5
    batch = FindQueryBatch(
        images=torch.zeros(2, 3, 8, 8), query_image_index=torch.tensor([0, 1, 1]),
        prompts=["a", "b", "a"], category_ids=torch.tensor([1, 2, 1]),
        num_targets=torch.tensor([2, 0, 1]), is_negative=torch.tensor([False, True, False]),
        is_exhaustive=torch.ones(3, dtype=torch.bool), boxes_cxcywh=torch.rand(3, 4), masks=masks,
        target_query_index=torch.tensor([0, 0, 2]), target_object_index=torch.tensor([0, 1, 0]),
        annotation_ids=torch.arange(3), image_ids=torch.tensor([5, 6]),
        orig_sizes=torch.full((2, 2), 8), valid_sizes=torch.full((2, 2), 8), file_names=["x", "y"],
        num_targets_host=(2, 0, 1), target_object_host=(0, 1, 0))
    with record_sync_calls() as calls:
        sam3_batch = to_sam3_batch(batch, "cpu", semantic=True)
    assert not calls, dict(calls)
    target = sam3_batch.find_targets[0]
    assert torch.equal(target.semantic_segments,
                       torch.stack([masks[:2].any(0), torch.zeros(8, 8, dtype=torch.bool), masks[2]]))
    assert target.object_ids_padded.tolist() == [[0, 1], [-1, -1], [0, -1]]
    assert sam3_batch.find_inputs[0].object_ids == [[0, 1], [], [0]]
    assert sam3_batch.find_metadatas[0].object_id.tolist() == [0, -1, 0]
    assert to_sam3_batch(batch, "cpu").find_targets[0].semantic_segments is None


@pytest.mark.parametrize("overrides", [
    [],  # the tiny teacher as configured (GT masks)
    # the official teacher configs turn global patch removal on; student-mask distillation
    ["teacher.global_patch_removal=true", "model.teacher_masks=student"],
], ids=["gt", "removal-student"])
def test_distillation_training_step_has_at_most_one_sync(tmp_path, synthetic_data_dir,
                                                         monkeypatch, overrides):
    """The distillation path (tiny random teacher, no cache) reads nothing back either: the
    teacher groups targets per image with the collator's host indices and invalid teacher rows
    are weighted 0 instead of being dropped by boolean indexing. Before: 1 + 2 + (images in the
    batch) syncs per step (two `[keep]` indexings, one `nonzero` per image)."""
    cfg = compose_task("train", tmp_path, synthetic_data_dir, [
        "experiment=distill_clip", "debug=smoke", "model.sam3.checkpoint=null", "model/sam3=tiny",
        "model.sam3.strict=false", "data.augmentation=null", "model.distill.warmup_steps=0",
        *overrides])
    module, batch = build_module_and_batch(cfg)
    # `setup` fills the text embeddings from the trainer's datamodule; none here (KL term on).
    module._text_embeds = module.teacher.encode_text(["circle", "square", "triangle"])
    module.train()
    logged: dict = {}
    monkeypatch.setattr(module, "log", lambda *a, **k: None)
    monkeypatch.setattr(module, "log_dict", lambda values, **k: logged.update(values))
    assert batch.images.shape[0] == 2  # two images: the per-image grouping is exercised
    with record_sync_calls() as calls:
        loss = module.training_step(batch, 0)
    assert torch.isfinite(loss) and logged["train/loss_distill_cos"] > 0
    assert sum(calls.values()) <= 1, dict(calls)


@pytest.mark.parametrize("bad", [False, True], ids=["finite", "inf-gradient"])
def test_gradient_check_adds_no_sync(tmp_path, synthetic_data_dir, monkeypatch, bad):
    """The non-finite gradient guard (after backward, before clipping) reads nothing back: its
    device flag skips the fused AdamW step and comes back on the next step's loss read-back.
    Two full steps (forward, backward, guard, clipping, optimizer step): at most one sync each,
    plus one on the failure path only (naming the non-finite gradients in the message)."""
    from lightning.pytorch.plugins.precision import Precision

    cfg = compose_task("train", tmp_path, synthetic_data_dir, [
        "model/sam3=tiny", "model/region_head=default", "model.region_head.iter_loss_weights=null",
        "model.sam3.freeze=[backbone.*,transformer.*]", "data.augmentation=null",
        "model.on_nonfinite_loss=skip"])
    module, batch = build_module_and_batch(cfg)
    module.train()
    monkeypatch.setattr(module, "log", lambda *a, **k: None)
    monkeypatch.setattr(module, "log_dict", lambda *a, **k: None)

    class _Trainer:  # what the hooks read from the trainer
        precision_plugin = Precision()
        estimated_stepping_batches = 10
        global_step = 0

    monkeypatch.setattr(type(module), "trainer", property(lambda self: _Trainer))
    optimizer = module.configure_optimizers()["optimizer"]
    assert optimizer.defaults["fused"]  # CPU has fused AdamW kernels too
    params = [p for p in module.parameters() if p.requires_grad]
    with record_sync_calls() as calls:
        for step in range(2):
            optimizer.zero_grad(set_to_none=True)
            module.training_step(batch, step).backward()
            if bad and step == 0:  # a finite loss, one Inf gradient: the guard must catch it
                params[0].grad[(0,) * params[0].grad.dim()] = float("inf")
            module.on_before_optimizer_step(optimizer)
            torch.nn.utils.clip_grad_norm_(params, 0.1)
            optimizer.step()
    assert sum(calls.values()) <= 2 + bad, dict(calls)
    assert all(torch.isfinite(p).all() for p in params)
    assert module._nonfinite.total == int(bad)  # step 0's flag came back with step 1's check
