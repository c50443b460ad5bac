"""Head-only checkpoints (issue 19 item 3): no frozen base tensor is stored, only its identity;
loading rebuilds the base from its source and checks the hash."""

from __future__ import annotations

import pytest
import torch
from helpers import compose_task

from region_sam3.lit.evaluation import final_output
from region_sam3.lit.head_only import IDENTITY_KEY, BaseIdentityError, frozen_base_keys
from region_sam3.lit.module import RegionSam3Module
from region_sam3.predict import Sam3Predictor
from region_sam3.tasks import train_task

COMMON = ["model/sam3=tiny_base", "logger=csv", "test=false", "trainer.limit_train_batches=1",
          "trainer.limit_val_batches=0", "trainer.max_epochs=1",
          "callbacks.model_checkpoint.monitor=null", "~callbacks.metrics_plot", "seed=3"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, synthetic_data_dir):
    """One-step runs with the frozen shipped tiny base: head-only (default) and full weights."""
    out = {}
    for name, extra in (("head", []), ("full", ["checkpoint.full_weights=true"])):
        folder = tmp_path_factory.mktemp(name)
        _, objects = train_task(compose_task("train", folder, synthetic_data_dir, [*COMMON, *extra]))
        out[name] = (folder / "checkpoints" / "last.ckpt", objects["model"])
    return out


def test_head_only_drops_every_frozen_base_tensor(runs):
    path, model = runs["head"]
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    frozen = set(frozen_base_keys(model.net))
    assert frozen, "tiny_base freezes the backbone / transformer"
    assert not frozen & set(ckpt["state_dict"]), "frozen base tensors were stored"
    trainable = {"net." + n for n, p in model.net.named_parameters() if p.requires_grad}
    assert trainable and trainable <= set(ckpt["state_dict"])
    identity = ckpt[IDENTITY_KEY]
    assert identity["source"] == "builtin:sam3_tiny_synthetic.pt"
    assert identity["tensors"] == len(frozen) and len(identity["sha256"]) == 64
    full_size = runs["full"][0].stat().st_size
    assert path.stat().st_size < 0.5 * full_size, (path.stat().st_size, full_size)


def test_full_weights_keeps_every_key(runs):
    path, model = runs["full"]
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    assert IDENTITY_KEY not in ckpt
    assert set(model.state_dict()) - {k for k in model.state_dict() if k.startswith("teacher.")} \
        == set(ckpt["state_dict"])


def test_load_gives_identical_state_and_outputs(runs, find_batch):
    path, model = runs["head"]
    loaded = RegionSam3Module.load_from_checkpoint(path, map_location="cpu", weights_only=False)
    live, back = model.state_dict(), loaded.state_dict()
    assert set(live) == set(back)
    assert all(torch.equal(live[k].cpu(), back[k]) for k in live)
    model.eval(), loaded.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        a = final_output(model.cpu().net(find_batch))
        b = final_output(loaded.net(find_batch))
    for key in ("pred_logits", "pred_boxes", "pred_masks"):
        assert torch.equal(a[key], b[key]), key
    predictor = Sam3Predictor.from_lightning_checkpoint(path, device="cpu")
    net_state = predictor.model.state_dict()
    assert all(torch.equal(net_state[k[4:]], v) for k, v in live.items() if k.startswith("net."))


def test_wrong_base_is_a_clear_error(runs):
    path, _ = runs["head"]
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    module = RegionSam3Module(**ckpt["hyper_parameters"])
    key = ckpt[IDENTITY_KEY]["keys"][0]
    with torch.no_grad():
        module.state_dict()[key].add_(1.0)  # another base behind the same source
    with pytest.raises(BaseIdentityError, match="sam3_tiny_synthetic"):
        module.on_load_checkpoint(ckpt)


def test_base_hash_computed_once_per_unchanged_base(monkeypatch):
    """The frozen base is hashed at the first save only; an in-place change is noticed."""
    from region_sam3.lit import head_only

    state = {"net.a": torch.arange(6.0).reshape(2, 3), "net.b": torch.ones(4)}
    calls = []
    real = head_only.tensors_sha256
    monkeypatch.setattr(head_only, "tensors_sha256",
                        lambda s, k: calls.append(1) or real(s, k))
    monkeypatch.setattr(head_only, "_DIGEST_CACHE", {})
    first = head_only.frozen_base_sha256(state, ["net.a", "net.b"])
    assert head_only.frozen_base_sha256(state, ["net.a", "net.b"]) == first
    assert len(calls) == 1
    state["net.b"].add_(1.0)  # in place: same storage, new version
    changed = head_only.frozen_base_sha256(state, ["net.a", "net.b"])
    assert len(calls) == 2 and changed != first == real(
        {"net.a": torch.arange(6.0).reshape(2, 3), "net.b": torch.ones(4)}, ["net.a", "net.b"])


def test_export_of_a_head_only_checkpoint_writes_the_whole_base(runs, tmp_path):
    """A frozen-backbone run (stage 2 of the tiny base) exports every SAM3 tensor, the frozen
    ones restored from the base source, so the file loads with `strict=true` alone."""
    from region_sam3.models.checkpoint import DETECTOR_PREFIX
    from region_sam3.utils.tiny_base import export_tiny_base

    path, model = runs["head"]
    exported = torch.load(export_tiny_base(path, tmp_path / "base.pt"), map_location="cpu")["model"]
    live = {k[4:]: v for k, v in model.state_dict().items()
            if k.startswith("net.") and not k.startswith("net.segmentation_head.region_head")}
    assert set(exported) == {DETECTOR_PREFIX + k for k in live}
    frozen = set(frozen_base_keys(model.net))
    assert frozen and all(k.removeprefix("net.") in live for k in frozen)
    for key, value in live.items():
        want = value.cpu().half() if value.is_floating_point() else value.cpu()
        assert torch.equal(exported[DETECTOR_PREFIX + key], want), key
