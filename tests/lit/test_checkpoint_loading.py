"""One checkpoint loader (issue 21 item 3): `eval.py` and the predictor both rebuild the module
through `region_sam3.lit.loading.load_module_from_checkpoint`, and eval reads the file once."""

from __future__ import annotations

import json
import os
import warnings

import pytest
import torch
from helpers import compose_task

import region_sam3.lit.loading as loading
from region_sam3.predict import Sam3Predictor
from region_sam3.tasks import eval_task, train_task

TRAIN = ["model/sam3=tiny_base", "logger=csv", "test=false", "trainer.limit_train_batches=1",
         "trainer.limit_val_batches=0", "trainer.max_epochs=1",
         "callbacks.model_checkpoint.monitor=null", "~callbacks.metrics_plot", "seed=3"]


@pytest.fixture(scope="module")
def head_only_run(tmp_path_factory, synthetic_data_dir):
    """A one-step run on the frozen shipped tiny base: a head-only checkpoint + trained module."""
    folder = tmp_path_factory.mktemp("run")
    _, objects = train_task(compose_task("train", folder, synthetic_data_dir, TRAIN))
    return folder / "checkpoints" / "last.ckpt", objects["model"]


@pytest.fixture
def spy(monkeypatch):
    """Records the checkpoint paths given to the loader and every `torch.load` of a `.ckpt`."""
    calls: dict[str, list[str]] = {"loader": [], "torch.load": []}
    loader, torch_load = loading.load_module_from_checkpoint, torch.load

    def spy_loader(path, *args, **kwargs):
        calls["loader"].append(str(path))
        return loader(path, *args, **kwargs)

    def spy_load(f, *args, **kwargs):
        name = str(f) if isinstance(f, (str, os.PathLike)) else str(
            getattr(f, "path", None) or getattr(f, "name", None))
        if name.endswith(".ckpt"):
            calls["torch.load"].append(name)
        return torch_load(f, *args, **kwargs)

    monkeypatch.setattr(loading, "load_module_from_checkpoint", spy_loader)
    monkeypatch.setattr(torch, "load", spy_load)
    return calls


def test_eval_and_predictor_load_through_one_function_with_identical_weights(
        head_only_run, synthetic_data_dir, tmp_path, spy):
    path, trained = head_only_run
    cfg = compose_task("eval", tmp_path, synthetic_data_dir, [
        f"ckpt_path={path}", "+trainer.limit_test_batches=1", "model.evaluation.boundary=false",
        f"metrics_file={tmp_path / 'metrics.json'}"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, objects = eval_task(cfg)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "callbacks used to create the checkpoint" in m], messages
    assert spy["loader"] == [str(path)]
    assert spy["torch.load"] == [str(path)], "eval read the checkpoint more than once"
    # the test-stage outputs still name the checkpoint
    assert json.loads((tmp_path / "metrics.json").read_text())["checkpoint"] == str(path)

    predictor = Sam3Predictor.from_lightning_checkpoint(path, device="cpu")
    assert spy["loader"] == [str(path), str(path)]
    evaluated = objects["model"].net.state_dict()
    predicted = predictor.model.state_dict()
    live = trained.net.state_dict()
    assert evaluated.keys() == predicted.keys() == live.keys()
    for key in live:
        assert torch.equal(evaluated[key].cpu(), predicted[key].cpu()), key
        assert torch.equal(evaluated[key].cpu(), live[key].cpu()), key


def test_loader_without_run_config_returns_the_saved_configs(head_only_run):
    path, trained = head_only_run
    module, composed = loading.load_module_from_checkpoint(path, with_teacher=False)
    assert composed.model._target_ == loading.MODULE_TARGET
    assert composed.data.resolution == trained.trainer.datamodule.hparams.resolution
    assert module.teacher is None
    back, live = module.state_dict(), trained.state_dict()
    assert back.keys() == live.keys()
    assert all(torch.equal(back[k].cpu(), live[k].cpu()) for k in live)


def test_not_a_train_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "weights.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="weights.ckpt has no model hyper-parameters"):
        loading.load_module_from_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="gone.ckpt"):
        loading.load_module_from_checkpoint(tmp_path / "gone.ckpt")
