"""Freshly drawn synthetic scenes for prompt-free dense pretraining (stage 1 of the tiny base).

The generator makes any number of scenes, so stage 1 never sees a scene twice: scene ``i`` of
epoch ``e`` is `render_scene(cfg, stream_split, e * scenes_per_epoch + i)`. That index is a pure
function of (epoch, position), so a resumed run sees exactly the scenes the uninterrupted run
would have seen (Lightning calls `set_epoch` on the sampler), and DDP ranks take disjoint
strided slices of the same epoch.

Targets are per-pixel category maps at the mask grid (64² for the tiny model): 0 = background,
``k`` = category id ``k`` of `SyntheticConfig.categories` (1-based, "<colour> <shape>").
Validation renders the configured ``val`` split in memory (the same pixels as the COCO files of
that split) and keeps per-object masks for the object-level probe
(`region_sam3.eval.object_probe`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from region_sam3.data.synthetic import SyntheticConfig, SyntheticScene, render_scene
from region_sam3.data.transforms import IMAGE_MEAN, IMAGE_STD

#: name of the endless training stream; its own random stream (scenes are seeded by split name).
STREAM_SPLIT = "stream"


def scene_to_tensors(scene: SyntheticScene, label_size: int) -> dict[str, torch.Tensor]:
    """One scene -> normalised image, per-pixel labels and per-object masks.

    Returns:
        image: [3,S,S] float, SAM3 normalisation (mean = std = 0.5).
        labels: [L,L] long, 0 = background, else the owning object's category id
            (nearest-neighbour resize of the full-resolution owner map).
        instances: [L,L] long, 0 = background, else 1 + the owning object's index.
        masks: [K,S,S] bool visible masks; category_ids: [K] long.
    """
    image = torch.from_numpy(scene.image).permute(2, 0, 1).float().div_(255)
    mean = torch.tensor(IMAGE_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(3, 1, 1)
    image = (image - mean) / std
    size = scene.image.shape[0]
    owner = np.zeros((size, size), dtype=np.int64)
    for k, mask in enumerate(scene.masks):
        owner[mask] = k + 1  # visible masks are disjoint
    instances = F.interpolate(torch.from_numpy(owner)[None, None].float(), size=label_size,
                              mode="nearest")[0, 0].long()
    lookup = torch.tensor([0, *scene.category_ids], dtype=torch.long)
    return {"image": image, "labels": lookup[instances], "instances": instances,
            "masks": torch.from_numpy(scene.masks),
            "category_ids": torch.tensor(scene.category_ids, dtype=torch.long)}


class SceneDataset(Dataset):
    """Scene ``index`` of ``split`` drawn on demand (no files)."""

    def __init__(self, cfg: SyntheticConfig, split: str, length: int, label_size: int,
                 with_masks: bool = False) -> None:
        self.cfg, self.split, self.length = cfg, split, length
        self.label_size, self.with_masks = label_size, with_masks

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = scene_to_tensors(render_scene(self.cfg, self.split, int(index)), self.label_size)
        if not self.with_masks:
            del item["masks"]
        return item


class EpochStreamSampler(Sampler[int]):
    """Yields ``epoch * scenes_per_epoch + i`` for this rank's strided ``i``: never a repeat."""

    def __init__(self, scenes_per_epoch: int, rank: int = 0, world_size: int = 1) -> None:
        self.scenes_per_epoch, self.rank, self.world_size = scenes_per_epoch, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        start = self.epoch * self.scenes_per_epoch
        return iter(range(start + self.rank, start + self.scenes_per_epoch, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.scenes_per_epoch, self.world_size))


def collate_scenes(items: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Stack images [B,3,S,S], labels / instances [B,L,L] and object categories [B,Kmax]
    (0-padded); keep per-image masks and category ids as lists."""
    k_max = max(len(i["category_ids"]) for i in items)
    object_categories = torch.zeros(len(items), k_max, dtype=torch.long)
    for row, item in enumerate(items):
        object_categories[row, : len(item["category_ids"])] = item["category_ids"]
    out: dict[str, Any] = {"image": torch.stack([i["image"] for i in items]),
                           "labels": torch.stack([i["labels"] for i in items]),
                           "instances": torch.stack([i["instances"] for i in items]),
                           "object_categories": object_categories,
                           "category_ids": [i["category_ids"] for i in items]}
    if "masks" in items[0]:
        out["masks"] = [i["masks"] for i in items]
    return out


class SyntheticStreamDataModule(L.LightningDataModule):
    """Endless fresh training scenes + the in-memory ``val`` split, for `DensePretrainModule`."""

    def __init__(self, synthetic: dict[str, Any] | None = None, label_size: int = 64,
                 batch_size: int = 8, eval_batch_size: int | None = None,
                 scenes_per_epoch: int = 2000, val_split: str = "val", val_images: int = 100,
                 num_workers: int = 0, **_unused: Any) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        synthetic = dict(synthetic or {})
        synthetic.pop("root", None)  # nothing is written: scenes are drawn in memory
        self.cfg = SyntheticConfig.from_any(synthetic)
        # The stream draws scenes with the train split's spec (object counts, sizes, clutter).
        self.cfg.splits[STREAM_SPLIT] = replace(self.cfg.splits["train"])
        if val_split not in self.cfg.splits:
            raise ValueError(f"data.val_split={val_split!r}: not a synthetic split "
                             f"({sorted(self.cfg.splits)})")
        self.label_size, self.batch_size = label_size, batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.scenes_per_epoch, self.val_split = scenes_per_epoch, val_split
        self.val_images, self.num_workers = val_images, num_workers

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        rank = trainer.global_rank if trainer is not None else 0
        world = trainer.world_size if trainer is not None else 1
        # Effectively unbounded: indices grow with the epoch, the generator draws any index.
        dataset = SceneDataset(self.cfg, STREAM_SPLIT, 2**62, self.label_size)
        return DataLoader(dataset, batch_size=self.batch_size,
                          sampler=EpochStreamSampler(self.scenes_per_epoch, rank, world),
                          num_workers=self.num_workers, collate_fn=collate_scenes,
                          persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        dataset = SceneDataset(self.cfg, self.val_split, self.val_images, self.label_size,
                               with_masks=True)
        return DataLoader(dataset, batch_size=self.eval_batch_size, shuffle=False,
                          num_workers=self.num_workers, collate_fn=collate_scenes)

    def category_names(self) -> list[str]:
        return [c["name"] for c in self.cfg.categories()]
