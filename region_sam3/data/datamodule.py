"""LightningDataModule for find-query training/evaluation on COCO-format data.

`batch_size` counts *images*; each image carries up to `max_queries_per_image` find queries, so
the number of SAM3 queries per batch is at most batch_size * max_queries_per_image.
Distributed sampling is left to Lightning (it swaps in a DistributedSampler).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from region_sam3.data.batch import FindQueryBatch, collate_find_queries
from region_sam3.data.coco import FindQueryDataset
from region_sam3.data.ood_synthetic import OOD_SPLITS, OODConfig, ensure_ood_dataset
from region_sam3.data.resumable_loader import (
    EpochCursor,
    ResumableDataLoader,
    ResumableRandomSampler,
)
from region_sam3.data.synthetic import SyntheticConfig, ensure_synthetic_dataset
from region_sam3.data.transforms import AugmentationConfig, FindQueryTransform

log = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    """OmegaConf containers -> plain Python (Hydra passes DictConfig/ListConfig)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf ships with hydra
        pass
    return value


def _split_list(test_split: str | Sequence[str]) -> list[str]:
    splits = [test_split] if isinstance(test_split, str) else list(test_split)
    if not splits or len(set(splits)) != len(splits):
        raise ValueError(f"data.test_split={splits!r}: give one split or a list of distinct splits")
    return splits


class FindQueryDataModule(L.LightningDataModule):
    """Train/val/test find-query loaders over COCO-format splits.

    Args:
        splits: name -> {"image_dir", "ann_file"} for COCO-format data on disk. Ignored for
            names provided by `synthetic`.
        synthetic: generator config (see `SyntheticConfig`) plus `root`; when set, its splits
            are generated on first use into `<root>/<config-hash>/` and read like COCO.
        train_split / val_split / test_split: split names (e.g. `test_split=crowded`);
            `test_split` may be a list (`[test,test_small,test_crowded]`): one test loader
            per split. The synthetic benchmark's held-out splits are `test*`; `val` selects.
            With `synthetic`, the out-of-distribution splits `ood`, `ood_touching`
            (`region_sam3.data.ood_synthetic`; sizes in `synthetic.ood_splits`) are
            available for evaluation only: `train_split=ood*` raises.
        resolution: model input side; keep_aspect_ratio pads bottom/right instead of squashing.
        augmentation: `AugmentationConfig` fields for training (None disables).
        batch_size: images per batch (see module docstring); eval_batch_size defaults to it.
        negative_ratio: train negatives per positive query; evaluation queries all categories
            when `eval_all_categories` (needed for correct AP).
        hard_negative_fraction: share of train negatives that share a prompt word with a
            present category (`FindQueryDataset`).
        pin_memory: None = only when CUDA is available.
    """

    def __init__(
        self,
        splits: Mapping[str, Mapping[str, str]] | None = None,
        synthetic: Mapping[str, Any] | None = None,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str | Sequence[str] = "val",
        resolution: int = 224,
        keep_aspect_ratio: bool = False,
        augmentation: Mapping[str, Any] | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool | None = None,
        negative_ratio: float = 1.0,
        hard_negative_fraction: float = 0.0,
        max_queries_per_image: int | None = 16,
        eval_all_categories: bool = True,
        eval_max_queries_per_image: int | None = None,
        seed: int = 0,
        strict: bool = False,
        validate_masks: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.splits = {k: dict(v) for k, v in (_plain(splits) or {}).items()}
        self.synthetic = _plain(synthetic)
        self.augmentation = _plain(augmentation)
        self.datasets: dict[str, FindQueryDataset] = {}
        self.category_names: dict[int, str] = {}
        # One generator for the whole run (not one per loader) so epochs get different orders
        # and its state can be checkpointed.
        self._train_generator = torch.Generator().manual_seed(seed)
        self._worker_generator = torch.Generator().manual_seed(seed + 1)
        self._cursor = EpochCursor()  # mid-epoch resume (data/resumable_loader.py)
        self.test_splits = _split_list(test_split)
        if self.synthetic is not None and train_split in self._ood_config().splits:
            raise ValueError(
                f"data.train_split={train_split!r}: the out-of-distribution splits "
                f"{sorted(self._ood_config().splits)} are evaluation-only (their renderer "
                "must stay unseen); train on `train` and pass them as data.test_split")

    @property
    def test_roles(self) -> list[str]:
        """Dataset roles of the test splits: `test` for one split, `test/<split>` for several."""
        if len(self.test_splits) == 1:
            return ["test"]
        return [f"test/{split}" for split in self.test_splits]

    # -- paths --------------------------------------------------------------------------------
    def _synthetic_config(self) -> tuple[Path, SyntheticConfig]:
        settings = dict(self.synthetic)
        root = Path(settings.pop("root"))
        return root, SyntheticConfig.from_any(settings)

    def _ood_config(self) -> OODConfig:
        """The OOD generator of `synthetic` (its size, seed, categories; `ood_splits` sizes)."""
        settings = {k: v for k, v in self.synthetic.items() if k != "root"}
        return OODConfig.from_synthetic(SyntheticConfig.from_any(settings),
                                        self.synthetic.get("ood_splits"))

    def split_paths(self, split: str) -> tuple[Path, Path]:
        """(image_dir, ann_file) of `split`, generating synthetic data if needed."""
        if self.synthetic is not None:
            root, cfg = self._synthetic_config()
            if split in cfg.splits:
                return ensure_synthetic_dataset(root, split, cfg)
            if split in OOD_SPLITS or split in (self.synthetic.get("ood_splits") or {}):
                return ensure_ood_dataset(root, split, self._ood_config())
        if split not in self.splits:
            known = sorted(self.splits) + (
                sorted(self._synthetic_config()[1].splits) + sorted(self._ood_config().splits)
                if self.synthetic else []
            )
            raise ValueError(f"data: unknown split {split!r}; known splits: {known}")
        paths = self.splits[split]
        for key in ("image_dir", "ann_file"):
            if key not in paths:
                raise ValueError(f"data.splits.{split}: missing key '{key}'")
        return Path(paths["image_dir"]), Path(paths["ann_file"])

    # -- Lightning hooks ------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Rank 0 generates synthetic splits; other ranks' `setup` then find them cached."""
        hp = self.hparams
        if self.synthetic is not None:
            for split in dict.fromkeys([hp.train_split, hp.val_split, *self.test_splits]):
                self.split_paths(split)

    def _build(self, split: str, train: bool) -> FindQueryDataset:
        hp = self.hparams
        image_dir, ann_file = self.split_paths(split)
        augmentation = (
            AugmentationConfig(**self.augmentation) if (train and self.augmentation) else None
        )
        transform = FindQueryTransform(hp.resolution, hp.keep_aspect_ratio, augmentation)
        dataset = FindQueryDataset(
            image_dir,
            ann_file,
            transform=transform,
            negative_ratio=hp.negative_ratio,
            hard_negative_fraction=hp.get("hard_negative_fraction", 0.0),
            all_categories=(not train) and hp.eval_all_categories,
            max_queries_per_image=hp.max_queries_per_image
            if train
            else hp.eval_max_queries_per_image,
            resample_each_epoch=train,
            seed=hp.seed,
            strict=hp.strict,
            validate_masks=hp.validate_masks,
            eval_annotations=not train,
        )
        if not self.category_names:
            self.category_names = dict(dataset.category_names)
        return dataset

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        tests = [(role, split, False) for role, split in zip(self.test_roles, self.test_splits)]
        wanted = {
            "fit": [("train", hp.train_split, True), ("val", hp.val_split, False)],
            "validate": [("val", hp.val_split, False)],
            "test": tests,
            "predict": tests[:1],
        }
        roles = wanted.get(stage, []) if stage else [r for v in wanted.values() for r in v]
        for role, split, train in roles:
            if role not in self.datasets:
                self.datasets[role] = self._build(split, train)

    # -- loaders --------------------------------------------------------------------------------
    def _loader(self, role: str, shuffle: bool) -> DataLoader:
        if role not in self.datasets:
            self.setup({"train": "fit", "val": "validate"}.get(role, "test"))
        hp = self.hparams
        pin = torch.cuda.is_available() if hp.pin_memory is None else hp.pin_memory
        batch_size = hp.batch_size if role == "train" else (hp.eval_batch_size or hp.batch_size)
        # The shuffled (training) loader resumes mid-epoch exactly (data/resumable_loader.py).
        if shuffle:
            extra = {"cursor": self._cursor, "sampler": ResumableRandomSampler(
                len(self.datasets[role]), self._train_generator, self._cursor)}
        else:
            extra = {}
        return (ResumableDataLoader if shuffle else DataLoader)(
            self.datasets[role], **extra,
            batch_size=batch_size,
            drop_last=shuffle,
            num_workers=hp.num_workers,
            persistent_workers=hp.num_workers > 0,
            pin_memory=pin,
            collate_fn=collate_find_queries,
            # worker base seeds: their own stream, so the permutation's stays reproducible
            generator=self._worker_generator if shuffle else None,
        )

    # -- exact resumption: the shuffling generator advances every epoch ------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {"train_generator": self._train_generator.get_state(),
                 "worker_generator": self._worker_generator.get_state(),
                 "draw": self._cursor.draw}
        if self._mid_epoch():
            state.update(epoch_start_generator=self._cursor.epoch_start,
                         batches_consumed=self._cursor.consumed,
                         draw_at_start=self._cursor.draw_at_start)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "train_generator" in state_dict:
            self._train_generator.set_state(state_dict["train_generator"])
        if "worker_generator" in state_dict:
            self._worker_generator.set_state(state_dict["worker_generator"])
        self._cursor.draw = int(state_dict.get("draw", 0))
        if state_dict.get("batches_consumed"):
            self._cursor.draw_at_start = int(state_dict.get("draw_at_start", 0))
            self._cursor.epoch_start = state_dict["epoch_start_generator"]
            self._cursor.pending_skip = int(state_dict["batches_consumed"])

    def _mid_epoch(self) -> bool:
        """Saved inside an epoch? (At its end Lightning starts the next one on resume.)"""
        trainer = getattr(self, "trainer", None)
        if trainer is None or not self._cursor.consumed:
            return False
        total = trainer.num_training_batches
        return total == float("inf") or self._cursor.consumed < total

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Called when the loop takes a batch (not when the fetcher prefetches one).
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.training:
            self._cursor.consumed += 1
        return batch

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        loaders = [self._loader(role, shuffle=False) for role in self.test_roles]
        return loaders[0] if len(loaders) == 1 else loaders

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_roles[0], shuffle=False)

    def transfer_batch_to_device(
        self, batch: FindQueryBatch, device: torch.device, dataloader_idx: int
    ) -> FindQueryBatch:
        return batch.to(device, non_blocking=True)
