"""Stage 1 of the tiny base: the SAM3 vision backbone (ViT + neck) with a prompt-free dense loss.

Why a separate stage: the backbone diagnosis (issue 18) found the shipped tiny ViT encodes colour
(object-level probe 0.95) but barely shape (0.24, chance 0.17), and every head downstream became a
colour detector. Stage 1 asks the backbone for shape directly: each kept neck level gets a linear
(1x1 conv) per-pixel read-out over background + the C "<colour> <shape>" categories, trained
with cross-entropy against the category map at the mask grid on freshly drawn scenes
(`region_sam3.data.synthetic_stream`). Validation reports the object-level probe
(`region_sam3.eval.object_probe`) on the finest level (the mask grid) and on the coarsest (the
level SAM3's fusion encoder reads). The backbone weights go to stage 2 in the official checkpoint
format through `export_backbone` (``scripts/export_backbone.py``).

The read-outs are linear on purpose: a deep read-out could learn shape itself and hide a blind
backbone; with a linear one, the probe measures what the backbone features make linearly
separable.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from region_sam3.data.synthetic import SyntheticConfig
from region_sam3.eval.object_probe import ObjectProbeAccumulator
from region_sam3.lit.optim import build_optimizer, lr_lambda

log = logging.getLogger(__name__)

#: prefix of the vision backbone in the official SAM3 checkpoint format.
VISION_PREFIX = "detector.backbone.vision_backbone."


class DensePretrainModule(L.LightningModule):
    """ViT + neck of a SAM3 config trained with per-pixel category cross-entropy.

    Args:
        sam3: a `conf/model/sam3/*` config (`region_sam3.models.sam3_factory.build_sam3`); only
            its vision backbone is kept. Its freeze list must leave the vision backbone trainable.
        synthetic: the data's generator settings (``${data.synthetic}``): its C "<colour>
            <shape>" categories are the read-out's classes 1..C (0 = background).
        background_weight: cross-entropy weight of the background class (objects cover a small
            share of the pixels).
        object_loss_weight: weight of the object-level term: CE of each object's logits
            averaged inside its mask. A pixel-level label asks every pixel of a large disc to
            know it is not a square; the object-level term asks only the object as a whole,
            so boundary evidence (corners, points, curvature) can carry it. 0: off.
        optimizer / scheduler: as `RegionSam3Module` (`region_sam3.lit.optim`).
    """

    def __init__(self, sam3: DictConfig | dict, synthetic: dict | None = None,
                 background_weight: float = 0.2, object_loss_weight: float = 0.0,
                 optimizer: dict | None = None,
                 scheduler: dict | None = None) -> None:
        super().__init__()
        sam3 = OmegaConf.create(sam3) if not isinstance(sam3, DictConfig) else sam3
        self.save_hyperparameters(logger=False)
        synthetic = dict(OmegaConf.to_container(OmegaConf.create(synthetic or {}), resolve=True))
        synthetic.pop("root", None)
        category_names = [c["name"] for c in SyntheticConfig.from_any(synthetic).categories()]
        num_categories = len(category_names)
        full = hydra.utils.instantiate(sam3)
        self.vision = full.backbone.vision_backbone  # ViT trunk + ViTDet neck
        self.scalp = int(full.backbone.scalp)
        frozen = [n for n, p in self.vision.named_parameters() if not p.requires_grad]
        if frozen:
            raise ValueError(
                f"dense pretraining with a frozen vision backbone: {len(frozen)} tensors frozen "
                f"(e.g. {frozen[0]}) by model.sam3.freeze={list(sam3.get('freeze') or [])}; "
                "set model.sam3.freeze=[]")
        del full
        levels = len(self.vision.convs) - self.scalp
        d_model = self.vision.convs[0].conv_3x3.out_channels
        self.readouts = nn.ModuleList(
            nn.Conv2d(d_model, num_categories + 1, kernel_size=1) for _ in range(levels))
        self.object_loss_weight = float(object_loss_weight)
        weight = torch.ones(num_categories + 1)
        weight[0] = background_weight
        self.register_buffer("class_weight", weight, persistent=False)
        self.optimizer_cfg = dict(optimizer or {"lr": 1e-3, "weight_decay": 0.05})
        self.scheduler_cfg = dict(scheduler or {"name": "cosine", "warmup_steps": 100,
                                                "min_lr_ratio": 0.05})
        self.probes = {name: ObjectProbeAccumulator.from_category_names(category_names)
                       for name in ("fine", "coarse")}

    def level_logits(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images [B,3,S,S] -> per kept neck level, logits [B,C+1,h_l,w_l] (finest first)."""
        features = self.vision(images)[0]
        features = features[: len(features) - self.scalp] if self.scalp else features
        return [head(f) for head, f in zip(self.readouts, features)]

    def _loss(self, logits: list[torch.Tensor], batch: dict[str, Any]) -> torch.Tensor:
        """Mean over levels of the weighted per-pixel CE plus `object_loss_weight` x the CE of
        each object's mask-averaged logits (every level upsampled to the label grid)."""
        labels = batch["labels"]
        losses = []
        for x in logits:
            x = F.interpolate(x, size=labels.shape[-2:], mode="bilinear", align_corners=False)
            loss = F.cross_entropy(x, labels, weight=self.class_weight)
            if self.object_loss_weight:
                pooled, target = object_logits(x, batch["instances"], batch["object_categories"])
                visible = (target >= 0).sum().clamp_min(1)
                object_loss = F.cross_entropy(pooled, target, ignore_index=-1, reduction="sum")
                loss = loss + self.object_loss_weight * object_loss / visible
            losses.append(loss)
        return torch.stack(losses).mean()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        images, labels = batch["image"], batch["labels"]
        # Random flips / quarter turns: shapes are rotation-invariant categories.
        flip = bool(torch.rand(()) < 0.5)
        if flip:
            images, labels = images.flip(-1), labels.flip(-1)
        turns = int(torch.randint(4, ()))
        images, labels = images.rot90(turns, (-2, -1)), labels.rot90(turns, (-2, -1))
        batch = {**batch, "labels": labels,
                 "instances": batch["instances"].flip(-1) if flip else batch["instances"]}
        batch["instances"] = batch["instances"].rot90(turns, (-2, -1))
        loss = self._loss(self.level_logits(images), batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=images.shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        for probe in self.probes.values():
            probe.reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self.level_logits(batch["image"])
        loss = self._loss(logits, batch)
        self.log("val/loss", loss, batch_size=batch["image"].shape[0])
        for name, level in (("fine", logits[0]), ("coarse", logits[-1])):
            for i, (masks, ids) in enumerate(zip(batch["masks"], batch["category_ids"])):
                self.probes[name].update(level[i], masks.to(level.device), ids)

    def on_validation_epoch_end(self) -> None:
        for name, probe in self.probes.items():
            for key, value in probe.compute().items():
                prefix = "val/" if name == "fine" else f"val/{name}/"
                self.log(prefix + key, value, sync_dist=False)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self, self.optimizer_cfg)
        total = self.trainer.estimated_stepping_batches if self.trainer else 1
        schedule = lr_lambda(self.scheduler_cfg.get("name", "cosine"),
                             int(self.scheduler_cfg.get("warmup_steps", 0)), int(total),
                             float(self.scheduler_cfg.get("min_lr_ratio", 0.0)))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def object_logits(logits: torch.Tensor, instances: torch.Tensor,
                  object_categories: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask-averaged logits of every object visible at the label grid.

    Args:
        logits: [B,C+1,L,L]; instances: [B,L,L] long (0 = background, k = object k-1);
        object_categories: [B,Kmax] long category ids (0 = padding).
    Returns:
        pooled [B*(Kmax+1),C+1] and target [B*(Kmax+1)]: the category id of each object slot
        with >= 1 pixel at the grid, -1 elsewhere (padding, background, vanished objects), so
        the caller needs no data-dependent indexing (no host sync).
    """
    b, c = logits.shape[:2]
    slots = object_categories.shape[1] + 1
    index = (instances + slots * torch.arange(b, device=logits.device)[:, None, None]).flatten()
    flat = logits.permute(0, 2, 3, 1).reshape(-1, c)
    sums = flat.new_zeros(b * slots, c).index_add_(0, index, flat)
    counts = torch.bincount(index, minlength=b * slots).to(flat.dtype)
    categories = F.pad(object_categories, (1, 0)).flatten()  # slot 0 = background
    target = torch.where((counts > 0) & (categories > 0), categories, -1)
    return sums / counts.clamp_min(1)[:, None], target


def export_backbone(lightning_ckpt: str | Path, out: str | Path) -> Path:
    """Stage-1 Lightning checkpoint -> official-format ``{"model": {"detector.backbone...": t}}``.

    Stage 2 loads it with ``model.sam3.checkpoint=<out> model.sam3.strict=false`` (every
    non-backbone tensor is reported missing and keeps its initialisation).
    """
    ckpt = torch.load(lightning_ckpt, map_location="cpu", weights_only=False)
    state = {VISION_PREFIX + k.removeprefix("vision."): v for k, v in ckpt["state_dict"].items()
             if k.startswith("vision.")}
    if not state:
        raise ValueError(f"{lightning_ckpt}: no 'vision.*' tensors: not a stage-1 checkpoint")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state, "source": str(lightning_ckpt)}, out)
    log.info("wrote %d backbone tensors to %s", len(state), out)
    return out
