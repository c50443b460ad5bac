"""Test helpers: compose/build tiny SAM3 models and hand-built find-query batches."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"


def load_script(name: str) -> ModuleType:
    """`scripts/<name>.py` as a module (scripts are not a package). Registered in
    `sys.modules` first: dataclasses look their module up there, and a script importing a
    sibling (`from aggregate_multirun import ...`) then shares this one."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def compose_sam3(name: str = "tiny", overrides: list[str] | None = None):
    """Compose `conf/model/sam3/<name>.yaml` on its own."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR / "model" / "sam3"), version_base="1.3"):
        return compose(name, overrides=overrides or [])


def build_tiny_sam3(overrides: list[str] | None = None, seed: int = 0):
    from hydra.utils import instantiate

    torch.manual_seed(seed)
    return instantiate(compose_sam3("tiny", overrides))


def make_find_batch(image_size: int = 224, seed: int = 0):
    """Two find queries (one per image) with 2 and 1 targets, as `sam3`'s collator builds them.

    Returns a `sam3.model.data_misc.BatchedDatapoint`.
    """
    from sam3.model.data_misc import (
        BatchedDatapoint,
        BatchedFindTarget,
        BatchedInferenceMetadata,
        FindStage,
    )

    g = torch.Generator().manual_seed(seed)
    r = image_size
    num_queries = 2
    boxes = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.2], [0.5, 0.5, 0.4, 0.4]])
    segments = torch.zeros(3, r, r, dtype=torch.bool)
    for i, (cx, cy, w, h) in enumerate(boxes.tolist()):
        segments[i, int((cy - h / 2) * r): int((cy + h / 2) * r),
                 int((cx - w / 2) * r): int((cx + w / 2) * r)] = True
    padded = torch.zeros(num_queries, 2, 4)
    padded[0] = boxes[:2]
    padded[1, 0] = boxes[2]
    object_ids = torch.arange(3)
    object_ids_padded = torch.tensor([[0, 1], [2, -1]])
    find_input = FindStage(
        img_ids=torch.tensor([0, 1]),
        text_ids=torch.tensor([0, 1]),
        input_boxes=torch.zeros(0, num_queries, 4),
        input_boxes_mask=torch.zeros(num_queries, 0, dtype=torch.bool),
        input_boxes_label=torch.zeros(0, num_queries, dtype=torch.long),
        input_points=torch.zeros(0, num_queries, 257),
        input_points_mask=torch.zeros(num_queries, 0, dtype=torch.bool),
    )
    target = BatchedFindTarget(
        num_boxes=torch.tensor([2, 1]),
        boxes=boxes,
        boxes_padded=padded,
        repeated_boxes=boxes,
        segments=segments,
        semantic_segments=None,
        is_valid_segment=torch.ones(3, dtype=torch.bool),
        is_exhaustive=torch.ones(num_queries, dtype=torch.bool),
        object_ids=object_ids,
        object_ids_padded=object_ids_padded,
    )
    meta = BatchedInferenceMetadata(
        coco_image_id=torch.tensor([0, 1]),
        original_image_id=torch.tensor([0, 1]),
        original_category_id=torch.tensor([1, 2]),
        original_size=torch.tensor([[r, r], [r, r]]),
        object_id=torch.tensor([0, 1]),
        frame_index=torch.tensor([0, 0]),
        is_conditioning_only=[None, None],
    )
    return BatchedDatapoint(
        img_batch=torch.randn(2, 3, r, r, generator=g),
        find_text_batch=["red circle", "blue square"],
        find_inputs=[find_input],
        find_targets=[target],
        find_metadatas=[meta],
    )


def last_stage_output(out) -> dict:
    """The final stage's output dict from `Sam3Image.forward`'s `SAM3Output`."""
    stage = out[-1]
    return stage[-1] if isinstance(stage, list) else stage


TINY_SPLITS = [
    "data.synthetic.splits.train.num_images=8",
    "data.synthetic.splits.val.num_images=4",
    "data.synthetic.splits.small.num_images=4",
    "data.synthetic.splits.crowded.num_images=4",
    "data.synthetic.splits.test.num_images=4",
    "data.synthetic.splits.test_small.num_images=4",
    "data.synthetic.splits.test_crowded.num_images=4",
]


def compose_task(config_name: str, output_dir, data_dir, overrides: list[str] | None = None):
    """Compose `conf/<config_name>.yaml` for a test: outputs under `output_dir`, synthetic data
    under `data_dir`, tiny random SAM3 unless overridden, no data-loader workers."""
    from hydra import compose, initialize_config_dir

    import region_sam3  # noqa: F401  (registers the config resolvers, as train.py does)

    base = [
        f"paths.output_dir={output_dir}",
        f"paths.work_dir={output_dir}",
        f"paths.data_dir={data_dir}",
        "data.num_workers=0",
        "data.batch_size=2",
        "data.max_queries_per_image=3",
        "trainer.accelerator=cpu",
    ]
    if config_name != "eval":  # eval.py takes the model from the checkpoint
        base.append("model.criterion.num_sample_points=256")
    if config_name == "train":
        base.append("~callbacks.progress_bar")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=base + list(overrides or []),
                      return_hydra_config=config_name == "eval")
    if config_name == "eval":
        # eval.py applies the command-line overrides on top of the checkpoint's config: record
        # them as `python eval.py ...` would (HydraConfig), then drop the hydra node.
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import open_dict

        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.pop("hydra")
    if cfg.data.get("synthetic") is not None:
        from omegaconf import OmegaConf, open_dict

        with open_dict(cfg):
            for item in TINY_SPLITS:
                key, value = item.split("=")
                OmegaConf.update(cfg, key, int(value), merge=True)
    return cfg


class StopAfterEpochs:
    """Lightning callback that interrupts fit after `epochs` epochs (simulates a killed job
    without changing the run's configuration, so LR schedules stay identical)."""

    def __new__(cls, epochs: int = 1):
        import lightning as L

        class _Stop(L.Callback):
            def on_train_epoch_end(self, trainer, pl_module):
                if trainer.current_epoch + 1 >= epochs:
                    trainer.should_stop = True

        return _Stop()



def build_module_and_batch(cfg):
    """Instantiate the LightningModule and the first training batch of a composed config."""
    import hydra
    from omegaconf import OmegaConf

    OmegaConf.resolve(cfg)
    torch.manual_seed(0)
    module = hydra.utils.instantiate(cfg.model)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return module, next(iter(datamodule.train_dataloader()))

class RecordLastCheckpointStep:
    """Lightning callback: before each training batch, the `global_step` stored in
    `<dirpath>/last.ckpt` (None while there is none), appended to `RecordLastCheckpointStep.seen`."""

    seen: list[int | None] = []

    def __new__(cls, dirpath: str):
        import lightning as L
        import torch

        class _Record(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                path = Path(dirpath) / "last.ckpt"
                cls.seen.append(torch.load(path, weights_only=False)["global_step"]
                                if path.is_file() else None)

        return _Record()


class StepFile:
    """Lightning callback: after each training batch, writes `global_step` to `path` and sleeps
    `sleep_s` (gives a test time to send a signal mid-epoch without guessing with sleeps)."""

    def __new__(cls, path: str, sleep_s: float = 0.0):
        import time

        import lightning as L

        class _StepFile(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                Path(path).write_text(str(trainer.global_step))
                time.sleep(sleep_s)

        return _StepFile()
